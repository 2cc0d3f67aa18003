"""The Curate widget's quality panel: one candidate's curves beside the real reference.

Two small matplotlib plots in napari's theme (as the train widget's loss plot): grey-level
histograms per class (reference filled, candidate as a line) and the radially averaged power
spectrum (blur lowers its right end, grain raises it, a checkerboard adds a spike), plus an
HTML table of the figures and the score. Curves are computed in a worker (:func:`curves`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..masks import CLASS_NAMES
from ..quality import (
    ReferenceStats,
    bin_centres,
    class_histograms,
    log_power_spectrum,
    spectrum_frequencies,
)

#: Class line colours that read on dark and light themes (black, the mask colour of the
#: background class, would vanish on the dark one).
CLASS_COLOURS: tuple[str, str, str] = ("#4ea8de", "#5ec27a", "#f25f5c")
#: Figures shown in the table, with their labels; the rest stay in the manifest.
TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("score", "score (0-1, higher = closer to real)"),
    ("wd_background", "grey-level distance, background"),
    ("wd_interior", "grey-level distance, interior"),
    ("wd_boundary", "grey-level distance, boundary"),
    ("spectrum_dist", "power-spectrum distance"),
    ("peak_excess", "periodic peak above real"),
    ("std_ratio", "contrast / real contrast"),
)


@dataclass
class Curves:
    """What the panel draws for one candidate: per-class histograms (each summing to 1, or all
    zero for an absent class) and the log10 radial power spectrum."""

    histograms: np.ndarray  # (N_CLASSES, bins)
    spectrum: np.ndarray  # (SPECTRUM_BINS,)


def curves(image: np.ndarray, mask: np.ndarray) -> Curves:
    """The candidate's curves (core code only: runs in a worker thread)."""
    hist = class_histograms(image, mask)
    sums = hist.sum(axis=1, keepdims=True)
    hist = np.where(sums > 0, hist / np.maximum(sums, 1.0), 0.0)
    return Curves(hist, log_power_spectrum(image))


def _fmt(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(v) else f"{v:.3f}"


def table_html(figures: Mapping[str, Any] | None, threshold: float) -> str:
    """The figures and the score as a small HTML table; the score in red below ``threshold``."""
    if not figures:
        return "<i>quality figures: computing ...</i>"
    rows = []
    for key, label in TABLE_ROWS:
        value = _fmt(figures.get(key))
        if key == "score":
            score = figures.get("score")
            low = isinstance(score, (int, float)) and math.isfinite(score) and score < threshold
            value = (f"<b style='color:#f66'>{value} ⚑ below {threshold:.2f}</b>" if low
                     else f"<b>{value}</b>")
        rows.append(f"<tr><td>{label}</td><td align='right'>&nbsp;{value}</td></tr>")
    return "<table cellspacing='0' cellpadding='1'>" + "".join(rows) + "</table>"


class QualityPanel:
    """Histograms and power spectrum of the shown candidate against the reference."""

    def __init__(self, theme: str = "dark") -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        from .train import theme_colours

        self._theme_colours = theme_colours
        self.figure = Figure(figsize=(4, 2.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.ax_hist = self.figure.add_subplot(121)
        self.ax_spec = self.figure.add_subplot(122)
        self.colours = theme_colours(theme)
        self._last: tuple[Curves | None, ReferenceStats | None] = (None, None)
        self.show(None, None)

    def set_theme(self, theme: str) -> None:
        """Follow napari's theme (the viewer's ``theme`` event)."""
        self.colours = self._theme_colours(theme)
        self.show(*self._last)

    def _style(self, ax: Any, xlabel: str, title: str) -> None:
        c = self.colours
        ax.set_facecolor(c["panel"])
        ax.set_xlabel(xlabel, fontsize=7, color=c["text"])
        ax.set_title(title, fontsize=8, color=c["text"])
        ax.tick_params(labelsize=6, colors=c["text"])
        for spine in ax.spines.values():
            spine.set_color(c["grid"])

    def show(self, candidate: Curves | None, reference: ReferenceStats | None) -> None:
        """Draw ``candidate``'s curves (lines) over the reference's (filled / dashed)."""
        self._last = (candidate, reference)
        self.figure.set_facecolor(self.colours["background"])
        for ax in (self.ax_hist, self.ax_spec):
            ax.clear()
        self._style(self.ax_hist, "grey level", "per class: real ▒ vs this —")
        self._style(self.ax_spec, "cycles / pixel", "power spectrum (log10)")
        x = bin_centres()
        for cls, (name, colour) in enumerate(zip(CLASS_NAMES, CLASS_COLOURS, strict=True)):
            if reference is not None and np.any(reference.histogram(cls) > 0):
                self.ax_hist.fill_between(x, reference.histogram(cls), color=colour, alpha=0.3,
                                          linewidth=0)
            if candidate is not None and candidate.histograms[cls].any():
                self.ax_hist.plot(x, candidate.histograms[cls], color=colour, linewidth=1,
                                  label=name)
        f = spectrum_frequencies()
        if reference is not None:
            self.ax_spec.plot(f, reference.log_spectrum, color=self.colours["text"],
                              linewidth=1, linestyle="--", label="real")
        if candidate is not None:
            self.ax_spec.plot(f, candidate.spectrum, color=CLASS_COLOURS[0], linewidth=1,
                              label="this")
        if candidate is not None or reference is not None:
            legend = self.ax_spec.legend(fontsize=6, loc="upper right",
                                         facecolor=self.colours["panel"],
                                         edgecolor=self.colours["grid"])
            for text in legend.get_texts():
                text.set_color(self.colours["text"])
        self.canvas.draw_idle()
