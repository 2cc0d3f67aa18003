"""Training data: image/mask pairs, tiles, joint augmentation, a validation split by source image.

Everything a run needs is read and checked before the first step, and every problem (files that
do not pair, shapes that differ, invalid classes, tiles larger than the images) is reported at
once, by file name. Sampling is a pure function of (seed, step, rank), so a resumed or
multi-process run draws exactly the tiles an uninterrupted single run would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..encoding import image_to_unit
from ..io import (
    IMAGE_SUFFIXES,
    PairingError,
    decoding,
    find_pairs,
    is_paired_folder,
    list_images,
    read_array,
    read_image,
    read_mask,
)
from ..masks import (
    N_CLASSES,
    NO_LABEL,
    PALETTE,
    MaskError,
    MaskSource,
    class_record,
    unlabelled_counts,
)

ALIGNED_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: the classes a crop placed over an object centres on (``object_share``): interior, boundary
OBJECT_CLASSES: tuple[int, ...] = (1, 2)


class DataError(ValueError):
    """Training data that cannot be used, with every problem listed by name."""


@dataclass
class Sample:
    """One source image and its mask (2-D, same shape)."""

    name: str
    image: np.ndarray
    mask: np.ndarray


def _nearest_palette(rgb: np.ndarray) -> np.ndarray:
    """Classes of an RGB palette image by nearest colour (tolerates JPEG noise in aligned data)."""
    d = ((rgb[..., None, :3].astype(np.int32) - PALETTE.astype(np.int32)) ** 2).sum(-1)
    return np.argmin(d, axis=-1).astype(np.uint8)


def _read_aligned(path: Path) -> Sample:
    """A reference-style aligned image: mask (A, palette colours) left, EM image (B) right."""
    arr = read_aligned_array(path)
    if arr.ndim != 3 or arr.shape[1] % 2:
        raise DataError(f"{path.name}: an aligned image is A|B side by side (RGB, even width); "
                        f"got shape {arr.shape}.")
    w = arr.shape[1] // 2
    a, b = arr[:, :w], arr[:, w:]
    mask = _nearest_palette(a)
    image = b[..., :3].mean(axis=-1).round().astype(np.uint8) if b.ndim == 3 else b
    return Sample(path.stem, image, mask)


def read_aligned_array(path: Path) -> np.ndarray:
    """Read PNG/TIFF through the project reader, JPEG through imageio."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        import imageio.v3 as iio

        with decoding(path):
            return np.asarray(iio.imread(path))
    return read_array(path)


def _aligned_folder(folder: Path) -> Path | None:
    """The folder of aligned images: ``folder`` itself or its ``train/`` (reference layout)."""
    for cand in (folder / "train", folder):
        if cand.is_dir() and any(
            f.suffix.lower() in ALIGNED_SUFFIXES for f in cand.iterdir() if f.is_file()
        ):
            return cand
    return None


def load_samples(folders: Sequence[str | Path], *, read_as: MaskSource = "auto",
                 boundary_width: int = 2) -> list[Sample]:
    """Read every pair from paired folders (``images/`` + ``masks/``) or aligned folders.

    ``read_as`` and ``boundary_width`` say how a paired folder's mask files are read
    (:func:`masks.coerce_mask`; aligned images hold palette colours). Raises
    :class:`DataError` listing every problem found, so that all can be fixed at once.
    """
    problems: list[str] = []
    samples: list[Sample] = []
    if not folders:
        raise DataError("no training data given: pass at least one folder (--data DIR).")
    for folder in map(Path, folders):
        if not folder.is_dir():
            problems.append(f"{folder}: not a folder.")
            continue
        if is_paired_folder(folder):
            try:
                pairs = find_pairs(folder)
            except PairingError as exc:
                problems.append(str(exc))
                continue
            for pair in pairs:
                try:
                    image = read_image(pair.image)
                    mask = read_mask(pair.mask, read_as, boundary_width=boundary_width)
                except (MaskError, ValueError, OSError) as exc:
                    problems.append(f"{folder.name}/{pair.stem}: {exc}")
                    continue
                if image.ndim != 2:
                    problems.append(f"{folder.name}/{pair.stem}: image has shape {image.shape}; "
                                    "training takes 2-D grey images.")
                    continue
                if image.shape != mask.shape:
                    problems.append(f"{folder.name}/{pair.stem}: image {image.shape} and mask "
                                    f"{mask.shape} differ in shape.")
                    continue
                samples.append(Sample(f"{folder.name}/{pair.stem}", image, mask))
            continue
        aligned = _aligned_folder(folder)
        if aligned is None:
            problems.append(f"{folder}: holds neither images/ + masks/ nor aligned A|B images.")
            continue
        for path in sorted(f for f in aligned.iterdir() if f.suffix.lower() in ALIGNED_SUFFIXES):
            try:
                samples.append(_read_aligned(path))
            except (DataError, ValueError, OSError) as exc:
                problems.append(f"{path.name}: {exc}")
    if problems:
        raise DataError("the training data has problems:\n  " + "\n  ".join(problems))
    if not samples:
        raise DataError(f"no image/mask pairs found in {', '.join(map(str, folders))}.")
    return samples


@dataclass
class RawImage:
    """One image without a mask (a slice of a stack is one image), for ``--unlabeled``."""

    name: str
    image: np.ndarray


def _raw_files(source: Path) -> list[Path]:
    """The image files of one ``--unlabeled`` source: a file, a folder of images, or a paired
    folder's ``images/`` (its masks are not used)."""
    if source.is_file():
        return [source]
    folder = source / "images" if is_paired_folder(source) else source
    return list_images(folder)


def load_unlabeled(sources: Sequence[str | Path]) -> list[RawImage]:
    """Read every raw image of ``--unlabeled``: 2-D grey images, and (Z, Y, X) stacks as Z
    images. Raises :class:`DataError` listing every problem at once (unreadable, colour or
    4-D files, empty folders), by file name."""
    problems: list[str] = []
    images: list[RawImage] = []
    for source in map(Path, sources):
        if not source.exists():
            problems.append(f"{source}: no such file or folder.")
            continue
        if source.is_file() and source.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{source}: not an image file ({', '.join(IMAGE_SUFFIXES)}).")
            continue
        files = _raw_files(source)
        if not files:
            problems.append(f"{source}: holds no images ({', '.join(IMAGE_SUFFIXES)}).")
            continue
        for path in files:
            try:
                arr = read_image(path)
            except (ValueError, OSError) as exc:
                problems.append(f"{path.name}: {exc}")
                continue
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) > 1.0:
                problems.append(f"{path.name}: float values above 1; give float images in "
                                "[0, 1], or 8- or 16-bit images.")
                continue
            if arr.ndim == 2:
                images.append(RawImage(f"{source.name}/{path.stem}", arr))
            elif arr.ndim == 3:
                images += [RawImage(f"{source.name}/{path.stem}[{z}]", arr[z])
                           for z in range(arr.shape[0])]
            else:
                problems.append(f"{path.name}: shape {arr.shape}; unlabelled images are 2-D "
                                "grey images or (Z, Y, X) stacks.")
    if problems:
        raise DataError("the unlabelled images have problems:\n  " + "\n  ".join(problems))
    return images


def check_unlabeled(labelled: Sequence[Sample], raw: Sequence[RawImage], tile: int) -> None:
    """Refuse unlabelled images that cannot train beside the labelled ones: another bit depth
    (they would be scaled to another grey range) or smaller than a tile."""
    problems = []
    dtypes = {str(s.image.dtype) for s in labelled}
    other = [f"{r.name} ({r.image.dtype})" for r in raw if str(r.image.dtype) not in dtypes]
    if other:
        problems.append(f"{len(other)} unlabelled image(s) are not {' / '.join(sorted(dtypes))} "
                        f"like the labelled ones: {', '.join(other[:5])}"
                        f"{' ...' if len(other) > 5 else ''}; convert them to the same bit depth.")
    small = [f"{r.name} ({r.image.shape[0]}x{r.image.shape[1]})" for r in raw
             if min(r.image.shape) < tile]
    if small:
        problems.append(f"tile {tile} is larger than {len(small)} unlabelled image(s): "
                        f"{', '.join(small[:5])}{' ...' if len(small) > 5 else ''}.")
    if problems:
        raise DataError("the unlabelled images have problems:\n  " + "\n  ".join(problems))


def split_validation(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Hold out the last ``fraction`` of source images (a contiguous block, by name order).

    Serial sections are correlated with their neighbours, so a block split keeps validation
    images away from their training twins; tiles of one image are never split.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1); got {fraction}.")
    if fraction == 0.0 or len(samples) < 2:
        return samples, []
    n_val = max(1, math.ceil(fraction * len(samples)))
    n_val = min(n_val, len(samples) - 1)
    return samples[:-n_val], samples[-n_val:]


def intensity_stats(samples: Sequence[Sample]) -> dict[str, float]:
    """Mean, std and percentiles of the training images (stored with the model)."""
    values = np.concatenate([s.image.ravel()[:: max(1, s.image.size // 200_000)] for s in samples])
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    return {
        "mean": float(values.mean()), "std": float(values.std()),
        "p1": float(p1), "p50": float(p50), "p99": float(p99),
        "dtype": str(samples[0].image.dtype),
    }


def class_stats(samples: Sequence[Sample], unlabel_fraction: float = 0.0) -> dict[str, float]:
    """Pixel fraction of each class the model sees in training (stored with the model, so that
    synthesis can warn about a class the model never saw). With ``unlabel_fraction`` > 0 that
    share of the cells (interior and ring) is shown as background, so background is seen: the
    expected fractions are recorded."""
    counts = np.zeros(N_CLASSES, dtype=np.float64)
    for s in samples:
        counts += np.bincount(s.mask.ravel(), minlength=N_CLASSES)[:N_CLASSES]
    return class_record(unlabelled_counts(counts, unlabel_fraction))


def _positions(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins with ``stride``, the last one flush with the edge."""
    pos = list(range(0, length - tile + 1, stride))
    if pos[-1] != length - tile:
        pos.append(length - tile)
    return pos


class TileSampler:
    """Deterministic tiles for step ``k``: a pure function of (seed, step, rank).

    Grid mode (``stride`` given) cuts every image into tiles and visits them in a new seeded
    order each epoch; crop mode draws random crops, ``object_share`` of them placed over a
    random pixel of an object class (interior or boundary: nnU-Net's foreground
    oversampling), so that sparse objects such as organelles are not a rare sight. Each rank
    takes its own part of the global batch, so N processes see what one process with N times
    the batch would.
    """

    def __init__(self, samples: list[Sample], *, tile: int, stride: int | None, batch_size: int,
                 seed: int, flips: bool = False, rot90: bool = False, rank: int = 0,
                 world: int = 1, unlabeled: Sequence[RawImage] = (),
                 unlabeled_share: float = 0.0, cond_dropout: float = 0.0,
                 object_share: float = 0.0) -> None:
        small = [f"{s.name} ({s.image.shape[0]}x{s.image.shape[1]})" for s in samples
                 if s.image.shape[0] < tile or s.image.shape[1] < tile]
        if small:
            raise DataError(
                f"tile {tile} is larger than {len(small)} image(s): {', '.join(small[:5])}"
                f"{' ...' if len(small) > 5 else ''}; choose --tile "
                f"{min(min(s.image.shape) for s in samples)} or smaller."
            )
        if stride is not None and stride < 1:
            raise DataError(f"stride must be at least 1; got {stride}.")
        if stride is not None and object_share > 0:
            raise DataError("object_share places random crops over objects; a grid of tiles "
                            "(stride) visits every tile anyway: drop one of them.")
        self.samples, self.tile, self.stride = samples, tile, stride
        self.batch_size, self.seed, self.flips, self.rot90 = batch_size, seed, flips, rot90
        self.rank, self.world = rank, world
        self.images = [torch.from_numpy(image_to_unit(s.image)) for s in samples]
        self.masks = [torch.from_numpy(s.mask) for s in samples]
        # raw images stay in their own dtype (a uint8 slice is a quarter of its float32 copy:
        # hundreds of them fit) and each crop is scaled on its own, to the same values
        self.raw = [r.image for r in unlabeled]
        self.unlabeled_share = float(unlabeled_share) if self.raw else 0.0
        self.cond_dropout = float(cond_dropout)
        self.object_share = float(object_share)
        # per image and object class, the flat indices of its pixels (int32: a quarter of a
        # 1024 x 1024 interior is 1 MB), only when crops are placed over objects
        self.objects: list[dict[int, np.ndarray]] = []
        if self.object_share > 0:
            self.objects = [{c: idx for c in OBJECT_CLASSES
                             if (idx := np.flatnonzero(s.mask.ravel() == c).astype(np.int32)).size}
                            for s in samples]
        self.with_objects = [i for i, o in enumerate(self.objects) if o]
        self.grid: list[tuple[int, int, int]] = []
        if stride is not None:
            for i, s in enumerate(samples):
                h, w = s.image.shape
                self.grid += [(i, y, x) for y in _positions(h, tile, stride)
                              for x in _positions(w, tile, stride)]

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    @property
    def tiles_per_epoch(self) -> int:
        """Grid tiles per epoch (crop mode: one crop per image and 'epoch')."""
        return len(self.grid) if self.grid else len(self.samples)

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.tiles_per_epoch / self.global_batch))

    def _grid_index(self, k: int) -> tuple[int, int, int]:
        n = len(self.grid)
        epoch, pos = divmod(k, n)
        perm = np.random.default_rng([self.seed, 7, epoch]).permutation(n)
        return self.grid[int(perm[pos])]

    def _crop(self, k: int) -> tuple[int, int, int]:
        rng = np.random.default_rng([self.seed, 11, k])
        i = int(rng.integers(len(self.samples)))
        h, w = self.samples[i].image.shape
        placed = self._object_crop(k) if self.object_share > 0 else None
        if placed is not None:
            return placed
        return i, int(rng.integers(h - self.tile + 1)), int(rng.integers(w - self.tile + 1))

    def _object_crop(self, k: int) -> tuple[int, int, int] | None:
        """Crop ``k`` over an object, for ``object_share`` of the crops (a draw of its own, so
        the other crops are those a run without it draws): an image with objects, one of its
        object classes, one of its pixels, and the tile placed so that the pixel falls at a
        random place inside it. None: a plain crop (not drawn, or no image has objects)."""
        rng = np.random.default_rng([self.seed, 23, k])
        if rng.random() >= self.object_share or not self.with_objects:
            return None
        i = self.with_objects[int(rng.integers(len(self.with_objects)))]
        classes = sorted(self.objects[i])
        idx = self.objects[i][classes[int(rng.integers(len(classes)))]]
        h, w = self.samples[i].mask.shape
        py, px = divmod(int(idx[int(rng.integers(idx.size))]), w)
        t = self.tile
        y = min(max(py - int(rng.integers(t)), 0), h - t)
        x = min(max(px - int(rng.integers(t)), 0), w - t)
        return i, y, x

    def _raw_crop(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random crop of an unlabelled image, with a mask of ``NO_LABEL``."""
        rng = np.random.default_rng([self.seed, 19, k])
        raw = self.raw[int(rng.integers(len(self.raw)))]
        h, w = raw.shape
        y, x = int(rng.integers(h - self.tile + 1)), int(rng.integers(w - self.tile + 1))
        im = torch.from_numpy(image_to_unit(raw[y : y + self.tile, x : x + self.tile]))
        return torch.full(im.shape, NO_LABEL, dtype=torch.uint8), im

    def _no_mask(self, k: int) -> tuple[bool, bool]:
        """(tile ``k`` is an unlabelled image's, tile ``k``'s mask is dropped): seeded draws
        of their own, so the labelled tiles are those a run without them would draw."""
        if not (self.unlabeled_share or self.cond_dropout):
            return False, False
        u, d = np.random.default_rng([self.seed, 17, k]).random(2)
        return bool(u < self.unlabeled_share), bool(d < self.cond_dropout)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(masks (B, T, T) uint8, images (B, 1, T, T) float in [-1, 1]) for this rank; a tile
        without a mask (an unlabelled image's, or a dropped one) has the mask ``NO_LABEL``."""
        t = self.tile
        first = step * self.global_batch + self.rank * self.batch_size
        masks, images = [], []
        for k in range(first, first + self.batch_size):
            raw, dropped = self._no_mask(k)
            if raw:
                m, im = self._raw_crop(k)
            else:
                i, y, x = self._grid_index(k) if self.grid else self._crop(k)
                m = self.masks[i][y : y + t, x : x + t]
                im = self.images[i][y : y + t, x : x + t]
                if dropped:
                    m = torch.full_like(m, NO_LABEL)
            m, im = self._augment(m, im, k)
            masks.append(m)
            images.append(im)
        return torch.stack(masks), torch.stack(images)[:, None]

    def _augment(self, m: torch.Tensor, im: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random flips / 90-degree turns for a mask and its image."""
        if not (self.flips or self.rot90):
            return m, im
        rng = np.random.default_rng([self.seed, 13, k])
        if self.flips:
            if rng.random() < 0.5:
                m, im = m.flip(-1), im.flip(-1)
            if rng.random() < 0.5:
                m, im = m.flip(-2), im.flip(-2)
        if self.rot90:
            r = int(rng.integers(4))
            m, im = torch.rot90(m, r, (-2, -1)), torch.rot90(im, r, (-2, -1))
        return m.contiguous(), im.contiguous()


def fixed_tiles(samples: list[Sample], tile: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` fixed tiles (centre crops of the first images) for previews and validation."""
    masks, images = [], []
    for s in samples[:n]:
        h, w = s.mask.shape
        y, x = (h - tile) // 2, (w - tile) // 2
        masks.append(torch.from_numpy(np.ascontiguousarray(s.mask[y : y + tile, x : x + tile])))
        images.append(torch.from_numpy(image_to_unit(s.image[y : y + tile, x : x + tile])))
    return torch.stack(masks), torch.stack(images)[:, None]
