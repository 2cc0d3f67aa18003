"""(Z, H, W) mask stacks continuous through z: layout_stack, vary_stack, stack_change, and
``napari-synthgen masks --depth``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_synthgen import io
from napari_synthgen.cli import main
from napari_synthgen.layout_stacks import DEFAULT_DRIFT, layout_stack, stack_change, vary_stack
from napari_synthgen.layouts import dense_tissue, variation
from napari_synthgen.mask_sets import derived_seed
from napari_synthgen.masks import BACKGROUND, BOUNDARY, INTERIOR, MaskError, validate_mask


@pytest.fixture(scope="module")
def dense() -> np.ndarray:
    return layout_stack("dense", (8, 192, 192), seed=3)


@pytest.fixture(scope="module")
def sparse() -> np.ndarray:
    return layout_stack("sparse", (10, 192, 192), seed=3)


def _valid_slice(sl: np.ndarray, *, dense: bool = False) -> None:
    """A valid 2-D mask whose interiors are closed: no interior pixel touches background; in
    dense tissue 8-connected labelling finds no fewer cells than 4-connected (no leaks)."""
    validate_mask(sl)
    assert not (ndi.binary_dilation(sl == BACKGROUND) & (sl == INTERIOR)).any()
    if dense:
        assert (ndi.label(sl == INTERIOR)[1]
                == ndi.label(sl == INTERIOR, structure=np.ones((3, 3)))[1])


def test_dense_stacks_are_continuous_like_real_sections(dense: np.ndarray) -> None:
    assert dense.shape == (8, 192, 192) and dense.dtype == np.uint8
    change = stack_change(dense)
    # real sections: 0.21 (VNC) and 0.28 (ISBI); slices drawn independently change more
    independent = stack_change(dense_tissue((8, 192, 192), seed=3))
    assert 0.1 < change < 0.3
    assert change < 0.9 * independent
    assert stack_change(layout_stack("dense", (4, 96, 96), drift=0.0, seed=1)) == 0.0
    slow = stack_change(layout_stack("dense", (6, 128, 128), drift=0.05, seed=1))
    fast = stack_change(layout_stack("dense", (6, 128, 128), drift=0.5, seed=1))
    assert slow < fast
    for sl in dense:
        _valid_slice(sl, dense=True)
        assert set(np.unique(sl)) == {INTERIOR, BOUNDARY}  # dense tissue: no background


def test_same_seed_same_bytes_other_seed_other_stack() -> None:
    a = layout_stack("dense", (4, 80, 96), seed=11)
    assert layout_stack("dense", (4, 80, 96), seed=11).tobytes() == a.tobytes()
    assert not np.array_equal(layout_stack("dense", (4, 80, 96), seed=12), a)
    b = layout_stack("sparse", (4, 80, 96), seed=11)
    assert layout_stack("sparse", (4, 80, 96), seed=11).tobytes() == b.tobytes()


def test_cells_end_and_appear_through_z() -> None:
    stack = layout_stack("dense", (24, 128, 128), drift=0.1, seed=5)
    first = ndi.label(stack[0] == INTERIOR)[1]
    last = ndi.label(stack[-1] == INTERIOR)[1]
    counts = [ndi.label(s == INTERIOR)[1] for s in stack]
    assert max(counts) - min(counts) >= 2  # the cell count changes along z
    assert abs(last - first) < 0.5 * first  # ... without running away
    # after 23 slices the stack has moved on: more change than between neighbours
    assert np.mean(stack[0] != stack[-1]) > 1.2 * stack_change(stack)


def test_sparse_organelles_are_tubes_through_several_slices(sparse: np.ndarray) -> None:
    for sl in sparse:
        _valid_slice(sl)
    fraction = np.mean(sparse != BACKGROUND)
    assert 0.15 < fraction < 0.45  # density 0.3 by default
    # follow each object of the middle slice: most overlap an object in the next slices
    lab, n = ndi.label(sparse[5] == INTERIOR)
    runs = []
    for i in range(1, n + 1):
        obj = lab == i
        run = 0
        for z in range(6, 10):
            if not (sparse[z][obj] == INTERIOR).any():
                break
            run += 1
        runs.append(run)
    assert np.mean(np.array(runs) >= 2) > 0.6  # most continue at least two slices on
    assert 0.3 < stack_change(sparse) / fraction < 0.7  # VNC mitochondria: 0.48


def test_vary_stack_stays_continuous_and_closed(dense: np.ndarray) -> None:
    flat = np.repeat(dense[:1], 6, axis=0)  # one slice six times: no change in z at all
    varied = vary_stack(flat, strength=0.8, grow=1, coverage=0.5, seed=2)
    per_slice = variation(flat, strength=0.8, seed=2)  # 2-D variations, slice by slice
    assert not np.array_equal(varied[0], flat[0])
    assert stack_change(varied) < 0.5 * stack_change(per_slice)
    assert stack_change(varied) < 0.1
    for sl in varied:  # (a warp may split a cell into pieces touching diagonally)
        _valid_slice(sl)
        assert not (sl == BACKGROUND).any()
    again = vary_stack(flat, strength=0.8, grow=1, coverage=0.5, seed=2)
    assert again.tobytes() == varied.tobytes()
    # slice 0 is the 2-D variation of slice 0
    np.testing.assert_array_equal(vary_stack(dense, seed=9)[0], variation(dense[0], seed=9))
    real_like = vary_stack(dense, seed=4)
    assert stack_change(real_like) < stack_change(dense) + 0.05


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"drift must be a number in \[0, 1\]"):
        layout_stack("dense", (3, 64, 64), drift=2.0)
    with pytest.raises(ValueError, match=r"shape must be \(Z, H, W\)"):
        layout_stack("dense", (64, 64))
    with pytest.raises(ValueError, match="size applies to sparse"):
        layout_stack("dense", (3, 64, 64), size=(5, 10))
    with pytest.raises(ValueError, match="unknown layout kind"):
        layout_stack("blobs", (3, 64, 64))
    with pytest.raises(MaskError, match=r"\(Z, H, W\) stack"):
        vary_stack(np.ones((32, 32), np.uint8))
    with pytest.raises(MaskError, match="value 7"):
        stack_change(np.full((2, 4, 4), 7, np.uint8))


def test_masks_depth_writes_stacks_read_back_as_stacks(tmp_path: Path, capsys) -> None:
    assert main(["masks", "--layout", "dense", "--n", "2", "--size", "48", "64", "--depth", "5",
                 "--seed", "3", "--out", str(tmp_path / "d")]) == 0
    assert main(["masks", "--layout", "sparse", "--n", "1", "--size", "64", "64", "--depth", "5",
                 "--drift", "0.1", "--out", str(tmp_path / "s")]) == 0
    dense_files = sorted((tmp_path / "d").glob("*.tif"))
    assert len(dense_files) == 2
    for f in dense_files:
        m = io.read_mask(f)
        assert m.shape == (5, 48, 64) and set(np.unique(m)) == {INTERIOR, BOUNDARY}
        with tifffile.TiffFile(f) as tif:
            assert tif.is_imagej and tif.series[0].axes == "ZYX"
    np.testing.assert_array_equal(
        io.read_mask(dense_files[1]),
        layout_stack("dense", (5, 48, 64), seed=derived_seed(3, 1)))
    sparse_mask = io.read_mask(tmp_path / "s" / "sparse_seed0_00000.tif")
    assert sparse_mask.shape == (5, 64, 64) and set(np.unique(sparse_mask)) == {0, 1, 2}
    rec = json.loads((tmp_path / "d" / "masks.jsonl").read_text().splitlines()[0])
    assert rec["depth"] == 5 and rec["drift"] == DEFAULT_DRIFT and rec["shape"] == [5, 48, 64]
    # variations of stacks are stacks, continuous like their source
    assert main(["masks", "--variations-of", str(tmp_path / "d"), "--n", "1", "--seed", "1",
                 "--out", str(tmp_path / "v")]) == 0
    varied = io.read_mask(tmp_path / "v" / f"{dense_files[0].stem}_var1_0000.tif")
    assert varied.shape == (5, 48, 64)
    assert not np.array_equal(varied, io.read_mask(dense_files[0]))
    # --drift without --depth, and --depth with --variations-of, are refused by name
    assert main(["masks", "--layout", "dense", "--n", "1", "--size", "48", "48", "--drift",
                 "0.1", "--out", str(tmp_path / "x")]) == 2
    assert "--drift applies to stacks" in capsys.readouterr().err
    assert main(["masks", "--variations-of", str(tmp_path / "d"), "--n", "1", "--depth", "3",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--depth only applies with --layout" in capsys.readouterr().err


def test_masks_depth_1_is_the_2d_output_of_before(tmp_path: Path) -> None:
    assert main(["masks", "--layout", "dense", "--n", "1", "--size", "48", "64", "--seed", "3",
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["masks", "--layout", "dense", "--n", "1", "--size", "48", "64", "--seed", "3",
                 "--depth", "1", "--out", str(tmp_path / "b")]) == 0
    tifffile.imwrite(tmp_path / "before.tif",
                     dense_tissue((48, 64), seed=derived_seed(3, 0)), compression="zlib")
    name = "dense_seed3_00000.tif"
    assert ((tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
            == (tmp_path / "before.tif").read_bytes())
    assert (tmp_path / "a" / "masks.jsonl").read_bytes() == (
        tmp_path / "b" / "masks.jsonl").read_bytes()
    assert "depth" not in (tmp_path / "a" / "masks.jsonl").read_text()


def test_a_stack_larger_than_memory_is_refused_before_any_file(tmp_path: Path, capsys) -> None:
    assert main(["masks", "--layout", "dense", "--n", "1", "--size", "4096", "4096", "--depth",
                 "10000000", "--out", str(tmp_path / "huge")]) == 1
    err = capsys.readouterr().err
    assert "mask stack needs about" in err and "use at most --depth" in err
    assert not (tmp_path / "huge").exists()
