"""What more seeds would buy a study whose interval holds 0: the projected interval, the
test images' part no number of seeds narrows, and the evaluation.md lines."""

from __future__ import annotations

import itertools
import math

import numpy as np

from napari_synthgen import evaluation as ev
from napari_synthgen import evaluation_report as report
from napari_synthgen.study_power import (
    MAX_SEEDS,
    power_notes,
    projected_halfwidth,
    seeds_to_exclude_zero,
)

#: seeds disagree (rows), the test images agree (columns): seeds are what is short
SEEDS_SPREAD = np.array([[0.10] * 5, [-0.03] * 5, [0.06] * 5])
#: the seeds agree, the test images disagree: more seeds cannot help
IMAGES_SPREAD = np.array([[0.20, -0.15, 0.05, -0.10, 0.03]] * 3)


def test_more_seeds_narrow_the_interval_down_to_the_test_images_part() -> None:
    widths = [projected_halfwidth(SEEDS_SPREAD, k) for k in (3, 6, 12, 48)]
    assert all(a > b for a, b in itertools.pairwise(widths))
    assert projected_halfwidth(SEEDS_SPREAD, None) < 1e-12  # the images agree: nothing left
    floor = projected_halfwidth(IMAGES_SPREAD, None)
    assert floor > 0.05  # identical seeds: every projection is the images' part
    assert all(math.isclose(projected_halfwidth(IMAGES_SPREAD, k), floor, abs_tol=0.02)
               for k in (3, 12))
    assert math.isnan(projected_halfwidth(np.zeros((0, 0)), 3))
    # seeded: the same differences give the same projection
    assert projected_halfwidth(SEEDS_SPREAD, 7) == projected_halfwidth(SEEDS_SPREAD, 7)


def test_the_seeds_that_would_exclude_zero() -> None:
    k = seeds_to_exclude_zero(SEEDS_SPREAD)
    assert k is not None and 3 < k <= MAX_SEEDS
    assert projected_halfwidth(SEEDS_SPREAD, k) < SEEDS_SPREAD.mean()
    assert all(projected_halfwidth(SEEDS_SPREAD, j) >= SEEDS_SPREAD.mean()
               for j in range(4, k))  # the fewest
    assert seeds_to_exclude_zero(IMAGES_SPREAD) is None
    assert seeds_to_exclude_zero(np.zeros((3, 5))) is None


def _runs(n: int, m: str, d: np.ndarray) -> list[dict]:
    """Real-only and mixed runs at ``n`` real pairs whose paired ``m`` differences are ``d``
    (seeds x test images); the other figure is the same in both arms."""
    other = "boundary_f1" if m == "dice_interior" else "dice_interior"
    runs = []
    for seed, diffs in enumerate(d):
        base = [{"image": f"t{i}", m: 0.5, other: 0.5} for i in range(len(diffs))]
        runs += [{"arm": "real", "n_real": n, "seed": seed, "images": base},
                 {"arm": "real+synthetic", "n_real": n, "seed": seed,
                  "images": [{**im, m: 0.5 + float(v)} for im, v in zip(base, diffs,
                                                                          strict=True)]}]
    return runs


def test_notes_only_where_an_interval_holds_zero_and_say_what_would_narrow_it() -> None:
    arrays = {(2, "dice_interior"): SEEDS_SPREAD, (5, "dice_interior"): IMAGES_SPREAD,
              (8, "dice_interior"): SEEDS_SPREAD + 1.0,  # excludes 0: no note
              (9, "dice_interior"): SEEDS_SPREAD[:1],    # one seed: nothing to project
              (10, "boundary_f1"): np.zeros((3, 5))}     # a figure 0 in both arms
    runs = [r for (n, m), d in arrays.items() for r in _runs(n, m, d)]
    rows = ev.size_rows(runs, [n for n, _ in arrays], "real+synthetic")
    notes = power_notes(rows, runs)
    assert [x.split(",")[0] for x in notes] == ["2 real pair(s)", "5 real pair(s)"]
    assert "seeds spread like these 3 would give an interval that excludes 0" in notes[0]
    assert "no number of seeds would" in notes[1] and "more test images" in notes[1]
    assert all("rough guide" in x for x in notes)


def test_evaluation_md_carries_the_notes() -> None:
    def images(diffs: np.ndarray) -> list[list[dict]]:
        return [[{"image": f"t{i}", "dice_interior": float(v), "boundary_f1": 0.5}
                 for i, v in enumerate(row)] for row in diffs]

    runs = []
    for seed, (base, top) in enumerate(zip(images(np.zeros((3, 5)) + 0.5),
                                           images(0.5 + SEEDS_SPREAD), strict=True)):
        runs += [{"arm": "real", "n_real": 2, "seed": seed, "images": base},
                 {"arm": "real+synthetic", "n_real": 2, "seed": seed, "images": top}]
    rows = ev.size_rows(runs, [2], "real+synthetic")
    result = ev.EvaluationResult(runs, {}, [], {"steps": 10, "loss": "dice_ce"}, sizes=rows)
    md = "\n".join(report.study_markdown(result))
    assert "What more seeds would buy" in md and "2 real pair(s), dice_interior" in md


def test_the_dock_says_what_more_seeds_would_buy() -> None:
    from types import SimpleNamespace

    from napari_synthgen.widgets.utility import summary_html

    runs = []
    for seed, diffs in enumerate(IMAGES_SPREAD):
        images = [{"image": f"t{i}", "dice_interior": 0.5 + float(v), "boundary_f1": 0.5}
                  for i, v in enumerate(diffs)]
        runs += [{"arm": "real", "n_real": 5, "seed": seed,
                  "images": [{**im, "dice_interior": 0.5} for im in images]},
                 {"arm": "real+synthetic", "n_real": 5, "seed": seed, "images": images}]
    result = SimpleNamespace(sizes=ev.size_rows(runs, [5], "real+synthetic"), summary={},
                             notes=[], settings={"steps": 10}, runs=runs)
    assert "no number of seeds would" in summary_html(result)
