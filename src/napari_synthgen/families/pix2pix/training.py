"""The pix2pix objective and optimisation step (generator + PatchGAN, as the reference trains).

One step: G makes a fake image from the encoded mask; D learns to tell (mask, real) from
(mask, fake); then G learns to fool D while staying close to the real image in L1. Mixed
precision on CUDA (bf16, or fp16 with a gradient scaler), optional ``channels_last``; the same
code runs under DDP, where only the wrapped modules synchronise gradients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...devices import Precision, autocast
from ...encoding import encode_masks, encoding_lut, n_channels
from ...training.config import TrainConfig
from ..base import StepResult
from .networks import GeneratorSpec, build_discriminator, build_generator, init_weights


def gan_loss(pred: torch.Tensor, real: bool, mode: str, *, for_generator: bool = False
             ) -> torch.Tensor:
    """The GAN loss of discriminator logits ``pred`` against the real/fake target."""
    if mode == "lsgan":
        return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, 1.0 if real else 0.0))
    if mode == "hinge":
        if for_generator:
            return -pred.mean()
        return F.relu(1.0 - pred).mean() if real else F.relu(1.0 + pred).mean()
    raise ValueError(f"unknown GAN loss {mode!r}; use lsgan, vanilla or hinge.")


def linear_decay(total_steps: int, decay_start: float):
    """Learning-rate factor: 1 for the first ``decay_start`` of the run, then linearly to 0."""
    start = round(total_steps * decay_start)
    span = max(total_steps - start, 1)

    def rule(step: int) -> float:
        return 1.0 - max(0, step - start) / float(span + 1)

    return rule


def cpu_memory_format(precision: Precision, channels_last: bool = True) -> torch.memory_format:
    """channels_last speeds up bf16 convolutions on the CPU (oneDNN) but slows fp32 ones."""
    if channels_last and precision == "bf16":
        return torch.channels_last
    return torch.contiguous_format


class _PairD(nn.Module):
    """D applied to a fake and a real batch in one forward, as DDP needs one forward per backward.

    Separate calls (not one concatenated batch) keep batch-norm statistics per batch, as the
    reference does.
    """

    def __init__(self, d: nn.Module) -> None:
        super().__init__()
        self.d = d

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d(fake), self.d(real)


class Pix2PixModel:
    """Generator, discriminator, optimisers, schedulers and the step, for one device (the
    pix2pix family's trainer; see :class:`~napari_synthgen.families.Trainer`)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, precision: Precision,
                 total_steps: int, ddp: bool = False) -> None:
        self.cfg, self.device, self.precision = cfg, device, precision
        self.spec = GeneratorSpec(netG=cfg.netG, input_nc=n_channels(cfg.encoding),
                                  output_nc=cfg.output_nc, ngf=cfg.ngf, norm=cfg.norm,
                                  dropout=cfg.dropout)
        self.G = build_generator(self.spec)
        self.D = build_discriminator(self.spec.input_nc + cfg.output_nc, ndf=cfg.ndf,
                                     netD=cfg.netD, n_layers=cfg.n_layers_D, norm=cfg.norm)
        init_weights(self.G, cfg.init_type, cfg.init_gain)
        init_weights(self.D, cfg.init_type, cfg.init_gain)
        self.G.to(device).train()
        self.D.to(device).train()
        if device.type == "cpu":
            self.memory_format = cpu_memory_format(precision, cfg.channels_last)
        elif device.type == "cuda" and cfg.channels_last:
            self.memory_format = torch.channels_last
        else:
            self.memory_format = torch.contiguous_format
        if self.memory_format == torch.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_raw, self.D_raw = self.G, self.D  # unwrapped, for saving and for the G step
        self.D_pair: nn.Module = _PairD(self.D)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.G = DDP(self.G, device_ids=ids)
            self.D_pair = DDP(self.D_pair, device_ids=ids)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_G = torch.optim.Adam(self.G_raw.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D_raw.parameters(), lr=cfg.lr, betas=betas)
        rule = linear_decay(total_steps, cfg.decay_start)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, rule)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, rule)
        use_scaler = device.type == "cuda" and precision == "fp16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.lut = encoding_lut(cfg.encoding, device)

    # ----------------------------------------------------------------- data
    def inputs(self, masks: torch.Tensor, images: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode masks and move a batch to the device (and memory format)."""
        a = encode_masks(masks.to(self.device, non_blocking=True), self.lut)
        b = images.to(self.device, non_blocking=True)
        if self.cfg.output_nc == 3:
            b = b.expand(-1, 3, -1, -1)
        return (a.contiguous(memory_format=self.memory_format),
                b.contiguous(memory_format=self.memory_format))

    # ----------------------------------------------------------------- step
    def step(self, masks: torch.Tensor, images: torch.Tensor) -> StepResult:
        """One optimisation step of D then G; the schedulers advance by one."""
        real_a, real_b = self.inputs(masks, images)
        mode, scaler = self.cfg.gan_mode, self.scaler
        with autocast(self.device, self.precision):
            fake_b = self.G(real_a)
        # --- discriminator
        for p in self.D_raw.parameters():
            p.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            pred_fake, pred_real = self.D_pair(torch.cat([real_a, fake_b.detach()], 1),
                                               torch.cat([real_a, real_b], 1))
            loss_d_fake = gan_loss(pred_fake.float(), False, mode)
            loss_d_real = gan_loss(pred_real.float(), True, mode)
            loss_d = 0.5 * (loss_d_fake + loss_d_real)
        scaler.scale(loss_d).backward()
        scaler.step(self.opt_D)
        # --- generator (through the unwrapped D: its parameters take no gradient here)
        for p in self.D_raw.parameters():
            p.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            pred = self.D_raw(torch.cat([real_a, fake_b], 1))
            loss_g_gan = gan_loss(pred.float(), True, mode, for_generator=True)
            loss_g_l1 = F.l1_loss(fake_b.float(), real_b.float()) * self.cfg.lambda_l1
            loss_g = loss_g_gan + loss_g_l1
        scaler.scale(loss_g).backward()
        scaler.step(self.opt_G)
        scaler.update()
        self.sched_G.step()
        self.sched_D.step()
        losses = torch.stack([loss_g_gan, loss_g_l1, loss_d_real, loss_d_fake]).detach().float()
        values = losses.cpu().tolist()
        names = ("G_GAN", "G_L1", "D_real", "D_fake")
        return StepResult(dict(zip(names, values, strict=True)),
                          bool(torch.isfinite(losses).all()))

    def set_base_lr(self, lr: float) -> None:
        """Change the base learning rate of a resumed run (e.g. lower after a NaN)."""
        for opt, sched in ((self.opt_G, self.sched_G), (self.opt_D, self.sched_D)):
            sched.base_lrs = [lr] * len(opt.param_groups)
            for group, fn in zip(opt.param_groups, sched.lr_lambdas, strict=True):
                group["lr"] = lr * fn(sched.last_epoch)

    @property
    def lr(self) -> float:
        return float(self.opt_G.param_groups[0]["lr"])

    # ----------------------------------------------------------------- previews
    @torch.no_grad()
    def generate(self, masks: torch.Tensor) -> torch.Tensor:
        """Generator output for masks in eval mode (deterministic), as (B, H, W) in [-1, 1]."""
        self.G_raw.eval()
        try:
            a = encode_masks(masks.to(self.device), self.lut).contiguous(
                memory_format=self.memory_format)
            with autocast(self.device, self.precision):
                out = self.G_raw(a)
            return out.float().mean(dim=1).cpu()
        finally:
            self.G_raw.train()

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything that resumes the run exactly (weights, optimisers, schedulers, scaler)."""
        return {
            "G": self.G_raw.state_dict(), "D": self.D_raw.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(), "sched_D": self.sched_D.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G_raw.load_state_dict(state["G"])
        self.D_raw.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    @property
    def generator(self) -> nn.Module:
        return self.G_raw

    def save_model(self, path: str | os.PathLike, metadata: Mapping[str, Any]) -> Path:
        """Write the generator file synthesis loads (its spec, encoding and tile in the header)."""
        from .files import save_model

        return save_model(path, self.G_raw, self.spec, encoding=self.cfg.encoding,
                          tile=self.cfg.tile, metadata=metadata)
