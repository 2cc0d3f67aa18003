"""A (Z, Y, X) stack in the Curate widget: one queue item, shown as a stack the reviewer pages
through with napari's dims slider, scored by its stack figures, accepted whole with its
spacing, and exported to nnU-Net as a 3-D case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui
CROP = 64


def _stack(isbi_dir: Path, first: int, n: int, corner: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    sl = np.s_[corner:corner + CROP, corner:corner + CROP]
    names = [f"isbi2012_train_{i:02d}.tif" for i in range(first, first + n)]
    return (np.stack([tifffile.imread(isbi_dir / "images" / f)[sl] for f in names]),
            np.stack([tifffile.imread(isbi_dir / "masks" / f)[sl] for f in names]))


def _write(path: Path, array: np.ndarray) -> None:
    """As Fiji writes a stack: ImageJ hyperstack, 50 nm sections of 4 nm pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, imagej=True, resolution=(0.25, 0.25),
                     metadata={"spacing": 50.0, "unit": "nm", "axes": "ZYX"})


def test_a_stack_is_shown_paged_scored_accepted_and_exported_whole(
        make_napari_viewer, tmp_path: Path, isbi_dir: Path) -> None:
    generated, real = tmp_path / "gen", tmp_path / "real"
    image, mask = _stack(isbi_dir, 0, 4)
    _write(generated / "images" / "stack.tif", image)
    _write(generated / "masks" / "stack.tif", mask)
    flat, flat_mask = _stack(isbi_dir, 10, 1)
    tifffile.imwrite(generated / "images" / "slice.tif", flat[0])
    tifffile.imwrite(generated / "masks" / "slice.tif", flat_mask[0])
    real_image, real_mask = _stack(isbi_dir, 20, 3, corner=CROP)  # a real stack as reference
    _write(real / "images" / "real.tif", real_image)
    _write(real / "masks" / "real.tif", real_mask)

    viewer = make_napari_viewer()
    _, curate = viewer.window.add_plugin_dock_widget(PLUGIN, "Curate")
    curate.folder.value = tmp_path / "export"
    curate.reference_folder.value = real
    curate.load_folder(generated)
    curate.wait_idle(30)
    assert [it.name for it in curate.queue] == ["slice", "stack"]  # one item per stack
    assert "3 image(s)" in curate.reference_note.value  # the real stack's slices
    item = curate.queue[1]
    assert item.figures is not None and item.figures["n_slices"] == 4
    assert 0.0 <= item.score <= 1.0 and "z_corr_lag1" in item.figures

    curate.show_candidate(1)
    layer = viewer.layers["candidate"]
    assert layer.data.shape == (4, CROP, CROP) and viewer.layers["candidate mask"].ndim == 3
    assert viewer.dims.ndim == 3 and viewer.dims.nsteps[0] == 4  # the slider pages the stack
    assert viewer.dims.current_step[0] == item.figures["worst_slice"]
    viewer.dims.set_current_step(0, 2)  # paging: image and mask follow the slider together
    assert viewer.dims.point[0] == 2
    assert layer.get_value((2, 5, 7)) == image[2, 5, 7]
    assert viewer.layers["candidate mask"].get_value((2, 5, 7)) == mask[2, 5, 7]
    assert "stack of 4 slices" in curate.figures.value

    record = curate.accept()
    assert record is not None and record["shape"] == [4, CROP, CROP]
    assert record["spacing"] == [50, 4, 4] and record["quality"]["n_slices"] == 4
    assert record["quality"]["score"] == pytest.approx(item.score)
    stored = tifffile.imread(tmp_path / "export" / record["files"]["image"])
    assert np.array_equal(stored, image)
    # back to the 2-D item: the viewer is 2-D again
    curate.show_candidate(0)
    assert viewer.layers["candidate"].data.shape == (CROP, CROP) and viewer.dims.ndim == 2

    curate.format.value = "nnU-Net v2 raw"
    curate.nnunet_out.value = tmp_path / "nnunet"
    assert curate.export() is not None
    curate.wait_idle(30)
    dataset = tmp_path / "nnunet" / "Dataset501_SynthEM"
    assert json.loads((dataset / "imagesTr" / f"{record['id']}.json").read_text()) == {
        "spacing": [50, 4, 4]}
    assert tifffile.imread(dataset / "imagesTr" / f"{record['id']}_0000.tif").shape == (
        4, CROP, CROP)
