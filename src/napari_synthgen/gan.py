"""The adversarial parts both families train with: the reference PatchGAN and PixelGAN
discriminators (key names and shapes of junyanz/pytorch-CycleGAN-and-pix2pix), their norms and
weight initialisation, and the GAN losses.

pix2pix trains its generator against them; diffusion distillation (``distill_adversarial``)
judges a one-step student with the same PatchGAN. They live here, below both family folders,
so that neither family reaches into the other's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init

NORMS: tuple[str, ...] = ("batch", "instance", "none")
DISCRIMINATORS: tuple[str, ...] = ("basic", "n_layers", "pixel")
INIT_TYPES: tuple[str, ...] = ("normal", "xavier", "kaiming", "orthogonal")

NormLayer = Callable[[int], nn.Module]

_CONV_TYPES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear,
)


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}.")


class Identity(nn.Module):
    """A parameterless pass-through that fills the norm positions when norm is 'none'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _identity_norm(channels: int) -> nn.Module:
    return Identity()


def norm_layer_factory(norm: str) -> NormLayer:
    """A callable ``channels -> norm module`` for ``norm`` ('batch', 'instance' or 'none').

    Matches the newest reference: InstanceNorm has no affine parameters and no running stats.
    """
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return _identity_norm


def convs_take_bias(norm_layer: NormLayer) -> bool:
    """Whether convs before ``norm_layer`` get a bias: only for InstanceNorm, as in the reference.

    The reference compares the layer class with ``nn.InstanceNorm2d``, so 'none' gets no bias.
    """
    target = norm_layer.func if isinstance(norm_layer, functools.partial) else norm_layer
    return target is nn.InstanceNorm2d


class NLayerDiscriminator(nn.Module):
    """The PatchGAN discriminator: ``n_layers`` stride-2 convs, then two stride-1 convs."""

    def __init__(
        self,
        input_nc: int,
        ndf: int = 64,
        n_layers: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        bias = convs_take_bias(norm_layer)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """The 1x1 PixelGAN discriminator: a real/fake score per pixel."""

    def __init__(self, input_nc: int, ndf: int = 64, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        bias = convs_take_bias(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init_weight(weight: torch.Tensor, init_type: str, gain: float) -> None:
    if init_type == "normal":
        init.normal_(weight, 0.0, gain)
    elif init_type == "xavier":
        init.xavier_normal_(weight, gain=gain)
    elif init_type == "kaiming":
        init.kaiming_normal_(weight, a=0, mode="fan_in")
    else:
        init.orthogonal_(weight, gain=gain)


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise like the reference: conv/linear weights by ``init_type``, biases 0,
    BatchNorm scales N(1, gain) and offsets 0. Modules are visited in the same order."""
    check_choice("init type", init_type, INIT_TYPES)

    def visit(module: nn.Module) -> None:
        if isinstance(module, _CONV_TYPES) and module.weight is not None:
            _init_weight(module.weight, init_type, gain)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d) and module.weight is not None:
            init.normal_(module.weight, 1.0, gain)
            init.zeros_(module.bias)

    with torch.no_grad():
        net.apply(visit)
    return net


def build_discriminator(
    input_nc: int,
    ndf: int = 64,
    netD: str = "basic",
    n_layers: int = 3,
    norm: str = "batch",
    *,
    init_type: str | None = "normal",
    init_gain: float = 0.02,
) -> nn.Module:
    """Build a reference discriminator ('basic' = 3-layer PatchGAN, 'n_layers', 'pixel')."""
    check_choice("discriminator (netD)", netD, DISCRIMINATORS)
    check_positive_int("input_nc", input_nc)
    check_positive_int("ndf", ndf)
    check_positive_int("n_layers", n_layers)
    norm_layer = norm_layer_factory(norm)
    if netD == "pixel":
        net: nn.Module = PixelDiscriminator(input_nc, ndf, norm_layer=norm_layer)
    else:
        layers = 3 if netD == "basic" else n_layers
        net = NLayerDiscriminator(input_nc, ndf, layers, norm_layer=norm_layer)
    if init_type is not None:
        init_weights(net, init_type, init_gain)
    return net


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
