"""Widgets of one viewer talk to each other only, docking them imports no torch, and the one
question helper returns the button the user pressed."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_synthgen.layouts import make_layout
from napari_synthgen.widgets._bus import bus_for

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def test_two_viewers_never_cross_talk(make_napari_viewer, qtbot, tiny_unet: Path) -> None:
    a, b = make_napari_viewer(), make_napari_viewer()
    synth_a, curate_a = _dock(a, "Synthesize"), _dock(a, "Curate")
    curate_b, editor_b = _dock(b, "Curate"), _dock(b, "Mask editor")
    synth_a.set_model(tiny_unet)
    qtbot.waitUntil(lambda: synth_a.model is not None
                    and str(synth_a.model.info.path) == str(tiny_unet), timeout=20_000)
    synth_a.wait_idle()
    # the model in use is viewer a's news only
    assert bus_for(a).current_model().path == str(tiny_unet)
    assert bus_for(b).current_model() is None and editor_b.fill_note.value == ""
    assert curate_a.bus is bus_for(a) and curate_b.bus is bus_for(b)
    # a's synthesized candidates go to a's queue only
    layer = a.add_labels(make_layout("dense", (64, 64), seed=1), name="m")
    synth_a.mask_layer.value = layer
    synth_a.synthesize()
    synth_a.wait_idle()
    qtbot.waitUntil(lambda: len(curate_a.queue) == 1, timeout=20_000)
    assert curate_b.queue == []
    # a checkpoint handed to b's synthesis (by b's Train widget) does not reach a's
    bus_for(b).use_model.emit("demo")
    assert not synth_a.busy and str(synth_a.model.info.path) == str(tiny_unet)


def test_docking_a_widget_imports_no_torch() -> None:
    """Importing torch takes seconds: the GUI thread never does it to dock a widget (a model
    load, a synthesis, a generated folder's log or a training run import it in a worker)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from napari_synthgen.widgets import curate, mask_editor, synthesize, train\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.real_questions
def test_ask_returns_the_button_the_user_pressed(qtbot) -> None:
    """The one question helper the widgets use (and tests replace): a real message box."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    from napari_synthgen.widgets._common import ask

    def boxes() -> list[QMessageBox]:
        return [w for w in QApplication.topLevelWidgets()
                if isinstance(w, QMessageBox) and w.isVisible()]

    def press(label: str) -> None:
        for box in boxes():
            next(b for b in box.buttons() if b.text() == label).click()

    def give_up() -> None:  # never hang the suite: an unanswered box is closed (None)
        for box in boxes():
            box.reject()

    QTimer.singleShot(200, lambda: press("New folder"))
    QTimer.singleShot(10_000, give_up)
    assert ask(None, "The folder holds a run", "text",
               ("Resume", "New folder", "Cancel")) == "New folder"
    from qtpy.QtCore import Qt

    QTimer.singleShot(200, lambda: [qtbot.keyClick(box, Qt.Key.Key_Escape) for box in boxes()])
    QTimer.singleShot(10_000, give_up)
    assert ask(None, "Replace?", "text", ("Cancel", "Replace")) == "Cancel"  # Escape cancels
