"""Train widget: data folders, settings, Start / Stop / Resume, progress, loss plot, previews.

Training runs in a child process (``napari-synthgen train --events jsonl``) read by a thread
worker: the viewer never waits for it, Stop saves a checkpoint and ends it (a trainer that does
not answer is terminated), and closing napari stops it cleanly.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from ..io import read_array
from ..training.config import GAN_MODES, TrainConfig
from ._bus import bus
from ._common import (
    add_collapsible,
    call_on_destroy,
    connect_weakly,
    report_error,
    show_info,
    widen_path,
    wrap_label,
)
from ._worker import Workers

if TYPE_CHECKING:
    import napari

PREVIEW_LAYER = "training preview"
STOP_GRACE_S = 60.0  # a trainer that has not stopped after this is terminated
KILL_GRACE_S = 10.0  # after SIGTERM, a trainer still alive this long is killed
CLOSE_GRACE_S = 15.0  # closing napari waits this long for the trainer to save
PLOT_INTERVAL_S = 0.5


#: Line colours that read on napari's dark and light backgrounds.
SERIES_COLOURS = ("#4ea8de", "#f4a261", "#5ec27a")


def theme_colours(theme: str) -> dict[str, str]:
    """Background, panel, text and grid colours of a napari theme (dark when it is unknown)."""
    from napari.utils.theme import available_themes, get_system_theme, get_theme

    name = get_system_theme() if theme == "system" else theme
    t = get_theme(name if name in available_themes() else "dark")
    return {"background": t.background.as_hex(), "panel": t.foreground.as_hex(),
            "text": t.text.as_hex(), "grid": t.highlight.as_hex()}


class LossPlot:
    """A small matplotlib plot of the losses in napari's theme, redrawn at most every 0.5 s."""

    def __init__(self, theme: str = "dark") -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.ax = self.figure.add_subplot(111)
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self.colours = theme_colours(theme)
        self._last_draw = 0.0
        self.clear()

    def set_theme(self, theme: str) -> None:
        """Follow napari's theme (the viewer's ``theme`` event)."""
        self.colours = theme_colours(theme)
        self.draw()

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

    def add(self, step: int, losses: dict[str, float]) -> None:
        values = {"G L1 / 100": losses["G_L1"] / 100.0, "G GAN": losses["G_GAN"],
                  "D": 0.5 * (losses["D_real"] + losses["D_fake"])}
        for name, v in values.items():
            xs, ys = self.series.setdefault(name, ([], []))
            xs.append(step)
            ys.append(v)
        if time.monotonic() - self._last_draw > PLOT_INTERVAL_S:
            self.draw()

    def draw(self) -> None:
        self._last_draw = time.monotonic()
        self.ax.clear()
        self._style()
        for (name, (xs, ys)), colour in zip(self.series.items(), SERIES_COLOURS, strict=False):
            self.ax.plot(xs, ys, label=name, linewidth=1, color=colour)
        if self.series:
            legend = self.ax.legend(fontsize=7, loc="upper right", facecolor=self.colours["panel"],
                                    edgecolor=self.colours["grid"])
            for text in legend.get_texts():
                text.set_color(self.colours["text"])
        self.canvas.draw_idle()


class TrainWidget(Container):
    """Dock widget to train a pix2pix model on paired folders, in a child process."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.process: Any = None  # TrainerProcess
        self.worker: Any = None
        self.events: list[dict[str, Any]] = []
        self.checkpoint: str | None = None
        self._jobs = Workers()
        self._closing = False
        self._stop_requested = False
        self._stop_deadline = QTimer()
        self._stop_deadline.setSingleShot(True)
        self._stop_deadline.timeout.connect(self._stop_timeout)
        default_out = Path.home() / "napari-synthgen-runs" / time.strftime("run-%Y%m%d-%H%M")

        self.data = LineEdit(label="Data folders", value="")
        self.add_data = PushButton(text="Add folder...")
        self.data_status = Label(value="Paired folders (images/ + masks/) or aligned A|B images.")
        self.val = FileEdit(mode="d", label="Validation (optional)")
        self.out = FileEdit(mode="d", label="Checkpoints", value=str(default_out))
        self.family = ComboBox(choices=["pix2pix"], value="pix2pix", label="Family")
        self.steps = SpinBox(value=2000, min=1, max=10_000_000, label="Steps")
        self.tile = SpinBox(value=256, min=64, max=4096, step=64, label="Tile")
        self.batch = SpinBox(value=4, min=1, max=512, label="Batch size")
        self.netG = ComboBox(choices=["unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks"],
                             value="unet_256", label="Generator")
        self.ngf = SpinBox(value=32, min=4, max=256, label="Width (ngf)")
        self.device = ComboBox(choices=["auto", "cpu", "cuda", "mps"], value="auto",
                               label="Device")
        # advanced
        self.stride = SpinBox(value=0, min=0, max=4096, label="Stride (0 = random crops)")
        self.lr = FloatSpinBox(value=2e-4, min=1e-7, max=1.0, step=1e-5, label="Learning rate")
        self.lambda_l1 = FloatSpinBox(value=100.0, min=0.0, max=1e4, label="L1 weight")
        self.gan_mode = ComboBox(choices=list(GAN_MODES), value="lsgan", label="GAN loss")
        self.flips = CheckBox(value=True, text="Flips")
        self.rot90 = CheckBox(value=True, text="90° turns")
        self.norm = ComboBox(choices=["batch", "instance", "none"], value="batch", label="Norm")
        self.netD = ComboBox(choices=["basic", "n_layers", "pixel"], value="basic",
                             label="Discriminator")
        self.ndf = SpinBox(value=64, min=4, max=256, label="D width (ndf)")
        self.precision = ComboBox(choices=["auto", "fp32", "bf16", "fp16"], value="auto",
                                  label="Precision")
        self.checkpoint_every = SpinBox(value=500, min=1, max=10_000_000, label="Checkpoint every")
        self.sample_every = SpinBox(value=100, min=1, max=10_000_000, label="Preview every")
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="Seed")
        self.encoding = ComboBox(choices=["rgb", "onehot", "label"], value="rgb",
                                 label="Mask encoding")

        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop")
        self.resume_button = PushButton(text="Resume")
        self.progress = ProgressBar(value=0, min=0, max=1, label="Progress")
        self.eta = Label(value="")
        self.plot = LossPlot(str(viewer.theme))
        self.checkpoint_label = Label(value="No checkpoint yet.")
        self.use_button = PushButton(text="Use in synthesis")
        for lab in (self.data_status, self.eta, self.checkpoint_label):
            wrap_label(lab)

        self.extend([
            Container(widgets=[self.data]),
            self.add_data,
            self.data_status,
            Container(widgets=[self.val, self.out, self.family, self.steps, self.tile,
                               self.batch, self.netG, self.ngf, self.device]),
        ])
        add_collapsible(self, "Advanced", [
            self.stride, self.lr, self.lambda_l1, self.gan_mode, self.flips, self.rot90,
            self.norm, self.netD, self.ndf, self.precision, self.checkpoint_every,
            self.sample_every, self.seed, self.encoding])
        self.extend([
            Container(widgets=[self.start_button, self.stop_button, self.resume_button],
                      layout="horizontal", labels=False),
            self.progress,
            self.eta,
        ])
        self.native.layout().addWidget(self.plot.canvas)
        viewer.events.theme.connect(self._theme_changed)
        for path_field in (self.data, self.val, self.out):
            widen_path(path_field)
        self.extend([self.checkpoint_label, self.use_button])

        self.add_data.changed.connect(self._pick_data)
        self.data.changed.connect(self._validate_data)
        self.start_button.changed.connect(lambda *_: self.start())
        self.resume_button.changed.connect(lambda *_: self.start(resume=True))
        self.stop_button.changed.connect(self.stop)
        self.use_button.changed.connect(self.use_in_synthesis)
        app = QApplication.instance()
        if app is not None:
            connect_weakly(app.aboutToQuit, self, "shutdown")
        call_on_destroy(self, "shutdown")
        self._set_running(False)

    def _theme_changed(self, event: object) -> None:
        if not self._closing:
            self.plot.set_theme(str(getattr(event, "value", self.viewer.theme)))

    # ----------------------------------------------------------------- data
    def data_folders(self) -> list[str]:
        return [p.strip() for p in str(self.data.value).split(";") if p.strip()]

    def _pick_data(self, *_: object) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Training data folder")
        if folder:
            self.data.value = ";".join([*self.data_folders(), folder])

    def _validate_data(self, *_: object) -> Any:
        """Check the data folders in a worker and say what was found or what is wrong."""
        folders = self.data_folders()
        if not folders:
            return None
        self.data_status.value = "Checking the data ..."

        def check() -> str:
            from ..training.data import load_samples

            samples = load_samples(folders)
            shapes = sorted({s.image.shape for s in samples})
            shown = ", ".join(f"{h}x{w}" for h, w in shapes[:3])
            return f"{len(samples)} image/mask pairs ({shown}{' ...' if len(shapes) > 3 else ''})"

        def show(text: str, _ctx: object = None) -> None:
            self.data_status.value = text

        def failed(exc: BaseException, _ctx: object = None) -> None:
            show("<span style='color:#f66'>" + str(exc).replace("\n", "<br>") + "</span>")

        self._jobs.cancel_all("check")  # only the newest list of folders matters
        job = self._jobs.start(check, doing="Checking the training data", kind="check",
                               on_result=show, on_error=failed)
        return job.worker

    def config(self) -> TrainConfig:
        """The training configuration from the widget's settings."""
        val = str(self.val.value)
        return TrainConfig(
            data=self.data_folders(), val=[val] if val not in ("", ".") else [],
            out=str(self.out.value), family=self.family.value, steps=self.steps.value,
            tile=self.tile.value, batch_size=self.batch.value, netG=self.netG.value,
            ngf=self.ngf.value, device=self.device.value, stride=self.stride.value or None,
            lr=self.lr.value, lambda_l1=self.lambda_l1.value, gan_mode=self.gan_mode.value,
            flips=self.flips.value, rot90=self.rot90.value, norm=self.norm.value,
            netD=self.netD.value, ndf=self.ndf.value, precision=self.precision.value,
            checkpoint_every=self.checkpoint_every.value, sample_every=self.sample_every.value,
            seed=self.seed.value, encoding=self.encoding.value, log_every=1,
        )

    # ----------------------------------------------------------------- run
    def start(self, resume: bool = False) -> Any:
        """Start (or resume) training in a child process; returns the reading worker."""
        if self.worker is not None and self.worker.is_running:
            show_info("Training is already running; Stop it first.")
            return None
        self.events = []
        self.plot.clear()
        self.progress.value = 0
        self.process = None
        self._stop_requested = False
        config = self.config()

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
        self.eta.value = "Starting the trainer ..."
        # events still arrive after napari closed: a trainer that was starting must be stopped
        job = self._jobs.start(read, doing="Training", kind="train", deliver_after_close=True,
                               on_yield=lambda event, _ctx: self._on_event(event),
                               on_error=lambda exc, _ctx: self._on_error(exc),
                               on_finish=lambda _ctx: self._on_finished())
        self.worker = job.worker
        return self.worker

    def _on_event(self, event: dict[str, Any]) -> None:
        if self._closing:
            if event["event"] == "process":  # napari closed while the child was starting
                event["process"].stop(grace=CLOSE_GRACE_S)
            return
        kind = event["event"]
        if kind == "process":
            self.process = event["process"]
            if self._stop_requested:
                self.stop()
            return
        self.events.append(event)
        if kind == "started":
            self.progress.max = event["total"]
            self.progress.value = event["step"]
            self.eta.value = (f"{event['n_train_images']} training / {event['n_val_images']} "
                              f"validation images · {event['device']} {event['precision']}")
        elif kind == "progress":
            self.progress.max = event["total"]
            self.progress.value = event["step"]
            self.plot.add(event["step"], event["losses"])
            eta = _fmt_seconds(event["eta_s"])
            self.eta.value = (f"step {event['step']} / {event['total']} · ETA {eta} · "
                              f"{event['tiles_per_s']:.1f} tiles/s · lr {event['lr']:.2g}")
        elif kind == "sample":
            self._show_preview(event["image"])
        elif kind == "checkpoint":
            self._set_checkpoint(event["path"], event["step"])
        elif kind == "finished":
            self.plot.draw()
            if event.get("checkpoint"):
                self._set_checkpoint(event["checkpoint"], event["step"])
            self.eta.value = f"Finished ({event['reason']}) at step {event['step']}."
        elif kind == "failed":
            self.plot.draw()
            self.eta.value = f"<span style='color:#f66'>{event['message']}</span>"
            report_error(RuntimeError(event["message"]), "Training")

    def _on_error(self, exc: BaseException) -> None:
        if not self._closing:  # the worker helper has shown the error to the user
            self.eta.value = f"<span style='color:#f66'>{exc}</span>"

    def _show_preview(self, mosaic: Any) -> None:
        layer = next((lyr for lyr in self.viewer.layers if lyr.name == PREVIEW_LAYER), None)
        if layer is not None and layer.data.shape == mosaic.shape:
            layer.data = mosaic
        else:
            if layer is not None:
                self.viewer.layers.remove(layer)
            self.viewer.add_image(mosaic, name=PREVIEW_LAYER, rgb=True,
                                  metadata={"layout": "mask | generated | real"})

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
            self.process.terminate(grace=KILL_GRACE_S)

    def shutdown(self) -> None:
        """Stop training before napari closes (a checkpoint is saved when possible)."""
        self._closing = True
        self._jobs.close()
        with contextlib.suppress(Exception):  # the viewer may be gone already
            self.viewer.events.theme.disconnect(self._theme_changed)
        if self.process is not None and self.process.running:
            self.process.stop(grace=CLOSE_GRACE_S)

    def use_in_synthesis(self, *_: object) -> None:
        """Hand the newest checkpoint to the synthesis widget (docking it if needed)."""
        if not self.checkpoint:
            show_info("No checkpoint yet.")
            return
        try:
            self.viewer.window.add_plugin_dock_widget("napari-synthgen", "Synthesize")
        except Exception as exc:  # the widget can still be docked by hand
            report_error(exc, "Opening the synthesis widget")
        bus.use_model.emit(self.checkpoint)


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
