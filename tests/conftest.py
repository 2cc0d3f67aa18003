"""Shared fixtures: the project's shared data beside the repository, tiny real models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _shared(path: str) -> Path:
    p = SHARED / path
    if not p.exists():
        pytest.fail(f"{p} is missing: the tests expect ../shared beside the repository.")
    return p


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    """The 30 ISBI 2012 image/mask pairs (a paired folder)."""
    return _shared("data/isbi2012")


@pytest.fixture(scope="session")
def isbi_mask(isbi_dir: Path) -> np.ndarray:
    """A real 512 x 512 ISBI mask (classes 1 and 2)."""
    import tifffile

    return tifffile.imread(isbi_dir / "masks" / "isbi2012_train_00.tif")


@pytest.fixture(scope="session")
def isbi_image(isbi_dir: Path) -> np.ndarray:
    """The EM image paired with :func:`isbi_mask`."""
    import tifffile

    return tifffile.imread(isbi_dir / "images" / "isbi2012_train_00.tif")


@pytest.fixture(scope="session")
def reference_fixtures() -> Path:
    """Tiny checkpoints made with the reference pix2pix code, with inputs and eval outputs.

    That is ``Path(__file__).resolve().parents[2] / "shared" / "fixtures" /
    "pix2pix_reference"`` seen from a test file; see its README.md and manifest.json.
    """
    return _shared("fixtures/pix2pix_reference")
