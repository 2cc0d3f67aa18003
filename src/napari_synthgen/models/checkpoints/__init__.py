"""Read, recognise, load and save model checkpoints of every family, without running their code.

Two formats are understood. Reference checkpoints (``latest_net_G.pth`` from
junyanz/pytorch-CycleGAN-and-pix2pix) hold a bare state dict; the generator, its width, norm
and channels are detected from the key names and shapes. napari-synthgen's own format is one
``.safetensors`` file whose header carries the generator spec, the mask encoding and training
metadata. Pickles are only opened with ``torch.load(weights_only=True)``: a file that needs
to run code to load is refused, never executed. Our header names the model family (reference
files are pix2pix); the family registry (:mod:`napari_synthgen.families`) builds the network,
and other families save with ``save_family_model``.

Modules: ``common`` (the error, constants, encodings), ``reading`` (safe reading and
unwrapping), ``reference`` (architecture detection), ``ours`` (our format), ``loading``
(load_model, inspect_model, ModelInfo).
"""

from __future__ import annotations

from .common import (
    CONTAINER_KEYS,
    ENCODING_CHANNELS,
    ENCODINGS,
    FAMILY,
    FORMAT_VERSION,
    GENERATOR_PREFIXES,
    METADATA_KEY,
    REFERENCE_NAME,
    WRAPPER_PREFIXES,
    CheckpointError,
    default_encoding,
    validate_encoding,
)
from .loading import (
    LoadedModel,
    ModelInfo,
    inspect_model,
    load_model,
    load_pix2pix,
    model_family,
    model_info,
)
from .ours import family_metadata, our_header, save_family_model, save_model
from .reading import read_state_dict, read_training_state
from .reference import describe_spec, detect_generator

__all__ = [
    "CONTAINER_KEYS",
    "ENCODINGS",
    "ENCODING_CHANNELS",
    "FAMILY",
    "FORMAT_VERSION",
    "GENERATOR_PREFIXES",
    "METADATA_KEY",
    "REFERENCE_NAME",
    "WRAPPER_PREFIXES",
    "CheckpointError",
    "LoadedModel",
    "ModelInfo",
    "default_encoding",
    "describe_spec",
    "detect_generator",
    "family_metadata",
    "inspect_model",
    "load_model",
    "load_pix2pix",
    "model_family",
    "model_info",
    "our_header",
    "read_state_dict",
    "read_training_state",
    "save_family_model",
    "save_model",
    "validate_encoding",
]
