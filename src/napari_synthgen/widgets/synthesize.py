"""Synthesis widget: pick a model, synthesize EM images from a mask layer, live preview.

The model is loaded once (in a worker). A synthesizer (the model on a device, precision and
tiling) is an immutable value: every run and live preview captures the one current when it
starts and finishes with it. Changing a setting or the model only makes the next run build a new
one; an old synthesizer is closed when no running work holds it any more. Live preview
re-synthesizes only the tiles a brush stroke touched, debounced, and a stale result never
overwrites a newer one.

A family whose synthesizer takes settings of its own (diffusion: steps, sampler, preview steps,
fusion) gets fields for them, read from its synthesizer's constructor, shown only while a model
of that family is loaded; they are settings like the others (part of what a synthesizer is built
with).

A diffusion model with a few-step student (a model distilled from it, found by
``models.checkpoints.students``: the bundled demo-diffusion has demo-diffusion-fast) can have its
live preview drawn by the student ("Preview model"): strokes are redrawn with the student's own
steps while Synthesize runs the model's full sampler. The student's synthesizer is a second
immutable value beside the model's, built, held and retired the same way; a Synthesize run kept
for live preview hands its result over, so the next stroke redraws only the tiles it touched.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from dataclasses import dataclass, field
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
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..io import sha256_array
from ..masks import CLASS_NAMES, known_classes, unseen_class_message, unseen_classes
from ..sample_data import BUNDLED_MODELS, demo_model_path
from . import _settings
from ._bus import Candidate, ModelAnnouncement, bus_for
from ._common import (
    add_collapsible,
    call_on_destroy,
    fit_scroll_width,
    keep_triton_out,
    report_error,
    scroll_body,
    show_info,
    show_warning,
    shrink_combo,
    widen_path,
    wrap_label,
)
from ._worker import Job, Progress, Workers

if TYPE_CHECKING:
    import napari

_MODEL_DEFAULT = "model's own"
_SAME_MODEL = "same model"
#: settings a preview drawn by a student takes from the student, not from the fields: its
#: steps, sampler and first-step tile, and its guidance (guided distillation bakes the
#: teacher's into it; the teacher's field passed on would guide twice, or be refused by a
#: student without the null condition)
_STUDENT_OWN = ("steps", "sampler", "preview_steps", "guidance", "guidance_where",
                "start_tile")
_RECENT_HINT = "(recent models)"
DEBOUNCE_MS = 120
RUN_KEY = "Shift-S"


def synth_layer_name(mask_layer: Labels) -> str:
    """The reused name of the image layer synthesized from a mask layer."""
    return f"{mask_layer.name}_synth"


def model_classes(info: Any) -> dict[int, float] | None:
    """The classes a model was trained on (id -> fraction), or None when it carries no record."""
    classes = getattr(info, "classes", None)
    if classes is None:
        classes = known_classes((info.metadata or {}).get("classes"))
    return classes


def _describe(info: Any) -> str:
    meta = info.metadata or {}
    steps = f" · trained {meta['step']} steps" if "step" in meta else ""
    tile = info.tile or "any (model gives none)"
    known = model_classes(info)
    classes = ("classes it knows: unknown (no record)" if known is None else "classes it knows: "
               + ", ".join(f"{CLASS_NAMES[c]} {f:.0%}" for c, f in sorted(known.items()) if f > 0))
    # each family describes its network in a line (pix2pix: generator, width, norm)
    arch = (info.details or {}).get("summary") or info.short()
    return (f"{arch} · {info.input_nc}→{info.output_nc} "
            f"channels · encoding {info.encoding} ({info.encoding_source}) · tile {tile}{steps}"
            f" · {classes}")


#: constructor keywords every synthesizer takes; the widget's common fields set them
_COMMON_KEYWORDS = frozenset({"self", "model", "device", "precision", "tile", "overlap",
                              "batch_size", "encoding", "stochastic"})


#: label, tooltip and limits or choices of the family settings the widget knows by name; any
#: other keyword of a family's synthesizer gets a plain field of its default's type
_OPTION_UI: dict[str, dict[str, Any]] = {
    "steps": {"label": "Steps", "min": 1, "max": 1000, "tooltip":
              "Denoising steps of a Synthesize run: more give finer detail and take longer "
              "(DPM-Solver++ needs about 20, DDIM about 50)."},
    "sampler": {"label": "Sampler", "tooltip":
                "dpm: DPM-Solver++ 2M, good images in about 20 steps; ddim: DDIM, plain and "
                "deterministic, needs more steps."},
    "fusion": {"label": "Large images", "tooltip":
               "How tiles are joined on masks larger than a tile. multidiffusion: overlapping "
               "tiles blended at every step (default); shifted: non-overlapping tiles whose "
               "grid moves at every step, 1.6-1.7x faster (with fewer than 10 steps a faint "
               "seam can show). Live preview of a stroke always uses multidiffusion."},
    "z_coupling": {"label": "Stacks", "tooltip":
                   "How the slices of a (Z, Y, X) mask stack are tied. serial: texture "
                   "continues from slice to slice like serial EM sections (initial noise "
                   "correlated along z); independent: every slice drawn on its own (texture "
                   "flickers along z). 2-D masks are the same either way."},
    "guidance": {"label": "Guidance", "min": 0.0, "max": 20.0, "step": 0.25, "tooltip":
                 "Classifier-free guidance (models trained with unlabelled images; default "
                 "3): 1 is the plain model, which follows a mask only loosely; above 1 follows "
                 "the mask more strictly, below 1 leans on the tissue learned from unlabelled "
                 "images. Each value other than 1 doubles the network work."},
    "guidance_where": {"label": "Guide where", "tooltip":
                       "labelled (default): guidance only where the mask draws interior or "
                       "boundary, so class 0 (unlabelled tissue of organelle masks) keeps the "
                       "model's unguided texture instead of blotches; everywhere: guidance on "
                       "every pixel. Masks without class 0 give the same image either way."},
    "start_tile": {"label": "First-step tile", "min": 0, "max": 4096, "tooltip":
                   "The first denoising step starts from pure noise and runs on tiles up to "
                   "this many pixels wide (a multiple of the model's divisor, at least its "
                   "tile): fewer network pixels, the same image quality. 0: the model's own "
                   "tile. Default: 2.5 tiles for distilled few-step models, 0 for others."},
    "preview_steps": {"label": "Preview steps", "min": 1, "max": 1000, "tooltip":
                      "Denoising steps of live preview: few keep strokes quick; Synthesize "
                      "gives the full result."},
}


def family_options(model: Any) -> dict[str, Any]:
    """The settings a model's family's synthesizer takes beyond the common ones (keyword ->
    default), read from its constructor: empty for pix2pix, steps/sampler/preview_steps for
    diffusion."""
    from ..registry import synthesizer_class

    cls = synthesizer_class(model)
    params = inspect.signature(cls.__init__).parameters
    options = {name: p.default for name, p in params.items()
               if name not in _COMMON_KEYWORDS and p.default is not inspect.Parameter.empty
               and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    # a setting whose default depends on the model (a distilled model's own steps and sampler)
    own = getattr(cls, "model_defaults", None)
    if callable(own):
        options.update({k: v for k, v in own(model).items() if k in options})
    # settings that mean nothing for this model (guidance without a learned null condition)
    hidden = getattr(cls, "hidden_options", None)
    for name in hidden(model) if callable(hidden) else ():
        options.pop(name, None)
    return options


def _option_field(name: str, default: Any, choices: Any = None) -> Any:
    """A field for a family setting (None when its default's type has no field); ``choices``
    from the synthesizer class's ``choices`` make a drop-down."""
    ui = _OPTION_UI.get(name, {})
    kw = {"label": ui.get("label", name.replace("_", " ").capitalize()), "value": default}
    if choices:
        field = ComboBox(choices=list(choices), **kw)
    elif isinstance(default, bool):
        field = CheckBox(text=kw.pop("label"), value=default)
    elif isinstance(default, int):
        field = SpinBox(min=ui.get("min", 0), max=ui.get("max", 2**31 - 1), **kw)
    elif isinstance(default, float):
        field = FloatSpinBox(min=ui.get("min", 0.0), max=ui.get("max", 1e9),
                             step=ui.get("step", 0.1), **kw)
    elif isinstance(default, str):
        field = LineEdit(**kw)
    else:
        return None
    field.tooltip = ui.get("tooltip", f"{name} of this model family's synthesizer")
    return field


def _settings_text(settings: dict[str, Any]) -> str:
    """'steps 20, sampler dpm, preview steps 8' (empty for none)."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in settings.items())


def _model_name(info: Any) -> str:
    return Path(info.path).name if info.path else "this model"


@dataclass
class _Run:
    """What one synthesis or live preview started with; its handlers use only this.

    ``synth`` is the widget's current synthesizer when it fits ``model`` and ``settings``;
    otherwise None, and the run's worker builds one (:func:`_ensure_synth`: moving a model to
    its device is no work for the GUI thread), which the widget adopts when the run ends.
    """

    synth: Any
    model: Any
    settings: dict[str, Any]
    params: dict[str, Any]
    layer: Labels
    source: str
    mask: np.ndarray
    seeds: list[int]
    keep: bool
    known: dict[int, float] | None
    request: int = 0
    z: int = 0
    t0: float = field(default_factory=time.perf_counter)
    built: bool = False  # the worker built ``synth``
    #: live preview drawn by a few-step student of ``teacher`` (the loaded model); ``model``
    #: is the student, None until loaded (the worker loads it)
    student: Any = None
    teacher: Any = None
    #: a synthesizer whose kept result (a Synthesize run) the student continues from
    handoff: Any = None


def _ensure_synth(run: _Run) -> Any:
    """Worker: the run's synthesizer, built here for the run's model and settings when the
    widget had none that fits; ``params`` (what the provenance records) come from it."""
    if run.synth is None:
        from ..registry import load_model, make_synthesizer

        if run.model is None:  # a student not loaded yet (a few MB; in the worker)
            run.model = load_model(run.student.source)
        run.synth = make_synthesizer(run.model, **run.settings)
        run.built = True
    run.params = run.synth.describe()
    return run.synth


def _previews_itself(synth: Any) -> bool:
    """Whether ``synth.update`` makes the first live preview (and one for a new seed) itself,
    taking the seed: a diffusion synthesizer samples it with its few preview steps, not a full
    run's, and stops between steps when asked (``cancel``)."""
    return {"seed", "cancel"} <= set(inspect.signature(synth.update).parameters)


def _load(path: str, encoding: str | None) -> tuple[Any, list[Any]]:
    """Worker: the model and its few-step students (headers only, milliseconds)."""
    from ..models.checkpoints.students import find_students
    from ..registry import load_model

    keep_triton_out()  # a diffusion model imports diffusers: no crash beside napari's OpenGL
    model = load_model(path, encoding=encoding)
    return model, find_students(model.info)


class SynthesizeWidget(Container):
    """Dock widget: model, device and precision, seeds and variations, Synthesize, live preview."""

    #: every image put on screen (runs and live preview), with the mask and provenance it had
    synthesized = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.bus = bus_for(viewer)  # this viewer's widgets only
        self._init_state()
        self._build_model_fields()
        self._build_synthesis_fields()
        self._build_run_controls()
        self._lay_out()
        self._connect_events()
        start = self._initial_model()
        if start:
            self.set_model(start)

    def _init_state(self) -> None:
        """The model, the current synthesizer and who holds it, live preview's requests,
        the workers and the synthesis lock."""
        self._synth: Any = None  # current Synthesizer, created lazily (torch loads on first use)
        self._synth_for: tuple[Any, dict[str, Any]] | None = None  # (model, settings) it fits
        self._psynth: Any = None  # the live-preview student's synthesizer, likewise
        self._psynth_for: tuple[Any, dict[str, Any]] | None = None
        self._students: list[Any] = []  # the loaded model's few-step students
        self._student_models: dict[str, Any] = {}  # student source -> loaded student
        self._handoff: Any = None  # a synthesizer whose kept run the student continues
        self._preview_offered = False  # the loaded model draws its own preview (diffusion)
        self._holds: dict[int, int] = {}  # id(synthesizer) -> running jobs holding it
        self._model: Any = None
        self._model_path: str | None = None
        self._load_job: Job | None = None
        self._announced: ModelAnnouncement | None = None
        self._told: set[tuple] = set()  # warnings already given (model, situation)
        self._live_layer: Labels | None = None
        self._live_request = 0  # newest request id
        self._live_applied = 0  # id of the result on screen
        self._live_running = False
        self._live_pending = False
        self._family_fields: dict[str, Any] = {}  # family setting -> field (made when needed)
        self._family_shown: tuple[str, ...] = ()  # the loaded model's family settings
        self._family_defaults: dict[str, Any] = {}  # their defaults for the last model loaded
        self._jobs = Workers()
        self._lock = threading.Lock()  # one synthesis at a time (CPU cores, kept tiles)
        self._closed = False
        self._stop = threading.Event()  # set when the widget closes: diffusion previews stop
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)

    def _build_model_fields(self) -> None:
        """The model file or folder, recent models, what the model is, and its encoding."""
        self.model_path = FileEdit(mode="r", label="Model", filter="*.safetensors *.pth *.pt")
        self.model_folder = PushButton(text="Folder...")
        self.recent = ComboBox(label="Recent", choices=self._recent_choices)
        self.model_info = Label(value="No model loaded.")
        self.encoding = ComboBox(choices=[_MODEL_DEFAULT, "rgb", "onehot", "label"],
                                 value=_MODEL_DEFAULT, label="Encoding")
        self.model_path.tooltip = ("A .safetensors / .pth file or a folder holding one; "
                                   "type 'demo' for the bundled demo model.")

    def _build_synthesis_fields(self) -> None:
        """Device, precision, mask, seeds and variations, the family's own settings, tiling."""
        self.device = ComboBox(choices=["auto", "cpu", "cuda", "mps"], value="auto",
                               label="Device")
        self.precision = ComboBox(choices=["auto", "fp32", "bf16", "fp16"], value="auto",
                                  label="Precision")
        self.mask_layer = ComboBox(label="Mask", choices=self._mask_choices)
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="Seed")
        self.variations = SpinBox(value=1, min=1, max=64, label="Variations")
        self.stochastic = CheckBox(value=False, text="Stochastic (dropout on, for variations)")
        #: the loaded model's family settings (diffusion: steps, sampler, preview steps);
        #: hidden while a model without any (pix2pix) is loaded
        self.family_box = Container(labels=True)
        self.family_box.visible = False
        self.tile = SpinBox(value=0, min=0, max=8192, step=64, label="Tile (0 = model's)")
        self.overlap = SpinBox(value=-1, min=-1, max=4096, label="Overlap (-1 = tile/4)")
        self.batch_size = SpinBox(value=0, min=0, max=256, label="Batch (0 = auto)")

    def _build_run_controls(self) -> None:
        """Synthesize, Cancel, live preview and the status line."""
        self.run_button = PushButton(text="Synthesize [Shift+S]")
        self.cancel_button = PushButton(text="Cancel")
        self.live = CheckBox(value=False, text="Live preview (follows the brush)")
        self.preview_model = ComboBox(label="Preview model", choices=[_SAME_MODEL])
        self.preview_model.tooltip = (
            "Which model draws live preview. A few-step model distilled from the loaded one "
            "(e.g. demo-diffusion-fast for demo-diffusion) redraws strokes with its own 1-2 "
            "steps; Synthesize still runs the loaded model's full sampler. 'same model': the "
            "loaded model with its preview steps.")
        self._preview_box = Container(widgets=[self.preview_model], labels=True)
        self._preview_box.visible = False
        self.show_3d = CheckBox(value=True, text="Show a synthesized stack in 3-D")
        self.show_3d.tooltip = ("After Synthesize of a (Z, Y, X) mask stack, switch the viewer "
                                "to 3-D (the viewer's 2-D/3-D button switches back).")
        self.status = Label(value="")

    def _lay_out(self) -> None:
        """Everything in a scroll body: when the dock is short (a laptop screen with the mask
        editor above) the settings scroll and the window's minimum height stays small."""
        body = self._body = scroll_body(self)
        body.extend([
            Container(widgets=[self.model_path], labels=True),
            Container(widgets=[self.model_folder, self.recent], layout="horizontal",
                      labels=False),
            self.model_info,
            Container(widgets=[self.encoding, self.device, self.precision, self.mask_layer,
                               self.seed, self.variations]),
            self.family_box,
            self.stochastic,
        ])
        add_collapsible(body, "Advanced", [self.tile, self.overlap, self.batch_size])
        body.extend([
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                      labels=False),
            self.live, self._preview_box, self.show_3d, self.status,
        ])
        wrap_label(self.model_info)
        wrap_label(self.status)
        shrink_combo(self.recent)
        widen_path(self.model_path)
        fit_scroll_width(body)

    def _connect_events(self) -> None:
        """Model and settings changes, the buttons, live preview, the viewer's layers, the
        bus (a checkpoint from the Train widget), Shift+S, and teardown when the dock closes."""
        self._debounce.timeout.connect(self._live_tick)
        self.model_path.changed.connect(self._model_changed)
        self.model_folder.changed.connect(self._pick_folder)
        self.recent.changed.connect(self._recent_picked)
        self.encoding.changed.connect(self._model_changed)  # the encoding is part of loading
        for w in (self.device, self.precision, self.tile, self.overlap, self.batch_size,
                  self.stochastic, self.variations):
            w.changed.connect(self._settings_changed)
        self.run_button.changed.connect(self.synthesize)
        self.cancel_button.changed.connect(self.cancel)
        self.live.changed.connect(self._live_toggled)
        self.preview_model.changed.connect(self._preview_model_changed)
        self.mask_layer.changed.connect(self._mask_changed)
        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed):
            ev.connect(self._refresh_choices)
        self.bus.use_model.connect(self.set_model)
        self.viewer.bind_key(RUN_KEY, lambda _v: self.synthesize(), overwrite=True)
        call_on_destroy(self, "teardown")

    # ----------------------------------------------------------------- model
    @property
    def model(self) -> Any:
        """The loaded model (``LoadedModel``), or None while none is loaded."""
        return self._model

    @property
    def family_fields(self) -> dict[str, Any]:
        """The fields of the loaded model's family settings (keyword -> field), e.g. diffusion's
        ``steps``, ``sampler`` and ``preview_steps``; empty for pix2pix."""
        return {name: self._family_fields[name] for name in self._family_shown}

    @property
    def busy(self) -> bool:
        """Whether a model load, synthesis or live preview still runs."""
        return self._jobs.busy

    def _initial_model(self) -> str | None:
        """The user's last model if it still exists, else the bundled demo model."""
        for path in _settings.get("recent_models", []):
            if isinstance(path, str) and Path(path).exists():
                return path
        demo = demo_model_path()
        return str(demo) if demo is not None else None

    def _recent_choices(self, _w: object = None) -> list[tuple[str, str]]:
        from ..sample_data import bundled_model_path

        recent = _settings.get("recent_models", [])
        # the bundled models are always offered (pix2pix and diffusion demos), by name
        bundled = [(f"{name}  (bundled)", name) for name in BUNDLED_MODELS
                   if bundled_model_path(name).is_file()]
        return [(_RECENT_HINT, _RECENT_HINT), *bundled,
                *((f"{Path(p).name}  ({Path(p).parent})", p) for p in recent)]

    def _recent_picked(self, value: str) -> None:
        if value and value != _RECENT_HINT:
            self.set_model(value)

    def _pick_folder(self, *_: object) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Model folder")
        if folder:
            self.set_model(folder)

    def set_model(self, path: str | Path) -> None:
        """Use the model at ``path`` (file, folder, or ``"demo"``); it is loaded in a worker.

        Work already running finishes with the model it started with.
        """
        path = str(path)
        if str(self.model_path.value) != path:
            with self.model_path.changed.blocked():
                self.model_path.value = path
        self._model_changed()

    def _typed_model(self) -> str | None:
        """The model field as a path to load, a bundled model's name ("demo"), or None."""
        path = str(self.model_path.value)
        if not path or path == "." or Path(path).exists():
            return path if path and path != "." else None
        name = Path(path).name  # the field makes a typed "demo" into <cwd>/demo
        return name if name in BUNDLED_MODELS else None

    def _model_changed(self, *_: object) -> None:
        path = self._typed_model()
        if path is None:
            return
        self._model_path = path
        if self._load_job is not None:
            self._load_job.cancel()  # an older load's result is not wanted any more
        self.close_model()
        self.model_info.value = f"Loading {Path(path).name} ..."
        encoding = None if self.encoding.value == _MODEL_DEFAULT else self.encoding.value
        self._load_job = self._jobs.start(
            _load, path, encoding, doing=f"Loading {Path(path).name}", context=path,
            progress=f"Loading {Path(path).name}",
            on_result=self._model_loaded, on_error=self._model_failed)

    def _model_loaded(self, loaded: tuple[Any, list[Any]], path: str) -> None:
        if path != self._model_path:  # another model was chosen since
            return
        model, self._students = loaded
        self._model = model
        info = model.info
        self._show_family_settings(model)
        self._show_preview_models()
        self.model_info.value = _describe(info)
        self.model_info.tooltip = "\n".join(info.notes)
        if info.path:
            _settings.remember_model(str(info.path))
            self.recent.reset_choices()
        known = model_classes(info)
        self._announced = ModelAnnouncement(_model_name(info), str(info.path), known)
        self.bus.announce_model(self._announced)
        key = ("unknown classes", info.sha256 or info.path)
        if known is None and key not in self._told:
            self._told.add(key)
            show_info(f"{_model_name(info)} carries no record of the classes it was trained on "
                      "(reference checkpoints and older models do not), so whether a mask holds "
                      "a class it never saw is unknown.")
        if self.live.value:
            self._live_toggled(True)

    def _model_failed(self, _exc: BaseException, path: str) -> None:
        if path == self._model_path:
            self._model = None
            self.model_info.value = f"<span style='color:#f66'>Cannot use {Path(path).name}</span>"

    def _show_family_settings(self, model: Any) -> None:
        """Show the fields of ``model``'s family settings (made on first need, values kept
        across models, except that a value left at the last model's default follows this
        model's: a distilled model opens with its own steps) and hide the others; hide
        Stochastic for families always stochastic."""
        from ..registry import synthesizer_class

        try:
            options = family_options(model)
            cls = synthesizer_class(model)
            always = getattr(cls, "stochastic", None) is True
            choices = dict(getattr(cls, "choices", {}))
        except Exception:  # a family without a synthesizer: loading succeeded, runs will say
            options, always, choices = {}, False, {}
        for name, default in options.items():
            field = self._family_fields.get(name)
            if field is not None and field.value == self._family_defaults.get(name, default):
                field.value = default  # left at the last model's default: follow this one's
            self._family_defaults[name] = default
            if name not in self._family_fields:
                field = _option_field(name, default, choices.get(name))
                if field is None:
                    continue  # not a value a field edits: the synthesizer's default applies
                field.changed.connect(self._settings_changed)
                self._family_fields[name] = field
                self.family_box.append(field)
        self._family_shown = tuple(n for n in options if n in self._family_fields)
        for name, field in self._family_fields.items():
            field.visible = name in self._family_shown
        self.family_box.visible = bool(self._family_shown)
        self.stochastic.visible = not always

    def _show_preview_models(self) -> None:
        """Offer the loaded model's few-step students as the preview model (the first, with
        the fewest steps, chosen); shown for models that draw their own preview (diffusion)."""
        choices = [(_SAME_MODEL, _SAME_MODEL), *((s.label(), s.source) for s in self._students)]
        with self.preview_model.changed.blocked():
            self.preview_model.choices = choices
            self.preview_model.value = choices[1][1] if len(choices) > 1 else _SAME_MODEL
        self._retire_preview()
        self._preview_offered = "preview_steps" in self._family_shown
        self._preview_box.visible = self._preview_offered

    @property
    def preview_student(self) -> Any:
        """The few-step student drawing live preview (a ``Student``), or None: the model."""
        if not self._preview_offered:
            return None
        return next((s for s in self._students if s.source == self.preview_model.value), None)

    @staticmethod
    def _preview_settings(settings: dict[str, Any], student: Any) -> dict[str, Any]:
        """A student's synthesizer settings: the fields' (device, tiling, fusion...), but its
        own steps, sampler and guidance, and its steps for a preview."""
        own = {k: v for k, v in settings.items() if k not in _STUDENT_OWN}
        return {**own, "preview_steps": student.steps}

    def _preview_model_changed(self, *_: object) -> None:
        self._retire_preview()
        if self.live.value and self._live_layer is not None:
            self._on_paint()  # show the preview drawn by the newly chosen model

    def _synth_settings(self) -> dict[str, Any]:
        return {
            "device": self.device.value, "precision": self.precision.value,
            "tile": self.tile.value or None,
            "overlap": None if self.overlap.value < 0 else self.overlap.value,
            "batch_size": self.batch_size.value or None,
            "stochastic": bool(self.stochastic.value or self.variations.value > 1),
            **{name: self._family_fields[name].value for name in self._family_shown},
        }

    def _require_model(self) -> Any:
        """The loaded model, or a ValueError that says why there is none."""
        if self._model is None:
            if self._model_path is not None and self._load_job and not self._load_job.done:
                raise ValueError(f"{Path(self._model_path).name} is still loading; "
                                 "try again in a moment.")
            raise ValueError("no model loaded: choose a checkpoint file or folder above.")
        return self._model

    def _fitting_synth(self, model: Any, settings: dict[str, Any]) -> Any:
        """The current synthesizer (the model's, or the preview student's) if it was built for
        ``model`` and ``settings``, else None."""
        for synth, made_for in ((self._synth, self._synth_for), (self._psynth, self._psynth_for)):
            if (synth is not None and made_for is not None and model is not None
                    and made_for[0] is model and made_for[1] == settings):
                return synth
        return None

    def synthesizer(self) -> Any:
        """The synthesizer for the current model and settings, built now if needed (for
        scripts and tests: runs build theirs in their worker, never on the GUI thread)."""
        model, settings = self._require_model(), self._synth_settings()
        if self._fitting_synth(model, settings) is None:
            from ..registry import make_synthesizer

            new = make_synthesizer(model, **settings)
            self._retire()
            self._synth, self._synth_for = new, (model, settings)
        return self._synth

    def _retire(self) -> None:
        """The current synthesizer is no longer current: close it unless work still holds it."""
        old, self._synth, self._synth_for = self._synth, None, None
        if old is not None and id(old) not in self._holds:
            old.close()

    def _retire_preview(self) -> None:
        """Likewise for the preview student's synthesizer."""
        old, self._psynth, self._psynth_for = self._psynth, None, None
        if old is not None and id(old) not in self._holds:
            old.close()

    def _hold(self, synth: Any) -> None:
        self._holds[id(synth)] = self._holds.get(id(synth), 0) + 1

    def _release(self, synth: Any) -> None:
        n = self._holds.get(id(synth), 0) - 1
        if n > 0:
            self._holds[id(synth)] = n
            return
        self._holds.pop(id(synth), None)
        if synth is not self._synth and synth is not self._psynth:  # replaced while it ran
            synth.close()

    def _settings_changed(self, *_: object) -> None:
        """A setting changed: running work keeps its synthesizer; the next run builds a new one."""
        settings, student = self._synth_settings(), self.preview_student
        same = self._synth_for is not None and self._synth_for[1] == settings
        same_preview = self._psynth_for is None or (
            student is not None and self._psynth_for[1] == self._preview_settings(settings,
                                                                                  student))
        if same and same_preview:
            return  # e.g. more variations of a model already stochastic: nothing to rebuild
        if not same:
            self._retire()
        if not same_preview:
            self._retire_preview()
        if self.live.value and self._live_layer is not None:
            self._on_paint()  # show the preview with the new settings

    # ----------------------------------------------------------------- layers
    def _mask_choices(self, _w: object = None) -> list[tuple[str, Labels]]:
        return [(lyr.name, lyr) for lyr in self.viewer.layers if isinstance(lyr, Labels)]

    def _refresh_choices(self, *_: object) -> None:
        self.mask_layer.reset_choices()

    def _mask_changed(self, *_: object) -> None:
        if self.live.value:
            self._live_toggled(True)

    def _write_layer(self, mask_layer: Labels, data: np.ndarray, meta: dict[str, Any]) -> Image:
        name = synth_layer_name(mask_layer)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Image):
            layer = self.viewer.layers[name]
            layer.metadata.update(meta)
            layer.data = data
        else:
            layer = self.viewer.add_image(data, name=name, metadata=meta,
                                          contrast_limits=(0, 255))
        ndim = mask_layer.ndim
        layer.scale = (*([1.0] * (data.ndim - ndim)), *mask_layer.scale)
        layer.translate = (*([0.0] * (data.ndim - ndim)), *mask_layer.translate)
        return layer

    @staticmethod
    def _provenance(run: _Run, mask_sha: str, seed: int) -> dict[str, Any]:
        """Where an image came from, from what its run started with; ``mask_sha`` is the hash
        of the mask that was synthesized (the layer may have been painted since). A preview
        drawn by a student names the student as the model and the loaded model it stands in
        for under ``preview_of``."""
        info = run.model.info
        meta = {
            "source_mask": run.source, "source_mask_sha256": mask_sha,
            "model": info.path, "model_sha256": info.sha256, "family": info.family,
            "architecture": info.architecture, "seed": seed,
            "params": {k: v for k, v in run.params.items() if k != "model"},
        }
        if run.student is not None:
            meta["preview_model"] = {"name": run.student.name, "steps": run.student.steps,
                                     "sampler": run.student.sampler}
            meta["preview_of"] = {"model": run.teacher.info.path,
                                  "model_sha256": run.teacher.info.sha256}
        return meta

    def _start_run(self, mask_layer: Labels, seeds: list[int], keep: bool, *,
                   z: int = 0, preview: bool = False) -> _Run:
        """Capture everything a run needs now: the model, the settings and the current
        synthesizer if it fits them (held until the run ends; else the worker builds one).
        ``preview``: a live preview, drawn by the preview student when one is chosen."""
        model, settings = self._require_model(), self._synth_settings()
        student = self.preview_student if preview else None
        teacher, handoff = None, None
        if student is not None:
            teacher, handoff = model, self._handoff
            model = self._student_models.get(student.source)  # None: the worker loads it
            settings = self._preview_settings(settings, student)
        synth = self._fitting_synth(model, settings)
        run = _Run(synth=synth, model=model, settings=settings, params={}, layer=mask_layer,
                   source=mask_layer.metadata.get("source", f"layer:{mask_layer.name}"),
                   mask=np.array(mask_layer.data, dtype=np.uint8, copy=True), seeds=seeds,
                   keep=keep, known=model_classes((teacher or model).info),
                   request=self._live_request, z=z, student=student, teacher=teacher,
                   handoff=handoff)
        if synth is not None:
            self._hold(synth)
        return run

    def _settle(self, run: _Run) -> None:
        """A run ended: release its synthesizer. One its worker built becomes the current one
        if nothing replaced the model or settings meanwhile (the next run reuses it, with the
        tiles live preview keeps); otherwise it is closed."""
        synth = run.synth
        if run.student is not None:
            self._settle_preview(run)
            return
        if synth is None:  # nothing was built (cancelled first, or the build failed)
            return
        if not run.built:
            self._release(synth)
            return
        if (not self._closed and self._synth is None and self._model is run.model
                and self._synth_settings() == run.settings):
            self._synth, self._synth_for = synth, (run.model, run.settings)
        else:
            synth.close()

    def _settle_preview(self, run: _Run) -> None:
        """A preview drawn by a student ended: keep the student model it loaded, and adopt
        or close its synthesizer as :meth:`_settle` does for the model's."""
        current = not self._closed and self._model is run.teacher
        if current and run.model is not None:
            self._student_models.setdefault(run.student.source, run.model)
        if self._handoff is run.handoff and run.synth is not None:
            self._handoff = None  # handed over (or the preview samples afresh)
        synth = run.synth
        if synth is None:
            return
        if not run.built:
            self._release(synth)
            return
        student = self.preview_student
        if (current and self._psynth is None and student == run.student
                and self._preview_settings(self._synth_settings(), student) == run.settings):
            self._psynth, self._psynth_for = synth, (run.model, run.settings)
        else:
            synth.close()

    def _warn_unseen(self, run: _Run, unseen: list[int]) -> None:
        """Say once per model and set of classes that the mask holds classes it never saw."""
        key = ("unseen", run.model.info.sha256 or run.model.info.path, tuple(unseen))
        if unseen and run.known is not None and key not in self._told:
            self._told.add(key)
            show_warning(unseen_class_message(unseen, run.known, _model_name(run.model.info)))

    # ----------------------------------------------------------------- synthesize
    def synthesize(self, *_: object) -> Any:
        """Synthesize the chosen mask layer (each variation) in a worker; returns the worker."""
        try:
            mask_layer = self.mask_layer.value
            if mask_layer is None:
                raise ValueError("choose a mask layer (paint one with the Mask editor).")
            seeds = [self.seed.value + i for i in range(self.variations.value)]
            keep = bool(self.live.value) and len(seeds) == 1
            run = self._start_run(mask_layer, seeds, keep)
        except Exception as exc:
            report_error(exc, "Synthesize")
            return None
        if len(seeds) > 1 and run.model.info.details.get("dropout") is False:
            show_warning("This model has no dropout: its variations are identical images.")
        lock = self._lock

        def work(run: _Run):  # runs in a thread: only core code and what the run captured
            images = []
            with lock:
                synth = _ensure_synth(run)
                for i, seed in enumerate(run.seeds):
                    gen = synth.run(run.mask, seed=seed, keep=run.keep and i == 0)
                    while True:
                        try:
                            done, total = next(gen)
                        except StopIteration as stop:
                            images.append(stop.value)
                            break
                        yield Progress(i * total + done, total * len(run.seeds))
            return images, sha256_array(run.mask), unseen_classes(run.mask, run.known)

        own = _settings_text({k: run.settings[k] for k in self._family_shown
                              if k in run.settings})
        job = self._jobs.start(work, run, doing="Synthesize", context=run,
                               progress=f"Synthesizing {mask_layer.name}"
                               + (f" ({own})" if own else ""),
                               on_result=self._run_done, on_finish=self._run_finished,
                               kind="run")
        return job.worker

    def _run_done(self, result: tuple[list[np.ndarray], str, list[int]], run: _Run) -> None:
        images, mask_sha, unseen = result
        self._warn_unseen(run, unseen)
        data = images[0] if len(images) == 1 else np.stack(images)
        meta = self._provenance(run, mask_sha, run.seeds[0])
        meta["seeds"] = run.seeds
        self._write_layer(run.layer, data, meta)
        if run.mask.ndim == 3 and self.show_3d.value:
            self.viewer.dims.ndisplay = 3  # a volume is seen as one
        dt = time.perf_counter() - run.t0
        p = run.params
        note = p.get("precision_note") or "explicit"
        own = _settings_text(p.get("family_settings", {}))
        self.status.value = (f"{len(images)} image(s) {run.mask.shape} in {dt:.2f} s on "
                             f"{p['device']} ({p['precision']}; {note})"
                             + (f" · {own}" if own else ""))
        if run.keep and run.layer is self._live_layer:
            self._live_applied = max(self._live_applied, run.request)
            self._handoff = run.synth  # a preview student continues from this result
        candidates = [Candidate(img, run.mask, self._provenance(run, mask_sha, s),
                                name=f"{run.layer.name} seed {s}")
                      for img, s in zip(images, run.seeds, strict=True)]
        for c in candidates:
            self.synthesized.emit(c)
        self.bus.candidates.emit(candidates)

    def _run_finished(self, run: _Run) -> None:
        self._settle(run)

    def cancel(self, *_: object) -> None:
        """Stop running syntheses at their next batch of tiles (pix2pix) or denoising step
        (diffusion): the step under way finishes, no later one starts. Live preview and model
        loads go on."""
        if self._jobs.cancel_all("run") and not self._closed:
            self.status.value = "Cancelled."

    # ----------------------------------------------------------------- live preview
    def _live_toggled(self, on: bool) -> None:
        if self._live_layer is not None:
            self._live_layer.events.paint.disconnect(self._on_paint)
            self._live_layer = None
        if not on:
            return
        mask_layer = self.mask_layer.value
        if mask_layer is None:
            return
        mask_layer.events.paint.connect(self._on_paint)
        self._live_layer = mask_layer
        self._on_paint()

    def _on_paint(self, _event: object = None) -> None:
        """A stroke happened: ask for a preview after a short quiet period."""
        self._live_request += 1
        self._debounce.start()

    def _live_tick(self) -> None:
        if self._live_running:
            self._live_pending = True  # run again with the newest mask when this one is done
            return
        layer = self._live_layer
        if layer is None or self._model is None:
            return  # a model that finishes loading starts the preview
        try:
            z = int(self.viewer.dims.current_step[0]) if layer.data.ndim == 3 else 0
            run = self._start_run(layer, [self.seed.value], True, z=z, preview=True)
        except Exception as exc:
            report_error(exc, "Live preview")
            return
        lock, stop = self._lock, self._stop
        from ..models.checkpoints.students import hand_over_kept

        def work(run: _Run) -> tuple[np.ndarray, list | None, float, str, list[int]]:
            t0 = time.perf_counter()
            mask, z = run.mask, run.z
            with lock:
                synth = _ensure_synth(run)
                if run.handoff is not None:  # continue from a Synthesize run of the model
                    hand_over_kept(run.handoff, synth)
                if _previews_itself(synth):  # diffusion: first preview (or a new seed) with
                    fresh = not synth.kept(z)  # few steps, then only what a stroke touched
                    image, regions = synth.update(mask, seed=run.seeds[0], z=z,
                                                  cancel=stop.is_set)
                    regions = None if fresh else regions
                elif synth.kept(z):
                    image, regions = synth.update(mask, z=z)
                else:
                    image = synth(mask, seed=run.seeds[0], keep=True)
                    image = image[z] if image.ndim == 3 else image
                    regions = None
            return (image, regions, time.perf_counter() - t0, sha256_array(mask),
                    unseen_classes(mask, run.known))

        self._live_running = True
        self._jobs.start(work, run, doing="Live preview", context=run,
                         on_result=self._live_done, on_finish=self._live_finished)

    def _live_done(self, result: tuple[np.ndarray, list | None, float, str, list[int]],
                   run: _Run) -> None:
        image, regions, dt, mask_sha, unseen = result
        self._warn_unseen(run, unseen)
        if run.request < self._live_applied:
            return  # never let a stale result overwrite a newer one
        self._live_applied = run.request
        if regions is None or regions:
            meta = self._provenance(run, mask_sha, run.seeds[0])
            self._apply_live(run.layer, image, run.z, run.mask.ndim == 3, meta)
            self.synthesized.emit(Candidate(image, run.mask[run.z] if run.mask.ndim == 3
                                            else run.mask, meta, name="live preview"))
        what = "synthesized" if regions is None else f"{len(regions)} tile(s) updated"
        who = run.student.name if run.student is not None else _model_name(run.model.info)
        steps = run.params.get("preview_steps")
        if steps is not None:
            who += f", {steps} step{'s' if steps != 1 else ''}"
        self.status.value = f"live preview: {who}, {dt * 1000:.0f} ms ({what})"

    def _live_finished(self, run: _Run) -> None:
        self._live_running = False
        self._settle(run)
        if self._closed:
            return
        if self._live_pending or run.request < self._live_request:
            self._live_pending = False
            self._debounce.start()

    def _apply_live(self, mask_layer: Labels, image: np.ndarray, z: int, stack: bool,
                    meta: dict[str, Any]) -> None:
        name = synth_layer_name(mask_layer)
        existing = next((lyr for lyr in self.viewer.layers if lyr.name == name), None)
        if stack and existing is not None and existing.data.shape == mask_layer.data.shape:
            existing.data[z] = image
            existing.refresh()
            return
        if stack:
            return  # the first full synthesis of the stack makes the layer
        self._write_layer(mask_layer, image, meta)

    # ----------------------------------------------------------------- lifetime
    def wait_idle(self, timeout: float = 60.0) -> None:
        """Process Qt events until no work of this widget runs (for tests and scripts)."""
        self._jobs.wait_idle(timeout, until=lambda: not (
            self._debounce.isActive() or self._live_running))

    def close_model(self) -> None:
        """Stop using the model; synthesizers still held by running work close when it ends."""
        self._retire()
        self._retire_preview()
        self._model = None
        self._students, self._student_models, self._handoff = [], {}, None

    def teardown(self) -> None:
        """The widget was closed: stop listening to the other widgets and free the model."""
        self._closed = True
        self._stop.set()  # a diffusion preview under way stops at its next step
        self._jobs.close()  # results of work still running are dropped
        self.bus.use_model.disconnect(self.set_model, missing_ok=True)
        self.bus.withdraw_model(self._announced)
        with contextlib.suppress(Exception):  # the viewer may be gone already
            self.viewer.bind_key(RUN_KEY, None)
        with contextlib.suppress(RuntimeError):  # Qt may have deleted the timer first
            self._debounce.stop()
        self.close_model()

