"""Where does `evaluate`'s segmenter call objects? Precision, recall and area of its calls on
each test image, for one loss and arm; and, with ``--on-synthetic``, what a real-only
segmenter sees in the synthetic images: the objects it finds where their masks say there is
none (unlabelled objects the generator painted, which teach "this is not one") and those it
misses where the masks say there is one. The diagnostic behind `evaluate --loss dice_ce`
(with sparse organelles the class-weighted loss calls every dark patch an object).

    python scripts/object_calls.py runs/repn --read-as binary --loss weighted_ce
    python scripts/object_calls.py runs/mito_pixd --read-as binary --loss dice_ce --on-synthetic

RUN is a ``utility_study.sh`` folder (``real/``, ``syn/``, ``test/``). The segmenter is the one
`evaluate` trains for seed ``--seed`` on all real pairs (``--steps``, batch 8, class weights,
if any, from the real and synthetic masks, as `evaluate` does); ``--arm real+synthetic``
mixes the synthetic pairs in at ``--mix``. Prints Markdown tables: per test image the
interior's precision and recall and the share of the image called an object (interior or
boundary) against the share that is one; with ``--on-synthetic`` the same summed over the
synthetic images beside the test images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_synthgen.evaluation import _load
from napari_synthgen.masks import INTERIOR
from napari_synthgen.segmenter import LOSSES, Phase, Pool, SegmenterConfig, train_segmenter


def calls(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Pixel counts of one image: interior hits, calls and truth; objects called where the mask
    has none (class 0) and the class-0 pixels."""
    return {"hit": int(((pred == INTERIOR) & (truth == INTERIOR)).sum()),
            "called": int((pred == INTERIOR).sum()), "true": int((truth == INTERIOR).sum()),
            "false_obj": int(((pred > 0) & (truth == 0)).sum()), "bg": int((truth == 0).sum()),
            "obj_called": int((pred > 0).sum()), "obj_true": int((truth > 0).sum()),
            "pixels": int(truth.size)}


def row(name: str, c: dict[str, int]) -> str:
    """One Markdown row of :func:`calls` counts."""
    return (f"| {name} | {c['hit'] / max(c['called'], 1):.3f} | "
            f"{c['hit'] / max(c['true'], 1):.3f} | {c['false_obj'] / max(c['bg'], 1):.1%} | "
            f"{c['obj_called'] / c['pixels']:.1%} | {c['obj_true'] / c['pixels']:.1%} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--read-as", default="auto", help="how the real and test masks are read")
    p.add_argument("--loss", default="weighted_ce", choices=list(LOSSES))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm", default="real", choices=["real", "real+synthetic"])
    p.add_argument("--mix", type=float, default=0.5)
    p.add_argument("--on-synthetic", action="store_true",
                   help="also sum the calls over the synthetic images")
    args = p.parse_args()
    real_names, real_pairs, _ = _load(args.run / "real", args.read_as, 2)
    syn_names, syn_pairs, _ = _load(args.run / "syn")
    test_names, test_pairs, _ = _load(args.run / "test", args.read_as, 2)
    real, syn = Pool.from_pairs(real_pairs, real_names), Pool.from_pairs(syn_pairs, syn_names)
    cfg = SegmenterConfig(steps=args.steps, batch_size=8, crop=128, seed=args.seed,
                          loss=args.loss)
    phase = (Phase(cfg.steps, real) if args.arm == "real"
             else Phase(cfg.steps, real, syn, args.mix))
    seg = train_segmenter([phase], cfg, weights_from=[real, syn])
    print(f"arm {args.arm}, loss {args.loss}, seed {args.seed}, class weights "
          f"{[round(float(w), 2) for w in seg.weights]}")
    head = ("| {} | interior precision | interior recall | class 0 called object "
            "| called object | is object |\n|---|---|---|---|---|---|")
    print(head.format("test image"))
    total = dict.fromkeys(calls(np.zeros(1), np.zeros(1)), 0)
    for name, (image, truth) in zip(test_names, test_pairs, strict=True):
        c = calls(seg.predict(image), truth)
        total = {k: total[k] + c[k] for k in total}
        print(row(name, c))
    if args.on_synthetic:
        syn_total = dict.fromkeys(total, 0)
        for image, truth in syn_pairs:
            c = calls(seg.predict(image), truth)
            syn_total = {k: syn_total[k] + c[k] for k in syn_total}
        print()
        print(head.format("images (summed)"))
        print(row(f"test ({len(test_pairs)})", total))
        print(row(f"synthetic ({len(syn_pairs)})", syn_total))


if __name__ == "__main__":
    main()
