"""Mask -> EM image: encoding, tiling and blending, device and precision, seeds, dirty tiles.

A mask of any size is cut into overlapping tiles of the model's size (reflection-padded at the
borders), the tiles run through the generator in batches, and their outputs are blended with a
smooth window so that no seam shows. Rows of tiles are blended in a rolling buffer, so memory is
bounded by a row of tiles, not by the image. For live preview the synthesizer can keep every
tile's output and later recompute only the tiles whose mask pixels changed.
"""

from __future__ import annotations

import copy
import gc
import math
import os
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .devices import (
    Precision,
    auto_precision,
    autocast,
    check_precision,
    resolve_device,
)
from .encoding import check_encoding, encode_masks, encoding_lut, n_channels, unit_to_uint8
from .masks import validate_mask

ProgressFn = Callable[[int, int], None]
DEFAULT_TILE = 256
WHOLE_SLICE_MAX = 1024


class SynthesisError(ValueError):
    """Synthesis parameters that cannot work with this model or mask."""


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one 2-D image go, in padded coordinates."""

    height: int
    width: int
    tile: int
    overlap: int
    top: int
    left: int
    padded_height: int
    padded_width: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def tiles(self) -> list[tuple[int, int]]:
        """Tile origins in row-major order (the order outputs are blended in)."""
        return [(y, x) for y in self.ys for x in self.xs]

    def image_slices(self, y: int, x: int) -> tuple[slice, slice] | None:
        """The part of the image (unpadded coordinates) a tile covers, or None."""
        y0, y1 = max(y - self.top, 0), min(y + self.tile - self.top, self.height)
        x0, x1 = max(x - self.left, 0), min(x + self.tile - self.left, self.width)
        if y0 >= y1 or x0 >= x1:
            return None
        return slice(y0, y1), slice(x0, x1)


def _origins(length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Evenly spread tile origins covering ``length`` with at least the requested overlap."""
    if length <= tile:
        return (0,)
    n = math.ceil((length - tile) / stride) + 1
    return tuple(round(i * (length - tile) / (n - 1)) for i in range(n))


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> TileGrid:
    """Plan reflection padding and tile origins for an image of ``height`` x ``width``.

    A side that fits in one tile is padded up to the tile. A longer side is padded by half the
    overlap at both ends (so the image border is not where tiles are blended) and covered by
    overlapping tiles.
    """
    margin = overlap // 2
    ph = tile if height <= tile else height + 2 * margin
    pw = tile if width <= tile else width + 2 * margin
    top, left = (ph - height) // 2, (pw - width) // 2
    stride = tile - overlap
    return TileGrid(
        height, width, tile, overlap, top, left, ph, pw,
        _origins(ph, tile, stride), _origins(pw, tile, stride),
    )


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """A (tile, tile) float32 window: raised-cosine ramps over the overlap, flat inside."""
    ramp = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        up = np.sin(0.5 * np.pi * (i + 0.5) / overlap) ** 2
        ramp[:overlap] = up
        ramp[tile - overlap :] = up[::-1]
    ramp = np.maximum(ramp, 1e-3)
    return np.outer(ramp, ramp).astype(np.float32)


def pad_mask(mask: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Reflection-pad a 2-D mask to the grid's padded size."""
    bottom = grid.padded_height - grid.height - grid.top
    right = grid.padded_width - grid.width - grid.left
    # reflection of a single row/column is undefined
    mode = "edge" if grid.height == 1 or grid.width == 1 else "reflect"
    return np.pad(mask, ((grid.top, bottom), (grid.left, right)), mode=mode)


def tile_seed(seed: int, z: int, y: int, x: int) -> int:
    """A seed for one tile, independent of batching, so that any tile can be recomputed alone."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, z, y, x]).generate_state(1)[0])


class SeededDropout(nn.Module):
    """Dropout whose mask comes from one seed per sample (tile), for reproducible variations.

    It stands in for ``nn.Dropout`` (which has no parameters, so the state_dict is unchanged) and
    is only active while ``seeds`` is set; otherwise it is the identity, like eval-mode dropout.
    """

    def __init__(self, p: float, index: int = 0) -> None:
        super().__init__()
        self.p = float(p)
        self.index = int(index)  # distinct masks for each dropout layer of the network
        self.seeds: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.seeds is None or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        masks = []
        for s in self.seeds:
            g = torch.Generator(device="cpu").manual_seed(tile_seed(s, self.index, 0, 0))
            masks.append(torch.rand(x.shape[1:], generator=g) < keep)
        mask = torch.stack(masks).to(device=x.device)
        return x * mask.to(x.dtype) / keep


def _install_seeded_dropout(net: nn.Module) -> list[SeededDropout]:
    """Replace every ``nn.Dropout`` in ``net`` by a :class:`SeededDropout` (in place)."""
    found: list[SeededDropout] = []
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout):
                sd = SeededDropout(child.p, index=len(found))
                setattr(module, name, sd)
                found.append(sd)
            elif isinstance(child, SeededDropout):
                found.append(child)
    return found


@dataclass
class _Cache:
    """What live preview keeps between calls: the padded mask, tile outputs and the image."""

    grid: TileGrid
    seed: int
    padded: np.ndarray
    tiles: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    image: np.ndarray | None = None


class Synthesizer:
    """Synthesize uint8 EM images from class masks with a pix2pix generator.

    ``model`` is a :class:`~napari_synthgen.models.checkpoints.LoadedModel` or a path that
    :func:`~napari_synthgen.models.checkpoints.load_model` accepts. ``tile`` defaults to the size
    the model was trained at; a model that does not say (a reference checkpoint) runs a slice of
    up to 1024 px whole when that is cheaper, else tiles of 256. ``overlap`` defaults to a quarter
    tile. ``stochastic`` keeps
    dropout on, as the pix2pix paper does at test time, to make variations; the seed makes them
    reproducible. Call it with a 2-D mask or a 3-D stack.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        encoding: str | None = None,
        stochastic: bool = False,
    ) -> None:
        from .models.checkpoints import LoadedModel, load_model
        from .models.pix2pix import size_divisor

        if not isinstance(model, LoadedModel):
            model = load_model(Path(model), encoding=encoding)
        self.model = model
        self.info = model.info
        self.encoding = check_encoding(encoding or model.info.encoding)
        if n_channels(self.encoding) != model.info.input_nc:
            raise SynthesisError(
                f"encoding {self.encoding!r} gives {n_channels(self.encoding)} channels but the "
                f"model takes {model.info.input_nc}; choose an encoding that fits."
            )
        self.device = resolve_device(device)
        divisor = size_divisor(model.info.netG)
        self.divisor = divisor
        # the tile size a model was trained at (or the caller's); None for reference files,
        # which then run whole slices up to WHOLE_SLICE_MAX, as the reference runs its tests
        self.fixed_tile = int(tile) if tile else model.info.tile
        self.tile = int(self.fixed_tile or max(DEFAULT_TILE, divisor))
        if self.tile <= 0 or self.tile % divisor:
            raise SynthesisError(
                f"tile {self.tile} does not fit {model.info.netG}, which needs tiles that are a "
                f"multiple of {divisor} pixels."
            )
        self.overlap = self.tile // 4 if overlap is None else int(overlap)
        if not 0 <= self.overlap <= self.tile // 2:
            raise SynthesisError(
                f"overlap {self.overlap} must be between 0 and half the tile ({self.tile // 2})."
            )
        if batch_size is None:
            batch_size = 16 if self.device.type == "cuda" else 4
        if batch_size < 1:
            raise SynthesisError(f"batch size must be at least 1; got {batch_size}.")
        self.batch_size = int(batch_size)
        self.stochastic = bool(stochastic)
        self._lut = encoding_lut(self.encoding, self.device)
        self._windows: dict[tuple[int, int], np.ndarray] = {}
        self.requested_precision = str(precision).lower()
        self.precision_note = ""
        self.precision: Precision = self._resolve_precision(self.requested_precision)
        self.network, self._dropouts = prepare_network(model.network, self.device, self.precision)
        self.memory_format = _memory_format(self.device, self.precision)
        # bf16 on the CPU runs a bf16 copy of the weights (converted once, not at every call);
        # elsewhere reduced precision is autocast
        self._input_dtype = _weight_dtype(self.device, self.precision)
        self._autocast = self._input_dtype == torch.float32 and self.precision != "fp32"
        self._cache: dict[int, _Cache] = {}

    # ----------------------------------------------------------------- precision
    def _resolve_precision(self, precision: str) -> Precision:
        """An explicit precision, checked; ``auto`` by the written rule (never a timing)."""
        if precision != "auto":
            return check_precision(precision, self.device)
        choice, self.precision_note = auto_precision(self.device, "inference",
                                                     batch_size=self.batch_size)
        return choice

    # ----------------------------------------------------------------- inference
    def plan(self, height: int, width: int, *, keep: bool = False) -> TileGrid:
        """The tiles for one slice: the model's tile, or for a model of unknown tile the whole
        slice as one tile when that computes fewer pixels than overlapping tiles. Live preview
        (``keep``) always tiles, so that a stroke recomputes a few tiles, not the slice."""
        tiled = plan_tiles(height, width, self.tile, self.overlap)
        if self.fixed_tile is None and not keep:
            side = max(height, width)
            whole = max(-(-side // self.divisor) * self.divisor, self.divisor)
            if whole <= WHOLE_SLICE_MAX and whole * whole < len(tiled.tiles) * self.tile ** 2:
                return plan_tiles(height, width, whole, 0)
        return tiled

    def window(self, grid: TileGrid) -> np.ndarray:
        key = (grid.tile, grid.overlap)
        if key not in self._windows:
            self._windows[key] = blend_window(grid.tile, grid.overlap)
        return self._windows[key]

    def _infer(self, padded: np.ndarray, origins: list[tuple[int, int]], seed: int, z: int,
               t: int) -> np.ndarray:
        """Run a batch of tiles of size ``t``; returns (B, t, t) float32 outputs in [-1, 1]."""
        crops = np.stack([padded[y : y + t, x : x + t] for y, x in origins])
        masks = torch.from_numpy(crops).to(self.device)
        x_in = encode_masks(masks, self._lut).to(self._input_dtype).contiguous(
            memory_format=self.memory_format)
        seeds = [tile_seed(seed, z, y, x) for y, x in origins] if self.stochastic else None
        for d in self._dropouts:
            d.seeds = seeds
        try:
            with torch.inference_mode(), autocast(
                self.device, self.precision if self._autocast else "fp32"
            ):
                out = self.network(x_in)
        finally:
            for d in self._dropouts:
                d.seeds = None
        return out.float().mean(dim=1).cpu().numpy()

    def _batches(self, items: list[tuple[int, int]]) -> Iterable[list[tuple[int, int]]]:
        for i in range(0, len(items), self.batch_size):
            yield items[i : i + self.batch_size]

    # ----------------------------------------------------------------- full synthesis
    def run(
        self, mask: np.ndarray, *, seed: int = 0, keep: bool = False
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """Synthesize ``mask``, yielding ``(tiles_done, tiles_total)`` after each batch.

        Returns the uint8 image (``StopIteration.value``; use :meth:`__call__` to just get it).
        ``keep`` stores every tile's output for :meth:`update` (live preview).
        """
        m = validate_mask(mask)
        slices = [m] if m.ndim == 2 else list(m)
        grids = [self.plan(s.shape[0], s.shape[1], keep=keep) for s in slices]
        total = sum(len(g.tiles) for g in grids)
        done = 0
        out = np.empty(m.shape, dtype=np.uint8)
        if keep:
            self._cache.clear()
        for z, (s, grid) in enumerate(zip(slices, grids, strict=True)):
            target = out if m.ndim == 2 else out[z]
            cache = _Cache(grid, seed, pad_mask(s, grid)) if keep else None
            padded = cache.padded if cache else pad_mask(s, grid)
            for n in self._run_slice(padded, grid, seed, z, target, cache):
                done += n
                yield done, total
            if cache is not None:
                cache.image = target
                self._cache[z] = cache
        return out

    def __call__(
        self, mask: np.ndarray, *, seed: int = 0, keep: bool = False,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Synthesize a uint8 image of the mask's shape (2-D, or a 3-D stack slice by slice)."""
        gen = self.run(mask, seed=seed, keep=keep)
        while True:
            try:
                done, total = next(gen)
            except StopIteration as stop:
                return stop.value
            if progress is not None:
                progress(done, total)

    def _run_slice(
        self, padded: np.ndarray, grid: TileGrid, seed: int, z: int,
        out: np.ndarray, cache: _Cache | None,
    ) -> Generator[int, None, None]:
        """Blend one slice in a rolling buffer one tile high, tiles in row-major order.

        Batches run across rows; a row of the image is written out as soon as no later tile
        covers it, so memory stays bounded by a row of tiles whatever the image size.
        """
        t, win = grid.tile, self.window(grid)
        num = np.zeros((t, grid.padded_width), dtype=np.float32)
        den = np.zeros_like(num)
        acc_y0 = grid.ys[0]
        for batch in self._batches(grid.tiles):
            outs = self._infer(padded, batch, seed, z, t)
            for (y, x), o in zip(batch, outs, strict=True):
                shift = y - acc_y0
                if shift:
                    self._flush(num, den, acc_y0, shift, grid, out)
                    num[:-shift], den[:-shift] = num[shift:].copy(), den[shift:].copy()
                    num[-shift:], den[-shift:] = 0.0, 0.0
                    acc_y0 = y
                num[:, x : x + t] += win * o
                den[:, x : x + t] += win
                if cache is not None:
                    cache.tiles[(y, x)] = o
            yield len(batch)
        self._flush(num, den, acc_y0, t, grid, out)

    @staticmethod
    def _flush(num: np.ndarray, den: np.ndarray, acc_y0: int, rows: int, grid: TileGrid,
               out: np.ndarray) -> None:
        """Write finished padded rows ``[acc_y0, acc_y0 + rows)`` into the image."""
        y0 = max(acc_y0, grid.top)
        y1 = min(acc_y0 + rows, grid.top + grid.height)
        if y0 >= y1:
            return
        a, b = y0 - acc_y0, y1 - acc_y0
        xs = slice(grid.left, grid.left + grid.width)
        out[y0 - grid.top : y1 - grid.top] = unit_to_uint8(num[a:b, xs] / den[a:b, xs])

    # ----------------------------------------------------------------- live preview
    def update(
        self, mask: np.ndarray, *, z: int = 0
    ) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
        """Re-synthesize only the tiles whose mask pixels changed since the last kept run.

        Needs a previous call with ``keep=True`` on a mask of the same shape (else it runs a
        full synthesis and keeps it). Returns the new image (of slice ``z`` for stacks) and the
        image regions that were recomputed; every pixel outside them is unchanged.
        """
        m = validate_mask(mask)
        cache = self._cache.get(z)
        if cache is None or (cache.grid.height, cache.grid.width) != m.shape[-2:]:
            image = self(m, seed=cache.seed if cache else 0, keep=True)
            image2d = image if image.ndim == 2 else image[z]
            return image2d, [(slice(0, m.shape[-2]), slice(0, m.shape[-1]))]
        m2 = m if m.ndim == 2 else m[z]
        grid, t = cache.grid, cache.grid.tile
        new_padded = pad_mask(m2, grid)
        dirty = [
            (y, x) for y, x in grid.tiles
            if not np.array_equal(new_padded[y : y + t, x : x + t],
                                  cache.padded[y : y + t, x : x + t])
        ]
        cache.padded = new_padded
        if not dirty:
            return cache.image.copy(), []
        for batch in self._batches(dirty):
            outs = self._infer(new_padded, batch, cache.seed, z, t)
            for origin, o in zip(batch, outs, strict=True):
                cache.tiles[origin] = o
        image = cache.image.copy()
        regions = []
        for y, x in dirty:
            sl = grid.image_slices(y, x)
            if sl is None:
                continue
            self._reblend(cache, y, x, image)
            regions.append(sl)
        cache.image = image
        return image.copy(), regions

    def _reblend(self, cache: _Cache, y: int, x: int, image: np.ndarray) -> None:
        """Blend the footprint of tile (y, x) again from the kept outputs of all tiles over it.

        Tiles are added in the same row-major order as a full run, so the result is identical.
        """
        grid, t, win = cache.grid, cache.grid.tile, self.window(cache.grid)
        fy0, fx0 = y, x
        num = np.zeros((t, t), dtype=np.float32)
        den = np.zeros_like(num)
        for ty, tx in grid.tiles:
            oy0, oy1 = max(ty, fy0), min(ty + t, fy0 + t)
            ox0, ox1 = max(tx, fx0), min(tx + t, fx0 + t)
            if oy0 >= oy1 or ox0 >= ox1:
                continue
            tile_part = (slice(oy0 - ty, oy1 - ty), slice(ox0 - tx, ox1 - tx))
            here = (slice(oy0 - fy0, oy1 - fy0), slice(ox0 - fx0, ox1 - fx0))
            num[here] += win[tile_part] * cache.tiles[(ty, tx)][tile_part]
            den[here] += win[tile_part]
        sl = grid.image_slices(y, x)
        if sl is None:
            return
        ys, xs = sl
        py = slice(ys.start + grid.top - fy0, ys.stop + grid.top - fy0)
        px = slice(xs.start + grid.left - fx0, xs.stop + grid.left - fx0)
        image[ys, xs] = unit_to_uint8(num[py, px] / den[py, px])

    def kept(self, z: int = 0) -> bool:
        """True when tile outputs of slice ``z`` are kept for :meth:`update`."""
        return z in self._cache

    def tiles_touched(self, region: tuple[slice, slice], *, z: int = 0) -> int:
        """How many tiles of the kept grid cover an image region (for progress and tests)."""
        cache = self._cache.get(z)
        if cache is None:
            return 0
        ys, xs = region
        grid, t = cache.grid, cache.grid.tile
        n = 0
        for y, x in grid.tiles:
            if (y - grid.top < ys.stop and y + t - grid.top > ys.start
                    and x - grid.left < xs.stop and x + t - grid.left > xs.start):
                n += 1
        return n

    # ----------------------------------------------------------------- lifetime
    def describe(self) -> dict[str, Any]:
        """What this synthesizer runs: model, device, precision, tiling."""
        return {
            "model": self.info.to_dict(),
            "device": str(self.device),
            "precision": self.precision,
            "precision_note": self.precision_note,
            "tile": self.fixed_tile or f"whole slice up to {WHOLE_SLICE_MAX}, else {self.tile}",
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "encoding": self.encoding,
            "stochastic": self.stochastic,
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }

    def close(self) -> None:
        """Free the model and kept tiles (and GPU memory)."""
        self._cache.clear()
        self.network = None  # type: ignore[assignment]
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _weight_dtype(device: torch.device, precision: Precision) -> torch.dtype:
    """bf16 weights for bf16 on the CPU (no per-call casts); float32 weights otherwise."""
    return torch.bfloat16 if device.type == "cpu" and precision == "bf16" else torch.float32


def fold_batchnorm(net: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that follows a (transposed) convolution into it.

    Inference only: the fused convolution computes the same function with one pass less over
    the activations. Returns the number of layers folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
                    and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None):
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq[i + 1] = nn.Identity()
                folded += 1
    return folded


def prepare_network(net: nn.Module, device: torch.device, precision: Precision
                    ) -> tuple[nn.Module, list[SeededDropout]]:
    """An inference copy of a generator: eval mode, batch norm folded, seeded dropout, on
    ``device`` in its memory format (and dtype for bf16 on the CPU). The original is untouched,
    so several synthesizers can share one loaded model."""
    copy_ = copy.deepcopy(net).eval()
    fold_batchnorm(copy_)
    dropouts = _install_seeded_dropout(copy_)
    copy_.to(device=device, dtype=_weight_dtype(device, precision))
    copy_.to(memory_format=_memory_format(device, precision))
    return copy_, dropouts


def _memory_format(device: torch.device, precision: Precision) -> torch.memory_format:
    """channels_last on CUDA, and on the CPU for bf16 (where it is fast; fp32 gets slower)."""
    if device.type == "cuda" or (device.type == "cpu" and precision == "bf16"):
        return torch.channels_last
    return torch.contiguous_format


def synthesize(mask: np.ndarray, model: Any, *, seed: int = 0, **kwargs: Any) -> np.ndarray:
    """One-call synthesis: ``synthesize(mask, "model.safetensors")``."""
    return Synthesizer(model, **kwargs)(mask, seed=seed)


def output_name(mask_path: str | os.PathLike, seed: int) -> str:
    """The file name ``generate`` writes for a mask and seed: ``<mask stem>_s<seed>.tif``."""
    return f"{Path(mask_path).stem}_s{seed}.tif"
