"""The figures of docs/utility.md from runs of scripts/utility_study.sh (issue 17's study).

``--samples``: one row per setting: a real test slice and its mask, then synthetic pairs (a
variation of a real mask and a layout calibrated on the real masks, ``masks --like``), crops
of the same size. ``--curves``: one column per setting: the setting's main figure against the
number of real training pairs for real only and real + synthetic (mean and std over seeds;
the grey line is synthetic only), and below it the paired difference with its 95 % bootstrap
interval over seeds and test images (``evaluation_sizes.csv``). ``--table`` prints the
Markdown table of docs/utility.md. ``--guidance``: one row per setting: a real slice, a
synthetic mask, and the run's generator on that mask at each guidance weight (same seed; the
images are drawn here, a 256 x 256 crop, about a minute per setting on 2 CPU cores). A setting
may carry a label, ``mito@guidance 1:RUN``, to show two runs of one setting side by side.
Usage::

    python scripts/utility_figure.py mito:RUN_MITO vnc:RUN_VNC --samples s.png --curves c.png \\
        --guidance g.png --table
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tifffile

from napari_synthgen.evaluation import plot_size_study
from napari_synthgen.masks import to_palette

#: the figure each setting is judged by (issue 17: boundary F1; mitochondria: their Dice)
MAIN = {"mito": ("dice_interior", "mitochondria Dice"), "vnc": ("boundary_f1", "boundary F1"),
        "isbi": ("boundary_f1", "boundary F1")}
TITLES = {"mito": "VNC, mitochondria only", "vnc": "VNC, dense 3-class", "isbi": "ISBI 2012"}


def _settings(specs: list[str]) -> list[tuple[str, Path]]:
    """(setting, run) pairs from SETTING[@LABEL]:RUN_DIR; a label is added to the title."""
    out = []
    for spec in specs:
        name, _, run = spec.partition(":")
        setting = name.partition("@")[0]
        if setting not in MAIN or not run:
            raise SystemExit(f"{spec!r}: give SETTING[@LABEL]:RUN_DIR with SETTING one of "
                             f"{list(MAIN)}")
        out.append((name, Path(run)))
    return out


def _main(name: str) -> tuple[str, str]:
    return MAIN[name.partition("@")[0]]


def _title(name: str, sep: str = " ") -> str:
    setting, _, label = name.partition("@")
    return TITLES[setting] + (f"{sep}({label})" if label else "")


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "eval" / "evaluation_sizes.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _save(fig: plt.Figure, out: Path) -> None:
    """The figure as a 256-colour PNG: docs images stay under make_docs.MAX_BYTES."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=72)
    plt.close(fig)
    Image.open(buf).convert("RGB").quantize(256).save(out, optimize=True)


def _f(row: dict[str, str], key: str) -> float:
    v = row.get(key, "")
    return float(v) if v not in ("", "nan") else math.nan


def _crop(a: np.ndarray, c: int) -> np.ndarray:
    y, x = (a.shape[0] - c) // 2, (a.shape[1] - c) // 2
    return a[y:y + c, x:x + c]


def samples(settings: list[tuple[str, Path]], out: Path, c: int) -> None:
    fig, axes = plt.subplots(len(settings), 6, figsize=(13, 2.3 * len(settings) + 0.4),
                             squeeze=False)
    for r, (name, run) in enumerate(settings):
        test = sorted((run / "test" / "images").glob("*.tif"))[0]
        syn = sorted((run / "syn" / "images").glob("*.tif"))
        var = next(p for p in syn if not p.name.startswith(("dense", "sparse", "like")))
        like = next((p for p in syn if p.name.startswith(("dense", "sparse", "like"))), syn[-1])
        panels = [(tifffile.imread(test), "real test slice"),
                  (to_palette(tifffile.imread(run / "test" / "masks" / test.name)), "its mask")]
        for p, what in ((var, "variation"), (like, "calibrated layout")):
            panels += [(to_palette(tifffile.imread(run / "syn" / "masks" / p.name)),
                        f"{what}: mask"),
                       (tifffile.imread(p), f"{what}: synthetic")]
        for k, (img, title) in enumerate(panels):
            ax = axes[r, k]
            ax.imshow(_crop(img, c), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if k == 0:
                ax.set_ylabel(_title(name, "\n"), fontsize=9)
    fig.tight_layout()
    _save(fig, out)


def guidance(settings: list[tuple[str, Path]], out: Path, weights: list[float],
             c: int) -> None:
    from napari_synthgen.registry import load_model, make_synthesizer

    fig, axes = plt.subplots(len(settings), 2 + len(weights),
                             figsize=(2.4 * (2 + len(weights)), 2.5 * len(settings) + 0.3),
                             squeeze=False)
    for r, (name, run) in enumerate(settings):
        real = sorted((run / "real" / "images").glob("*.tif"))[0]
        mask_file = next(p for p in sorted((run / "syn" / "masks").glob("*.tif"))
                         if not p.name.startswith(("dense", "sparse", "like")))
        mask = _crop(tifffile.imread(mask_file), c)
        model = load_model(run / "gen")
        panels = [(_crop(tifffile.imread(real), c), "real slice"), (to_palette(mask), "mask")]
        for w in weights:
            synth = make_synthesizer(model, device="cpu", steps=12, guidance=w)
            panels.append((synth(mask, seed=0), f"guidance {w:g}"))
        for k, (img, title) in enumerate(panels):
            ax = axes[r, k]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
            if k == 0:
                ax.set_ylabel(_title(name, "\n"), fontsize=9)
    fig.tight_layout()
    _save(fig, out)


def curves(settings: list[tuple[str, Path]], out: Path) -> None:
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 6.4),
                             squeeze=False)
    for k, (name, run) in enumerate(settings):
        metric, label = _main(name)
        plot_size_study(axes[0, k], axes[1, k], _rows(run), metric, label)
        axes[0, k].set_title(_title(name), fontsize=10)
        axes[0, k].set_xlabel("")
        axes[1, k].set_title("paired difference, 95 % CI", fontsize=9)
    fig.tight_layout()
    _save(fig, out)


def table(settings: list[tuple[str, Path]]) -> str:
    lines = ["| setting | figure | real slices | real only | real + synthetic | difference "
             "(95 % CI) | synthetic only |", "|---|---|---|---|---|---|---|"]
    for name, run in settings:
        metric, label = _main(name)
        rows = _rows(run)
        syn = next((r for r in rows if not int(r["n_real"] or 0)), None)
        for n in sorted({int(r["n_real"]) for r in rows if int(r["n_real"] or 0)}):
            real = next(r for r in rows if int(r["n_real"] or 0) == n and r["arm"] == "real")
            mix = next(r for r in rows if int(r["n_real"] or 0) == n and r["arm"] != "real")
            lines.append(
                f"| {_title(name)} | {label} | {n} | {_f(real, f'{metric}_mean'):.3f} ± "
                f"{_f(real, f'{metric}_std'):.3f} | {_f(mix, f'{metric}_mean'):.3f} ± "
                f"{_f(mix, f'{metric}_std'):.3f} | {_f(mix, f'diff_{metric}'):+.3f} "
                f"({_f(mix, f'diff_{metric}_low'):+.3f}, {_f(mix, f'diff_{metric}_high'):+.3f})"
                f" | {_f(syn, f'{metric}_mean') if syn else math.nan:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="+", help="SETTING:RUN_DIR (mito, vnc or isbi)")
    p.add_argument("--samples", type=Path)
    p.add_argument("--curves", type=Path)
    p.add_argument("--table", action="store_true")
    p.add_argument("--guidance", type=Path, help="the guidance figure (draws images)")
    p.add_argument("--weights", default="1,3", help="--guidance: the weights shown")
    p.add_argument("--crop", type=int, default=256, help="side of the shown crops (px)")
    args = p.parse_args()
    settings = _settings(args.settings)
    if args.samples:
        samples(settings, args.samples, args.crop)
    if args.curves:
        curves(settings, args.curves)
    if args.guidance:
        guidance(settings, args.guidance, [float(w) for w in args.weights.split(",")],
                 args.crop)
    if args.table:
        print(table(settings))


if __name__ == "__main__":
    main()
