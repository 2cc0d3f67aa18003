"""Images, masks and paired folders on disk; the napari reader/writer functions; sample data."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen import io
from napari_synthgen.masks import MaskError, to_palette
from napari_synthgen.napari_io import MaskNotSavedError, get_reader, write_labels
from napari_synthgen.sample_data import CITATION, load_sample, make_sample_data


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".png"])
def test_mask_and_image_round_trip(tmp_path: Path, suffix: str, isbi_mask: np.ndarray,
                                   isbi_image: np.ndarray) -> None:
    io.write_mask(tmp_path / f"m{suffix}", isbi_mask)
    io.write_image(tmp_path / f"i{suffix}", isbi_image)
    np.testing.assert_array_equal(io.read_mask(tmp_path / f"m{suffix}"), isbi_mask)
    np.testing.assert_array_equal(io.read_image(tmp_path / f"i{suffix}"), isbi_image)


def test_palette_png_reads_as_classes(tmp_path: Path, isbi_mask: np.ndarray) -> None:
    io.write_array(tmp_path / "palette.png", to_palette(isbi_mask))
    np.testing.assert_array_equal(io.read_mask(tmp_path / "palette.png"), isbi_mask)


def test_binary_png_needs_a_source(tmp_path: Path) -> None:
    b = np.zeros((16, 16), np.uint8)
    b[4:12, 4:12] = 255
    io.write_array(tmp_path / "b.png", b)
    with pytest.raises(MaskError, match=r"b.png: .*0 and 255"):
        io.read_mask(tmp_path / "b.png")
    assert set(np.unique(io.read_mask(tmp_path / "b.png", "binary"))) == {0, 1, 2}


def test_write_mask_refuses_bad_values_and_keeps_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "m.tif"
    io.write_mask(dest, np.ones((4, 4), np.uint8))
    before = dest.read_bytes()
    with pytest.raises(MaskError, match="value 5"):
        io.write_mask(dest, np.full((4, 4), 5, np.uint8))
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]  # no temp file left


def test_atomic_write_full_disk_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "m.tif"
    io.write_mask(dest, np.ones((4, 4), np.uint8))
    before = dest.read_bytes()

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_fsync_file", full)
    with pytest.raises(io.DiskFullError, match=r"disk is full.*nothing was overwritten"):
        io.write_mask(dest, np.zeros((4, 4), np.uint8))
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]


def test_no_overwrite_refuses(tmp_path: Path) -> None:
    io.write_mask(tmp_path / "m.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(FileExistsError):
        io.write_mask(tmp_path / "m.tif", np.ones((4, 4), np.uint8), overwrite=False)


def test_corrupt_and_wrong_files(tmp_path: Path) -> None:
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(io.DamagedFileError, match=r"bad\.tif: the file is damaged"):
        io.read_array(tmp_path / "bad.tif")
    with pytest.raises(ValueError, match=r"unsupported file type \.jpg"):
        io.read_array(tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError):
        io.read_array(tmp_path / "missing.tif")


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to the first ``keep`` of its bytes (a copy interrupted half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_a_truncated_file_raises_one_clear_error_naming_it(tmp_path: Path, suffix: str) -> None:
    mask = np.random.default_rng(0).integers(0, 3, (64, 64)).astype(np.uint8)
    path = truncate(io.write_mask(tmp_path / f"cut{suffix}", mask))  # deflate TIFF as `masks`
    for read in (io.read_array, io.read_image, io.read_mask):
        with pytest.raises(io.DamagedFileError) as err:
            read(path)
        assert err.value.path == path
        msg = str(err.value)
        assert str(path) in msg and "damaged or truncated" in msg and "intact copy" in msg


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        written = io.write_mask(tmp_path / "m.tif", np.ones((4, 4), np.uint8))
        assert written.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)  # a replaced file takes the umask too
        io.write_mask(written, np.zeros((4, 4), np.uint8))
        assert written.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_saved_model_and_config_are_readable_by_others(tmp_path: Path) -> None:
    from conftest import make_tiny_model
    from napari_synthgen.registry import make_config

    old = os.umask(0o022)
    try:
        model = make_tiny_model(tmp_path / "m.safetensors")
        config = make_config(data=["x"], steps=1).save(tmp_path / "config.yaml")
    finally:
        os.umask(old)
    assert model.stat().st_mode & 0o777 == 0o644
    assert config.stat().st_mode & 0o777 == 0o644


def test_find_pairs_lists_everything_unpaired(tmp_path: Path) -> None:
    for sub, names in (("images", ["a", "b", "c"]), ("masks", ["a", "c", "d", "e"])):
        (tmp_path / sub).mkdir()
        for n in names:
            io.write_mask(tmp_path / sub / f"{n}.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(io.PairingError) as err:
        io.find_pairs(tmp_path)
    msg = str(err.value)
    assert "images/b.tif has no mask" in msg
    assert "masks/d.tif has no image" in msg and "masks/e.tif has no image" in msg
    (tmp_path / "images" / "d.png").write_bytes(b"")
    (tmp_path / "images" / "e.tif").write_bytes(b"")
    (tmp_path / "masks" / "b.tif").write_bytes(b"")
    assert [p.stem for p in io.find_pairs(tmp_path)] == ["a", "b", "c", "d", "e"]


def test_find_pairs_refuses_names_that_differ_only_by_extension(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        io.write_mask(tmp_path / sub / "a.tif", np.ones((4, 4), np.uint8))
    io.write_mask(tmp_path / "masks" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(io.PairingError, match=r"masks/ differ only by extension.*a\.png and"):
        io.find_pairs(tmp_path)


def test_find_pairs_missing_subfolder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(io.PairingError, match="missing masks/"):
        io.find_pairs(tmp_path)


def test_isbi_folder_pairs(isbi_dir: Path) -> None:
    pairs = io.find_pairs(isbi_dir)
    assert len(pairs) == 30 and pairs[0].stem == "isbi2012_train_00"


def test_reader_claims_masks_and_paired_folders(tmp_path: Path, isbi_dir: Path,
                                                isbi_mask: np.ndarray) -> None:
    io.write_mask(tmp_path / "m.tif", isbi_mask)
    reader = get_reader(str(tmp_path / "m.tif"))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(tmp_path / "m.tif"))
    assert kind == "labels" and data.dtype == np.uint8 and kwargs["opacity"] == 1.0
    assert kwargs["colormap"][1] == (0.0, 1.0, 0.0, 1.0)
    assert kwargs["colormap"][2] == (1.0, 0.0, 0.0, 1.0)
    # an EM image is not claimed (napari's own reader opens it)
    assert get_reader(str(isbi_dir / "images" / "isbi2012_train_00.tif")) is None
    layers = get_reader(str(isbi_dir))(str(isbi_dir))
    assert [k for _, _, k in layers] == ["image", "labels"]
    assert layers[0][0].shape == (30, 512, 512) and layers[1][0].shape == (30, 512, 512)
    assert get_reader(str(tmp_path)) is None  # a plain folder is not a paired folder


def test_writer_refuses_values_above_two(tmp_path: Path) -> None:
    bad = np.zeros((8, 8), np.int32)
    bad[2, 3] = 4
    with pytest.raises(MaskNotSavedError, match=r"not saved: .*value 4 at row 2, column 3"):
        write_labels(str(tmp_path / "x.tif"), bad, {})
    assert not any(tmp_path.iterdir())
    good = np.ones((8, 8), np.int32)
    [path] = write_labels(str(tmp_path / "x.tif"), good, {})
    assert io.read_array(path).dtype == np.uint8


def test_sample_data_is_real_em_with_mask() -> None:
    image, mask = load_sample()
    assert image.shape == mask.shape == (512, 512) and image.dtype == np.uint8
    assert set(np.unique(mask)) == {1, 2} and image.std() > 20
    layers = make_sample_data()
    assert [k for _, _, k in layers] == ["image", "labels"]
    assert CITATION in layers[0][1]["metadata"]["citation"]


def test_atomic_path_cleans_up_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), io.atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- stacks, spacing


@pytest.mark.parametrize("depth", [3, 4])
def test_a_narrow_mask_stack_round_trips_as_a_stack(tmp_path: Path, depth: int) -> None:
    import tifffile

    stack = np.random.default_rng(depth).integers(0, 3, (depth, 20, 24), dtype=np.uint8)
    io.write_mask(tmp_path / "m.tif", stack)
    back = io.read_mask(tmp_path / "m.tif")
    assert back.shape == (depth, 20, 24)
    np.testing.assert_array_equal(back, stack)
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:  # an ImageJ hyperstack, grey, ZYX
        assert tif.is_imagej and tif.imagej_metadata["slices"] == depth
        assert tif.series[0].axes == "ZYX"
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    assert get_reader(str(tmp_path / "m.tif"))(str(tmp_path / "m.tif"))[0][0].shape == stack.shape


def test_an_old_planar_rgb_stack_file_reads_as_a_mask_stack(tmp_path: Path) -> None:
    import tifffile

    stack = np.random.default_rng(0).integers(0, 3, (3, 20, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "old.tif", stack, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(io.read_mask(tmp_path / "old.tif"), stack)
    narrow = np.random.default_rng(1).integers(0, 3, (6, 20, 3), dtype=np.uint8)
    io.write_mask(tmp_path / "narrow.tif", narrow)  # (Z, H, 3): last axis 3, still no colour
    np.testing.assert_array_equal(io.read_mask(tmp_path / "narrow.tif"), narrow)


def test_spacing_round_trips_and_absent_spacing_is_none(tmp_path: Path) -> None:
    stack = np.ones((5, 16, 16), np.uint8)
    io.write_mask(tmp_path / "s.tif", stack, spacing=(45.0, 4.6, 4.6))
    assert io.read_spacing(tmp_path / "s.tif") == (45.0, 4.6, 4.6)
    io.write_image(tmp_path / "i.tif", np.zeros((5, 16, 16), np.uint16), spacing=(50, 4, 4))
    assert io.read_spacing(tmp_path / "i.tif") == (50.0, 4.0, 4.0)
    assert io.read_image(tmp_path / "i.tif").shape == (5, 16, 16)
    io.write_mask(tmp_path / "flat.tif", stack[0], spacing=(50, 4, 4))
    assert io.read_spacing(tmp_path / "flat.tif") == (50.0, 4.0, 4.0)
    assert io.read_mask(tmp_path / "flat.tif").shape == (16, 16)
    io.write_mask(tmp_path / "none.tif", stack)
    io.write_mask(tmp_path / "none.png", stack[0])
    assert io.read_spacing(tmp_path / "none.tif") is None
    assert io.read_spacing(tmp_path / "none.png") is None
    img, msk = io.write_pair(tmp_path / "p" / "i.tif", stack * 100, tmp_path / "p" / "m.tif",
                             stack, spacing=(30, 2, 2))
    assert io.read_spacing(img) == io.read_spacing(msk) == (30.0, 2.0, 2.0)
    with pytest.raises(ValueError, match=r"spacing must be three positive numbers"):
        io.write_mask(tmp_path / "bad.tif", stack, spacing=(0, 4, 4))


def test_fiji_micron_spacing_is_read_in_nm(tmp_path: Path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "fiji.tif", np.zeros((4, 8, 8), np.uint8), imagej=True,
                     resolution=(1 / 0.004, 1 / 0.004),
                     metadata={"axes": "ZYX", "spacing": 0.05, "unit": "micron"})
    assert io.read_spacing(tmp_path / "fiji.tif") == (50.0, 4.0, 4.0)


def test_rgb_images_still_read_as_rgb_and_2d_writes_are_unchanged(tmp_path: Path,
                                                                 isbi_mask: np.ndarray) -> None:
    import tifffile

    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[..., 0] = 90
    io.write_image(tmp_path / "rgb.tif", rgb)
    assert io.read_image(tmp_path / "rgb.tif").shape == (20, 24)  # RGB -> grey, not a stack
    io.write_array(tmp_path / "pal.tif", to_palette(isbi_mask))  # a palette TIFF is colour
    np.testing.assert_array_equal(io.read_mask(tmp_path / "pal.tif"), isbi_mask)
    io.write_mask(tmp_path / "m.tif", isbi_mask)  # 2-D without spacing: the bytes of before
    tifffile.imwrite(tmp_path / "before.tif", isbi_mask, compression="zlib")
    assert (tmp_path / "m.tif").read_bytes() == (tmp_path / "before.tif").read_bytes()
    with pytest.raises(ValueError, match=r"PNG holds one 2-D slice"):
        io.write_mask(tmp_path / "s.png", np.ones((3, 16, 16), np.uint8))
