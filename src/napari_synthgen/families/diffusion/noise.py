"""Initial noise correlated along z, so a mask stack is synthesized as one volume.

A diffusion sample is a deterministic function of its mask and its initial noise (DPM-Solver++
and DDIM, eta 0). Slices drawn from independent noise share only what their masks say: texture
beyond the mask flickers from slice to slice (adjacent-slice residual correlation about 0,
against 0.40-0.47 for real serial sections; :mod:`napari_synthgen.zconsistency`). Here the
noise of slice ``z`` is a sum of stationary AR(1) processes along z::

    noise(z) = sum_c sqrt(w_c) * s_c(z),   s_c(0) = e_c(0),
    s_c(z) = a_c * s_c(z - 1) + sqrt(1 - a_c^2) * e_c(z)

with ``e_c(z)`` independent standard normal fields (:func:`noise_field` of a seed derived from
the run's seed and ``c``) and ``sum_c w_c = 1``. Every slice's noise is exactly standard normal
(so each slice, alone, is a sample of the same distribution as a 2-D run: per-slice quality
cannot get worse), and slices ``k`` apart have noise correlation ``sum_c w_c a_c^k``. The
deterministic sampler carries most of it to the image (measured: noise correlation 0.8 gives
0.75 beyond the mask). The ``serial`` coupling's two components, a slow one (texture that
persists for many sections) and a fast one, are calibrated on real sections
(``scripts/z_consistency_synthetic.py``; docs/volumes.md).

Why not a model conditioned on the previous slice: re-noising the previous synthetic slice
(SDEdit-style) and denoising it under the next mask keeps the old membranes as ghosts
(membrane contrast fell from 50 to 23-33 grey levels), and a neighbour-conditioned network
needs retraining every model. Correlated noise needs no training, works with every diffusion
model, keeps each slice's quality, and any slice can be computed without sampling the ones
before it (only their noise, which is cheap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...tiling import tile_seed

#: Side of the square noise blocks; each block has its own generator seeded by its position.
NOISE_BLOCK = 64
_OFFSET = 1 << 20  # keeps block indices of the padding (negative positions) non-negative


def noise_field(seed: int, z: int, y0: int, x0: int, height: int, width: int) -> torch.Tensor:
    """Standard normal noise for image rows ``y0..`` and columns ``x0..`` of slice ``z``.

    A pure function of (seed, z, position): each 64-px block draws from a generator seeded by
    its block index, so any region (a tile, the canvas, a live-preview patch) gets the same
    noise wherever and however it is computed. Positions may be negative (padding).
    """
    out = torch.empty(height, width)
    b = NOISE_BLOCK
    for by in range(math.floor(y0 / b), math.floor((y0 + height - 1) / b) + 1):
        for bx in range(math.floor(x0 / b), math.floor((x0 + width - 1) / b) + 1):
            g = torch.Generator().manual_seed(tile_seed(seed, z, by + _OFFSET, bx + _OFFSET))
            block = torch.randn(b, b, generator=g)
            ya, yb = max(by * b, y0), min((by + 1) * b, y0 + height)
            xa, xb = max(bx * b, x0), min((bx + 1) * b, x0 + width)
            out[ya - y0 : yb - y0, xa - x0 : xb - x0] = block[ya - by * b : yb - by * b,
                                                              xa - bx * b : xb - bx * b]
    return out


@dataclass(frozen=True)
class ZCoupling:
    """How the initial noise of consecutive slices is correlated: ``components`` are
    ``(weight, lag-1 correlation)`` of AR(1) processes; weights sum to 1. No component:
    independent slices."""

    name: str
    components: tuple[tuple[float, float], ...]
    description: str = ""

    def __post_init__(self) -> None:
        if self.components:
            total = sum(w for w, _ in self.components)
            if not math.isclose(total, 1.0, abs_tol=1e-9):
                raise ValueError(f"z coupling {self.name!r}: weights sum to {total}, not 1.")
            for w, a in self.components:
                if w < 0 or not 0 <= a < 1:
                    raise ValueError(f"z coupling {self.name!r}: weight {w} and correlation "
                                     f"{a} must be >= 0 and in [0, 1).")

    @property
    def independent(self) -> bool:
        return not self.components

    def correlation(self, lag: int) -> float:
        """Correlation of the initial noise of two slices ``lag`` apart."""
        if lag == 0:
            return 1.0
        return float(sum(w * a ** abs(lag) for w, a in self.components))

    def record(self) -> dict[str, object]:
        """What provenance records of this coupling."""
        return {"name": self.name, "components": [list(c) for c in self.components],
                "noise_corr_lag1": round(self.correlation(1), 4)}


#: ``serial``: like serial EM sections (about 40-50 nm); ``independent``: slices share only
#: their masks (the behaviour before z coupling).
Z_COUPLINGS: dict[str, ZCoupling] = {
    "serial": ZCoupling("serial", ((0.2, 0.95), (0.8, 0.35)),
                        "initial noise correlated along z like serial sections' texture"),
    "independent": ZCoupling("independent", (), "each slice from independent noise"),
}
DEFAULT_Z_COUPLING = "serial"


def component_seed(seed: int, component: int) -> int:
    """The seed of component ``component``'s innovations (independent of the run's own)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x7A, component])
               .generate_state(1)[0])


class StackNoise:
    """Initial noise of slice ``z`` for an image region, under a z coupling.

    ``field(seed, z, y0, x0, height, width)`` is a pure function of its arguments (like
    :func:`noise_field`); the state of the last slice computed for a region is kept so that
    slices taken in order cost two noise fields each, and any other slice is recomputed from
    slice 0 (only noise, no network).
    """

    def __init__(self, coupling: ZCoupling) -> None:
        self.coupling = coupling
        self._state: dict[tuple[int, int, int, int, int], tuple[int, list[torch.Tensor]]] = {}

    def field(self, seed: int, z: int, y0: int, x0: int, height: int, width: int
              ) -> torch.Tensor:
        """Standard normal noise of slice ``z``, rows ``y0..`` and columns ``x0..``; slice 0
        (and every slice when independent) is exactly :func:`noise_field`'s."""
        if self.coupling.independent or z == 0:
            return noise_field(seed, z, y0, x0, height, width)
        if z < 0:
            raise ValueError(f"slice index must not be negative; got {z}.")
        key = (seed, y0, x0, height, width)
        kept = self._state.get(key)
        if kept is not None and kept[0] <= z:
            start, states = kept
            if start == z:
                return self._mix(states)
        else:
            start, states = 0, self._initial(seed, y0, x0, height, width)
        for k in range(start + 1, z + 1):
            states = [a * s + math.sqrt(1.0 - a * a)
                      * noise_field(component_seed(seed, c), k, y0, x0, height, width)
                      for c, ((_, a), s) in enumerate(zip(self.coupling.components, states,
                                                           strict=True))]
        self._state = {key: (z, states)}  # one region at a time: memory of one slice
        return self._mix(states)

    def _initial(self, seed: int, y0: int, x0: int, height: int, width: int
                 ) -> list[torch.Tensor]:
        """Component states of slice 0, independent standard normal fields drawn given that
        their mix is slice 0's :func:`noise_field` ``e``: ``s = sqrt(w) e + r - sqrt(w)
        (sqrt(w) . r)`` with ``r`` fresh noise (the Gaussian conditional), so a stack's first
        slice is the 2-D sample of the same seed and the process is stationary from it."""
        e = noise_field(seed, 0, y0, x0, height, width)
        roots = [math.sqrt(w) for w, _ in self.coupling.components]
        rs = [noise_field(component_seed(seed, c), 0, y0, x0, height, width)
              for c in range(len(roots))]
        along = sum(q * r for q, r in zip(roots, rs, strict=True))
        return [q * e + r - q * along for q, r in zip(roots, rs, strict=True)]

    def _mix(self, states: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros_like(states[0])
        for (w, _), s in zip(self.coupling.components, states, strict=True):
            out += math.sqrt(w) * s
        return out
