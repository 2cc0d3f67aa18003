"""Shared fixtures: the project's shared data beside the repository, tiny real models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see napari_synthgen/__init__.py

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
def isbi_small(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> Path:
    """Six ISBI pairs (a paired folder) for fast training runs."""
    import shutil

    root = tmp_path_factory.mktemp("isbi6")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
        for i in range(6):
            name = f"isbi2012_train_{i:02d}.tif"
            shutil.copy(isbi_dir / sub / name, root / sub / name)
    return root


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


def make_tiny_model(path: Path, *, netG: str = "resnet_6blocks", ngf: int = 4,
                    norm: str = "instance", tile: int = 64, dropout: bool = False,
                    seed: int = 0, init_gain: float = 0.02) -> Path:
    """A tiny real generator with random weights, saved in our format (runs in milliseconds)."""
    import torch

    from napari_synthgen.families.pix2pix.files import save_model
    from napari_synthgen.families.pix2pix.networks import GeneratorSpec, build_generator

    torch.manual_seed(seed)
    spec = GeneratorSpec(netG=netG, input_nc=3, output_nc=1, ngf=ngf, norm=norm, dropout=dropout)
    net = build_generator(spec, init_gain=init_gain)
    return save_model(path, net, spec, encoding="rgb", tile=tile)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet-6, ngf 4, instance norm, tile 64: per-tile statistics make seams easy to see."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """U-Net 128, ngf 4, batch norm, with dropout (for stochastic variations)."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny_unet.safetensors",
                           netG="unet_128", norm="batch", tile=128, dropout=True, init_gain=0.2)


@pytest.fixture(autouse=True)
def _private_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                      ) -> None:
    """Widgets remember settings; tests keep them in a temporary folder."""
    monkeypatch.setenv("NAPARI_SYNTHGEN_CONFIG_DIR", str(tmp_path_factory.mktemp("settings")))


@pytest.fixture(autouse=True)
def _questions_must_be_answered(request: pytest.FixtureRequest,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A widget's question that a GUI test does not answer fails that test, instead of a
    message box waiting forever for a click under Xvfb. Tests answer by replacing
    ``napari_synthgen.widgets._common.ask``."""
    if (request.node.get_closest_marker("gui") is None
            or request.node.get_closest_marker("real_questions") is not None):
        return
    from napari_synthgen.widgets import _common

    def unanswered(parent, title: str, text: str, buttons) -> None:
        raise AssertionError(f"the widget asked {title!r} ({text}; {list(buttons)}) and the "
                             "test did not answer: replace napari_synthgen.widgets._common.ask")

    monkeypatch.setattr(_common, "ask", unanswered)
