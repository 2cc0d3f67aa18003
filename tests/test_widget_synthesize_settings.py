"""The Synthesize widget keeps working when the user changes settings or the model while a
synthesis and a live preview run: each finishes with what it started with, then the new
settings apply. Real viewer, real manifest, tiny real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_synthgen.layouts import make_layout

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _use(w, qtbot, model: Path) -> None:
    w.set_model(model)
    qtbot.waitUntil(lambda: w.model is not None and w.model.info.path == str(model),
                    timeout=20000)


def _errors(start: int) -> list[str]:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [str(r.message) for r in notification_manager.records[start:]
            if r.severity == NotificationSeverity.ERROR]


def _expected(cache: dict, prov: dict, mask: np.ndarray) -> np.ndarray:
    """The image a direct Synthesizer run with the settings in ``prov`` gives for ``mask``."""
    from napari_synthgen.registry import make_synthesizer

    p = prov["params"]
    key = (prov["model"], p["device"], p["precision"], p["tile"], p["overlap"],
           p["batch_size"], p["stochastic"])
    if key not in cache:
        cache[key] = make_synthesizer(prov["model"], device=p["device"], precision=p["precision"],
                                 tile=p["tile"], overlap=p["overlap"],
                                 batch_size=p["batch_size"], stochastic=p["stochastic"])
    return cache[key](mask, seed=prov["seed"])


def test_changing_settings_while_synthesis_and_live_preview_run(
        make_napari_viewer, qtbot, tiny_model: Path, tiny_unet: Path) -> None:
    viewer = make_napari_viewer()
    w = _dock(viewer, "Synthesize")
    _use(w, qtbot, tiny_model)
    layer = viewer.add_labels(make_layout("dense", (160, 224), seed=3), name="m")
    w.mask_layer.value = layer
    outputs: list = []  # every image put on screen, with the mask and provenance it had
    w.synthesized.connect(outputs.append)
    w.live.value = True
    w.wait_idle()
    from napari.utils.notifications import notification_manager

    n_notes = len(notification_manager.records)
    # (widget, value) the user changes while work runs; tile 128 fits both models
    changes = [("device", "cpu"), ("precision", "bf16"), ("tile", 128), ("model", tiny_unet),
               ("precision", "fp32"), ("tile", 256), ("device", "auto"), ("precision", "auto"),
               ("model", tiny_model), ("tile", 0)]
    started: list[tuple[str, dict]] = []  # (model, settings) each iteration's work started with
    for i, (what, value) in enumerate(changes):
        # the synthesis lock makes sure the work has started (its synthesizer is captured) and
        # is still running when the setting changes: it waits for the lock this test holds
        first = len(outputs)
        with w._lock:
            started.append((w.model.info.path, w._synth_settings()))
            assert w.synthesize() is not None
            y, x = 40 + 8 * i, 50 + 12 * i
            layer.paint((y, x), 2 if layer.data[y, x] != 2 else 1)  # a stroke: live preview
            qtbot.waitUntil(lambda: w._live_running, timeout=5000)
            assert w.busy
            if what == "model":  # loads in a worker: it waits for a free thread
                w.set_model(value)
            else:
                getattr(w, what).value = value
            assert w.busy and len(outputs) == first  # nothing finished yet
        w.wait_idle()
        if what == "model":
            assert w.model is not None and w.model.info.path == str(value)
        mine = outputs[first:]
        run = next(c for c in mine if c.name != "live preview")
        live = next(c for c in mine if c.name == "live preview")
        for c in (run, live):  # the work that ran during the change kept what it started with
            path, settings = started[-1]
            p = c.provenance["params"]
            assert c.provenance["model"] == path
            assert p["device"] == "cpu"
            if settings["precision"] != "auto":
                assert p["precision"] == settings["precision"]
            if settings["tile"]:
                assert p["tile"] == settings["tile"]
        # then the new settings apply: the preview was redone with them
        assert mine[-1].name == "live preview"
        after = mine[-1].provenance
        assert after["model"] == w.model.info.path
        assert after["params"]["precision"] == w._synth.precision
        assert after["params"]["tile"] == (w.tile.value or w.model.info.tile)
    assert not _errors(n_notes), _errors(n_notes)
    assert len({c.provenance["model"] for c in outputs}) == 2
    assert {c.provenance["params"]["precision"] for c in outputs} >= {"fp32", "bf16"}
    assert {c.provenance["params"]["tile"] for c in outputs} >= {64, 128, 256}
    # every image equals a direct run with the settings its run started with
    cache: dict = {}
    for c in outputs:
        expected = _expected(cache, c.provenance, c.mask)
        diff = np.abs(c.image.astype(int) - expected.astype(int)).max()
        assert diff <= 1, (c.name, c.provenance["params"], diff)
    # the widget shows the newest preview, made with the current settings
    final = _expected(cache, outputs[-1].provenance, layer.data)
    assert np.abs(viewer.layers["m_synth"].data.astype(int) - final).max() <= 1
    assert not w._holds, "a synthesizer is still held after all work ended"


def test_cancel_and_close_while_running(make_napari_viewer, qtbot, tiny_model: Path) -> None:
    viewer = make_napari_viewer()
    w = _dock(viewer, "Synthesize")
    _use(w, qtbot, tiny_model)
    from napari.utils.notifications import notification_manager

    n_notes = len(notification_manager.records)
    layer = viewer.add_labels(make_layout("dense", (512, 512), seed=1), name="big")
    w.mask_layer.value = layer
    w.variations.value = 3
    with w._lock:
        assert w.synthesize() is not None
        w.cancel()  # quits at its first yield; the lock is released, nothing is shown
    w.wait_idle(20)
    assert "big_synth" not in viewer.layers and not w._holds
    assert w._lock.acquire(timeout=1)
    w._lock.release()
    # a run still going when the dock closes: its result is dropped, its synthesizer freed
    synth = w.synthesizer()  # the current one, which the run holds
    worker = w.synthesize()
    viewer.window.remove_dock_widget("all")
    w.teardown()  # what the dock's destruction calls; calling it twice is harmless
    qtbot.waitUntil(lambda: not worker.is_running, timeout=20000)
    qtbot.wait(50)
    assert synth.network is None and "big_synth" not in viewer.layers
    assert not _errors(n_notes), _errors(n_notes)


def test_synthesizers_are_built_off_the_gui_thread(make_napari_viewer, qtbot, tiny_model: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a synthesizer moves the model to its device (seconds for a large model):
    runs and live preview build theirs in their worker, never on the GUI thread."""
    import threading

    from napari_synthgen.families.pix2pix import synthesizer as synthesis

    on_gui: list[bool] = []
    real = synthesis.Pix2PixSynthesizer.__init__

    def recording(self, *args, **kwargs):
        on_gui.append(threading.current_thread() is threading.main_thread())
        real(self, *args, **kwargs)

    viewer = make_napari_viewer()
    w = _dock(viewer, "Synthesize")
    _use(w, qtbot, tiny_model)
    monkeypatch.setattr(synthesis.Pix2PixSynthesizer, "__init__", recording)
    layer = viewer.add_labels(make_layout("dense", (96, 96), seed=1), name="m")
    w.mask_layer.value = layer
    w.live.value = True  # the first preview builds one
    w.wait_idle()
    qtbot.waitUntil(lambda: "m_synth" in viewer.layers, timeout=20000)
    w.precision.value = "fp32"  # another setting: the next run builds another
    w.live.value = False
    w.wait_idle()
    assert w.synthesize() is not None
    w.wait_idle()
    assert w.status.value.count("fp32") >= 1
    assert len(on_gui) >= 2 and not any(on_gui), on_gui
    assert not w._holds
