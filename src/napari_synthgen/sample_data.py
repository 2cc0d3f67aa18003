"""The napari sample: a real ISBI 2012 ssTEM slice with its 3-class mask, shipped in the package."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np

from .io import read_array
from .masks import validate_mask
from .napari_io import LayerData, mask_layer_kwargs

SAMPLE_NAME = "isbi2012_train_29"
CITATION = (
    "ISBI 2012 EM segmentation challenge training data (Drosophila larva VNC, ssTEM). "
    "Cite: Arganda-Carreras et al. (2015) Front. Neuroanat. 9:142; "
    "Cardona et al. (2010) PLoS Biol 8(10): e1000502."
)


def sample_folder() -> Path:
    """Where the sample files live inside the installed package."""
    return Path(str(files("napari_synthgen") / "resources" / "sample"))


def demo_model_path() -> Path | None:
    """The bundled demo model (a small pix2pix trained on ISBI 2012), if the package has one."""
    folder = Path(str(files("napari_synthgen") / "resources" / "demo_model"))
    models = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return models[0] if models else None


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """The sample EM image (uint8, 512 x 512) and its mask (classes 1 and 2)."""
    folder = sample_folder()
    image = read_array(folder / f"{SAMPLE_NAME}_image.tif")
    mask = validate_mask(read_array(folder / f"{SAMPLE_NAME}_mask.tif"))
    return image, mask


def make_sample_data() -> list[LayerData]:
    """napari sample-data contribution: the EM image and its mask as layers."""
    image, mask = load_sample()
    meta = {"citation": CITATION, "source": SAMPLE_NAME}
    return [
        (image, {"name": "EM sample", "metadata": meta}, "image"),
        (mask, mask_layer_kwargs("mask", metadata=meta), "labels"),
    ]
