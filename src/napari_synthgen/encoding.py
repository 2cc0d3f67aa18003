"""Mask encodings (model input) and image decoding (model output), shared by synthesis and training.

A mask encoding is part of a model:

- ``rgb``: the palette image as the reference pix2pix runs saw it, scaled to [-1, 1]
  (black background, green interior, red boundary; 3 channels).
- ``onehot``: one channel per class, +1 for the pixel's class and -1 elsewhere (3 channels).
- ``label``: one channel, the class scaled to [-1, 1] (0 -> -1, 1 -> 0, 2 -> +1).
- ``sparse``: for masks whose class 0 says nothing (organelle masks: unlabelled tissue);
  interior and boundary one-hot (2 channels), class 0 the null condition (both 0), the code of
  an image without a mask, so that raw images teach what class 0 looks like.

Every encoding also has a null condition, all channels 0, for a training mask of
:data:`~napari_synthgen.masks.NO_LABEL` (an image without a mask): ``rgb`` and ``onehot`` never
produce it from a class, so a model can learn "no mask" apart from every layout (classifier-free
guidance); in ``label`` it is the interior's code, so that encoding cannot learn it.

Images are scaled to [-1, 1] from their intensity range (uint8: 0..255) and back.
"""

from __future__ import annotations

import numpy as np
import torch

from .masks import N_CLASSES, NO_LABEL, PALETTE
from .models.checkpoints.common import ENCODINGS

#: encodings whose null condition (all channels 0) is not also a class's code (in ``sparse``
#: it is class 0's, on purpose)
NULL_ENCODINGS: tuple[str, ...] = ("rgb", "onehot", "sparse")

_LUTS: dict[str, np.ndarray] = {
    "rgb": PALETTE.astype(np.float32) / 127.5 - 1.0,
    "onehot": np.eye(3, dtype=np.float32) * 2.0 - 1.0,
    "label": np.array([[-1.0], [0.0], [1.0]], dtype=np.float32),
    "sparse": np.array([[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0]], dtype=np.float32),
}


def check_encoding(encoding: str) -> str:
    """Return ``encoding`` if known, else raise ``ValueError`` naming the known ones."""
    if encoding not in _LUTS:
        raise ValueError(f"unknown mask encoding {encoding!r}; use one of {', '.join(ENCODINGS)}.")
    return encoding


def n_channels(encoding: str) -> int:
    """Number of model input channels an encoding produces."""
    return int(_LUTS[check_encoding(encoding)].shape[1])


def encoding_lut(encoding: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (4, C) look-up table from class to encoded channels, as a tensor on ``device``; its
    last row (all 0) is the null condition that :func:`encode_masks` gives ``NO_LABEL``."""
    lut = _LUTS[check_encoding(encoding)]
    return torch.from_numpy(np.concatenate([lut, np.zeros_like(lut[:1])])).to(device)


def encode_masks(masks: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Encode a batch of class masks ``(B, H, W)`` (integer) to ``(B, C, H, W)`` float;
    ``NO_LABEL`` pixels get the null condition (all channels 0)."""
    idx = masks.long()
    idx = torch.where(idx == NO_LABEL, N_CLASSES, idx)
    return lut[idx].permute(0, 3, 1, 2).contiguous()


def encode_mask(mask: np.ndarray, encoding: str) -> np.ndarray:
    """Encode one class mask ``(H, W)`` to a ``(C, H, W)`` float32 array in [-1, 1]."""
    return np.ascontiguousarray(np.moveaxis(_LUTS[check_encoding(encoding)][mask], -1, 0))


def image_to_unit(image: np.ndarray, *, max_value: float | None = None) -> np.ndarray:
    """Scale an image to float32 in [-1, 1]: integer images by their dtype range."""
    img = np.asarray(image)
    if max_value is None:
        if img.dtype == np.uint8:
            max_value = 255.0
        elif img.dtype == np.uint16:
            max_value = 65535.0
        elif np.issubdtype(img.dtype, np.floating) and img.size and img.max() <= 1.0:
            max_value = 1.0
        else:
            raise ValueError(
                f"cannot scale an image of dtype {img.dtype} without knowing its range; "
                "use 8- or 16-bit images, or floats in [0, 1]."
            )
    return img.astype(np.float32) * np.float32(2.0 / max_value) - np.float32(1.0)


def unit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map model output in [-1, 1] to uint8 0..255 (rounded, clipped)."""
    scaled = (np.asarray(values, dtype=np.float32) + 1.0) * 127.5
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
