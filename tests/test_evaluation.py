"""The segmenter, the evaluation figures and `evaluate` end to end on ISBI (tiny budget)."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_synthgen import evaluation as ev
from napari_synthgen import evaluation_report as report
from napari_synthgen.masks import BOUNDARY, INTERIOR
from napari_synthgen.quality_cli import add_evaluate_parser
from napari_synthgen.segmenter import (
    IGNORE,
    Phase,
    Pool,
    SegmenterConfig,
    build_unet,
    class_weights,
    soft_dice_loss,
    train_segmenter,
)


def _write_pairs(root: Path, isbi_dir: Path, indices: range, *, corner: int = 0,
                 blur: float = 0.0, size: int = 256) -> Path:
    """ISBI crops (``size`` px, from the top-left or bottom-right ``corner``) as a paired folder."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in indices:
        name = f"isbi2012_train_{i:02d}.tif"
        img = tifffile.imread(isbi_dir / "images" / name)
        m = tifffile.imread(isbi_dir / "masks" / name)
        sl = np.s_[:size, :size] if corner == 0 else np.s_[-size:, -size:]
        img, m = img[sl], m[sl]
        if blur:
            img = ndi.gaussian_filter(img.astype(np.float64), blur).round().astype(np.uint8)
        tifffile.imwrite(root / "images" / name, img)
        tifffile.imwrite(root / "masks" / name, m)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> dict[str, Path]:
    """Real = slices 00-03, synthetic stand-in = blurred 10-13, test = 27-29 (split by image)."""
    root = tmp_path_factory.mktemp("eval")
    return {"real": _write_pairs(root / "real", isbi_dir, range(4)),
            "synthetic": _write_pairs(root / "syn", isbi_dir, range(10, 14), blur=1.0),
            "test": _write_pairs(root / "test", isbi_dir, range(27, 30), corner=1)}


def test_the_segmenter_uses_group_norm_and_is_deterministic(isbi_image, isbi_mask) -> None:
    import torch

    net = build_unet(base=8, levels=2)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    pool = Pool.from_pairs([(isbi_image[:128, :128], isbi_mask[:128, :128])])
    cfg = SegmenterConfig(steps=3, batch_size=2, crop=64, base=8, levels=2, seed=5,
                          precision="fp32")
    a = train_segmenter([Phase(3, pool)], cfg)
    b = train_segmenter([Phase(3, pool)], cfg)
    for (ka, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items(),
                                 strict=True):
        assert torch.equal(va, vb), ka
    pred = a.predict(isbi_image[:100, :90])  # not a multiple of 2**levels
    assert pred.shape == (100, 90) and pred.dtype == np.uint8 and pred.max() <= 2
    a.MAX_PIXELS = 128 * 128  # large images go in overlapping tiles: nearly the same answer
    big = a.predict(isbi_image[:300, :260])
    a.MAX_PIXELS = 10**9
    assert big.shape == (300, 260) and (big == a.predict(isbi_image[:300, :260])).mean() > 0.9
    assert a.describe()["precision"] == "fp32"


def test_ignored_classes_of_a_pool_teach_nothing(isbi_image, isbi_mask) -> None:
    """Pairs that call every cell interior background: learnt as given, the segmenter paints
    background; with class 0 ignored it never does (only the boundary taught anything). A
    batch with nothing left to learn costs no NaN."""
    image, mask = isbi_image[:128, :128], isbi_mask[:128, :128]
    wrong = np.where(mask == INTERIOR, 0, mask).astype(np.uint8)
    cfg = SegmenterConfig(steps=20, batch_size=2, crop=64, base=8, levels=2, seed=0,
                          precision="fp32")
    as_given = Pool.from_pairs([(image, wrong)])
    ignoring = Pool.from_pairs([(image, wrong)])
    ignoring.ignore = (0,)
    painted = train_segmenter([Phase(20, as_given)], cfg).predict(image)
    assert (painted == 0).mean() > 0.3
    kept_out = train_segmenter([Phase(20, ignoring)], cfg).predict(image)
    assert (kept_out == 0).mean() < 0.01
    nothing = Pool.from_pairs([(image, np.zeros_like(mask))])
    nothing.ignore = (0,)
    seg = train_segmenter([Phase(2, nothing)], cfg)
    assert all(bool(v.isfinite().all()) for v in seg.net.state_dict().values())


def test_class_weights_favour_the_thin_class_and_are_clipped(isbi_mask) -> None:
    w = class_weights([isbi_mask])
    assert w[BOUNDARY] > 1.0 > w[INTERIOR] and w[0] == 1.0
    sparse = np.zeros((100, 100), np.uint8)
    sparse[0, 0] = BOUNDARY
    sparse[1, :5] = INTERIOR
    assert class_weights([sparse]).max() == 10.0


def test_soft_dice_of_the_objects_over_the_batch() -> None:
    """0 for a confident right answer, near 1 for a confident wrong one; the background class
    is not in it, and ignored pixels count for nothing."""
    import torch

    labels = torch.tensor([[[0, 1, 1], [2, 1, 0]], [[0, 0, 2], [1, 1, 0]]])

    def confident(lab: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(lab, 3).permute(0, 3, 1, 2).float() * 30

    assert float(soft_dice_loss(confident(labels), labels)) < 1e-6
    assert float(soft_dice_loss(confident((labels + 1) % 3), labels)) > 0.99
    background_wrong = labels.clone()
    background_wrong[labels == 0] = 1  # only background pixels called objects
    assert 0.1 < float(soft_dice_loss(confident(background_wrong), labels)) < 0.9
    hidden = labels.clone()
    hidden[background_wrong != labels] = IGNORE  # the same mistakes, ignored: no cost
    assert float(soft_dice_loss(confident(background_wrong), hidden)) < 1e-6


def test_the_dice_loss_trains_without_class_weights(isbi_image, isbi_mask) -> None:
    import torch

    pool = Pool.from_pairs([(isbi_image[:128, :128], isbi_mask[:128, :128])])
    base = {"steps": 3, "batch_size": 2, "crop": 64, "base": 8, "levels": 2, "seed": 1,
            "precision": "fp32"}
    dice = train_segmenter([Phase(3, pool)], SegmenterConfig(**base, loss="dice_ce"))
    again = train_segmenter([Phase(3, pool)], SegmenterConfig(**base, loss="dice_ce"))
    weighted = train_segmenter([Phase(3, pool)], SegmenterConfig(**base))
    assert dice.describe()["class_weights"] == [1.0, 1.0, 1.0]
    assert weighted.describe()["class_weights"] != [1.0, 1.0, 1.0]
    states = [s.net.state_dict()["head.weight"] for s in (dice, again, weighted)]
    assert torch.equal(states[0], states[1]) and not torch.equal(states[0], states[2])
    with pytest.raises(ValueError, match="unknown segmenter loss 'dice'"):
        train_segmenter([Phase(1, pool)], SegmenterConfig(**base, loss="dice"))


def test_figures_of_a_perfect_and_a_shifted_prediction(isbi_mask) -> None:
    counts = ev.confusion_counts(isbi_mask, isbi_mask)
    s = ev.scores_from_counts(counts, {1, 2})
    assert s["dice_boundary"] == 1.0 and s["iou_interior"] == 1.0 and s["boundary_f1"] == 1.0
    assert np.isnan(s["dice_background"]) and s["mean_dice"] == 1.0
    shifted = np.roll(isbi_mask, 2, axis=1)  # membranes 2 px off
    near = ev.scores_from_counts(ev.confusion_counts(shifted, isbi_mask, tolerance=2), {1, 2})
    strict = ev.scores_from_counts(ev.confusion_counts(shifted, isbi_mask, tolerance=0), {1, 2})
    assert near["boundary_f1"] > 0.99 > strict["boundary_f1"]
    assert near["dice_boundary"] < 0.85
    none = ev.scores_from_counts(
        ev.confusion_counts(np.full_like(isbi_mask, INTERIOR), isbi_mask), {1, 2})
    assert none["boundary_f1"] == 0.0 and none["dice_boundary"] == 0.0


def test_objects_dice_counts_an_organelle_whole() -> None:
    """Organelle masks: a prediction that draws each object's ring a pixel wider than the
    truth loses interior Dice but outlines the objects exactly (objects Dice 1); missing an
    object costs it; without class 0 in the truth the figure is undefined."""
    from scipy import ndimage as ndi

    truth = np.zeros((64, 64), np.uint8)
    objects = np.zeros_like(truth, bool)
    objects[10:30, 10:30] = objects[40:56, 35:60] = True
    inner = ndi.binary_erosion(objects, iterations=2)
    truth[objects], truth[inner] = BOUNDARY, INTERIOR
    wide_ring = truth.copy()
    wide_ring[inner & ~ndi.binary_erosion(objects, iterations=3)] = BOUNDARY
    s = ev.scores_from_counts(ev.confusion_counts(wide_ring, truth), {0, 1, 2})
    assert s["dice_objects"] == 1.0 and s["dice_interior"] < 0.95
    one_missed = truth.copy()
    one_missed[40:56, 35:60] = 0
    assert ev.scores_from_counts(ev.confusion_counts(one_missed, truth),
                                 {0, 1, 2})["dice_objects"] < 0.8
    dense = np.where(truth == 0, INTERIOR, truth).astype(np.uint8)
    assert np.isnan(ev.scores_from_counts(ev.confusion_counts(dense, dense),
                                          {1, 2})["dice_objects"])


def test_comparison_says_when_the_spread_is_larger_than_the_difference() -> None:
    summary = {"real": {"mean_dice": (0.80, 0.05), "boundary_f1": (0.70, 0.01),
                        "dice_interior": (0.30, 0.03)},
               "synthetic": {"mean_dice": (0.78, 0.02), "boundary_f1": (0.50, 0.02),
                             "dice_interior": (0.35, 0.004)}}
    notes = ev.compare(summary, n_seeds=3)
    assert len(notes) == 3
    assert any("mean_dice" in n and "no evidence" in n for n in notes)
    assert any("boundary_f1 -0.200" in n and "larger than the spread" in n for n in notes)
    # the objects' own Dice (mitochondria on organelle masks) gets its sentence too
    assert any("dice_interior +0.050" in n and "larger than the spread" in n for n in notes)
    assert all("one seed" in n for n in ev.compare(summary, n_seeds=1))


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-synthgen")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_evaluate_runs_end_to_end_on_isbi(folders: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import imageio.v3 as iio

    out = tmp_path / "out"
    code = _run_cli(["evaluate", "--real", str(folders["real"]), "--synthetic",
                     str(folders["synthetic"]), "--test", str(folders["test"]), "--steps", "20",
                     "--seeds", "1", "--crop", "64", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| real |" in printed and "| synthetic |" in printed
    with (out / "evaluation_runs.csv").open() as fh:
        runs = list(csv.DictReader(fh))
    assert [r["arm"] for r in runs] == ["real", "real+synthetic", "synthetic"]
    for r in runs:
        assert 0.0 <= float(r["dice_interior"]) <= 1.0
        assert 0.0 <= float(r["boundary_f1"]) <= 1.0
        assert r["dice_background"] == "nan"  # ISBI has no background
    # a weighted loss predicts the thin class even after 20 steps
    assert max(float(r["boundary_f1"]) for r in runs) > 0.3
    with (out / "evaluation.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[:4] == ["arm", "n_seeds", "dice_background_mean", "dice_background_std"]
    md = (out / "evaluation.md").read_text()
    assert "one seed" in md and "boundary_f1" in md
    assert iio.imread(out / "evaluation.png").ndim == 3


def test_evaluate_with_pretraining_and_a_quality_threshold(folders: dict[str, Path]) -> None:
    steps: list[tuple[str, int, int]] = []
    result = ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=4,
                         seeds=1, crop=64, batch_size=2, base=8, pretrain_synthetic=True,
                         min_score=0.0, arms=[ev.ARM_PRETRAIN],
                         progress=lambda s, d, t: steps.append((s, d, t)))
    assert result.arms == [ev.ARM_REAL, ev.ARM_PRETRAIN]  # the threshold needs the real arm
    assert result.settings["n_synthetic_kept"] == 4
    assert steps[-1][1:] == (8, 8) and steps[-1][0].startswith(ev.ARM_PRETRAIN)
    with pytest.raises(ValueError, match="no synthetic pair has a quality score"):
        ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=2, seeds=1,
                    crop=64, batch_size=2, base=8, min_score=1.0, arms=[ev.ARM_SYNTHETIC])


def test_pretraining_with_its_own_steps_keeps_the_real_budget(folders: dict[str, Path],
                                                              tmp_path: Path) -> None:
    steps: list[tuple[str, int, int]] = []
    kw = dict(steps=4, seeds=1, crop=64, batch_size=2, base=8, pretrain_synthetic=True)
    result = ev.evaluate(folders["real"], folders["synthetic"], folders["test"],
                         pretrain_steps=3, arms=[ev.ARM_REAL, ev.ARM_PRETRAIN],
                         progress=lambda s, d, t: steps.append((s, d, t)), **kw)
    # real only 4 steps; the pre-trained arm 3 on synthetic pairs, then the same 4 on real ones
    assert steps[-1][1:] == (11, 11)
    assert max(d for s, d, _ in steps if s.startswith(ev.ARM_REAL)) == 4
    assert result.settings["pretrain_steps"] == 3
    assert "pre-train 3 steps on the synthetic pairs, then the whole budget" in (
        report.markdown_table(result))
    half_steps: list[int] = []
    half = ev.evaluate(folders["real"], folders["synthetic"], folders["test"],
                       arms=[ev.ARM_PRETRAIN], progress=lambda s, d, t: half_steps.append(t),
                       **kw)
    assert set(half_steps) == {4}  # without it, half and half: 2 + 2
    assert "pretrain_steps" not in half.settings  # old results keep matching
    with pytest.raises(ValueError, match="use both, or neither"):
        ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=2, seeds=1,
                    pretrain_steps=2)
    with pytest.raises(SystemExit):  # argparse: "must be >= 1; got 0"
        _run_cli(["evaluate", "--real", str(folders["real"]), "--synthetic",
                  str(folders["synthetic"]), "--test", str(folders["test"]),
                  "--pretrain-steps", "0", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_an_ablation_copies_the_real_only_runs(folders: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from napari_synthgen.results import SettingsMismatchError

    kw = dict(steps=3, seeds=1, crop=64, batch_size=2, base=8, arms=[ev.ARM_REAL, ev.ARM_MIXED])
    paths = (folders["real"], folders["synthetic"], folders["test"])
    first = ev.evaluate(*paths, out=tmp_path / "a", **kw)
    stages: list[str] = []
    # leaving synthetic class 0 out changes the mixed arm only: the real-only run is copied
    second = ev.evaluate(*paths, out=tmp_path / "b", synthetic_ignore=(0,),
                         real_runs_from=tmp_path / "a",
                         progress=lambda s, d, t: stages.append(s), **kw)
    assert f"{ev.ARM_REAL} seed 0 (saved)" in stages
    assert not any(s == f"{ev.ARM_REAL} seed 0" for s in stages)  # not trained again
    assert second.runs[0]["mean_dice"] == first.runs[0]["mean_dice"]
    assert (tmp_path / "b" / "runs" / "real_seed0.json").is_file()
    assert second.settings["synthetic_ignore"] == [0]
    with pytest.raises(SettingsMismatchError, match="steps 3 there, 4 now"):
        ev.evaluate(*paths, out=tmp_path / "c", real_runs_from=tmp_path / "a",
                    **{**kw, "steps": 4})
    with pytest.raises(ValueError, match="give out too"):
        ev.evaluate(*paths, real_runs_from=tmp_path / "a", **kw)
    # a quality filter is made with the real-only run of seed 0: it comes with the run
    ev.evaluate(*paths, out=tmp_path / "e", min_score=0.0, **kw)
    filtered = ev.evaluate(*paths, out=tmp_path / "f", min_score=0.0, synthetic_ignore=(0,),
                           real_runs_from=tmp_path / "e", **kw)
    assert (tmp_path / "f" / "runs" / "kept_synthetic.json").is_file()
    assert filtered.settings["n_synthetic_kept"] == 4
    with pytest.raises(SettingsMismatchError, match=r"min_score None there, 0\.0 now"):
        ev.evaluate(*paths, out=tmp_path / "g", min_score=0.0, real_runs_from=tmp_path / "a",
                    **kw)
    from napari_synthgen.cli import main

    code = main(["evaluate", "--real", str(paths[0]), "--synthetic", str(paths[1]),
                 "--test", str(paths[2]), "--steps", "1", "--seeds", "1",
                 "--real-runs-from", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")])
    assert code == 1 and "holds no evaluate results" in capsys.readouterr().err


def test_evaluate_refuses_a_leaked_test_image(folders: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import imageio.v3 as iio

    leaky = tmp_path / "leaky"
    (leaky / "images").mkdir(parents=True)
    (leaky / "masks").mkdir()
    src = folders["synthetic"] / "images" / "isbi2012_train_11.tif"
    # the same pixels under another name and format still count as the same image
    iio.imwrite(leaky / "images" / "renamed.png", tifffile.imread(src))
    iio.imwrite(leaky / "masks" / "renamed.png",
                tifffile.imread(folders["synthetic"] / "masks" / "isbi2012_train_11.tif"))
    with pytest.raises(ev.LeakError, match="synthetic/isbi2012_train_11"):
        ev.evaluate(folders["real"], folders["synthetic"], leaky, steps=1, seeds=1)
    code = _run_cli(["evaluate", "--real", str(folders["real"]), "--synthetic",
                     str(folders["synthetic"]), "--test", str(leaky), "--out",
                     str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "renamed" in err and "isbi2012_train_11" in err
    assert not (tmp_path / "o").exists()


def test_a_mix_that_cannot_mix_is_refused(folders: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="would not mix"):
        ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=1, seeds=1,
                    batch_size=4, mix=0.1)


# ----------------------------------------------------------------------------- nothing lost


def _small(folders: dict[str, Path], **kw):
    args = {"steps": 3, "seeds": 1, "crop": 64, "batch_size": 2, "base": 8,
            "arms": [ev.ARM_REAL, ev.ARM_SYNTHETIC], **kw}
    return ev.evaluate(folders["real"], folders["synthetic"], folders["test"], **args)


def _same(a: ev.EvaluationResult, b: ev.EvaluationResult) -> None:
    import json

    def figures(r: ev.EvaluationResult) -> str:  # NaN-safe; run times differ
        return json.dumps([{k: v for k, v in run.items() if k != "seconds"} for run in r.runs]
                          + [r.summary, r.notes], sort_keys=True)

    assert figures(a) == figures(b)


def test_a_killed_evaluate_resumes_without_recomputing_finished_runs(
        folders: dict[str, Path], tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    def kill_at_second_run(stage: str, done: int, total: int) -> None:
        if stage.startswith(ev.ARM_SYNTHETIC):
            raise Killed

    out = tmp_path / "out"
    with pytest.raises(Killed):
        _small(folders, out=out, progress=kill_at_second_run)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["real_seed0.json"]
    stages: list[str] = []
    resumed = _small(folders, out=out, progress=lambda s, d, t: stages.append(s))
    assert f"{ev.ARM_REAL} seed 0" not in stages  # reused, not trained again
    assert f"{ev.ARM_REAL} seed 0 (saved)" in stages and f"{ev.ARM_SYNTHETIC} seed 0" in stages
    _same(resumed, _small(folders, out=tmp_path / "uninterrupted"))
    # more seeds reuse the finished ones
    stages.clear()
    _small(folders, out=out, seeds=2, progress=lambda s, d, t: stages.append(s))
    assert [s for s in dict.fromkeys(stages) if "(saved)" not in s] == [
        f"{ev.ARM_REAL} seed 1", f"{ev.ARM_SYNTHETIC} seed 1"]


def test_a_rerun_with_other_settings_keeps_the_earlier_results(
        folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["evaluate", "--real", str(folders["real"]), "--synthetic", str(folders["synthetic"]),
            "--test", str(folders["test"]), "--steps", "2", "--seeds", "1", "--crop", "64",
            "--batch-size", "2", "--out", str(out)]
    assert _run_cli(argv) == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()
              and p.suffix != ".png"}
    capsys.readouterr()
    assert _run_cli([*argv[:-2], "--tolerance", "3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "tolerance 2.0 there, 3.0 now" in err and "--out" in err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()
            and p.suffix != ".png"} == before


def test_synthetic_ignore_leaves_the_real_runs_as_they_were(
        folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--synthetic-ignore 0` is recorded and changes only what the synthetic pairs teach: the
    real-only run is the same figures; classes outside 0-2, or all three, are refused."""
    argv = ["evaluate", "--real", str(folders["real"]), "--synthetic", str(folders["synthetic"]),
            "--test", str(folders["test"]), "--steps", "3", "--seeds", "1", "--crop", "64",
            "--batch-size", "2", "--arms", "real,real+synthetic"]
    assert _run_cli([*argv, "--out", str(tmp_path / "all")]) == 0
    assert _run_cli([*argv, "--synthetic-ignore", "0", "--out", str(tmp_path / "ign")]) == 0
    settings = json.loads((tmp_path / "ign" / "evaluate_settings.json").read_text())
    assert settings["synthetic_ignore"] == [0]
    assert "synthetic_ignore" not in json.loads(
        (tmp_path / "all" / "evaluate_settings.json").read_text())
    assert "class 0 (background) ignored" in (tmp_path / "ign" / "evaluation.md").read_text()

    def real_row(out: Path) -> dict[str, str]:
        with (out / "evaluation_runs.csv").open() as f:
            row = next(r for r in csv.DictReader(f) if r["arm"] == ev.ARM_REAL)
        return {k: v for k, v in row.items() if k != "seconds"}

    assert real_row(tmp_path / "ign") == real_row(tmp_path / "all")
    for wrong, says in (("3", "mask classes are 0"), ("0,1,2", "teach nothing")):
        capsys.readouterr()
        assert _run_cli([*argv, "--synthetic-ignore", wrong, "--out",
                         str(tmp_path / wrong)]) == 1
        err = capsys.readouterr().err
        assert says in err and "--synthetic-ignore" in err, err


def test_evaluate_loss_is_recorded_and_named(folders: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`--loss dice_ce` is in the settings (absent for the first loss, so older results
    match), the run records and the markdown; an unknown loss is refused by name."""
    argv = ["evaluate", "--real", str(folders["real"]), "--synthetic", str(folders["synthetic"]),
            "--test", str(folders["test"]), "--steps", "2", "--seeds", "1", "--crop", "64",
            "--batch-size", "2", "--arms", "real"]
    assert _run_cli([*argv, "--loss", "dice_ce", "--out", str(tmp_path / "dice")]) == 0
    def record(out: str) -> tuple[dict, dict]:
        return (json.loads((tmp_path / out / "evaluate_settings.json").read_text()),
                json.loads((tmp_path / out / "runs" / "real_seed0.json").read_text()))

    settings, run = record("dice")
    assert settings["loss"] == "dice_ce" and run["class_weights"] == [1.0, 1.0, 1.0]
    assert "loss cross-entropy + soft Dice" in (tmp_path / "dice" / "evaluation.md").read_text()
    assert _run_cli([*argv, "--out", str(tmp_path / "plain")]) == 0
    settings, run = record("plain")
    assert "loss" not in settings and run["class_weights"] != [1.0, 1.0, 1.0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _run_cli([*argv, "--loss", "focal", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'focal'" in capsys.readouterr().err


def test_runs_saved_before_the_objects_dice_are_reused(folders: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """Runs finished by a version without ``dice_objects`` are reused as they are: the
    figure is n/a for them, nothing is recomputed and nothing fails."""
    out = tmp_path / "out"
    first = _small(folders, out=out, real_sizes=[2], arms=[ev.ARM_REAL, ev.ARM_MIXED])
    for f in (out / "runs").glob("*.json"):
        rec = json.loads(f.read_text())
        rec["run"].pop("dice_objects")
        for image in rec["run"].get("images", []):
            image.pop("dice_objects")
        f.write_text(json.dumps(rec))
    again = _small(folders, out=out, real_sizes=[2], arms=[ev.ARM_REAL, ev.ARM_MIXED])
    assert [r["boundary_f1"] for r in again.runs] == [r["boundary_f1"] for r in first.runs]
    assert all(np.isnan(row["dice_objects_mean"]) for row in again.sizes)
    report.write_outputs(again, out)
    assert "dice_objects" in (out / "evaluation_sizes.csv").read_text()


def test_an_unwritable_out_fails_before_computing(folders: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from napari_synthgen.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = ["evaluate", "--real", str(folders["real"]), "--synthetic", str(folders["synthetic"]),
            "--test", str(folders["test"]), "--steps", "1", "--seeds", "1"]
    targets = [blocker / "sub"]
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        targets.append(locked / "out")
    for target in targets:
        assert main([*argv, "--out", str(target)]) == 1
        err = capsys.readouterr().err
        assert f"cannot write into {target}" in err and "choose" in err.lower()
        assert "Traceback" not in err
    with pytest.raises(OSError, match="cannot write into"):  # the progress never started
        _small(folders, out=blocker / "sub", progress=lambda *a: pytest.fail("computed"))


@pytest.mark.parametrize(("settings", "message"), [
    ({"tolerance": -5}, r"tolerance must be > 0 \(boundary distance in px\); got -5"),
    ({"tolerance": float("nan")}, r"tolerance must be > 0"),
    ({"crop": 4}, r"crop must be >= 8 \(crop side in px\); got 4"),
    ({"batch_size": 0}, r"batch_size must be >= 1; got 0"),
    ({"min_score": 1.5}, r"min_score must be in \[0, 1\]; got 1.5"),
    ({"mix": 1.0}, r"mix must be in \(0, 1\)"),
])
def test_settings_out_of_range_are_refused_before_anything_is_read(
        tmp_path: Path, settings: dict, message: str) -> None:
    """The folders do not even exist: the check comes first."""
    from napari_synthgen.limits import LimitError

    with pytest.raises(LimitError, match=message):
        ev.evaluate(tmp_path / "no-real", tmp_path / "no-syn", tmp_path / "no-test", **settings)


# ----------------------------------------------------------------------------- stacks


def _write_stacks(root: Path, isbi_dir: Path, firsts: list[int], *, n: int = 3,
                  corner: int = 0, blur: float = 0.0, size: int = 96) -> Path:
    """Consecutive ISBI sections cropped and stacked as (Z, Y, X) pairs (``stackNN``), written
    as Fiji writes stacks (ImageJ hyperstack with 50 nm z and 4 nm pixel spacing)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sl = np.s_[:size, :size] if corner == 0 else np.s_[-size:, -size:]
    for first in firsts:
        names = [f"isbi2012_train_{i:02d}.tif" for i in range(first, first + n)]
        img = np.stack([tifffile.imread(isbi_dir / "images" / f)[sl] for f in names])
        m = np.stack([tifffile.imread(isbi_dir / "masks" / f)[sl] for f in names])
        if blur:
            img = ndi.gaussian_filter(img.astype(np.float64), (0, blur, blur)).round().astype(
                np.uint8)
        for sub, arr in (("images", img), ("masks", m)):
            tifffile.imwrite(root / sub / f"stack{first:02d}.tif", arr, imagej=True,
                             resolution=(0.25, 0.25),
                             metadata={"spacing": 50.0, "unit": "nm", "axes": "ZYX"})
    return root


@pytest.fixture(scope="module")
def stack_folders(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> dict[str, Path]:
    """Real stacks of sections 00-02 and 03-05, synthetic stand-in: blurred 10-12, test: the
    stack 26-28 (other corner) beside the 2-D slice 29."""
    root = tmp_path_factory.mktemp("eval_stacks")
    test = _write_stacks(root / "test", isbi_dir, [26], corner=1)
    _write_pairs(root / "test2d", isbi_dir, range(29, 30), corner=1, size=96)
    for sub in ("images", "masks"):
        (root / "test2d" / sub / "isbi2012_train_29.tif").rename(test / sub / "slice29.tif")
    return {"real": _write_stacks(root / "real", isbi_dir, [0, 3]),
            "synthetic": _write_stacks(root / "syn", isbi_dir, [10], blur=1.0),
            "test": test}


def test_test_stacks_are_predicted_slice_by_slice_and_scored_per_stack(
        stack_folders: dict[str, Path]) -> None:
    names, pairs, stacks = ev._load(stack_folders["test"])
    assert names == ["slice29", "stack26_z000", "stack26_z001", "stack26_z002"]
    assert stacks == [("stack26", names[1:])] and all(p[0].ndim == 2 for p in pairs)
    real_names, real_pairs, _ = ev._load(stack_folders["real"])
    cfg = SegmenterConfig(steps=3, batch_size=2, crop=64, base=8, seed=0, precision="fp32")
    seg = train_segmenter([Phase(3, Pool.from_pairs(real_pairs, real_names))], cfg)
    stack = np.stack([p[0] for p in pairs[1:]])
    pred = seg.predict_stack(stack)
    assert pred.shape == stack.shape and all(
        np.array_equal(pred[k], seg.predict(stack[k])) for k in range(3))
    pooled, rows = ev.score_test(seg, pairs, names, stacks)
    # the slices count like 2-D test images
    assert pooled == pytest.approx(ev.score_segmenter(seg, pairs), nan_ok=True)
    assert [r["stack"] for r in rows] == ["stack26"] and rows[0]["n_slices"] == 3
    only = ev.score_segmenter(seg, pairs[1:])
    assert {k: rows[0][k] for k in only} == pytest.approx(only, nan_ok=True)

    # --min-score keeps or drops a synthetic stack whole, by the mean of its slices' scores
    from napari_synthgen import quality

    syn_names, syn_pairs, syn_stacks = ev._load(stack_folders["synthetic"])
    reference = quality.reference_from_pairs(real_pairs)
    scores = [quality.sample_figures(im, m, reference=reference, predicted=seg.predict(im))[
        "score"] for im, m in syn_pairs]
    assert max(scores) > np.mean(scores) > min(scores)

    def kept(threshold: float) -> list[str]:
        return ev._filter_by_score(syn_pairs, syn_names, seg, real_pairs, threshold, {},
                                   quality, syn_stacks).names

    assert kept((min(scores) + np.mean(scores)) / 2) == syn_names  # its worst slice too
    with pytest.raises(ValueError, match="no synthetic pair"):  # its best slice neither
        kept((max(scores) + np.mean(scores)) / 2)


def test_evaluate_on_stacks_writes_per_stack_rows(stack_folders: dict[str, Path],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _run_cli(["evaluate", "--real", str(stack_folders["real"]), "--synthetic",
                     str(stack_folders["synthetic"]), "--test", str(stack_folders["test"]),
                     "--steps", "3", "--seeds", "1", "--crop", "64", "--batch-size", "2",
                     "--out", str(out)])
    assert code == 0
    recorded = json.loads((out / "evaluate_settings.json").read_text())  # beside the results
    assert (recorded["n_real"], recorded["n_synthetic"], recorded["n_test"]) == (6, 3, 4)
    assert recorded["n_stacks"] == [2, 1, 1]
    with (out / "evaluation_stacks.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["arm"], r["stack"], r["n_slices"]) for r in rows] == [
        ("real", "stack26", "3"), ("real+synthetic", "stack26", "3"),
        ("synthetic", "stack26", "3")]
    assert all(0.0 <= float(r["dice_interior"]) <= 1.0 for r in rows)
    assert "evaluation_stacks.csv" in (out / "evaluation.md").read_text()


def test_a_test_stack_sharing_a_section_with_training_is_refused(
        stack_folders: dict[str, Path], tmp_path: Path, isbi_dir: Path) -> None:
    leaky = _write_stacks(tmp_path / "leaky", isbi_dir, [5])  # sections 5-7: 5 is in real
    with pytest.raises(ev.LeakError, match=r"test image stack05_z000 is also real/stack03_z002"):
        ev.evaluate(stack_folders["real"], stack_folders["synthetic"], leaky, steps=1, seeds=1)
