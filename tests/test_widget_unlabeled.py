"""Unlabelled images in the widgets: the Train dock's folders and shares, and the Synthesize
dock's Guidance, shown for a model that learned the null condition and used by its runs.
Real viewer, real manifest, tiny real diffusion U-Nets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen.layouts import make_layout

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _tiny(path: Path, null_condition: bool) -> Path:
    import torch

    from napari_synthgen.families.diffusion.files import save_diffusion
    from napari_synthgen.families.diffusion.networks import build_unet, make_spec
    from napari_synthgen.widgets._common import keep_triton_out

    keep_triton_out()
    torch.manual_seed(0)
    spec = make_spec("small", tile=32, block_out_channels=(8, 16), attention=(False, True),
                     attention_head_dim=8)
    return save_diffusion(path, build_unet(spec), spec,
                          {"classes": {"0": 0.1, "1": 0.6, "2": 0.3},
                           "null_condition": null_condition})


def test_guidance_is_offered_for_a_model_with_a_null_condition_and_used(
        make_napari_viewer, qtbot, tmp_path: Path) -> None:
    guided = _tiny(tmp_path / "guided.safetensors", True)
    plain = _tiny(tmp_path / "plain.safetensors", False)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")
    w.device.value, w.precision.value = "cpu", "fp32"
    w.set_model(plain)
    qtbot.waitUntil(lambda: w.model is not None and w.model.info.path == str(plain),
                    timeout=20000)
    assert "guidance" not in w.family_fields and "guidance_where" not in w.family_fields
    w.set_model(guided)
    qtbot.waitUntil(lambda: w.model is not None and w.model.info.path == str(guided),
                    timeout=20000)
    field = w.family_fields["guidance"]
    assert field.value == 3.0 and field.label == "Guidance"  # the null-trained default
    field.value = 2.5
    where = w.family_fields["guidance_where"]
    assert where.value == "labelled" and list(where.choices) == ["everywhere", "labelled"]
    where.value = "everywhere"
    w.family_fields["steps"].value = 2
    w.mask_layer.value = viewer.add_labels(make_layout("dense", (32, 32), seed=3), name="m")
    w.synthesize()
    w.wait_idle()
    out = viewer.layers["m_synth"]
    assert out.metadata["params"]["guidance"] == 2.5
    assert out.metadata["params"]["guidance_where"] == "everywhere"
    assert np.asarray(out.data).dtype == np.uint8


def test_train_dock_takes_unlabelled_folders(make_napari_viewer, qtbot, tmp_path: Path,
                                             isbi_small: Path, isbi_dir: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in (20, 21, 22):
        shutil.copy(isbi_dir / "images" / f"isbi2012_train_{i:02d}.tif", raw)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    w.family.value = "diffusion"
    w.tile.value = 64
    w.unlabeled.value = str(raw)
    w.data.value = str(isbi_small)
    qtbot.waitUntil(lambda: "unlabelled" in w.data_status.value, timeout=30000)
    assert w.data_status.value.startswith("6 image/mask pairs")
    assert w.data_status.value.endswith("and 3 unlabelled images")
    w.unlabeled_share.value, w.cond_dropout.value, w.object_share.value = 0.25, 0.1, 0.35
    cfg = w.config()
    assert cfg.unlabeled == [str(raw)] and cfg.unlabeled_share == 0.25
    assert cfg.cond_dropout == 0.1 and cfg.object_share == 0.35
    # a problem with the unlabelled images shows where the data's would
    (raw / "bad.tif").write_bytes(b"not a tiff")
    w.unlabeled.value = f"{raw};{tmp_path / 'missing'}"
    qtbot.waitUntil(lambda: "missing: no such file" in w.data_status.value, timeout=30000)
    assert "bad.tif" in w.data_status.value
