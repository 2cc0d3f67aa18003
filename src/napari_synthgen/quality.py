"""Quality figures of synthetic samples: what a curator looks at before accepting one.

Figures are plain ``dict[str, float | int | bool]`` so they go straight into a manifest record,
a table or a widget label.
"""

from __future__ import annotations

import numpy as np

from .masks import CLASS_NAMES, N_CLASSES, validate_mask


def intensity_figures(image: np.ndarray) -> dict[str, float | int]:
    """Mean, standard deviation, range and number of distinct grey levels of an image."""
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError("the image is empty.")
    flat = img.astype(np.float64, copy=False).ravel()
    levels = np.unique(img).size if img.dtype.itemsize <= 2 else np.unique(flat).size
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "levels": int(levels),
    }


def basic_figures(image: np.ndarray, mask: np.ndarray) -> dict[str, float | int | bool]:
    """The per-sample figures shown while curating: intensity and class make-up.

    Keys: ``mean``, ``std``, ``min``, ``max``, ``levels``, ``frac_background``,
    ``frac_interior``, ``frac_boundary``, ``n_classes`` and ``multi_class`` (more than one class
    present: a one-class mask teaches a segmenter nothing about boundaries).
    """
    m = validate_mask(mask)
    img = np.asarray(image)
    if img.shape[-2:] != m.shape[-2:] or (img.ndim == m.ndim and img.shape != m.shape):
        raise ValueError(
            f"image shape {img.shape} and mask shape {m.shape} differ; a sample is an image and "
            "its mask of the same height and width."
        )
    counts = np.bincount(m.ravel(), minlength=N_CLASSES)[:N_CLASSES]
    total = max(int(counts.sum()), 1)
    figures: dict[str, float | int | bool] = dict(intensity_figures(img))
    for name, c in zip(CLASS_NAMES, counts, strict=True):
        figures[f"frac_{name}"] = float(c) / total
    n_present = int((counts > 0).sum())
    figures["n_classes"] = n_present
    figures["multi_class"] = n_present > 1
    return figures


def per_class_intensity(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean intensity of the image under each class present in the mask."""
    m = validate_mask(mask)
    img = np.asarray(image, dtype=np.float64)
    out: dict[str, float] = {}
    for cls, name in enumerate(CLASS_NAMES):
        sel = m == cls
        if sel.any():
            out[name] = float(img[sel].mean())
    return out
