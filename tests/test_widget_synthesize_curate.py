"""Synthesis and curation widgets through the real manifest in a real viewer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen import io
from napari_synthgen.layouts import make_layout

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _loaded(synth, qtbot, path: Path) -> None:
    synth.set_model(path)
    qtbot.waitUntil(lambda: synth.model is not None, timeout=20000)


def _live(make_napari_viewer, qtbot, model: Path, mask: np.ndarray):
    """A viewer with a mask layer "m" and the Synthesize widget in live preview on it."""
    viewer = make_napari_viewer()
    synth = _dock(viewer, "Synthesize")
    _loaded(synth, qtbot, model)
    layer = viewer.add_labels(mask, name="m")
    synth.mask_layer.value = layer
    synth.live.value = True
    synth.wait_idle()
    qtbot.waitUntil(lambda: "m_synth" in viewer.layers, timeout=20000)
    return viewer, synth, layer


def _key(viewer, qtbot, key: str) -> None:
    """Press a key on the canvas, as a user does."""
    from qtpy.QtCore import Qt

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, getattr(Qt.Key, f"Key_{key}"))


def test_synthesize_a_painted_mask(make_napari_viewer, qtbot, tiny_unet: Path) -> None:
    viewer = make_napari_viewer()
    synth = _dock(viewer, "Synthesize")
    _loaded(synth, qtbot, tiny_unet)
    assert "unet_128" in synth.model_info.value and "tile 128" in synth.model_info.value
    mask = viewer.add_labels(make_layout("dense", (150, 170), seed=1), name="painted",
                             scale=(4.0, 4.0), translate=(10.0, 20.0))
    synth.mask_layer.value = mask
    synth.synthesize()
    synth.wait_idle()
    out = viewer.layers["painted_synth"]
    assert out.data.shape == (150, 170) and out.data.dtype == np.uint8
    assert tuple(out.scale) == (4.0, 4.0) and tuple(out.translate) == (10.0, 20.0)
    assert out.metadata["model_sha256"] == io.sha256_file(tiny_unet)
    # a second run reuses the layer; variations become one stack
    synth.variations.value = 3
    synth.synthesize()
    synth.wait_idle()
    assert viewer.layers["painted_synth"] is out and out.data.shape == (3, 150, 170)
    assert not np.array_equal(out.data[0], out.data[1])  # variations use dropout noise
    assert len([lyr for lyr in viewer.layers if lyr.name.startswith("painted_synth")]) == 1


def test_live_preview_updates_only_touched_tiles(make_napari_viewer, qtbot,
                                                 tiny_model: Path) -> None:
    viewer, synth, mask = _live(make_napari_viewer, qtbot, tiny_model,
                                make_layout("dense", (256, 320), seed=5))
    before = viewer.layers["m_synth"].data.copy()
    mask.brush_size = 6
    mask.paint((128, 160), 2)  # a brush stroke
    synth.wait_idle()
    after = viewer.layers["m_synth"].data
    changed = np.argwhere(after != before)
    assert changed.size, "the stroke must change the preview"
    # only tiles around the stroke changed (tile 64): everything far away is byte-identical
    assert np.abs(changed - [128, 160]).max() < 64 + 16
    far = np.ones_like(before, bool)
    far[128 - 80 : 128 + 80, 160 - 80 : 160 + 80] = False
    np.testing.assert_array_equal(after[far], before[far])
    assert "tile(s) updated" in synth.status.value


def test_live_preview_never_shows_a_stale_result(make_napari_viewer, qtbot,
                                                 tiny_model: Path) -> None:
    from napari_synthgen.registry import make_synthesizer

    viewer, synth, mask = _live(make_napari_viewer, qtbot, tiny_model,
                                make_layout("sparse", (200, 200), seed=2))
    for i in range(6):  # strokes faster than the debounce and the model
        mask.paint((30 + 25 * i, 40 + 20 * i), 1 + i % 2)
    synth.wait_idle()
    final = make_synthesizer(tiny_model, device="cpu", precision=synth._synth.precision)(mask.data)
    assert np.abs(viewer.layers["m_synth"].data.astype(int) - final).max() <= 1


def test_accept_reject_undo_by_key(make_napari_viewer, qtbot, tiny_model: Path,
                                   tmp_path: Path) -> None:
    viewer = make_napari_viewer(show=True)
    synth = _dock(viewer, "Synthesize")
    curate = _dock(viewer, "Curate")
    _loaded(synth, qtbot, tiny_model)
    curate.folder.value = tmp_path / "export"
    curate.open_session()
    mask = viewer.add_labels(make_layout("dense", (96, 96), seed=1), name="mk")
    synth.mask_layer.value = mask
    synth.variations.value = 3
    synth.synthesize()
    synth.wait_idle()
    assert len(curate.queue) == 3 and "candidate" in viewer.layers
    assert "intensity mean" in curate.figures.value
    _key(viewer, qtbot, "A")  # accept the first
    _key(viewer, qtbot, "R")  # reject the second
    _key(viewer, qtbot, "A")  # accept the third
    export = tmp_path / "export"
    records = [json.loads(x) for x in (export / "manifest.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in records] == ["accept", "reject", "accept"]
    first = records[0]
    assert first["provenance"]["model_sha256"] == io.sha256_file(tiny_model)
    assert first["provenance"]["seed"] == 0 and records[2]["provenance"]["seed"] == 2
    assert first["provenance"]["source_mask"] == "layer:mk"
    img = io.read_image(export / first["files"]["image"])
    assert io.sha256_file(export / first["files"]["image"]) == first["sha256"]["image"]
    np.testing.assert_array_equal(io.read_mask(export / first["files"]["mask"]), mask.data)
    assert img.shape == (96, 96)
    assert sorted(p.name for p in (export / "images").iterdir()) == [
        f"{records[0]['id']}.tif", f"{records[2]['id']}.tif"]
    # undo: the last accepted sample goes to the trash and the undo is recorded
    _key(viewer, qtbot, "U")
    records = [json.loads(x) for x in (export / "manifest.jsonl").read_text().splitlines()]
    assert records[-1]["decision"] == "undo" and records[-1]["target"] == records[2]["id"]
    assert not (export / records[2]["files"]["image"]).exists()
    assert list((export / "trash").rglob(f"{records[2]['id']}.tif"))
    assert curate.session.counts() == {"accepted": 1, "rejected": 1}
    assert "Accept [A]" in curate.buttons["accept"].text


def test_curate_a_generated_folder_and_export_nnunet(make_napari_viewer, qtbot, tmp_path: Path,
                                                     tiny_model: Path, isbi_dir: Path) -> None:
    from napari_synthgen.generate import GenerateJob, run_generate

    masks = [io.write_mask(tmp_path / "masks_in" / f"m{i}.tif",
                           make_layout("dense", (80, 80), seed=i)) for i in range(2)]
    list(run_generate(GenerateJob(model=tiny_model, masks=masks, out=tmp_path / "gen",
                                  device="cpu")))
    viewer = make_napari_viewer()
    curate = _dock(viewer, "Curate")
    curate.folder.value = tmp_path / "export"
    curate.format.value = "nnU-Net v2 raw"
    assert curate.load_folder(tmp_path / "gen") is not None  # read in a worker
    curate.wait_idle(30)
    assert len(curate.queue) == 2
    curate.accept()
    curate.accept()
    rec = curate.session.records[0]
    assert rec["provenance"]["seed"] == 0 and rec["provenance"]["source_mask"].endswith("m0.tif")
    curate.nnunet_out.value = tmp_path / "nnUNet_raw"
    assert curate.export() is not None
    curate.wait_idle(30)
    dataset = tmp_path / "nnUNet_raw" / "Dataset501_SynthEM"
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["labels"]["boundary"] == 2


def test_errors_reach_the_user(make_napari_viewer, tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    synth = _dock(viewer, "Synthesize")
    curate = _dock(viewer, "Curate")
    n = len(notification_manager.records)
    assert synth.synthesize() is None  # no mask, no model
    assert curate.accept() is None  # nothing to accept
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's")
    curate.folder.value = foreign
    assert curate.open_session() is None
    messages = " | ".join(str(r.message) for r in notification_manager.records[n:])
    assert "no model loaded" in messages or "choose a mask layer" in messages
    assert "not a napari-synthgen export" in messages
