"""Mask-conditioned diffusion as a model family: its settings, trainer, files and synthesizer.

The folder holds the family's parts: ``networks`` (spec, U-Net, schedulers), ``files`` (its
header in our file format), ``training`` (the step, EMA, previews) and ``sampling`` (the
synthesizer); this module is the family's entry, light to import (no torch), and tells the
shared machinery where they are. The common settings (lr, tile, encoding, seed, batch
size) come from TrainConfig and are mapped onto the trainer's
:class:`~napari_synthgen.families.diffusion.training.DiffusionConfig` here.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..base import CliOption, Family

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from ...models.checkpoints.info import LoadedModel
    from ...training.config import TrainConfig
    from .training import DiffusionConfig

UNET_CONFIGS = ("small", "base")
PREDICTIONS = ("v_prediction", "epsilon")
LR_SCHEDULES = ("cosine", "constant")


@dataclass
class DiffusionSettings:
    """Diffusion training settings beside the common ones (see DiffusionConfig for each)."""

    unet_config: str = field(default="small", metadata={"choices": UNET_CONFIGS})
    prediction: str = field(default="v_prediction", metadata={"choices": PREDICTIONS})
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = field(default="cosine", metadata={"choices": LR_SCHEDULES})
    ema_decay: float = 0.999
    min_snr_gamma: float | None = 5.0
    grad_clip: float = 1.0
    preview_steps: int = 10
    #: progressive distillation: the teacher (a diffusion model file, run folder or bundled
    #: name); None trains from scratch. The student takes the teacher's architecture.
    distill_from: str | None = None
    #: fine-tuning: start from this diffusion model's weights (file, run folder or bundled
    #: name) and take its architecture; None starts from random weights (finetune.py)
    init_from: str | None = None
    #: the teacher's DDIM steps in the first round (halved every round)
    distill_start_steps: int = 32
    #: sampling steps of the final student (``--steps`` is split evenly over the rounds)
    distill_steps: int = 4
    #: the classifier-free guidance the first round's teacher samples with, baked into the
    #: student (guided distillation); None: the teacher's own default (3 for a teacher that
    #: learned the null condition, else 1)
    distill_guidance: float | None = None
    #: adversarial distillation: a mask-conditioned PatchGAN judges the student's clean image
    #: against the real crop; its loss pulls this much relative to the distillation loss's
    #: gradient (adaptive weight, distill.py); 0: plain progressive distillation
    distill_adversarial: float = 0.0
    #: other DiffusionSpec fields (block_out_channels, attention...; for tests and trials)
    overrides: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Lists for tuples, recursively: a setting compares equal after a YAML round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class DiffusionFamily(Family):
    """A diffusers U-Net denoising the image with the encoded mask at every step, EMA weights,
    DPM-Solver++ / DDIM sampling fused over tiles."""

    name = "diffusion"
    settings = DiffusionSettings
    arch_keys = ("unet_config", "prediction", "overrides", "distill_from", "init_from",
                 "distill_start_steps", "distill_steps", "distill_guidance")
    loss_names = ("mse",)
    learns_unlabeled = True  # a tile without a mask trains the null condition (guidance)
    learns_null_condition = True
    # measured 7.9 KB per pixel for the small U-Net in fp32 at tile 256, with 2x margin
    train_bytes_per_px = 16384
    defaults: ClassVar[Mapping[str, Any]] = {
        "encoding": "onehot", "batch_size": 4, "out": "runs/diffusion"}
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        name: {"unet_config": name} for name in UNET_CONFIGS}
    cli_options = (
        CliOption("--unet-config", "unet_config", str,
                  "diffusion U-Net configuration: small (CPU) or base (GPU); "
                  "--config small|base says the same"),
        CliOption("--prediction", "prediction", str,
                  "diffusion training target: v_prediction or epsilon"),
        CliOption("--ema-decay", "ema_decay", float, "EMA decay of the diffusion weights"),
        CliOption("--warmup-steps", "warmup_steps", int,
                  "learning-rate warmup steps (diffusion)"),
        CliOption("--lr-schedule", "lr_schedule", str,
                  "diffusion learning rate after warmup: cosine or constant"),
        CliOption("--min-snr-gamma", "min_snr_gamma", float,
                  "min-SNR loss weighting gamma (0: plain MSE; diffusion)"),
        CliOption("--preview-steps", "preview_steps", int,
                  "DPM-Solver++ steps of the EMA preview samples (diffusion)"),
        CliOption("--distill-from", "distill_from", str,
                  "distil this diffusion model (file, run folder or bundled name such as "
                  "demo-diffusion) into a few-step model: progressive distillation, --steps "
                  "split evenly over the rounds (diffusion)"),
        CliOption("--init-from", "init_from", str,
                  "fine-tune: start from this diffusion model's weights (file, run folder or "
                  "bundled name such as demo-diffusion) and take its architecture; far fewer "
                  "steps than from random weights on similar EM (diffusion)"),
        CliOption("--distill-start-steps", "distill_start_steps", int,
                  "the teacher's DDIM steps in the first distillation round; halved every "
                  "round (diffusion)"),
        CliOption("--distill-steps", "distill_steps", int,
                  "sampling steps of the distilled model, e.g. 4 or 2 (diffusion)"),
        CliOption("--distill-guidance", "distill_guidance", float,
                  "classifier-free guidance of the teacher, baked into the distilled model "
                  "(default: the teacher's own, 3 if it learned the null condition, else 1; "
                  "diffusion)"),
        CliOption("--distill-adversarial", "distill_adversarial", float,
                  "adversarial distillation: weight of a mask-conditioned PatchGAN term on the "
                  "student's image, relative to the distillation loss (e.g. 0.5; 0: none; "
                  "diffusion)"),
    )

    # ----------------------------------------------------------------- settings
    def make_settings(self, values: Mapping[str, Any]) -> DiffusionSettings:
        values = dict(values)
        if "overrides" in values:
            if not isinstance(values["overrides"], Mapping):
                raise ValueError(f"overrides is a mapping of DiffusionSpec fields; got "
                                 f"{values['overrides']!r}.")
            values["overrides"] = _plain(values["overrides"])
        return DiffusionSettings(**values)

    def diffusion_config(self, cfg: TrainConfig) -> DiffusionConfig:
        """The trainer's configuration: the family's settings and the common lr, tile,
        encoding, seed and batch size of ``cfg``."""
        from .training import DiffusionConfig

        own = asdict(cfg.settings)
        own["config"] = own.pop("unet_config")
        own["overrides"] = copy.deepcopy(own["overrides"])
        return DiffusionConfig(**own, lr=cfg.lr, tile=cfg.tile, encoding=cfg.encoding,
                               seed=cfg.seed, batch_size=cfg.batch_size)

    def validate(self, cfg: TrainConfig) -> list[str]:
        problems = []
        s = cfg.settings
        if s.unet_config not in UNET_CONFIGS:
            problems.append(f"unet_config {s.unet_config!r} unknown; use small or base.")
        if s.prediction not in PREDICTIONS:
            problems.append(f"prediction {s.prediction!r} unknown; use v_prediction or epsilon.")
        if s.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule {s.lr_schedule!r} unknown; use cosine or constant.")
        if not 0.0 < s.ema_decay < 1.0:
            problems.append(f"ema_decay must be between 0 and 1; got {s.ema_decay}.")
        for name in ("weight_decay", "warmup_steps", "grad_clip"):
            if getattr(s, name) < 0:
                problems.append(f"{name} must not be negative; got {getattr(s, name)}.")
        if s.min_snr_gamma is not None and s.min_snr_gamma < 0:
            problems.append(f"min_snr_gamma must be positive (0 or None: plain MSE); got "
                            f"{s.min_snr_gamma}.")
        if s.preview_steps < 1:
            problems.append(f"preview_steps must be at least 1; got {s.preview_steps}.")
        if s.distill_adversarial < 0 or not math.isfinite(s.distill_adversarial):
            problems.append(f"distill_adversarial must be 0 or more; got "
                            f"{s.distill_adversarial}.")
        elif s.distill_adversarial and not s.distill_from:
            problems.append("distill_adversarial is a weight of distillation; give the teacher "
                            "with distill_from, or leave it at 0.")
        if s.distill_from and s.init_from:
            problems.append("distill_from and init_from cannot be combined: a distillation "
                            "student already starts from its teacher.")
        if not problems and s.distill_from:
            from .distill import check_teacher

            problems.extend(check_teacher(s.distill_from, cfg))
        elif not problems and s.init_from:
            from .finetune import check_start

            problems.extend(check_start(s.init_from, cfg))
        elif not problems:
            try:
                self.diffusion_config(cfg).spec()
            except (TypeError, ValueError) as exc:  # tile, encoding or overrides that do not fit
                problems.append(f"diffusion: {exc}")
        return problems

    def summary(self, config: Mapping[str, Any]) -> str:
        if config.get("distill_from"):
            return (f"progressive distillation of {config['distill_from']}: "
                    f"{config.get('distill_start_steps')} -> {config.get('distill_steps')} "
                    "DDIM steps")
        if config.get("init_from"):
            return f"fine-tuning of {config['init_from']} ({config.get('prediction')})"
        return f"{config.get('unet_config')} U-Net ({config.get('prediction')})"

    def advice(self, config: Mapping[str, Any], n_labelled: int) -> list[str]:
        from .finetune import start_advice

        note = start_advice(config, n_labelled)
        return [note] if note else []

    # ----------------------------------------------------------------- training
    def build_trainer(self, cfg: TrainConfig, device: torch.device, precision: str,
                      total_steps: int, ddp: bool) -> Any:
        rank = int(os.environ.get("RANK", "0"))
        if cfg.settings.distill_from:
            from ...io import sha256_file
            from .distill import DistillTrainer, read_teacher

            teacher = read_teacher(cfg.settings.distill_from)
            return DistillTrainer(self.diffusion_config(cfg), teacher, device, precision,
                                  total_steps, ddp=ddp, rank=rank,
                                  source=cfg.settings.distill_from,
                                  sha256=teacher.info.sha256 or sha256_file(teacher.info.path))
        from .training import DiffusionTrainer

        if cfg.settings.init_from:
            from .finetune import read_start, start_record

            start = read_start(cfg.settings.init_from)
            trainer = DiffusionTrainer(self.diffusion_config(cfg), device, precision,
                                       total_steps, ddp=ddp, rank=rank, spec=start.spec)
            trainer.start_from(start.network, start_record(cfg.settings.init_from, start))
            return trainer
        return DiffusionTrainer(self.diffusion_config(cfg), device, precision, total_steps,
                                ddp=ddp, rank=rank)

    # ----------------------------------------------------------------- files and synthesis
    def load(self, tensors: dict[str, torch.Tensor], doc: Mapping[str, Any] | None, *,
             file: Path, kind: str, notes: list[str], encoding: str | None,
             dropout: bool | None) -> LoadedModel:
        from ...models.checkpoints.common import CheckpointError
        from ...models.checkpoints.info import LoadedModel, model_info
        from .files import build_from, describe_spec, model_sampling, steps_trained
        from .sampling import default_guidance

        if doc is None or kind != "safetensors":
            raise CheckpointError("a diffusion model is a .safetensors file with a "
                                  "napari-synthgen header; save the model again.")
        network, spec, metadata = build_from(doc, tensors, file)
        if encoding is not None and encoding != spec.encoding:
            raise CheckpointError(f"this diffusion model was trained on {spec.encoding!r} "
                                  f"masks; its encoding cannot be changed to {encoding!r}.")
        details = {
            "architecture": f"{spec.config} U-Net",
            "short": f"diffusion {spec.config} U-Net",
            "widths": list(spec.block_out_channels),
            "schedule": spec.beta_schedule,
            "prediction": spec.prediction_type,
            "train_timesteps": spec.num_train_timesteps,
            "ema": bool(metadata.get("ema", False)),
            "ema_decay": metadata.get("ema_decay"),
            "steps_trained": steps_trained(metadata),
            "samplers": "dpm (DPM-Solver++ 2M), ddim",
        }
        weight, why = default_guidance(metadata)
        details["guidance"] = (f"{weight:g} by default ({why}), any weight with --guidance"
                               if metadata.get("null_condition") else f"1 only ({why})")
        made_for = model_sampling(metadata)
        if made_for is not None:
            teacher = (metadata["distilled"].get("teacher") or {}).get("name") or "?"
            details["distilled"] = (f"{made_for[0]} {made_for[1]} steps, progressive "
                                    f"distillation of {teacher}")
        details["summary"] = " · ".join(str(x) for x in (
            details["short"], spec.prediction_type, f"{spec.beta_schedule} schedule",
            "EMA weights" if details["ema"] else None,
            f"distilled for {made_for[0]} {made_for[1]} steps" if made_for else None) if x)
        info = model_info(
            self.name, file, network, input_nc=spec.mask_channels, output_nc=1,
            encoding=spec.encoding, encoding_source="metadata", tile=spec.tile,
            format="synthgen-diffusion-safetensors", notes=[*notes, describe_spec(spec)],
            metadata=metadata, details=details)
        return LoadedModel(network=network, info=info, spec=spec)

    def synthesizer_class(self) -> type:
        from .sampling import DiffusionSynthesizer

        return DiffusionSynthesizer


DIFFUSION = DiffusionFamily()
