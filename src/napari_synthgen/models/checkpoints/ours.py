"""napari-synthgen's own format: one ``.safetensors`` file whose header holds the spec."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...io import atomic_path
from ..pix2pix import GeneratorSpec
from .common import (
    _RESERVED,
    FAMILY,
    FORMAT_VERSION,
    METADATA_KEY,
    WRAPPER_PREFIXES,
    CheckpointError,
    _Resolved,
    validate_encoding,
)
from .reading import _strip_prefixes
from .reference import _check_fit, _detect, describe_spec


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


def save_model(
    path: str | os.PathLike,
    network: nn.Module,
    spec: GeneratorSpec,
    *,
    encoding: str,
    tile: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Save ``network`` as one ``.safetensors`` file with its spec and metadata, atomically.

    ``metadata`` (JSON-serialisable: intensity statistics, training config, provenance,
    step...) is stored beside the spec in the header key ``napari_synthgen``. ``dtype``
    float16 halves the file (for distribution); loading always gives float32 weights.
    """
    from safetensors.torch import save_file

    dest = Path(path)
    if dest.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{dest}: napari-synthgen models are saved as .safetensors files.")
    validate_encoding(encoding, spec.input_nc)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(f"weights are saved as float32, float16 or bfloat16; got {dtype}.")
    tensors = _tensors_for_saving(network, dtype)
    try:
        _check_fit(tensors, spec)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot save {dest.name}: the network does not match its spec; "
                              f"{exc}") from None
    header = _header(FAMILY, {"generator": asdict(spec)}, encoding, _check_tile(tile), metadata)
    with atomic_path(dest) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: header})
    return dest


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


_SPEC_FIELDS = tuple(f.name for f in fields(GeneratorSpec))
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


def _spec_from_doc(doc: Mapping[str, Any]) -> GeneratorSpec:
    """The generator spec of a pix2pix header, or a CheckpointError saying what is off."""
    gen = doc.get("generator")
    if gen is None:
        raise CheckpointError(
            "its napari-synthgen header has no generator spec (the 'generator' entry with "
            f"netG, ngf, norm and channels), so the network cannot be built; {_RESAVE}."
        )
    if not isinstance(gen, Mapping):
        raise CheckpointError(
            f"its generator spec is a {type(gen).__name__}, not a dictionary of "
            f"{', '.join(_SPEC_FIELDS)}; {_RESAVE}."
        )
    missing = [k for k in _SPEC_FIELDS if k not in gen]
    unknown = [str(k) for k in gen if k not in _SPEC_FIELDS]
    if missing or unknown:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown entries {', '.join(unknown)}"] if unknown else [])
        raise CheckpointError(f"its generator spec {' and '.join(parts)}; {_RESAVE}.")
    try:
        return GeneratorSpec(**gen)
    except (TypeError, ValueError) as exc:
        detail = str(exc).rstrip(".")
        raise CheckpointError(f"its generator spec is not valid ({detail}); {_RESAVE}.") from None


def _guess(sd: dict[str, torch.Tensor]) -> str:
    try:
        return f" The tensors look like {describe_spec(_detect(sd).spec)}."
    except CheckpointError:
        return ""


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


def our_header(header: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
    """(family, header document) of a napari-synthgen file's safetensors header; None for
    other files. The format version and the family entry are checked."""
    doc = header_document(header)
    return None if doc is None else (_check_doc(doc), doc)


def family_metadata(doc: Mapping[str, Any], entries: tuple[str, ...] = ()) -> dict[str, Any]:
    """The metadata of a header: everything but the reserved keys and the family's entries."""
    return {k: v for k, v in doc.items() if k not in _RESERVED and k not in entries}


def _parse_pix2pix_doc(tensors: dict[str, torch.Tensor], doc: Mapping[str, Any]) -> _Resolved:
    """The spec, encoding and metadata of a pix2pix header whose tensors are ``tensors``."""
    spec = _spec_from_doc(doc)
    try:
        _check_fit(tensors, spec)
    except CheckpointError as exc:
        raise CheckpointError(
            f"its metadata says {describe_spec(spec)}, but the tensors do not fit: {exc}"
            f"{_guess(tensors)} The file was altered; save the model again."
        ) from None
    notes = [f"napari-synthgen model: {describe_spec(spec)}"]
    metadata = {k: v for k, v in doc.items() if k not in _RESERVED}
    return _Resolved(
        spec, True, tensors, "synthgen-safetensors", notes,
        encoding=doc.get("encoding"), tile=_check_tile(doc.get("tile")), metadata=metadata,
    )
