"""napari_synthgen.mask_stats and ``masks --like``: statistics of masks, calibrated layouts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen.cli import main
from napari_synthgen.layouts import dense_tissue, sparse_organelles
from napari_synthgen.mask_sets import derived_seed, make_like_set
from napari_synthgen.mask_stats import (
    FIT_STATS,
    MaskStats,
    calibrated_params,
    layout_params,
    measure_masks,
    predict,
)
from napari_synthgen.masks import BACKGROUND, BOUNDARY, INTERIOR, MaskError

#: statistics compared between sets, as |log(a / b)| (sizes, their spread, membranes, shapes)
COMPARED = ("count_per_mpx", "area_median", "area_spread", "length_spread", "boundary_width")


def _distance(a: MaskStats, b: MaskStats) -> float:
    """How far two sets' statistics are apart: summed |log ratio| over :data:`COMPARED`."""
    da, db = a.to_dict(), b.to_dict()
    return sum(abs(math.log(da[k] / db[k])) for k in COMPARED)


@pytest.fixture(scope="module")
def isbi3(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> Path:
    """Three ISBI masks in a plain folder (fast to measure)."""
    root = tmp_path_factory.mktemp("isbi3")
    for i in (0, 10, 20):
        name = f"isbi2012_train_{i:02d}.tif"
        shutil.copy(isbi_dir / "masks" / name, root / name)
    return root


@pytest.fixture(scope="module")
def isbi8(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> Path:
    """Eight ISBI masks in a plain folder."""
    root = tmp_path_factory.mktemp("isbi8")
    for i in range(0, 30, 4)[:8]:
        name = f"isbi2012_train_{i:02d}.tif"
        shutil.copy(isbi_dir / "masks" / name, root / name)
    return root


# ----------------------------------------------------------------------------- measuring


def test_measuring_a_layout_recovers_its_parameters() -> None:
    dense = [dense_tissue((384, 384), density=0.3, boundary_width=4, irregularity=0.7, seed=s)
             for s in (11, 12)]
    st = measure_masks(dense)
    assert st.kind == "dense" and st.class_fractions[BACKGROUND] == 0.0
    p = calibrated_params(st)
    assert 0.3 / 1.4 < p["density"] < 0.3 * 1.4
    assert abs(p["boundary_width"] - 4) <= 1
    assert abs(p["irregularity"] - 0.7) <= 0.25

    sparse = [sparse_organelles((384, 384), density=0.15, boundary_width=3, size=(15, 40),
                                seed=s) for s in (11, 12)]
    st = measure_masks(sparse)
    assert st.kind == "sparse" and abs(st.coverage - 0.15) < 0.03
    p = calibrated_params(st)
    assert 0.15 / 1.3 < p["density"] < 0.15 * 1.3
    assert abs(p["boundary_width"] - 3) <= 1
    lo, hi = p["size"]
    assert math.sqrt(15 * 40) / 1.4 < math.sqrt(lo * hi) < math.sqrt(15 * 40) * 1.4


def test_known_shapes_measure_what_they_are() -> None:
    # 2 x 3 grid of 60 x 60 squares, 4-px membranes between them, a 2-px background frame:
    # every cell (interior and its share of membrane) is 64 x 64 and none touches the edge
    m = np.full((132, 196), BOUNDARY, np.uint8)
    for y in range(2):
        for x in range(3):
            m[4 + 64 * y: 64 + 64 * y, 4 + 64 * x: 64 + 64 * x] = INTERIOR
    m[:, :2] = m[:, -2:] = m[:2] = m[-2:] = BACKGROUND
    st = measure_masks(m)
    assert st.kind == "dense" and st.n_objects == 6
    assert st.elongation == pytest.approx(1.0, abs=0.01)
    assert st.irregularity == pytest.approx(1.0, abs=0.02)
    assert st.area_median == pytest.approx(64 * 64, rel=0.01)
    assert st.area_spread == pytest.approx(0.0, abs=0.01)
    assert st.count_per_mpx == pytest.approx(6e6 / m.size)
    # sparse: 40 x 10 rods with a 2-px ring on background
    s = np.zeros((200, 200), np.uint8)
    for y in (30, 90, 150):
        s[y: y + 10, 40:80] = BOUNDARY
        s[y + 2: y + 8, 42:78] = INTERIOR
    st = measure_masks(s)
    assert st.kind == "sparse" and st.n_objects == 3
    assert st.boundary_width == pytest.approx(2.0, abs=0.3)
    assert st.elongation > 3
    json.dumps(st.to_dict())  # JSON-serialisable


def test_bad_masks_get_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MaskError, match="no masks to measure"):
        measure_masks([])
    with pytest.raises(MaskError, match="hold no objects"):
        measure_masks(np.zeros((64, 64), np.uint8))
    with pytest.raises(MaskError, match="value 7"):
        measure_masks(np.full((64, 64), 7, np.uint8))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no \.tif/\.tiff/\.png masks found"):
        make_like_set(empty, tmp_path / "out", n=1)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    tifffile.imwrite(wrong / "a.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 9)
    with pytest.raises(MaskError, match=r"a\.tif: .*outside 0\.\.2"):
        make_like_set(wrong, tmp_path / "out", n=1)
    blank = tmp_path / "blank"
    blank.mkdir()
    tifffile.imwrite(blank / "b.tif", np.zeros((64, 64), np.uint8))
    with pytest.raises(MaskError, match=r"blank: .*no objects"):
        make_like_set(blank, tmp_path / "out", n=1)
    assert not (tmp_path / "out").exists()  # nothing written
    assert main(["masks", "--like", str(blank), "--n", "1", "--out", str(tmp_path / "o")]) == 1


# ----------------------------------------------------------------------------- calibration


def test_forward_model_and_strength() -> None:
    params = {"density": 0.5, "boundary_width": 3, "irregularity": 0.5}
    pred = predict("dense", params)
    assert set(pred) == set(FIT_STATS["dense"])
    st = measure_masks([dense_tissue((512, 512), seed=s, **params) for s in (1, 2)])
    fit = st.fit_values()
    assert abs(pred["boundary_width"] - fit["boundary_width"]) < 0.6
    assert abs(pred["log_count"] - fit["log_count"]) < 0.2
    # strength 0: the calibrated parameters for every seed; 1: spread around them
    assert layout_params(st, 0.0, seed=1) == layout_params(st, 0.0, seed=2)
    wide = [layout_params(st, 1.0, seed=s) for s in range(12)]
    dens = [p["density"] for p in wide]
    base = calibrated_params(st)["density"]
    assert min(dens) < base / 1.3 and max(dens) > base * 1.3
    assert len({p["boundary_width"] for p in wide}) >= 2
    assert layout_params(st, 1.0, seed=3) == layout_params(st, 1.0, seed=3)
    with pytest.raises(ValueError, match="strength must be a number in"):
        layout_params(st, 1.5)


def test_like_isbi_is_closer_to_isbi_than_the_default_layout(isbi8: Path, tmp_path: Path) -> None:
    real = measure_masks([tifffile.imread(p) for p in sorted(isbi8.glob("*.tif"))])
    res = make_like_set(isbi8, tmp_path / "like", n=4, seed=0)
    like = measure_masks([tifffile.imread(p) for p in res.files])
    default = measure_masks([dense_tissue((512, 512), seed=derived_seed(0, i))
                             for i in range(4)])
    assert like.kind == "dense"
    assert _distance(like, real) < 0.7 * _distance(default, real)
    # the dense layouts cannot have ISBI's cell count, median area and area spread at once:
    # the calibration trades them off, each within about 30 %
    for key in ("count_per_mpx", "area_median", "area_spread", "boundary_width"):
        assert abs(math.log(getattr(like, key) / getattr(real, key))) < 0.3, key


# ----------------------------------------------------------------------------- sets and CLI


def test_like_set_same_seed_same_bytes(isbi3: Path, tmp_path: Path) -> None:
    a = make_like_set(isbi3, tmp_path / "a", n=2, seed=4, strength=0.5, shape=(128, 160))
    b = make_like_set(isbi3, tmp_path / "b", n=2, seed=4, strength=0.5, shape=(128, 160))
    c = make_like_set(isbi3, tmp_path / "c", n=1, seed=5, strength=0.5, shape=(128, 160))
    for pa, pb in zip(a.files, b.files, strict=True):
        assert pa.name == pb.name and pa.read_bytes() == pb.read_bytes()
    log_a = (tmp_path / "a" / "masks.jsonl").read_text().replace(str(tmp_path / "a"), "")
    assert log_a == (tmp_path / "b" / "masks.jsonl").read_text().replace(str(tmp_path / "b"), "")
    assert c.files[0].read_bytes() != a.files[0].read_bytes()
    assert tifffile.imread(a.files[0]).shape == (128, 160)


def test_cli_like_writes_masks_and_provenance(isbi3: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["masks", "--like", str(isbi3), "--n", "2", "--size", "96", "96", "--seed", "3",
                 "--strength", "1", "--boundary-width", "2", "--out", str(out)]) == 0
    assert "wrote 2 masks" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "masks.jsonl").read_text().splitlines()]
    assert [r["file"] for r in log] == ["like_dense_seed3_00000.tif", "like_dense_seed3_00001.tif"]
    for rec in log:
        assert rec["like"]["stats"]["kind"] == "dense"
        assert rec["like"]["stats"]["n_masks"] == 3 and rec["like"]["strength"] == 1.0
        assert rec["options"]["boundary_width"] == 2  # the flag overrides the calibration
        assert rec["like"]["given"] == ["boundary_width"]
        m = tifffile.imread(out / rec["file"])
        assert m.shape == (96, 96) and set(np.unique(m).tolist()) == {INTERIOR, BOUNDARY}
        expected = dense_tissue((96, 96), seed=rec["mask_seed"], **rec["options"])
        np.testing.assert_array_equal(m, expected)
    assert log[0]["options"]["density"] != log[1]["options"]["density"]  # strength 1 spreads
    # stacks: --depth gives (Z, H, W) files; options only for other modes are refused
    assert main(["masks", "--like", str(isbi3), "--n", "1", "--size", "64", "64", "--depth", "3",
                 "--out", str(tmp_path / "z")]) == 0
    assert tifffile.imread(tmp_path / "z" / "like_dense_seed0_00000.tif").shape == (3, 64, 64)
    assert main(["masks", "--like", str(isbi3), "--n", "1", "--grow", "2",
                 "--out", str(tmp_path / "g")]) == 2
    assert "--grow only applies with --variations-of" in capsys.readouterr().err
    assert main(["masks", "--like", str(isbi3), "--n", "1", "--blob-size", "5", "9",
                 "--out", str(tmp_path / "b")]) == 1
    assert "--blob-size applies to sparse layouts only" in capsys.readouterr().err


def test_like_sparse_source_gives_organelles_like_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for s in (1, 2):
        tifffile.imwrite(src / f"m{s}.tif", sparse_organelles(
            (256, 256), density=0.12, boundary_width=2, size=(20, 50), aspect=(0.5, 1.0), seed=s))
    real = measure_masks([tifffile.imread(p) for p in sorted(src.glob("*.tif"))])
    res = make_like_set(src, tmp_path / "like", n=2, seed=1)
    like = measure_masks([tifffile.imread(p) for p in res.files])
    default = measure_masks([sparse_organelles((256, 256), seed=derived_seed(1, i))
                             for i in range(2)])
    assert like.kind == "sparse" and res.files[0].name.startswith("like_sparse_")
    assert abs(math.log(like.coverage / real.coverage)) < 0.3
    assert abs(like.elongation - real.elongation) < abs(default.elongation - real.elongation)
    assert _distance(like, real) < 0.6 * _distance(default, real)
    # a stack: the organelles are the stack layout's tubes, so no aspect is passed or recorded
    make_like_set(src, tmp_path / "z", n=1, depth=2, shape=(64, 64))
    rec = json.loads((tmp_path / "z" / "masks.jsonl").read_text())
    assert rec["depth"] == 2 and "aspect" not in rec["options"] and "size" in rec["options"]


def test_sparse_aspect_is_checked_and_shapes_the_organelles() -> None:
    with pytest.raises(ValueError, match="aspect must be"):
        sparse_organelles((64, 64), aspect=(0.8, 0.5))
    round_ = measure_masks(sparse_organelles((256, 256), aspect=(0.9, 1.0), seed=3))
    long_ = measure_masks(sparse_organelles((256, 256), aspect=(0.3, 0.4), seed=3))
    assert round_.elongation < 1.3 < 2.0 < long_.elongation
