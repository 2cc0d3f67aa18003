"""Teach class 0 where the data has none: random cells of a training mask become background.

In many EM sets background means "unlabelled tissue". ``--unlabel-fraction`` (both families)
turns a share of the cells, interior and boundary ring, into background in each training mask
while the image stays, so a model learns to fill background with plausible tissue. The draw is
a pure function of (seed, step, rank, index in the batch): runs resume exactly and N processes
see what one process would.
"""

from __future__ import annotations

import numpy as np
import torch

from ..masks import BACKGROUND, BOUNDARY, INTERIOR

UNLABEL_STREAM = 0xCE11  # keeps these draws apart from the other seeded streams


def unlabel_cells(mask: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of a 2-D class mask in which each cell is set to background with ``fraction``
    probability: its interior (a connected class-1 region) and its boundary ring.

    A boundary pixel belongs to a cell's ring when that cell's interior is within the
    membrane thickness of it; membranes shared with a kept cell stay (they bound that cell).
    The image is not touched: the model learns to paint unlabelled tissue where the mask says 0.
    """
    from scipy import ndimage

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"unlabel_cells takes one 2-D mask; got shape {m.shape}.")
    out = m.copy()
    if fraction <= 0:
        return out
    labels, n = ndimage.label(m == INTERIOR)
    if n == 0:
        return out
    drop = np.concatenate([[False], rng.random(n) < fraction])
    if not drop.any():
        return out
    boundary = m == BOUNDARY
    # membrane width from its ridge (chessboard distance to the nearest interior, so that a
    # cell's corner junctions are as near as its sides); a wall of width w has half-width
    # (w + 1) / 2 on its ridge
    d_any = ndimage.distance_transform_cdt(labels == 0, metric="chessboard")
    ridge = boundary & (d_any == ndimage.maximum_filter(d_any, size=3))
    reach = 2 * float(np.median(d_any[ridge])) - 1 if ridge.any() else 0.0
    kept_interior = (labels > 0) & ~drop[labels]
    dropped_interior = drop[labels]
    far = m.shape[0] + m.shape[1]
    d_kept = (ndimage.distance_transform_cdt(~kept_interior, metric="chessboard")
              if kept_interior.any() else np.full(m.shape, far))
    d_drop = ndimage.distance_transform_cdt(~dropped_interior, metric="chessboard")
    ring = boundary & (d_drop <= reach) & (d_kept > reach)
    out[dropped_interior | ring] = BACKGROUND
    return out


def unlabel_batch(masks: torch.Tensor, fraction: float, seed: int, step: int, rank: int
                  ) -> torch.Tensor:
    """:func:`unlabel_cells` on each mask of a batch, seeded by (seed, step, rank, index)."""
    out = masks.clone()
    for i in range(masks.shape[0]):
        rng = np.random.default_rng([seed, UNLABEL_STREAM, step, rank, i])
        out[i] = torch.from_numpy(unlabel_cells(masks[i].cpu().numpy(), fraction, rng))
    return out


__all__ = ["UNLABEL_STREAM", "unlabel_batch", "unlabel_cells"]
