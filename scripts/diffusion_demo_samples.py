"""Samples of a diffusion model on procedural masks it never saw, for its model card.

    python scripts/diffusion_demo_samples.py [--model demo-diffusion] [--out samples.png]
        [--guidance W ...]

Draws a dense and a sparse layout (256 x 256), samples each with two seeds (DPM-Solver++,
20 steps), writes one PNG (masks in the first column, then the two seeds) and prints the mean
grey level of membranes, interiors and background for each sample, and how different the two
seeds are. With several ``--guidance`` weights (a model that learned the null condition) each
row shows the mask, then both seeds at every weight (default: the model's own guidance).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_synthgen.layouts import make_layout
from napari_synthgen.masks import BACKGROUND, BOUNDARY, INTERIOR, to_palette
from napari_synthgen.registry import make_synthesizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="demo-diffusion")
    parser.add_argument("--out", type=Path, default=Path("diffusion_samples.png"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, nargs="+", default=[None],
                        help="classifier-free guidance weight(s) (default: the model's own)")
    args = parser.parse_args()
    synths = [make_synthesizer(args.model, steps=args.steps, guidance=g) for g in args.guidance]
    rows = []
    print(f"{'layout':<8} {'guidance':>8} {'seed':>4} {'boundary':>8} {'interior':>8} "
          f"{'background':>10}")
    for layout in ("dense", "sparse"):
        mask = make_layout(layout, (args.size, args.size), seed=7)
        row = [to_palette(mask)]
        for synth in synths:
            images = [synth(mask, seed=s) for s in (0, 1)]
            for s, img in zip((0, 1), images, strict=True):
                means = [img[mask == c].mean() if (mask == c).any() else float("nan")
                         for c in (BOUNDARY, INTERIOR, BACKGROUND)]
                print(f"{layout:<8} {synth.guidance:>8g} {s:>4} {means[0]:>8.1f} "
                      f"{means[1]:>8.1f} {means[2]:>10.1f}")
            diff = np.abs(images[0].astype(float) - images[1]).mean()
            print(f"{layout:<8} guidance {synth.guidance:g}: seeds 0 and 1 differ by {diff:.1f} "
                  "grey levels on average")
            row += [np.repeat(im[..., None], 3, axis=-1) for im in images]
        rows.append(np.concatenate(row, axis=1))
    from PIL import Image  # a 128-colour palette keeps the model card's picture small

    Image.fromarray(np.concatenate(rows, axis=0)).quantize(
        colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    for synth in synths:
        synth.close()


if __name__ == "__main__":
    main()
