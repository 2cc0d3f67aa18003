"""Where does `evaluate`'s real-only segmenter call objects? Precision, recall and area of its
calls on each test image, for one loss: the diagnostic behind `evaluate --loss dice_ce`
(with sparse organelles the class-weighted loss calls every dark patch an object).

    python scripts/object_calls.py runs/repn --read-as binary --loss weighted_ce

RUN is a ``utility_study.sh`` folder (``real/``, ``syn/``, ``test/``). The segmenter is the one
`evaluate` trains for the real-only arm of seed ``--seed`` on all real pairs (``--steps``,
batch 8, class weights, if any, from the real and synthetic masks, as `evaluate` does).
Prints a Markdown table per test image: the interior's precision and recall, and the share
of the image called an object (interior or boundary) against the share that is one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_synthgen.evaluation import _load
from napari_synthgen.masks import INTERIOR
from napari_synthgen.segmenter import LOSSES, Phase, Pool, SegmenterConfig, train_segmenter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--read-as", default="auto", help="how the real and test masks are read")
    p.add_argument("--loss", default="weighted_ce", choices=list(LOSSES))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    real_names, real_pairs, _ = _load(args.run / "real", args.read_as, 2)
    syn_names, syn_pairs, _ = _load(args.run / "syn")
    test_names, test_pairs, _ = _load(args.run / "test", args.read_as, 2)
    real, syn = Pool.from_pairs(real_pairs, real_names), Pool.from_pairs(syn_pairs, syn_names)
    cfg = SegmenterConfig(steps=args.steps, batch_size=8, crop=128, seed=args.seed,
                          loss=args.loss)
    seg = train_segmenter([Phase(cfg.steps, real)], cfg, weights_from=[real, syn])
    print(f"loss {args.loss}, class weights {[round(float(w), 2) for w in seg.weights]}")
    print("| test image | interior precision | interior recall | called object | is object |")
    print("|---|---|---|---|---|")
    for name, (image, truth) in zip(test_names, test_pairs, strict=True):
        pred = seg.predict(image)
        hit = int(((pred == INTERIOR) & (truth == INTERIOR)).sum())
        print(f"| {name} | {hit / max(int((pred == INTERIOR).sum()), 1):.3f} | "
              f"{hit / max(int((truth == INTERIOR).sum()), 1):.3f} | "
              f"{(pred > 0).mean():.1%} | {(truth > 0).mean():.1%} |")


if __name__ == "__main__":
    main()
