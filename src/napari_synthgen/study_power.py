"""What more seeds would buy a study whose interval holds 0: how wide the interval would be
with more seeds like these, and the part of it that only more test images narrow.

The paired interval (:func:`evaluation.paired_ci`) resamples seeds and test images
independently (:func:`evaluation.bootstrap_means`). Drawing more seeds than were run from
the same seeds projects the interval a longer study would give if its seeds spread like
these; drawing none (the seeds averaged) leaves the test images' part, which no number of
seeds narrows. Both use the same seeded
bootstrap, so the same runs give the same projection. Projected from a few seeds, it is a
rough guide, and the study says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .evaluation import ARM_REAL, bootstrap_means, paired_differences

#: the most seeds a projection considers
MAX_SEEDS = 50
#: the figures projected: the study's two headline figures (membranes; organelles or cells)
PROJECTED = ("boundary_f1", "dice_interior")


def projected_halfwidth(diffs: np.ndarray, n_seeds: int | None, *, level: float = 0.95
                        ) -> float:
    """Half the width of the paired interval (:func:`evaluation.bootstrap_means`, the
    bootstrap of :func:`evaluation.paired_ci`) of a (seeds, test images) array of paired
    differences, with ``n_seeds`` seeds drawn from its rows (None: the rows averaged, the test
    images' part alone); NaN without data."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        return math.nan
    alpha = (1.0 - level) / 2
    low, high = np.quantile(bootstrap_means(d, n_seeds), [alpha, 1.0 - alpha])
    return float(high - low) / 2


def seeds_to_exclude_zero(diffs: np.ndarray, *, limit: int = MAX_SEEDS) -> int | None:
    """The fewest seeds (up to ``limit``) whose projected interval around the observed mean
    excludes 0; None when no number up to ``limit`` does."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0 or d.mean() == 0:
        return None
    for k in range(d.shape[0] + 1, limit + 1):
        if projected_halfwidth(d, k) < abs(d.mean()):
            return k
    return None


def power_notes(rows: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> list[str]:
    """For each size and headline figure whose interval holds 0 (``rows`` as
    :func:`evaluation.size_rows` gives them from ``runs``): how many seeds like these would
    exclude 0 at the mean seen, and the test images' part of the interval."""
    notes = []
    for row in rows:
        for m in PROJECTED:
            low, high = row.get(f"diff_{m}_low", math.nan), row.get(f"diff_{m}_high", math.nan)
            if math.isnan(low) or low > 0 or high < 0:
                continue
            d = paired_differences(runs, row["arm"], ARM_REAL, row["n_real"], m)
            if d.shape[0] < 2 or not d.any():  # one seed, or a figure 0 in both arms
                continue
            floor = projected_halfwidth(d, None)
            k = seeds_to_exclude_zero(d)
            mean = float(d.mean())
            head = (f"{row['n_real']} real pair(s), {m} {mean:+.3f} "
                    f"[{low:+.3f}, {high:+.3f}]: ")
            part = f"the test images' part: ±{floor:.3f}; "
            if k is not None:
                what = (f"about {k} seeds spread like these {d.shape[0]} would give an interval "
                        f"that excludes 0, if the mean stayed at {mean:+.3f}")
            elif floor >= abs(mean):
                what = (f"no number of seeds would: the {d.shape[1]} test images alone leave "
                        f"±{floor:.3f}, wider than the mean; more test images would narrow it")
                part = ""
            else:
                what = f"more than {MAX_SEEDS} seeds spread like these would be needed"
            notes.append(head + what + f" ({part}projected from {d.shape[0]} seeds, a rough "
                         "guide).")
    return notes
