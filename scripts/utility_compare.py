"""Compare two runs of scripts/utility_run_isbi.sh (e.g. pix2pix and diffusion) in one figure.

Top: the same masks (a variation of a real mask and a procedural layout) with each run's
sample; bottom: boundary F1 and mean Dice of every arm of each run's ``evaluate`` (bars: mean
over seeds, dots: seeds). Usage:
``python scripts/utility_compare.py RUN_A RUN_B --labels pix2pix diffusion --out fig.png``
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tifffile

from napari_synthgen.masks import to_palette

METRICS = (("boundary_f1", "boundary F1 (2 px)"), ("mean_dice", "mean Dice"))


def _pick(run: Path) -> list[str]:
    """One variation of a real mask and one dense layout, by sorted name."""
    names = sorted(p.name for p in (run / "syn" / "images").glob("*.tif"))
    return [next(n for n in names if n.startswith("isbi")),
            next(n for n in names if n.startswith("dense"))]


def _runs(run: Path, folder: str) -> dict[str, dict[str, list[float]]]:
    """arm -> metric -> per-seed values of one evaluate output folder."""
    out: dict[str, dict[str, list[float]]] = {}
    with open(run / folder / "evaluation_runs.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            arm = out.setdefault(row["arm"], {m: [] for m, _ in METRICS})
            for m, _ in METRICS:
                arm[m].append(float(row[m]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs=2, type=Path)
    p.add_argument("--labels", nargs=2, default=["pix2pix", "diffusion"])
    p.add_argument("--eval", default="eval", help="evaluate folder inside each run")
    p.add_argument("--crop", type=int, default=256, help="side of the shown crop (px)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    names = _pick(args.runs[0])
    c = args.crop
    fig = plt.figure(figsize=(8.5, 9.5))
    grid = fig.add_gridspec(2, 1, height_ratios=[1.5, 1], hspace=0.22)
    top = grid[0].subgridspec(2, 3, wspace=0.03, hspace=0.08)
    for r, name in enumerate(names):
        mask = tifffile.imread(args.runs[0] / "syn" / "masks" / name)[:c, :c]
        panels = [(to_palette(mask), "mask" if r == 0 else None)]
        for run, label in zip(args.runs, args.labels, strict=True):
            image = tifffile.imread(run / "syn" / "images" / name)[:c, :c]
            panels.append((image, label if r == 0 else None))
        for k, (img, title) in enumerate(panels):
            ax = fig.add_subplot(top[r, k])
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if title:
                ax.set_title(title)
            if k == 0:
                ax.set_ylabel("variation" if name.startswith("isbi") else "layout")
    bottom = grid[1].subgridspec(1, len(METRICS), wspace=0.25)
    results = [_runs(run, args.eval) for run in args.runs]
    colours = {"real": "#7f7f7f", args.labels[0]: "#1f77b4", args.labels[1]: "#2ca02c"}
    for k, (metric, title) in enumerate(METRICS):
        ax = fig.add_subplot(bottom[0, k])
        # both runs train the real arm with the same seeds and data: one bar
        bars = [("real", results[1]["real"][metric], "real only")]
        for res, label in zip(results, args.labels, strict=True):
            bars += [(label, res["real+synthetic"][metric], f"real + {label}"),
                     (label, res["synthetic"][metric], f"{label} only")]
        for x, (key, vals, _) in enumerate(bars):
            ax.bar(x, np.mean(vals), color=colours[key], alpha=0.85)
            ax.plot([x] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels([b[2] for b in bars], rotation=25, ha="right", fontsize=8)
        low = min(min(v) for _, v, _ in bars)
        ax.set_ylim(max(0.0, low - 0.05), 1.0)
        ax.set_title(f"{title} on real test slices")
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
