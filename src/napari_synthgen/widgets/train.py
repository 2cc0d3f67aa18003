"""Train widget: data folders, the model family and its settings, Start / Stop / Resume,
progress, loss plot, previews.

Training runs in a child process (``napari-synthgen train --events jsonl``) read by a thread
worker: the viewer never waits for it, Stop saves a checkpoint and ends it (a trainer that does
not answer is terminated, from a thread), and closing napari asks first, then stops it without
waiting. Each Start proposes a new run folder; one the user picked that holds a run is asked
about (resume / new folder / cancel). The Family box lists the registered model families; each
family's settings are widgets built from its settings dataclass and shown only while that
family is chosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
import types
import typing
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication

from .. import registry
from ..families.base import CliOption, Family
from ..io import read_array
from ..masks import ENCODINGS
from ..training.config import ConfigError, TrainConfig
from ..training.runs import free_run_folder, next_run_folder, run_step
from . import _common
from ._bus import bus_for
from ._common import (
    READ_AS_CHOICES,
    add_collapsible,
    call_on_destroy,
    connect_weakly,
    read_as_wording,
    report_error,
    show_info,
    widen_path,
    wrap_label,
)
from ._worker import Workers

if TYPE_CHECKING:
    import napari

PREVIEW_LAYER = "training preview"
#: Where the dock proposes run folders: <family>-001, -002 ... (the first free one)
RUNS_ROOT = Path.home() / "napari-synthgen-runs"
STOP_GRACE_S = 60.0  # a trainer that has not stopped after this is terminated
KILL_GRACE_S = 10.0  # after SIGTERM, a trainer still alive this long is killed
CLOSE_GRACE_S = 15.0  # after napari closed, the trainer has this long to save (not waited on)
STOP_AND_CLOSE = "Stop training and close"
PLOT_INTERVAL_S = 0.5
PLOT_MAX_POINTS = 2000  # longer series are drawn as this many block means

#: Line colours that read on napari's dark and light backgrounds (cycled past the eighth loss).
SERIES_COLOURS = ("#4ea8de", "#f4a261", "#5ec27a", "#e76f9a", "#b392f0", "#2ec4b6",
                  "#d4a72c", "#9aa5b1")

#: Where this dock suggests other values than a family's defaults: a pix2pix that trains on a
#: laptop (the CLI keeps the reference width 64).
WIDGET_DEFAULTS: dict[str, dict[str, Any]] = {"pix2pix": {"ngf": 32}}
#: Common settings the dock starts with where they differ from TrainConfig's (a family's
#: ``defaults`` still win for keys it names).
COMMON_WIDGET_DEFAULTS: dict[str, Any] = {"steps": 2000, "batch_size": 4, "flips": True,
                                          "rot90": True}
_SCALARS = (bool, int, float, str)


def theme_colours(theme: str) -> dict[str, str]:
    """Background, panel, text and grid colours of a napari theme (dark when it is unknown)."""
    from napari.utils.theme import available_themes, get_system_theme, get_theme

    name = get_system_theme() if theme == "system" else theme
    t = get_theme(name if name in available_themes() else "dark")
    return {"background": t.background.as_hex(), "panel": t.foreground.as_hex(),
            "text": t.text.as_hex(), "grid": t.highlight.as_hex()}


# --------------------------------------------------------------------------- family settings
@dataclasses.dataclass(frozen=True)
class SettingField:
    """One family setting as the dock shows it: ``kind`` is bool, int, float, str, choice or
    optional (an ``X | None`` setting typed as text, empty for None, parsed as ``inner``)."""

    key: str
    kind: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] = ()
    inner: type | None = None


def family_fields(fam: Family) -> list[SettingField]:
    """The settings of ``fam`` the dock offers, in the order of its settings dataclass: those
    with a train CLI option (all when it declares none) whose type a widget can hold (bool,
    int, float, str, a choice, or one of these or None); the others keep their defaults."""
    options = {opt.key: opt for opt in fam.cli_options}
    try:
        hints = typing.get_type_hints(fam.settings)
    except Exception:  # an annotation that does not resolve: judge by the default
        hints = {}
    suggested = WIDGET_DEFAULTS.get(fam.name, {})
    out = []
    for f in dataclasses.fields(fam.settings):
        if options and f.name not in options:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        default = suggested.get(f.name, default)
        hint = hints.get(f.name, f.type if isinstance(f.type, type) else None)
        kind, inner, choices = _kind(hint, default)
        if kind is None:
            continue
        choices = choices or _declared_choices(fam, f, options.get(f.name))
        if choices and kind in ("str", "int", "float"):
            kind = "choice"
        opt = options.get(f.name)
        out.append(SettingField(f.name, kind, default, opt.help if opt else "",
                                tuple(choices), inner))
    return out


def _kind(hint: Any, default: Any) -> tuple[str | None, type | None, tuple[Any, ...]]:
    """(kind, inner type of an optional, choices of a Literal) of a type hint."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "choice", None, typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and args[0] in _SCALARS and len(args) < len(typing.get_args(hint)):
            return "optional", args[0], ()
        return None, None, ()
    if hint is None:
        hint = type(default) if type(default) in _SCALARS else None
    if hint in _SCALARS:
        return hint.__name__, None, ()
    return None, None, ()


def _declared_choices(fam: Family, f: dataclasses.Field,
                      opt: CliOption | None) -> tuple[Any, ...]:
    family_choices = getattr(fam, "choices", None)
    for found in (f.metadata.get("choices"), getattr(opt, "choices", None),
                  family_choices.get(f.name) if isinstance(family_choices, Mapping) else None):
        if found:
            return tuple(found)
    return ()


def setting_widget(field: SettingField) -> Any:
    """A magicgui widget (named after the setting) holding ``field``'s default."""
    common = {"name": field.key, "label": field.key, "tooltip": field.help or None}
    v = field.default
    if field.kind == "bool":
        common.pop("label")
        return CheckBox(value=bool(v), text=field.key, **common)
    if field.kind == "choice":
        choices = list(field.choices) if v in field.choices else [v, *field.choices]
        return ComboBox(choices=choices, value=v, **common)
    if field.kind == "int":
        return SpinBox(value=v, min=0 if v >= 0 else -(2**31) + 1, max=2**31 - 1, **common)
    if field.kind == "float":
        w = FloatSpinBox(min=0.0 if v >= 0 else -1e12, max=1e12, step=_step(v), **common)
        w.native.setDecimals(max(w.native.decimals(), _decimals(v) + 1))
        w.value = v
        return w
    text = "" if v is None else str(v)
    w = LineEdit(value=text, **common)
    if field.kind == "optional":
        w.tooltip = f"{field.help + '; ' if field.help else ''}leave empty for none"
    return w


def read_setting(field: SettingField, widget: Any, family: str) -> Any:
    """The value of a setting widget; ConfigError naming the setting when its text is not a
    value of the setting's type."""
    if field.kind != "optional":
        return widget.value
    text = str(widget.value).strip()
    if text.lower() in ("", "none"):
        return None
    try:
        return _parse(field.inner, text)
    except ValueError:
        raise ConfigError(f"{family} setting {field.key}: {text!r} is not a "
                          f"{field.inner.__name__ if field.inner else 'value'}; type one or "
                          "leave it empty for none.") from None


def _parse(kind: type | None, text: str) -> Any:
    if kind is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(text)
    return kind(text) if kind is not None else text


def _decimals(v: float) -> int:
    """Decimal places that show ``v`` exactly (100.0: 1, 0.999: 3, 2e-4: 4)."""
    if not v or not math.isfinite(v):
        return 1
    decimals = len(f"{abs(v):.12f}".rstrip("0").split(".")[1])
    return min(12, max(1, decimals))


def _step(v: float) -> float:
    """A spin step a tenth of the default's order of magnitude (0.1 when it is 0)."""
    if not v or not math.isfinite(v):
        return 0.1
    return 10.0 ** (math.floor(math.log10(abs(v))) - 1)


# --------------------------------------------------------------------------- loss plot
class LossPlot:
    """A small matplotlib plot of every loss the trainer reports, in napari's theme.

    Each loss is drawn as reported, on a symmetric-log y axis: losses of very different sizes
    (pix2pix's L1 term ~10-50 beside GAN terms ~0.1-1) all show their trend without a factor
    of their own, negative losses (hinge GAN) fit, and the legend matches the CLI's numbers.
    Known names come first, in the family's ``loss_names`` order. Redrawn at most every 0.5 s.
    """

    def __init__(self, theme: str = "dark") -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.ax = self.figure.add_subplot(111)
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self.order: tuple[str, ...] = ()
        self.colours = theme_colours(theme)
        self._last_draw = 0.0
        self.clear()

    def set_theme(self, theme: str) -> None:
        """Follow napari's theme (the viewer's ``theme`` event)."""
        self.colours = theme_colours(theme)
        self.draw()

    def set_order(self, names: Iterable[str]) -> None:
        """Draw these losses first, in this order (the family's ``loss_names``)."""
        self.order = tuple(names)

    def names(self) -> list[str]:
        """The losses received: known ones in ``order``, then others as they arrived."""
        known = [n for n in self.order if n in self.series]
        return known + [n for n in self.series if n not in self.order]

    def _style(self) -> None:
        c = self.colours
        self.figure.set_facecolor(c["background"])
        self.ax.set_facecolor(c["panel"])
        self.ax.set_xlabel("step", fontsize=8, color=c["text"])
        self.ax.set_ylabel("loss", fontsize=8, color=c["text"])
        self.ax.tick_params(labelsize=7, colors=c["text"])
        for spine in self.ax.spines.values():
            spine.set_color(c["grid"])
        self.ax.grid(True, color=c["grid"], linewidth=0.4, alpha=0.6)

    def clear(self) -> None:
        self.series.clear()
        self.ax.clear()
        self._style()
        self.canvas.draw_idle()

    def add(self, step: int, losses: Mapping[str, Any]) -> None:
        """Record one step's losses (any names; values that are not numbers are skipped)."""
        for name, value in losses.items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            xs, ys = self.series.setdefault(str(name), ([], []))
            xs.append(step)
            ys.append(v)
        if time.monotonic() - self._last_draw > PLOT_INTERVAL_S:
            self.draw()

    def draw(self) -> None:
        self._last_draw = time.monotonic()
        self.ax.clear()
        self._style()
        names = self.names()
        for i, name in enumerate(names):
            xs, ys = _thin(*self.series[name], PLOT_MAX_POINTS)
            self.ax.plot(xs, ys, label=name, linewidth=1,
                         color=SERIES_COLOURS[i % len(SERIES_COLOURS)])
        if names:
            values = np.concatenate([np.asarray(self.series[n][1], float) for n in names])
            self.ax.set_yscale("symlog", linthresh=_linthresh(values), linscale=0.5)
            legend = self.ax.legend(fontsize=7, loc="upper right", ncol=2 if len(names) > 4 else 1,
                                    facecolor=self.colours["panel"],
                                    edgecolor=self.colours["grid"])
            for text in legend.get_texts():
                text.set_color(self.colours["text"])
        self.canvas.draw_idle()


def _linthresh(values: np.ndarray) -> float:
    """The linear range of the symlog axis: the decade of the smallest non-zero |loss|, so
    every loss but exact zeros sits in the logarithmic part (1e-8 .. 1)."""
    mags = np.abs(values[np.isfinite(values) & (values != 0)])
    if not mags.size:
        return 1.0
    return float(min(1.0, max(1e-8, 10.0 ** math.floor(math.log10(mags.min())))))


def _thin(xs: list[int], ys: list[float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``n`` points: means of consecutive blocks (a long run stays quick to
    draw, and the mean reads better than one noisy step in many)."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    size = math.ceil(len(x) / n) if len(x) > n else 1
    if size == 1:
        return x, y
    cut = len(x) // size * size
    bx, by = x[:cut].reshape(-1, size).mean(1), y[:cut].reshape(-1, size).mean(1)
    if cut < len(x):
        bx, by = np.append(bx, x[cut:].mean()), np.append(by, y[cut:].mean())
    return bx, by


def stop_in_background(process: Any, grace: float, *, terminate: bool = False) -> None:
    """End a trainer without the GUI waiting on it: a thread asks it to stop (or terminates
    it) and reaps it, killing it if it has not ended after ``grace`` seconds."""
    work = process.terminate if terminate else process.stop
    threading.Thread(target=work, kwargs={"grace": grace}, daemon=True,
                     name="napari-synthgen trainer stop").start()


class _CloseGuard(QObject):
    """Asks the Train dock before napari's window closes (Quit, the window's close button)."""

    def __init__(self, widget: TrainWidget) -> None:
        super().__init__()
        self._widget = weakref.ref(widget)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        widget = self._widget()
        if (event.type() == QEvent.Type.Close and widget is not None
                and not widget.allow_close()):
            event.ignore()
            return True
        return False


class TrainWidget(Container):
    """Dock widget to train a model of any registered family on paired folders, in a child
    process."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self._init_state()
        common = self._common_starting_values()
        self._build_data_fields()
        self._build_run_fields(common)
        self._build_advanced_fields(common)
        self._build_family_settings()
        self._build_run_controls()
        self._lay_out()
        self._connect_events()
        self._set_running(False)

    def _init_state(self) -> None:
        """What a run and the dock's lifetime keep: the trainer, its reading worker, events,
        the newest checkpoint, the stop deadline and the close guard."""
        self.process: Any = None  # TrainerProcess
        self.worker: Any = None
        self.events: list[Mapping[str, Any]] = []
        self.checkpoint: str | None = None
        self._jobs = Workers()
        self._closing = False
        self._stop_requested = False
        self._stop_deadline = QTimer()
        self._stop_deadline.setSingleShot(True)
        self._stop_deadline.timeout.connect(self._stop_timeout)
        self._close_guard = _CloseGuard(self)
        self._guarded: weakref.ref | None = None  # the window the guard watches
        #: the run folder the dock proposed or last trained into: a Start finding a run there
        #: moves on to a new folder without asking (a folder the user picked is asked about)
        self._own_out: Path | None = free_run_folder(
            RUNS_ROOT / f"{next(iter(registry.names()))}-001")

    @staticmethod
    def _common_starting_values() -> dict[str, Any]:
        """The common settings the dock starts with (TrainConfig's, or the dock's own)."""
        base = TrainConfig.__dataclass_fields__
        return {k: COMMON_WIDGET_DEFAULTS.get(k, base[k].default) for k in (
            "steps", "tile", "batch_size", "lr", "flips", "rot90", "seed", "encoding")}

    def _build_data_fields(self) -> None:
        """The training data folders, a button to add one and what the check found."""
        self.data = LineEdit(label="Data folders", value="")
        self.add_data = PushButton(text="Add folder...")
        self.data_status = Label(value="Paired folders (images/ + masks/) or aligned A|B images.")
        self.unlabeled = LineEdit(label="Unlabelled images", value="")
        self.unlabeled.tooltip = (
            "Folders (';'-separated) of raw images without masks, or image stacks: they join "
            "training with no mask (the diffusion family learns the tissue from them; "
            "Synthesize's Guidance then weighs mask against tissue).")
        self.add_unlabeled = PushButton(text="Add unlabelled folder...")

    def _build_run_fields(self, common: dict[str, Any]) -> None:
        """Validation, run folder, family and the settings most runs change."""
        self.val = FileEdit(mode="d", label="Validation (optional)")
        self.out = FileEdit(mode="d", label="Checkpoints", value=str(self._own_out))
        self.family = ComboBox(choices=list(registry.names()), label="Family")
        self.steps = SpinBox(value=common["steps"], min=1, max=10_000_000, label="Steps")
        self.tile = SpinBox(value=common["tile"], min=64, max=4096, step=64, label="Tile")
        self.batch = SpinBox(value=common["batch_size"], min=1, max=512, label="Batch size")
        self.device = ComboBox(choices=["auto", "cpu", "cuda", "mps"], value="auto",
                               label="Device")
        self.unlabel = FloatSpinBox(value=0.0, min=0.0, max=1.0, step=0.05,
                                    label="Unlabel cells")
        self.unlabel.tooltip = (
            "Share of the cells (interior and boundary) turned into background in each "
            "training mask, the image kept: the model learns to paint unlabelled tissue where "
            "a mask says background. 0.3 suits data whose masks have no background.")

    def _build_advanced_fields(self, common: dict[str, Any]) -> None:
        """The settings in the Advanced section, and the table of every common setting."""
        self.stride = SpinBox(value=0, min=0, max=4096, label="Stride (0 = random crops)")
        self.lr = FloatSpinBox(value=common["lr"], min=1e-7, max=1.0, step=1e-5,
                               label="Learning rate")
        self.flips = CheckBox(value=common["flips"], text="Flips")
        self.rot90 = CheckBox(value=common["rot90"], text="90° turns")
        self.precision = ComboBox(choices=["auto", "fp32", "bf16", "fp16"], value="auto",
                                  label="Precision")
        self.checkpoint_every = SpinBox(value=500, min=1, max=10_000_000, label="Checkpoint every")
        self.sample_every = SpinBox(value=100, min=1, max=10_000_000, label="Preview every")
        self.seed = SpinBox(value=common["seed"], min=0, max=2**31 - 1, label="Seed")
        self.encoding = ComboBox(choices=list(ENCODINGS), value=common["encoding"],
                                 label="Mask encoding")
        self.encoding.tooltip = (
            "How masks are fed to the model: onehot (diffusion default), rgb (pix2pix default), "
            "label, or sparse: class 0 says nothing (organelle masks, where background is "
            "unlabelled tissue) and is coded like an image without a mask, so unlabelled "
            "images teach it.")
        self.read_as = ComboBox(choices=list(READ_AS_CHOICES), value="auto",
                                label="Masks read as")
        self.read_as.tooltip = (
            "How the mask files of the data folders are read: auto (classes 0-2 or the colour "
            "palette), binary (0/1 or 0/255 objects such as organelles on unlabelled tissue: "
            "each object becomes interior with a boundary ring), membrane (ISBI: white "
            "interior, black membrane), instances (one id per object).")
        self.boundary_width = SpinBox(value=2, min=1, max=50, label="Boundary width")
        self.boundary_width.tooltip = ("Boundary ring in px drawn around each object when "
                                       "masks are read as binary or instances.")
        self.unlabeled_share = FloatSpinBox(value=0.5, min=0.0, max=1.0, step=0.05,
                                            label="Unlabelled share")
        self.unlabeled_share.tooltip = ("Share of each batch's tiles drawn from the unlabelled "
                                        "images (when there are any).")
        self.cond_dropout = FloatSpinBox(value=0.0, min=0.0, max=1.0, step=0.05,
                                         label="Mask dropout")
        self.cond_dropout.tooltip = (
            "Share of the labelled tiles trained without their mask, so that a model without "
            "unlabelled images also learns the null condition guidance needs (0.1 is usual).")
        self.object_share = FloatSpinBox(value=0.0, min=0.0, max=1.0, step=0.05,
                                         label="Crops on objects")
        self.object_share.tooltip = (
            "Share of the random crops placed over an object (interior or boundary). With "
            "sparse organelles most crops hold none; 0.33 (nnU-Net's share) lets the model "
            "see them often enough to learn their texture. Not with a stride.")
        #: config key -> the widget of a common setting (a family's ``defaults`` may set them)
        self.common_widgets: dict[str, Any] = {
            "steps": self.steps, "tile": self.tile, "batch_size": self.batch,
            "device": self.device, "stride": self.stride, "lr": self.lr, "flips": self.flips,
            "rot90": self.rot90, "precision": self.precision,
            "checkpoint_every": self.checkpoint_every, "sample_every": self.sample_every,
            "seed": self.seed, "encoding": self.encoding, "unlabel_fraction": self.unlabel,
            "unlabeled_share": self.unlabeled_share, "cond_dropout": self.cond_dropout,
            "object_share": self.object_share, "read_as": self.read_as,
            "boundary_width": self.boundary_width}
        self._common_defaults = {k: w.value for k, w in self.common_widgets.items()}

    def _build_family_settings(self) -> None:
        """The box holding each family's own settings (filled by :meth:`refresh_families`)."""
        #: family -> its settings (fields, and widgets by key), built once per family
        self.family_fields: dict[str, list[SettingField]] = {}
        self.setting_widgets: dict[str, dict[str, Any]] = {}
        self.family_boxes: dict[str, Container] = {}
        self._family_shown: str | None = None
        self.family_box = Container(labels=False)
        self.family_box.margins = (0, 0, 0, 0)

    def _build_run_controls(self) -> None:
        """Start / Stop / Resume, progress, the loss plot and the newest checkpoint."""
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop")
        self.resume_button = PushButton(text="Resume")
        self.progress = ProgressBar(value=0, min=0, max=1, label="Progress")
        self.eta = Label(value="")
        self.plot = LossPlot(str(self.viewer.theme))
        self.checkpoint_label = Label(value="No checkpoint yet.")
        self.use_button = PushButton(text="Use in synthesis")
        for lab in (self.data_status, self.eta, self.checkpoint_label):
            wrap_label(lab)

    def _lay_out(self) -> None:
        """Data, run settings, the family and Advanced sections, the run controls, the plot
        under the progress, and the checkpoint last."""
        main = Container(widgets=[self.read_as, self.val, self.out, self.family, self.steps,
                                  self.tile, self.batch, self.device, self.unlabel])
        self.extend([
            Container(widgets=[self.data]),
            self.add_data,
            self.data_status,
            Container(widgets=[self.unlabeled]),
            self.add_unlabeled,
            main,
        ])
        self.family_section = add_collapsible(self, "Model settings", [self.family_box])
        advanced = add_collapsible(self, "Advanced", [
            self.stride, self.lr, self.flips, self.rot90, self.precision,
            self.checkpoint_every, self.sample_every, self.seed, self.encoding,
            self.unlabeled_share, self.cond_dropout, self.object_share, self.boundary_width])
        self.extend([
            Container(widgets=[self.start_button, self.stop_button, self.resume_button],
                      layout="horizontal", labels=False),
            self.progress,
            self.eta,
        ])
        self.native.layout().addWidget(self.plot.canvas)
        for path_field in (self.data, self.unlabeled, self.val, self.out):
            widen_path(path_field)
        self.extend([self.checkpoint_label, self.use_button])
        # magicgui places its widgets before ones added to the layout by hand: put the
        # sections after the settings they extend, and the plot under the progress
        layout = self.native.layout()
        for anchor, widget in ((main.native, self.family_section), (self.family_section, advanced),
                               (self.eta.native, self.plot.canvas)):
            layout.removeWidget(widget)
            layout.insertWidget(layout.indexOf(anchor) + 1, widget)

    def _connect_events(self) -> None:
        """Families, data checks, the buttons, napari's theme, and stopping at napari's exit."""
        self.viewer.events.theme.connect(self._theme_changed)
        self.refresh_families()
        self.family.changed.connect(self._family_changed)
        self._family_changed(self.family.value)
        self.add_data.changed.connect(self._pick_data)
        self.add_unlabeled.changed.connect(self._pick_unlabeled)
        self.data.changed.connect(self._validate_data)
        self.read_as.changed.connect(self._validate_data)
        self.boundary_width.changed.connect(self._validate_data)
        self.unlabeled.changed.connect(self._validate_data)
        self.start_button.changed.connect(lambda *_: self.start())
        self.resume_button.changed.connect(lambda *_: self.start(resume=True))
        self.stop_button.changed.connect(self.stop)
        self.use_button.changed.connect(self.use_in_synthesis)
        app = QApplication.instance()
        if app is not None:
            connect_weakly(app.aboutToQuit, self, "shutdown")
        call_on_destroy(self, "shutdown")

    @property
    def busy(self) -> bool:
        """Whether training or a data check of this dock still runs."""
        return self._jobs.busy

    def __getattr__(self, name: str) -> Any:
        # ``w.netG``: a setting widget of the chosen family, unless the widget has an attribute
        # of that name (``width``): ``setting(key)`` always finds it
        try:
            return super().__getattr__(name)
        except AttributeError:
            widgets = self.__dict__.get("setting_widgets")
            family = self.__dict__.get("family")
            if widgets and family is not None and name in widgets.get(family.value, {}):
                return widgets[family.value][name]
            raise

    def _theme_changed(self, event: object) -> None:
        if not self._closing:
            self.plot.set_theme(str(getattr(event, "value", self.viewer.theme)))

    # ----------------------------------------------------------------- families
    def refresh_families(self) -> None:
        """Offer every registered family (one registered after the dock opened too), building
        the settings widgets of those not seen yet."""
        names = list(registry.names())
        for name in names:
            if name in self.family_boxes:
                continue
            fields = family_fields(registry.get(name))
            widgets = {f.key: setting_widget(f) for f in fields}
            box = Container(widgets=list(widgets.values()))
            box.margins = (0, 0, 0, 0)
            if not widgets:
                box.append(Label(value=f"{name} has no settings of its own here."))
            box.visible = False
            self.family_fields[name], self.setting_widgets[name] = fields, widgets
            self.family_boxes[name] = box
            self.family_box.append(box)
        if list(self.family.choices) != names:
            current = self.family.value
            self.family.choices = names
            if current in names:
                self.family.value = current

    def _family_changed(self, name: str | None = None) -> None:
        """Show the chosen family's settings only, and its defaults of common settings."""
        name = self.family.value if name is None else name
        if name not in self.family_boxes:
            return
        for other, box in self.family_boxes.items():
            box.visible = other == name
        self.family_section.setText(f"Model settings ({name})")
        previous, self._family_shown = self._family_shown, name
        old = registry.get(previous).defaults if previous in registry.names() else {}
        fam = registry.get(name) if name in registry.names() else None  # None: unregistered
        new = fam.defaults if fam is not None else {}
        for key in set(old) | set(new):  # only what the two families see differently
            if key in self.common_widgets:
                self._set_common(key, new.get(key, self._common_defaults[key]))
        if self.worker is None or not self.worker.is_running:  # a run keeps its own order
            self.plot.set_order(fam.loss_names if fam is not None else ())
        self._propose_for_family(name)

    def _propose_for_family(self, name: str) -> None:
        """An unused folder the dock proposed follows the family (pix2pix-001 -> diffusion-001);
        a folder the user typed stays."""
        own = self._own_out
        if (own is None or own.parent != RUNS_ROOT or Path(str(self.out.value)).expanduser() != own
                or run_step(own) is not None):
            return
        self._set_out(free_run_folder(RUNS_ROOT / f"{name}-001"))

    def _set_common(self, key: str, value: Any) -> None:
        widget = self.common_widgets[key]
        if key == "stride" and value is None:
            value = 0
        if isinstance(widget, ComboBox) and value not in widget.choices:
            widget.choices = [*widget.choices, value]
        widget.value = value

    def setting(self, key: str) -> Any:
        """The widget of the chosen family's setting ``key``."""
        widgets = self.setting_widgets.get(self.family.value, {})
        if key not in widgets:
            raise KeyError(f"the {self.family.value} family has no setting {key!r} here; its "
                           f"settings are {', '.join(widgets) or 'none'}.")
        return widgets[key]

    def family_settings(self) -> dict[str, Any]:
        """The chosen family's settings from its widgets (no other family's keys)."""
        name = self.family.value
        widgets = self.setting_widgets.get(name, {})
        return {f.key: read_setting(f, widgets[f.key], name)
                for f in self.family_fields.get(name, [])}

    # ----------------------------------------------------------------- data
    def data_folders(self) -> list[str]:
        return [p.strip() for p in str(self.data.value).split(";") if p.strip()]

    def unlabeled_folders(self) -> list[str]:
        return [p.strip() for p in str(self.unlabeled.value).split(";") if p.strip()]

    def _pick_data(self, *_: object) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Training data folder")
        if folder:
            self.data.value = ";".join([*self.data_folders(), folder])

    def _pick_unlabeled(self, *_: object) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Unlabelled images folder")
        if folder:
            self.unlabeled.value = ";".join([*self.unlabeled_folders(), folder])

    def _validate_data(self, *_: object) -> Any:
        """Check the data folders in a worker and say what was found or what is wrong."""
        folders, raw_folders = self.data_folders(), self.unlabeled_folders()
        tile = self.tile.value
        read = {"read_as": self.read_as.value, "boundary_width": self.boundary_width.value}
        if not folders:
            return None
        self.data_status.value = "Checking the data ..."

        def check() -> str:
            from ..training.data import check_unlabeled, load_samples, load_unlabeled

            samples = load_samples(folders, **read)
            shapes = sorted({s.image.shape for s in samples})
            shown = ", ".join(f"{h}x{w}" for h, w in shapes[:3])
            text = f"{len(samples)} image/mask pairs ({shown}{' ...' if len(shapes) > 3 else ''})"
            if raw_folders:
                raw = load_unlabeled(raw_folders)
                check_unlabeled(samples, raw, tile)
                text += f" and {len(raw)} unlabelled images"
            return text

        def show(text: str, _ctx: object = None) -> None:
            self.data_status.value = text

        def failed(exc: BaseException, _ctx: object = None) -> None:
            text = read_as_wording(str(exc), self.read_as.label)
            show("<span style='color:#f66'>" + text.replace("\n", "<br>") + "</span>")

        self._jobs.cancel_all("check")  # only the newest list of folders matters
        job = self._jobs.start(check, doing="Checking the training data", kind="check",
                               progress="Checking the training data",
                               on_result=show, on_error=failed,
                               flags={"read_as": self.read_as.label})
        return job.worker

    def config(self) -> TrainConfig:
        """The training configuration from the widget: the common settings and the chosen
        family's own (never another family's, which TrainConfig would refuse)."""
        val = str(self.val.value)
        return registry.make_config(
            self.family.value, data=self.data_folders(),
            val=[val] if val not in ("", ".") else [], out=str(self.out.value),
            steps=self.steps.value, tile=self.tile.value, batch_size=self.batch.value,
            device=self.device.value, stride=self.stride.value or None, lr=self.lr.value,
            flips=self.flips.value, rot90=self.rot90.value, precision=self.precision.value,
            checkpoint_every=self.checkpoint_every.value, sample_every=self.sample_every.value,
            seed=self.seed.value, encoding=self.encoding.value, log_every=1,
            unlabel_fraction=self.unlabel.value, unlabeled=self.unlabeled_folders(),
            unlabeled_share=self.unlabeled_share.value, cond_dropout=self.cond_dropout.value,
            object_share=self.object_share.value, read_as=self.read_as.value,
            boundary_width=self.boundary_width.value,
            **self.family_settings(),
        )

    # ----------------------------------------------------------------- run
    def start(self, resume: bool = False) -> Any:
        """Start (or resume) training in a child process; returns the reading worker."""
        if self.worker is not None and self.worker.is_running:
            show_info("Training is already running; Stop it first.")
            return None
        if not resume:
            choice = self._fresh_run_folder()
            if choice is None:
                return None
            resume = choice
        try:
            config = self.config()
        except ConfigError as exc:
            report_error(exc, "Training settings")
            return None
        self._own_out = Path(config.out).expanduser()  # the next Start proposes a new folder
        self.events = []
        self.plot.clear()
        self.plot.set_order(registry.get(config.family).loss_names)
        self.progress.value = 0
        self.process = None
        self._stop_requested = False

        def read():  # thread: starts the child (imports torch) and reads its stdout
            # napari's first Image layer imports scipy.ndimage (0.5 s here): do it off the GUI
            import scipy.ndimage  # noqa: F401

            from ..training.supervisor import TrainerProcess

            process = TrainerProcess(config, resume=resume)
            yield {"event": "process", "process": process}
            for event in process.events():
                if event["event"] == "sample":  # read the preview here, not on the GUI thread
                    try:
                        event["image"] = read_array(event["path"])
                    except (OSError, ValueError):
                        continue
                yield event

        self._set_running(True)
        self._guard_window()
        self.eta.value = "Starting the trainer ..."
        # events still arrive after napari closed: a trainer that was starting must be stopped
        job = self._jobs.start(read, doing="Training", kind="train", deliver_after_close=True,
                               on_yield=lambda event, _ctx: self._on_event(event),
                               on_error=lambda exc, _ctx: self._on_error(exc),
                               on_finish=lambda _ctx: self._on_finished())
        self.worker = job.worker
        return self.worker

    def _fresh_run_folder(self) -> bool | None:
        """Make sure a fresh Start never writes into a folder holding a run. Returns whether to
        resume instead (the user's answer), or None when the user cancelled.

        The dock's own folder (proposed, or the last run's) moves on to the next free name; a
        folder the user picked that holds a run is asked about: resume / new folder / cancel.
        """
        out = Path(str(self.out.value)).expanduser()
        step = run_step(out)
        if step is None:
            return False
        new = next_run_folder(out)
        if self._own_out is not None and out == self._own_out:
            self._set_out(new)
            return False
        answer = _common.ask(
            self.native, "The folder holds a run",
            f"{out} already holds a run (step {step}). Resume that run, train a new one in "
            f"{new}, or cancel?", ("Resume", "New folder", "Cancel"))
        if answer == "Resume":
            return True
        if answer == "New folder":
            self._set_out(new)
            return False
        self.eta.value = f"Not started: {out} holds a run; choose another folder or Resume."
        return None

    def _set_out(self, folder: Path) -> None:
        """Put ``folder`` in the Checkpoints field as the dock's own proposal."""
        self.out.value = str(folder)
        self._own_out = folder

    def _on_event(self, event: Mapping[str, Any]) -> None:
        """Follow one training event (a training.events.Event, read as a mapping)."""
        if self._closing:
            if event["event"] == "process":  # napari closed while the child was starting
                stop_in_background(event["process"], CLOSE_GRACE_S)
            return
        kind = event["event"]
        if kind == "process":
            self.process = event["process"]
            if self._stop_requested:
                self.stop()
            return
        self.events.append(event)
        if kind == "started":
            family = (event.get("config") or {}).get("family")
            if family in registry.names():  # the run's own family (a resumed run keeps its)
                self.plot.set_order(registry.get(family).loss_names)
            for note in registry.start_advice(event):
                show_info(f"Training: {note}")
            self.progress.max = event["total"]
            self.progress.value = event["step"]
            raw = event.get("n_unlabeled_images")
            self.eta.value = (f"{event['n_train_images']} training / {event['n_val_images']} "
                              "validation" + (f" / {raw} unlabelled" if raw else "")
                              + f" images · {event['device']} {event['precision']}")
        elif kind == "progress":
            self.progress.max = event["total"]
            self.progress.value = event["step"]
            self.plot.add(event["step"], event["losses"])
            eta = _fmt_seconds(event["eta_s"])
            self.eta.value = (f"step {event['step']} / {event['total']} · ETA {eta} · "
                              f"{event['tiles_per_s']:.1f} tiles/s · lr {event['lr']:.2g}")
        elif kind == "sample":
            self._show_preview(event["image"], event.get("layout", "mask | generated | real"))
        elif kind == "checkpoint":
            self._set_checkpoint(event["path"], event["step"])
        elif kind == "finished":
            self.plot.draw()
            if event.get("checkpoint"):
                self._set_checkpoint(event["checkpoint"], event["step"])
            self.eta.value = f"Finished ({event['reason']}) at step {event['step']}."
        elif kind == "failed":
            self.plot.draw()
            message = read_as_wording(event["message"], self.read_as.label)
            self.eta.value = f"<span style='color:#f66'>{message}</span>"
            report_error(RuntimeError(event["message"]), "Training",
                         {"read_as": self.read_as.label})

    def _on_error(self, exc: BaseException) -> None:
        if not self._closing:  # the worker helper has shown the error to the user
            self.eta.value = f"<span style='color:#f66'>{exc}</span>"

    def _show_preview(self, mosaic: Any, layout: str = "mask | generated | real") -> None:
        layer = next((lyr for lyr in self.viewer.layers if lyr.name == PREVIEW_LAYER), None)
        if layer is not None and layer.data.shape == mosaic.shape:
            layer.data = mosaic
        else:
            if layer is not None:
                self.viewer.layers.remove(layer)
            self.viewer.add_image(mosaic, name=PREVIEW_LAYER, rgb=True,
                                  metadata={"layout": layout})

    def _set_checkpoint(self, path: str, step: int) -> None:
        self.checkpoint = path
        self.checkpoint_label.value = f"Newest checkpoint (step {step}): {path}"

    def _on_finished(self) -> None:
        if self._closing:
            return
        self._stop_deadline.stop()
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.resume_button.enabled = not running
        self.stop_button.enabled = running

    def stop(self, *_: object) -> None:
        """Ask the trainer to save and stop; terminate it if it has not after a grace period."""
        if self.process is None:  # still starting: stop as soon as it runs
            self._stop_requested = self.worker is not None and self.worker.is_running
            return
        if not self.process.running:
            return
        self.process.request_stop()
        self.eta.value = "Stopping: saving a checkpoint ..."
        self._stop_deadline.start(int(STOP_GRACE_S * 1000))

    def _stop_timeout(self) -> None:
        if self.process is not None and self.process.running:
            show_info("The trainer did not stop in time; ending it.")
            stop_in_background(self.process, KILL_GRACE_S, terminate=True)

    @property
    def training(self) -> bool:
        """Whether a trainer is starting or running."""
        return self.worker is not None and self.worker.is_running

    def allow_close(self) -> bool:
        """Whether napari's window may close now: yes when nothing trains or nobody sees the
        window (a headless viewer); else the user decides (stop training and close, or
        cancel). Closing then stops the trainer without waiting for it (see shutdown)."""
        if self._closing or not self.training or not self.native.isVisible():
            return True
        out = self.process.out if self.process is not None else self.out.value
        answer = _common.ask(
            self.native, "Training is running",
            f"Training into {out} is still running. Stop it (it saves a checkpoint first, "
            "so Resume can continue it later) and close?", ("Cancel", STOP_AND_CLOSE))
        return answer == STOP_AND_CLOSE

    def _guard_window(self) -> None:
        """Ask before napari's main window closes while this dock trains (installed once the
        dock is in the window: a floating dock's parent is still the main window)."""
        top = self.native
        while top.parentWidget() is not None:
            top = top.parentWidget()
        guarded = self._guarded() if self._guarded is not None else None
        if top is self.native or guarded is top:
            return
        top.installEventFilter(self._close_guard)
        self._guarded = weakref.ref(top)  # weak: the window owns this dock, not the reverse

    def shutdown(self) -> None:
        """napari closes: stop training without waiting for it (a checkpoint is saved when
        possible). The thread reading the trainer goes on until it exits and reaps it."""
        if self._closing:
            return
        self._closing = True
        self._jobs.close(keep=("train",))
        with contextlib.suppress(Exception):  # the viewer may be gone already
            self.viewer.events.theme.disconnect(self._theme_changed)
        with contextlib.suppress(RuntimeError):  # Qt may have deleted these first
            self._stop_deadline.stop()
            guarded = self._guarded() if self._guarded is not None else None
            if guarded is not None:
                guarded.removeEventFilter(self._close_guard)
        if self.process is not None and self.process.running:
            stop_in_background(self.process, CLOSE_GRACE_S)

    def use_in_synthesis(self, *_: object) -> None:
        """Hand the newest checkpoint to the synthesis widget (docking it if needed)."""
        if not self.checkpoint:
            show_info("No checkpoint yet.")
            return
        try:
            self.viewer.window.add_plugin_dock_widget("napari-synthgen", "Synthesize")
        except Exception as exc:  # the widget can still be docked by hand
            report_error(exc, "Opening the synthesis widget")
        bus_for(self.viewer).use_model.emit(self.checkpoint)


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
