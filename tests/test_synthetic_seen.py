"""What a real-trained segmenter sees in the synthetic pairs: recalls from counts, the flag
rule, the evaluation.md section, and `evaluate` recording it for its real-only runs."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen import evaluation as ev
from napari_synthgen import evaluation_report as report
from napari_synthgen.masks import INTERIOR
from napari_synthgen.synthetic_seen import flagged, recalls_from_counts, seen_markdown


def _isbi(root: Path, isbi_dir: Path, indices: range, *, corner: int = 0,
          edit: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
          ) -> Path:
    """256-px ISBI crops (top-left or bottom-right ``corner``) as a paired folder, each pair
    changed by ``edit(image, mask)`` when given."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in indices:
        name = f"isbi2012_train_{i:02d}.tif"
        sl = np.s_[:256, :256] if corner == 0 else np.s_[-256:, -256:]
        img = tifffile.imread(isbi_dir / "images" / name)[sl]
        m = tifffile.imread(isbi_dir / "masks" / name)[sl]
        if edit is not None:
            img, m = edit(img, m)
        tifffile.imwrite(root / "images" / name, img)
        tifffile.imwrite(root / "masks" / name, m)
    return root


def test_recalls_count_each_class_found_and_nan_for_an_absent_class() -> None:
    truth = np.zeros((10, 10), np.uint8)
    truth[:, 5:] = INTERIOR
    pred = truth.copy()
    pred[0:2, 0:5] = INTERIOR     # 10 of 50 background pixels called an object
    pred[0:5, 5:10] = 0           # 25 of 50 interior pixels missed
    r = recalls_from_counts(ev.confusion_counts(pred, truth))
    assert r["recall_background"] == pytest.approx(0.8)
    assert r["recall_interior"] == pytest.approx(0.5)
    assert math.isnan(r["recall_boundary"])


def test_a_class_is_flagged_only_when_missed_much_more_in_the_synthetic_pairs() -> None:
    assert flagged(0.96, 0.92)          # 8 % missed against 4 %: twice and 4 points more
    assert flagged(0.865, 0.098)        # organelles a real segmenter does not recognise
    assert not flagged(0.955, 0.999)    # fewer missed: nothing wrong
    assert not flagged(0.995, 0.99)     # twice as many missed, but 0.5 points
    assert not flagged(math.nan, 0.5)   # the class is not in the test masks


def _run(n: int, seed: int, test: tuple[float, float], syn: tuple[float, float] | None) -> dict:
    run = {"arm": "real", "n_real": n, "seed": seed, "recall_background": test[0],
           "recall_interior": test[1], "recall_boundary": math.nan}
    if syn is not None:
        run["on_synthetic"] = {"recall_background": syn[0], "recall_interior": syn[1],
                               "recall_boundary": math.nan}
    return run


def test_the_section_names_each_flagged_class_and_what_it_means() -> None:
    runs = [_run(5, 0, (0.96, 0.72), (0.92, 0.88)), _run(5, 1, (0.96, 0.74), (0.92, 0.86)),
            _run(2, 0, (0.95, 0.87), (0.999, 0.10)),
            {"arm": "real+synthetic", "n_real": 5, "seed": 0}]
    md = "\n".join(seen_markdown(runs))
    assert "| 5 | background | 96.0% | 92.0% | **yes** |" in md
    assert "| 5 | interior | 73.0% | 87.0% | no |" in md
    assert "| 2 | interior | 87.0% | 10.0% | **yes** |" in md
    assert "| 2 | background | 95.0% | 99.9% | no |" in md
    assert "boundary" not in md.split("| real pairs |")[1].split("\n- ")[0]  # absent: no row
    assert "paints objects where its masks have none" in md and "--synthetic-ignore 0" in md
    assert "draws it unlike the real images" in md
    # runs saved before the figure existed: no section at all
    assert seen_markdown([_run(5, 0, (0.96, 0.72), None)]) == []


def test_evaluate_records_what_its_real_only_segmenter_sees_in_the_synthetic_pairs(
        isbi_dir: Path, tmp_path: Path) -> None:
    """Synthetic stand-in: real ISBI pairs with the image's grey levels inverted (a generator
    that draws the cells unlike real ones: bright membranes, dark insides). The real-only
    segmenter misses their membranes far more than the test images'."""
    folders = {"real": _isbi(tmp_path / "real", isbi_dir, range(4)),
               "synthetic": _isbi(tmp_path / "syn", isbi_dir, range(10, 14),
                                  edit=lambda img, m: (255 - img, m)),
               "test": _isbi(tmp_path / "test", isbi_dir, range(27, 30), corner=1)}
    out = tmp_path / "out"
    result = ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=30,
                         seeds=1, crop=64, batch_size=4, arms=[ev.ARM_REAL, ev.ARM_SYNTHETIC],
                         out=out)
    real, synthetic_arm = result.runs
    assert "on_synthetic" not in synthetic_arm  # only a real-only segmenter says it
    seen = real["on_synthetic"]
    assert math.isnan(seen["recall_background"])  # ISBI masks have no class 0
    assert real["recall_boundary"] > 0.5 and seen["recall_boundary"] < 0.2
    report.write_outputs(result, out)
    md = (out / "evaluation.md").read_text()
    assert "sees in the synthetic pairs" in md and "| all | boundary |" in md
    assert "boundary: found" in md and "draws it unlike the real images" in md  # flagged
    with (out / "evaluation_runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["synthetic_recall_boundary"]) == pytest.approx(seen["recall_boundary"],
                                                                        abs=1e-6)
    assert rows[1]["synthetic_recall_boundary"] == "nan"
    again = ev.evaluate(folders["real"], folders["synthetic"], folders["test"], steps=30,
                        seeds=1, crop=64, batch_size=4, arms=[ev.ARM_REAL, ev.ARM_SYNTHETIC],
                        out=out)  # reused from disk, the figure with it
    assert (json.dumps(again.runs[0]["on_synthetic"], sort_keys=True)
            == json.dumps(seen, sort_keys=True))  # NaN-safe


def test_pixels_left_out_travel_with_their_crop(isbi_image, isbi_mask) -> None:
    """A pool's ``ignore_pixels`` marks the same pixels as IGNORE, through crop, rotation and
    flip, as naming their class would; and the crops drawn are the same as without it."""
    from napari_synthgen.segmenter import IGNORE, Pool, _crop_batch

    by_class = Pool.from_pairs([(isbi_image, isbi_mask)], ["a"])
    by_class.ignore = (INTERIOR,)
    by_pixel = Pool.from_pairs([(isbi_image, isbi_mask)], ["a"])
    by_pixel.ignore_pixels = [isbi_mask == INTERIOR]
    plain = Pool.from_pairs([(isbi_image, isbi_mask)], ["a"])
    _, ys_c = _crop_batch(by_class, 6, 96, np.random.default_rng(3))
    xs_p, ys_p = _crop_batch(by_pixel, 6, 96, np.random.default_rng(3))
    xs_0, ys_0 = _crop_batch(plain, 6, 96, np.random.default_rng(3))
    assert (ys_p == IGNORE).any()
    np.testing.assert_array_equal(ys_p, ys_c)
    np.testing.assert_array_equal(xs_p, xs_0)
    np.testing.assert_array_equal(ys_p != IGNORE, ys_0 != INTERIOR)


def _unlabelled_corner(img: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mask says class 0 over the top-left quarter, where the image still shows cells: a
    generator that painted objects where its mask has none."""
    m = m.copy()
    m[:128, :128] = 0
    return img, m


def test_off_mask_objects_are_left_out_with_the_segmenter_trained_again_when_saved(
        isbi_dir: Path, tmp_path: Path) -> None:
    real = _isbi(tmp_path / "real", isbi_dir, range(3))  # whole masks
    syn = _isbi(tmp_path / "syn", isbi_dir, range(10, 13), edit=_unlabelled_corner)
    test = _isbi(tmp_path / "test", isbi_dir, range(27, 29), corner=1, edit=_unlabelled_corner)
    kw = {"steps": 20, "seeds": 1, "crop": 64, "batch_size": 4, "base": 8}
    plain = ev.evaluate(real, syn, test, arms=[ev.ARM_REAL, ev.ARM_MIXED], **kw)
    both = ev.evaluate(real, syn, test, arms=[ev.ARM_REAL, ev.ARM_MIXED],
                       synthetic_ignore_off_mask=True, **kw)
    assert both.settings["synthetic_ignore_off_mask"] is True
    assert "synthetic_ignore_off_mask" not in plain.settings  # old results match
    # the real-only run is the same; the mixed run leaves out the painted corner's cells
    assert both.runs[0]["dice_interior"] == plain.runs[0]["dice_interior"]
    share = both.runs[1]["synthetic_ignored_share"]
    assert 0.05 < share < 0.25  # at most the corner's quarter, the cells found in it
    assert both.runs[1]["dice_interior"] != plain.runs[1]["dice_interior"]
    # without the real-only run in this call, its segmenter is trained again: the same bytes
    alone = ev.evaluate(real, syn, test, arms=[ev.ARM_MIXED], synthetic_ignore_off_mask=True,
                        **kw)
    assert [r["arm"] for r in alone.runs] == [ev.ARM_MIXED]
    assert alone.runs[0]["synthetic_ignored_share"] == share
    assert alone.runs[0]["dice_interior"] == both.runs[1]["dice_interior"]
    assert "real-only segmenter calls an object ignored" in report.markdown_table(both)
