"""Progressive distillation (Salimans & Ho 2022): a few-step diffusion model from a trained one.

The student starts as a copy of the teacher. In each round it learns to do in one DDIM step
what the teacher does in two: for a training image x0, a noisy z_t at a student timestep t,
the teacher's two DDIM steps t -> t' -> t'' give z''; the student's target x~ is the clean
image whose single DDIM step from z_t lands exactly on z'' (closed form, below). The loss is
the MSE between the student's x-prediction and x~, weighted by max(SNR, 1) ("truncated SNR").
When a round ends the student's EMA weights become the next round's teacher and student, so
the number of steps halves every round: ``distill_start_steps`` 32 -> 16 -> 8 -> 4.

Guided distillation (Meng et al., CVPR 2023): a teacher that learned the null condition samples
with classifier-free guidance (two network calls per step, ``DEFAULT_GUIDANCE``). In the first
round its DDIM steps are guided with ``distill_guidance`` (default: the teacher's own default),
so the student learns the guided trajectory in one call per step; later rounds distil that
student, which needs no guidance. The student then draws what its teacher draws by default with
a twentieth of its network calls: 2 steps x 1 call against 20 steps x 2 calls.

Timesteps are diffusers' DDIM grid with ``timestep_spacing="trailing"`` (the synthesizer's):
the grid of 2N steps holds the grid of N at every other place, so the teacher's middle step is
on its own grid. The final student's step count must divide the training timesteps, so that
diffusers' DDIM step (t -> t - T/N) is the step the student learned. Like the trainer, a step
is a pure function of (seed, step, rank), and the state holds the round's teacher, so a
stopped and resumed run ends with the weights of an uninterrupted one.

Adversarial distillation (``distill_adversarial`` > 0; after ADD, Sauer et al. 2023, and
pix2pix-Turbo): the regression target of a one-step student from pure noise is the mean of
what the teacher might draw, which blurs the membranes. A mask-conditioned PatchGAN
(``napari_synthgen.gan``'s, pix2pix's discriminator, here with instance norm; LSGAN) then
judges the student's clean-image prediction against the real training crop, and its generator
loss joins the distillation loss with the adaptive weight of VQGAN (Esser et al. 2021):
``distill_adversarial`` times the ratio of the two losses' gradient norms at the U-Net's last
layer, so the setting says how much the adversarial term may pull relative to the
distillation term, whatever the losses' scales. The discriminator and its optimiser are in the
state, so resume stays exact.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...devices import Precision, autocast
from ...encoding import encode_masks
from ...tiling import tile_seed
from ..base import StepResult
from .files import DISTILL_SAMPLER, agreement_problems
from .networks import DiffusionSpec, make_scheduler
from .training import DiffusionConfig, DiffusionTrainer, warmup_then

_STREAM = 0xD157  # keeps the distillation draws apart from the trainer's
_DISC_STREAM = 0xD15C  # the discriminator's initial weights


class DistillError(ValueError):
    """Distillation settings or a teacher that cannot work, with what to change."""


@dataclass(frozen=True)
class DistillPlan:
    """Rounds of a distillation run: the teacher's steps halve each round down to ``final``."""

    start: int
    final: int
    total_steps: int

    @property
    def rounds(self) -> int:
        return round(math.log2(self.start / self.final))

    def bounds(self) -> list[int]:
        """First optimisation step of each round (and the run's end)."""
        r = self.rounds
        return [self.total_steps * i // r for i in range(r + 1)]

    def round_of(self, step: int) -> int:
        """The round optimisation step ``step`` (0-based) belongs to."""
        b = self.bounds()
        return max(i for i in range(self.rounds) if b[i] <= step)

    def student_steps(self, rnd: int) -> int:
        """Sampling steps of the student of round ``rnd`` (its teacher takes twice as many)."""
        return self.start // 2 ** (rnd + 1)


def check_plan(start: int, final: int, total_steps: int | None = None,
               train_timesteps: int = 1000) -> list[str]:
    """Problems with distillation step counts (empty: fine)."""
    problems = []
    if final < 1 or start <= final:
        problems.append(f"distill_start_steps ({start}) must be larger than distill_steps "
                        f"({final}), and distill_steps at least 1.")
    elif start % final or (start // final) & (start // final - 1):
        problems.append(f"distill_start_steps ({start}) must be distill_steps ({final}) times a "
                        "power of two (each round halves the steps), e.g. 32 and 4.")
    elif train_timesteps % final:
        problems.append(f"distill_steps ({final}) must divide the model's {train_timesteps} "
                        "training timesteps (e.g. 2, 4, 8) so that DDIM sampling takes the "
                        "steps the student learned.")
    elif start > train_timesteps:
        problems.append(f"distill_start_steps ({start}) exceeds the model's {train_timesteps} "
                        "training timesteps.")
    if not problems and total_steps is not None:
        rounds = round(math.log2(start / final))
        if total_steps < rounds:
            problems.append(f"{rounds} distillation rounds ({start} -> {final} steps) need at "
                            f"least {rounds} optimisation steps; got {total_steps}.")
    return problems


def ddim_grid(spec: DiffusionSpec, steps: int) -> list[int]:
    """The DDIM timesteps of ``steps`` sampling steps (the synthesizer's trailing grid)."""
    sched = make_scheduler(spec, DISTILL_SAMPLER)
    sched.set_timesteps(steps)
    return [int(t) for t in sched.timesteps]


def read_teacher(source: str) -> Any:
    """The teacher (a LoadedModel) of ``distill_from``: a diffusion model file, run folder or
    bundled name; anything else is refused with a :class:`DistillError` saying why."""
    from .files import load_named_diffusion

    teacher = load_named_diffusion(source, "distill_from", DistillError)
    if teacher.spec.prediction_type != "v_prediction":
        raise DistillError(f"distill_from {source!r} predicts {teacher.spec.prediction_type}; "
                           "progressive distillation here needs a v_prediction teacher (an "
                           "epsilon model's x-estimate is unstable at the first step).")
    return teacher


def check_teacher(source: str, cfg: Any) -> list[str]:
    """Problems with the teacher and the common settings that must agree with it."""
    try:
        teacher = read_teacher(source)
    except DistillError as exc:
        return [str(exc)]
    spec = teacher.spec
    problems = agreement_problems(spec, cfg, f"the teacher {source!r}")
    start = cfg.settings.distill_start_steps
    made_for = (teacher.info.metadata.get("distilled") or {}).get("steps")
    if isinstance(made_for, int) and made_for != start:
        problems.append(f"the teacher {source!r} was itself distilled for {made_for} DDIM steps "
                        f"and samples well only with those; set distill_start_steps to "
                        f"{made_for} (got {start}).")
    problems.extend(check_plan(start, cfg.settings.distill_steps, cfg.steps,
                               spec.num_train_timesteps))
    try:
        teacher_guidance(teacher, getattr(cfg.settings, "distill_guidance", None))
    except DistillError as exc:
        problems.append(str(exc))
    return problems


def teacher_guidance(teacher: Any, guidance: float | None) -> float:
    """The guidance the first round's teacher samples with: ``guidance``, checked against the
    teacher (a weight other than 1 needs the null condition), or the teacher's own default."""
    from .sampling import DiffusionSamplingError, DiffusionSynthesizer, check_guidance

    if guidance is None:
        return float(DiffusionSynthesizer.model_defaults(teacher)["guidance"])
    try:
        return check_guidance(guidance, teacher)
    except DiffusionSamplingError as exc:
        raise DistillError(f"distill_guidance: {exc}") from None


def _ab(alphas: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) at timesteps ``t`` (B,), shaped (B, 1, 1, 1); t < 0 is the clean end."""
    ac = torch.where(t >= 0, alphas[t.clamp_min(0)], torch.ones_like(alphas[0]))
    ac = ac.view(-1, 1, 1, 1)
    return ac.sqrt(), (1 - ac).clamp_min(0).sqrt()


class DistillTrainer(DiffusionTrainer):
    """A diffusion trainer whose student learns two teacher DDIM steps in one, round by round.

    ``teacher`` is the loaded diffusion model (its spec is the student's); ``source`` and
    ``sha256`` name it in the files written.
    """

    def __init__(self, cfg: DiffusionConfig, teacher: Any, device: torch.device,
                 precision: Precision, total_steps: int, ddp: bool = False, rank: int = 0,
                 *, source: str = "", sha256: str | None = None) -> None:
        problems = check_plan(cfg.distill_start_steps, cfg.distill_steps, total_steps,
                              teacher.spec.num_train_timesteps)
        if problems:
            raise DistillError(" ".join(problems))
        super().__init__(cfg, device, precision, total_steps, ddp=ddp, rank=rank,
                         spec=teacher.spec)
        self.plan = DistillPlan(cfg.distill_start_steps, cfg.distill_steps, self.total_steps)
        #: the first round's teacher guidance (later rounds' teachers have it baked in)
        self.guidance = teacher_guidance(teacher, cfg.distill_guidance)
        self.teacher_record = {
            "name": source, "file": Path(str(teacher.info.path)).name, "sha256": sha256,
            "distilled": teacher.info.metadata.get("distilled"), "guidance": self.guidance,
        }
        self.unet_raw.load_state_dict(teacher.network.state_dict())
        self.teacher = self._frozen(self.unet_raw)
        self.round = 0
        self._fresh_round()
        self.disc, self.disc_opt = self._discriminator()

    def _discriminator(self) -> tuple[nn.Module | None, torch.optim.Optimizer | None]:
        """The adversarial term's mask-conditioned PatchGAN and its Adam (None without it);
        its weights are drawn from the run's seed, like the U-Net's."""
        if not self.cfg.distill_adversarial:
            return None, None
        from ...gan import build_discriminator

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tile_seed(self.cfg.seed, _STREAM, _DISC_STREAM, 0))
            # instance norm: a sample's score does not depend on the rest of its batch, so the
            # one batch of real and fake pairs below judges each as separate calls would, and
            # the student is judged as the discriminator learned (no running statistics)
            disc = build_discriminator(1 + self.spec.mask_channels, norm="instance")
        disc.to(self.device).train()
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            disc = DDP(disc, device_ids=ids)
        return disc, torch.optim.Adam(disc.parameters(), lr=self.cfg.lr, betas=(0.5, 0.999))

    # ----------------------------------------------------------------- rounds
    def _frozen(self, net: nn.Module) -> nn.Module:
        t = copy.deepcopy(net).to(self.device).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        return t

    def _fresh_round(self) -> None:
        """A new EMA, empty optimiser moments and the round's learning-rate schedule."""
        from diffusers.training_utils import EMAModel

        self.ema = EMAModel(self.unet_raw.parameters(), decay=self.cfg.ema_decay,
                            use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        self.opt.state.clear()
        bounds = self.plan.bounds()
        start, end = bounds[self.round], bounds[self.round + 1]
        span = max(end - start, 1)
        rule = warmup_then(span, min(self.cfg.warmup_steps, span // 10), self.cfg.lr_schedule)
        base = self.sched.base_lrs if hasattr(self, "sched") else [self.cfg.lr]
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda k: rule(max(k - start, 0)), last_epoch=-1)
        self.sched.base_lrs = list(base) * (len(self.opt.param_groups) // len(base) or 1)
        for _ in range(start):  # the global step count, so resume and the schedule agree
            self.sched.last_epoch += 1
        for group, lr in zip(self.opt.param_groups, self.sched.base_lrs, strict=True):
            group["lr"] = lr * rule(self.step_index - start)

    def _next_round(self) -> None:
        """The student's EMA becomes the teacher and the starting student of the next round."""
        self.ema.copy_to(self.unet_raw.parameters())
        self.teacher = self._frozen(self.unet_raw)
        self.round += 1
        self._fresh_round()

    @property
    def student_steps(self) -> int:
        """Sampling steps of the current round's student."""
        return self.plan.student_steps(self.round)

    # ----------------------------------------------------------------- step
    def step(self, masks: torch.Tensor, images: torch.Tensor) -> StepResult:
        """One distillation step on masks (B, H, W) and images (B, 1, H, W) in [-1, 1]."""
        while self.round + 1 < self.plan.rounds and \
                self.step_index >= self.plan.bounds()[self.round + 1]:
            self._next_round()
        b = masks.shape[0]
        n = self.student_steps
        grid = [*ddim_grid(self.spec, 2 * n), -1]
        g = torch.Generator().manual_seed(
            tile_seed(self.cfg.seed, _STREAM, self.step_index, self.rank))
        i = torch.randint(0, n, (b,), generator=g)
        noise = torch.randn(images.shape, generator=g).to(self.device)
        t, t_mid, t_end = (torch.tensor([grid[2 * k + d] for k in i.tolist()],
                                        device=self.device) for d in (0, 1, 2))
        x0 = images.to(self.device, dtype=torch.float32)
        cond = encode_masks(masks.to(self.device), self.lut)
        a_t, s_t = _ab(self.alphas_cumprod, t)
        z_t = a_t * x0 + s_t * noise
        w = self.guidance if self.round == 0 else 1.0
        with torch.no_grad():
            z_mid = self._ddim(self.teacher, z_t, cond, t, t_mid, w)
            z_end = self._ddim(self.teacher, z_mid, cond, t_mid, t_end, w)
            a_e, s_e = _ab(self.alphas_cumprod, t_end)
            ratio = s_e / s_t
            target = (z_end - ratio * z_t) / (a_e - ratio * a_t)
        inp = torch.cat([z_t, cond], 1).contiguous(memory_format=self.memory_format)
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            v = self.unet(inp, t).sample
        x_hat = a_t * z_t - s_t * v.float()
        weight = (a_t ** 2 / s_t.clamp_min(1e-8) ** 2).clamp_min(1.0).view(-1)
        per_sample = F.mse_loss(x_hat, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weight).mean()
        if self.disc is None:
            return self._optimise(loss)
        return self._adversarial_step(loss, x_hat, x0, cond)

    def _adversarial_step(self, distill: torch.Tensor, x_hat: torch.Tensor, x0: torch.Tensor,
                          cond: torch.Tensor) -> StepResult:
        """The student's step with the adversarial term, then the discriminator's step on the
        real crops against the student's (detached) predictions, as one batch: one forward and
        one backward of the (DDP-wrapped) discriminator per step."""
        from ...gan import gan_loss

        assert self.disc is not None and self.disc_opt is not None
        judge = _unwrapped(self.disc).requires_grad_(False)  # the student's term: no D grads
        with autocast(self.device, self.precision):  # the unwrapped net: no gradient sync
            adv = gan_loss(judge(torch.cat([x_hat, cond], 1)).float(), True, "lsgan")
        lam = self._adaptive_weight(distill, adv)
        result = self._optimise(distill + lam * adv, {
            "mse": float(distill.detach()), "adv": float(adv.detach()), "adv_weight": lam})
        judge.requires_grad_(True)
        self.disc_opt.zero_grad(set_to_none=True)
        pairs = torch.cat([torch.cat([x0, cond], 1), torch.cat([x_hat.detach(), cond], 1)])
        with autocast(self.device, self.precision):
            d_real, d_fake = self.disc(pairs).float().chunk(2)
        d_loss = 0.5 * (gan_loss(d_real, True, "lsgan") + gan_loss(d_fake, False, "lsgan"))
        if torch.isfinite(d_loss):
            d_loss.backward()
            self.disc_opt.step()
        result.losses["disc"] = float(d_loss.detach())
        return result

    def _adaptive_weight(self, distill: torch.Tensor, adv: torch.Tensor) -> float:
        """VQGAN's balance: ``distill_adversarial`` x |grad distill| / |grad adv| at the
        U-Net's output convolution (0 when either gradient is not finite)."""
        last = self.unet_raw.conv_out.weight
        g_d = torch.autograd.grad(distill, last, retain_graph=True)[0].float().norm()
        g_a = torch.autograd.grad(adv, last, retain_graph=True)[0].float().norm()
        ratio = float((g_d / (g_a + 1e-4)).clamp(0.0, 1e4))
        return self.cfg.distill_adversarial * ratio if math.isfinite(ratio) else 0.0

    def _ddim(self, net: nn.Module, z: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
              s: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        """One deterministic DDIM step of ``net`` (v-prediction) from timesteps t to s, with
        classifier-free ``guidance`` (the null condition is the all-zero encoding, as in
        sampling; conditional and null halves run as one batch)."""
        if guidance == 1.0:
            inp = torch.cat([z, cond], 1).contiguous(memory_format=self.memory_format)
            with autocast(self.device, self.precision):
                v = net(inp, t).sample.float()
        else:
            both = torch.cat([torch.cat([z, cond], 1), torch.cat([z, torch.zeros_like(cond)], 1)])
            with autocast(self.device, self.precision):
                out = net(both.contiguous(memory_format=self.memory_format),
                          torch.cat([t, t])).sample.float()
            v_cond, v_null = out.chunk(2)
            v = v_null + guidance * (v_cond - v_null)
        a_t, s_t = _ab(self.alphas_cumprod, t)
        a_s, s_s = _ab(self.alphas_cumprod, s)
        x = a_t * z - s_t * v
        eps = s_t * z + a_t * v
        return a_s * x + s_s * eps

    # ----------------------------------------------------------------- previews, files, state
    @torch.no_grad()
    def generate(self, masks: torch.Tensor) -> torch.Tensor:
        """EMA student samples with the round's DDIM steps and a fixed seed."""
        from .sampling import Denoiser, sample_batch

        prec = self.precision if self.device.type == "cuda" else "fp32"
        den = Denoiser(self.ema_network(), self.spec, self.device, prec, copy_network=False)
        return sample_batch(den, masks, seed=self.cfg.seed, steps=self.student_steps,
                            sampler=DISTILL_SAMPLER)

    def distilled_record(self) -> dict[str, Any]:
        """What a distilled model file records about how it was made (``distilled``)."""
        done = self.round + (1 if self.step_index >= self.total_steps else 0)
        return {
            "method": "progressive distillation (Salimans & Ho 2022), v-prediction, "
                      "truncated-SNR weighted x loss" + (
                          ", with a mask-conditioned PatchGAN term (adaptive weight)"
                          if self.cfg.distill_adversarial else ""),
            "teacher": self.teacher_record,
            "start_steps": self.plan.start, "final_steps": self.plan.final,
            "rounds": self.plan.rounds, "rounds_done": done, "round": self.round,
            "round_bounds": self.plan.bounds(),
            "steps": self.student_steps, "sampler": DISTILL_SAMPLER, "guidance": self.guidance,
            "adversarial": self.cfg.distill_adversarial,
            "complete": self.step_index >= self.total_steps,
        }

    def save_model(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """The student's EMA weights, with the ``distilled`` record in the metadata."""
        return super().save_model(path, {**(metadata or {}),
                                         "distilled": self.distilled_record()})

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "teacher": self.teacher.state_dict(),
                 "round": self.round}
        if self.disc is not None and self.disc_opt is not None:
            state["disc"] = _unwrapped(self.disc).state_dict()
            state["disc_opt"] = self.disc_opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        self.step_index = int(state["step"])
        self._fresh_round()  # the round's schedule before its state is loaded into it
        self.teacher.load_state_dict(state["teacher"])
        super().load_state_dict(state)
        if self.disc is not None and self.disc_opt is not None:
            if "disc" not in state:
                raise DistillError("this checkpoint was saved without the adversarial term's "
                                   "discriminator; resume it with distill_adversarial 0, or "
                                   "start a new run.")
            _unwrapped(self.disc).load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])


def _unwrapped(net: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return net.module if hasattr(net, "module") else net

