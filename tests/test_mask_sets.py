"""``napari-synthgen masks`` and napari_synthgen.mask_sets: seeded mask sets and variation sets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen import io
from napari_synthgen.cli import main
from napari_synthgen.layouts import dense_tissue
from napari_synthgen.mask_sets import (
    derived_seed,
    make_layout_set,
    make_variation_set,
    mask_sources,
)
from napari_synthgen.masks import BACKGROUND, BOUNDARY, INTERIOR, mask_to_instances


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tif"))}


def _assert_mask_file(path: Path, shape: tuple[int, int]) -> np.ndarray:
    arr = tifffile.imread(path)
    assert arr.dtype == np.uint8 and arr.shape == shape
    assert set(np.unique(arr).tolist()) <= {0, 1, 2}
    return arr


# ----------------------------------------------------------------------------- layouts


def test_dense_and_sparse_sets_have_the_asked_size_and_classes(tmp_path: Path, capsys) -> None:
    assert main(["masks", "--layout", "dense", "--n", "3", "--size", "48", "80", "--seed", "5",
                 "--out", str(tmp_path / "d")]) == 0
    assert "wrote 3 masks" in capsys.readouterr().out
    dense = [_assert_mask_file(p, (48, 80)) for p in sorted((tmp_path / "d").glob("*.tif"))]
    assert len(dense) == 3
    for m in dense:  # tissue: cells and membranes, no background, several cells
        assert set(np.unique(m).tolist()) == {INTERIOR, BOUNDARY}
        assert mask_to_instances(m).max() >= 2

    assert main(["masks", "--layout", "sparse", "--n", "2", "--size", "64", "64", "--seed", "5",
                 "--density", "0.3", "--boundary-width", "2", "--blob-size", "8", "20",
                 "--out", str(tmp_path / "s")]) == 0
    for p in sorted((tmp_path / "s").glob("*.tif")):
        m = _assert_mask_file(p, (64, 64))
        assert set(np.unique(m).tolist()) == {BACKGROUND, INTERIOR, BOUNDARY}
        assert 0.5 < (m == BACKGROUND).mean() < 0.9  # organelles cover about 0.3

    # generate reads the folder as it is (masks.jsonl beside the masks is ignored)
    assert [p.name for p in mask_sources(tmp_path / "s")] == [
        "sparse_seed5_00000.tif", "sparse_seed5_00001.tif"]
    log = [json.loads(line) for line in (tmp_path / "s" / "masks.jsonl").read_text().splitlines()]
    assert [r["index"] for r in log] == [0, 1] and log[0]["options"]["size"] == [8, 20]


def test_layout_options_reach_the_layout(tmp_path: Path) -> None:
    thin = make_layout_set(tmp_path / "a", kind="dense", n=1, shape=(96, 96), seed=1,
                           boundary_width=1, density=0.8, irregularity=0.0)
    thick = make_layout_set(tmp_path / "b", kind="dense", n=1, shape=(96, 96), seed=1,
                            boundary_width=5, density=0.8, irregularity=0.0)
    frac = [(tifffile.imread(r.files[0]) == BOUNDARY).mean() for r in (thin, thick)]
    assert frac[1] > 2 * frac[0]
    # mask i is the layout function's output for the derived seed
    np.testing.assert_array_equal(
        tifffile.imread(thin.files[0]),
        dense_tissue((96, 96), seed=derived_seed(1, 0), boundary_width=1, density=0.8,
                     irregularity=0.0))


def test_same_seed_same_bytes_and_mask_i_does_not_depend_on_n(tmp_path: Path) -> None:
    args = ["masks", "--layout", "sparse", "--size", "40", "56", "--seed", "9"]
    assert main([*args, "--n", "4", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--n", "4", "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--n", "2", "--out", str(tmp_path / "c")]) == 0
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 4
    assert c == {k: v for k, v in a.items() if k in c} and len(c) == 2
    assert (tmp_path / "a" / "masks.jsonl").read_bytes() == (tmp_path / "b" / "masks.jsonl"
                                                             ).read_bytes()
    # different seeds, and different indices, give different masks
    assert main([*args[:-1], "10", "--n", "4", "--out", str(tmp_path / "d")]) == 0
    d = list(_files(tmp_path / "d").values())
    assert not set(d) & set(a.values())
    assert len(set(a.values())) == 4


def test_existing_files_are_kept_unless_overwrite(tmp_path: Path, capsys) -> None:
    args = ["masks", "--layout", "dense", "--n", "2", "--size", "32", "32", "--out",
            str(tmp_path)]
    assert main(args) == 0
    before = _files(tmp_path)
    assert main([*args, "--seed", "0"]) == 1
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err and "overwrite=True" not in err
    assert main([*args, "--overwrite"]) == 0
    assert _files(tmp_path) == before


# ----------------------------------------------------------------------------- variations


def test_variations_of_a_file_a_folder_and_a_paired_folder(tmp_path: Path) -> None:
    src = make_layout_set(tmp_path / "src", kind="dense", n=2, shape=(64, 64), seed=3)
    paired = tmp_path / "paired"
    for sub in ("images", "masks"):
        (paired / sub).mkdir(parents=True)
    for f in src.files:
        shutil.copy(f, paired / "masks" / f.name)
        io.write_image(paired / "images" / f.name, np.zeros((64, 64), np.uint8))

    assert main(["masks", "--variations-of", str(src.files[0]), "--n", "3", "--seed", "1",
                 "--out", str(tmp_path / "v_file")]) == 0
    assert main(["masks", "--variations-of", str(tmp_path / "src"), "--n", "2", "--seed", "1",
                 "--out", str(tmp_path / "v_dir")]) == 0
    assert main(["masks", "--variations-of", str(paired), "--n", "2", "--seed", "1",
                 "--out", str(tmp_path / "v_pair")]) == 0
    v_file, v_dir, v_pair = (_files(tmp_path / x) for x in ("v_file", "v_dir", "v_pair"))
    assert len(v_file) == 3 and len(v_dir) == 4
    assert v_dir == v_pair  # the paired folder's masks/ are the sources, images/ are ignored
    # a variation follows its source file, not the set: the file's first two equal the folder's
    assert {k: v for k, v in v_file.items() if k in v_dir} == {
        k: v for k, v in v_dir.items() if k.startswith(src.files[0].stem)}
    original = tifffile.imread(src.files[0])
    for name in v_file:
        m = _assert_mask_file(tmp_path / "v_file" / name, (64, 64))
        assert not np.array_equal(m, original)  # varied...
        assert (m == original).mean() > 0.5  # ...but still the same tissue
    assert len(set(v_file.values())) == 3


def test_variations_are_seeded(tmp_path: Path) -> None:
    src = make_layout_set(tmp_path / "src", kind="sparse", n=1, shape=(64, 64), seed=0)
    runs = [make_variation_set(src.files[0], tmp_path / f"v{i}", n=2, seed=s, grow=2)
            for i, s in enumerate((4, 4, 5))]
    a, b, c = ([p.read_bytes() for p in r.files] for r in runs)
    assert a == b and a != c
    # strength 0 and grow 0 give the sources back
    same = make_variation_set(src.files[0], tmp_path / "same", n=1, seed=4, strength=0, grow=0)
    np.testing.assert_array_equal(tifffile.imread(same.files[0]), tifffile.imread(src.files[0]))


def test_variations_read_instance_labels_when_asked(tmp_path: Path, capsys) -> None:
    labels = np.zeros((48, 48), np.uint16)
    labels[5:20, 5:20], labels[25:45, 10:40], labels[5:20, 28:44] = 3, 7, 9
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    args = ["masks", "--variations-of", str(tmp_path / "labels.tif"), "--n", "1",
            "--out", str(tmp_path / "v")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--read-as instances" in err and "coerce_mask" not in err
    assert main([*args, "--read-as", "instances", "--boundary-width", "2"]) == 0
    m = _assert_mask_file(next((tmp_path / "v").glob("*.tif")), (48, 48))
    assert set(np.unique(m).tolist()) == {BACKGROUND, INTERIOR, BOUNDARY}


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(("extra", "flag"), [
    (["--layout", "dense", "--n", "0", "--size", "32", "32"], "--n"),
    (["--layout", "dense", "--n", "2"], "--size"),
    (["--layout", "dense", "--n", "2", "--size", "8", "32"], "--size"),
    (["--layout", "dense", "--n", "2", "--size", "32", "32", "--density", "0"], "--density"),
    (["--layout", "dense", "--n", "2", "--size", "32", "32", "--density", "1.5"], "--density"),
    (["--layout", "sparse", "--n", "2", "--size", "32", "32", "--boundary-width", "0"],
     "--boundary-width"),
    (["--layout", "sparse", "--n", "2", "--size", "32", "32", "--irregularity", "0.2"],
     "--irregularity"),
    (["--layout", "dense", "--n", "2", "--size", "32", "32", "--blob-size", "5", "9"],
     "--blob-size"),
    (["--layout", "sparse", "--n", "2", "--size", "32", "32", "--blob-size", "9", "5"],
     "--blob-size"),
    (["--layout", "dense", "--n", "2", "--size", "32", "32", "--strength", "0.2"],
     "--strength"),
    (["--layout", "dense", "--n", "2", "--size", "32", "32", "--seed", "-1"], "--seed"),
    (["--layout", "round", "--n", "2", "--size", "32", "32"], "--layout"),
    (["--variations-of", "x.tif", "--n", "2", "--size", "32", "32"], "--size"),
    (["--variations-of", "x.tif", "--n", "2", "--grow", "-1"], "--grow"),
    (["--variations-of", "x.tif", "--n", "2", "--strength", "2"], "--strength"),
    (["--n", "2"], "--layout"),
    (["--layout", "dense", "--variations-of", "x.tif", "--n", "2"], "--variations-of"),
])
def test_bad_arguments_exit_2_naming_the_flag(tmp_path: Path, extra: list[str], flag: str,
                                              capsys) -> None:
    try:  # argparse exits by itself; the command's own checks return 2
        code = main(["masks", *extra, "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert flag in err, err
    assert not (tmp_path / "out").exists()


def test_command_line_shows_usage_errors_with_exit_code_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "napari_synthgen", "masks", "--layout", "dense", "--n", "2",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "napari-synthgen masks: error: --layout needs --size H W" in proc.stderr


def test_seeds_past_32_bits_and_masks_larger_than_memory_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen import limits

    with pytest.raises(limits.LimitError, match=r"seed must be in \[0, 4294967295\]"):
        make_layout_set(tmp_path / "a", kind="dense", n=1, shape=(64, 64), seed=2**32)
    monkeypatch.setattr(limits, "free_memory", lambda device=None: 8 * limits.GB)
    with pytest.raises(limits.LimitError, match=r"a 100000 x 100000 mask needs about "
                       r"[\d.]+ GB, this machine has 8.0 GB free; use at most \d+ x \d+ px"):
        make_layout_set(tmp_path / "b", kind="dense", n=1, shape=(100000, 100000))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
