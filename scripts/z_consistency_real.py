"""Z-consistency beyond the mask of real serial sections, and of slice-by-slice synthesis.

    python scripts/z_consistency_real.py [--data ../shared/data] [--slices 8] [--size 256]
        [--steps 8] [--model demo-diffusion] [--no-synthesis]

Prints a Markdown table: the correlation of residuals beyond the mask at 1..4 slices apart
(:mod:`napari_synthgen.zconsistency`) and the texture flicker, for the whole ISBI 2012 (30
sections) and VNC stack 1 (20 sections) stacks, for a crop of ISBI (the first ``--slices``
sections, top-left ``--size`` px), and for that crop's masks synthesized slice by slice with
``--model`` (DPM-Solver++ ``--steps`` steps, seed 0). The data sets stay outside the package
(their licences: ../shared/data/*/README.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_synthgen.zconsistency import MAX_LAG, ZConsistency, z_consistency

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_stack(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A paired folder of consecutive 2-D sections, in file-name order, as two stacks."""
    names = sorted(p.name for p in (folder / "images").glob("*.tif"))
    if not names:
        raise SystemExit(f"{folder}/images holds no .tif sections.")
    return (np.stack([tifffile.imread(folder / "images" / n) for n in names]),
            np.stack([tifffile.imread(folder / "masks" / n) for n in names]))


def row(label: str, shape: tuple[int, ...], z: ZConsistency) -> str:
    cells = " | ".join(f"{v:.2f}" for v in z.lag_corr)
    return (f"| {label} | {shape[0]} x {shape[1]} x {shape[2]} | {cells} | "
            f"{np.nanmean(z.texture_flicker):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", default="demo-diffusion")
    parser.add_argument("--no-synthesis", action="store_true")
    args = parser.parse_args()
    print("| stack | Z x Y x X | " + " | ".join(f"lag {k}" for k in range(1, MAX_LAG + 1))
          + " | texture flicker |")
    print("|---|---|" + "---|" * MAX_LAG + "---|")
    stacks = {}
    for name in ("isbi2012", "vnc_stack1"):
        img, mask = read_stack(args.data / name)
        stacks[name] = (img, mask)
        print(row(f"{name} (real)", img.shape, z_consistency(img, mask)), flush=True)
    img, mask = stacks["isbi2012"]
    crop = np.s_[:args.slices, :args.size, :args.size]
    img, mask = img[crop], mask[crop]
    print(row("isbi2012 crop (real)", img.shape, z_consistency(img, mask)), flush=True)
    if args.no_synthesis:
        return
    from napari_synthgen.registry import make_synthesizer

    synth = make_synthesizer(args.model, steps=args.steps)
    start = time.perf_counter()
    made = synth(mask, seed=0)  # a (Z, Y, X) mask: slice by slice, noise seeded per slice
    seconds = time.perf_counter() - start
    synth.close()
    print(row(f"isbi2012 crop, {args.model} slice by slice ({args.steps} steps)", made.shape,
              z_consistency(made, mask)))
    print(f"\nsynthesis: {seconds / made.shape[0]:.1f} s per {args.size}-px slice")


if __name__ == "__main__":
    main()
