"""nnU-Net export from the Curate widget: folds from the real pairs, the output folder the user
chooses, every warning shown to the user, splits put where nnU-Net reads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen import io
from napari_synthgen.layouts import make_layout
from napari_synthgen.widgets import _common
from napari_synthgen.widgets._bus import Candidate

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _curate_with_accepted(make_napari_viewer, tmp_path: Path, n: int = 3):
    """A Curate widget (through the manifest) whose export folder holds ``n`` accepted samples."""
    viewer = make_napari_viewer()
    _, curate = viewer.window.add_plugin_dock_widget(PLUGIN, "Curate")
    curate.folder.value = tmp_path / "export"
    curate.format.value = "nnU-Net v2 raw"
    rng = np.random.default_rng(0)
    curate.add_candidates([
        Candidate(rng.integers(0, 256, (64, 64), dtype=np.uint8),
                  make_layout("dense", (64, 64), seed=i), {"seed": i}, name=f"c{i}")
        for i in range(n)])
    for _ in range(n):
        assert curate.accept() is not None
    return viewer, curate


def _real_pairs(root: Path, isbi_image: np.ndarray, isbi_mask: np.ndarray, n: int) -> Path:
    for i in range(n):
        crop = np.s_[64 * i : 64 * i + 64, :64]
        io.write_image(root / "images" / f"real{i}.tif", isbi_image[crop])
        io.write_mask(root / "masks" / f"real{i}.tif", isbi_mask[crop])
    return root


def _messages(start: int) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(r.message) for r in notification_manager.records[start:]]


def _export(curate) -> None:
    assert curate.export() is not None, "the export did not start"
    curate.wait_idle(30)


def test_export_with_two_real_pairs(make_napari_viewer, tmp_path: Path,
                                    isbi_image: np.ndarray, isbi_mask: np.ndarray,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    preprocessed = tmp_path / "nnUNet_preprocessed"
    preprocessed.mkdir()
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    _viewer, curate = _curate_with_accepted(make_napari_viewer, tmp_path)
    curate.real.value = _real_pairs(tmp_path / "real", isbi_image, isbi_mask, 2)
    assert "2 real image/mask pair(s)" in curate.real_note.value
    assert curate.put_splits.enabled and curate.put_splits.value
    # inside the export folder is refused, with a message saying so
    from napari.utils.notifications import notification_manager

    n = len(notification_manager.records)
    curate.nnunet_out.value = tmp_path / "export" / "raw"
    assert curate.export() is None
    assert any("inside the export folder" in m for m in _messages(n))
    # the folder the user chose; folds follow the real pairs (2)
    curate.nnunet_out.value = tmp_path / "chosen"
    _export(curate)
    dataset = tmp_path / "chosen" / "Dataset501_SynthEM"
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 5
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert len(splits) == 2
    assert sorted(c for s in splits for c in s["val"]) == sorted(
        {c for s in splits for c in s["val"]})  # each real case validates once
    assert not (tmp_path / "export" / "nnUNet_raw").exists()
    installed = preprocessed / "Dataset501_SynthEM" / "splits_final.json"
    assert json.loads(installed.read_text()) == splits
    assert "2 fold(s)" in curate.status.value and str(installed) in curate.status.value
    # more folds than real pairs: the message names the widget's field (replacing the
    # dataset just written, which the user agrees to)
    monkeypatch.setattr(_common, "ask", lambda parent, title, text, buttons: "Replace")
    curate.folds.value = 4
    n = len(notification_manager.records)
    _export(curate)
    failed = [m for m in _messages(n) if "nnU-Net export failed" in m]
    assert failed and "Folds 2" in failed[0] and "n_folds" not in failed[0]


def test_export_without_real_data_warns_the_user(make_napari_viewer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    _viewer, curate = _curate_with_accepted(make_napari_viewer, tmp_path, n=2)
    assert not curate.put_splits.enabled and "not set" in curate.splits_note.value
    curate.nnunet_out.value = tmp_path / "raw"
    n = len(notification_manager.records)
    _export(curate)
    records = notification_manager.records[n:]
    warnings = [str(r.message) for r in records if r.severity == NotificationSeverity.WARNING]
    assert any("no real pairs" in m for m in warnings), [str(r.message) for r in records]
    assert not any("real=" in m for m in warnings)  # named as the widget's field
    dataset = tmp_path / "raw" / "Dataset501_SynthEM"
    assert len(json.loads((dataset / "splits_final.json").read_text())) == 1
    assert "1 fold(s)" in curate.status.value and "copy splits_final.json" in curate.status.value


def test_replacing_a_dataset_asks_first(make_napari_viewer, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    _viewer, curate = _curate_with_accepted(make_napari_viewer, tmp_path, n=2)
    curate.nnunet_out.value = tmp_path / "raw"
    _export(curate)  # a new dataset: nothing to ask
    dataset = tmp_path / "raw" / "Dataset501_SynthEM"
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    asked: list[tuple[str, tuple[str, ...]]] = []

    def cancel(parent, title, text, buttons):
        asked.append((text, tuple(buttons)))
        return "Cancel"

    monkeypatch.setattr(_common, "ask", cancel)
    curate.dataset_name.value = "SynthEM"
    assert curate.export() is None  # kept: nothing runs
    assert asked and str(dataset) in asked[0][0] and "Replace" in asked[0][1]
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == before
    assert "cancelled" in curate.status.value
    monkeypatch.setattr(_common, "ask", lambda parent, title, text, buttons: "Replace")
    _export(curate)
    assert "nnU-Net v2 dataset written" in curate.status.value
