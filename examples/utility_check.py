"""Does a synthetic set help a segmenter on real images? The utility check from Python.

    python examples/utility_check.py REAL_PAIRS SYNTHETIC_PAIRS TEST_PAIRS OUT [--steps N]
        [--seeds K] [--mix F]

Three paired folders (images/ + masks/): real training pairs, synthetic pairs (a `generate`
output or a curated export) and real test pairs that appear in neither. The same small
segmenter is trained with the same budget and seeds on real only, real + synthetic and
synthetic only, and scored on the test pairs; the table (Markdown, CSV) and a plot land in OUT.
This is what `napari-synthgen evaluate` does; see docs/utility_isbi.md for a real run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from napari_synthgen.evaluation import evaluate
from napari_synthgen.evaluation_report import markdown_table, write_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("real", "synthetic", "test", "out"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--mix", type=float, default=0.5)
    parser.add_argument("--crop", type=int, default=128)
    args = parser.parse_args()

    def progress(stage: str, done: int, total: int) -> None:
        if done == total:
            print(f"  {stage}: done", flush=True)

    result = evaluate(args.real, args.synthetic, args.test, steps=args.steps, seeds=args.seeds,
                      mix=args.mix, crop=args.crop, progress=progress)
    print(markdown_table(result))
    for path in write_outputs(result, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
