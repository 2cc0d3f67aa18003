"""Record contents: provenance as strict JSON, and checks of a sample before anything is written."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..io import sha256_array
from ..masks import MaskError, validate_mask
from .common import _MAX_INLINE_ARRAY, ExportError
from .stacks import is_stack


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (NumPy values, Paths, sets, dates converted), or ExportError.

    Non-finite floats become the strings "nan"/"inf"/"-inf" so that the manifest stays strict
    JSON; arrays larger than ``_MAX_INLINE_ARRAY`` elements are stored as shape/dtype/SHA-256.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, np.ndarray):
        return _jsonable_array(value, where)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if isinstance(value, os.PathLike):
        return str(Path(value))
    if isinstance(value, Mapping):
        return {_json_key(k, where): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_jsonable(v, f"{where} item") for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise ExportError(
        f"provenance {where}: a {type(value).__name__} cannot be stored in the manifest; pass "
        "a str, number, bool, None, list, dict, Path or NumPy value (e.g. str(obj))."
    )


def _jsonable_array(arr: np.ndarray, where: str) -> Any:
    """Small arrays as nested lists, large ones as a digest (the manifest is not a data store)."""
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind in "USM" and arr.size <= _MAX_INLINE_ARRAY:
            return [_jsonable(v, where) for v in arr.astype(str).ravel().tolist()]
        raise ExportError(
            f"provenance {where}: arrays of dtype {arr.dtype} cannot be stored in the manifest; "
            "pass numbers, strings or a path to the data."
        )
    if arr.size <= _MAX_INLINE_ARRAY:
        return _jsonable(arr.tolist(), where)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": sha256_array(arr)}


def _json_key(key: Any, where: str) -> str:
    """A dict key as a JSON object key."""
    if isinstance(key, str):
        return key
    if isinstance(key, (int, float, bool, np.integer, np.floating, np.bool_)):
        return str(_jsonable(key, where))
    raise ExportError(
        f"provenance {where}: dict key {key!r} ({type(key).__name__}) is not a string or number."
    )



# ---------------------------------------------------------------------- sample checking


def _check_image(image: Any) -> np.ndarray:
    """The image as an array if it is 2-D or a (Z, Y, X) stack, numeric and finite, else
    ExportError."""
    img = np.asarray(image)
    if not (img.ndim == 2 or is_stack(img)) or img.size == 0:
        raise ExportError(
            f"the image has shape {img.shape}; a sample image is a non-empty 2-D (H, W) array "
            "or a (Z, Y, X) stack."
        )
    if img.dtype.kind not in "uif":
        raise ExportError(
            f"the image has dtype {img.dtype}; a sample image holds integer or float grey levels."
        )
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        raise ExportError("the image holds NaN or infinite values; fix the image, then retry.")
    return img


def _check_mask(mask: Any) -> np.ndarray:
    """The mask as uint8 classes, or ExportError carrying the :class:`MaskError` message."""
    try:
        return validate_mask(mask)
    except MaskError as exc:
        raise ExportError(f"invalid mask: {exc}") from exc


def _check_sample(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate an image/mask pair before anything is written."""
    m = _check_mask(mask)
    img = _check_image(image)
    if img.shape != m.shape:
        raise ExportError(
            f"image shape {img.shape} and mask shape {m.shape} differ; a sample is an image "
            "and its mask of the same shape (a stack: the same slices, height and width). "
            "Nothing was written."
        )
    return img, m
