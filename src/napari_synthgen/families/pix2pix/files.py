"""pix2pix's file format: our ``.safetensors`` with a generator spec, and reference checkpoints.

Saving writes the generator spec into our header (entry ``generator``); loading reads it back,
or detects the generator of a foreign file (``latest_net_G.pth``) from its keys
(:mod:`.reference`), applies the dropout and encoding choices and builds the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...io import atomic_path
from ...models.checkpoints.common import (
    METADATA_KEY,
    CheckpointError,
    default_encoding,
    validate_encoding,
)
from ...models.checkpoints.info import LoadedModel, model_info
from ...models.checkpoints.locate import read_model_file
from ...models.checkpoints.ours import (
    _RESAVE,
    _check_tile,
    _header,
    _tensors_for_saving,
    family_metadata,
)
from .networks import RESNET_BLOCKS, GeneratorSpec, build_generator
from .reference import _check_fit, _detect, _Resolved, describe_spec

FAMILY = "pix2pix"
#: the header entry holding the generator spec
ENTRIES = ("generator",)


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
    generator = asdict(spec)
    if not spec.noise_nc:  # files without noise keep the layout (and bytes) they always had
        del generator["noise_nc"]
    if spec.noise_scale == 1:  # likewise files with noise at full resolution
        del generator["noise_scale"]
    header = _header(FAMILY, {"generator": generator}, encoding, _check_tile(tile), metadata)
    with atomic_path(dest) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: header})
    return dest


_SPEC_FIELDS = tuple(f.name for f in fields(GeneratorSpec))
#: spec entries added later, absent from older files (which then take the default)
_OPTIONAL_FIELDS = ("noise_nc", "noise_scale")


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
    missing = [k for k in _SPEC_FIELDS if k not in gen and k not in _OPTIONAL_FIELDS]
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
    metadata = family_metadata(doc, ENTRIES)
    return _Resolved(
        spec, True, tensors, "synthgen-safetensors", notes,
        encoding=doc.get("encoding"), tile=_check_tile(doc.get("tile")), metadata=metadata,
    )


def _resolve(tensors: dict[str, torch.Tensor], doc: dict[str, Any] | None, kind: str
             ) -> _Resolved:
    if doc is not None:
        return _parse_pix2pix_doc(tensors, doc)
    found = _detect(tensors)
    if kind == "safetensors":
        found.format = "reference-safetensors"
    return found


def _apply_dropout(found: _Resolved, dropout: bool | None) -> bool | str:
    """Apply a caller's dropout choice; return what ModelInfo reports."""
    spec = found.spec
    if dropout is None:
        return spec.dropout if found.dropout_known else "unknown"
    if spec.netG in RESNET_BLOCKS and dropout != spec.dropout:
        raise CheckpointError(
            f"dropout={dropout} was asked for, but this ResNet checkpoint was saved "
            f"{'with' if spec.dropout else 'without'} dropout (its key layout shows it). "
            "Leave dropout unset."
        )
    if dropout != spec.dropout:
        found.notes.append(f"dropout set to {dropout} by the caller")
    found.spec = replace(spec, dropout=dropout)
    return dropout


def _resolve_encoding(found: _Resolved, encoding: str | None) -> tuple[str, str]:
    input_nc = found.spec.input_nc
    if encoding is not None and found.encoding not in (None, encoding):  # a silent wrong image
        raise CheckpointError(f"this model was trained on {found.encoding!r} masks (its "
                              f"metadata says so); it cannot take {encoding!r}. Leave the "
                              "encoding override out.")
    if encoding is not None:
        return validate_encoding(encoding, input_nc), "override"
    if found.encoding is not None:
        return validate_encoding(found.encoding, input_nc), "metadata"
    chosen = default_encoding(input_nc)
    if chosen == "rgb":
        found.notes.append(
            "encoding 'rgb' assumed from 3 input channels; pass encoding='onehot' if the "
            "model was trained on one-hot masks"
        )
    return chosen, "default"


def _instantiate(found: _Resolved) -> nn.Module:
    """Build the generator, load the weights strictly, and make it float32 CPU eval."""
    network = build_generator(found.spec, init_type=None)
    try:
        network.load_state_dict(found.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not load into {describe_spec(found.spec)}: "
                              f"{exc}") from None
    return network.float().cpu().eval()


def _train_mode_note(found: _Resolved, dropout: bool | str) -> str | None:
    """Warn reference users that upstream test.py results can differ from ours."""
    if not found.format.startswith("reference") or (found.spec.norm != "batch" and not dropout):
        return None
    return (
        "outputs are computed in eval mode; upstream pix2pix test.py runs in training mode "
        "unless --eval is given, so its results can differ"
    )


def load_pix2pix(tensors: dict[str, torch.Tensor], doc: dict[str, Any] | None, *,
                 file: Path, kind: str, notes: list[str], encoding: str | None,
                 dropout: bool | None) -> LoadedModel:
    """The pix2pix family's loading: our header's generator spec, or detection from the keys."""
    found = _resolve(tensors, doc, kind)
    dropout_info = _apply_dropout(found, dropout)
    enc, enc_source = _resolve_encoding(found, encoding)
    network = _instantiate(found)
    notes = notes + found.notes
    extra = _train_mode_note(found, dropout_info)
    if extra:
        notes.append(extra)
    spec = found.spec
    noise = f" · {spec.noise_nc} noise channel(s)" if spec.noise_nc else ""
    if spec.noise_nc and spec.noise_scale > 1:
        noise += f" every {spec.noise_scale} px"
    details = {"architecture": spec.netG, "short": f"{spec.netG} ngf {spec.ngf}",
               "summary": f"{spec.netG} · ngf {spec.ngf} · {spec.norm} norm{noise}",
               "netG": spec.netG, "ngf": spec.ngf, "norm": spec.norm, "dropout": dropout_info}
    if spec.noise_nc:
        details["noise_nc"] = spec.noise_nc
    if spec.noise_scale > 1:
        details["noise_scale"] = spec.noise_scale
    info = model_info(
        FAMILY, file, network, input_nc=spec.input_nc, output_nc=spec.output_nc,
        encoding=enc, encoding_source=enc_source, tile=found.tile, format=found.format,
        notes=notes, metadata=found.metadata, details=details,
    )
    return LoadedModel(network=network, info=info, spec=found.spec)


def load_file(source: str | os.PathLike, *, encoding: str | None = None,
              dropout: bool | None = None) -> LoadedModel:
    """Load a pix2pix model file (ours or a reference checkpoint), refusing other families'."""
    found = read_model_file(source)
    if found.family != FAMILY:
        raise CheckpointError(f"{found.file}: it holds a {found.family} model, not a pix2pix "
                              "one; load it with napari_synthgen.registry.load_model.")
    try:
        return load_pix2pix(found.tensors, found.doc, file=found.file, kind=found.kind,
                            notes=found.notes, encoding=encoding, dropout=dropout)
    except CheckpointError as exc:
        raise CheckpointError(f"{found.file}: {exc}") from None
