"""Mask -> EM image with any model family: the public :class:`Synthesizer`, and pix2pix's.

``Synthesizer(model, **settings)`` builds the synthesizer of the model's family (the family
registry says which class; :class:`Pix2PixSynthesizer` for pix2pix), so callers need not know
the family. Tiling, blending, seeds and live-preview bookkeeping live in :mod:`.tiling` and are
shared: a family whose network maps tiles independently implements :meth:`Synthesizer._infer`
and inherits full runs, progress, and dirty-tile updates from the base class.
"""

from __future__ import annotations

import copy
import gc
import os
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any, ClassVar

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
from .encoding import check_encoding, encode_masks, encoding_lut, n_channels
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
    tile_seed,
    tiles_covering,
)

ProgressFn = Callable[[int, int], None]
DEFAULT_TILE = 256
WHOLE_SLICE_MAX = 1024
#: kept for callers that imported the tiling helpers from here
__all__ = [
    "DEFAULT_TILE",
    "WHOLE_SLICE_MAX",
    "Pix2PixSynthesizer",
    "SeededDropout",
    "SynthesisError",
    "Synthesizer",
    "TileGrid",
    "blend_window",
    "fold_batchnorm",
    "make_synthesizer",
    "output_name",
    "pad_mask",
    "plan_tiles",
    "prepare_network",
    "synthesize",
    "synthesizer_class",
    "tile_seed",
]


class SynthesisError(ValueError):
    """Synthesis parameters that cannot work with this model or mask."""


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


def synthesizer_class(model: Any) -> type:
    """The synthesizer class of a model's family (a LoadedModel, a path or a bundled name).

    A path is recognised from its header alone (no weights are read); a file that cannot be
    recognised goes to pix2pix, whose loading then says what is wrong with it. The class is
    usually a :class:`Synthesizer` subclass; a family may also bring a class of its own with
    the same interface (see :class:`Synthesizer`).
    """
    from . import families
    from .models.checkpoints import LoadedModel, model_family

    family = model.info.family if isinstance(model, LoadedModel) else model_family(model)
    try:
        return families.get(family or "pix2pix").synthesizer_class()
    except families.FamilyError:
        if isinstance(model, LoadedModel):
            raise
        return Pix2PixSynthesizer  # its load_model names the unknown family in its error


def make_synthesizer(model: Any, **settings: Any) -> Any:
    """The synthesizer of ``model``'s family with ``settings`` (same as ``Synthesizer(...)``)."""
    return synthesizer_class(model)(model, **settings)


class Synthesizer:
    """Synthesize uint8 EM images from class masks, with the model's family.

    ``Synthesizer(model, **settings)`` returns an instance of the family's subclass
    (:class:`Pix2PixSynthesizer` for pix2pix models; see :func:`synthesizer_class`). ``model``
    is a :class:`~napari_synthgen.models.checkpoints.LoadedModel` or anything
    :func:`~napari_synthgen.models.checkpoints.load_model` accepts. Call it with a 2-D mask or a
    3-D stack; :meth:`run` yields progress (stop iterating it to cancel); :meth:`update`
    re-synthesizes only what a mask edit changed (live preview).

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

    def __new__(cls, model: Any = None, *args: Any, **kwargs: Any) -> Synthesizer:
        if cls is Synthesizer:
            cls = synthesizer_class(model)
            if not issubclass(cls, Synthesizer):
                # a family synthesizer with its own machinery: built here, and Python does
                # not call __init__ again on an object that is not a Synthesizer
                return cls(model, *args, **kwargs)
        return super().__new__(cls)

    # ----------------------------------------------------------------- shared set-up
    def _load(self, model: Any, encoding: str | None) -> Any:
        """``model`` as a LoadedModel of this class's family (loading a path)."""
        from .models.checkpoints import LoadedModel, load_model

        if not isinstance(model, LoadedModel):
            model = load_model(Path(model), encoding=encoding)
        if self.family and model.info.family != self.family:
            raise SynthesisError(
                f"{type(self).__name__} runs {self.family} models, but {model.info.path} holds "
                f"a {model.info.family} model; create it with Synthesizer(model) instead.")
        return model

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


class Pix2PixSynthesizer(Synthesizer):
    """Synthesize with a pix2pix generator.

    ``tile`` defaults to the size the model was trained at; a model that does not say (a
    reference checkpoint) runs a slice of up to 1024 px whole when that is cheaper, else tiles
    of 256. ``overlap`` defaults to a quarter tile. ``stochastic`` keeps dropout on, as the
    pix2pix paper does at test time, to make variations; the seed makes them reproducible.
    """

    family = "pix2pix"

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
        from .models.pix2pix import size_divisor

        model = self._load(model, encoding)
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
        self._windows = {}
        self.requested_precision = str(precision).lower()
        self.precision_note = ""
        self.precision = self._resolve_precision(self.requested_precision)
        self.network, self._dropouts = prepare_network(model.network, self.device, self.precision)
        self.memory_format = _memory_format(self.device, self.precision)
        # bf16 on the CPU runs a bf16 copy of the weights (converted once, not at every call);
        # elsewhere reduced precision is autocast
        self._input_dtype = _weight_dtype(self.device, self.precision)
        self._autocast = self._input_dtype == torch.float32 and self.precision != "fp32"
        self._cache = {}

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

    def describe(self) -> dict[str, Any]:
        """What this synthesizer runs: model, device, precision, tiling."""
        return {
            **super().describe(),
            "tile": self.fixed_tile or f"whole slice up to {WHOLE_SLICE_MAX}, else {self.tile}",
        }

    def close(self) -> None:
        """Free the network, the model and kept tiles (and GPU memory)."""
        self.network = None  # type: ignore[assignment]
        super().close()


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
