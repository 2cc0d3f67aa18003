"""The diffusion training step, EMA, previews and state (mirrors ``training/pix2pix.py``).

One step: draw timesteps and noise from a generator seeded by (seed, step, rank), noise the
real image, ask the U-Net (noisy image + encoded mask) for v (or epsilon), and minimise the
MSE, optionally min-SNR weighted. AdamW, warmup then cosine (or constant) learning rate, an
EMA of the weights (diffusers ``EMAModel``) that previews and saved files use. Training is a
pure function of (seed, step) given the data, so a stopped and resumed run ends with the
weights of an uninterrupted one.

``--unlabel-fraction`` is applied by the training engine for both families (training/unlabel.py),
before a batch reaches :meth:`DiffusionTrainer.step`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...devices import Precision, autocast
from ...encoding import encode_masks, encoding_lut
from ...tiling import tile_seed
from ..base import StepResult
from .networks import (
    DiffusionSpec,
    build_unet,
    count_parameters,
    make_spec,
    training_scheduler,
)

_NOISE_STREAM = 0xD1FF  # keeps the trainer's generator apart from other uses of tile_seed


@dataclass
class DiffusionConfig:
    """Diffusion training settings (the registry maps the common TrainConfig onto these).

    ``config``: small | base. ``prediction``: v_prediction | epsilon. ``lr_schedule``:
    cosine | constant, both after ``warmup_steps``. ``min_snr_gamma``: min-SNR loss weight
    (None: plain MSE). ``preview_steps``: DPM-Solver++ steps of the EMA previews.
    ``tile`` None takes the config's tile. (``unlabel_fraction`` is a common setting that
    the training engine applies, not one of these.)
    """

    config: str = "small"
    prediction: str = "v_prediction"
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    ema_decay: float = 0.999
    min_snr_gamma: float | None = 5.0
    grad_clip: float = 1.0
    preview_steps: int = 10
    tile: int | None = None
    encoding: str = "onehot"
    seed: int = 0
    batch_size: int = 4
    #: other DiffusionSpec fields to change (block_out_channels, attention...; tests, trials)
    overrides: dict[str, Any] = field(default_factory=dict)
    #: progressive distillation (distill.py): the teacher (path or bundled name; None: plain
    #: training), the teacher's DDIM steps in the first round and the final student's steps
    distill_from: str | None = None
    #: fine-tuning (finetune.py): the model whose weights the run starts from
    init_from: str | None = None
    distill_start_steps: int = 32
    distill_steps: int = 4
    #: guided distillation: the first round's teacher samples with this classifier-free
    #: guidance (None: the teacher's default, distill.teacher_guidance)
    distill_guidance: float | None = None
    #: adversarial distillation (distill.py): the weight of the PatchGAN term relative to the
    #: distillation term's gradient (0: none)
    distill_adversarial: float = 0.0

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is unknown; use cosine or "
                             "constant.")

    def spec(self) -> DiffusionSpec:
        return make_spec(self.config, tile=self.tile, encoding=self.encoding,
                         prediction_type=self.prediction, **self.overrides)


def warmup_then(total_steps: int, warmup: int, schedule: str):
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine to 0 or flat."""
    warmup = max(0, min(warmup, max(total_steps - 1, 0)))

    def rule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        span = max(total_steps - warmup, 1)
        progress = min(max(step - warmup, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return rule


# --------------------------------------------------------------------------- trainer


class DiffusionTrainer:
    """U-Net, EMA, optimiser, learning-rate schedule and the step, for one device."""

    loss_names: tuple[str, ...] = ("mse",)

    def __init__(self, cfg: DiffusionConfig, device: torch.device, precision: Precision,
                 total_steps: int, ddp: bool = False, rank: int = 0,
                 spec: DiffusionSpec | None = None) -> None:
        from ..._triton_guard import keep_triton_out

        keep_triton_out()
        from diffusers.training_utils import EMAModel

        self.cfg, self.device, self.precision, self.rank = cfg, device, precision, rank
        self.ddp = ddp
        self.total_steps = int(total_steps)
        self.spec = spec if spec is not None else cfg.spec()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the same initial weights on every rank and run
            self.unet = build_unet(self.spec)
        self.unet.to(device).train()
        self.memory_format = (torch.channels_last
                              if device.type == "cuda" or precision == "bf16"
                              else torch.contiguous_format)
        self.unet.to(memory_format=self.memory_format)
        self.unet_raw = self.unet
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.unet = DDP(self.unet, device_ids=ids)
        self.ema = EMAModel(self.unet_raw.parameters(), decay=cfg.ema_decay,
                            use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        self.opt = torch.optim.AdamW(self.unet_raw.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, warmup_then(self.total_steps, cfg.warmup_steps, cfg.lr_schedule))
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda"
                                           and precision == "fp16")
        noise_sched = training_scheduler(self.spec)
        self.alphas_cumprod = noise_sched.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.lut = encoding_lut(self.spec.encoding, device)
        self.step_index = 0
        #: what the run started from (fine-tuning), recorded in the model file
        self.init_record: dict[str, Any] | None = None

    def start_from(self, network: nn.Module, record: dict[str, Any]) -> None:
        """Fine-tune: take ``network``'s weights (same spec) as the start, EMA included."""
        from diffusers.training_utils import EMAModel

        self.unet_raw.load_state_dict(network.state_dict())
        self.ema = EMAModel(self.unet_raw.parameters(), decay=self.cfg.ema_decay,
                            use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        self.init_record = record

    # ----------------------------------------------------------------- step
    def _draws(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps and noise of this step: a pure function of (seed, step, rank)."""
        g = torch.Generator().manual_seed(
            tile_seed(self.cfg.seed, _NOISE_STREAM, self.step_index, self.rank))
        t = torch.randint(0, self.spec.num_train_timesteps, (batch,), generator=g)
        return t, g

    def step(self, masks: torch.Tensor, images: torch.Tensor) -> StepResult:
        """One optimisation step on masks (B, H, W) and images (B, 1, H, W) in [-1, 1]."""
        b = masks.shape[0]
        t, g = self._draws(b)
        noise = torch.randn(images.shape, generator=g).to(self.device)
        t = t.to(self.device)
        x0 = images.to(self.device, dtype=torch.float32)
        cond = encode_masks(masks.to(self.device), self.lut)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        target = (ab.sqrt() * noise - (1 - ab).sqrt() * x0
                  if self.spec.prediction_type == "v_prediction" else noise)
        inp = torch.cat([x_t, cond], 1).contiguous(memory_format=self.memory_format)
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            out = self.unet(inp, t).sample
        per_sample = F.mse_loss(out.float(), target, reduction="none").mean(dim=(1, 2, 3))
        weights = self._snr_weights(ab.view(-1))
        loss = (per_sample * weights).mean()
        return self._optimise(loss)

    def _optimise(self, loss: torch.Tensor, report: dict[str, float] | None = None
                  ) -> StepResult:
        """Backward, clip, optimiser and EMA step for ``loss`` (skipped when it is not finite),
        then the rate schedule; shared by plain training and distillation. ``report``: the
        losses to report instead of ``{"mse": loss}``."""
        finite = bool(torch.isfinite(loss))
        if finite:
            self.scaler.scale(loss).backward()
            if self.cfg.grad_clip:
                self.scaler.unscale_(self.opt)
                nn.utils.clip_grad_norm_(self.unet_raw.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.ema.step(self.unet_raw.parameters())
        self.sched.step()
        self.step_index += 1
        return StepResult(dict(report) if report is not None else {"mse": float(loss.detach())},
                          finite)

    def _snr_weights(self, ab: torch.Tensor) -> torch.Tensor:
        """min-SNR-gamma weights (Hang et al. 2023), expressed for the prediction target."""
        gamma = self.cfg.min_snr_gamma
        if not gamma:
            return torch.ones_like(ab)
        snr = ab / (1 - ab).clamp_min(1e-8)
        clipped = snr.clamp(max=gamma)
        if self.spec.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped / snr.clamp_min(1e-8)

    def set_base_lr(self, lr: float) -> None:
        """Change the base learning rate of a resumed run (e.g. lower after a NaN)."""
        self.sched.base_lrs = [lr] * len(self.opt.param_groups)
        for group, fn in zip(self.opt.param_groups, self.sched.lr_lambdas, strict=True):
            group["lr"] = lr * fn(self.sched.last_epoch)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    # ----------------------------------------------------------------- EMA and previews
    def ema_network(self) -> nn.Module:
        """A float32 CPU copy of the U-Net holding the EMA weights (for previews and files)."""
        net = copy.deepcopy(self.unet_raw).float().to("cpu")
        net.to(memory_format=torch.contiguous_format)
        self.ema.copy_to(net.parameters())
        return net.eval()

    @torch.no_grad()
    def generate(self, masks: torch.Tensor) -> torch.Tensor:
        """EMA samples for masks (B, H, W), as (B, H, W) in [-1, 1]: a fixed seed and
        ``preview_steps`` DPM-Solver++ steps, so previews of one run are comparable."""
        from .sampling import Denoiser, sample_batch

        prec = self.precision if self.device.type == "cuda" else "fp32"
        den = Denoiser(self.ema_network(), self.spec, self.device, prec, copy_network=False)
        return sample_batch(den, masks, seed=self.cfg.seed, steps=self.cfg.preview_steps)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything that resumes the run exactly (weights, EMA, optimiser, schedule, step)."""
        return {
            "unet": self.unet_raw.state_dict(), "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(), "step": self.step_index,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.unet_raw.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.device)
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step_index = int(state["step"])

    def save_model(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write the synthesis file (EMA weights) with the training config and metadata."""
        from .files import save_diffusion

        meta = {"ema": True, "ema_decay": self.cfg.ema_decay, "steps_trained": self.step_index,
                "diffusion_config": asdict(self.cfg), **(metadata or {})}
        if self.init_record is not None:
            meta["init_from"] = self.init_record
        return save_diffusion(path, self.ema_network(), self.spec, meta)

    @property
    def network(self) -> nn.Module:
        """The trained (non-EMA) U-Net, unwrapped."""
        return self.unet_raw

    generator = network

    @property
    def params(self) -> int:
        return count_parameters(self.unet_raw)
