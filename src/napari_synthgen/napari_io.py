"""napari reader and writer contributions (plain functions; napari itself is not imported).

The reader opens a paired folder (``images/`` + ``masks/``) or a single mask file as a Labels
layer with the fixed class colours; the writer saves a Labels layer as a ``uint8`` TIFF and
refuses values above 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .io import IMAGE_SUFFIXES, find_pairs, is_paired_folder, read_image, read_mask, write_mask
from .masks import MaskError, label_colours

LayerData = tuple[Any, dict[str, Any], str]
ReaderFn = Callable[[str | list[str]], list[LayerData]]


def mask_layer_kwargs(name: str, **extra: Any) -> dict[str, Any]:
    """Layer keyword arguments for a class mask: fixed colours at full opacity."""
    return {"name": name, "colormap": label_colours(), "opacity": 1.0, **extra}


def _as_mask_or_none(path: Path) -> np.ndarray | None:
    """The file as a class mask if it is one (classes or palette colours), else None."""
    try:
        return read_mask(path)
    except (MaskError, ValueError, OSError):
        return None


def get_reader(path: str | list[str]) -> ReaderFn | None:
    """Claim a paired folder, or mask files (TIFF/PNG with values 0..2 or palette colours)."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    if len(paths) == 1 and paths[0].is_dir():
        return read_paired_folder if is_paired_folder(paths[0]) else None
    if not all(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in paths):
        return None
    masks = []
    for p in paths:  # reading is the only way to tell a mask from an image
        mask = _as_mask_or_none(p)
        if mask is None:
            return None
        masks.append(mask)

    def read_checked(_path: str | list[str]) -> list[LayerData]:
        # the masks were read to decide; do not read them again
        return [mask_layer_data(m, p) for m, p in zip(masks, paths, strict=True)]

    return read_checked


def mask_layer_data(mask: np.ndarray, path: Path) -> LayerData:
    """A mask file as a Labels layer, named after the file."""
    return (mask, mask_layer_kwargs(path.stem, metadata={"source": str(path)}), "labels")


def read_paired_folder(path: str | list[str]) -> list[LayerData]:
    """A paired folder as an image stack and a mask stack (one pair of layers per shape)."""
    root = Path(path[0] if isinstance(path, list) else path)
    pairs = find_pairs(root)
    groups: dict[tuple[tuple[int, ...], str], list[tuple[np.ndarray, np.ndarray, str]]] = {}
    for pair in pairs:
        img = read_image(pair.image)
        mask = read_mask(pair.mask)
        if img.shape[-2:] != mask.shape[-2:]:
            raise MaskError(
                f"{pair.stem}: image shape {img.shape} and mask shape {mask.shape} differ."
            )
        groups.setdefault((img.shape, str(img.dtype)), []).append((img, mask, pair.stem))
    layers: list[LayerData] = []
    for i, items in enumerate(groups.values()):
        suffix = "" if len(groups) == 1 else f" [{i + 1}]"
        stems = [s for _, _, s in items]
        meta = {"source": str(root), "stems": stems}
        images = np.stack([im for im, _, _ in items]) if len(items) > 1 else items[0][0]
        masks = np.stack([m for _, m, _ in items]) if len(items) > 1 else items[0][1]
        layers.append((images, {"name": f"{root.name} images{suffix}", "metadata": meta}, "image"))
        layers.append((masks, mask_layer_kwargs(f"{root.name} masks{suffix}", metadata=meta),
                       "labels"))
    return layers


class MaskNotSavedError(RuntimeError):
    """A Labels layer that is not a 3-class mask was not saved.

    Not a ``ValueError`` on purpose: napari reads a ValueError from a writer as "this writer
    does not apply" and hides the message; this one reaches the user.
    """


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as a uint8 mask (TIFF, or PNG by suffix); values above 2 are refused."""
    dest = Path(path)
    if dest.suffix.lower() not in IMAGE_SUFFIXES:
        dest = dest.with_suffix(".tif")
    arr = np.asarray(data)
    try:
        write_mask(dest, arr)
    except MaskError as exc:
        raise MaskNotSavedError(
            f"not saved: {exc} Only 3-class masks (0 background, 1 interior, 2 boundary) are "
            "saved by napari-synthgen; use napari's own writer for other label images."
        ) from None
    return [os.fspath(dest)]
