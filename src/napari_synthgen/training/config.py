"""The training configuration: one dataclass, read from YAML/JSON and overridden by the CLI.

Defaults follow the reference pix2pix: U-Net 256 generator with batch norm and dropout,
PatchGAN (``basic``) discriminator, Adam lr 2e-4 and beta1 0.5, L1 weight 100, a constant rate
then a linear decay to zero over the second half, no flips.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

FAMILIES = ("pix2pix",)
GAN_MODES = ("lsgan", "vanilla", "hinge")


class ConfigError(ValueError):
    """A training configuration that cannot run, with what to change."""


@dataclass
class TrainConfig:
    """Everything a training run needs; saved beside its checkpoints."""

    data: list[str] = field(default_factory=list)
    out: str = "runs/pix2pix"
    family: str = "pix2pix"
    val: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    steps: int | None = None
    epochs: int | None = None
    tile: int = 256
    stride: int | None = None
    batch_size: int = 1
    flips: bool = False
    rot90: bool = False
    encoding: str = "rgb"
    netG: str = "unet_256"
    ngf: int = 64
    norm: str = "batch"
    dropout: bool = True
    output_nc: int = 1
    netD: str = "basic"
    ndf: int = 64
    n_layers_D: int = 3
    gan_mode: str = "lsgan"
    lambda_l1: float = 100.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5
    init_type: str = "normal"
    init_gain: float = 0.02
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    checkpoint_every: int = 500
    sample_every: int = 100
    log_every: int = 1
    keep_checkpoints: int = 3
    n_preview: int = 4

    def validate(self) -> TrainConfig:
        """Check values and combinations; raise :class:`ConfigError` saying what to change."""
        from ..encoding import ENCODINGS
        from ..models.pix2pix import DISCRIMINATORS, GENERATORS, NORMS, size_divisor

        problems = []
        if self.family not in FAMILIES:
            problems.append(f"family {self.family!r} is not available; use one of {FAMILIES}.")
        if not self.data:
            problems.append("no training data: give at least one folder (--data DIR).")
        if (self.steps is None) == (self.epochs is None):
            problems.append("give exactly one of steps or epochs (--steps N or --epochs N).")
        for name in ("steps", "epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name} must be at least 1; got {v}.")
        if self.netG not in GENERATORS:
            problems.append(f"netG {self.netG!r} unknown; use one of {', '.join(GENERATORS)}.")
        elif self.tile % size_divisor(self.netG):
            problems.append(f"tile {self.tile} must be a multiple of {size_divisor(self.netG)} "
                            f"for {self.netG}.")
        if self.norm not in NORMS:
            problems.append(f"norm {self.norm!r} unknown; use one of {', '.join(NORMS)}.")
        if self.netD not in DISCRIMINATORS:
            problems.append(f"netD {self.netD!r} unknown; use one of {', '.join(DISCRIMINATORS)}.")
        if self.gan_mode not in GAN_MODES:
            problems.append(f"gan_mode {self.gan_mode!r} unknown; use one of {GAN_MODES}.")
        if self.encoding not in ENCODINGS:
            problems.append(f"encoding {self.encoding!r} unknown; use one of {ENCODINGS}.")
        if self.output_nc not in (1, 3):
            problems.append(f"output_nc must be 1 or 3; got {self.output_nc}.")
        for name in ("batch_size", "ngf", "ndf", "tile", "checkpoint_every", "sample_every",
                     "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1; got {getattr(self, name)}.")
        if not 0.0 <= self.decay_start <= 1.0:
            problems.append(
                f"decay_start is a fraction of the run in [0, 1]; got {self.decay_start}.")
        if self.lr <= 0:
            problems.append(f"lr must be positive; got {self.lr}.")
        if problems:
            raise ConfigError(
                "the training configuration has problems:\n  " + "\n  ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the effective configuration as YAML (atomically)."""
        from ..io import atomic_path

        dest = Path(path)
        with atomic_path(dest) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return dest

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}; known keys are "
                              f"{', '.join(sorted(known))}.")
        values = dict(values)
        for key in ("data", "val"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a YAML or JSON configuration file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            values = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: cannot read the configuration ({exc}).") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: a configuration file holds a mapping of keys to values.")
        return cls.from_dict(values)
