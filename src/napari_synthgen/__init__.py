"""napari-synthgen: paint 3-class masks, synthesize EM images, train, curate.

The package root stays light (NumPy only) so that napari starts fast with the plugin installed;
torch-backed parts are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import _omp_policy  # noqa: F401  (first: chooses OpenMP waiting before torch loads)

try:
    __version__ = version("napari-synthgen")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from .masks import (
    BACKGROUND,
    BOUNDARY,
    CLASS_NAMES,
    INTERIOR,
    PALETTE,
    MaskError,
    class_fractions,
    coerce_mask,
    from_palette,
    instances_to_mask,
    mask_to_instances,
    rebuild_boundaries,
    to_palette,
    validate_mask,
)

# name -> module for the lazily imported (torch-backed) public API
_LAZY = {
    "Synthesizer": "synthesis",
    "make_synthesizer": "registry",
    "synthesize": "registry",
    "load_model": "registry",
    "inspect_model": "registry",
    "make_config": "registry",
    "load_config": "registry",
    "save_model": "families.pix2pix.files",
    "ExportSession": "curation",
    "train": "training.engine",
    "TrainConfig": "training.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'napari_synthgen' has no attribute {name!r}")


__all__ = [
    "BACKGROUND",
    "BOUNDARY",
    "CLASS_NAMES",
    "INTERIOR",
    "PALETTE",
    "MaskError",
    "__version__",
    "class_fractions",
    "coerce_mask",
    "from_palette",
    "instances_to_mask",
    "mask_to_instances",
    "rebuild_boundaries",
    "to_palette",
    "validate_mask",
    *_LAZY,
]
