"""What a segmenter trained on the real pairs sees in the synthetic pairs, beside what it sees in
the real test images: the share of each class's pixels it calls that class (recall).

Synthetic pairs teach a segmenter wrong in two ways this shows apart. Where the synthetic
images draw a class unlike the real ones, a real-trained segmenter finds far less of that
class in them than in the test images (the pairs teach another look of it). Where the
generator paints objects the mask does not have (unlabelled organelles in class 0), the
segmenter calls far more of the synthetic class 0 an object than of the test images' (those
pixels teach "this is not an object"; ``evaluate --synthetic-ignore-off-mask`` leaves them
out). ``evaluate`` records both for every real-only run it trains; no extra training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .masks import CLASS_NAMES, N_CLASSES

#: the figures, one per class: the share of its pixels called that class
RECALLS: tuple[str, ...] = tuple(f"recall_{n}" for n in CLASS_NAMES)
#: a class is flagged when its missed share in the synthetic pairs is more than this many
#: times the test images' ...
FLAG_RATIO = 1.5
#: ... and at least this much above it (absolute), so that a class missed 1 % against 0.5 %
#: is not flagged
FLAG_MARGIN = 0.02


def recalls_from_counts(counts: np.ndarray) -> dict[str, float]:
    """Per class, the share of its true pixels predicted as it (NaN where a class is absent
    from the masks), from :func:`evaluation.confusion_counts`'s per-class (tp, fp, fn)."""
    out: dict[str, float] = {}
    for c, name in enumerate(CLASS_NAMES):
        tp, _fp, fn = (int(v) for v in counts[3 * c:3 * c + 3])
        out[f"recall_{name}"] = tp / (tp + fn) if tp + fn else math.nan
    return out


def seen_in(predicted: Sequence[np.ndarray], pairs: Sequence[tuple[np.ndarray, np.ndarray]]
            ) -> dict[str, float]:
    """:func:`recalls_from_counts` of the ``predicted`` class masks of ``pairs`` (pixels
    pooled over the images)."""
    counts = np.zeros(N_CLASSES * 3, dtype=np.int64)  # per class (tp, fp, fn); fp unused
    for pred, (_image, mask) in zip(predicted, pairs, strict=True):
        for c in range(N_CLASSES):
            where = mask == c
            hit = int((pred[where] == c).sum())
            counts[3 * c] += hit
            counts[3 * c + 2] += int(where.sum()) - hit
    return recalls_from_counts(counts)


def off_mask(predicted: Sequence[np.ndarray], pairs: Sequence[tuple[np.ndarray, np.ndarray]]
             ) -> list[np.ndarray]:
    """Per pair, the class-0 pixels its ``predicted`` mask calls an object (interior or
    boundary): the objects a generator painted where its mask has none, as a segmenter trained
    on real pairs sees them."""
    return [(mask == 0) & (pred > 0)
            for pred, (_image, mask) in zip(predicted, pairs, strict=True)]


def flagged(test: float, synthetic: float) -> bool:
    """Whether a class's missed share in the synthetic pairs (1 - ``synthetic``) is more than
    :data:`FLAG_RATIO` times and :data:`FLAG_MARGIN` above the test images' (1 - ``test``)."""
    if math.isnan(test) or math.isnan(synthetic):
        return False
    miss_t, miss_s = 1.0 - test, 1.0 - synthetic
    return miss_s > FLAG_RATIO * miss_t and miss_s > miss_t + FLAG_MARGIN


def seen_rows(runs: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, float, float, bool]]:
    """Per number of real pairs (0: all) and class: the recall on the test images and in the
    synthetic pairs (mean over the real-only runs that recorded it) and whether it is
    :func:`flagged`; classes in neither are left out, and runs saved before it existed."""
    mine = [r for r in runs if r.get("on_synthetic")]
    rows = []
    for n in sorted({r.get("n_real", 0) for r in mine}):
        at_n = [r for r in mine if r.get("n_real", 0) == n]
        for name in CLASS_NAMES:
            key = f"recall_{name}"
            t = _mean([r.get(key, math.nan) for r in at_n])
            s = _mean([r["on_synthetic"].get(key, math.nan) for r in at_n])
            if not (math.isnan(t) and math.isnan(s)):
                rows.append((n, name, t, s, flagged(t, s)))
    return rows


def seen_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What each flagged class of :func:`seen_rows` means and what to do, one line each."""
    return list(dict.fromkeys(_meaning(name, n, t, s)
                              for n, name, t, s, flag in seen_rows(runs) if flag))


def seen_markdown(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``evaluation.md`` section: :func:`seen_rows` as a table, then :func:`seen_notes`.
    Empty when no run recorded it (runs saved before it existed)."""
    rows = seen_rows(runs)
    if not rows:
        return []
    lines = ["## What a segmenter trained on the real pairs sees in the synthetic pairs", "",
             "The real-only runs' segmenters, run on the synthetic images: the share of each "
             "class's pixels called that class there and in the real test images (mean over "
             "seeds). A class missed far more in the synthetic pairs (flagged: missed more than "
             f"{FLAG_RATIO}x and {FLAG_MARGIN:.0%} more than in the test images) is where the "
             "pairs teach something the real images do not show.", "",
             "| real pairs | class | found in the test images | found in the synthetic pairs "
             "| flagged |", "|---|---|---|---|---|"]
    lines += [f"| {n or 'all'} | {name} | {_pct(t)} | {_pct(s)} | "
              f"{'**yes**' if flag else 'no'} |" for n, name, t, s, flag in rows]
    notes = seen_notes(runs)
    return [*lines, "", *[f"- {x}" for x in notes], *([""] if notes else [])]


def _mean(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.1%}"


def _meaning(name: str, n: int, test: float, synthetic: float) -> str:
    where = f" ({n} real pairs)" if n else ""
    if name == CLASS_NAMES[0]:
        return (f"{name}{where}: {1 - synthetic:.1%} of the synthetic pairs' {name} is "
                f"called an object (interior or boundary) against {1 - test:.1%} of the "
                "test images': the generator paints objects where its masks have none, "
                "and those pixels teach the segmenter that such objects are background "
                "(`--synthetic-ignore-off-mask`, the dock's 'objects off the mask', leaves "
                f"just those pixels out of the loss, `--synthetic-ignore 0` all the {name}; "
                "or curate those images out).")
    return (f"{name}{where}: found {synthetic:.1%} in the synthetic pairs against "
            f"{test:.1%} in the test images: the generator draws it unlike the real "
            "images, so the pairs teach a look of it that real images do not have (a "
            "generator trained longer, or shown more of it with `train --object-share`, "
            "draws it closer).")
