"""pix2pix as a model family: a U-Net/ResNet generator trained against a PatchGAN (+ L1).

The folder holds the family's parts: ``networks`` (generators and discriminators, with the
reference implementation's keys), ``training`` (the GAN step), ``files`` (our format and
reference checkpoints, with ``reference``'s detection) and ``synthesizer``. This module is
the family's entry, light to import (no torch): it tells the shared machinery where the parts
are, and :mod:`napari_synthgen.registry` lists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..base import CliOption, Family

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from ...models.checkpoints.info import LoadedModel
    from ...training.config import TrainConfig

GAN_MODES = ("lsgan", "vanilla", "hinge")
# the names ``networks`` builds, repeated here so that this entry stays light (no torch);
# tests/test_families.py keeps them in step with networks.py
GENERATOR_NAMES = ("unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks")
NORM_NAMES = ("batch", "instance", "none")
DISCRIMINATOR_NAMES = ("basic", "n_layers", "pixel")
INIT_NAMES = ("normal", "xavier", "kaiming", "orthogonal")


@dataclass
class Pix2PixSettings:
    """pix2pix training settings; defaults follow the reference implementation."""

    netG: str = field(default="unet_256", metadata={"choices": GENERATOR_NAMES})
    ngf: int = 64
    norm: str = field(default="batch", metadata={"choices": NORM_NAMES})
    dropout: bool = True
    output_nc: int = 1
    netD: str = field(default="basic", metadata={"choices": DISCRIMINATOR_NAMES})
    ndf: int = 64
    n_layers_D: int = 3
    gan_mode: str = field(default="lsgan", metadata={"choices": GAN_MODES})
    lambda_l1: float = 100.0
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5
    init_type: str = field(default="normal", metadata={"choices": INIT_NAMES})
    init_gain: float = 0.02
    #: weight of the unconditional PatchGAN's loss on G, trained on every real tile, the
    #: ``--unlabeled`` images' too (used only when a run has tiles without a mask; 10 measured
    #: best of 1 and 10 on class-0 texture, docs/unlabeled.md)
    lambda_unlabeled: float = 10.0
    #: channels of Gaussian noise beside the mask (0: the reference generator, none). Without
    #: noise a region the mask leaves uniform repeats from tile to tile (docs/unlabeled.md)
    noise_nc: int = 0
    #: pixels per noise value (1: every pixel its own; s > 1: smooth noise, one value every s
    #: pixels, interpolated; families/pix2pix/noise.py)
    noise_scale: int = 1


class Pix2PixFamily(Family):
    """Mask -> image with a U-Net/ResNet generator trained against a PatchGAN (+ L1)."""

    name = "pix2pix"
    settings = Pix2PixSettings
    arch_keys = ("netG", "ngf", "norm", "dropout", "output_nc", "netD", "ndf", "n_layers_D",
                 "noise_nc", "noise_scale")
    loss_names = ("G_GAN", "G_L1", "D_real", "D_fake")
    defaults: ClassVar[Mapping[str, Any]] = {"out": "runs/pix2pix"}
    # measured 1.0 KB per pixel for unet_256 ngf 64 in fp32 at tile 256, with 2x margin
    train_bytes_per_px = 2048
    # a tile without a mask trains an unconditional discriminator, never L1 (see training.py)
    learns_unlabeled = True
    cli_options = (
        CliOption("--netG", "netG", str,
                  "pix2pix generator: unet_256, unet_128, resnet_9blocks, resnet_6blocks"),
        CliOption("--ngf", "ngf", int, "pix2pix generator width"),
        CliOption("--norm", "norm", str, "pix2pix norm: batch, instance or none"),
        CliOption("--output-nc", "output_nc", int,
                  "pix2pix generator output channels (1, or 3 like the reference)"),
        CliOption("--netD", "netD", str, "pix2pix discriminator: basic, n_layers, pixel"),
        CliOption("--ndf", "ndf", int, "pix2pix discriminator width"),
        CliOption("--n-layers-D", "n_layers_D", int, "layers of an n_layers discriminator"),
        CliOption("--gan-mode", "gan_mode", str, "pix2pix GAN loss: lsgan, vanilla or hinge"),
        CliOption("--lambda-l1", "lambda_l1", float, "pix2pix weight of the L1 loss"),
        CliOption("--lambda-unlabeled", "lambda_unlabeled", float,
                  "pix2pix weight of the unconditional discriminator that learns the texture "
                  "of every image, the --unlabeled ones too"),
        CliOption("--noise-nc", "noise_nc", int,
                  "pix2pix: channels of Gaussian noise beside the mask (default 0: none, the "
                  "reference generator); with noise, tissue the mask leaves uniform does not "
                  "repeat from tile to tile, and each seed draws it anew"),
        CliOption("--noise-scale", "noise_scale", int,
                  "pix2pix: pixels per noise value (default 1: every pixel its own); e.g. 8 "
                  "draws one value every 8 px, interpolated: the tissue changes smoothly "
                  "instead of carrying a pixel grain (needs --noise-nc)"),
        CliOption("--beta1", "beta1", float, "Adam beta1 (pix2pix)"),
        CliOption("--decay-start", "decay_start", float,
                  "fraction of the run before the rate decays (pix2pix)"),
        CliOption("--no-dropout", "dropout", help="pix2pix generator without dropout",
                  value=False),
    )
    # the key order of config.yaml files written before families existed (newer keys
    # follow, so that older files keep their layout)
    config_order = (
        "data", "out", "family", "val", "val_fraction", "steps", "epochs", "tile", "stride",
        "batch_size", "flips", "rot90", "encoding", "netG", "ngf", "norm", "dropout",
        "output_nc", "netD", "ndf", "n_layers_D", "gan_mode", "lambda_l1", "lr", "beta1",
        "beta2", "decay_start", "init_type", "init_gain", "seed", "device", "precision",
        "channels_last", "checkpoint_every", "sample_every", "log_every", "keep_checkpoints",
        "n_preview", "unlabel_fraction", "unlabeled", "unlabeled_share", "cond_dropout",
        "lambda_unlabeled", "noise_nc", "read_as", "boundary_width", "noise_scale",
        "object_share",
    )

    def validate(self, cfg: TrainConfig) -> list[str]:
        from .networks import DISCRIMINATORS, GENERATORS, NORMS, size_divisor

        problems = []
        if cfg.netG not in GENERATORS:
            problems.append(f"netG {cfg.netG!r} unknown; use one of {', '.join(GENERATORS)}.")
        elif cfg.tile % size_divisor(cfg.netG):
            problems.append(f"tile {cfg.tile} must be a multiple of {size_divisor(cfg.netG)} "
                            f"for {cfg.netG}.")
        if cfg.norm not in NORMS:
            problems.append(f"norm {cfg.norm!r} unknown; use one of {', '.join(NORMS)}.")
        if cfg.netD not in DISCRIMINATORS:
            problems.append(f"netD {cfg.netD!r} unknown; use one of {', '.join(DISCRIMINATORS)}.")
        if cfg.gan_mode not in GAN_MODES:
            problems.append(f"gan_mode {cfg.gan_mode!r} unknown; use one of {GAN_MODES}.")
        if cfg.output_nc not in (1, 3):
            problems.append(f"output_nc must be 1 or 3; got {cfg.output_nc}.")
        if cfg.noise_nc < 0:
            problems.append(f"noise_nc must be >= 0; got {cfg.noise_nc}.")
        if cfg.noise_scale < 1:
            problems.append(f"noise_scale must be >= 1; got {cfg.noise_scale}.")
        elif cfg.noise_scale > 1 and cfg.noise_nc == 0:
            problems.append(f"noise_scale {cfg.noise_scale} sets the scale of noise channels, "
                            "but noise_nc is 0 (no noise); add noise_nc 1 or leave "
                            "noise_scale at 1.")
        for name in ("ngf", "ndf", "n_layers_D"):
            if getattr(cfg, name) < 1:
                problems.append(f"{name} must be at least 1; got {getattr(cfg, name)}.")
        for name in ("lambda_l1", "lambda_unlabeled"):
            if getattr(cfg, name) < 0:
                problems.append(f"{name} must be >= 0; got {getattr(cfg, name)}.")
        if not 0.0 <= cfg.beta1 < 1.0:  # else a late "unexpected error" from Adam
            problems.append(f"beta1 must be in [0, 1); got {cfg.beta1}.")
        if not 0.0 <= cfg.decay_start <= 1.0:
            problems.append(
                f"decay_start is a fraction of the run in [0, 1]; got {cfg.decay_start}.")
        return problems

    def summary(self, config: Mapping[str, Any]) -> str:
        return f"{config.get('netG')} (ngf {config.get('ngf')})"

    def build_trainer(self, cfg: TrainConfig, device: torch.device, precision: str,
                      total_steps: int, ddp: bool) -> Any:
        from .training import Pix2PixModel

        return Pix2PixModel(cfg, device, precision, total_steps, ddp=ddp)

    def load(self, tensors: dict[str, torch.Tensor], doc: Mapping[str, Any] | None, *,
             file: Path, kind: str, notes: list[str], encoding: str | None,
             dropout: bool | None) -> LoadedModel:
        from .files import load_pix2pix

        return load_pix2pix(tensors, doc, file=file, kind=kind, notes=notes,
                            encoding=encoding, dropout=dropout)

    def synthesizer_class(self) -> type:
        from .synthesizer import Pix2PixSynthesizer

        return Pix2PixSynthesizer


PIX2PIX = Pix2PixFamily()
