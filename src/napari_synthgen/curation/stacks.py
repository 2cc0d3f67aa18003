"""(Z, Y, X) stacks in curation: what a stack is, its quality figures, its voxel spacing.

A generated pair whose image and mask are (Z, Y, X) is one sample: it is accepted or rejected
whole, its files hold the whole stack, and its record carries the stack's ``spacing`` (z, y, x;
nm when the file says so) when known. Its quality figures are the per-slice figures of
:func:`quality.sample_figures` aggregated over the slices (mean, and the worst slice's score)
plus the z-consistency summary of :mod:`..zconsistency`, so a score rule works on stacks as it
does on 2-D samples.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Length units ImageJ writes, in nanometres (spacing is given in nm when the file names one).
_UNIT_NM: dict[str, float] = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "um": 1e3, "\u00b5m": 1e3,
    "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3, "mm": 1e6,
    "cm": 1e7, "m": 1e9, "a": 0.1, "angstrom": 0.1,
}

Spacing = tuple[float, float, float]


def is_stack(image: Any) -> bool:
    """True for a (Z, Y, X) grey stack (3-D, not an (H, W, 3|4) colour image)."""
    return _stack_shape(np.shape(image))


def _stack_shape(shape: Sequence[int]) -> bool:
    """Whether an array of ``shape`` is a (Z, Y, X) stack, as ``io.read_image`` sees it."""
    return len(shape) == 3 and not (shape[-1] in (3, 4) and shape[0] > 4)


def file_is_stack(path: str | os.PathLike) -> bool:
    """Whether an image file holds a (Z, Y, X) stack, read from its header only (PNG: never);
    the shape decides, as for ``io.read_image``."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        return False
    import tifffile

    from ..io import decoding

    with decoding(p), tifffile.TiffFile(p) as tif:
        series = tif.series[0]
        shape = list(series.shape)
    while len(shape) > 3 and shape[0] == 1:
        shape.pop(0)
    return _stack_shape(shape)


def check_spacing(spacing: Any, *, what: str = "spacing") -> Spacing:
    """``spacing`` as three positive finite floats (z, y, x), or a ValueError saying so."""
    try:
        vals = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"{what} must be three positive numbers (z, y, x), e.g. (50, 4, 4) "
                         f"for 50 nm sections of 4 nm pixels; got {spacing!r}.")
    return vals  # type: ignore[return-value]


def spacing_of(path: str | os.PathLike) -> Spacing | None:
    """The voxel spacing (z, y, x) a TIFF records, or None when it records none.

    Uses ``io.read_spacing`` when the io module has it; otherwise reads the ImageJ ``spacing``
    and ``unit`` and the X/YResolution tags (pixels per unit) itself, in nm when the unit is
    known (numbers as they are otherwise); without a z spacing z is taken equal to x. PNGs
    and missing files give None.
    """
    from .. import io

    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return None  # PNG records none; a missing file is reported by whoever reads it
    reader: Callable[[Any], Spacing | None] | None = getattr(io, "read_spacing", None)
    if reader is not None:
        return reader(p)
    import tifffile

    with io.decoding(p), tifffile.TiffFile(p) as tif:
        page = tif.pages.first
        ij = tif.imagej_metadata or {}
        tags = [page.tags.get("YResolution"), page.tags.get("XResolution")]
        runit = page.tags.get("ResolutionUnit")
        runit_value = int(runit.value) if runit is not None else 2
    per_px = []
    for tag in tags:
        num, den = tag.value if tag is not None else (1, 1)
        per_px.append(float(num) / float(den) if den and num else 0.0)
    z_spacing = ij.get("spacing")
    unit = str(ij.get("unit", "")).strip()
    if ij:
        scale = _UNIT_NM.get(unit.lower(), 1.0) if unit else 1.0
        has_xy = unit not in ("", "pixel", "pixels") or any(v not in (0.0, 1.0) for v in per_px)
        if z_spacing is None and not has_xy:
            return None
    elif runit_value == 3:  # centimetre: a physical size even without ImageJ's unit
        scale = 1e7
    else:  # inch (usually screen dpi) or none: nothing physical is said
        return None
    y, x = ((scale / v) if v > 0 else scale for v in per_px)
    z = float(z_spacing) * scale if z_spacing is not None else x
    return tuple(float(f"{v:.7g}") for v in (z, y, x))  # type: ignore[return-value]


def pair_spacing(image_path: str | os.PathLike | None,
                 mask_path: str | os.PathLike | None = None) -> Spacing | None:
    """The spacing of a pair: its image file's, else its mask file's, else None."""
    for path in (image_path, mask_path):
        if path is not None and Path(path).suffix.lower() in (".tif", ".tiff"):
            spacing = spacing_of(path)
            if spacing is not None:
                return spacing
    return None


def write_with_spacing(writer: Callable[..., Path], path: str | os.PathLike, array: np.ndarray,
                       spacing: Sequence[float] | None, **kwargs: Any) -> Path:
    """``writer(path, array, **kwargs)``, recording ``spacing`` in the file when the io writer
    takes a ``spacing`` keyword (the manifest records it either way)."""
    if spacing is not None and "spacing" in inspect.signature(writer).parameters:
        return writer(path, array, spacing=tuple(spacing), **kwargs)
    return writer(path, array, **kwargs)


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
