"""Does the synthetic set make a segmenter better on real images? (``napari-synthgen evaluate``)

The same small segmenter (:mod:`.segmenter`), the same budget and the same seeds are trained
in three arms: real pairs only, real plus synthetic (``mix`` of every batch synthetic; or, with
``pretrain_synthetic``, the first half of the steps on synthetic pairs only and the second half
on real pairs only, with a fresh optimiser), and synthetic only. All arms weight the loss
with the class frequencies of the real and synthetic masks together, and seed s starts every
arm from the same initial weights. Each is scored on real test
images: Dice and IoU per class (pixels pooled over the test set) and the boundary class's F1
with a distance tolerance (as boundary benchmarks allow). Test images that also appear, by
content hash, among the training images are refused: synthetic data never enters the test set.

(Z, Y, X) pairs, synthetic or real, are split into 2-D slices named ``<stem>_zNNN`` for the
segmenter (a 2-D network: each slice is a training image, and the leak check compares slices,
so a test stack sharing one section with a training set is refused). Test stacks are predicted
slice by slice (:meth:`.segmenter.Segmenter.predict_stack`); their slices count in the pooled
figures like any test image, and each stack also gets its own row per run
(``evaluation_stacks.csv``: the figures pooled over its slices).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .masks import BOUNDARY, CLASS_NAMES, N_CLASSES

ARM_REAL = "real"
ARM_MIXED = "real+synthetic"
ARM_PRETRAIN = "synthetic-then-real"
ARM_SYNTHETIC = "synthetic"
#: The per-run figures, in table order.
METRICS: tuple[str, ...] = (
    *(f"dice_{n}" for n in CLASS_NAMES), *(f"iou_{n}" for n in CLASS_NAMES),
    "mean_dice", "boundary_f1")
#: The figures the comparison notes look at.
HEADLINE: tuple[str, ...] = ("mean_dice", "boundary_f1")

#: ``progress(stage, done, total)``: ``done`` of ``total`` training steps of the whole evaluation.
Progress = Callable[[str, int, int], None]


class LeakError(ValueError):
    """A test image that is also a training image (same pixel data)."""


@dataclass
class EvaluationResult:
    """Per-run figures, their mean and spread per arm, and what the comparison says."""

    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, tuple[float, float]]]   # arm -> metric -> (mean, std)
    notes: list[str]
    settings: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def arms(self) -> list[str]:
        return list(self.summary)


#: A folder's stacks: (stem, the names of its slices in order).
Stacks = list[tuple[str, list[str]]]


def _load(folder: str | Path
          ) -> tuple[list[str], list[tuple[np.ndarray, np.ndarray]], Stacks]:
    """Names and 2-D pairs of a paired folder, (Z, Y, X) pairs split into their slices
    (``<stem>_zNNN``), and which slices make each stack."""
    from .curation.stacks import is_stack, slice_names
    from .io import find_pairs, read_image, read_mask

    names: list[str] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    stacks: Stacks = []
    for p in find_pairs(folder):
        image, mask = read_image(p.image), read_mask(p.mask)
        if not is_stack(image):
            names.append(p.stem)
            pairs.append((image, mask))
            continue
        if mask.shape != image.shape:
            raise ValueError(f"{p.stem}: image stack {image.shape} and mask {mask.shape} "
                             "differ; each slice needs its mask (a (Z, Y, X) mask stack).")
        slices = slice_names(p.stem, image.shape[0])
        names += slices
        pairs += [(image[k], mask[k]) for k in range(image.shape[0])]
        stacks.append((p.stem, slices))
    return names, pairs, stacks


def check_no_leak(test: dict[str, np.ndarray], **training: dict[str, np.ndarray]) -> None:
    """Raise :class:`LeakError` when a test image's pixel data equals a training image's.

    ``test`` and each ``training`` set map names to images; the message lists every match.
    """
    from .io import sha256_array

    seen: dict[str, list[str]] = {}
    for label, images in training.items():
        for name, img in images.items():
            seen.setdefault(sha256_array(np.asarray(img)), []).append(f"{label}/{name}")
    leaks = [f"test image {name} is also {', '.join(seen[h])}"
             for name, img in test.items() if (h := sha256_array(np.asarray(img))) in seen]
    if leaks:
        raise LeakError("the test set must hold only images no arm trains on (compared by "
                        "pixel content):\n  " + "\n  ".join(leaks)
                        + "\nRemove them from the test folder or from the training folders.")


def confusion_counts(pred: np.ndarray, truth: np.ndarray, *, tolerance: float = 2.0
                     ) -> np.ndarray:
    """Counts for pooling over images: per class (tp, fp, fn), then boundary (predicted pixels
    within ``tolerance`` px of a true boundary, predicted boundary pixels, true boundary pixels
    within ``tolerance`` of a predicted one, true boundary pixels)."""
    from scipy import ndimage as ndi

    out = np.zeros(N_CLASSES * 3 + 4, dtype=np.int64)
    for c in range(N_CLASSES):
        p, t = pred == c, truth == c
        out[3 * c:3 * c + 3] = (int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()))
    p, t = pred == BOUNDARY, truth == BOUNDARY
    n_p, n_t = int(p.sum()), int(t.sum())
    hit_p = int((p & (ndi.distance_transform_edt(~t) <= tolerance)).sum()) if n_t else 0
    hit_t = int((t & (ndi.distance_transform_edt(~p) <= tolerance)).sum()) if n_p else 0
    out[N_CLASSES * 3:] = (hit_p, n_p, hit_t, n_t)
    return out


def scores_from_counts(counts: np.ndarray, truth_classes: set[int]) -> dict[str, float]:
    """Dice and IoU per class, ``mean_dice`` over the classes in the test masks, boundary F1
    (NaN where a figure is undefined: a class in neither prediction nor truth)."""
    out: dict[str, float] = {}
    for c, name in enumerate(CLASS_NAMES):
        tp, fp, fn = (int(v) for v in counts[3 * c:3 * c + 3])
        den = tp + fp + fn
        out[f"dice_{name}"] = 2 * tp / (2 * tp + fp + fn) if den else math.nan
        out[f"iou_{name}"] = tp / den if den else math.nan
    present = [out[f"dice_{CLASS_NAMES[c]}"] for c in sorted(truth_classes)]
    out["mean_dice"] = float(np.mean(present)) if present else math.nan
    hit_p, n_p, hit_t, n_t = (int(v) for v in counts[N_CLASSES * 3:])
    if n_t == 0:
        out["boundary_f1"] = math.nan
    else:
        prec = hit_p / n_p if n_p else 0.0
        rec = hit_t / n_t
        out["boundary_f1"] = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return out


def score_segmenter(segmenter: Any, test: Sequence[tuple[np.ndarray, np.ndarray]], *,
                    tolerance: float = 2.0) -> dict[str, float]:
    """A trained segmenter's figures on real test pairs (pixels pooled over the images)."""
    counts = np.zeros(N_CLASSES * 3 + 4, dtype=np.int64)
    truth_classes: set[int] = set()
    for image, mask in test:
        counts += confusion_counts(segmenter.predict(image), mask, tolerance=tolerance)
        truth_classes |= {int(c) for c in np.unique(mask)}
    return scores_from_counts(counts, truth_classes)


def score_test(segmenter: Any, test: Sequence[tuple[np.ndarray, np.ndarray]],
               names: Sequence[str], stacks: Stacks, *, tolerance: float = 2.0
               ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """:func:`score_segmenter`'s figures on the test slices, and one row per test stack (its
    slices predicted as a stack, figures pooled over them): ``stack``, ``n_slices``, the
    :data:`METRICS`."""
    index = {n: i for i, n in enumerate(names)}
    counts: dict[int, np.ndarray] = {}
    for _stem, slices in stacks:
        rows = [index[n] for n in slices]
        pred = segmenter.predict_stack(np.stack([test[i][0] for i in rows]))
        for k, i in enumerate(rows):
            counts[i] = confusion_counts(pred[k], test[i][1], tolerance=tolerance)
    for i, (image, mask) in enumerate(test):
        if i not in counts:
            counts[i] = confusion_counts(segmenter.predict(image), mask, tolerance=tolerance)

    def pooled(rows: Sequence[int]) -> dict[str, float]:
        total = np.sum([counts[i] for i in rows], axis=0)
        classes = {int(c) for i in rows for c in np.unique(test[i][1])}
        return scores_from_counts(total, classes)

    per_stack = [{"stack": stem, "n_slices": len(slices),
                  **pooled([index[n] for n in slices])} for stem, slices in stacks]
    return pooled(range(len(test))), per_stack


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan


def compare(summary: dict[str, dict[str, tuple[float, float]]], n_seeds: int) -> list[str]:
    """Plain sentences: each arm against real only, saying when the spread between seeds is
    larger than the difference (then the difference says nothing)."""
    notes = []
    base = summary.get(ARM_REAL)
    if base is None:
        return notes
    for arm, figs in summary.items():
        if arm == ARM_REAL:
            continue
        for metric in HEADLINE:
            (m, s), (m0, s0) = figs[metric], base[metric]
            if math.isnan(m) or math.isnan(m0):
                continue
            diff = m - m0
            spread = max((v for v in (s, s0) if not math.isnan(v)), default=math.nan)
            text = f"{arm} vs real: {metric} {diff:+.3f}"
            if n_seeds < 2:
                text += " (one seed: the spread between seeds is unknown; run --seeds 3)"
            elif spread >= abs(diff):
                text += (f": the spread between seeds ({spread:.3f}) is larger than the "
                         "difference, so this is no evidence either way")
            else:
                text += f" (larger than the spread between seeds, {spread:.3f})"
            notes.append(text)
    return notes


#: the smallest crop side: the segmenter down-samples three times
MIN_CROP = 8


def _check_settings(*, steps: int, seeds: int, mix: float, min_score: float | None,
                    batch_size: int, crop: int, tolerance: float, device: str) -> None:
    """Refuse settings out of range, and a batch of crops larger than free memory, before
    anything is read or trained (a :class:`~.limits.LimitError` naming the setting)."""
    from .limits import SEGMENTER_BYTES_PER_PX, check_memory, check_range

    check_range("steps", steps, 1)
    check_range("seeds", seeds, 1)
    check_range("mix", mix, 0, 1, low_open=True, high_open=True,
                what="the synthetic share of each batch")
    if min_score is not None:
        check_range("min_score", min_score, 0, 1)
    check_range("batch_size", batch_size, 1)
    check_range("crop", crop, MIN_CROP, what="crop side in px")
    check_range("tolerance", tolerance, 0, low_open=True, what="boundary distance in px")
    check_memory(batch_size * crop * crop * SEGMENTER_BYTES_PER_PX,
                 what=f"a batch of {batch_size} crops of {crop} px",
                 largest=lambda b: math.isqrt(int(b / (batch_size *
                                                           SEGMENTER_BYTES_PER_PX))),
                 option="crop", device=device)


def evaluate(real: str | Path, synthetic: str | Path, test: str | Path, *, steps: int = 150,
             seeds: int = 2, mix: float = 0.5, pretrain_synthetic: bool = False,
             min_score: float | None = None, batch_size: int = 4, crop: int = 128,
             base: int = 16, lr: float = 2e-3, device: str = "cpu", precision: str = "auto",
             tolerance: float = 2.0, arms: Sequence[str] | None = None,
             progress: Progress | None = None, out: str | Path | None = None
             ) -> EvaluationResult:
    """Train the small segmenter on real, real + synthetic and synthetic pairs (same budget,
    seeds 0..seeds-1) and score each on the real test pairs. Paired folders in, figures out.

    ``arms`` picks a subset of the arms (default all three). ``min_score`` keeps only synthetic
    pairs whose quality score (reference: the real folder; consistency: the seed-0 real-only
    segmenter) is at least that value. Raises :class:`LeakError` for a leaked test image.

    With ``out``, each arm x seed's figures are saved in ``out/runs/`` as it finishes and
    reused by a rerun with the same settings (a killed run resumes; more ``seeds`` add runs);
    other settings are refused (:class:`results.SettingsMismatchError`). ``out`` is checked for
    writing before anything is computed.
    """
    from . import quality
    from .results import check_writable
    from .segmenter import Phase, Pool, SegmenterConfig, train_segmenter

    if out is not None:
        check_writable(out)
    _check_settings(steps=steps, seeds=seeds, mix=mix, min_score=min_score,
                    batch_size=batch_size, crop=crop, tolerance=tolerance, device=device)
    start = time.perf_counter()
    real_names, real_pairs, real_stacks = _load(real)
    syn_names, syn_pairs, syn_stacks = _load(synthetic)
    test_names, test_pairs, test_stacks = _load(test)
    check_no_leak(dict(zip(test_names, (p[0] for p in test_pairs), strict=True)),
                  real=dict(zip(real_names, (p[0] for p in real_pairs), strict=True)),
                  synthetic=dict(zip(syn_names, (p[0] for p in syn_pairs), strict=True)))
    mixed = ARM_PRETRAIN if pretrain_synthetic else ARM_MIXED
    all_arms = [ARM_REAL, mixed, ARM_SYNTHETIC]
    chosen = list(arms) if arms is not None else all_arms
    unknown = [a for a in chosen if a not in all_arms]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {all_arms}.")
    if min_score is not None and ARM_REAL not in chosen:
        chosen.insert(0, ARM_REAL)  # the quality filter uses the real-only segmenter
    chosen = [a for a in all_arms if a in chosen]
    n_syn = round(mix * batch_size)
    if ARM_MIXED in chosen and not 0 < n_syn < batch_size:
        raise ValueError(f"mix {mix} of a batch of {batch_size} gives {n_syn} synthetic crops "
                         "per batch, so the mixed arm would not mix; choose a mix or batch "
                         "size that puts both kinds in each batch.")
    real_pool = Pool.from_pairs(real_pairs, real_names)
    syn_pool = Pool.from_pairs(syn_pairs, syn_names)
    weights_from = [real_pool, syn_pool]
    total = steps * seeds * len(chosen)
    done = 0
    runs: list[dict[str, Any]] = []
    settings: dict[str, Any] = {
        "real": str(real), "synthetic": str(synthetic), "test": str(test),
        "n_real": len(real_pairs), "n_synthetic": len(syn_pairs), "n_test": len(test_pairs),
        "steps": steps, "seeds": seeds, "mix": mix, "pretrain_synthetic": pretrain_synthetic,
        "min_score": min_score, "batch_size": batch_size, "crop": crop, "base": base, "lr": lr,
        "device": device, "tolerance": tolerance}
    if real_stacks or syn_stacks or test_stacks:  # absent for 2-D sets: old results match
        settings["n_stacks"] = [len(real_stacks), len(syn_stacks), len(test_stacks)]
    store = None if out is None else _RunStore(Path(out), settings, (
        (real_names, real_pairs), (syn_names, syn_pairs), (test_names, test_pairs)))
    kept_syn = syn_pool
    if store is not None and min_score is not None and (kept := store.kept()) is not None:
        kept_syn = _kept_pool(syn_pairs, syn_names, kept, settings)
    for arm in chosen:
        for seed in range(seeds):
            stage = f"{arm} seed {seed}"
            saved = None if store is None else store.run(arm, seed)
            if saved is not None:  # finished by an earlier, interrupted run
                runs.append(saved["run"])
                for key in ("precision", "precision_rule", "class_weights"):
                    settings.setdefault(key, saved[key])
                done += steps
                if progress is not None:
                    progress(f"{stage} (saved)", done, total)
                continue
            cfg = SegmenterConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr,
                                  base=base, seed=seed, device=device, precision=precision)
            if arm == ARM_REAL:
                phases = [Phase(steps, real_pool)]
            elif arm == ARM_SYNTHETIC:
                phases = [Phase(steps, kept_syn)]
            elif arm == ARM_PRETRAIN:
                phases = [Phase(steps // 2, kept_syn), Phase(steps - steps // 2, real_pool)]
            else:
                phases = [Phase(steps, real_pool, kept_syn, mix)]
            phases = [p for p in phases if p.steps > 0]
            offset = done

            def step_cb(d: int, t: int, offset: int = offset, stage: str = stage) -> None:
                if progress is not None:
                    progress(stage, offset + d, total)

            seg = train_segmenter(phases, cfg, progress=step_cb, weights_from=weights_from)
            done += steps
            figures, per_stack = score_test(seg, test_pairs, test_names, test_stacks,
                                            tolerance=tolerance)
            run = {"arm": arm, "seed": seed, **figures,
                   "seconds": round(seg.seconds, 1), "precision": seg.precision}
            if per_stack:
                run["stacks"] = per_stack
            runs.append(run)
            settings.setdefault("precision", seg.precision)
            settings.setdefault("precision_rule", seg.precision_rule)
            settings.setdefault("class_weights", [round(float(w), 4) for w in seg.weights])
            if arm == ARM_REAL and seed == 0 and min_score is not None:
                kept_syn = _filter_by_score(syn_pairs, syn_names, seg, real_pairs, min_score,
                                            settings, quality, syn_stacks)
                if store is not None:  # before the run: a saved run implies its filter
                    store.save_kept(kept_syn.names)
            if store is not None:
                store.save_run(run, seg.precision_rule,
                               [round(float(w), 4) for w in seg.weights])
    summary = {arm: {m: _mean_std([r[m] for r in runs if r["arm"] == arm]) for m in METRICS}
               for arm in chosen}
    settings["seconds"] = round(time.perf_counter() - start, 1)
    return EvaluationResult(runs, summary, compare(summary, seeds), settings)


#: Result files of an evaluate run (kept when settings differ).
EVALUATE_OUTPUTS: tuple[str, ...] = ("evaluation_runs.csv", "evaluation.csv", "evaluation.md",
                                     "evaluation.png", "evaluation_stacks.csv", "runs")


class _RunStore:
    """Each finished arm x seed in ``out/runs/``, under the settings recorded in
    ``out/evaluate_settings.json`` (those that change a run's figures: not ``seeds``)."""

    def __init__(self, out: Path, settings: dict[str, Any],
                 data: Sequence[tuple[list[str], list[tuple[np.ndarray, np.ndarray]]]]) -> None:
        from .results import fingerprint, open_results

        self.folder = out / "runs"
        fixed = {k: v for k, v in settings.items()
                 if k not in ("seeds", "real", "synthetic", "test")}
        fixed["data"] = [fingerprint((n, im, m) for n, (im, m) in zip(names, pairs, strict=True))
                         for names, pairs in data]
        open_results(out, "evaluate", fixed, EVALUATE_OUTPUTS)

    def _path(self, arm: str, seed: int) -> Path:
        return self.folder / f"{arm}_seed{seed}.json"

    def run(self, arm: str, seed: int) -> dict[str, Any] | None:
        """A finished run's record, or None."""
        from .results import load_json

        rec = load_json(self._path(arm, seed))
        return rec if isinstance(rec, dict) and "run" in rec else None

    def save_run(self, run: dict[str, Any], precision_rule: str,
                 class_weights: list[float]) -> None:
        from .results import save_json

        save_json(self._path(run["arm"], run["seed"]),
                  {"run": run, "precision": run["precision"], "precision_rule": precision_rule,
                   "class_weights": class_weights})

    def kept(self) -> list[str] | None:
        """The names the quality threshold kept, when the filtering run finished before."""
        from .results import load_json

        names = load_json(self.folder / "kept_synthetic.json")
        return names if isinstance(names, list) else None

    def save_kept(self, names: list[str]) -> None:
        from .results import save_json

        save_json(self.folder / "kept_synthetic.json", list(names))


def _kept_pool(syn_pairs: list[tuple[np.ndarray, np.ndarray]], syn_names: list[str],
               kept: list[str], settings: dict[str, Any]) -> Any:
    """The synthetic pool an earlier run's quality filter kept (same data, same settings)."""
    from .segmenter import Pool

    keep = set(kept)
    chosen = [(p, n) for p, n in zip(syn_pairs, syn_names, strict=True) if n in keep]
    settings["n_synthetic_kept"] = len(chosen)
    return Pool.from_pairs([c[0] for c in chosen], [c[1] for c in chosen])


def _filter_by_score(syn_pairs: list[tuple[np.ndarray, np.ndarray]], syn_names: list[str],
                     seg: Any, real_pairs: list[tuple[np.ndarray, np.ndarray]],
                     min_score: float, settings: dict[str, Any], quality: Any,
                     stacks: Stacks = ()) -> Any:
    """The synthetic pairs scoring at least ``min_score``; a stack's slices are kept or
    dropped together, by the mean of their scores (a stack's ``score``, as in curation)."""
    from .segmenter import Pool

    reference = quality.reference_from_pairs(real_pairs)
    scores = {name: quality.sample_figures(image, mask, reference=reference,
                                           predicted=seg.predict(image))["score"]
              for (image, mask), name in zip(syn_pairs, syn_names, strict=True)}
    for _stem, slices in stacks:
        finite = [scores[n] for n in slices if math.isfinite(scores[n])]
        mean = float(np.mean(finite)) if finite else math.nan
        scores.update({n: mean for n in slices})
    keep = [((image, mask), name) for (image, mask), name in zip(syn_pairs, syn_names,
                                                                 strict=True)
            if scores[name] >= min_score]
    settings["n_synthetic_kept"] = len(keep)
    if not keep:
        raise ValueError(f"no synthetic pair has a quality score >= {min_score}; lower min_score "
                         "(see `napari-synthgen report` for the scores).")
    return Pool.from_pairs([k[0] for k in keep], [k[1] for k in keep])


# --------------------------------------------------------------------------- outputs


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(result: EvaluationResult) -> str:
    """The summary as Markdown: settings, one row per arm (mean ± std over seeds), notes."""
    s = result.settings
    cols = [m for m in METRICS if any(not math.isnan(result.summary[a][m][0])
                                      for a in result.summary)]
    how = ", pre-train then fine-tune" if s["pretrain_synthetic"] else ""
    lines = [
        "# Does the synthetic set help a segmenter on real images?", "",
        f"Real pairs {s['n_real']}, synthetic pairs {s.get('n_synthetic_kept', s['n_synthetic'])}"
        f" (of {s['n_synthetic']}), real test images {s['n_test']}. Budget: {s['steps']} steps "
        f"of batch {s['batch_size']} at {s['crop']} px per run, seeds 0..{s['seeds'] - 1}, "
        f"synthetic share {s['mix']}{how}"
        f"; precision {s.get('precision')} ({s.get('precision_rule')}); boundary F1 tolerance "
        f"{s['tolerance']} px; {s['seconds']} s in all.", "",
        "| arm | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols)]
    for arm, figs in result.summary.items():
        lines.append(f"| {arm} | " + " | ".join(_fmt(*figs[c]) for c in cols) + " |")
    lines += ["", "Mean ± standard deviation over seeds; Dice/IoU pool the pixels of all test "
              "images; n/a: the class is in neither prediction nor truth.", ""]
    if s.get("n_stacks"):
        r, y, t = s["n_stacks"]
        lines += [f"(Z, Y, X) stacks were split into 2-D slices, counted above as pairs: real "
                  f"{r}, synthetic {y}, test {t} stack(s). Test stacks are predicted slice by "
                  "slice; each stack's figures, per arm and seed, are in "
                  "evaluation_stacks.csv.", ""]
    lines += [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_outputs(result: EvaluationResult, out: str | Path) -> list[Path]:
    """Write ``evaluation_runs.csv`` (one row per arm and seed), ``evaluation.csv`` (mean and
    std per arm), with test stacks ``evaluation_stacks.csv`` (one row per arm, seed and stack),
    ``evaluation.md`` and ``evaluation.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs_csv, sum_csv = out / "evaluation_runs.csv", out / "evaluation.csv"
    keys = ["arm", "seed", *METRICS, "seconds", "precision"]
    with runs_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in result.runs:
            w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in keys})
    with sum_csv.open("w", newline="", encoding="utf-8") as fh:
        w2 = csv.writer(fh)
        w2.writerow(["arm", "n_seeds", *[f"{m}_{x}" for m in METRICS for x in ("mean", "std")]])
        for arm, figs in result.summary.items():
            w2.writerow([arm, result.settings["seeds"],
                         *[f"{v:.6f}" for m in METRICS for v in figs[m]]])
    stack_rows = [{"arm": r["arm"], "seed": r["seed"], **row}
                  for r in result.runs for row in r.get("stacks", [])]
    stacks_csv = out / "evaluation_stacks.csv"
    if stack_rows:
        stack_keys = ["arm", "seed", "stack", "n_slices", *METRICS]
        with stacks_csv.open("w", newline="", encoding="utf-8") as fh:
            w3 = csv.DictWriter(fh, fieldnames=stack_keys)
            w3.writeheader()
            for row in stack_rows:
                w3.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k])
                             for k in stack_keys})
    md = out / "evaluation.md"
    md.write_text(markdown_table(result), encoding="utf-8")
    png = out / "evaluation.png"
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    shown = [m for m in ("dice_interior", "dice_boundary", "dice_background", "boundary_f1")
             if any(not math.isnan(result.summary[a][m][0]) for a in result.summary)]
    width = 0.8 / max(len(result.summary), 1)
    for i, (arm, figs) in enumerate(result.summary.items()):
        xs = np.arange(len(shown)) + i * width
        means = [figs[m][0] for m in shown]
        ax.bar(xs, means, width, label=arm)
        for seed_run in (r for r in result.runs if r["arm"] == arm):
            ax.plot(xs, [seed_run[m] for m in shown], "k.", ms=4)
    ax.set_xticks(np.arange(len(shown)) + width * (len(result.summary) - 1) / 2, shown)
    ax.set_ylim(0, 1)
    ax.set_ylabel("on real test images (dots: seeds)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    result.files = [runs_csv, sum_csv, *([stacks_csv] if stack_rows else []), md, png]
    return result.files
