"""The toy family's network: one 3x3 convolution, ReLU, one 1x1 convolution, tanh."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ToyNet(nn.Module):
    """Encoded mask -> image: one 3x3 convolution, ReLU, one 1x1 convolution, tanh."""

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_ch, width, 3, padding=1)
        self.b = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.b(F.relu(self.a(x))))
