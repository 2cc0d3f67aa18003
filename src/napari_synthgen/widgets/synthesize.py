"""Synthesis widget: pick a model, synthesize EM images from a mask layer, live preview.

The model is loaded once (in a worker) and kept until the settings change or the widget
closes. Synthesis runs in a thread worker with napari progress; live preview re-synthesizes
only the tiles a brush stroke touched, debounced, and a stale result never overwrites a newer one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import QTimer

from ..io import sha256_array
from ..sample_data import demo_model_path
from . import _settings
from ._bus import Candidate, bus
from ._common import (
    add_collapsible,
    call_on_destroy,
    report_error,
    show_warning,
    shrink_combo,
)

if TYPE_CHECKING:
    import napari

_MODEL_DEFAULT = "model's own"
_RECENT_HINT = "(recent models)"
DEBOUNCE_MS = 120
RUN_KEY = "Shift-S"


def synth_layer_name(mask_layer: Labels) -> str:
    """The reused name of the image layer synthesized from a mask layer."""
    return f"{mask_layer.name}_synth"


def _describe(info: Any) -> str:
    meta = info.metadata or {}
    steps = f" · trained {meta['step']} steps" if "step" in meta else ""
    tile = info.tile or "any (model gives none)"
    return (f"{info.netG} · ngf {info.ngf} · {info.norm} norm · {info.input_nc}→{info.output_nc} "
            f"channels · encoding {info.encoding} ({info.encoding_source}) · tile {tile}{steps}")


class SynthesizeWidget(Container):
    """Dock widget: model, device and precision, seeds and variations, Synthesize, live preview."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self._synth: Any = None  # Synthesizer, created lazily (torch is imported on first use)
        self._synth_key: tuple | None = None
        self._model: Any = None
        self._model_path: str | None = None
        self._live_layer: Labels | None = None
        self._live_request = 0  # newest request id
        self._live_applied = 0  # id of the result on screen
        self._live_running = False
        self._live_pending = False
        self._workers: list[Any] = []
        self._lock = threading.Lock()  # one synthesis at a time on the shared model
        self._closed = False

        self.model_path = FileEdit(mode="r", label="Model", filter="*.safetensors *.pth *.pt")
        self.model_folder = PushButton(text="Folder...")
        self.recent = ComboBox(label="Recent", choices=self._recent_choices)
        self.model_info = Label(value="No model loaded.")
        self.encoding = ComboBox(choices=[_MODEL_DEFAULT, "rgb", "onehot", "label"],
                                 value=_MODEL_DEFAULT, label="Encoding")
        self.device = ComboBox(choices=["auto", "cpu", "cuda", "mps"], value="auto",
                               label="Device")
        self.precision = ComboBox(choices=["auto", "fp32", "bf16", "fp16"], value="auto",
                                  label="Precision")
        self.mask_layer = ComboBox(label="Mask", choices=self._mask_choices)
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="Seed")
        self.variations = SpinBox(value=1, min=1, max=64, label="Variations")
        self.stochastic = CheckBox(value=False, text="Stochastic (dropout on, for variations)")
        self.tile = SpinBox(value=0, min=0, max=8192, step=64, label="Tile (0 = model's)")
        self.overlap = SpinBox(value=-1, min=-1, max=4096, label="Overlap (-1 = tile/4)")
        self.batch_size = SpinBox(value=0, min=0, max=256, label="Batch (0 = auto)")
        self.run_button = PushButton(text="Synthesize [Shift+S]")
        self.live = CheckBox(value=False, text="Live preview (follows the brush)")
        self.status = Label(value="")

        self.extend([
            Container(widgets=[self.model_path], labels=True),
            Container(widgets=[self.model_folder, self.recent], layout="horizontal",
                      labels=False),
            self.model_info,
            Container(widgets=[self.encoding, self.device, self.precision, self.mask_layer,
                               self.seed, self.variations]),
            self.stochastic,
        ])
        add_collapsible(self, "Advanced", [self.tile, self.overlap, self.batch_size])
        self.extend([self.run_button, self.live, self.status])
        self.model_info.native.setWordWrap(True)
        shrink_combo(self.recent)
        self.status.native.setWordWrap(True)

        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._live_tick)

        self.model_path.changed.connect(self._model_changed)
        self.model_folder.changed.connect(self._pick_folder)
        self.recent.changed.connect(self._recent_picked)
        self.encoding.changed.connect(self._model_changed)  # the encoding is part of loading
        for w in (self.device, self.precision, self.tile, self.overlap, self.batch_size,
                  self.stochastic):
            w.changed.connect(self._drop_synthesizer)
        self.run_button.changed.connect(self.synthesize)
        self.live.changed.connect(self._live_toggled)
        self.mask_layer.changed.connect(self._mask_changed)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed):
            ev.connect(self._refresh_choices)
        bus.use_model.connect(self.set_model)
        viewer.bind_key(RUN_KEY, lambda _v: self.synthesize(), overwrite=True)
        call_on_destroy(self, "teardown")

        start = self._initial_model()
        if start:
            self.set_model(start)

    # ----------------------------------------------------------------- model
    @property
    def model(self) -> Any:
        """The loaded model (``LoadedModel``), or None while none is loaded."""
        return self._model

    def _initial_model(self) -> str | None:
        demo = demo_model_path()
        if demo is not None:
            return str(demo)
        recent = _settings.get("recent_models", [])
        return recent[0] if recent else None

    def _recent_choices(self, _w: object = None) -> list[tuple[str, str]]:
        recent = _settings.get("recent_models", [])
        return [(_RECENT_HINT, _RECENT_HINT),
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
        """Use the model at ``path`` (file or folder); it is loaded in a worker."""
        path = str(path)
        if self.model_path.value != Path(path):
            with self.model_path.changed.blocked():
                self.model_path.value = path
        self._model_changed()

    def _model_changed(self, *_: object) -> None:
        path = str(self.model_path.value)
        if not path or path == "." or not Path(path).exists():
            return
        self._model_path = path
        self._drop_synthesizer()
        self.model_info.value = f"Loading {Path(path).name} ..."
        encoding = None if self.encoding.value == _MODEL_DEFAULT else self.encoding.value

        def load() -> Any:
            from ..models.checkpoints import load_model

            return load_model(path, encoding=encoding)

        worker = create_worker(load, _ignore_errors=True)  # errors: _model_failed
        worker.returned.connect(lambda model, p=path: self._model_loaded(p, model))
        worker.errored.connect(lambda exc, p=path: self._model_failed(p, exc))
        self._start(worker)

    def _model_loaded(self, path: str, model: Any) -> None:
        if self._closed or path != self._model_path:  # closed, or another model chosen since
            return
        self._model = model
        self.model_info.value = _describe(model.info)
        self.model_info.tooltip = "\n".join(model.info.notes)
        _settings.remember_model(path)
        self.recent.reset_choices()

    def _model_failed(self, path: str, exc: BaseException) -> None:
        if not self._closed and path == self._model_path:
            self._model = None
            self.model_info.value = f"<span style='color:#f66'>Cannot use {Path(path).name}</span>"
            report_error(exc, f"Loading {Path(path).name}")

    def _synth_settings(self) -> dict[str, Any]:
        return {
            "device": self.device.value, "precision": self.precision.value,
            "tile": self.tile.value or None,
            "overlap": None if self.overlap.value < 0 else self.overlap.value,
            "batch_size": self.batch_size.value or None,
            "stochastic": bool(self.stochastic.value or self.variations.value > 1),
        }

    def synthesizer(self) -> Any:
        """The loaded synthesizer for the current settings (created on first use)."""
        if self._model is None:
            raise ValueError("no model loaded: choose a checkpoint file or folder above.")
        settings = self._synth_settings()
        key = (id(self._model), tuple(sorted(settings.items())))
        if self._synth is None or self._synth_key != key:
            from ..synthesis import Synthesizer

            self._drop_synthesizer()
            self._synth = Synthesizer(self._model, **settings)
            self._synth_key = key
        return self._synth

    def _drop_synthesizer(self, *_: object) -> None:
        if self._synth is not None:
            self._synth.close()
        self._synth, self._synth_key = None, None

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
            layer.data = data
            layer.metadata.update(meta)
        else:
            layer = self.viewer.add_image(data, name=name, metadata=meta,
                                          contrast_limits=(0, 255))
        ndim = mask_layer.ndim
        layer.scale = (*([1.0] * (data.ndim - ndim)), *mask_layer.scale)
        layer.translate = (*([0.0] * (data.ndim - ndim)), *mask_layer.translate)
        return layer

    def _provenance(self, mask_layer: Labels, mask_sha: str, seed: int) -> dict[str, Any]:
        """Where an image came from; ``mask_sha`` is the hash of the mask that was synthesized
        (computed in the worker, from its copy: the layer may have been painted since)."""
        synth = self._synth
        info = self._model.info
        return {
            "source_mask": mask_layer.metadata.get("source", f"layer:{mask_layer.name}"),
            "source_mask_sha256": mask_sha,
            "model": info.path, "model_sha256": info.sha256, "family": info.family,
            "architecture": info.netG, "seed": seed,
            "params": {k: v for k, v in synth.describe().items() if k not in ("model",)},
        }

    # ----------------------------------------------------------------- synthesize
    def synthesize(self, *_: object) -> Any:
        """Synthesize the chosen mask layer (each variation) in a worker; returns the worker."""
        try:
            mask_layer = self.mask_layer.value
            if mask_layer is None:
                raise ValueError("choose a mask layer (paint one with the Mask editor).")
            synth = self.synthesizer()
            mask = np.array(mask_layer.data, dtype=np.uint8, copy=True)
        except Exception as exc:
            report_error(exc, "Synthesize")
            return None
        seeds = [self.seed.value + i for i in range(self.variations.value)]
        if len(seeds) > 1 and self._model.info.dropout is False:
            show_warning("This model has no dropout: its variations are identical images.")
        keep = self.live.value and len(seeds) == 1

        def work():  # runs in a thread: only core code, results go back by yield/return
            images = []
            with self._lock:
                for i, seed in enumerate(seeds):
                    gen = synth.run(mask, seed=seed, keep=keep and i == 0)
                    while True:
                        try:
                            done, total = next(gen)
                        except StopIteration as stop:
                            images.append(stop.value)
                            break
                        yield i * total + done, total * len(seeds)
            return images, sha256_array(mask)

        pbar = progress(total=0, desc=f"Synthesizing {mask_layer.name}")
        t0 = time.perf_counter()

        def on_progress(value: tuple[int, int]) -> None:
            if self._closed:
                return
            pbar.total = value[1]
            pbar.n = value[0]
            pbar.refresh()

        def on_done(result: tuple[list[np.ndarray], str]) -> None:
            if self._closed:
                return
            images, mask_sha = result
            data = images[0] if len(images) == 1 else np.stack(images)
            meta = self._provenance(mask_layer, mask_sha, seeds[0])
            meta["seeds"] = seeds
            self._write_layer(mask_layer, data, meta)
            dt = time.perf_counter() - t0
            note = synth.precision_note or "explicit"
            self.status.value = (f"{len(images)} image(s) {mask.shape} in {dt:.2f} s on "
                                 f"{synth.device} ({synth.precision}; {note})")
            if keep:
                self._live_layer = mask_layer
                self._live_applied = self._live_request
            bus.candidates.emit([
                Candidate(img, mask, self._provenance(mask_layer, mask_sha, s),
                          name=f"{mask_layer.name} seed {s}")
                for img, s in zip(images, seeds, strict=True)
            ])

        worker = create_worker(work, _ignore_errors=True)  # errors: handled below
        worker.yielded.connect(on_progress)
        worker.returned.connect(on_done)
        worker.errored.connect(lambda exc: None if self._closed else
                               report_error(exc, "Synthesize"))
        worker.finished.connect(pbar.close)
        self._start(worker)
        return worker

    # ----------------------------------------------------------------- live preview
    def _live_toggled(self, on: bool) -> None:
        if self._live_layer is not None:
            self._live_layer.events.paint.disconnect(self._on_paint)
            self._live_layer = None
        if not on:
            return
        mask_layer = self.mask_layer.value
        if mask_layer is None or self._model is None:
            return
        mask_layer.events.paint.connect(self._on_paint)
        self._live_layer = mask_layer
        self._live_request += 1
        self._debounce.start()

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
            return
        try:
            synth = self.synthesizer()
        except Exception as exc:
            report_error(exc, "Live preview")
            return
        request = self._live_request
        mask = np.array(layer.data, dtype=np.uint8, copy=True)
        z = int(self.viewer.dims.current_step[0]) if mask.ndim == 3 else 0
        seed = self.seed.value

        def work() -> tuple[np.ndarray, list | None, float, str]:
            t0 = time.perf_counter()
            with self._lock:
                if not synth.kept(z):
                    image = synth(mask, seed=seed, keep=True)
                    image = image[z] if image.ndim == 3 else image
                    regions = None
                else:
                    image, regions = synth.update(mask, z=z)
            return image, regions, time.perf_counter() - t0, sha256_array(mask)

        def done(result: tuple[np.ndarray, list | None, float, str]) -> None:
            self._live_running = False
            if self._closed:
                return
            image, regions, dt, mask_sha = result
            if request >= self._live_applied:  # never let a stale result overwrite a newer one
                self._live_applied = request
                if regions is None or regions:
                    self._apply_live(layer, image, z, mask.ndim == 3,
                                     self._provenance(layer, mask_sha, seed))
                what = ("synthesized" if regions is None
                        else f"{len(regions)} tile(s) updated")
                self.status.value = f"live preview: {what} in {dt * 1000:.0f} ms"
            if self._live_pending or request < self._live_request:
                self._live_pending = False
                self._debounce.start()

        def failed(exc: BaseException) -> None:
            self._live_running = False
            if not self._closed:
                report_error(exc, "Live preview")

        self._live_running = True
        worker = create_worker(work, _ignore_errors=True)  # errors: handled below
        worker.returned.connect(done)
        worker.errored.connect(failed)
        self._start(worker)

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
    def _start(self, worker: Any) -> None:
        self._workers.append(worker)
        worker.finished.connect(lambda w=worker: self._workers.remove(w)
                                if w in self._workers else None)
        worker.start()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Process Qt events until no worker of this widget runs (for tests and scripts)."""
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while (self._workers or self._debounce.isActive() or self._live_running) and \
                time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.005)
        if self._workers or self._live_running:
            raise TimeoutError("synthesis did not finish in time")

    def close_model(self) -> None:
        """Free the model and its memory (GPU memory too)."""
        self._drop_synthesizer()
        self._model = None

    def teardown(self) -> None:
        """The widget was closed: stop listening to the other widgets and free the model."""
        self._closed = True  # results of workers still running are dropped
        bus.use_model.disconnect(self.set_model, missing_ok=True)
        with contextlib.suppress(Exception):  # the viewer may be gone already
            self.viewer.bind_key(RUN_KEY, None)
        with contextlib.suppress(RuntimeError):  # Qt may have deleted the timer first
            self._debounce.stop()
        self.close_model()
