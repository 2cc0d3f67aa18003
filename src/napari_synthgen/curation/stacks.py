"""(Z, Y, X) stacks in curation: what a stack is, its quality figures, its voxel spacing.

A generated pair whose image and mask are (Z, Y, X) is one sample: it is accepted or rejected
whole, its files hold the whole stack, and its record carries the stack's ``spacing`` (z, y, x;
nm when the file says so) when known. Its quality figures are the per-slice figures of
:func:`quality.sample_figures` aggregated over the slices (mean, and the worst slice's score)
plus the z-consistency summary of :mod:`..zconsistency`, so a score rule works on stacks as it
does on 2-D samples.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Spacing = tuple[float, float, float]


def is_stack(image: Any) -> bool:
    """True for a (Z, Y, X) grey stack (3-D, not an (H, W, 3|4) colour image)."""
    return _stack_shape(np.shape(image))


def _stack_shape(shape: Sequence[int]) -> bool:
    """Whether an array of ``shape`` is a (Z, Y, X) stack, as ``io.read_image`` sees it."""
    return len(shape) == 3 and not (shape[-1] in (3, 4) and shape[0] > 4)


def file_is_stack(path: str | os.PathLike) -> bool:
    """Whether an image file holds a (Z, Y, X) stack, read from its header only (PNG: never);
    the file's axes decide, as for ``io.read_image`` (colour samples ``S`` last: a picture)."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        return False
    import tifffile

    from ..io import decoding

    with decoding(p), tifffile.TiffFile(p) as tif:
        series = tif.series[0]
        dims = [(a, n) for a, n in zip(str(series.axes), series.shape, strict=False) if n > 1]
    return len(dims) == 3 and dims[-1][0] != "S"


def spacing_of(path: str | os.PathLike) -> Spacing | None:
    """The voxel spacing (z, y, x) a TIFF records (:func:`io.read_spacing`), or None when it
    records none; PNGs and missing files give None (whoever reads the file reports those)."""
    from .. import io

    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return None
    return io.read_spacing(p)


def pair_spacing(image_path: str | os.PathLike | None,
                 mask_path: str | os.PathLike | None = None) -> Spacing | None:
    """The spacing of a pair: its image file's, else its mask file's, else None."""
    for path in (image_path, mask_path):
        if path is not None and Path(path).suffix.lower() in (".tif", ".tiff"):
            spacing = spacing_of(path)
            if spacing is not None:
                return spacing
    return None


# --------------------------------------------------------------------------- figures

#: Figures of a stack that are not means of the slices' figures.
STACK_KEYS: tuple[str, ...] = ("n_slices", "score_min", "score_max", "worst_slice")


def stack_figures(image: np.ndarray, mask: np.ndarray, *, reference: Any = None,
                  z_figures: bool = True) -> dict[str, Any]:
    """Quality figures of a (Z, Y, X) stack: the whole stack's basic figures, the mean over
    slices of every other per-slice figure (``score`` too), the worst and best slice's score
    (``score_min``, ``worst_slice``, ``score_max``) and, with ``z_figures``, the z-consistency
    summary (``z_corr_lag1``.., ``texture_flicker``, ``mean_jump_<class>``)."""
    from ..quality import basic_figures, sample_figures

    img, m = np.asarray(image), np.asarray(mask)
    if not is_stack(img) or img.shape != m.shape:
        raise ValueError(f"a stack is a (Z, Y, X) image and a mask of the same shape; got "
                         f"image {img.shape} and mask {m.shape}.")
    per_slice = [sample_figures(img[k], m[k], reference=reference) for k in range(img.shape[0])]
    figures: dict[str, Any] = dict(basic_figures(img, m))
    for key in per_slice[0]:
        if key in figures:
            continue
        values = [float(f[key]) for f in per_slice
                  if isinstance(f.get(key), (int, float)) and not isinstance(f[key], bool)]
        finite = [v for v in values if math.isfinite(v)]
        figures[key] = float(np.mean(finite)) if finite else float("nan")
    scores = [float(f.get("score", float("nan"))) for f in per_slice]
    finite = [(s, k) for k, s in enumerate(scores) if math.isfinite(s)]
    figures["n_slices"] = int(img.shape[0])
    if finite:
        worst = min(finite)
        figures["score_min"], figures["worst_slice"] = worst[0], worst[1]
        figures["score_max"] = max(finite)[0]
    else:
        figures["score_min"] = figures["score_max"] = float("nan")
        figures["worst_slice"] = -1
    if z_figures and img.shape[0] >= 2:
        from ..zconsistency import z_consistency

        summary = z_consistency(img, m).summary()
        summary.pop("n_slices", None)
        figures.update(summary)
    return figures


def figures_of(image: np.ndarray, mask: np.ndarray, *, reference: Any = None
               ) -> dict[str, Any]:
    """:func:`quality.sample_figures` for a 2-D sample, :func:`stack_figures` for a stack."""
    from ..quality import sample_figures

    if is_stack(image):
        return stack_figures(image, mask, reference=reference)
    return dict(sample_figures(image, mask, reference=reference))


def slice_names(name: str, n: int) -> list[str]:
    """``<name>_zNNN`` for each slice of an ``n``-slice stack (at least three digits), the
    names ``report`` and ``evaluate`` give slices."""
    width = max(3, len(str(n - 1)))
    return [f"{name}_z{k:0{width}d}" for k in range(n)]
