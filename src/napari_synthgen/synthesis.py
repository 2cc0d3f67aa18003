"""Mask -> EM image: the :class:`Synthesizer` every family's synthesizer builds on.

Tiling, blending, seeds and live-preview bookkeeping live in :mod:`.tiling` and are shared: a
family whose network maps tiles independently implements :meth:`Synthesizer._infer` and
:meth:`Synthesizer._load_file` and inherits full runs, progress and dirty-tile updates.
:func:`napari_synthgen.registry.make_synthesizer` picks the family's class for a model.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .devices import (
    Precision,
    auto_precision,
    check_precision,
)
from .masks import validate_mask
from .tiling import (
    RowBlender,
    TileCache,
    TileGrid,
    batches,
    blend_window,
    changed_tiles,
    pad_mask,
    plan_tiles,
    reblend,
    slices_of,
    tiles_covering,
)

ProgressFn = Callable[[int, int], None]
DEFAULT_TILE = 256
WHOLE_SLICE_MAX = 1024
__all__ = [
    "DEFAULT_TILE",
    "WHOLE_SLICE_MAX",
    "SynthesisError",
    "Synthesizer",
    "describe_common",
    "output_name",
]


class SynthesisError(ValueError):
    """Synthesis parameters that cannot work with this model or mask."""


class Synthesizer:
    """What every family's synthesizer is: uint8 EM images from class masks.

    Build one for any model with :func:`napari_synthgen.registry.make_synthesizer`, which picks
    the family's subclass. ``model`` is a
    :class:`~napari_synthgen.models.checkpoints.info.LoadedModel` or a model file. Call it
    with a 2-D mask or a 3-D stack; :meth:`run` yields progress (stop iterating it to
    cancel); :meth:`update` re-synthesizes only what a mask edit changed (live preview).

    This base class runs any family whose network maps mask tiles to image tiles
    independently: a subclass sets the attributes below in ``__init__`` and implements
    :meth:`_infer`; tiles, blending, seeds and live preview come from here. A family whose
    tiles are not independent (diffusion fuses them at every step) overrides :meth:`run` and
    :meth:`update` with the helpers of :mod:`.tiling`, or brings its own class with the same
    public interface: constructor keywords device, precision, tile, overlap, batch_size,
    encoding, stochastic (+ its own); attributes model, info, encoding, device, tile, overlap,
    batch_size, stochastic, precision, precision_note; methods run, __call__, update, kept,
    describe (with the keys of :meth:`describe`, family-specific ones under
    ``family_settings``) and close.
    """

    #: the family name this class synthesizes for (its registry entry)
    family: ClassVar[str] = ""
    model: Any
    info: Any
    encoding: str
    device: torch.device
    tile: int
    overlap: int
    batch_size: int
    stochastic: bool
    precision: Precision
    precision_note: str
    _windows: dict[tuple[int, int], np.ndarray]
    _cache: dict[int, TileCache]

    def __new__(cls, *args: Any, **kwargs: Any) -> Synthesizer:
        if cls is Synthesizer:
            raise TypeError("Synthesizer is what every family's synthesizer builds on; make one "
                            "for a model with napari_synthgen.make_synthesizer(model, ...).")
        return super().__new__(cls)

    # ----------------------------------------------------------------- shared set-up
    def _load(self, model: Any, encoding: str | None) -> Any:
        """``model`` as a LoadedModel of this class's family (a path is read by
        :meth:`_load_file`)."""
        from .models.checkpoints.info import LoadedModel

        if not isinstance(model, LoadedModel):
            model = self._load_file(Path(model), encoding)
        if self.family and model.info.family != self.family:
            raise SynthesisError(
                f"{type(self).__name__} runs {self.family} models, but {model.info.path} holds "
                f"a {model.info.family} model; create it with make_synthesizer(model) instead.")
        return model

    def _load_file(self, path: Path, encoding: str | None) -> Any:
        """Load a model file of this class's family (each family's synthesizer says how)."""
        raise NotImplementedError(f"{type(self).__name__} cannot load model files")

    def _resolve_precision(self, precision: str) -> Precision:
        """An explicit precision, checked; ``auto`` by the written rule (never a timing)."""
        if precision != "auto":
            return check_precision(precision, self.device)
        choice, self.precision_note = auto_precision(self.device, "inference",
                                                     batch_size=self.batch_size)
        return choice

    # ----------------------------------------------------------------- tiles
    def plan(self, height: int, width: int, *, keep: bool = False) -> TileGrid:
        """The tiles for one slice (``keep``: for live preview)."""
        return plan_tiles(height, width, self.tile, self.overlap)

    def window(self, grid: TileGrid) -> np.ndarray:
        key = (grid.tile, grid.overlap)
        if key not in self._windows:
            self._windows[key] = blend_window(grid.tile, grid.overlap)
        return self._windows[key]

    def _infer(self, padded: np.ndarray, origins: list[tuple[int, int]], seed: int, z: int,
               t: int) -> np.ndarray:
        """Run a batch of tiles of size ``t`` of a padded 2-D mask (slice ``z``) whose tile
        origins are ``origins``; returns (B, t, t) float32 outputs in [-1, 1]. Stochastic
        families draw each tile's noise from ``tile_seed(seed, z, y, x)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _infer")

    def _batches(self, items: list[tuple[int, int]]) -> Iterable[list[tuple[int, int]]]:
        return batches(items, self.batch_size)

    # ----------------------------------------------------------------- full synthesis
    def run(
        self, mask: np.ndarray, *, seed: int = 0, keep: bool = False
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """Synthesize ``mask``, yielding ``(tiles_done, tiles_total)`` after each batch.

        Returns the uint8 image (``StopIteration.value``; use :meth:`__call__` to just get it).
        ``keep`` stores every tile's output for :meth:`update` (live preview). Closing the
        generator (stop iterating) cancels between batches.
        """
        m = validate_mask(mask)
        slices = slices_of(m)
        grids = [self.plan(s.shape[0], s.shape[1], keep=keep) for s in slices]
        total = sum(len(g.tiles) for g in grids)
        done = 0
        out = np.empty(m.shape, dtype=np.uint8)
        if keep:
            self._cache.clear()
        for z, (s, grid) in enumerate(zip(slices, grids, strict=True)):
            target = out if m.ndim == 2 else out[z]
            cache = TileCache(grid, seed, pad_mask(s, grid)) if keep else None
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
        out: np.ndarray, cache: TileCache | None,
    ) -> Generator[int, None, None]:
        """Blend one slice, tiles in row-major order, batches across rows (see RowBlender)."""
        blender = RowBlender(grid, self.window(grid), out)
        for batch in self._batches(grid.tiles):
            outs = self._infer(padded, batch, seed, z, grid.tile)
            for (y, x), o in zip(batch, outs, strict=True):
                blender.add(y, x, o)
                if cache is not None:
                    cache.tiles[(y, x)] = o
            yield len(batch)
        blender.finish()

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
        grid = cache.grid
        new_padded = pad_mask(m2, grid)
        dirty = changed_tiles(grid, cache.padded, new_padded)
        cache.padded = new_padded
        if not dirty:
            return cache.image.copy(), []
        for batch in self._batches(dirty):
            outs = self._infer(new_padded, batch, cache.seed, z, grid.tile)
            for origin, o in zip(batch, outs, strict=True):
                cache.tiles[origin] = o
        image = cache.image.copy()
        win = self.window(grid)
        regions = [sl for y, x in dirty
                   if (sl := reblend(grid, win, cache.tiles, y, x, image)) is not None]
        cache.image = image
        return image.copy(), regions

    def kept(self, z: int = 0) -> bool:
        """True when tile outputs of slice ``z`` are kept for :meth:`update`."""
        return z in self._cache

    def tiles_touched(self, region: tuple[slice, slice], *, z: int = 0) -> int:
        """How many tiles of the kept grid cover an image region (for progress and tests)."""
        cache = self._cache.get(z)
        return 0 if cache is None else len(tiles_covering(cache.grid, region))

    # ----------------------------------------------------------------- lifetime
    def describe(self) -> dict[str, Any]:
        """What this synthesizer runs: model, device, precision, tiling."""
        return describe_common(self)

    def close(self) -> None:
        """Free the model and kept tiles (and GPU memory)."""
        self._cache.clear()
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def describe_common(synth: Any) -> dict[str, Any]:
    """What every family's synthesizer records (generate.jsonl, the widgets): model, device,
    precision and the rule behind it, tiling, encoding, threads."""
    return {
        "model": synth.info.to_dict(),
        "device": str(synth.device),
        "precision": synth.precision,
        "precision_note": synth.precision_note,
        "tile": synth.tile,
        "overlap": synth.overlap,
        "batch_size": synth.batch_size,
        "encoding": synth.encoding,
        "stochastic": synth.stochastic,
        "threads": torch.get_num_threads() if synth.device.type == "cpu" else None,
    }


def output_name(mask_path: str | os.PathLike, seed: int) -> str:
    """The file name ``generate`` writes for a mask and seed: ``<mask stem>_s<seed>.tif``."""
    return f"{Path(mask_path).stem}_s{seed}.tif"
