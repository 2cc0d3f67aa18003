"""Quality figures of synthetic samples: what a curator looks at before accepting one.

Figures are plain ``dict[str, float | int | bool]`` so they go straight into a manifest record,
a table or a widget label. :func:`basic_figures` needs nothing but the sample;
:func:`sample_figures` adds, against :class:`ReferenceStats` of real images, the per-class
grey-level Wasserstein distances (``wd_*``), the power-spectrum distance (blur, grain) and the
periodic-peak excess (checkerboards), the contrast ratio, SSIM to the paired real image, mask
consistency (Dice of a real-trained segmenter against the input mask) and one ``score`` in
[0, 1] (:data:`SCORE_WEIGHTS`) for sorting and flagging, never to decide alone. Reference
statistics come from real pairs (:func:`reference_from_folder`) or from a model's metadata
(:func:`reference_from_metadata`; training stores :func:`reference_record` under
:data:`REFERENCE_KEY`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .masks import CLASS_NAMES, N_CLASSES, validate_mask


def intensity_figures(image: np.ndarray) -> dict[str, float | int]:
    """Mean, standard deviation, range and number of distinct grey levels of an image."""
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError("the image is empty.")
    flat = img.astype(np.float64, copy=False).ravel()
    levels = np.unique(img).size if img.dtype.itemsize <= 2 else np.unique(flat).size
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "levels": int(levels),
    }


def basic_figures(image: np.ndarray, mask: np.ndarray) -> dict[str, float | int | bool]:
    """The per-sample figures shown while curating: intensity and class make-up.

    Keys: ``mean``, ``std``, ``min``, ``max``, ``levels``, ``frac_background``,
    ``frac_interior``, ``frac_boundary``, ``n_classes`` and ``multi_class`` (more than one class
    present: a one-class mask teaches a segmenter nothing about boundaries).
    """
    m = validate_mask(mask)
    img = np.asarray(image)
    if img.shape[-2:] != m.shape[-2:] or (img.ndim == m.ndim and img.shape != m.shape):
        raise ValueError(
            f"image shape {img.shape} and mask shape {m.shape} differ; a sample is an image and "
            "its mask of the same height and width."
        )
    counts = np.bincount(m.ravel(), minlength=N_CLASSES)[:N_CLASSES]
    total = max(int(counts.sum()), 1)
    figures: dict[str, float | int | bool] = dict(intensity_figures(img))
    for name, c in zip(CLASS_NAMES, counts, strict=True):
        figures[f"frac_{name}"] = float(c) / total
    n_present = int((counts > 0).sum())
    figures["n_classes"] = n_present
    figures["multi_class"] = n_present > 1
    return figures


def per_class_intensity(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean intensity of the image under each class present in the mask."""
    m = validate_mask(mask)
    img = np.asarray(image, dtype=np.float64)
    out: dict[str, float] = {}
    for cls, name in enumerate(CLASS_NAMES):
        sel = m == cls
        if sel.any():
            out[name] = float(img[sel].mean())
    return out


# --------------------------------------------------------------------------- against real data
#
# Grey levels are compared on a unit scale (uint8 / 255, uint16 / 65535; floats as given, or
# stretched to 0..1 when outside it), so a reference and samples of the same dtype compare
# directly and a distance reads as "fraction of the grey range".

#: Grey-level histogram bins on the unit scale.
HIST_BINS: int = 64
#: Radial frequency bins of the power spectrum, from 0 to the corner frequency sqrt(2)/2
#: cycles per pixel (the corners hold a period-2 checkerboard's peak).
SPECTRUM_BINS: int = 32
#: Side of the windowed tiles the power spectrum is averaged over (smaller images use their own
#: smaller side): the spectrum then does not depend on the image size.
SPECTRUM_TILE: int = 256
#: Key of the reference statistics in a model's metadata.
REFERENCE_KEY: str = "reference_stats"

#: Weights of the combined score. Each figure becomes a similarity in [0, 1] first:
#: ``exp(-distance / scale)`` for distances (scales in :data:`SCORE_SCALES`), Dice as is.
#: Figures that cannot be computed (no reference class, no segmenter) are left out and the
#: remaining weights renormalised. SSIM to a paired real image and diversity are not in the
#: score: a good synthetic image is a *different* image of the same mask.
SCORE_WEIGHTS: dict[str, float] = {
    "intensity": 0.3,     # wd_mean: per-class Wasserstein distance of grey levels
    "spectrum": 0.2,      # spectrum_dist: log power-spectrum distance (blur, grain)
    "periodic": 0.1,      # peak_excess: periodic spike above the reference's (checkerboards)
    "contrast": 0.1,      # std_ratio: |log(std / reference std)|
    "consistency": 0.3,   # consistency_dice: real-trained segmenter's Dice against the mask
}
#: Distance at which a figure's similarity falls to 1/e (about 0.37). Calibrated on ISBI: real
#: slices against a reference of five others have wd_mean 0.02-0.06 and spectrum_dist 0.1 (same
#: imaging) to 0.9 (slices 15-29, whose noise floor is 100x higher than slices 00-14's).
SCORE_SCALES: dict[str, float] = {"intensity": 0.1, "spectrum": 0.5, "periodic": 0.5,
                                  "contrast": 0.5}


def to_unit(image: np.ndarray) -> np.ndarray:
    """An image as float64 grey levels on a 0..1 scale (2-D; an RGB image is averaged)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].mean(axis=-1) if img.dtype.kind == "f" else img[..., :3].astype(
            np.float64).mean(axis=-1).round().astype(img.dtype)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"expected a 2-D grey image; got shape {img.shape}.")
    if img.dtype == bool:
        return img.astype(np.float64)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        return (img.astype(np.float64) - min(info.min, 0)) / float(info.max - min(info.min, 0))
    out = img.astype(np.float64)
    lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
    if lo < 0.0 or hi > 1.0:
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    return out


def _check_pair(unit: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = validate_mask(mask)
    if m.shape != unit.shape:
        raise ValueError(f"image shape {unit.shape} and mask shape {m.shape} differ; a sample "
                         "is a 2-D image and its mask of the same height and width.")
    return m


def class_histograms(image: np.ndarray, mask: np.ndarray, *, bins: int = HIST_BINS
                     ) -> np.ndarray:
    """Grey-level pixel counts per class, shape ``(N_CLASSES, bins)`` on the unit scale."""
    unit = to_unit(image)
    m = _check_pair(unit, mask)
    idx = np.clip((unit * bins).astype(np.int64), 0, bins - 1)
    flat = m.astype(np.int64).ravel() * bins + idx.ravel()
    return np.bincount(flat, minlength=N_CLASSES * bins).reshape(N_CLASSES, bins).astype(
        np.float64)


def bin_centres(bins: int = HIST_BINS) -> np.ndarray:
    """Grey level at the middle of each histogram bin (unit scale)."""
    return (np.arange(bins) + 0.5) / bins


def histogram_distance(h_a: np.ndarray, h_b: np.ndarray) -> float:
    """1-D Wasserstein (earth mover's) distance between two grey-level histograms, in unit grey
    levels; NaN when either is empty."""
    from scipy.stats import wasserstein_distance

    a, b = np.asarray(h_a, np.float64), np.asarray(h_b, np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    c = bin_centres(a.size)
    return float(wasserstein_distance(c, c, u_weights=a, v_weights=b))


def _radial_index(tile: int) -> np.ndarray:
    fy = np.fft.fftfreq(tile)[:, None]
    fx = np.fft.fftfreq(tile)[None, :]
    r = np.sqrt(fy**2 + fx**2) / (np.sqrt(2) / 2)  # 0..1 at the corner
    return np.clip((r * SPECTRUM_BINS).astype(np.int64), 0, SPECTRUM_BINS - 1)


def spectrum_frequencies() -> np.ndarray:
    """Centre frequency (cycles per pixel) of each radial spectrum bin."""
    return (np.arange(SPECTRUM_BINS) + 0.5) / SPECTRUM_BINS * (np.sqrt(2) / 2)


def _welch_power(unit: np.ndarray) -> np.ndarray:
    """2-D power spectrum averaged over Hann-windowed tiles (Welch's method), DC removed."""
    h, w = unit.shape
    tile = min(SPECTRUM_TILE, h, w)
    if tile < 16:
        raise ValueError(f"the image ({h} x {w}) is too small for a power spectrum (>= 16 px).")
    win = np.outer(np.hanning(tile), np.hanning(tile))
    ys = sorted({*range(0, h - tile + 1, tile), h - tile})
    xs = sorted({*range(0, w - tile + 1, tile), w - tile})
    power = np.zeros((tile, tile))
    for y in ys:
        for x in xs:
            t = unit[y:y + tile, x:x + tile]
            power += np.abs(np.fft.fft2((t - t.mean()) * win)) ** 2
    power[0, 0] = 0.0
    return power / (len(ys) * len(xs))


def spectrum_figures(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The log radial spectrum (:func:`log_power_spectrum`) and the periodic-peak figure.

    The peak figure is the largest ``log10(power / median power at that radius)`` above 0.05
    cycles per pixel: a checkerboard or any other periodic artefact is one sharp spike that a
    radial average dilutes, while tissue and noise spread their power over the ring.
    """
    power = _welch_power(to_unit(image))
    tile = power.shape[0]
    idx = _radial_index(tile)
    sums = np.bincount(idx.ravel(), power.ravel(), minlength=SPECTRUM_BINS)
    counts = np.bincount(idx.ravel(), minlength=SPECTRUM_BINS)
    radial = sums / np.maximum(counts, 1)
    total = radial.sum()
    radial = radial / total if total > 0 else np.full(SPECTRUM_BINS, 1.0 / SPECTRUM_BINS)
    log_radial = np.log10(np.maximum(radial, 1e-12))
    medians = np.array([np.median(power[idx == b]) if counts[b] else 0.0
                        for b in range(SPECTRUM_BINS)])
    fr = np.sqrt(np.fft.fftfreq(tile)[:, None] ** 2 + np.fft.fftfreq(tile)[None, :] ** 2)
    sel = fr > 0.05
    floor = np.maximum(medians[idx], 1e-30)
    peak = float(np.log10(np.maximum(power[sel] / floor[sel], 1e-12)).max()) if sel.any() else 0.0
    return log_radial, peak


def log_power_spectrum(image: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum, log10, normalised to total power 1 (contrast-free).

    Averaged over Hann-windowed tiles of :data:`SPECTRUM_TILE` px (Welch's method), so the
    curve does not depend on the image size. Blur lowers its high-frequency end; grain raises
    it; a periodic artefact adds a bump (:func:`spectrum_figures` measures the spike itself).
    """
    return spectrum_figures(image)[0]


def spectrum_distance(log_a: np.ndarray, log_b: np.ndarray) -> float:
    """Mean absolute difference of two log10 spectra (0: same shape; 1: tenfold off on average).
    The lowest bin (image-scale shading) is left out."""
    a, b = np.asarray(log_a, np.float64), np.asarray(log_b, np.float64)
    return float(np.mean(np.abs(a[1:] - b[1:])))


def ssim(image: np.ndarray, other: np.ndarray) -> float:
    """Structural similarity of two images of the same shape on the unit scale (1: identical)."""
    from skimage.metrics import structural_similarity

    a, b = to_unit(image), to_unit(other)
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs images of the same shape; got {a.shape} and {b.shape}.")
    return float(structural_similarity(a, b, data_range=1.0))


def diversity(images: list[np.ndarray], *, max_pairs: int = 45) -> float:
    """Mean pairwise ``1 - SSIM`` among variations of one mask (0: all alike); NaN for fewer than
    two. At most ``max_pairs`` pairs are compared (the first ones, in order)."""
    if len(images) < 2:
        return float("nan")
    pairs = [(i, j) for i in range(len(images)) for j in range(i + 1, len(images))][:max_pairs]
    return float(np.mean([1.0 - ssim(images[i], images[j]) for i, j in pairs]))


@dataclass
class ReferenceStats:
    """What real images look like, per class: the yardstick of the quality figures.

    JSON-serialisable (:meth:`to_dict` / :meth:`from_dict`), so training can store it in a
    model's metadata under :data:`REFERENCE_KEY`.
    """

    histograms: list[list[float]]       # per class, normalised pixel counts (all 0: absent)
    log_spectrum: list[float]           # mean log10 radial power spectrum
    spectrum_peak: float                # mean periodic-peak figure of the real images
    mean: float                         # unit-scale grey mean and std over all images
    std: float
    class_fractions: list[float]        # pixel fraction per class
    n_images: int
    bins: int = HIST_BINS
    spectrum_bins: int = SPECTRUM_BINS
    version: int = 1
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceStats:
        """Rebuild from :meth:`to_dict` output; a clear error if it is not one."""
        try:
            stats = cls(**{k: data[k] for k in (
                "histograms", "log_spectrum", "spectrum_peak", "mean", "std",
                "class_fractions", "n_images")},
                bins=int(data.get("bins", HIST_BINS)),
                spectrum_bins=int(data.get("spectrum_bins", SPECTRUM_BINS)),
                version=int(data.get("version", 1)), sources=list(data.get("sources", [])))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not reference statistics (missing or wrong {exc}); make them "
                             "with reference_from_pairs() or reference_from_folder().") from exc
        if stats.bins != HIST_BINS or stats.spectrum_bins != SPECTRUM_BINS:
            raise ValueError(
                f"reference statistics use {stats.bins} grey bins and {stats.spectrum_bins} "
                f"spectrum bins; this version uses {HIST_BINS} and {SPECTRUM_BINS}. "
                "Recompute them from the real images with reference_from_folder().")
        return stats

    def histogram(self, cls: int) -> np.ndarray:
        """The normalised grey-level histogram of class ``cls`` (all zero when never seen)."""
        return np.asarray(self.histograms[cls], np.float64)


def reference_from_pairs(pairs: Iterable[tuple[np.ndarray, np.ndarray]], *,
                         sources: list[str] | None = None) -> ReferenceStats:
    """Reference statistics from real ``(image, mask)`` pairs."""
    hists = np.zeros((N_CLASSES, HIST_BINS))
    spectra: list[np.ndarray] = []
    peaks: list[float] = []
    total = total_sq = 0.0
    n_px = 0
    for image, mask in pairs:
        unit = to_unit(image)
        hists += class_histograms(unit, mask)
        spectrum, peak = spectrum_figures(unit)
        spectra.append(spectrum)
        peaks.append(peak)
        total += float(unit.sum())
        total_sq += float((unit**2).sum())
        n_px += unit.size
    if not spectra:
        raise ValueError("no real image/mask pairs were given for the reference statistics.")
    counts = hists.sum(axis=1)
    mean = total / n_px
    norm = np.where(counts[:, None] > 0, hists / np.maximum(counts[:, None], 1), 0.0)
    return ReferenceStats(
        histograms=[[round(float(v), 8) for v in row] for row in norm],
        log_spectrum=[float(v) for v in np.mean(spectra, axis=0)],
        spectrum_peak=float(np.mean(peaks)),
        mean=float(mean), std=float(np.sqrt(max(total_sq / n_px - mean**2, 0.0))),
        class_fractions=[float(c) / max(float(counts.sum()), 1.0) for c in counts],
        n_images=len(spectra), sources=list(sources or []))


def reference_from_folder(folder: str | Path) -> ReferenceStats:
    """Reference statistics from a paired folder of real images (``images/``, ``masks/``);
    a (Z, Y, X) pair counts slice by slice."""
    from .io import find_pairs, read_image, read_mask

    pairs = find_pairs(folder)

    def slices() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        for p in pairs:
            image, mask = read_image(p.image), read_mask(p.mask)
            if image.ndim == 3 and mask.shape == image.shape and image.shape[-1] not in (3, 4):
                yield from zip(image, mask, strict=True)
            else:
                yield image, mask

    return reference_from_pairs(slices(), sources=[p.stem for p in pairs])


def reference_record(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """What training stores as ``metadata[REFERENCE_KEY]``: the reference statistics of its
    training pairs as a plain dict."""
    return reference_from_pairs(pairs).to_dict()


def reference_from_metadata(meta: Mapping[str, Any] | None) -> ReferenceStats | None:
    """The reference statistics a model's metadata carries (dict or JSON text); None if none."""
    if not meta or meta.get(REFERENCE_KEY) is None:
        return None
    value = meta[REFERENCE_KEY]
    if isinstance(value, str):
        value = json.loads(value)
    return ReferenceStats.from_dict(value)


def reference_figures(image: np.ndarray, mask: np.ndarray, reference: ReferenceStats
                      ) -> dict[str, float]:
    """Distances of one sample to the reference: per-class grey-level Wasserstein distance
    (``wd_<class>``, NaN where the class is absent from the sample or the reference), their
    mean ``wd_mean`` (weighted by the square root of the pixel counts, so thin classes count),
    the spectrum distance ``spectrum_dist``, the periodic-peak figure ``spectrum_peak`` and its
    excess over the reference's ``peak_excess``, and the contrast ratio ``std_ratio``."""
    unit = to_unit(image)
    hist = class_histograms(unit, mask)
    out: dict[str, float] = {}
    dists, weights = [], []
    for cls, name in enumerate(CLASS_NAMES):
        d = histogram_distance(hist[cls], reference.histogram(cls))
        out[f"wd_{name}"] = d
        if not np.isnan(d):
            dists.append(d)
            weights.append(max(hist[cls].sum(), 1.0) ** 0.5)  # thin classes still count
    out["wd_mean"] = float(np.average(dists, weights=weights)) if dists else float("nan")
    spectrum, peak = spectrum_figures(unit)
    out["spectrum_dist"] = spectrum_distance(spectrum, np.asarray(reference.log_spectrum))
    out["spectrum_peak"] = peak
    out["peak_excess"] = max(peak - reference.spectrum_peak, 0.0)
    out["std_ratio"] = float(unit.std() / reference.std) if reference.std > 0 else float("nan")
    return out


def combined_score(figures: Mapping[str, float]) -> float:
    """One number in [0, 1], higher = closer to real, from :data:`SCORE_WEIGHTS`.

    For sorting and flagging candidates, never to decide alone. Uses ``wd_mean``,
    ``spectrum_dist``, ``peak_excess``, ``std_ratio`` and ``consistency_dice`` when present and
    finite (weights :data:`SCORE_WEIGHTS`, renormalised over the figures present).
    """
    sims: dict[str, float] = {}
    if _finite(figures.get("wd_mean")):
        sims["intensity"] = np.exp(-float(figures["wd_mean"]) / SCORE_SCALES["intensity"])
    if _finite(figures.get("spectrum_dist")):
        sims["spectrum"] = np.exp(-float(figures["spectrum_dist"]) / SCORE_SCALES["spectrum"])
    if _finite(figures.get("peak_excess")):
        sims["periodic"] = np.exp(-float(figures["peak_excess"]) / SCORE_SCALES["periodic"])
    ratio = figures.get("std_ratio")
    if _finite(ratio) and float(ratio) > 0:
        sims["contrast"] = np.exp(-abs(np.log(float(ratio))) / SCORE_SCALES["contrast"])
    if _finite(figures.get("consistency_dice")):
        sims["consistency"] = float(np.clip(figures["consistency_dice"], 0.0, 1.0))
    if not sims:
        return float("nan")
    w = sum(SCORE_WEIGHTS[k] for k in sims)
    return float(np.clip(sum(SCORE_WEIGHTS[k] * v for k, v in sims.items()) / w, 0.0, 1.0))


def _finite(value: object) -> bool:
    try:
        return value is not None and bool(np.isfinite(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def consistency_figures(predicted: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Dice per class of a segmenter's prediction on a sample against the sample's input mask
    (``dice_<class>``, NaN where the class is in neither) and their mean ``consistency_dice``."""
    m = validate_mask(mask)
    p = validate_mask(predicted, name="prediction")
    out: dict[str, float] = {}
    vals = []
    for cls, name in enumerate(CLASS_NAMES):
        a, b = p == cls, m == cls
        denom = int(a.sum()) + int(b.sum())
        d = float("nan") if denom == 0 else 2.0 * int((a & b).sum()) / denom
        out[f"dice_{name}"] = d
        if b.any():
            vals.append(d)
    out["consistency_dice"] = float(np.mean(vals)) if vals else float("nan")
    return out


def sample_figures(image: np.ndarray, mask: np.ndarray, *,
                   reference: ReferenceStats | None = None,
                   paired_real: np.ndarray | None = None,
                   predicted: np.ndarray | None = None) -> dict[str, float | int | bool]:
    """Every per-sample figure: :func:`basic_figures`, and with a reference the distances of
    :func:`reference_figures`, with a paired real image ``ssim_real``, with a segmenter's
    prediction :func:`consistency_figures`; then ``score`` (:func:`combined_score`)."""
    figures: dict[str, float | int | bool] = dict(basic_figures(image, mask))
    if reference is not None:
        figures.update(reference_figures(image, mask, reference))
    if paired_real is not None:
        figures["ssim_real"] = ssim(image, paired_real)
    if predicted is not None:
        figures.update(consistency_figures(predicted, mask))
    figures["score"] = combined_score(figures)  # type: ignore[arg-type]
    return figures
