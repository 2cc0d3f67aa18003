"""Whether a study's real-only arm had converged: the written rule on held-out curves, the
evaluation.md paragraph, and the note the Check utility dock shows."""

from __future__ import annotations

import math
from types import SimpleNamespace

from napari_synthgen.convergence import (
    STILL_RISING,
    convergence_markdown,
    convergence_notes,
    convergence_rows,
    second_half_change,
)


def _run(n: int, seed: int, f1: list[float] | None, loss: list[float]) -> dict:
    """A real-only run whose curve has a point every 100 steps (held-out F1 when given)."""
    curve = []
    for i, value in enumerate(loss):
        point = {"step": 100 * (i + 1), "train_loss": value}
        if f1 is not None:
            point.update(val_boundary_f1=f1[i], val_dice_interior=0.5)
        curve.append(point)
    return {"arm": "real", "n_real": n, "seed": seed, "curve": curve}


def test_the_second_half_change_is_measured_from_the_point_at_half_the_budget() -> None:
    curve = _run(2, 0, [0.1, 0.2, 0.3, 0.35], [1.0, 0.8, 0.6, 0.5])["curve"]
    # last step 400: the first point at or past 200 is the second one
    assert math.isclose(second_half_change(curve, "val_boundary_f1"), 0.15)
    assert math.isclose(second_half_change(curve, "train_loss"), -0.3)
    assert math.isnan(second_half_change(curve, "val_missing"))
    assert math.isnan(second_half_change([], "train_loss"))


def test_the_rule_flags_a_held_out_rise_and_cannot_tell_without_held_out_pairs() -> None:
    rising = [_run(2, s, [0.1, 0.2, 0.3, 0.2 + d], [1.0] * 4) for s, d in enumerate((0.1, 0.2))]
    flat = [_run(5, s, [0.6, 0.7, 0.7, 0.7 + STILL_RISING / 2], [1.0] * 4) for s in (0, 1)]
    alone = [_run(8, 0, None, [1.0, 0.8, 0.6, 0.4])]  # every real pair in the subset
    rows = convergence_rows([*alone, *flat, *rising, {"arm": "real+synthetic", "n_real": 2}])
    assert [(n, verdict) for n, _, verdict in rows] == [(2, True), (5, False), (8, None)]
    assert math.isclose(rows[0][1]["val_boundary_f1"], 0.15)  # mean over the seeds
    assert math.isclose(rows[2][1]["train_loss"], -0.4)
    # one note, for the size that was still learning, naming the figure and the next budget
    notes = convergence_notes([*rising, *flat, *alone], 400)
    assert len(notes) == 1 and notes[0].startswith("2 real pair(s)")
    assert "boundary F1 +0.150" in notes[0] and "interior" not in notes[0]
    assert "--steps 800" in notes[0]
    md = "\n".join(convergence_markdown([*rising, *flat, *alone], 100, 400))
    assert f"more than {STILL_RISING}" in md and "a point every 100 steps" in md
    assert "**still learning**" in md and ": converged." in md and "cannot tell" in md
    assert convergence_markdown([{"arm": "real", "n_real": 2}], 100, 400) == []


def test_the_dock_shows_the_note_of_a_size_still_learning() -> None:
    from napari_synthgen.widgets.utility import summary_html

    result = SimpleNamespace(sizes=[], summary={}, notes=[], settings={"steps": 400},
                             runs=[_run(2, 0, [0.1, 0.2, 0.3, 0.5], [1.0] * 4)])
    assert "real only was still learning at 400 steps" in summary_html(result)
    result.runs = [_run(2, 0, [0.1, 0.3, 0.3, 0.3], [1.0] * 4)]
    assert "still learning" not in summary_html(result)
