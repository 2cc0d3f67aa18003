"""Z-consistency of an image stack beyond its masks: do consecutive slices share texture?

Serial EM sections share tissue texture the masks do not describe; a stack synthesized slice by
slice with independent noise does not. :func:`z_consistency` measures that on a ``(Z, Y, X)``
image stack and its class-mask stack.

The residual of a slice is what its mask does not explain: the image minus the mean grey level
of each class *in that slice* (so brightness drifting from slice to slice is removed too), then
Gaussian-smoothed with sigma 2 px in y and x (not z) to keep tissue texture rather than pixel
noise. Because smoothing is linear this equals smooth(image) - smooth(class-mean map): the
blurred class layout is removed with the means. Correlation is Pearson's over all pixels of two
slices' residuals. On real serial sections (``scripts/z_consistency_real.py``) adjacent slices
correlate at 0.40 (ISBI 2012) and 0.47 (VNC stack 1), four slices apart at 0.15; independent
synthesis of each slice gives about 0.

Flicker, per adjacent pair: ``texture_flicker`` = RMS of the residual's frame-to-frame
difference over the mean RMS of the two residuals (0 for a repeated texture, about 1.41 for
independent textures of equal strength; it also sees a texture growing or fading, which the
correlation does not), and ``mean_jump`` = the change of each class's mean grey level (unit grey
scale: uint8 / 255), the brightness flicker the residual removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .masks import CLASS_NAMES, N_CLASSES, validate_mask

#: Gaussian sigma (px, in y and x) of the residual: texture, not pixel noise.
RESIDUAL_SIGMA: float = 2.0
#: Lags of the correlation curve.
MAX_LAG: int = 4


@dataclass
class ZConsistency:
    """The figures of one stack; ``lag_corr[k - 1]`` is the mean correlation at lag k."""

    n_slices: int
    pair_corr: np.ndarray          # (Z - 1,) adjacent slices' residual correlation
    lag_corr: np.ndarray           # (max_lag,) mean correlation at lag 1..max_lag (NaN: too few)
    texture_flicker: np.ndarray    # (Z - 1,) RMS(r[z+1] - r[z]) / mean(RMS r[z], RMS r[z+1])
    mean_jump: np.ndarray          # (Z - 1, N_CLASSES) |class mean[z+1] - class mean[z]|, NaN
    #                                where a class is absent from either slice
    class_means: np.ndarray        # (Z, N_CLASSES) unit grey level, NaN where absent
    sigma: float = RESIDUAL_SIGMA
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def adjacent(self) -> float:
        """Mean correlation of adjacent slices' residuals (the headline figure)."""
        return float(self.lag_corr[0]) if self.lag_corr.size else float("nan")

    def summary(self) -> dict[str, float | int]:
        """Flat figures for a table row: ``n_slices``, ``z_corr_lag1..N``,
        ``texture_flicker``, ``mean_jump_<class>`` (means over pairs)."""
        out: dict[str, float | int] = {"n_slices": self.n_slices}
        for k, v in enumerate(self.lag_corr, start=1):
            out[f"z_corr_lag{k}"] = float(v)
        out["texture_flicker"] = _nanmean(self.texture_flicker)
        for c, name in enumerate(CLASS_NAMES):
            out[f"mean_jump_{name}"] = _nanmean(self.mean_jump[:, c])
        return out


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def unit_stack(images: np.ndarray) -> np.ndarray:
    """A stack as float64 grey levels on the 0..1 scale (integers by their dtype's range;
    floats as given, or stretched over the stack when outside 0..1)."""
    img = np.asarray(images)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        lo = min(info.min, 0)
        return (img.astype(np.float64) - lo) / float(info.max - lo)
    out = img.astype(np.float64)
    lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
    if lo < 0.0 or hi > 1.0:
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    return out


def class_means(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean grey level of each class in each slice, shape ``(Z, N_CLASSES)``, NaN where a
    class is absent (one bincount over slice-and-class labels)."""
    z = images.shape[0]
    labels = (np.arange(z, dtype=np.int64)[:, None, None] * N_CLASSES + masks).ravel()
    counts = np.bincount(labels, minlength=z * N_CLASSES).reshape(z, N_CLASSES)
    sums = np.bincount(labels, weights=images.ravel(),
                       minlength=z * N_CLASSES).reshape(z, N_CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def residuals(images: np.ndarray, masks: np.ndarray, *, sigma: float = RESIDUAL_SIGMA
              ) -> tuple[np.ndarray, np.ndarray]:
    """The residual stack (what the masks do not explain, smoothed in y and x) and the
    per-slice class means it removed; ``images`` on the unit scale."""
    from scipy import ndimage as ndi

    means = class_means(images, masks)
    filled = np.nan_to_num(means)  # an absent class has no pixel to take its mean
    res = images - filled[np.arange(masks.shape[0])[:, None, None], masks]
    if sigma > 0:
        ndi.gaussian_filter(res, sigma=(0.0, sigma, sigma), mode="reflect", output=res)
    return res, means


def _pair_corr(flat: np.ndarray, k: int) -> np.ndarray:
    """Pearson correlation of rows ``z`` and ``z + k`` for every z (rows already centred)."""
    a, b = flat[:-k], flat[k:]
    num = np.einsum("ij,ij->i", a, b)
    den = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def z_consistency(images: np.ndarray, masks: np.ndarray, *, sigma: float = RESIDUAL_SIGMA,
                  max_lag: int = MAX_LAG) -> ZConsistency:
    """Residual correlation of slices 1..``max_lag`` apart and per-pair flicker of a
    ``(Z, Y, X)`` image stack and its ``(Z, Y, X)`` class masks (see the module text)."""
    img = np.asarray(images)
    if img.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) image stack; got shape {img.shape}.")
    m = validate_mask(masks, name="mask stack")
    if m.shape != img.shape:
        raise ValueError(f"image stack {img.shape} and mask stack {m.shape} differ; each "
                         "slice needs its mask.")
    if img.shape[0] < 2:
        raise ValueError(f"a stack of {img.shape[0]} slice(s) has no neighbours; z-consistency "
                         "needs at least 2 slices.")
    if max_lag < 1:
        raise ValueError(f"max_lag must be >= 1; got {max_lag}.")
    unit = unit_stack(img)
    res, means = residuals(unit, m, sigma=sigma)
    z = img.shape[0]
    del unit
    flat = res.reshape(z, -1)
    flat -= flat.mean(axis=1, keepdims=True)
    lag = np.full(max_lag, np.nan)
    pair = np.empty(0)
    for k in range(1, min(max_lag, z - 1) + 1):
        c = _pair_corr(flat, k)
        if k == 1:
            pair = c
        lag[k - 1] = _nanmean(c)
    rms = np.sqrt(np.einsum("ij,ij->i", flat, flat) / flat.shape[1])
    diff = np.diff(flat, axis=0)
    step = np.sqrt(np.einsum("ij,ij->i", diff, diff) / flat.shape[1])
    scale = 0.5 * (rms[:-1] + rms[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        flicker = np.where(scale > 0, step / np.where(scale > 0, scale, 1.0), np.nan)
    jump = np.abs(np.diff(means, axis=0))
    return ZConsistency(n_slices=z, pair_corr=pair, lag_corr=lag, texture_flicker=flicker,
                        mean_jump=jump, class_means=means, sigma=sigma)
