"""Z-consistency and per-slice quality of synthesized stacks: serial z coupling against slices
drawn independently (what 2-D synthesis gives each slice), against the real sections.

    python scripts/z_consistency_synthetic.py [--data ../shared/data] [--slices 10]
        [--size 256] [--steps 20] [--model demo-diffusion] [--masks STACK.tif ...]
        [--real isbi2012 vnc_stack1]

For crops of real mask stacks (ISBI 2012 sections 0.., VNC stack 1 dense masks, top-left
``--size`` px, the first ``--slices`` sections) and for any (Z, Y, X) mask TIFF given with
``--masks`` (e.g. made by ``napari-synthgen masks --depth``), synthesizes the stack with
``--model`` in both couplings (seed 0, DPM-Solver++ ``--steps``) and prints a Markdown table:
residual correlation 1..4 slices apart beyond the mask (:mod:`napari_synthgen.zconsistency`),
texture flicker, the mean ``report`` score per slice (reference: the real crop's pairs; for
generated masks the ISBI crop's), membrane contrast (mean interior minus mean membrane grey
level) and seconds per slice. The data sets stay outside the package (their licences).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_synthgen import quality
from napari_synthgen.registry import make_synthesizer
from napari_synthgen.zconsistency import MAX_LAG, z_consistency

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_crop(folder: Path, slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``slices`` sections of a paired folder, top-left ``size`` px."""
    names = sorted(p.name for p in (folder / "images").glob("*.tif"))[:slices]
    crop = np.s_[:size, :size]
    return (np.stack([tifffile.imread(folder / "images" / n)[crop] for n in names]),
            np.stack([tifffile.imread(folder / "masks" / n)[crop] for n in names]))


def contrast(images: np.ndarray, masks: np.ndarray) -> float:
    """Mean interior grey level minus mean membrane grey level (class 1 minus class 2)."""
    return float(images[masks == 1].mean() - images[masks == 2].mean())


def row(label: str, images: np.ndarray, masks: np.ndarray, stats: quality.ReferenceStats,
        seconds: float | None) -> str:
    z = z_consistency(images, masks)
    scores = [quality.sample_figures(im, m, reference=stats)["score"]
              for im, m in zip(images, masks, strict=True)]
    lags = " | ".join(f"{v:.2f}" for v in z.lag_corr)
    sec = "" if seconds is None else f"{seconds:.1f}"
    return (f"| {label} | {lags} | {np.nanmean(z.texture_flicker):.2f} | "
            f"{np.mean(scores):.3f} | {contrast(images, masks):.1f} | {sec} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default="demo-diffusion")
    parser.add_argument("--masks", type=Path, nargs="*", default=[])
    parser.add_argument("--real", nargs="*", default=["isbi2012", "vnc_stack1"],
                        help="real stacks to crop and synthesize (none: only --masks)")
    args = parser.parse_args()
    print(f"{args.model}, DPM-Solver++ {args.steps} steps, seed 0, {args.slices} slices of "
          f"{args.size} px\n")
    print("| stack | " + " | ".join(f"lag {k}" for k in range(1, MAX_LAG + 1))
          + " | texture flicker | report score | membrane contrast | s / slice |")
    print("|---|" + "---|" * MAX_LAG + "---|---|---|---|")
    synths = {c: make_synthesizer(args.model, steps=args.steps, z_coupling=c)
              for c in ("serial", "independent")}
    cases: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for name in args.real:
        images, masks = read_crop(args.data / name, args.slices, args.size)
        cases.append((name, masks, images))
    cases += [(p.name, tifffile.imread(p), None) for p in args.masks]
    isbi_stats = quality.reference_from_pairs(zip(*read_crop(args.data / "isbi2012", args.slices,
                                                             args.size), strict=True))
    for name, masks, images in cases:
        if images is not None:
            stats = quality.reference_from_pairs(zip(images, masks, strict=True))
            print(row(f"{name} (real)", images, masks, stats, None), flush=True)
        else:
            stats = isbi_stats
        for coupling, synth in synths.items():
            start = time.perf_counter()
            made = synth(masks, seed=0)
            seconds = (time.perf_counter() - start) / len(masks)
            print(row(f"{name}, {coupling}", made, masks, stats, seconds), flush=True)
    for synth in synths.values():
        synth.close()


if __name__ == "__main__":
    main()
