"""Whether an ``evaluate`` study's real-only arm had converged: how far its held-out figures
still rose over the second half of the budget.

A comparison made while real only still learns measures the budget, not the synthetic pairs:
in the same steps the mixed arm sees fewer real crops, so it costs while real only has room,
and the cost goes when both have converged (docs/utility.md, "Two real slices, and the
budget"). The rule is fixed and written here; no timing enters it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: a real-only arm is still learning when a held-out figure rose by more than this over the
#: second half of its budget (mean over seeds)
STILL_RISING = 0.02
#: the held-out figures judged (the study's figures on the real pairs outside the subset)
HELD_OUT = {"val_boundary_f1": "held-out boundary F1",
            "val_dice_interior": "held-out interior Dice"}


def second_half_change(curve: Sequence[Mapping[str, Any]], key: str) -> float:
    """The last point's ``key`` minus that of the first point at or past half the last step
    (NaN where either is missing or NaN)."""
    if not curve or key not in curve[-1]:
        return math.nan
    half = next((p for p in curve if p["step"] >= curve[-1]["step"] / 2), curve[0])
    end, mid = curve[-1].get(key), half.get(key)
    if end is None or mid is None:
        return math.nan
    return float(end) - float(mid)


def convergence_rows(runs: Sequence[Mapping[str, Any]]
                     ) -> list[tuple[int, dict[str, float], bool | None]]:
    """Per number of real pairs with a recorded curve: the mean second-half change of each
    figure (the held-out ones, else the training loss) and whether real only was still
    learning (None: every real pair was in the subset, so there is no held-out figure to tell
    it by; a falling training loss does not say it)."""
    curves = [r for r in runs if r.get("curve")]
    rows = []
    for n in sorted({int(r["n_real"]) for r in curves}):
        mine = [r["curve"] for r in curves if int(r["n_real"]) == n]
        keys = [k for k in HELD_OUT if k in mine[0][-1]] or ["train_loss"]
        change = {}
        for k in keys:
            values = [v for c in mine if not math.isnan(v := second_half_change(c, k))]
            change[k] = float(np.mean(values)) if values else math.nan
        held = [v for k, v in change.items() if k in HELD_OUT and not math.isnan(v)]
        rows.append((n, change, any(v > STILL_RISING for v in held) if held else None))
    return rows


def convergence_notes(runs: Sequence[Mapping[str, Any]], steps: int) -> list[str]:
    """One line per size whose real-only arm was still learning: what it means for the
    difference and the budget to try next."""
    notes = []
    for n, change, rising in convergence_rows(runs):
        if rising:
            moved = ", ".join(f"{HELD_OUT[k]} {v:+.3f}" for k, v in change.items()
                              if k in HELD_OUT and v > STILL_RISING)
            notes.append(
                f"{n} real pair(s): real only was still learning at {steps} steps ({moved} "
                "over the second half), so the difference at this budget may be the "
                "budget's, not the synthetic pairs' (the mixed arm sees fewer real crops in "
                f"the same steps); run again with --steps {2 * steps}.")
    return notes


def convergence_markdown(runs: Sequence[Mapping[str, Any]], val_every: Any,
                         steps: int) -> list[str]:
    """The study's convergence paragraph of ``evaluation.md``: each size's second-half
    changes and the verdict of the rule above. Empty without curves."""
    rows = convergence_rows(runs)
    if not rows:
        return []
    names = {**HELD_OUT, "train_loss": "training loss"}
    lines = [f"Convergence of the real-only arm (evaluation_curves.png, evaluation_curves.csv; "
             f"a point every {val_every} steps). Rule: still learning when a held-out figure "
             f"rose by more than {STILL_RISING} over the second half of the budget (mean over "
             "seeds).", ""]
    for n, change, rising in rows:
        moved = ", ".join(f"{names[k]} {v:+.3f}" for k, v in change.items())
        verdict = {True: "**still learning**", False: "converged",
                   None: "cannot tell: every real pair is in the subset, so none is held out "
                         "(a smaller size in --real-sizes shows the curve)"}[rising]
        lines.append(f"- {n} real pair(s): {moved} over the second half: {verdict}.")
    notes = convergence_notes(runs, steps)
    return [*lines, "", *[f"- {x}" for x in notes], *([""] if notes else [])]
