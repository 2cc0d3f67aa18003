"""Does the synthetic set make a segmenter better on real images? (``napari-synthgen evaluate``)

The same small segmenter (:mod:`.segmenter`), the same budget and the same seeds are trained
in three arms: real pairs only, real plus synthetic (``mix`` of every batch synthetic; or, with
``pretrain_synthetic``, the first half of the steps on synthetic pairs only and the second half
on real pairs only, with a fresh optimiser; with ``pretrain_steps``, that many steps on the
synthetic pairs and then the whole budget on the real ones), and synthetic only. All arms
weight the loss with the class frequencies of the real and synthetic masks together, and seed
s starts every arm from the same initial weights. Each is scored on real test images: Dice
and IoU per class (pixels pooled over the test set) and the boundary class's F1 with a
distance tolerance (as boundary benchmarks allow). Test images that also appear, by
content hash, among the training images are refused: synthetic data never enters the test set.

(Z, Y, X) pairs, synthetic or real, are split into 2-D slices named ``<stem>_zNNN`` for the
segmenter (a 2-D network: each slice is a training image, and the leak check compares slices,
so a test stack sharing one section with a training set is refused). Test stacks are predicted
slice by slice (:meth:`.segmenter.Segmenter.predict_stack`); their slices count in the pooled
figures like any test image, and each stack also gets its own row per run
(``evaluation_stacks.csv``: the figures pooled over its slices).

With ``real_sizes`` the evaluation becomes a study of how the gain changes with the amount of
real data: for each size n and seed s the real-only and real + synthetic arms train on the
first n real pairs of a permutation drawn from seed s (so one seed's subsets are nested), the
synthetic-only arm runs once per seed. The real-only arm records a validation curve (held-out
real pairs not in its subset, else its training loss only), and each size gets the paired
difference real + synthetic minus real-only per seed and test image with a bootstrap 95%
confidence interval (:func:`paired_ci`).

What it writes (``evaluation.md``, the CSV files, the figures) is :mod:`.evaluation_report`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .masks import BOUNDARY, CLASS_NAMES, N_CLASSES, MaskSource
from .segmenter import check_loss
from .synthetic_seen import (
    off_mask,
    recalls_from_counts,
    seen_in,
)

ARM_REAL = "real"
ARM_MIXED = "real+synthetic"
ARM_PRETRAIN = "synthetic-then-real"
ARM_SYNTHETIC = "synthetic"
#: The per-run figures, in table order.
METRICS: tuple[str, ...] = (
    *(f"dice_{n}" for n in CLASS_NAMES), *(f"iou_{n}" for n in CLASS_NAMES),
    "mean_dice", "boundary_f1", "dice_objects")
#: The figures the comparison notes look at: ``dice_interior`` is the objects' own Dice (cell
#: interiors; on organelle masks the organelles, where mean Dice is mostly the background's
#: and boundary F1 a thin ring's), as in the ``--real-sizes`` study.
HEADLINE: tuple[str, ...] = ("mean_dice", "dice_interior", "boundary_f1")

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
    #: with ``real_sizes``: one row per size and arm (:func:`size_rows`)
    sizes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def arms(self) -> list[str]:
        return list(self.summary)


#: A folder's stacks: (stem, the names of its slices in order).
Stacks = list[tuple[str, list[str]]]


def _load(folder: str | Path, read_as: MaskSource = "auto", boundary_width: int = 2
          ) -> tuple[list[str], list[tuple[np.ndarray, np.ndarray]], Stacks]:
    """Names and 2-D pairs of a paired folder, (Z, Y, X) pairs split into their slices
    (``<stem>_zNNN``), and which slices make each stack; masks read as ``read_as`` says."""
    from .curation.stacks import is_stack, slice_names
    from .io import find_pairs, read_image, read_mask

    names: list[str] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    stacks: Stacks = []
    for p in find_pairs(folder):
        image = read_image(p.image)
        mask = read_mask(p.mask, read_as, boundary_width=boundary_width)
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


def check_no_leak(test: dict[str, np.ndarray], *, hashes: dict[str, str] | None = None,
                  **training: dict[str, np.ndarray]) -> None:
    """Raise :class:`LeakError` when a test image's pixel data equals a training image's.

    ``test`` and each ``training`` set map names to images; ``hashes`` maps more names to the
    SHA-256 of their pixels (e.g. the images a generator learned from, as its model file
    records them); the message lists every match.
    """
    from .io import sha256_array

    seen: dict[str, list[str]] = {}
    for name, digest in (hashes or {}).items():
        seen.setdefault(digest, []).append(name)
    for label, images in training.items():
        for name, img in images.items():
            seen.setdefault(sha256_array(np.asarray(img)), []).append(f"{label}/{name}")
    leaks = [f"test image {name} is also {', '.join(seen[h])}"
             for name, img in test.items() if (h := sha256_array(np.asarray(img))) in seen]
    if leaks:
        raise LeakError("the test set must hold only images no arm trains on (compared by "
                        "pixel content):\n  " + "\n  ".join(leaks)
                        + "\nRemove them from the test folder or from the training folders (a "
                        "generator's: train it again without them).")


def generator_seen(synthetic: str | Path) -> dict[str, str]:
    """'generator MODEL/image name' -> SHA-256 of every image the generators of a synthetic
    folder learned from, read from the model files its ``generate.jsonl`` names (models made
    before they recorded it, or no longer on disk, add nothing)."""
    import contextlib

    from .generate import read_provenance
    from .models.checkpoints.common import CheckpointError
    from .models.checkpoints.ours import read_document

    models = {rec.get("model") for rec in read_provenance(Path(synthetic)).values()}
    seen: dict[str, str] = {}
    for model in sorted(m for m in models if isinstance(m, str)):
        path = Path(model)
        if path.suffix != ".safetensors" or not path.is_file():
            continue
        with contextlib.suppress(CheckpointError, OSError):
            doc = read_document(path) or {}
            prov = doc.get("provenance") or {}
            for name, digest in (prov.get("seen_sha256") or {}).items():
                seen[f"generator {path.name}/{name}"] = digest
            start = doc.get("init_from") or {}  # a fine-tuned model: what its start saw too
            for name, digest in (start.get("seen_sha256") or {}).items():
                seen[f"generator {path.name} (started from {start.get('file')})/{name}"] = digest
    return seen


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


def _objects_dice(counts: np.ndarray) -> float:
    """Dice of the objects as a user outlines them (interior and boundary together, against
    class 0) from the per-class counts: on organelle masks the organelles whole, whose
    interior-only Dice counts a predicted boundary ring as a miss."""
    tp0, fp0, fn0 = (int(v) for v in counts[0:3])
    total = sum(int(counts[3 * c]) + int(counts[3 * c + 1]) for c in range(N_CLASSES))
    tp = total - tp0 - fp0 - fn0  # neither predicted nor true class 0
    den = 2 * tp + fn0 + fp0  # false objects: true class 0 predicted otherwise, and back
    return 2 * tp / den if den else math.nan


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
    out["dice_objects"] = _objects_dice(counts) if 0 in truth_classes else math.nan
    out.update(recalls_from_counts(counts))
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
    pooled, per_stack, _ = score_test_images(segmenter, test, names, stacks,
                                             tolerance=tolerance)
    return pooled, per_stack


def score_test_images(segmenter: Any, test: Sequence[tuple[np.ndarray, np.ndarray]],
                      names: Sequence[str], stacks: Stacks, *, tolerance: float = 2.0
                      ) -> tuple[dict[str, float], list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`score_test`'s figures, and one row per test image (``image`` and its own
    :data:`METRICS`), which the study pairs between arms."""
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
    per_image = [{"image": n, **pooled([i])} for i, n in enumerate(names)]
    return pooled(range(len(test))), per_stack, per_image


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


def check_ignore(classes: Sequence[int]) -> tuple[int, ...]:
    """The synthetic classes to ignore, sorted without repeats; refused unless they are mask
    classes and leave at least one class that teaches."""
    chosen = tuple(sorted({int(c) for c in classes}))
    wrong = [c for c in chosen if not 0 <= c < N_CLASSES]
    if wrong:
        raise ValueError(f"synthetic_ignore {wrong}: the mask classes are 0 (background), 1 "
                         "(interior) and 2 (boundary); give some of those, e.g. 0.")
    if len(chosen) == N_CLASSES:
        raise ValueError("synthetic_ignore names every class, so the synthetic pairs would "
                         "teach nothing; leave at least one class out of it.")
    return chosen


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
             progress: Progress | None = None, out: str | Path | None = None,
             real_sizes: Sequence[int] | None = None, val_every: int | None = None,
             read_as: MaskSource = "auto", boundary_width: int = 2,
             synthetic_ignore: Sequence[int] = (), loss: str = "weighted_ce",
             synthetic_ignore_off_mask: bool = False,
             pretrain_steps: int | None = None,
             real_runs_from: str | Path | None = None) -> EvaluationResult:
    """Train the small segmenter on real, real + synthetic and synthetic pairs (same budget,
    seeds 0..seeds-1) and score each on the real test pairs. Paired folders in, figures out.

    ``arms`` picks a subset of the arms (default all three). ``min_score`` keeps only synthetic
    pairs whose quality score (reference: the real folder; consistency: the seed-0 real-only
    segmenter) is at least that value. Raises :class:`LeakError` for a leaked test image.
    ``read_as`` and ``boundary_width`` say how the masks of ``real`` and ``test`` are read
    (:func:`masks.coerce_mask`, e.g. ``binary`` for 0/255 organelle masks); the synthetic
    folder holds what ``generate`` wrote, class masks. ``synthetic_ignore`` lists classes whose
    pixels in the synthetic pairs teach nothing (e.g. ``(0,)``: a class the generator draws
    badly); the real pairs teach every class, and the class weights stay those of the masks.
    ``loss`` is the segmenter's (:data:`segmenter.LOSSES`): ``dice_ce`` for sparse objects,
    whose class weights make ``weighted_ce`` over-call them. ``synthetic_ignore_off_mask``
    leaves out of the loss the class-0 pixels of the synthetic pairs that the real-only
    segmenter of the same seed and number of real pairs calls an object (objects the generator
    painted where its masks have none, :mod:`synthetic_seen`); that segmenter is trained again
    when its run was saved by an earlier call (the same bytes).

    ``pretrain_steps`` (with ``pretrain_synthetic``) gives the pre-training its own steps on
    the synthetic pairs, then the whole ``steps`` on the real ones, so the arm sees as many
    real crops as real only does; without it the two phases share ``steps`` half and half.

    ``real_sizes`` (e.g. ``(1, 2, 5)``) makes it a study: the real arms run at each size on
    subsets of the real pairs (:func:`real_subset`), the real-only arm records a validation
    curve every ``val_every`` steps (default a tenth of ``steps``), and each size gets the
    paired difference with its confidence interval (``result.sizes``).

    With ``out``, each arm x seed's figures are saved in ``out/runs/`` as it finishes and
    reused by a rerun with the same settings (a killed run resumes; more ``seeds`` add runs);
    other settings are refused (:class:`results.SettingsMismatchError`). ``out`` is checked for
    writing before anything is computed. ``real_runs_from`` (with ``out``) copies in the
    real-only runs of an earlier ``out`` whose settings agree on all a real-only run depends
    on (:data:`NOT_REAL_ONLY` may differ): an ablation of what the other arms do with the
    synthetic pairs then trains only those arms.
    """
    from . import quality
    from .results import check_writable
    from .segmenter import Phase, Pool, SegmenterConfig, train_segmenter

    if out is not None:
        check_writable(out)
    elif real_runs_from is not None:
        raise ValueError("real_runs_from copies runs into out; give out too.")
    _check_settings(steps=steps, seeds=seeds, mix=mix, min_score=min_score,
                    batch_size=batch_size, crop=crop, tolerance=tolerance, device=device)
    ignore = check_ignore(synthetic_ignore)
    check_loss(loss)  # before anything is read
    if pretrain_steps is not None:
        from .limits import check_range

        if not pretrain_synthetic:
            raise ValueError("pretrain_steps sets the synthetic pre-training of "
                             "pretrain_synthetic; use both, or neither.")
        check_range("pretrain_steps", pretrain_steps, 1,
                    what="steps on the synthetic pairs before the real ones")
    study = real_sizes is not None
    if study:
        from .limits import check_range

        if min_score is not None:
            raise ValueError("min_score cannot be combined with real_sizes (the quality "
                             "filter needs the real-only segmenter of all real pairs); "
                             "filter the synthetic set first (`napari-synthgen curate "
                             "--min-score`) and evaluate the curated folder.")
        if val_every is None:
            val_every = max(1, steps // 10)
        check_range("val_every", val_every, 1, what="training steps between validation points")
    elif val_every is not None:
        raise ValueError("val_every applies to the study only; use it with real_sizes.")
    mixed = ARM_PRETRAIN if pretrain_synthetic else ARM_MIXED
    all_arms = [ARM_REAL, mixed, ARM_SYNTHETIC]
    chosen = list(arms) if arms is not None else all_arms
    unknown = [a for a in chosen if a not in all_arms]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {all_arms}.")
    start = time.perf_counter()
    real_names, real_pairs, real_stacks = _load(real, read_as, boundary_width)
    syn_names, syn_pairs, syn_stacks = _load(synthetic)
    test_names, test_pairs, test_stacks = _load(test, read_as, boundary_width)
    check_no_leak(dict(zip(test_names, (p[0] for p in test_pairs), strict=True)),
                  hashes=generator_seen(synthetic),
                  real=dict(zip(real_names, (p[0] for p in real_pairs), strict=True)),
                  synthetic=dict(zip(syn_names, (p[0] for p in syn_pairs), strict=True)))
    units = real_units(real_names, real_stacks)
    sizes: list[int | None] = [None]
    if study:
        sizes = list(check_sizes(real_sizes, len(units), real))  # type: ignore[arg-type]
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
    # the runs, in order: (arm, size or None, seed); the synthetic arm needs no size
    jobs = [(arm, n, seed) for n in sizes for arm in chosen if arm != ARM_SYNTHETIC
            for seed in range(seeds)]
    if ARM_SYNTHETIC in chosen:
        jobs += [(ARM_SYNTHETIC, None, seed) for seed in range(seeds)]
    if not study:  # arm by arm, as before the study existed
        jobs.sort(key=lambda j: chosen.index(j[0]))

    def job_steps(arm: str) -> int:
        return steps + (pretrain_steps or 0) * (arm == ARM_PRETRAIN)

    total = sum(job_steps(arm) for arm, _, _ in jobs)
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
    if read_as != "auto":  # absent for class masks: old results match
        settings["read_as"] = [read_as, boundary_width]
    if ignore:  # absent when every class teaches: old results match
        settings["synthetic_ignore"] = list(ignore)
    if synthetic_ignore_off_mask:  # absent without it: old results match
        settings["synthetic_ignore_off_mask"] = True
    if loss != "weighted_ce":  # absent for the first loss: old results match
        settings["loss"] = loss
    if pretrain_steps is not None:  # absent for the half-and-half split: old results match
        settings["pretrain_steps"] = pretrain_steps
    if study:  # absent without the study: old results match
        settings["real_sizes"] = sizes
        settings["val_every"] = val_every
        settings["n_real_units"] = len(units)
    store = None if out is None else _RunStore(Path(out), settings, (
        (real_names, real_pairs), (syn_names, syn_pairs), (test_names, test_pairs)))
    if store is not None and real_runs_from is not None:
        store.copy_real_runs(Path(real_runs_from))
    kept_syn = syn_pool
    #: with synthetic_ignore_off_mask: the off-mask pixels of each real-only (size, seed)
    off_masks: dict[tuple[int | None, int], dict[str, np.ndarray]] = {}
    if store is not None and min_score is not None and (kept := store.kept()) is not None:
        kept_syn = _kept_pool(syn_pairs, syn_names, kept, settings)
    for arm, n, seed in jobs:
        stage = f"{arm} seed {seed}" if n is None else f"{arm} n={n} seed {seed}"
        saved = None if store is None else store.run(arm, seed, n)
        if saved is not None:  # finished by an earlier, interrupted run
            runs.append(saved["run"])
            for key in ("precision", "precision_rule", "class_weights"):
                settings.setdefault(key, saved[key])
            done += job_steps(arm)
            if progress is not None:
                progress(f"{stage} (saved)", done, total)
            continue
        cfg = SegmenterConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr,
                              base=base, seed=seed, device=device, precision=precision,
                              loss=loss)
        pool, extra = real_pool, {}
        held: list[tuple[np.ndarray, np.ndarray]] = []
        if n is not None:
            order = subset_order(len(units), seed)
            pool = _subset_pool(real_pool, units, n, seed)
            extra = {"n_real": n, "real_subset": list(pool.names)}
            left = [i for u in order[n:n + VAL_UNITS] for i in units[u]][:VAL_IMAGES]
            held = [real_pairs[i] for i in left]
            if arm == ARM_REAL:
                extra["val_source"] = (
                    "held-out real pairs " + ", ".join(real_names[i] for i in left) if left
                    else "training loss only (every real pair is in the subset)")
        syn = replace(kept_syn, ignore=ignore)  # what the synthetic pairs teach
        off_mask_share = None
        if synthetic_ignore_off_mask and arm != ARM_REAL:
            # the real-only segmenter of this seed and size (synthetic only: the largest)
            n_ref = n if n is not None or not study else max(s for s in sizes if s)
            if (n_ref, seed) not in off_masks:  # its run was saved earlier: train it again
                if progress is not None:
                    progress(f"{ARM_REAL} seed {seed}, again for its calls", done, total)
                ref = real_pool if n_ref is None else _subset_pool(real_pool, units, n_ref, seed)
                ref_seg = train_segmenter([Phase(steps, ref)], cfg, weights_from=weights_from)
                off_masks[(n_ref, seed)] = dict(zip(syn_names, off_mask(
                    [ref_seg.predict(image) for image, _ in syn_pairs], syn_pairs), strict=True))
            where = off_masks[(n_ref, seed)]
            syn = replace(syn, ignore_pixels=[where[name] for name in syn.names])
            off_mask_share = (sum(int(m.sum()) for m in syn.ignore_pixels)
                              / sum(m.size for m in syn.ignore_pixels))
        if arm == ARM_REAL:
            phases = [Phase(steps, pool)]
        elif arm == ARM_SYNTHETIC:
            phases = [Phase(steps, syn)]
        elif arm == ARM_PRETRAIN and pretrain_steps:
            phases = [Phase(pretrain_steps, syn), Phase(steps, pool)]
        elif arm == ARM_PRETRAIN:
            phases = [Phase(steps // 2, syn), Phase(steps - steps // 2, pool)]
        else:
            phases = [Phase(steps, pool, syn, mix)]
        phases = [p for p in phases if p.steps > 0]
        offset = done

        def step_cb(d: int, t: int, offset: int = offset, stage: str = stage) -> None:
            if progress is not None:
                progress(stage, offset + d, total)

        curve: list[dict[str, Any]] = []

        def watch(d: int, loss: float, seg: Any, held: list = held,
                  curve: list = curve) -> None:
            point: dict[str, Any] = {"step": d, "train_loss": loss}
            if held:
                figs = score_segmenter(seg, held, tolerance=tolerance)
                point.update({f"val_{m}": figs[m] for m in STUDY_METRICS})
            curve.append(point)

        watching = study and arm == ARM_REAL
        seg = train_segmenter(phases, cfg, progress=step_cb, weights_from=weights_from,
                              watch=watch if watching else None,
                              watch_every=val_every or 0)
        done += job_steps(arm)
        figures, per_stack, per_image = score_test_images(seg, test_pairs, test_names,
                                                          test_stacks, tolerance=tolerance)
        run = {"arm": arm, "seed": seed, **figures,
               "seconds": round(seg.seconds, 1), "precision": seg.precision}
        if arm == ARM_REAL:  # what it sees in the synthetic pairs (synthetic_seen)
            predicted = [seg.predict(image) for image, _ in syn_pairs]  # once, for both
            run["on_synthetic"] = seen_in(predicted, syn_pairs)
            if synthetic_ignore_off_mask:
                off_masks[(n, seed)] = dict(zip(syn_names, off_mask(predicted, syn_pairs),
                                                strict=True))
        if off_mask_share is not None:
            run["synthetic_ignored_share"] = off_mask_share
        if per_stack:
            run["stacks"] = per_stack
        if study:
            run.update(extra)
            run["images"] = per_image
            if watching:
                run["curve"] = curve
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
    labels = list(dict.fromkeys(run_label(r) for r in runs))
    summary = {lab: {m: _mean_std([r.get(m, math.nan) for r in runs if run_label(r) == lab])
                     for m in METRICS} for lab in labels}
    settings["seconds"] = round(time.perf_counter() - start, 1)
    if not study:
        return EvaluationResult(runs, summary, compare(summary, seeds), settings)
    rows = size_rows(runs, [n for n in sizes if n is not None], mixed)
    return EvaluationResult(runs, summary, study_notes(rows, seeds), settings, sizes=rows)


# --------------------------------------------------------------------------- the study

#: The study's figures, headline first: boundary F1 (membranes), the interior class's Dice
#: (organelles on background in sparse masks, cells in dense ones), the mean Dice, and the
#: objects' Dice (interior and boundary together against class 0: organelles as outlined).
STUDY_METRICS: tuple[str, ...] = ("boundary_f1", "dice_interior", "mean_dice", "dice_objects")
#: at most this many held-out real pairs (files) and images (slices) score a validation point
VAL_UNITS, VAL_IMAGES = 4, 8
#: what seeds the permutation of the real pairs, beside the run's seed
SUBSET_STREAM = 17
#: bootstrap resamples and their fixed seed: the same runs give the same interval
N_BOOT, BOOT_SEED = 2000, 0


def run_label(run: dict[str, Any]) -> str:
    """A run's row in the summary: its arm, and in a study its number of real pairs."""
    n = run.get("n_real")
    return run["arm"] if n is None else f"{run['arm']} n={n}"


def real_units(names: Sequence[str], stacks: Stacks) -> list[list[int]]:
    """The real pairs as drawn for subsets: one 2-D pair, or all slices of one stack (a
    subset takes a stack whole, as it is one file)."""
    index = {n: i for i, n in enumerate(names)}
    of_stack = {index[s]: [index[x] for x in slices] for _, slices in stacks
                for s in slices[:1]}
    in_stack = {index[s] for _, slices in stacks for s in slices}
    return [of_stack.get(i, [i]) for i in range(len(names))
            if i in of_stack or i not in in_stack]


def subset_order(n_units: int, seed: int) -> np.ndarray:
    """The seeded permutation of ``n_units`` real pairs whose first n make seed ``seed``'s
    subset of size n (so one seed's subsets are nested: the 2 pairs hold the 1)."""
    return np.random.default_rng([seed, SUBSET_STREAM]).permutation(n_units)


def _subset_pool(real_pool: Any, units: list[list[int]], n: int, seed: int) -> Any:
    """The real pairs of seed ``seed``'s subset of ``n`` units (:func:`subset_order`)."""
    from .segmenter import Pool

    chosen = sorted(i for u in subset_order(len(units), seed)[:n] for i in units[u])
    return Pool([real_pool.images[i] for i in chosen], [real_pool.masks[i] for i in chosen],
                [real_pool.names[i] for i in chosen])


def real_subset(n_units: int, n: int, seed: int) -> list[int]:
    """Indices of the ``n`` real pairs seed ``seed`` trains on (sorted)."""
    return sorted(int(i) for i in subset_order(n_units, seed)[:n])


def check_sizes(real_sizes: Sequence[int], n_units: int, folder: str | Path) -> list[int]:
    """The sizes sorted without repeats; a size below 1 or above the real pairs is refused."""
    sizes = sorted({int(n) for n in real_sizes})
    if not sizes:
        raise ValueError("real_sizes is empty; give at least one number of real pairs, "
                         "e.g. 1,2,5.")
    if sizes[0] < 1:
        raise ValueError(f"real_sizes {sizes[0]} is not a number of real pairs; use "
                         "real_sizes of at least 1.")
    if sizes[-1] > n_units:
        raise ValueError(f"real_sizes {sizes[-1]} is more than the {n_units} real pair(s) in "
                         f"{folder}; use real_sizes of at most {n_units}.")
    return sizes


def bootstrap_means(d: np.ndarray, n_seeds: int | None, *, n_boot: int = N_BOOT,
                    seed: int = BOOT_SEED) -> np.ndarray:
    """``n_boot`` bootstrap means of a (seeds, test images) array: ``n_seeds`` seeds drawn from
    its rows (None: the rows averaged, only the test images resampled) and as many test images
    as it has, drawn independently, from a generator seeded by ``seed``."""
    n_s, n_i = d.shape
    rng = np.random.default_rng(seed)
    if n_seeds is None:
        wi = rng.multinomial(n_i, np.full(n_i, 1.0 / n_i), size=n_boot).astype(np.float64)
        return wi @ d.mean(axis=0) / n_i
    ws = rng.multinomial(n_seeds, np.full(n_s, 1.0 / n_s), size=n_boot).astype(np.float64)
    wi = rng.multinomial(n_i, np.full(n_i, 1.0 / n_i), size=n_boot).astype(np.float64)
    return np.einsum("bs,si,bi->b", ws, d, wi) / (n_seeds * n_i)


def paired_ci(diffs: np.ndarray, *, level: float = 0.95, n_boot: int = N_BOOT,
              seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """Mean of a (seeds, test images) array of paired differences and its percentile
    bootstrap interval, resampling seeds and test images independently (both vary between
    studies); seeded, so the same differences give the same interval. NaN for no data, and
    a NaN interval for a single difference (one seed and one test image: nothing to resample)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"expected a (seeds, test images) array; got shape {d.shape}.")
    if d.size == 0:
        return math.nan, math.nan, math.nan
    if d.size == 1:
        return float(d[0, 0]), math.nan, math.nan
    means = bootstrap_means(d, d.shape[0], n_boot=n_boot, seed=seed)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    lo_d, hi_d = float(d.min()), float(d.max())  # a mean cannot leave the data's range
    return (float(d.mean()), float(np.clip(low, lo_d, hi_d)), float(np.clip(high, lo_d, hi_d)))


def paired_differences(runs: Sequence[dict[str, Any]], arm: str, base: str, n: int,
                       metric: str) -> np.ndarray:
    """``arm`` minus ``base`` per seed (rows) and test image (columns) at ``n`` real pairs;
    seeds missing in either arm and images where a figure is undefined (NaN) are left out."""
    def by_seed(a: str) -> dict[int, dict[str, float]]:
        return {r["seed"]: {im["image"]: im.get(metric, math.nan) for im in r.get("images", [])}
                for r in runs if r["arm"] == a and r.get("n_real") == n}

    top, bottom = by_seed(arm), by_seed(base)
    seeds = sorted(set(top) & set(bottom))
    if not seeds:
        return np.zeros((0, 0))
    images = list(top[seeds[0]])
    d = np.array([[top[s].get(i, math.nan) - bottom[s].get(i, math.nan) for i in images]
                  for s in seeds], dtype=np.float64)
    return d[:, np.isfinite(d).all(axis=0)]


def size_rows(runs: Sequence[dict[str, Any]], sizes: Sequence[int], mixed: str
              ) -> list[dict[str, Any]]:
    """The study's table: per size and arm the headline figures' mean and std over seeds; on
    the mixed arm's rows the paired difference to real-only with its 95% interval; the
    synthetic-only arm once, as 0 real pairs."""
    rows: list[dict[str, Any]] = []
    for n in [*sizes, 0]:
        for arm in (ARM_REAL, mixed) if n else (ARM_SYNTHETIC,):
            chosen = [r for r in runs if r["arm"] == arm and (r.get("n_real") or 0) == n]
            if not chosen:
                continue
            row: dict[str, Any] = {"n_real": n, "arm": arm, "n_seeds": len(chosen)}
            for m in STUDY_METRICS:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([r.get(m, math.nan)
                                                                for r in chosen])
            if arm == mixed:
                for m in STUDY_METRICS:
                    d = paired_differences(runs, mixed, ARM_REAL, n, m)
                    mean, low, high = paired_ci(d)
                    row.update({f"diff_{m}": mean, f"diff_{m}_low": low,
                                f"diff_{m}_high": high, f"diff_{m}_pairs": int(d.size)})
            rows.append(row)
    return rows


def study_notes(rows: Sequence[dict[str, Any]], n_seeds: int) -> list[str]:
    """One sentence per size and headline figure: the paired difference, its interval, and
    whether the interval excludes 0."""
    notes = []
    for row in rows:
        for m in STUDY_METRICS:
            if f"diff_{m}" not in row or math.isnan(row[f"diff_{m}"]):
                continue
            diff, low, high = row[f"diff_{m}"], row[f"diff_{m}_low"], row[f"diff_{m}_high"]
            text = f"{row['n_real']} real pair(s): {row['arm']} - real {m} {diff:+.3f}"
            if math.isnan(low):
                notes.append(text + " (one seed and one test image: no interval; run --seeds 3"
                             " on more test images)")
                continue
            text += f" [95% CI {low:+.3f}, {high:+.3f}]"
            if low > 0:
                text += ": the synthetic pairs helped"
            elif high < 0:
                text += ": the synthetic pairs hurt"
            else:
                text += ": the interval holds 0, so this is no evidence either way"
            if n_seeds < 2:
                text += " (one seed: the interval covers test images only; run --seeds 3)"
            notes.append(text)
    return notes


#: How the markdown names each segmenter loss.
LOSS_NAMES: dict[str, str] = {"weighted_ce": "class-weighted cross-entropy",
                              "dice_ce": "cross-entropy + soft Dice of the objects"}

#: Result files of an evaluate run (kept when settings differ).
EVALUATE_OUTPUTS: tuple[str, ...] = ("evaluation_runs.csv", "evaluation.csv", "evaluation.md",
                                     "evaluation.png", "evaluation_stacks.csv", "runs",
                                     "evaluation_sizes.csv", "evaluation_sizes.png",
                                     "evaluation_curves.csv", "evaluation_curves.png")


#: settings that change what the other arms do with the synthetic pairs, not a real-only run
#: (not ``min_score``: its filter is made with the real-only run of seed 0 and saved beside it)
NOT_REAL_ONLY: tuple[str, ...] = ("mix", "pretrain_synthetic", "pretrain_steps",
                                  "synthetic_ignore", "synthetic_ignore_off_mask")


class _RunStore:
    """Each finished arm x seed (x size, in a study) in ``out/runs/``, under the settings
    recorded in ``out/evaluate_settings.json`` (those that change a run's figures: not
    ``seeds``, nor ``real_sizes``: a size's subsets depend on the seed alone, so more seeds or
    sizes add runs)."""

    def __init__(self, out: Path, settings: dict[str, Any],
                 data: Sequence[tuple[list[str], list[tuple[np.ndarray, np.ndarray]]]]) -> None:
        from .results import fingerprint, open_results

        self.folder = out / "runs"
        fixed = {k: v for k, v in settings.items()
                 if k not in ("seeds", "real_sizes", "real", "synthetic", "test")}
        fixed["data"] = [fingerprint((n, im, m) for n, (im, m) in zip(names, pairs, strict=True))
                         for names, pairs in data]
        open_results(out, "evaluate", fixed, EVALUATE_OUTPUTS)
        self.fixed = fixed

    def copy_real_runs(self, source: Path) -> int:
        """Copy the real-only runs of the earlier output folder ``source`` that ``out`` lacks,
        when its settings differ from these only in :data:`NOT_REAL_ONLY`; returns how many
        files (with a quality filter, its list of kept pairs too)."""
        import shutil

        from .results import SettingsMismatchError, load_json, settings_diff

        theirs = load_json(source / "evaluate_settings.json")
        if not isinstance(theirs, dict):
            raise FileNotFoundError(f"{source} holds no evaluate results (no readable "
                                    "evaluate_settings.json); give the --out of an earlier "
                                    "evaluate.")
        diff = settings_diff(theirs, self.fixed, skip=NOT_REAL_ONLY)
        if diff:
            raise SettingsMismatchError(
                f"the real-only runs of {source} were made with other settings "
                f"({'; '.join(diff)}), so they are not this evaluation's; run without "
                "real_runs_from, or with the same folders and settings.")
        self.folder.mkdir(parents=True, exist_ok=True)
        copied = 0
        kept = "kept_synthetic.json"  # the quality filter those runs made (same min_score)
        for run in [*sorted((source / "runs").glob(f"{ARM_REAL}_*.json")),
                    *(source / "runs").glob(kept)]:
            if not (self.folder / run.name).exists():
                shutil.copyfile(run, self.folder / run.name)
                copied += 1
        return copied

    def _path(self, arm: str, seed: int, n: int | None = None) -> Path:
        return self.folder / (f"{arm}_seed{seed}.json" if n is None
                              else f"{arm}_n{n}_seed{seed}.json")

    def run(self, arm: str, seed: int, n: int | None = None) -> dict[str, Any] | None:
        """A finished run's record, or None."""
        from .results import load_json

        rec = load_json(self._path(arm, seed, n))
        return rec if isinstance(rec, dict) and "run" in rec else None

    def save_run(self, run: dict[str, Any], precision_rule: str,
                 class_weights: list[float]) -> None:
        from .results import save_json

        save_json(self._path(run["arm"], run["seed"], run.get("n_real")),
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
