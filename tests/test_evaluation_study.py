"""`evaluate --real-sizes`: subsets, paired differences with intervals, curves (tiny budget)."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen import evaluation as ev
from napari_synthgen import evaluation_report as report
from napari_synthgen.quality_cli import add_evaluate_parser
from napari_synthgen.segmenter import Phase, Pool, SegmenterConfig, train_segmenter


def _write_pairs(root: Path, isbi_dir: Path, indices: range, *, corner: int = 0,
                 size: int = 96) -> Path:
    """ISBI crops (``size`` px, top-left or bottom-right ``corner``) as a paired folder."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    sl = np.s_[:size, :size] if corner == 0 else np.s_[-size:, -size:]
    for i in indices:
        name = f"isbi2012_train_{i:02d}.tif"
        tifffile.imwrite(root / "images" / name, tifffile.imread(isbi_dir / "images" / name)[sl])
        tifffile.imwrite(root / "masks" / name, tifffile.imread(isbi_dir / "masks" / name)[sl])
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> dict[str, Path]:
    """Real = slices 00-03, synthetic stand-in = 10-11, test = 27-28 (other corner)."""
    root = tmp_path_factory.mktemp("study")
    return {"real": _write_pairs(root / "real", isbi_dir, range(4)),
            "synthetic": _write_pairs(root / "syn", isbi_dir, range(10, 12)),
            "test": _write_pairs(root / "test", isbi_dir, range(27, 29), corner=1)}


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-synthgen")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _argv(folders: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--real", str(folders["real"]), "--synthetic", str(folders["synthetic"]),
            "--test", str(folders["test"]), "--steps", "4", "--seeds", "2", "--crop", "64",
            "--batch-size", "2", "--out", str(out), *extra]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_subsets_drawn_per_seed_are_reproducible_and_nested() -> None:
    for seed in range(4):
        subsets = [ev.real_subset(10, n, seed) for n in range(1, 11)]
        assert subsets == [ev.real_subset(10, n, seed) for n in range(1, 11)]  # reproducible
        for small, big in itertools.pairwise(subsets):
            assert len(big) == len(small) + 1 and set(small) < set(big)  # nested
        assert subsets[-1] == list(range(10))
    assert len({tuple(ev.real_subset(10, 3, seed)) for seed in range(6)}) > 1  # seeds differ
    # a stack is drawn whole: it is one real pair (one file)
    names = ["a", "s_z000", "s_z001", "b"]
    assert ev.real_units(names, [("s", ["s_z000", "s_z001"])]) == [[0], [1, 2], [3]]


def test_the_interval_of_known_differences() -> None:
    assert ev.paired_ci(np.full((3, 5), 0.25)) == (0.25, 0.25, 0.25)  # zero width, at it
    symmetric = np.array([[-0.2, -0.1, 0.1, 0.2], [0.1, -0.2, 0.2, -0.1]])
    mean, low, high = ev.paired_ci(symmetric)
    assert mean == pytest.approx(0.0) and low < 0 < high
    assert ev.paired_ci(symmetric) == (mean, low, high)  # seeded: same data, same interval
    shifted = ev.paired_ci(symmetric + 1.0)
    assert shifted == pytest.approx((1.0, low + 1.0, high + 1.0))
    clear = ev.paired_ci(np.array([[0.1, 0.12, 0.09], [0.11, 0.1, 0.13]]))
    assert 0.09 <= clear[1] < clear[0] < clear[2] <= 0.13  # away from 0
    assert all(np.isnan(ev.paired_ci(np.zeros((0, 0)))))
    single = ev.paired_ci(np.array([[0.3]]))  # one seed, one image: nothing to resample
    assert single[0] == 0.3 and np.isnan(single[1]) and np.isnan(single[2])
    with pytest.raises(ValueError, match="seeds, test images"):
        ev.paired_ci(np.zeros(4))


def test_differences_are_paired_by_seed_and_test_image() -> None:
    def run(arm: str, seed: int, f1: list[float]) -> dict:
        return {"arm": arm, "seed": seed, "n_real": 2,
                "images": [{"image": f"t{i}", "boundary_f1": v} for i, v in enumerate(f1)]}

    runs = [run("real", 0, [0.5, 0.6, np.nan]), run("real", 1, [0.4, 0.7, 0.2]),
            run("real+synthetic", 1, [0.5, 0.6, 0.3]), run("real+synthetic", 0, [0.6, 0.6, 0.1]),
            run("real+synthetic", 2, [0.9, 0.9, 0.9])]  # seed 2 has no partner
    d = ev.paired_differences(runs, "real+synthetic", "real", 2, "boundary_f1")
    assert d == pytest.approx(np.array([[0.1, 0.0], [0.1, -0.1]]))  # t2 undefined in seed 0


def test_watching_the_training_changes_nothing(isbi_image, isbi_mask) -> None:
    import torch

    pool = Pool.from_pairs([(isbi_image[:96, :96], isbi_mask[:96, :96])])
    cfg = SegmenterConfig(steps=4, batch_size=2, crop=32, base=4, levels=2, seed=1,
                          precision="fp32")
    seen: list[tuple[int, float]] = []

    def watch(done: int, loss: float, seg) -> None:
        seen.append((done, loss))
        seg.predict(isbi_image[:64, :64])

    a = train_segmenter([Phase(4, pool)], cfg, watch=watch, watch_every=3)
    b = train_segmenter([Phase(4, pool)], cfg)
    assert [s for s, _ in seen] == [3, 4] and all(np.isfinite(v) for _, v in seen)
    for (k, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items(),
                                strict=True):
        assert torch.equal(va, vb), k


def test_real_sizes_write_a_table_a_figure_and_curves(folders: dict[str, Path],
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    import imageio.v3 as iio

    out = tmp_path / "out"
    assert _run_cli(_argv(folders, out, "--real-sizes", "2,1", "--val-every", "2")) == 0
    printed = capsys.readouterr().out
    assert "## Against the number of real pairs" in printed and "bootstrap" in printed
    rows = _csv(out / "evaluation_sizes.csv")
    assert [(r["n_real"], r["arm"], r["n_seeds"]) for r in rows] == [
        ("1", "real", "2"), ("1", "real+synthetic", "2"), ("2", "real", "2"),
        ("2", "real+synthetic", "2"), ("0", "synthetic", "2")]
    for r in rows:
        assert 0.0 <= float(r["boundary_f1_mean"]) <= 1.0
        if r["arm"] == "real+synthetic":  # 2 seeds x 2 test images, paired
            assert r["diff_boundary_f1_pairs"] == "4"
            low, d, high = (float(r[f"diff_boundary_f1{x}"]) for x in ("_low", "", "_high"))
            assert low <= d <= high
            assert r["diff_dice_interior_pairs"] == "4" and r["diff_mean_dice_low"]
        else:
            assert r["diff_boundary_f1"] == ""
    runs = _csv(out / "evaluation_runs.csv")
    names = sorted(p.stem for p in (folders["real"] / "images").iterdir())
    for r in runs:
        if r["arm"] == "synthetic":
            assert (r["n_real"], r["real_subset"]) == ("0", "")
            continue
        expected = [names[i] for i in ev.real_subset(4, int(r["n_real"]), int(r["seed"]))]
        assert r["real_subset"].split(";") == expected
    curves = _csv(out / "evaluation_curves.csv")
    assert [(c["n_real"], c["seed"], c["step"]) for c in curves] == [
        (n, s, st) for n in "12" for s in "01" for st in "24"]
    assert all(c["val_source"].startswith("held-out real pairs") and c["val_boundary_f1"]
               and float(c["train_loss"]) > 0 for c in curves)
    md = (out / "evaluation.md").read_text()
    assert "paired difference boundary_f1 [95% CI]" in md and "second half" in md
    for png in ("evaluation_sizes.png", "evaluation_curves.png", "evaluation.png"):
        assert iio.imread(out / png).ndim == 3
    # more sizes add runs to the same folder; the finished ones are reused, to the byte
    before = (out / "runs" / "real_n1_seed0.json").read_bytes()
    stages: list[str] = []
    again = ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=4,
                        seeds=2, crop=64, batch_size=2, val_every=2, real_sizes=[1, 2, 4],
                        out=out, progress=lambda s, d, t: stages.append(s))
    assert {s for s in stages if "(saved)" not in s} == {
        f"{arm} n=4 seed {seed}" for arm in ("real", "real+synthetic") for seed in (0, 1)}
    assert (out / "runs" / "real_n1_seed0.json").read_bytes() == before
    largest = [r for r in again.runs if r["arm"] == "real" and r["n_real"] == 4]
    assert all(r["val_source"].startswith("training loss only") and
               "val_boundary_f1" not in r["curve"][-1] for r in largest)
    md = report.markdown_table(again)  # the verdict per size; none is held out at 4
    assert "Rule: still learning when a held-out figure rose" in md
    assert "- 4 real pair(s): training loss" in md and "cannot tell" in md
    assert [(r["n_real"], r["arm"]) for r in again.sizes][-3:] == [
        (4, "real"), (4, "real+synthetic"), (0, "synthetic")]
    # same inputs and seeds, a fresh folder: the same subsets, curves and figures
    fresh = ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=4,
                        seeds=2, crop=64, batch_size=2, val_every=2, real_sizes=[1],
                        arms=[ev.ARM_REAL], out=tmp_path / "fresh")

    def figures(run: dict) -> str:
        return json.dumps({k: v for k, v in run.items() if k != "seconds"}, sort_keys=True)

    assert [figures(r) for r in fresh.runs] == [
        figures(r) for r in again.runs if r["arm"] == "real" and r["n_real"] == 1]


def test_a_size_larger_than_the_real_folder_is_refused(folders: dict[str, Path],
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    out = tmp_path / "out"
    assert _run_cli(_argv(folders, out, "--real-sizes", "1,9")) == 1
    err = capsys.readouterr().err
    assert "--real-sizes 9 is more than the 4 real pair(s)" in err
    assert "use --real-sizes of at most 4" in err
    assert not out.exists()  # refused before anything was written
    assert _run_cli(_argv(folders, out, "--val-every", "2")) == 1
    assert "--val-every applies to the study only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run_cli(_argv(folders, out, "--real-sizes", "0,2"))
    assert "numbers of real pairs >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="min_score cannot be combined with real_sizes"):
        ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=1,
                    real_sizes=[1], min_score=0.5)


def test_the_study_still_refuses_a_leaked_test_image(folders: dict[str, Path],
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    leaky = tmp_path / "leaky"
    (leaky / "images").mkdir(parents=True)
    (leaky / "masks").mkdir()
    for sub in ("images", "masks"):  # a real pair outside every subset of size 1 still counts
        name = "isbi2012_train_03.tif"
        (leaky / sub / "copy.tif").write_bytes((folders["real"] / sub / name).read_bytes())
    argv = _argv(folders, tmp_path / "o", "--real-sizes", "1")
    argv[argv.index("--test") + 1] = str(leaky)
    assert _run_cli(argv) == 2
    assert "test image copy is also real/isbi2012_train_03" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_arms_runs_only_the_real_data_learning_curve(folders: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run_cli(_argv(folders, out, "--real-sizes", "1,4", "--arms", "real")) == 0
    rows = _csv(out / "evaluation_sizes.csv")
    assert [(r["n_real"], r["arm"]) for r in rows] == [("1", "real"), ("4", "real")]
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        f"real_n{n}_seed{s}.json" for n in (1, 4) for s in (0, 1)]
    capsys.readouterr()
    # the other arms added later to the same folder reuse the real-only runs, to the byte
    before = (out / "runs" / "real_n4_seed1.json").read_bytes()
    assert _run_cli(_argv(folders, out, "--real-sizes", "1,4")) == 0
    assert (out / "runs" / "real_n4_seed1.json").read_bytes() == before
    assert {r["arm"] for r in _csv(out / "evaluation_sizes.csv")} == {
        "real", "real+synthetic", "synthetic"}
    capsys.readouterr()
    # a wrong name is refused before any image is read, with the names that fit
    bad = tmp_path / "bad"
    assert _run_cli(_argv(folders, bad, "--arms", "real,mixed")) == 1
    err = capsys.readouterr().err
    assert "unknown arm(s) ['mixed']" in err and "'real+synthetic'" in err
    assert not bad.exists()
    assert _run_cli(_argv(folders, bad, "--pretrain-synthetic", "--arms",
                          "real+synthetic")) == 1
    assert "'synthetic-then-real'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run_cli(_argv(folders, bad, "--arms", ","))
    assert "expected arm names" in capsys.readouterr().err
    # a larger segmenter (--base) is another setting: not mixed into the base-16 runs
    assert _run_cli(_argv(folders, out, "--real-sizes", "1,4", "--base", "8")) == 1
    err = capsys.readouterr().err
    assert "base 16 there, 8 now" in err
    assert (out / "runs" / "real_n4_seed1.json").read_bytes() == before
