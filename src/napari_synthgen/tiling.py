"""Tiles, blending and seeds that every model family shares (NumPy; no model code).

A mask of any size is reflection-padded and cut into overlapping tiles (:func:`plan_tiles`);
a family's predictor turns tiles into outputs in [-1, 1]; the outputs are blended with a
smooth window (:func:`blend_window`) so that no seam shows. :class:`RowBlender` blends a slice
in a rolling buffer one tile high (memory bounded by a row of tiles, not by the image); live
preview keeps every tile's output (:class:`TileCache`), finds the tiles whose mask changed
(:func:`changed_tiles`) and blends their footprints again (:func:`reblend`) in the same order
as a full run, so untouched pixels stay byte-identical. :func:`tile_seed` gives each tile its
own seed, so a tile recomputed alone, or in another batch, gets the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from .encoding import unit_to_uint8

T = TypeVar("T")
Origin = tuple[int, int]


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
    def tiles(self) -> list[Origin]:
        """Tile origins in row-major order (the order outputs are blended in)."""
        return [(y, x) for y in self.ys for x in self.xs]

    def image_slices(self, y: int, x: int) -> tuple[slice, slice] | None:
        """The part of the image (unpadded coordinates) a tile covers, or None."""
        y0, y1 = max(y - self.top, 0), min(y + self.tile - self.top, self.height)
        x0, x1 = max(x - self.left, 0), min(x + self.tile - self.left, self.width)
        if y0 >= y1 or x0 >= x1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def crop(self, padded: np.ndarray, y: int, x: int) -> np.ndarray:
        """The tile at (y, x) of a padded array (last two axes)."""
        return padded[..., y : y + self.tile, x : x + self.tile]


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


def _ramp(length: int, overlap: int) -> np.ndarray:
    ramp = np.ones(length, dtype=np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        up = np.sin(0.5 * np.pi * (i + 0.5) / overlap) ** 2
        ramp[:overlap] = up
        ramp[length - overlap :] = up[::-1]
    return np.maximum(ramp, 1e-3)


def blend_window(tile: int, overlap: int, width: int | None = None) -> np.ndarray:
    """A (tile, width or tile) float32 window: raised-cosine ramps over the overlap, flat
    inside."""
    return np.outer(_ramp(tile, overlap), _ramp(tile if width is None else width, overlap)
                    ).astype(np.float32)


def blend_weights(grid: TileGrid, window: np.ndarray | None = None) -> np.ndarray:
    """Each tile's share of every padded pixel, summed over tiles: ``(padded_h, padded_w)``.

    The blend divides by the summed window, so the weights of all tiles at a pixel add up to 1;
    this returns that denominator (for fusing per step, as diffusion does, and for tests).
    """
    win = blend_window(grid.tile, grid.overlap) if window is None else window
    den = np.zeros((grid.padded_height, grid.padded_width), dtype=np.float32)
    for y, x in grid.tiles:
        den[y : y + grid.tile, x : x + grid.tile] += win
    return den


@dataclass(frozen=True)
class StartGrid:
    """Large overlapping tiles of ``tile_h`` x ``tile_w`` over a canvas of ``height`` x
    ``width`` (a diffusion sampler's first step; :func:`plan_start`). When one tile is longer
    than the canvas along an axis, the canvas is padded at its end up to ``padded_*``."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def padded_height(self) -> int:
        return max(self.height, self.ys[-1] + self.tile_h)

    @property
    def padded_width(self) -> int:
        return max(self.width, self.xs[-1] + self.tile_w)

    @property
    def tiles(self) -> list[Origin]:
        """Tile origins, row-major."""
        return [(y, x) for y in self.ys for x in self.xs]


def _start_axis(length: int, max_tile: int, overlap: int, divisor: int
                ) -> tuple[int, tuple[int, ...]]:
    """(tile length, origins) along one axis: the fewest tiles of at most ``max_tile`` (a
    multiple of ``divisor``) that cover ``length`` overlapping by at least ``overlap``, each as
    short as that allows (rounded up to the divisor)."""
    if length <= max_tile:
        return -(-length // divisor) * divisor, (0,)
    n = math.ceil((length - overlap) / (max_tile - overlap))
    side = -(-math.ceil((length + (n - 1) * overlap) / n) // divisor) * divisor
    return side, _origins(length, side, side - overlap)


def plan_start(height: int, width: int, max_tile: int, overlap: int, divisor: int
               ) -> StartGrid:
    """Plan the first denoising step's tiles over a ``height`` x ``width`` canvas: tiles of at
    most ``max_tile`` a side (a multiple of ``divisor``, larger than ``overlap``), as few as
    cover it with ``overlap`` between neighbours."""
    if max_tile % divisor or max_tile <= overlap:
        raise ValueError(f"max_tile {max_tile} must be a multiple of {divisor} and larger than "
                         f"the overlap {overlap}.")
    th, ys = _start_axis(height, max_tile, overlap, divisor)
    tw, xs = _start_axis(width, max_tile, overlap, divisor)
    return StartGrid(height, width, th, tw, overlap, ys, xs)


@dataclass(frozen=True)
class ShiftedGrid:
    """Non-overlapping tiles of ``tile_h`` x ``tile_w`` covering a padded canvas exactly.

    The canvas is a whole number of tiles on each side, so the grid shifted cyclically by any
    offset still covers it with the same tiles (shifted windows; see :func:`shift_offsets`).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    top: int
    left: int
    padded_height: int
    padded_width: int

    @property
    def ny(self) -> int:
        """Tiles down the canvas."""
        return self.padded_height // self.tile_h

    @property
    def nx(self) -> int:
        """Tiles across the canvas."""
        return self.padded_width // self.tile_w

    @property
    def tiles(self) -> list[Origin]:
        """Tile origins of the unshifted grid, row-major."""
        return [(y * self.tile_h, x * self.tile_w) for y in range(self.ny)
                for x in range(self.nx)]


def _shifted_axis(length: int, tile: int, divisor: int, margin: int) -> tuple[int, int, int]:
    """(tile length, padded length, padding before) along one axis of a shifted grid."""
    if length <= tile:  # one tile, padded up to it (as plan_tiles does); never shifted
        return tile, tile, (tile - length) // 2
    wanted = length + 2 * margin
    n = math.ceil(wanted / tile)
    side = math.ceil(wanted / n / divisor) * divisor  # <= tile, as tile is a multiple
    return side, n * side, (n * side - length) // 2


def plan_shifted(height: int, width: int, tile: int, divisor: int, margin: int) -> ShiftedGrid:
    """Plan shifted non-overlapping windows for an image of ``height`` x ``width``.

    A side longer than the tile is padded by at least ``margin`` at both ends (so the canvas
    edges, where a cyclic shift joins them inside one tile, lie in the padding) and cut into
    the fewest tiles of at most ``tile`` (multiples of ``divisor``); a shorter side is padded
    up to one tile. The image is computed about once per pixel and step, plus the margin.
    """
    th, ph, top = _shifted_axis(height, tile, divisor, margin)
    tw, pw, left = _shifted_axis(width, tile, divisor, margin)
    return ShiftedGrid(height, width, th, tw, top, left, ph, pw)


def shift_offsets(seed: int, z: int, step: int, grid: ShiftedGrid) -> tuple[int, int]:
    """The (down, across) cyclic shift of the grid at denoising ``step`` of slice ``z``.

    A pure function of (seed, slice, step), so the same seed gives the same image however
    the tiles are batched; 0 along a side of one tile (a shift would wrap it onto itself).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, z, step, 0x5B1F7]))
    dy, dx = (int(v) for v in rng.integers(0, (grid.tile_h, grid.tile_w)))
    return (dy if grid.ny > 1 else 0), (dx if grid.nx > 1 else 0)


def pad_mask(mask: np.ndarray, grid: TileGrid | ShiftedGrid) -> np.ndarray:
    """Reflection-pad a 2-D mask to the grid's padded size."""
    bottom = grid.padded_height - grid.height - grid.top
    right = grid.padded_width - grid.width - grid.left
    # reflection of a single row/column is undefined
    mode = "edge" if grid.height == 1 or grid.width == 1 else "reflect"
    return np.pad(mask, ((grid.top, bottom), (grid.left, right)), mode=mode)


def tile_seed(seed: int, z: int, y: int, x: int) -> int:
    """A seed for one tile, independent of batching, so that any tile can be recomputed alone."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, z, y, x]).generate_state(1)[0])


def batches(items: list[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive batches of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class RowBlender:
    """Blend one slice's tile outputs, given in row-major order, into a uint8 image.

    A rolling buffer one tile high: a row of the image is written out as soon as no later tile
    covers it, so memory stays bounded by a row of tiles whatever the image size.
    """

    def __init__(self, grid: TileGrid, window: np.ndarray, out: np.ndarray) -> None:
        self.grid, self.window, self.out = grid, window, out
        self.num = np.zeros((grid.tile, grid.padded_width), dtype=np.float32)
        self.den = np.zeros_like(self.num)
        self.y0 = grid.ys[0]

    def add(self, y: int, x: int, output: np.ndarray) -> None:
        """Blend the (tile, tile) output in [-1, 1] of the tile at (y, x)."""
        t, num, den = self.grid.tile, self.num, self.den
        shift = y - self.y0
        if shift:
            self._flush(shift)
            num[:-shift], den[:-shift] = num[shift:].copy(), den[shift:].copy()
            num[-shift:], den[-shift:] = 0.0, 0.0
            self.y0 = y
        num[:, x : x + t] += self.window * output
        den[:, x : x + t] += self.window

    def finish(self) -> np.ndarray:
        """Write the last rows; returns the image."""
        self._flush(self.grid.tile)
        return self.out

    def _flush(self, rows: int) -> None:
        """Write finished padded rows ``[y0, y0 + rows)`` into the image."""
        grid = self.grid
        y0 = max(self.y0, grid.top)
        y1 = min(self.y0 + rows, grid.top + grid.height)
        if y0 >= y1:
            return
        a, b = y0 - self.y0, y1 - self.y0
        xs = slice(grid.left, grid.left + grid.width)
        self.out[y0 - grid.top : y1 - grid.top] = unit_to_uint8(
            self.num[a:b, xs] / self.den[a:b, xs])


@dataclass
class TileCache:
    """What live preview keeps of one slice: the padded mask, every tile's output, the image."""

    grid: TileGrid
    seed: int
    padded: np.ndarray
    tiles: dict[Origin, np.ndarray] = field(default_factory=dict)
    image: np.ndarray | None = None


def changed_tiles(grid: TileGrid, old: np.ndarray, new: np.ndarray) -> list[Origin]:
    """Tiles whose padded mask differs between ``old`` and ``new`` (row-major order).

    Compared tile by tile rather than from a paint event's region: reflection padding mirrors
    strokes near the border into other tiles.
    """
    return [(y, x) for y, x in grid.tiles
            if not np.array_equal(grid.crop(new, y, x), grid.crop(old, y, x))]


def reblend(grid: TileGrid, window: np.ndarray, tiles: Mapping[Origin, np.ndarray],
            y: int, x: int, image: np.ndarray) -> tuple[slice, slice] | None:
    """Blend the footprint of tile (y, x) again from the kept outputs of all tiles over it.

    Tiles are added in the same row-major order as a full run, so the result is identical.
    Writes into ``image`` and returns the image region written (None if outside the image).
    """
    t, fy0, fx0 = grid.tile, y, x
    num = np.zeros((t, t), dtype=np.float32)
    den = np.zeros_like(num)
    for ty, tx in grid.tiles:
        oy0, oy1 = max(ty, fy0), min(ty + t, fy0 + t)
        ox0, ox1 = max(tx, fx0), min(tx + t, fx0 + t)
        if oy0 >= oy1 or ox0 >= ox1:
            continue
        tile_part = (slice(oy0 - ty, oy1 - ty), slice(ox0 - tx, ox1 - tx))
        here = (slice(oy0 - fy0, oy1 - fy0), slice(ox0 - fx0, ox1 - fx0))
        num[here] += window[tile_part] * tiles[(ty, tx)][tile_part]
        den[here] += window[tile_part]
    sl = grid.image_slices(y, x)
    if sl is None:
        return None
    ys, xs = sl
    py = slice(ys.start + grid.top - fy0, ys.stop + grid.top - fy0)
    px = slice(xs.start + grid.left - fx0, xs.stop + grid.left - fx0)
    image[ys, xs] = unit_to_uint8(num[py, px] / den[py, px])
    return sl


def tiles_covering(grid: TileGrid, region: tuple[slice, slice]) -> list[Origin]:
    """The tiles of ``grid`` that cover any pixel of an image region (unpadded coordinates)."""
    ys, xs = region
    t = grid.tile
    return [(y, x) for y, x in grid.tiles
            if (y - grid.top < ys.stop and y + t - grid.top > ys.start
                and x - grid.left < xs.stop and x + t - grid.left > xs.start)]


def slices_of(mask: np.ndarray) -> Iterable[np.ndarray]:
    """The 2-D slices of a 2-D mask or a 3-D stack."""
    return [mask] if mask.ndim == 2 else list(mask)


__all__ = [
    "RowBlender",
    "TileCache",
    "TileGrid",
    "batches",
    "blend_weights",
    "blend_window",
    "changed_tiles",
    "pad_mask",
    "plan_tiles",
    "reblend",
    "slices_of",
    "tile_seed",
    "tiles_covering",
]
