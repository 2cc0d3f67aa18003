"""The Check utility widget through the real manifest: the same check as `evaluate`, in a
worker with a cancelable progress, its figure and verdict shown in the dock."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_synthgen.cli import main

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _pairs(root: Path, isbi_dir: Path, indices: range, *, blur: float = 0.0) -> Path:
    """256-px ISBI crops as a paired folder (blurred: a stand-in synthetic set)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in indices:
        name = f"isbi2012_train_{i:02d}.tif"
        img = tifffile.imread(isbi_dir / "images" / name)[:256, :256]
        if blur:
            img = ndi.gaussian_filter(img.astype(np.float64), blur).round().astype(np.uint8)
        tifffile.imwrite(root / "images" / name, img)
        tifffile.imwrite(root / "masks" / name,
                         tifffile.imread(isbi_dir / "masks" / name)[:256, :256])
    return root


@pytest.fixture
def folders(tmp_path: Path, isbi_dir: Path) -> dict[str, Path]:
    return {"real": _pairs(tmp_path / "real", isbi_dir, range(3)),
            "synthetic": _pairs(tmp_path / "syn", isbi_dir, range(10, 13), blur=1.0),
            "test": _pairs(tmp_path / "test", isbi_dir, range(27, 29))}


def _dock(viewer, folders: dict[str, Path]):
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Check utility")
    w.real.value, w.synthetic.value = folders["real"], folders["synthetic"]
    w.test.value = folders["test"]
    w.steps.value, w.seeds.value, w.batch.value = 3, 1, 2
    return w


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_check_shows_what_evaluate_finds(make_napari_viewer, qtbot, tmp_path: Path,
                                         folders: dict[str, Path]) -> None:
    viewer = make_napari_viewer()
    w = _dock(viewer, folders)
    w.sizes.value = "1,3"
    job = w.run()
    assert job is not None and not w.run_button.enabled
    w.wait_idle(300)
    out = tmp_path / "syn_evaluation"  # beside the synthetic folder by default
    assert w.result is not None and w.status.value.startswith("Done")
    assert w.run_button.enabled and not w.stop_button.enabled
    # the dock shows the study's arms per size and its verdicts, and the figure
    assert "real+synthetic (3 real)" in w.summary.value
    assert "3 real pairs, real + synthetic minus real only" in w.summary.value
    assert not w.figure.pixmap().isNull() and (out / "evaluation_sizes.png").is_file()
    # and, under it, the real-only arm's validation curves: was the budget long enough?
    assert not w.curves.pixmap().isNull() and (out / "evaluation_curves.png").is_file()
    # the same function as the command line: the same figures for the same settings
    cli_out = tmp_path / "cli"
    assert main(["evaluate", "--real", str(folders["real"]), "--synthetic",
                 str(folders["synthetic"]), "--test", str(folders["test"]), "--steps", "3",
                 "--seeds", "1", "--batch-size", "2", "--real-sizes", "1,3",
                 "--out", str(cli_out)]) == 0
    rows = _rows(out / "evaluation_sizes.csv")
    assert rows == _rows(cli_out / "evaluation_sizes.csv")
    mixed = next(r for r in rows if r["arm"] == "real+synthetic" and r["n_real"] == "3")
    assert f"{float(mixed['diff_boundary_f1']):+.3f} [" in w.summary.value  # what the dock says
    # ISBI masks have no class 0, so the objects as outlined have no Dice: said, not "+nan"
    assert "objects Dice n/a" in w.summary.value and "nan" not in w.summary.value


def test_the_loss_chosen_in_the_dock_trains_the_segmenters(make_napari_viewer, tmp_path: Path,
                                                           folders: dict[str, Path]) -> None:
    viewer = make_napari_viewer()
    w = _dock(viewer, folders)
    assert w.loss.value == "weighted_ce"  # the command line's default
    w.loss.value, w.steps.value, w.out.value = "dice_ce", 2, tmp_path / "dice"
    assert w.run() is not None
    w.wait_idle(300)
    assert w.status.value.startswith("Done")
    settings = json.loads((tmp_path / "dice" / "evaluate_settings.json").read_text())
    assert settings["loss"] == "dice_ce"
    run = json.loads((tmp_path / "dice" / "runs" / "real_seed0.json").read_text())
    assert run["class_weights"] == [1.0, 1.0, 1.0]


def test_stop_keeps_the_finished_runs_and_the_next_check_continues(
        make_napari_viewer, qtbot, tmp_path: Path, folders: dict[str, Path]) -> None:
    viewer = make_napari_viewer()
    w = _dock(viewer, folders)
    w.steps.value = 100_000
    w.sizes.value = ""
    w.run()
    qtbot.waitUntil(lambda: w.status.value.startswith("real seed 0"), timeout=60_000)
    w.stop()
    w.wait_idle(60)  # ends at the next training step, not after 100 000
    assert w.result is None and w.run_button.enabled and "Stopped" in w.status.value
    # a wrong size is refused before anything runs, naming the field
    w.sizes.value = "0"
    assert w.run() is None
    assert "Real sizes" in w.status.value and w.run_button.enabled


def test_an_incomplete_form_says_what_is_missing(make_napari_viewer, qtbot,
                                                 folders: dict[str, Path]) -> None:
    viewer = make_napari_viewer()
    w = _dock(viewer, folders)
    w.test.line_edit.value = ""  # the user cleared the field
    assert w.run() is None
    assert "choose the test pairs folder" in w.status.value
    assert not w.busy
    # what the core refuses is shown in the dock: a test slice that is also a training slice
    w.test.value = folders["real"]
    assert w.run() is not None
    w.wait_idle(60)
    assert w.result is None and w.run_button.enabled
    assert "the test set must hold only images no arm trains on" in w.status.value


def test_the_dock_says_which_class_the_synthetic_pairs_draw_unlike_real(
        make_napari_viewer, tmp_path: Path, isbi_dir: Path, folders: dict[str, Path]) -> None:
    """Synthetic stand-in with inverted grey levels (bright membranes): the real-only
    segmenter finds almost none of their membranes, and the dock says so and what to do."""
    inverted = _pairs(tmp_path / "inverted", isbi_dir, range(10, 13))
    for f in (inverted / "images").iterdir():
        tifffile.imwrite(f, 255 - tifffile.imread(f))
    viewer = make_napari_viewer()
    w = _dock(viewer, {**folders, "synthetic": inverted})
    w.sizes.value, w.steps.value, w.batch.value = "", 30, 4
    assert w.run() is not None
    w.wait_idle(300)
    assert w.status.value.startswith("Done")
    assert "boundary: found" in w.summary.value and "unlike the real images" in w.summary.value
    assert w.curves.pixmap().isNull()  # no study, no validation curves


@pytest.mark.parametrize(("choice", "setting", "value"), [
    ("class 0", "synthetic_ignore", [0]),
    ("objects off the mask", "synthetic_ignore_off_mask", True)])
def test_what_the_dock_leaves_out_of_the_synthetic_pairs(
        make_napari_viewer, tmp_path: Path, folders: dict[str, Path], choice: str,
        setting: str, value: object) -> None:
    viewer = make_napari_viewer()
    w = _dock(viewer, folders)
    assert w.leave_out.value == "nothing"  # the command line's default
    w.leave_out.value, w.steps.value, w.out.value = choice, 2, tmp_path / "out"
    assert w.run() is not None
    w.wait_idle(300)
    assert w.status.value.startswith("Done")
    settings = json.loads((tmp_path / "out" / "evaluate_settings.json").read_text())
    assert settings[setting] == value
