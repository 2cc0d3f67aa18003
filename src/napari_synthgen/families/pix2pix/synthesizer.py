"""pix2pix synthesis: tiles through the generator (eval or seeded test-time dropout).

The base :class:`~napari_synthgen.synthesis.Synthesizer` brings tiling, blending, seeds and
live preview; this class runs a batch of tiles through an inference copy of the generator
(batch norm folded, seeded dropout, bf16 weights on a CPU that has bf16). A generator with
noise channels gets them from the seed's noise canvas (:func:`noise_crop`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...devices import Precision, autocast, resolve_device
from ...encoding import check_encoding, encode_masks, encoding_lut, n_channels
from ...synthesis import (
    DEFAULT_TILE,
    WHOLE_SLICE_MAX,
    SynthesisError,
    Synthesizer,
)
from ...tiling import TileGrid, plan_tiles, tile_seed
from .networks import size_divisor
from .noise import coarse_extent, upsample


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


#: side of the blocks the noise canvas is drawn in (each from its own seed), and the stream
#: that tells its seeds from the dropout's
NOISE_BLOCK, NOISE_STREAM = 64, 0x6E6F

def noise_crop(seed: int, z: int, y: int, x: int, size: int, channels: int) -> np.ndarray:
    """The ``channels`` x ``size`` x ``size`` window at ``(y, x)`` of slice ``z``'s noise canvas.

    The canvas is drawn in :data:`NOISE_BLOCK`-px blocks, each from a seed of its own, so any
    window is the same numbers whichever tile, batch or live-preview update asks for it: the
    overlaps of neighbouring tiles see the same noise and blend without seams."""
    b = NOISE_BLOCK
    out = np.empty((channels, size, size), np.float32)
    for by in range(y // b, (y + size - 1) // b + 1):
        for bx in range(x // b, (x + size - 1) // b + 1):
            ss = np.random.SeedSequence([seed & 0xFFFFFFFF, z, by, bx, NOISE_STREAM])
            block = np.random.default_rng(ss).standard_normal((channels, b, b), np.float32)
            y0, x0 = max(by * b, y), max(bx * b, x)
            y1, x1 = min((by + 1) * b, y + size), min((bx + 1) * b, x + size)
            out[:, y0 - y:y1 - y, x0 - x:x1 - x] = block[:, y0 - by * b:y1 - by * b,
                                                         x0 - bx * b:x1 - bx * b]
    return out


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
        model = self._load(model, encoding)
        self.model = model
        self.spec = model.spec  # the GeneratorSpec
        self.info = model.info
        self.encoding = check_encoding(encoding or model.info.encoding)
        if n_channels(self.encoding) != model.info.input_nc:
            raise SynthesisError(
                f"encoding {self.encoding!r} gives {n_channels(self.encoding)} channels but the "
                f"model takes {model.info.input_nc}; choose an encoding that fits."
            )
        self.device = resolve_device(device)
        divisor = size_divisor(self.spec.netG)
        self.divisor = divisor
        # the tile size a model was trained at (or the caller's); None for reference files,
        # which then run whole slices up to WHOLE_SLICE_MAX, as the reference runs its tests
        self.fixed_tile = int(tile) if tile else model.info.tile
        self.tile = int(self.fixed_tile or max(DEFAULT_TILE, divisor))
        if self.tile <= 0 or self.tile % divisor:
            raise SynthesisError(
                f"tile {self.tile} does not fit {self.spec.netG}, which needs tiles that are a "
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
        if self.spec.noise_nc:  # the seed's noise canvas, cropped like the mask
            noise = torch.from_numpy(np.stack([self._noise(seed, z, y, x, t)
                                               for y, x in origins]))
            x_in = torch.cat([x_in, noise.to(self.device, x_in.dtype)],
                             1).contiguous(memory_format=self.memory_format)
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

    def _noise(self, seed: int, z: int, y: int, x: int, t: int) -> np.ndarray:
        """The noise channels of the tile at ``(y, x)``: the canvas itself, or at
        ``noise_scale`` its coarse nodes over the tile, interpolated."""
        k, s = self.spec.noise_nc, self.spec.noise_scale
        if s == 1:
            return noise_crop(seed, z, y, x, t, k)
        side = max(coarse_extent(y, t, s), coarse_extent(x, t, s))
        coarse = torch.from_numpy(noise_crop(seed, z, y // s, x // s, side, k))
        return upsample(coarse, s, y, x, t, t).numpy()

    def describe(self) -> dict[str, Any]:
        """What this synthesizer runs: model, device, precision, tiling."""
        described = {
            **super().describe(),
            "tile": self.fixed_tile or f"whole slice up to {WHOLE_SLICE_MAX}, else {self.tile}",
        }
        if self.spec.noise_nc:  # absent otherwise: records of models without noise unchanged
            described["noise_nc"] = self.spec.noise_nc
        if self.spec.noise_scale > 1:
            described["noise_scale"] = self.spec.noise_scale
        return described

    def close(self) -> None:
        """Free the network, the model and kept tiles (and GPU memory)."""
        self.network = None  # type: ignore[assignment]
        super().close()

    def _load_file(self, path: Path, encoding: str | None) -> Any:
        """A pix2pix file: ours or a reference checkpoint."""
        from .files import load_file

        return load_file(path, encoding=encoding)


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
