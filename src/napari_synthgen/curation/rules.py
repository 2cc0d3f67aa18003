"""Curation by a rule: accept or reject every generated pair into an export folder, headless.

Backs ``napari-synthgen curate``. Each pair of a paired folder (``generate``'s output) gets the
figures the Curate widget shows (:func:`quality.sample_figures` against a reference: a folder of
real pairs, else the statistics the generating model carries from its training data); a pair
whose ``score`` is at least ``min_score`` is accepted, the others are rejected (no
``min_score``: every pair is accepted). Decisions go through :class:`ExportSession`, so the
folder is the one the Curate widget writes and ``export`` reads, and a run stopped at any point
resumes: pairs already decided (their ``candidate`` in the provenance) are skipped. A (Z, Y, X)
pair is one sample, decided whole by its stack figures (:func:`.stacks.stack_figures`: ``score``
is the mean of its slices' scores); its files' voxel spacing is recorded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import ExportError
from .session import ExportSession

#: Called after each pair with (pairs done, pairs in all, the record written or None if skipped).
Progress = Callable[[int, int, dict[str, Any] | None], None]


@dataclass(frozen=True)
class CurateResult:
    """What a curate run decided: counts, the reference used and the export folder."""

    folder: Path
    accepted: int
    rejected: int
    skipped: int
    reference: str


def _reference(reference: str | os.PathLike | None, provenance: dict[str, dict[str, Any]]
               ) -> tuple[Any, str]:
    """(ReferenceStats or None, what it is): the real pairs given, else the generating
    model's training statistics (the first model named in generate.jsonl), else none."""
    from ..report import load_reference

    if reference is not None:
        stats, _real = load_reference(reference)
        return stats, str(reference)
    models = [rec["model"] for rec in provenance.values() if rec.get("model")]
    if models and Path(models[0]).exists():
        try:
            stats, _real = load_reference(models[0])
            return stats, f"training data of {Path(models[0]).name}"
        except ValueError:
            pass
    return None, "none"


def _decided(session: ExportSession) -> set[str]:
    """The candidates (absolute image paths) this export already holds a decision on."""
    ids = set(session.accepted) | set(session.rejected)
    return {rec["provenance"]["candidate"] for rec in session.records
            if rec.get("id") in ids and "candidate" in rec.get("provenance", {})}


def curate_by_rule(generated: str | os.PathLike, out: str | os.PathLike, *,
                   min_score: float | None = None,
                   reference: str | os.PathLike | None = None,
                   progress: Progress | None = None) -> CurateResult:
    """Accept pairs of ``generated`` scoring at least ``min_score`` into the export folder
    ``out`` and reject the others (all accepted without ``min_score``); resumes ``out``."""
    from ..generate import read_provenance
    from ..io import find_pairs
    from ..limits import check_range

    if min_score is not None:
        check_range("min_score", min_score, 0, 1)
    root = Path(generated)
    pairs = find_pairs(root)  # says what is missing before the export folder is made
    provenance = read_provenance(root)
    stats, source = _reference(reference, provenance)
    if min_score is not None and stats is None:
        raise ExportError("min_score needs a reference to score against: the model that made "
                          f"{root} records no training statistics; give reference=REAL_PAIRS "
                          "(a paired folder of real images).")
    counts = {"accept": 0, "reject": 0, "skip": 0}
    with ExportSession(out) as session:
        done = _decided(session)
        for i, pair in enumerate(pairs):
            record = _decide(session, pair, provenance, stats, min_score, done)
            counts["skip" if record is None else record["decision"]] += 1
            if progress is not None:
                progress(i + 1, len(pairs), record)
        folder = session.folder
    return CurateResult(folder, counts["accept"], counts["reject"], counts["skip"], source)


def _decide(session: ExportSession, pair: Any, provenance: dict[str, dict[str, Any]],
            stats: Any, min_score: float | None, done: set[str]) -> dict[str, Any] | None:
    """Score one pair and accept or reject it; None when the export already decided it."""
    from ..io import read_image, read_mask
    from .stacks import figures_of, is_stack, pair_spacing

    candidate = os.fspath(pair.image.absolute())
    if candidate in done:
        return None
    image, mask = read_image(pair.image), read_mask(pair.mask)
    figures = figures_of(image, mask, reference=stats)
    spacing = pair_spacing(pair.image, pair.mask) if is_stack(image) else None
    score = figures.get("score", float("nan"))
    keep = min_score is None or (math.isfinite(score) and score >= min_score)
    prov = {**provenance.get(f"images/{pair.image.name}", {}), "candidate": candidate,
            "rule": "accept all" if min_score is None else f"score >= {min_score}"}
    decide = session.accept if keep else session.reject
    return decide(image, mask, provenance=prov, quality=figures, spacing=spacing)
