"""Noise at a coarser scale than the pixels, for pix2pix generators with noise channels.

Full-resolution noise beside the mask stops uniform tissue from repeating from tile to tile,
but the transposed convolutions turn its pixel-to-pixel changes into a hatched grain
(docs/unlabeled.md). With ``noise_scale`` s the noise is one N(0, 1) value every s pixels,
interpolated bilinearly in between and renormalised to unit variance at every pixel, so the
generator sees where the tissue should change, not a pixel pattern to copy.

The coarse values sit on a grid fixed to the slice (node j of a window starting at pixel y is
coarse row ``y // s + j``), so training crops and synthesis tiles at any offset see the same
kind of field, and overlapping tiles read the same numbers (seamless blending).
"""

from __future__ import annotations

import torch


def coarse_extent(start: int, size: int, scale: int) -> int:
    """Coarse nodes that cover pixels ``start .. start + size - 1`` (and the next node)."""
    return (start + size - 1) // scale - start // scale + 2


def _weights(start: int, size: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's lower coarse node (relative to ``start // scale``) and its distance to it
    as a fraction of ``scale``."""
    pos = torch.arange(start, start + size)
    return pos // scale - start // scale, (pos % scale).to(torch.float32) / scale


def _along(coarse: torch.Tensor, index: torch.Tensor, frac: torch.Tensor, dim: int
           ) -> torch.Tensor:
    """Linear interpolation of ``coarse`` along ``dim``, renormalised to unit variance."""
    lo, hi = coarse.index_select(dim, index), coarse.index_select(dim, index + 1)
    shape = [1] * coarse.dim()
    shape[dim] = -1
    f = frac.to(coarse.dtype).view(shape)
    return ((1 - f) * lo + f * hi) / torch.sqrt((1 - f) ** 2 + f ** 2)


def upsample(coarse: torch.Tensor, scale: int, y: int, x: int, height: int, width: int
             ) -> torch.Tensor:
    """The ``height`` x ``width`` window at pixel ``(y, x)`` of the smooth field whose coarse
    nodes, from row ``y // scale`` and column ``x // scale`` on, are ``coarse`` (..., rows,
    columns; at least :func:`coarse_extent` of each)."""
    rows, fy = _weights(y, height, scale)
    cols, fx = _weights(x, width, scale)
    out = _along(coarse, rows, fy, coarse.dim() - 2)
    return _along(out, cols, fx, coarse.dim() - 1)


def draw(shape: tuple[int, int, int, int], scale: int,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Training noise (batch, channels, height, width) at ``scale``: each tile at a random
    offset within a coarse cell, as synthesis tiles fall anywhere on the slice's grid."""
    b, k, h, w = shape
    if scale == 1:
        return torch.randn(shape, generator=generator)
    y, x = (int(v) for v in torch.randint(0, scale, (2,), generator=generator))
    coarse = torch.randn((b, k, coarse_extent(y, h, scale), coarse_extent(x, w, scale)),
                         generator=generator)
    return upsample(coarse, scale, y, x, h, w)
