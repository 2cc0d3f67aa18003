"""The toy family's trainer: the interface the engine drives (families.base.Trainer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from napari_synthgen.encoding import encode_masks, encoding_lut, n_channels
from napari_synthgen.families.base import StepResult
from napari_synthgen.training.config import TrainConfig

from .files import save
from .network import ToyNet


class ToyTrainer:
    def __init__(self, cfg: TrainConfig, device: torch.device, total_steps: int) -> None:
        self.cfg, self.device = cfg, device
        self.net = ToyNet(n_channels(cfg.encoding), cfg.width).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.lut = encoding_lut(cfg.encoding, device)

    def step(self, masks: torch.Tensor, images: torch.Tensor) -> StepResult:
        out = self.net(encode_masks(masks.to(self.device), self.lut))
        loss = F.l1_loss(out, images.to(self.device))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        scale = float(out.detach().abs().mean())
        return StepResult({"l1": float(loss.detach()), "scale": scale},
                          bool(torch.isfinite(loss)))

    @torch.no_grad()
    def generate(self, masks: torch.Tensor) -> torch.Tensor:
        return self.net(encode_masks(masks.to(self.device), self.lut))[:, 0].cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])

    def set_base_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def save_model(self, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
        return save(path, self.net, self.cfg.width, encoding=self.cfg.encoding,
                    tile=self.cfg.tile, metadata=metadata)
