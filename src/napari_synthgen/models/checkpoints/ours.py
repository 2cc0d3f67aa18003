"""napari-synthgen's own format, for every family: one ``.safetensors`` file whose header names
the family and holds what rebuilds its network, the mask encoding, the tile and metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...io import atomic_path
from .common import (
    _RESERVED,
    FORMAT_VERSION,
    METADATA_KEY,
    WRAPPER_PREFIXES,
    CheckpointError,
)
from .reading import _strip_prefixes


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _check_tile(tile: object) -> int | None:
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise CheckpointError(f"tile must be a positive integer or None, got {tile!r}.")
    return tile


def _header(
    family: str, entries: Mapping[str, Any], encoding: str, tile: int | None,
    metadata: Mapping[str, Any] | None,
) -> str:
    """The JSON of our header: format, family, the family's entries, encoding, tile, metadata."""
    extra = dict(metadata or {})
    clash = [k for k in (*_RESERVED, *entries) if k in extra]
    if clash:
        raise CheckpointError(
            f"metadata may not set {', '.join(clash)}: save_model writes these itself."
        )
    doc = {
        "format_version": FORMAT_VERSION, "family": family, **entries,
        "encoding": encoding, "tile": tile, **extra,
    }
    try:
        return json.dumps(doc, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata cannot be stored as JSON: {exc}.") from None


def _tensors_for_saving(network: nn.Module, dtype: torch.dtype = torch.float32
                        ) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, floating point ones in ``dtype``."""
    sd = _strip_prefixes(dict(network.state_dict()), WRAPPER_PREFIXES, [])
    out = {}
    for key, value in sd.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous()
    return out


def save_family_model(
    path: str | os.PathLike,
    network: nn.Module,
    *,
    family: str,
    entries: Mapping[str, Any],
    encoding: str,
    tile: int | None,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Save a model of any family in our format, atomically: ``network``'s weights and a
    header with the family name, the family's own ``entries`` (what rebuilds the network,
    e.g. a diffusers config), the mask encoding, the tile and ``metadata``.

    The family's ``load`` reads the entries back (see :func:`our_header`).
    """
    from safetensors.torch import save_file

    dest = Path(path)
    if dest.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{dest}: napari-synthgen models are saved as .safetensors files.")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(f"weights are saved as float32, float16 or bfloat16; got {dtype}.")
    header = _header(family, entries, encoding, _check_tile(tile), metadata)
    tensors = _tensors_for_saving(network, dtype)
    with atomic_path(dest) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: header})
    return dest


_RESAVE = "the file is incomplete or was altered; save the model again"


def _check_doc(doc: Mapping[str, Any]) -> str:
    """The family of a napari-synthgen header, after checking its format version."""
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"its napari-synthgen header has no valid format_version (found {version!r}); "
            f"{_RESAVE}."
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"it was written by a newer napari-synthgen (format {version}; this version reads "
            f"up to {FORMAT_VERSION}). Update napari-synthgen to load it."
        )
    family = doc.get("family")
    if family is None:
        raise CheckpointError(f"its napari-synthgen header names no model family; {_RESAVE}.")
    if not isinstance(family, str):
        raise CheckpointError(f"its model family {family!r} is not a name; {_RESAVE}.")
    return family


def header_document(header: Mapping[str, str]) -> dict[str, Any] | None:
    """The napari-synthgen document in a safetensors header (its metadata mapping); None for
    files without one. Damaged JSON is a :class:`CheckpointError`."""
    text = header.get(METADATA_KEY)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise CheckpointError("its napari-synthgen header is not valid JSON; the file is "
                              "damaged. Save the model again.") from None
    if not isinstance(doc, dict):
        raise CheckpointError("its napari-synthgen header is not a JSON object.")
    return doc


def read_document(path: str | os.PathLike) -> dict[str, Any] | None:
    """The napari-synthgen document of a ``.safetensors`` file, read from its header alone
    (no weights); None when it has none. Any model family's file."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error type for damaged files
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc}).") from None
    try:
        return header_document(meta)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def our_header(header: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
    """(family, header document) of a napari-synthgen file's safetensors header; None for
    other files. The format version and the family entry are checked."""
    doc = header_document(header)
    return None if doc is None else (_check_doc(doc), doc)


def family_metadata(doc: Mapping[str, Any], entries: tuple[str, ...] = ()) -> dict[str, Any]:
    """The metadata of a header: everything but the reserved keys and the family's entries."""
    return {k: v for k, v in doc.items() if k not in _RESERVED and k not in entries}
