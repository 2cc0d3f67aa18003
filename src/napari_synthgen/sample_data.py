"""The napari sample (a real ISBI 2012 ssTEM slice with its 3-class mask) and the bundled models,
shipped in the package."""

from __future__ import annotations

import os
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


#: Bundled model name -> file under ``resources/`` (what ``--model demo`` and
#: ``load_model("demo")`` open).
BUNDLED_MODELS: dict[str, str] = {
    "demo": "demo_model/isbi2012_unet256_ngf16.safetensors",
    "demo-diffusion": "demo_diffusion/isbi2012_diffusion_small.safetensors",
    "demo-diffusion-fast": "demo_diffusion_fast/isbi2012_diffusion_small_fast.safetensors",
}

#: How a bundled model that an installation may lack is made (said when it is missing).
MAKE_BUNDLED: dict[str, str] = {
    "demo-diffusion-fast": (
        "it is the few-step distillation of demo-diffusion; make it with "
        "'bash scripts/distill_demo.sh RUN' and 'python scripts/pack_diffusion_fast.py RUN' "
        "from a source checkout, or use demo-diffusion"),
}


def bundled_model_path(name: str) -> Path:
    """Where the bundled model ``name`` lives inside the installed package (may be missing)."""
    return Path(str(files("napari_synthgen") / "resources")) / BUNDLED_MODELS[name]


def resolve_model_source(name_or_path: str | os.PathLike) -> Path:
    """A model path: an existing file or folder as given, else a bundled model's file by name.

    Anything else comes back as a path (the loader then says it does not exist). Raises
    FileNotFoundError when a bundled model is named but missing from this installation.
    """
    path = Path(name_or_path).expanduser()
    name = os.fspath(name_or_path)
    if path.exists() or name not in BUNDLED_MODELS:
        return path
    bundled = bundled_model_path(name)
    if not bundled.is_file():
        how = MAKE_BUNDLED.get(name, "reinstall napari-synthgen")
        raise FileNotFoundError(
            f"the bundled model {name!r} is missing from this installation (expected "
            f"{bundled}); {how}, or give a model file or folder."
        )
    return bundled


def demo_model_path() -> Path | None:
    """The bundled demo model (a small pix2pix trained on ISBI 2012), if the package has one."""
    path = bundled_model_path("demo")
    return path if path.is_file() else None


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
