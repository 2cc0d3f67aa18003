"""Mask-conditioned diffusion: the network spec, its configurations and the diffusers U-Net.

The denoiser is a diffusers ``UNet2DModel`` whose input is the noisy image (1 channel)
concatenated with the encoded mask (``onehot``: one channel per class in [-1, 1]), so the mask
conditions every denoising step. Betas follow ``squaredcos_cap_v2`` (the cosine schedule) and
the network predicts ``v`` (default) or ``epsilon``. Models are built from configs only; nothing
is ever downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ..._triton_guard import keep_triton_out
from ...encoding import n_channels

PREDICTION_TYPES: tuple[str, ...] = ("v_prediction", "epsilon")
SAMPLERS: tuple[str, ...] = ("dpm", "ddim")
FAMILY = "diffusion"


class DiffusionSpecError(ValueError):
    """A diffusion spec that cannot build a network, with what to change."""


@dataclass(frozen=True)
class DiffusionSpec:
    """Everything that fixes the denoiser's architecture and noise schedule.

    ``tile`` is the training crop and the default sampling tile. ``attention`` says, per
    resolution level (finest first), whether that level's blocks have self-attention.
    """

    config: str = "small"
    tile: int = 256
    encoding: str = "onehot"
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False, False, True)
    norm_num_groups: int = 8
    attention_head_dim: int = 32
    prediction_type: str = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        # JSON round trips give lists; keep the dataclass hashable and comparable
        widths = tuple(int(c) for c in self.block_out_channels)
        object.__setattr__(self, "block_out_channels", widths)
        object.__setattr__(self, "attention", tuple(bool(a) for a in self.attention))
        check_spec(self)

    @property
    def mask_channels(self) -> int:
        return n_channels(self.encoding)

    @property
    def in_channels(self) -> int:
        """Noisy image (1) plus the encoded mask."""
        return 1 + self.mask_channels

    @property
    def divisor(self) -> int:
        """Tiles must be a multiple of this (one halving per level below the first)."""
        return 2 ** (len(self.block_out_channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        d["attention"] = list(self.attention)
        return d

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DiffusionSpec:
        """The spec of a stored dictionary; unknown or missing entries are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in doc if k not in names)
        if unknown:
            raise DiffusionSpecError(
                f"the diffusion spec has unknown entries {', '.join(unknown)}.")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise DiffusionSpecError(f"the diffusion spec is incomplete or wrong: {exc}.") from None


def check_spec(spec: DiffusionSpec) -> None:
    """Raise :class:`DiffusionSpecError` saying what is wrong with ``spec``."""
    if spec.prediction_type not in PREDICTION_TYPES:
        raise DiffusionSpecError(f"prediction_type {spec.prediction_type!r} is unknown; use "
                                 f"{' or '.join(PREDICTION_TYPES)}.")
    if len(spec.attention) != len(spec.block_out_channels):
        raise DiffusionSpecError(
            f"attention has {len(spec.attention)} entries but there are "
            f"{len(spec.block_out_channels)} levels (block_out_channels); give one per level.")
    if spec.layers_per_block < 1 or not spec.block_out_channels:
        raise DiffusionSpecError("the U-Net needs at least one level and one layer per block.")
    bad = [c for c in spec.block_out_channels if c % spec.norm_num_groups]
    if bad:
        raise DiffusionSpecError(f"block widths {bad} are not multiples of norm_num_groups "
                                 f"{spec.norm_num_groups}.")
    heads = [c for c, a in zip(spec.block_out_channels, spec.attention, strict=True)
             if a and c % spec.attention_head_dim]
    if heads:
        raise DiffusionSpecError(f"levels with attention have widths {heads}, which are not "
                                 f"multiples of attention_head_dim {spec.attention_head_dim}.")
    if spec.tile < spec.divisor or spec.tile % spec.divisor:
        raise DiffusionSpecError(f"tile {spec.tile} must be a multiple of {spec.divisor} "
                                 f"for {len(spec.block_out_channels)} levels.")
    n_channels(spec.encoding)  # raises for an unknown encoding


#: ``small`` trains and samples on a laptop CPU (a 256 x 256 sample, DPM-Solver++ 20 steps:
#: about 3 s in bf16 and 9 s in fp32 on 2 EPYC cores); ``base`` is for a GPU.
CONFIGS: dict[str, DiffusionSpec] = {
    "small": DiffusionSpec(),
    "base": DiffusionSpec(
        config="base", tile=256, block_out_channels=(64, 128, 256, 256), layers_per_block=2,
        attention=(False, False, True, True), norm_num_groups=32, attention_head_dim=64,
    ),
}


def make_spec(config: str = "small", **overrides: Any) -> DiffusionSpec:
    """A named configuration, with some fields changed (``tile``, ``encoding``...)."""
    if config not in CONFIGS:
        raise DiffusionSpecError(f"unknown diffusion config {config!r}; use "
                                 f"{' or '.join(CONFIGS)}.")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(CONFIGS[config], **overrides)


def unet_config(spec: DiffusionSpec) -> dict[str, Any]:
    """The ``UNet2DModel`` constructor arguments of a spec (stored in our files)."""
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in spec.attention]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(spec.attention)]
    return {
        "sample_size": spec.tile,
        "in_channels": spec.in_channels,
        "out_channels": 1,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": list(spec.block_out_channels),
        "layers_per_block": spec.layers_per_block,
        "norm_num_groups": spec.norm_num_groups,
        "attention_head_dim": spec.attention_head_dim,
        # mid-block attention only where the lowest level has attention
        "add_attention": bool(spec.attention[-1]),
    }


def build_unet(spec: DiffusionSpec, config: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised diffusers ``UNet2DModel`` for ``spec`` (or a stored config)."""
    keep_triton_out()
    from diffusers import UNet2DModel

    return UNet2DModel(**(config if config is not None else unet_config(spec)))


def scheduler_config(spec: DiffusionSpec) -> dict[str, Any]:
    """The noise schedule shared by training and both samplers."""
    return {
        "num_train_timesteps": spec.num_train_timesteps,
        "beta_schedule": spec.beta_schedule,
        "prediction_type": spec.prediction_type,
    }


def make_scheduler(spec: DiffusionSpec, sampler: str = "dpm") -> Any:
    """A diffusers sampler: ``dpm`` (DPM-Solver++ 2M, deterministic) or ``ddim`` (eta 0)."""
    keep_triton_out()
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    cfg = scheduler_config(spec)
    if sampler == "dpm":
        return DPMSolverMultistepScheduler(**cfg, algorithm_type="dpmsolver++", solver_order=2,
                                           lower_order_final=True, timestep_spacing="trailing")
    if sampler == "ddim":
        return DDIMScheduler(**cfg, clip_sample=False, set_alpha_to_one=True,
                             timestep_spacing="trailing")
    raise DiffusionSpecError(f"unknown sampler {sampler!r}; use {' or '.join(SAMPLERS)}.")


def training_scheduler(spec: DiffusionSpec) -> Any:
    """The DDPM schedule that adds noise during training."""
    keep_triton_out()
    from diffusers import DDPMScheduler

    return DDPMScheduler(**scheduler_config(spec), clip_sample=False)


def count_parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def cast_network(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``net.to(dtype)`` without diffusers' warning about modules kept in float32 (it has none)."""
    log = logging.getLogger("diffusers.models.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return net.to(dtype=dtype)
    finally:
        log.setLevel(level)
