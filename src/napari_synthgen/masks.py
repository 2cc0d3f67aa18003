"""The 3-class mask model: classes, palette, validation and coercion, conversions, boundaries.

A mask is a ``uint8`` array, 2-D ``(H, W)`` or a 3-D stack ``(Z, H, W)``, holding
0 (background), 1 (cell interior) and 2 (boundary). Every function here is pure NumPy/SciPy
so that masks can be handled in a notebook, the CLI, a cluster job or a napari widget alike.
Stacks are always processed slice by slice: slices of serial-section EM are not connected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import numpy as np
from scipy import ndimage as ndi

BACKGROUND: int = 0
INTERIOR: int = 1
BOUNDARY: int = 2
CLASS_NAMES: tuple[str, str, str] = ("background", "interior", "boundary")
N_CLASSES: int = 3
#: A training-mask value, never a user's: "no mask for this image" (an unlabelled image, or a
#: mask dropped for classifier-free guidance). Encodings give it the null condition.
NO_LABEL: int = 255

#: The mask encodings, names only (napari_synthgen.encoding says what each feeds a model;
#: kept here, free of torch, for the widgets and the CLI parser).
ENCODINGS: tuple[str, ...] = ("rgb", "onehot", "label", "sparse")
#: Input channels each mask encoding feeds to a model.
ENCODING_CHANNELS: dict[str, int] = {"rgb": 3, "onehot": 3, "label": 1, "sparse": 2}

#: Colours of the reference pix2pix runs: black background, green interior, red boundary.
PALETTE: np.ndarray = np.array([[0, 0, 0], [0, 255, 0], [255, 0, 0]], dtype=np.uint8)
PALETTE.setflags(write=False)

#: ``source`` values understood by :func:`coerce_mask`.
MaskSource = Literal["auto", "classes", "palette", "binary", "membrane", "instances"]
#: The same values as a tuple (for option choices and checks).
MASK_SOURCES: tuple[str, ...] = get_args(MaskSource)


class MaskError(ValueError):
    """A mask that is not a valid 3-class mask, with a message that says what to do."""


def _where(mask: np.ndarray, bad: np.ndarray) -> str:
    """Describe the first offending location of ``bad`` in words (row/column, slice)."""
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
    if len(idx) == 2:
        return f"row {idx[0]}, column {idx[1]}"
    if len(idx) == 3 and mask.ndim == 3 and bad.shape == mask.shape:
        return f"slice {idx[0]}, row {idx[1]}, column {idx[2]}"
    return "index " + str(idx)


def validate_mask(mask: np.ndarray, *, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as ``uint8`` if it is a valid class mask, or raise :class:`MaskError`.

    Accepts any integer (or bool-free) array whose values are all in 0..2, 2-D or 3-D.
    The error names the first wrong value, where it is and how many pixels are wrong.
    """
    arr = np.asarray(mask)
    if arr.ndim not in (2, 3):
        raise MaskError(
            f"{name} has {arr.ndim} dimensions (shape {arr.shape}); expected a 2-D mask (H, W) "
            "or a 3-D stack (Z, H, W)."
        )
    if arr.size == 0:
        raise MaskError(f"{name} is empty (shape {arr.shape}).")
    if arr.dtype == bool:
        raise MaskError(
            f"{name} is boolean. A boolean mask is a binary mask: convert it with "
            "coerce_mask(mask, source='binary') (objects on background) or "
            "source='membrane' (True = cell interior, False = membrane)."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise MaskError(
            f"{name} has dtype {arr.dtype}; masks hold integer classes 0, 1, 2. "
            "If the values are whole numbers, use coerce_mask(mask, allow_float=True)."
        )
    bad = arr > BOUNDARY if arr.dtype == np.uint8 else (arr < 0) | (arr > BOUNDARY)
    if bad.any():
        value = arr[np.unravel_index(int(np.argmax(bad)), bad.shape)]
        count = int(bad.sum())
        hint = _hint_for_values(arr)
        raise MaskError(
            f"{name} has value {int(value)} at {_where(arr, bad)} ({count} pixel"
            f"{'s' if count != 1 else ''} outside 0..2); classes are 0 background, "
            f"1 interior, 2 boundary.{hint}"
        )
    return arr.astype(np.uint8, copy=False)


def _hint_for_values(arr: np.ndarray) -> str:
    """Suggest the right conversion for a mask that has values outside 0..2."""
    values = np.unique(arr) if arr.size <= 50_000_000 else np.unique(arr[::7])
    if set(values.tolist()) <= {0, 255}:
        return (
            " The values are 0 and 255, a binary mask: convert it with "
            "coerce_mask(mask, source='binary') or source='membrane' (ISBI style)."
        )
    if values.size > 3:
        return (
            f" It has {values.size} distinct values, like an instance label image: convert it "
            "with coerce_mask(mask, source='instances', boundary_width=...)."
        )
    return ""


def to_palette(mask: np.ndarray) -> np.ndarray:
    """Colour a class mask with :data:`PALETTE`: ``(..., H, W)`` -> ``(..., H, W, 3)`` uint8."""
    return PALETTE[validate_mask(mask)]


def from_palette(rgb: np.ndarray, *, tolerance: int = 0) -> np.ndarray:
    """Map a palette image (black / green / red, optional alpha) back to classes.

    ``tolerance`` allows colours up to that far (per channel) from a palette colour, e.g. for
    images that went through lossy compression. Any other colour is an error naming it.
    """
    arr = np.asarray(rgb)
    if arr.ndim < 3 or arr.shape[-1] not in (3, 4):
        raise MaskError(
            f"a palette image has shape (H, W, 3) or (H, W, 4); got shape {arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise MaskError(f"a palette image is 8-bit RGB; got dtype {arr.dtype}.")
    colours = arr[..., :3].astype(np.int16)
    out = np.zeros(colours.shape[:-1], dtype=np.uint8)
    matched = np.zeros(colours.shape[:-1], dtype=bool)
    for cls, colour in enumerate(PALETTE.astype(np.int16)):
        hit = np.all(np.abs(colours - colour) <= tolerance, axis=-1) & ~matched
        out[hit] = cls
        matched |= hit
    if not matched.all():
        bad = ~matched
        loc = np.unravel_index(int(np.argmax(bad)), bad.shape)
        colour = tuple(int(c) for c in colours[loc])
        raise MaskError(
            f"colour {colour} at {_where(out, bad)} ({int(bad.sum())} pixels) is not a class "
            "colour; the palette is black (0,0,0) background, green (0,255,0) interior, "
            "red (255,0,0) boundary. Pass tolerance=... for slightly off colours."
        )
    return out


def _looks_like_palette(arr: np.ndarray) -> bool:
    """True for an 8-bit (H, W, 3|4) array, which is how RGB palette images arrive."""
    return (
        arr.ndim == 3
        and arr.shape[-1] in (3, 4)
        and arr.shape[0] > 4
        and arr.shape[1] > 4
        and arr.dtype == np.uint8
    )


def coerce_mask(
    data: np.ndarray,
    source: MaskSource = "auto",
    *,
    boundary_width: int = 1,
    allow_float: bool = False,
    tolerance: int = 0,
) -> np.ndarray:
    """Turn ``data`` into a valid ``uint8`` class mask, or raise :class:`MaskError`.

    ``source`` says what ``data`` holds:

    - ``"auto"`` (default): class values, or an RGB palette image. Never guesses binary or
      instance masks; those give an error that says which ``source`` to pass.
    - ``"classes"``: values 0..2.
    - ``"palette"``: black / green / red RGB(A).
    - ``"binary"``: bool, 0/1 or 0/255 objects on background; objects become interior with a
      boundary of ``boundary_width`` pixels on their edge (touching objects merge).
    - ``"membrane"``: bool, 0/1 or 0/255 where true/255 is cell interior and 0 is membrane
      (the ISBI 2012 convention); no background.
    - ``"instances"``: integer labels, 0 background, one id per object; each object gets a
      boundary of ``boundary_width`` pixels where it meets another object or background.

    ``allow_float`` accepts float arrays whose values are whole numbers (e.g. from a TIFF saved
    as float); fractional values are still an error.
    """
    arr = np.asarray(data)
    if source == "palette" or (source == "auto" and _looks_like_palette(arr)):
        return from_palette(arr, tolerance=tolerance)
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating):
            raise MaskError(f"cannot read a mask from an array of dtype {arr.dtype}.")
        if not allow_float:
            raise MaskError(
                f"the mask has dtype {arr.dtype}; masks hold integer classes. If its values are "
                "whole numbers, pass allow_float=True."
            )
        finite = np.isfinite(arr)
        fractional = ~finite | (np.round(arr) != arr)
        if fractional.any():
            value = arr[np.unravel_index(int(np.argmax(fractional)), arr.shape)]
            raise MaskError(
                f"the mask has the non-integer value {float(value)!r} at "
                f"{_where(arr, fractional)}; "
                "a float mask can only be used when every value is a whole number."
            )
        if arr.size and (arr.min() < np.iinfo(np.int64).min or arr.max() > 2**62):
            raise MaskError("the float mask holds values too large to be labels.")
        arr = arr.astype(np.int64)
    if source in ("auto", "classes"):
        return validate_mask(arr)
    if source == "binary":
        fg = _binary_foreground(arr)
        return instances_to_mask(
            _per_slice(fg, lambda s: ndi.label(s)[0]), boundary_width=boundary_width
        )
    if source == "membrane":
        fg = _binary_foreground(arr)
        return np.where(fg, INTERIOR, BOUNDARY).astype(np.uint8)
    if source == "instances":
        return instances_to_mask(arr, boundary_width=boundary_width)
    raise MaskError(
        f"unknown mask source {source!r}; use one of auto, classes, palette, binary, "
        "membrane, instances."
    )


def _binary_foreground(arr: np.ndarray) -> np.ndarray:
    """The True/1/255 pixels of a binary mask; any other value is an error."""
    if arr.dtype == bool:
        return arr
    values = np.unique(arr)
    if set(values.tolist()) <= {0, 1}:
        return arr == 1
    if set(values.tolist()) <= {0, 255}:
        return arr == 255
    bad = ~np.isin(arr, (0, 1, 255))
    if not bad.any():  # both 1 and 255 present
        bad = arr == 1
    value = arr[np.unravel_index(int(np.argmax(bad)), arr.shape)]
    raise MaskError(
        f"a binary mask holds 0/1 or 0/255; found value {int(value)} at {_where(arr, bad)} "
        f"(values present: {values[:10].tolist()}{' ...' if values.size > 10 else ''})."
    )


def _per_slice(arr: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a 2-D function to a 2-D array or to each slice of a 3-D stack."""
    if arr.ndim == 2:
        return fn(arr)
    if arr.ndim == 3:
        return np.stack([fn(s) for s in arr])
    raise MaskError(f"expected a 2-D mask or 3-D stack, got shape {arr.shape}.")


def _disk(radius: int) -> np.ndarray:
    """A disk footprint; radius 1 is the 4-connected cross."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r


def _instances_to_mask_2d(labels: np.ndarray, width: int) -> np.ndarray:
    fp = _disk(width)
    hi = ndi.maximum_filter(labels, footprint=fp, mode="nearest")
    lo = ndi.minimum_filter(labels, footprint=fp, mode="nearest")
    edge = ((hi != labels) | (lo != labels)) & (labels > 0)
    out = np.where(labels > 0, INTERIOR, BACKGROUND).astype(np.uint8)
    out[edge] = BOUNDARY
    # Every instance keeps some interior: objects thinner than the boundary keep their core.
    ids = np.unique(labels[labels > 0])
    if ids.size:
        has_interior = np.zeros(int(ids.max()) + 1, dtype=bool)
        has_interior[labels[out == INTERIOR]] = True
        lost = ids[~has_interior[ids]]
        if lost.size:
            slices = ndi.find_objects(labels)
            for lab in lost:
                sl = slices[lab - 1]
                region = labels[sl] == lab
                # depth inside the object, measured on its (padded) bounding box
                d = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
                out[sl][region & (d >= d[region].max())] = INTERIOR
    return out


def instances_to_mask(labels: np.ndarray, *, boundary_width: int = 1) -> np.ndarray:
    """Instance labels (0 background, ids > 0) to a 3-class mask.

    Each object's pixels within ``boundary_width`` of another object or of background become
    boundary; the rest stays interior. An object thinner than that keeps its core as interior,
    so no object disappears.
    """
    arr = np.asarray(labels)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise MaskError(f"instance labels must be integers; got dtype {arr.dtype}.")
    if boundary_width < 1:
        raise MaskError(f"boundary_width must be at least 1; got {boundary_width}.")
    if arr.size and arr.min() < 0:
        bad = arr < 0
        raise MaskError(
            f"instance labels must be >= 0; found {int(arr.min())} at {_where(arr, bad)}.")
    work = arr.astype(np.int64 if arr.max(initial=0) > np.iinfo(np.int32).max else np.int32)
    return _per_slice(work, lambda s: _instances_to_mask_2d(s, int(boundary_width)))


def mask_to_instances(mask: np.ndarray) -> np.ndarray:
    """Split a class mask into objects: interior regions grown into their boundary.

    Interior components (4-connected) are the seeds; boundary pixels go to the nearest seed;
    background stays 0. Boundary pixels with no interior anywhere stay unassigned (0).
    """
    m = validate_mask(mask)

    def one(s: np.ndarray) -> np.ndarray:
        seeds, n = ndi.label(s == INTERIOR)
        if n == 0:
            return seeds.astype(np.int32)
        # nearest seed for every pixel, then keep only non-background pixels
        _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
        grown = seeds[iy, ix]
        grown[s == BACKGROUND] = 0
        return grown.astype(np.int32)

    return _per_slice(m, one)


def rebuild_boundaries(mask: np.ndarray, *, width: int = 2) -> np.ndarray:
    """Redraw every boundary with ``width`` pixels from the painted interior.

    Each connected interior region is a cell; painted boundary pixels are shared out between
    the cells they separate, then each cell gets a closed boundary of ``width`` pixels where it
    meets another cell or background. Background stays background.
    """
    return instances_to_mask(mask_to_instances(mask), boundary_width=width)


def class_fractions(mask: np.ndarray) -> dict[str, float]:
    """The fraction of pixels in each class, by class name."""
    m = validate_mask(mask)
    counts = np.bincount(m.ravel(), minlength=N_CLASSES)[:N_CLASSES]
    total = max(int(counts.sum()), 1)
    return {name: float(c) / total for name, c in zip(CLASS_NAMES, counts, strict=True)}


def classes_present(mask: np.ndarray) -> list[int]:
    """The classes that occur in ``mask``, in order."""
    m = validate_mask(mask)
    counts = np.bincount(m.ravel(), minlength=N_CLASSES)
    return [c for c in range(N_CLASSES) if counts[c] > 0]


def empty_mask(shape: tuple[int, ...], fill: int = BACKGROUND) -> np.ndarray:
    """A new mask of ``shape`` filled with one class."""
    if fill not in (BACKGROUND, INTERIOR, BOUNDARY):
        raise MaskError(f"fill must be a class 0..2; got {fill}.")
    if len(shape) not in (2, 3) or any(int(s) <= 0 for s in shape):
        raise MaskError(f"a mask shape is (H, W) or (Z, H, W) with positive sizes; got {shape}.")
    return np.full(tuple(int(s) for s in shape), fill, dtype=np.uint8)


def label_colours() -> dict[int | None, tuple[float, float, float, float]]:
    """RGBA colours per class for a label viewer (napari's ``DirectLabelColormap``).

    Values outside 0..2 (``None`` key) show magenta, so a wrong value stands out at once.
    """
    colours: dict[int | None, tuple[float, float, float, float]] = {
        cls: (*(PALETTE[cls] / 255.0).tolist(), 1.0) for cls in range(N_CLASSES)
    }
    colours[None] = (1.0, 0.0, 1.0, 1.0)
    return colours


# --------------------------------------------------------------------------- classes a model knows


def class_record(fractions: np.ndarray | list[float]) -> dict[str, float]:
    """The ``classes`` entry of a checkpoint's metadata: pixel fraction per class id (as text).

    ``fractions`` holds one number per class 0..2; a class with fraction 0 was never seen.
    """
    arr = np.asarray(fractions, dtype=np.float64)
    if arr.shape != (N_CLASSES,):
        raise MaskError(f"class fractions need one value per class 0..2; got shape {arr.shape}.")
    total = float(arr.sum()) or 1.0
    return {str(c): round(float(arr[c]) / total, 6) for c in range(N_CLASSES)}


def unlabelled_counts(counts: np.ndarray | list[float], unlabel_fraction: float) -> np.ndarray:
    """Per-class pixel counts (or fractions) as a model trained with ``--unlabel-fraction``
    sees them: that share of the cells (interior and ring) shown as background."""
    out = np.asarray(counts, dtype=np.float64).copy()
    if unlabel_fraction > 0:
        moved = out[1:] * float(unlabel_fraction)
        out[1:] -= moved
        out[0] += moved.sum()
    return out


def known_classes(record: object) -> dict[int, float] | None:
    """Class id -> training fraction from a checkpoint's ``classes`` metadata; None if unknown.

    Reference checkpoints and models saved before this record existed carry none: what they
    were trained on is unknown, and callers must say so rather than guess.
    """
    if not isinstance(record, dict):
        return None
    out: dict[int, float] = {}
    for key, value in record.items():
        try:
            cls, frac = int(key), float(value)
        except (TypeError, ValueError):
            return None
        if cls in (BACKGROUND, INTERIOR, BOUNDARY):
            out[cls] = frac
    return out or None


def unseen_classes(mask: np.ndarray, known: dict[int, float] | None) -> list[int]:
    """Classes present in ``mask`` that a model with ``known`` training fractions never saw.

    Empty when the record is unknown (``None``): nothing can be said then.
    """
    if known is None:
        return []
    return [c for c in classes_present(mask) if known.get(c, 0.0) <= 0.0]


def unseen_class_message(unseen: list[int], known: dict[int, float], model_name: str) -> str:
    """One plain sentence for a user whose mask holds classes the model was not trained on."""
    names = ", ".join(f"{CLASS_NAMES[c]} ({c})" for c in unseen)
    seen = ", ".join(f"{CLASS_NAMES[c]} {known[c]:.0%}" for c in sorted(known) if known[c] > 0)
    return (
        f"the mask holds {names}, which {model_name} never saw in training (it saw {seen}); "
        "it will paint those regions with whatever it guesses, often a repeating texture. "
        "Paint them with a class the model knows, or use a model trained on such masks."
    )


def default_fill(known: dict[int, float] | None) -> int:
    """The class a new mask starts with: background, unless the model never saw background
    (then interior, as for the ISBI demo model, whose data has no background)."""
    if known is not None and known.get(BACKGROUND, 0.0) <= 0.0 and known.get(INTERIOR, 0.0) > 0:
        return INTERIOR
    return BACKGROUND
