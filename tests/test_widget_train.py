"""The train widget: a child process supervised from napari, never blocking the viewer."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from napari_synthgen.registry import load_model
from napari_synthgen.training.engine import latest_checkpoint

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _train_widget(viewer, data: Path, out: Path, steps: int = 2000):
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    w.data.value = str(data)
    w.out.value = out
    w.steps.value = steps
    w.netG.value, w.ngf.value, w.ndf.value, w.tile.value = "unet_128", 4, 4, 128
    w.batch.value, w.sample_every.value, w.checkpoint_every.value = 2, 5, 10_000
    return w


def _kinds(w, kind: str) -> list[dict]:
    return [e for e in w.events if e["event"] == kind]


def test_start_watch_stop(make_napari_viewer, qtbot, tmp_path: Path, isbi_small: Path) -> None:
    """What the user sees while training runs: events, the loss plot, the preview, Stop, the
    checkpoint (how responsive the viewer stays is measured by benchmarks/gui_responsiveness.py,
    not asserted here: a loaded machine decides wall-clock gaps)."""
    viewer = make_napari_viewer(show=True)
    w = _train_widget(viewer, isbi_small, tmp_path / "run")
    worker = w.start()
    assert not w.start_button.enabled and w.stop_button.enabled
    qtbot.waitUntil(lambda: w.process is not None, timeout=30_000)
    assert w.process.running
    qtbot.waitUntil(lambda: len(_kinds(w, "progress")) >= 12 and bool(_kinds(w, "sample")),
                    timeout=120_000)
    # the plot and the preview follow the run
    assert "training preview" in viewer.layers
    assert viewer.layers["training preview"].rgb
    assert len(w.plot.series["G_GAN"][0]) >= 12 and w.progress.value >= 12
    assert "ETA" in w.eta.value
    pid = w.process.proc.pid
    w.stop()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    finished = w.events[-1]
    assert finished["event"] == "finished" and finished["reason"] == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child process is gone
    step, g, _ = latest_checkpoint(tmp_path / "run")
    assert step == finished["step"] and load_model(g).info.metadata["step"] == step
    assert w.checkpoint == str(g) and w.start_button.enabled
    # the checkpoint goes to the synthesis widget
    w.use_in_synthesis()
    _, synth = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")  # the docked one
    qtbot.waitUntil(lambda: synth.model is not None, timeout=20_000)
    assert synth.model.info.path == str(g)


def test_start_never_writes_into_a_folder_holding_a_run(
        make_napari_viewer, qtbot, tmp_path: Path, isbi_small: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen.widgets import _common

    old = tmp_path / "runs" / "pix2pix-001"
    (old / "checkpoints").mkdir(parents=True)
    files = {old / "G_step_0000040.safetensors": b"generator", old / "config.yaml": b"x: 1\n",
             old / "checkpoints" / "step_0000040.state.pt": b"state"}
    for path, data in files.items():
        path.write_bytes(data)
    asked: list[str] = []
    answers: list[str] = []

    def ask(parent, title, text, buttons):
        asked.append(text)
        assert tuple(buttons) == ("Resume", "New folder", "Cancel")
        return answers.pop(0)

    monkeypatch.setattr(_common, "ask", ask)
    viewer = make_napari_viewer()
    w = _train_widget(viewer, isbi_small, old, steps=2)

    def run_to_end() -> None:
        worker = w.start()
        assert worker is not None
        with qtbot.waitSignal(worker.finished, timeout=120_000):
            pass

    answers.append("Cancel")  # the folder the user picked holds a run: asked, nothing starts
    assert w.start() is None and w.process is None
    assert "step 40" in asked[0] and str(tmp_path / "runs" / "pix2pix-002") in asked[0]
    answers.append("New folder")
    run_to_end()
    assert Path(w.out.value) == tmp_path / "runs" / "pix2pix-002"
    assert latest_checkpoint(tmp_path / "runs" / "pix2pix-002")[0] == 2
    # the next Start proposes the next free folder itself: the dock's own folder is not asked about
    run_to_end()
    assert len(asked) == 2 and Path(w.out.value) == tmp_path / "runs" / "pix2pix-003"
    assert latest_checkpoint(tmp_path / "runs" / "pix2pix-003")[0] == 2
    # the user picks the old run again and resumes it (its state here is no real one)
    w.out.value = old
    answers.append("Resume")
    run_to_end()
    assert len(asked) == 3 and Path(w.out.value) == old
    assert w.events[-1]["event"] == "failed" and "training state" in w.events[-1]["message"]
    for path, data in files.items():
        assert path.read_bytes() == data, f"{path} was changed"
    assert not (old / "samples").exists()


def test_unresponsive_trainer_is_ended(make_napari_viewer, qtbot, tmp_path: Path,
                                       isbi_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen.widgets import train as train_mod

    monkeypatch.setattr(train_mod, "STOP_GRACE_S", 1.0)
    monkeypatch.setattr(train_mod, "KILL_GRACE_S", 1.0)
    viewer = make_napari_viewer()
    w = _train_widget(viewer, isbi_small, tmp_path / "run")
    worker = w.start()
    qtbot.waitUntil(lambda: len(_kinds(w, "progress")) >= 2, timeout=120_000)
    os.kill(w.process.proc.pid, signal.SIGSTOP)  # the trainer hangs
    w.stop()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    assert not w.process.running
    assert w.events[-1]["event"] == "failed" and "ended with code" in w.events[-1]["message"]


def _gui_waits(process) -> list[str]:
    """Record every wait on the trainer made by the GUI thread (it must make none)."""
    import threading

    waits: list[str] = []
    real_wait = process.proc.wait

    def wait(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            waits.append(f"wait{args or ''}{kwargs or ''}")
        return real_wait(*args, **kwargs)

    process.proc.wait = wait
    return waits


def test_closing_napari_asks_then_stops_training_without_waiting(
        make_napari_viewer, qtbot, tmp_path: Path, isbi_small: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen.widgets import _common
    from napari_synthgen.widgets.train import STOP_AND_CLOSE

    asked: list[str] = []
    answers: list[str] = []

    def ask(parent, title, text, buttons):
        asked.append(text)
        assert tuple(buttons) == ("Cancel", STOP_AND_CLOSE)
        return answers.pop(0)

    monkeypatch.setattr(_common, "ask", ask)
    viewer = make_napari_viewer(show=True)
    w = _train_widget(viewer, isbi_small, tmp_path / "run")
    w.start()
    qtbot.waitUntil(lambda: len(_kinds(w, "progress")) >= 3, timeout=120_000)
    process = w.process
    waits = _gui_waits(process)
    window = w.native.window()  # napari's main window, as the user closes it
    answers.append("Cancel")
    assert not window.close()  # the user kept napari open: training goes on
    assert window.isVisible() and process.running and len(asked) == 1
    assert str(tmp_path / "run") in asked[0]
    n = len(_kinds(w, "progress"))
    qtbot.waitUntil(lambda: len(_kinds(w, "progress")) > n, timeout=60_000)
    answers.append(STOP_AND_CLOSE)
    viewer.close()  # closes the window: asked again
    assert not window.isVisible()
    # the thread reading the trainer reaps it once it has saved and exited
    qtbot.waitUntil(lambda: not process.running and not w.busy, timeout=60_000)
    assert process.proc.returncode == 0 and len(asked) == 2
    assert latest_checkpoint(tmp_path / "run") is not None
    assert waits == [], "the GUI thread waited on the trainer"


def test_closing_a_headless_viewer_stops_training_without_asking(
        make_napari_viewer, qtbot, tmp_path: Path, isbi_small: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen.widgets import _common

    def ask(*_args):
        raise AssertionError("nobody sees a headless viewer: nothing to ask")

    monkeypatch.setattr(_common, "ask", ask)
    viewer = make_napari_viewer()
    w = _train_widget(viewer, isbi_small, tmp_path / "run")
    w.start()
    qtbot.waitUntil(lambda: len(_kinds(w, "progress")) >= 3, timeout=120_000)
    process = w.process
    waits = _gui_waits(process)
    viewer.close()
    qtbot.waitUntil(lambda: not process.running and not w.busy, timeout=30_000)
    assert process.proc.returncode == 0
    assert latest_checkpoint(tmp_path / "run") is not None
    assert waits == [], "the GUI thread waited on the trainer"


def test_bad_data_is_shown_on_entry(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    w.data.value = str(tmp_path)
    qtbot.waitUntil(lambda: "no .tif" in w.data_status.value, timeout=20_000)


def test_binary_masks_are_read_as_the_widget_says(make_napari_viewer, qtbot,
                                                  tmp_path: Path, isbi_small: Path) -> None:
    """0/255 masks: the data check names the setting that reads them; chosen, the pairs are
    counted and the run's configuration reads them that way."""
    import numpy as np
    import tifffile

    from napari_synthgen.io import find_pairs
    from napari_synthgen.masks import INTERIOR

    data = tmp_path / "binary"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for pair in find_pairs(isbi_small)[:2]:
        tifffile.imwrite(data / "images" / pair.image.name, tifffile.imread(pair.image))
        cells = tifffile.imread(pair.mask) == INTERIOR
        tifffile.imwrite(data / "masks" / pair.mask.name, (cells * 255).astype(np.uint8))
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    w.data.value = str(data)
    qtbot.waitUntil(lambda: "Masks read as 'binary'" in w.data_status.value, timeout=20_000)
    assert "coerce_mask" not in w.data_status.value
    w.read_as.value = "binary"
    qtbot.waitUntil(lambda: w.data_status.value.startswith("2 image/mask pairs"),
                    timeout=20_000)
    w.boundary_width.value = 3
    cfg = w.config()
    assert (cfg.read_as, cfg.boundary_width) == ("binary", 3)


def test_loss_plot_follows_the_napari_theme(make_napari_viewer) -> None:
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    dark = get_theme("dark")
    assert viewer.theme == "dark"
    assert to_hex(w.plot.figure.get_facecolor()) == dark.background.as_hex()
    assert to_hex(w.plot.ax.xaxis.label.get_color()) == dark.text.as_hex()
    w.plot.add(1, {"G_L1": 20.0, "G_GAN": 1.0, "D_real": 0.3, "D_fake": 0.2})
    viewer.theme = "light"
    light = get_theme("light")
    assert to_hex(w.plot.figure.get_facecolor()) == light.background.as_hex()
    assert to_hex(w.plot.ax.get_facecolor()) == light.foreground.as_hex()
    assert to_hex(w.plot.ax.xaxis.label.get_color()) == light.text.as_hex()
    assert len(w.plot.ax.lines) == 4  # the losses are still drawn, one line each
