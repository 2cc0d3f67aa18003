"""The z-consistency part of ``napari-synthgen report``, for samples that are (Z, Y, X) stacks.

Writes ``report_z.csv`` (one row per stack: correlation of residuals beyond the mask at lags
1..4, mean flicker), ``report_z_pairs.csv`` (one row per adjacent pair of slices) and
``report_z.png`` (correlation against lag, synthetic stacks against the real reference stack;
flicker per pair), and gives the Markdown section. See :mod:`.zconsistency` for the figures.

The real reference stack comes from the ``--reference`` folder: its (Z, Y, X) pairs, or else its
2-D pairs taken as consecutive sections in file-name order (as ISBI 2012's and
``vnc_stack1``'s names are), when there are at least two of one shape.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .masks import CLASS_NAMES
from .zconsistency import MAX_LAG, RESIDUAL_SIGMA, ZConsistency, z_consistency

#: (name, image, mask) as the report reads them.
Item = tuple[str, np.ndarray, np.ndarray]

#: A reference of 2-D slices is measured on its first this many slices (in name order): the
#: figures need neighbours, not every section, and a stack of many large slices needs gigabytes.
REFERENCE_MAX_SLICES: int = 64

#: Output files of the z-consistency part.
Z_OUTPUTS: tuple[str, ...] = ("report_z.csv", "report_z_pairs.csv", "report_z.png")


@dataclass
class ZStack:
    """One stack's z-consistency: ``kind`` is ``synthetic`` or ``real``."""

    kind: str
    name: str
    figures: ZConsistency


def split_stacks(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """2-D samples for the per-sample figures (each stack's slices named ``<name>_zNNN``)
    and the (Z, Y, X) stacks themselves (two slices or more). A 2-D set comes back unchanged,
    with no stacks."""
    slices: list[Item] = []
    stacks: list[Item] = []
    for name, image, mask in items:
        if image.ndim == 3 and mask.ndim == 3 and image.shape[0] >= 2:
            if image.shape != mask.shape:
                raise ValueError(f"{name}: image stack {image.shape} and mask stack "
                                 f"{mask.shape} differ; each slice needs its mask.")
            stacks.append((name, image, mask))
            width = max(3, len(str(image.shape[0] - 1)))
            slices += [(f"{name}_z{k:0{width}d}", image[k], mask[k])
                       for k in range(image.shape[0])]
        else:
            slices.append((name, image, mask))
    return slices, stacks


def reference_stacks(real: list[Item]) -> tuple[list[Item], str]:
    """The real stacks to compare with, and a sentence saying how their slice order is known.

    ``real`` is the reference folder as read (stacks not split)."""
    stacks = [(n, im, m) for n, im, m in real if im.ndim == 3 and im.shape[0] >= 2]
    if stacks:
        return stacks, (f"{len(stacks)} (Z, Y, X) stack(s) of the reference folder, slices in "
                        "stack order")
    flat = [(n, im, m) for n, im, m in real if im.ndim == 2]
    if len(flat) < 2:
        return [], "no real stack: the reference holds fewer than two slices (or is a model)"
    shapes = {im.shape for _, im, _ in flat}
    if len(shapes) > 1:
        return [], (f"no real stack: the reference's 2-D slices have {len(shapes)} different "
                    "shapes, so they are not one series of sections")
    note = (f"the reference's {len(flat)} 2-D slices as consecutive sections in file-name "
            f"order ({flat[0][0]} first)")
    if len(flat) > REFERENCE_MAX_SLICES:
        flat = flat[:REFERENCE_MAX_SLICES]
        note += f", the first {REFERENCE_MAX_SLICES} of them"
    name = f"{flat[0][0]}..{flat[-1][0]}"
    return [(name, np.stack([im for _, im, _ in flat]), np.stack([m for _, _, m in flat]))], note


def measure(samples: list[Item], real: list[Item]) -> list[ZStack]:
    """Z-consistency of every synthetic stack and every real reference stack."""
    out = [ZStack("synthetic", n, z_consistency(im, m)) for n, im, m in samples]
    out += [ZStack("real", n, z_consistency(im, m)) for n, im, m in real]
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_csvs(stacks: list[ZStack], out: Path) -> list[Path]:
    """``report_z.csv`` (per stack) and ``report_z_pairs.csv`` (per adjacent pair)."""
    rows = [{"kind": s.kind, "name": s.name, **s.figures.summary()} for s in stacks]
    path = out / "report_z.csv"
    keys = list(rows[0]) if rows else ["kind", "name"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows({k: _plain(v) for k, v in r.items()} for r in rows)
    pairs = out / "report_z_pairs.csv"
    keys = ["kind", "name", "z", "z_corr", "texture_flicker",
            *[f"mean_jump_{c}" for c in CLASS_NAMES]]
    with pairs.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        for s in stacks:
            f = s.figures
            for z in range(f.n_slices - 1):
                w.writerow([s.kind, s.name, z, _plain(float(f.pair_corr[z])),
                            _plain(float(f.texture_flicker[z])),
                            *[_plain(float(v)) for v in f.mean_jump[z]]])
    return [path, pairs]


def _mean_curve(stacks: list[ZStack], kind: str) -> np.ndarray | None:
    curves = [s.figures.lag_corr for s in stacks if s.kind == kind]
    if not curves:
        return None
    arr = np.array(curves)
    return np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in arr.T])


#: Colours of synthetic stacks (real stacks are black; C3 is the synthetic mean).
_COLOURS: tuple[str, ...] = ("C1", "C2", "C4", "C5", "C6", "C8", "C9", "C0", "C7")


def _colours(stacks: list[ZStack]) -> list[str]:
    syn = [i for i, s in enumerate(stacks) if s.kind != "real"]
    out = ["k"] * len(stacks)
    for n, i in enumerate(syn):
        out[i] = _COLOURS[n % len(_COLOURS)]
    return out


def write_figure(stacks: list[ZStack], path: Path) -> Path:
    """Correlation against lag (synthetic against real) and flicker per adjacent pair."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.3, "left": 0.05, "right": 0.98,
                                           "bottom": 0.14, "top": 0.88})
    lags = np.arange(1, MAX_LAG + 1)
    colours = _colours(stacks)
    few = len(stacks) <= 6
    ax = axes[0]
    for s, colour in zip(stacks, colours, strict=True):
        ax.plot(lags, s.figures.lag_corr, marker="o", ms=3, color=colour,
                lw=1.5 if s.kind == "real" else 0.8, alpha=1.0 if s.kind == "real" else 0.7,
                label=f"{s.kind}: {s.name}" if few else None)
    for kind, colour, label in (("real", "k", "real (mean)"), ("synthetic", "C3",
                                                               "synthetic (mean)")):
        curve = _mean_curve(stacks, kind)
        if curve is not None:
            ax.plot(lags, curve, color=colour, lw=2.5, ls="--", label=label)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(lags)
    ax.set_xlabel("slices apart (lag)", fontsize=8)
    ax.set_ylabel("residual correlation", fontsize=8)
    ax.set_title(f"correlation beyond the mask (sigma {RESIDUAL_SIGMA:g} px)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for s, colour in zip(stacks, colours, strict=True):
        ax.plot(np.arange(s.figures.n_slices - 1) + 0.5, s.figures.texture_flicker,
                color=colour, lw=1.5 if s.kind == "real" else 0.8, marker=".",
                label=f"{s.kind}: {s.name}" if few else None)
    ax.axhline(np.sqrt(2), color="0.6", lw=0.8, ls=":")
    ax.text(0.01, np.sqrt(2), "independent", fontsize=6, color="0.4", va="bottom",
            transform=ax.get_yaxis_transform())
    ax.set_xlabel("between slices z and z+1", fontsize=8)
    ax.set_ylabel("RMS(r[z+1] - r[z]) / RMS(r)", fontsize=8)
    ax.set_title("texture flicker per pair (0 repeated, 1.41 independent)", fontsize=9)
    if few:
        ax.legend(fontsize=6)
    ax = axes[2]
    for s in stacks:
        for c, name in enumerate(CLASS_NAMES):
            jump = s.figures.mean_jump[:, c]
            if np.isfinite(jump).any():
                ax.plot(np.arange(jump.size) + 0.5, jump, color=f"C{c}",
                        ls="-" if s.kind == "real" else "--", lw=1,
                        label=f"{s.kind} {name}")
    ax.set_xlabel("between slices z and z+1", fontsize=8)
    ax.set_ylabel("|change of class mean| (grey 0..1)", fontsize=8)
    ax.set_title("brightness flicker per class", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=6)
    fig.savefig(path)
    return path


def markdown(stacks: list[ZStack], reference_note: str) -> list[str]:
    """The Markdown section: how it is measured, one row per stack, real against synthetic."""
    lines = ["", "## Z-consistency", "",
             "Correlation of adjacent slices' residuals beyond the mask (each slice minus its "
             f"per-class mean grey levels, smoothed with sigma {RESIDUAL_SIGMA:g} px), at 1 to "
             f"{MAX_LAG} slices apart; texture flicker 0 for a repeated texture, 1.41 for "
             "independent ones. Real serial sections give about 0.40-0.47 at lag 1 (ISBI 2012, "
             "VNC stack 1); slice-by-slice synthesis about 0. Reference: "
             f"{reference_note}.", "",
             "| kind | stack | slices | " + " | ".join(f"lag {k}" for k in
                                                     range(1, MAX_LAG + 1))
             + " | texture flicker |",
             "|---|---|---|" + "---|" * MAX_LAG + "---|"]
    for s in stacks:
        f = s.figures
        lines.append(f"| {s.kind} | {s.name} | {f.n_slices} | "
                     + " | ".join(_fmt(v) for v in f.lag_corr)
                     + f" | {_fmt(float(np.nanmean(f.texture_flicker)))} |")
    syn, real = _mean_curve(stacks, "synthetic"), _mean_curve(stacks, "real")
    if syn is not None and real is not None:
        lines += ["", f"Adjacent-slice correlation: synthetic {_fmt(syn[0])} against real "
                  f"{_fmt(real[0])} (difference {_fmt(syn[0] - real[0])})."]
    return lines


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.3f}"
