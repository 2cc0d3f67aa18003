"""The toy family's file format: our .safetensors with a ``toy`` header entry."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_synthgen.encoding import n_channels
from napari_synthgen.models.checkpoints import (
    CheckpointError,
    LoadedModel,
    family_metadata,
    model_info,
    read_model_file,
    save_family_model,
)

from .network import ToyNet

FAMILY = "toy"


def save(path: str | os.PathLike, net: torch.nn.Module, width: int, *, encoding: str,
         tile: int | None, metadata: Mapping[str, Any] | None = None) -> Path:
    return save_family_model(path, net, family=FAMILY, entries={"toy": {"width": width}},
                             encoding=encoding, tile=tile, metadata=metadata)


def load(tensors: dict[str, torch.Tensor], doc: Mapping[str, Any] | None, *, file: Path,
         notes: list[str], encoding: str | None) -> LoadedModel:
    if doc is None:
        raise CheckpointError("toy models are only saved by napari-synthgen.")
    width = doc["toy"]["width"]
    enc = encoding or doc["encoding"]
    net = ToyNet(n_channels(enc), width)
    net.load_state_dict(tensors, strict=True)
    info = model_info(FAMILY, file, net.eval(), input_nc=n_channels(enc), output_nc=1,
                      encoding=enc, encoding_source="metadata", tile=doc["tile"],
                      format="synthgen-safetensors", notes=notes,
                      metadata=family_metadata(doc, ("toy",)),
                      details={"architecture": f"toy width {width}", "width": width})
    return LoadedModel(network=net, info=info, spec={"width": width})


def load_file(path: str | os.PathLike, encoding: str | None = None) -> LoadedModel:
    found = read_model_file(path)
    if found.family != FAMILY:
        raise CheckpointError(f"{found.file}: it holds a {found.family} model, not a toy one.")
    return load(found.tensors, found.doc, file=found.file, notes=found.notes, encoding=encoding)
