"""The toy family's synthesizer: the base Synthesizer's tiles through ToyNet."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_synthgen.encoding import encode_masks, encoding_lut
from napari_synthgen.synthesis import Synthesizer

from .files import load_file


class ToySynthesizer(Synthesizer):
    family = "toy"

    def __init__(self, model: Any, *, device: str = "cpu", precision: str = "fp32",
                 tile: int | None = None, overlap: int | None = None,
                 batch_size: int | None = None, encoding: str | None = None,
                 stochastic: bool = False) -> None:
        self.model = model = self._load(model, encoding)
        self.info, self.encoding = model.info, model.info.encoding
        self.device = torch.device("cpu")
        self.tile = int(tile or model.info.tile)
        self.overlap = self.tile // 4 if overlap is None else overlap
        self.batch_size = batch_size or 4
        self.stochastic = stochastic
        self.precision, self.precision_note = "fp32", "the toy runs fp32"
        self._lut = encoding_lut(self.encoding)
        self._windows, self._cache = {}, {}

    def _load_file(self, path, encoding):
        return load_file(path, encoding)

    def _infer(self, padded, origins, seed, z, t):
        crops = np.stack([padded[y : y + t, x : x + t] for y, x in origins])
        with torch.inference_mode():
            out = self.model.network(encode_masks(torch.from_numpy(crops), self._lut))
        return out[:, 0].numpy()
