"""Synthesize EM images for procedural masks and keep the varied ones, without napari.

    python examples/synthesize_and_curate.py MODEL OUT_DIR [--n 8]

MODEL is a checkpoint file or folder (for example the bundled demo model); OUT_DIR becomes an
export folder (images/, masks/, manifest.jsonl) like the one the Curate widget writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_synthgen import ExportSession, make_synthesizer
from napari_synthgen.layouts import make_layout, variation
from napari_synthgen.quality import basic_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=8, help="masks to make")
    args = parser.parse_args()

    synth = make_synthesizer(args.model)  # device and precision: auto
    print(synth.describe()["precision_note"] or synth.precision)
    with ExportSession(args.out) as session:
        for i in range(args.n):
            kind = "dense" if i % 2 == 0 else "sparse"
            mask = variation(make_layout(kind, (512, 512), seed=i), strength=0.5, seed=i)
            image = synth(mask, seed=i)
            figures = basic_figures(image, mask)
            provenance = {"source_mask": f"layout:{kind}:seed{i}", "model": str(args.model),
                          "seed": i, "params": synth.describe()}
            # keep images with contrast; a flat image is not worth training on
            if figures["std"] > 10 and figures["multi_class"]:
                record = session.accept(image, mask, provenance=provenance)
            else:
                record = session.reject(image, mask, provenance=provenance)
            print(f"{record['id']}: {record['decision']} (std {figures['std']:.1f})")
        print(session.summary())


if __name__ == "__main__":
    main()
