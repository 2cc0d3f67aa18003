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

from napari_synthgen.evaluation_report import plot_size_study
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


def reports(settings: list[tuple[str, Path]], out: Path, width: int = 1100) -> None:
    """Each run's ``report/report.png`` (``napari-synthgen report`` of its synthetic set
    against its real slices: samples, per-class grey-level histograms, spectrum), titled,
    scaled to ``width`` px and stacked, as a 256-colour PNG."""
    from PIL import Image, ImageDraw

    parts = []
    for name, run in settings:
        img = Image.open(run / "report" / "report.png").convert("RGB")
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        canvas = Image.new("RGB", (width, img.height + 24), "white")
        ImageDraw.Draw(canvas).text((8, 5), f"{_title(name)}: napari-synthgen report",
                                    fill="black")
        canvas.paste(img, (0, 24))
        parts.append(canvas)
    sheet = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    y = 0
    for p in parts:
        sheet.paste(p, (0, y))
        y += p.height
    sheet.quantize(256).save(out, optimize=True)


def _runs(run: Path) -> list[dict[str, str]]:
    with open(run / "eval" / "evaluation_runs.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


#: evaluate's per-class Dice columns and what the classes are in each setting
CLASSES = (("dice_background", "class 0"), ("dice_interior", "class 1"),
           ("dice_boundary", "class 2 (boundary)"))
CLASS_NAMES = {"vnc": ("glia, extracellular", "cell interior", "membrane"),
               "mito": ("all other tissue", "mitochondrion", "its boundary"),
               "isbi": ("(absent)", "cell interior", "membrane")}


def classes(settings: list[tuple[str, Path]], out: Path) -> None:
    """Per-class Dice on the real test slices of each arm at the run's largest real size:
    where on the mask the synthetic pairs help or cost (bars: mean over seeds; lines: std)."""
    fig, axes = plt.subplots(1, len(settings), figsize=(4.6 * len(settings), 3.6),
                             squeeze=False)
    for k, (name, run) in enumerate(settings):
        ax, rows = axes[0, k], _runs(run)
        n = max(int(r["n_real"] or 0) for r in rows)
        arms = [("real", n, "real only", "#7f7f7f"),
                (next(r["arm"] for r in rows if r["arm"] not in ("real", "synthetic")), n,
                 "real + synthetic", "#2ca02c"), ("synthetic", 0, "synthetic only", "#1f77b4")]
        for j, (arm, size, label, colour) in enumerate(arms):
            mine = [r for r in rows if r["arm"] == arm and int(r["n_real"] or 0) == size]
            vals = np.array([[_f(r, c) for c, _ in CLASSES] for r in mine])
            x = np.arange(len(CLASSES)) + (j - 1) * 0.27
            ax.bar(x, vals.mean(0), 0.27, yerr=vals.std(0), capsize=2, color=colour,
                   label=label if size == 0 else f"{label} ({n} real)")
        names = CLASS_NAMES[name.partition("@")[0]]
        ax.set_xticks(np.arange(len(CLASSES)),
                      [f"{c}\n{what}" for (_, c), what in zip(CLASSES, names, strict=True)],
                      fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice on real test slices")
        ax.set_title(_title(name), fontsize=9)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    _save(fig, out)


def ceiling(settings: list[tuple[str, Path]], ceilings: list[tuple[str, Path]],
            out: Path) -> str:
    """Each setting's real-only learning curve up to every labelled slice
    (scripts/utility_ceiling.sh) beside the study run's arms and the targets (real only
    +0.05 at 2 slices, +0.03 at 5); returns the curve as a Markdown table."""
    fig, axes = plt.subplots(1, len(ceilings), figsize=(5.0 * len(ceilings), 3.8),
                             squeeze=False)
    lines = ["| setting | real slices | real only (all labelled slices available) |",
             "|---|---|---|"]
    for k, (cname, crun) in enumerate(ceilings):
        ax, setting = axes[0, k], cname.partition("@")[0]
        metric, label = _main(cname)
        curve = sorted((r for r in _rows(crun) if r["arm"] == "real"),
                       key=lambda r: int(r["n_real"]))
        xs = [int(r["n_real"]) for r in curve]
        ax.errorbar(xs, [_f(r, f"{metric}_mean") for r in curve],
                    yerr=[_f(r, f"{metric}_std") for r in curve], marker="o", capsize=3,
                    color="k", label="real only, more labelled slices")
        for r in curve:
            lines.append(f"| {_title(cname)} | {r['n_real']} | {_f(r, f'{metric}_mean'):.3f} ± "
                         f"{_f(r, f'{metric}_std'):.3f} |")
        study = next((run for name, run in settings if name.partition("@")[0] == setting),
                     None)
        if study is not None:
            rows = _rows(study)
            for arm, colour, mk, what in (("real", "#7f7f7f", "s", "study: real only"),
                                          (None, "#2ca02c", "D", "study: real + synthetic")):
                mine = sorted((r for r in rows if int(r["n_real"] or 0) and
                               (r["arm"] == arm if arm else r["arm"] != "real")),
                              key=lambda r: int(r["n_real"]))
                ax.errorbar([int(r["n_real"]) for r in mine],
                            [_f(r, f"{metric}_mean") for r in mine],
                            yerr=[_f(r, f"{metric}_std") for r in mine], marker=mk, ls="none",
                            capsize=3, color=colour, label=what)
            syn = next((r for r in rows if not int(r["n_real"] or 0)), None)
            if syn is not None:
                ax.axhline(_f(syn, f"{metric}_mean"), color="#1f77b4", ls="--",
                           label="study: synthetic only")
            for n, gain in ((2, 0.05), (5, 0.03)):
                real = next((r for r in rows if r["arm"] == "real" and
                             int(r["n_real"] or 0) == n), None)
                if real is not None:
                    ax.plot([n], [_f(real, f"{metric}_mean") + gain], marker="_", ms=22,
                            mew=2.5, color="#d62728", ls="none",
                            label="target" if n == 2 or ax.get_legend_handles_labels()[1]
                            .count("target") == 0 else None)
        ax.set_xticks(xs)
        ax.set_xlabel("real training slices")
        ax.set_ylabel(f"{label} on real test slices")
        ax.set_title(_title(cname), fontsize=10)
    handles: dict[str, object] = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    _save(fig, out)
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
    p.add_argument("--classes", type=Path, help="per-class Dice of each arm")
    p.add_argument("--report", type=Path, help="each run's report figure, stacked")
    p.add_argument("--ceiling", type=Path,
                   help="the real-only learning curve of --ceiling-runs beside the settings")
    p.add_argument("--ceiling-runs", nargs="+", default=[], metavar="SETTING:RUN_DIR",
                   help="runs of scripts/utility_ceiling.sh")
    args = p.parse_args()
    settings = _settings(args.settings)
    if args.samples:
        samples(settings, args.samples, args.crop)
    if args.curves:
        curves(settings, args.curves)
    if args.guidance:
        guidance(settings, args.guidance, [float(w) for w in args.weights.split(",")],
                 args.crop)
    if args.classes:
        classes(settings, args.classes)
    if args.report:
        reports(settings, args.report)
    if args.ceiling:
        print(ceiling(settings, _settings(args.ceiling_runs), args.ceiling))
    if args.table:
        print(table(settings))


if __name__ == "__main__":
    main()
