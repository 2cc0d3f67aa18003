"""Reading model files of every family without running their code, and our file format.

Two kinds of file are read. Reference checkpoints (``latest_net_G.pth`` from
junyanz/pytorch-CycleGAN-and-pix2pix) hold a bare state dict; pickles are only opened with
``torch.load(weights_only=True)``: a file that needs to run code to load is refused, never
executed. napari-synthgen's own format is one ``.safetensors`` file whose header names the
model family and holds what rebuilds its network, the mask encoding and metadata.

This package is below the families and never picks one: each family's ``files`` module builds
its networks (:mod:`napari_synthgen.families.pix2pix.files`,
:mod:`napari_synthgen.families.diffusion.files`), and :func:`napari_synthgen.registry.load_model`
hands a file to the family its header names.

Modules: ``common`` (the error, constants, encodings), ``reading`` (safe reading and
unwrapping), ``ours`` (our header format), ``locate`` (the file a path, folder or bundled name
means, and its family), ``info`` (ModelInfo, LoadedModel).
"""

from __future__ import annotations

from .common import (
    CONTAINER_KEYS,
    ENCODING_CHANNELS,
    ENCODINGS,
    FORMAT_VERSION,
    GENERATOR_PREFIXES,
    METADATA_KEY,
    REFERENCE_NAME,
    WRAPPER_PREFIXES,
    CheckpointError,
    default_encoding,
    validate_encoding,
)
from .info import LoadedModel, ModelInfo, model_info
from .locate import FOREIGN_FAMILY, ModelFile, model_family, read_model_file
from .ours import family_metadata, our_header, save_family_model
from .reading import read_state_dict, read_training_state

__all__ = [
    "CONTAINER_KEYS",
    "ENCODINGS",
    "ENCODING_CHANNELS",
    "FOREIGN_FAMILY",
    "FORMAT_VERSION",
    "GENERATOR_PREFIXES",
    "METADATA_KEY",
    "REFERENCE_NAME",
    "WRAPPER_PREFIXES",
    "CheckpointError",
    "LoadedModel",
    "ModelFile",
    "ModelInfo",
    "default_encoding",
    "family_metadata",
    "model_family",
    "model_info",
    "our_header",
    "read_model_file",
    "read_state_dict",
    "read_training_state",
    "save_family_model",
    "validate_encoding",
]
