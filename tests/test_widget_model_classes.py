"""Classes a model knows, as the widgets show them: the Synthesize widget warns once about a
class the model never saw (and says when that is unknown), the mask editor starts new masks with
a class the model knows, and the Synthesize widget restores the user's last model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen.layouts import make_layout
from napari_synthgen.masks import BACKGROUND, INTERIOR, class_record

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _use(w, qtbot, model: str | Path) -> None:
    w.set_model(model)
    qtbot.waitUntil(lambda: w.model is not None and not w.busy, timeout=20000)


def _notes(start: int, severity: str) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(r.message) for r in notification_manager.records[start:]
            if str(r.severity).lower().endswith(severity)]


def _n() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def _model_with_classes(path: Path, fractions: list[float]) -> Path:
    """A tiny real generator whose metadata records the classes it was trained on."""
    import torch

    from napari_synthgen.families.pix2pix.files import save_model
    from napari_synthgen.families.pix2pix.networks import GeneratorSpec, build_generator

    torch.manual_seed(0)
    spec = GeneratorSpec(netG="resnet_6blocks", input_nc=3, output_nc=1, ngf=4, norm="instance")
    return save_model(path, build_generator(spec), spec, encoding="rgb", tile=64,
                      metadata={"classes": class_record(fractions)})


def test_unseen_class_warning_and_new_mask_fill(make_napari_viewer, qtbot, tmp_path: Path,
                                                reference_fixtures: Path) -> None:
    model = _model_with_classes(tmp_path / "no_background.safetensors", [0.0, 0.75, 0.25])
    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    w = _dock(viewer, "Synthesize")
    _use(w, qtbot, model)
    assert "interior 75%" in w.model_info.value and "boundary 25%" in w.model_info.value
    # the mask editor heard which classes the model knows: new masks start as interior
    assert editor.fill.value == "interior" and "no_background" in editor.fill_note.value
    editor.new_height.value, editor.new_width.value = 64, 80
    new = editor.new_mask()
    assert (new.data == INTERIOR).all()
    start = _n()
    w.mask_layer.value = new
    w.synthesize()
    w.wait_idle()
    assert not _notes(start, "warning")  # only classes the model knows
    # a mask with background (organelles on background): warned once, plainly
    organelles = viewer.add_labels(make_layout("sparse", (96, 96), seed=1), name="organelles")
    assert (organelles.data == BACKGROUND).any()
    w.mask_layer.value = organelles
    w.synthesize()
    w.wait_idle()
    w.live.value = True  # the live preview meets the same class: no second warning
    w.wait_idle()
    w.synthesize()
    w.wait_idle()
    warnings = [m for m in _notes(start, "warning") if "never saw" in m]
    assert len(warnings) == 1, warnings
    assert "background (0)" in warnings[0] and "no_background.safetensors" in warnings[0]
    assert not _notes(start, "error")
    # a reference checkpoint records no classes: said once, and new masks start as background
    w.live.value = False
    ref = reference_fixtures / "unet256_batch_ngf8" / "latest_net_G.pth"
    start = _n()
    _use(w, qtbot, ref)
    _use(w, qtbot, model)
    _use(w, qtbot, ref)
    unknown = [m for m in _notes(start, "info") if "no record of the classes" in m]
    assert len(unknown) == 1 and "latest_net_G.pth" in unknown[0]
    assert "unknown" in w.model_info.value
    assert editor.fill.value == "background"
    w.synthesize()
    w.wait_idle()
    assert not [m for m in _notes(start, "warning") if "never saw" in m]
    # back to the model without background: interior again
    _use(w, qtbot, model)
    assert editor.fill.value == "interior"
    # the demo model, typed by name, saw background (unlabelled cells, --unlabel-fraction)
    w.model_path.value = "demo"
    qtbot.waitUntil(lambda: w.model is not None and not w.busy
                    and Path(w.model.info.path).name == "isbi2012_unet256_ngf16.safetensors",
                    timeout=20000)
    assert "background" in w.model_info.value and "background 0%" not in w.model_info.value
    assert editor.fill.value == "background"
    assert (editor.new_mask().data == BACKGROUND).all()
    assert not _notes(start, "error")


def test_synthesize_restores_the_last_model(make_napari_viewer, qtbot, tmp_path: Path,
                                            tiny_model: Path) -> None:
    from napari_synthgen.sample_data import demo_model_path

    first = make_napari_viewer()
    w = _dock(first, "Synthesize")
    qtbot.waitUntil(lambda: w.model is not None, timeout=20000)
    assert Path(w.model.info.path) == demo_model_path()  # nothing used before: the demo model
    mine = Path(shutil.copy(tiny_model, tmp_path / "mine.safetensors"))
    _use(w, qtbot, mine)
    again = _dock(make_napari_viewer(), "Synthesize")
    qtbot.waitUntil(lambda: again.model is not None, timeout=20000)
    assert again.model.info.path == str(mine)  # the last model used
    mine.unlink()  # gone since: the demo model again
    third = _dock(make_napari_viewer(), "Synthesize")
    qtbot.waitUntil(lambda: third.model is not None, timeout=20000)
    assert Path(third.model.info.path) == demo_model_path()
    from napari_synthgen.sample_data import BUNDLED_MODELS

    recent = [p for p in third.recent.choices[1:] if p not in BUNDLED_MODELS]  # names, not paths
    assert np.all([Path(p).exists() for p in recent])
