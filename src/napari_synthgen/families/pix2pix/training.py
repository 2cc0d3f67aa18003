"""The pix2pix objective and optimisation step (generator + PatchGAN, as the reference trains).

One step: G makes a fake image from the encoded mask; D learns to tell (mask, real) from
(mask, fake); then G learns to fool D while staying close to the real image in L1. Mixed
precision on CUDA (bf16, or fp16 with a gradient scaler), optional ``channels_last``; the same
code runs under DDP, where only the wrapped modules synchronise gradients.

Tiles without a mask (``--unlabeled`` images, or ``cond_dropout``: a whole tile of
:data:`~napari_synthgen.masks.NO_LABEL`) never enter G's input, L1 or the conditional D: G has
no mask-free input (its noise channels, ``noise_nc``, only vary the texture of a mask), so
the null condition would map to one fixed image and L1 would teach blur.
They train instead an *unconditional* PatchGAN ``D_u`` (images only): real = every real tile,
labelled or not; fake = G's images of the labelled masks. G's extra loss ``lambda_unlabeled``
x GAN(D_u(fake)) pushes its textures towards those of all the raw images. ``D_u`` exists only
in runs with such tiles and ``lambda_unlabeled > 0``, so runs without them are unchanged.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...devices import Precision, autocast
from ...encoding import encode_masks, encoding_lut, n_channels
from ...gan import gan_loss
from ...masks import NO_LABEL
from ...training.config import TrainConfig
from ..base import StepResult
from . import noise
from .networks import GeneratorSpec, build_discriminator, build_generator, init_weights


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


def uses_unlabeled(cfg: TrainConfig) -> bool:
    """Whether a run trains the unconditional discriminator: it has tiles without a mask
    (``unlabeled`` images or ``cond_dropout``) and ``lambda_unlabeled > 0``."""
    has_tiles = bool(cfg.unlabeled and cfg.unlabeled_share > 0) or cfg.cond_dropout > 0
    return has_tiles and cfg.lambda_unlabeled > 0


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
                                  dropout=cfg.dropout, noise_nc=cfg.noise_nc,
                                  noise_scale=cfg.noise_scale)
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
        self.ddp = ddp
        # the unconditional discriminator of tiles without a mask; built after G and D so that
        # their initial weights do not depend on it
        self.Du_raw: nn.Module | None = None
        self.Du_pair: nn.Module | None = None
        if uses_unlabeled(cfg):
            self.Du_raw = build_discriminator(cfg.output_nc, ndf=cfg.ndf, netD=cfg.netD,
                                              n_layers=cfg.n_layers_D, norm=cfg.norm)
            init_weights(self.Du_raw, cfg.init_type, cfg.init_gain)
            self.Du_raw.to(device).train()
            if self.memory_format == torch.channels_last:
                self.Du_raw.to(memory_format=torch.channels_last)
            self.Du_pair = _PairD(self.Du_raw)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.G = DDP(self.G, device_ids=ids)
            self.D_pair = DDP(self.D_pair, device_ids=ids)
            if self.Du_pair is not None:
                self.Du_pair = DDP(self.Du_pair, device_ids=ids)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_G = torch.optim.Adam(self.G_raw.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D_raw.parameters(), lr=cfg.lr, betas=betas)
        rule = linear_decay(total_steps, cfg.decay_start)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, rule)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, rule)
        self.opt_Du: torch.optim.Optimizer | None = None
        self.sched_Du: torch.optim.lr_scheduler.LambdaLR | None = None
        if self.Du_raw is not None:
            self.opt_Du = torch.optim.Adam(self.Du_raw.parameters(), lr=cfg.lr, betas=betas)
            self.sched_Du = torch.optim.lr_scheduler.LambdaLR(self.opt_Du, rule)
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

    def with_noise(self, a: torch.Tensor, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
        """G's input: the encoded masks, then ``noise_nc`` channels of N(0, 1) noise, drawn on
        the CPU (the same numbers on every device) from the run's random stream, which a
        resumed run restores; ``a`` itself without noise channels."""
        k = self.spec.noise_nc
        if not k:
            return a
        z = noise.draw((a.shape[0], k, *a.shape[2:]), self.spec.noise_scale, generator)
        return torch.cat([a, z.to(device=a.device, dtype=a.dtype)], 1).contiguous(
            memory_format=self.memory_format)

    # ----------------------------------------------------------------- step
    def _labelled(self, masks: torch.Tensor, real_a: torch.Tensor, real_b: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The labelled rows of a batch (a tile entirely ``NO_LABEL`` has no mask), and how
        many there are: ``"all"`` (the batch itself, untouched), ``"some"``, or ``"none"``
        (then the whole batch as a placeholder whose losses count 0: under DDP every process
        must run the same forwards and backwards)."""
        unlabelled = (masks == NO_LABEL).flatten(1).all(1)
        if not bool(unlabelled.any()):
            return real_a, real_b, "all"
        if bool(unlabelled.all()):
            return real_a, real_b, "none"
        rows = (~unlabelled).nonzero().squeeze(1).to(self.device)
        fmt = self.memory_format
        return (real_a.index_select(0, rows).contiguous(memory_format=fmt),
                real_b.index_select(0, rows).contiguous(memory_format=fmt), "some")

    def step(self, masks: torch.Tensor, images: torch.Tensor) -> StepResult:
        """One optimisation step of D (and D_u) then G; the schedulers advance by one.

        Tiles without a mask enter only D_u, as real images. A process with no labelled tile
        skips G and D (under DDP it runs them on a placeholder with zero loss instead)."""
        real_all_a, real_all_b = self.inputs(masks, images)
        real_a, real_b, labelled = self._labelled(masks, real_all_a, real_all_b)
        skip = labelled == "none" and not self.ddp
        placeholder = labelled == "none" and self.ddp
        mode, scaler = self.cfg.gan_mode, self.scaler
        zero = torch.zeros((), device=self.device)
        loss_g_gan = loss_g_l1 = loss_d_real = loss_d_fake = zero
        loss_g_u = loss_du_real = loss_du_fake = zero
        fake_b = None
        if not skip:
            with autocast(self.device, self.precision):
                fake_b = self.G(self.with_noise(real_a))
        # --- discriminators
        for d in self._discriminators():
            for p in d.parameters():
                p.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        if self.opt_Du is not None:
            self.opt_Du.zero_grad(set_to_none=True)
        loss_d = None
        if fake_b is not None:
            with autocast(self.device, self.precision):
                pred_fake, pred_real = self.D_pair(torch.cat([real_a, fake_b.detach()], 1),
                                                   torch.cat([real_a, real_b], 1))
                loss_d_fake = gan_loss(pred_fake.float(), False, mode)
                loss_d_real = gan_loss(pred_real.float(), True, mode)
                loss_d = 0.5 * (loss_d_fake + loss_d_real)
                if placeholder:
                    loss_d = loss_d * 0.0
        if self.Du_pair is not None:
            with autocast(self.device, self.precision):
                if fake_b is not None:
                    pred_fake, pred_real = self.Du_pair(fake_b.detach(), real_all_b)
                    loss_du_fake = gan_loss(pred_fake.float(), False, mode)
                    if placeholder:
                        loss_du_fake = loss_du_fake * 0.0
                else:  # one process, no labelled tile: no fake to show D_u
                    pred_real = self.Du_raw(real_all_b)
                loss_du_real = gan_loss(pred_real.float(), True, mode)
                loss_du = 0.5 * (loss_du_fake + loss_du_real)
            loss_d = loss_du if loss_d is None else loss_d + loss_du
        if loss_d is not None:
            scaler.scale(loss_d).backward()
            if fake_b is not None:
                scaler.step(self.opt_D)
            if self.opt_Du is not None:
                scaler.step(self.opt_Du)
        # --- generator (through the unwrapped Ds: their parameters take no gradient here)
        for d in self._discriminators():
            for p in d.parameters():
                p.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        if fake_b is not None:
            with autocast(self.device, self.precision):
                pred = self.D_raw(torch.cat([real_a, fake_b], 1))
                loss_g_gan = gan_loss(pred.float(), True, mode, for_generator=True)
                loss_g_l1 = F.l1_loss(fake_b.float(), real_b.float()) * self.cfg.lambda_l1
                loss_g = loss_g_gan + loss_g_l1
                if self.Du_raw is not None:
                    pred_u = self.Du_raw(fake_b)
                    loss_g_u = gan_loss(pred_u.float(), True, mode, for_generator=True)
                    loss_g = loss_g + self.cfg.lambda_unlabeled * loss_g_u
                if placeholder:
                    loss_g = loss_g * 0.0
            scaler.scale(loss_g).backward()
            scaler.step(self.opt_G)
        if loss_d is not None:
            scaler.update()
        with warnings.catch_warnings():
            # a step without a labelled tile leaves opt_G/opt_D alone; LambdaLR's rate is a
            # function of the step, so "scheduler before optimiser" skips nothing here
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.sched_G.step()
            self.sched_D.step()
            if self.sched_Du is not None:
                self.sched_Du.step()
        terms = [loss_g_gan, loss_g_l1, loss_d_real, loss_d_fake]
        names: tuple[str, ...] = ("G_GAN", "G_L1", "D_real", "D_fake")
        if self.Du_raw is not None:
            terms += [loss_g_u, loss_du_real, loss_du_fake]
            names += ("G_U", "DU_real", "DU_fake")
        losses = torch.stack(terms).detach().float()
        if placeholder:  # report what was learnt: nothing from this process's G and D
            losses[[0, 1, 2, 3]] = 0.0
            if self.Du_raw is not None:
                losses[[4, 6]] = 0.0
        values = losses.cpu().tolist()
        return StepResult(dict(zip(names, values, strict=True)),
                          bool(torch.isfinite(losses).all()))

    def _discriminators(self) -> list[nn.Module]:
        return [self.D_raw] + ([self.Du_raw] if self.Du_raw is not None else [])

    def set_base_lr(self, lr: float) -> None:
        """Change the base learning rate of a resumed run (e.g. lower after a NaN)."""
        pairs = [(self.opt_G, self.sched_G), (self.opt_D, self.sched_D)]
        if self.opt_Du is not None and self.sched_Du is not None:
            pairs.append((self.opt_Du, self.sched_Du))
        for opt, sched in pairs:
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
                # previews draw their own fixed noise: comparable from step to step, and the
                # run's random stream (hence its weights) does not depend on how often they come
                out = self.G_raw(self.with_noise(a, torch.Generator().manual_seed(0)))
            return out.float().mean(dim=1).cpu()
        finally:
            self.G_raw.train()

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything that resumes the run exactly (weights, optimisers, schedulers, scaler;
        the unconditional discriminator's too when the run has one)."""
        state = {
            "G": self.G_raw.state_dict(), "D": self.D_raw.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(), "sched_D": self.sched_D.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if self.Du_raw is not None and self.opt_Du is not None and self.sched_Du is not None:
            state.update(D_u=self.Du_raw.state_dict(), opt_Du=self.opt_Du.state_dict(),
                         sched_Du=self.sched_Du.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. A run resumed with unlabelled images that it had not
        before starts its unconditional discriminator afresh; one resumed without them drops
        it (its shape follows netD, ndf, n_layers_D, norm and output_nc, which a resume keeps)."""
        self.G_raw.load_state_dict(state["G"])
        self.D_raw.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.Du_raw is not None and self.opt_Du is not None and self.sched_Du is not None:
            if "D_u" in state:
                self.Du_raw.load_state_dict(state["D_u"])
                self.opt_Du.load_state_dict(state["opt_Du"])
                self.sched_Du.load_state_dict(state["sched_Du"])
            else:  # keep the schedule in step with the others
                self.sched_Du.load_state_dict(state["sched_D"])

    @property
    def generator(self) -> nn.Module:
        return self.G_raw

    def save_model(self, path: str | os.PathLike, metadata: Mapping[str, Any]) -> Path:
        """Write the generator file synthesis loads (its spec, encoding and tile in the header)."""
        from .files import save_model

        return save_model(path, self.G_raw, self.spec, encoding=self.cfg.encoding,
                          tile=self.cfg.tile, metadata=metadata)
