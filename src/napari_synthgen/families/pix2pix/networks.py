"""pix2pix generators whose state dicts match the reference implementation; its discriminators
(``napari_synthgen.gan``, shared with diffusion distillation) are importable from here too.

Every key name and shape equals those of junyanz/pytorch-CycleGAN-and-pix2pix
(``models/networks.py``), so a reference ``latest_net_G.pth`` loads with ``strict=True``.
The order of layers inside each ``nn.Sequential`` is part of that contract: it fixes the
numeric indices in the keys, so it must not be changed, even for parameterless layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...gan import (  # noqa: F401  (the discriminators are part of this module's reference API)
    DISCRIMINATORS,
    INIT_TYPES,
    NORMS,
    Identity,
    NLayerDiscriminator,
    NormLayer,
    PixelDiscriminator,
    build_discriminator,
    check_choice,
    check_positive_int,
    convs_take_bias,
    init_weights,
    norm_layer_factory,
)

GENERATORS: tuple[str, ...] = ("unet_128", "unet_256", "resnet_6blocks", "resnet_9blocks")
PADDINGS: tuple[str, ...] = ("reflect", "replicate", "zero")

#: Number of downsamplings of each U-Net (the bottleneck is 1x1 for the nominal size).
UNET_DOWNS: dict[str, int] = {"unet_128": 7, "unet_256": 8}
#: Number of residual blocks of each ResNet generator.
RESNET_BLOCKS: dict[str, int] = {"resnet_6blocks": 6, "resnet_9blocks": 9}


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to rebuild a pix2pix generator; stored with saved models."""

    netG: str
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    norm: str = "batch"
    dropout: bool = True
    #: channels of Gaussian noise the network takes after the ``input_nc`` mask channels (0:
    #: none, the reference architecture). Without it a region the mask leaves uniform is drawn
    #: as the same pattern in every tile (scripts/uniform_regions.py, docs/unlabeled.md).
    noise_nc: int = 0
    #: pixels per noise value: 1 draws each pixel's own; s > 1 one value every s pixels,
    #: interpolated (smooth changes of tissue without the grain full-resolution noise gives;
    #: families/pix2pix/noise.py)
    noise_scale: int = 1

    def __post_init__(self) -> None:
        check_choice("generator (netG)", self.netG, GENERATORS)
        check_choice("norm", self.norm, NORMS)
        for name in ("input_nc", "output_nc", "ngf"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.dropout, bool):
            raise ValueError(f"dropout must be True or False, got {self.dropout!r}.")
        if isinstance(self.noise_nc, bool) or not isinstance(self.noise_nc, int) \
                or self.noise_nc < 0:
            raise ValueError(f"noise_nc must be a whole number >= 0, got {self.noise_nc!r}.")
        if isinstance(self.noise_scale, bool) or not isinstance(self.noise_scale, int) \
                or self.noise_scale < 1:
            raise ValueError(
                f"noise_scale must be a whole number >= 1, got {self.noise_scale!r}.")

    @property
    def network_nc(self) -> int:
        """Input channels of the network: the mask's, then the noise's."""
        return self.input_nc + self.noise_nc


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down, the inner levels, up; inner levels concatenate input and output."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if submodule is None and not innermost:
            raise ValueError("only the innermost U-Net level has no submodule.")
        self.outermost = outermost
        bias = convs_take_bias(norm_layer)
        down_in = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(down_in, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            layers = self._outermost(downconv, submodule, inner_nc, outer_nc)
        elif innermost:
            layers = self._innermost(downconv, inner_nc, outer_nc, norm_layer, bias)
        else:
            layers = self._middle(downconv, submodule, inner_nc, outer_nc, norm_layer, bias)
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    @staticmethod
    def _outermost(down: nn.Module, sub: nn.Module, inner_nc: int, outer_nc: int) -> list:
        up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
        return [down, sub, nn.ReLU(True), up, nn.Tanh()]

    @staticmethod
    def _innermost(
        down: nn.Module, inner_nc: int, outer_nc: int, norm_layer: NormLayer, bias: bool
    ) -> list:
        up = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        return [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm_layer(outer_nc)]

    @staticmethod
    def _middle(
        down: nn.Module,
        sub: nn.Module,
        inner_nc: int,
        outer_nc: int,
        norm_layer: NormLayer,
        bias: bool,
    ) -> list:
        up = nn.ConvTranspose2d(
            inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias
        )
        return [
            nn.LeakyReLU(0.2, True), down, norm_layer(inner_nc), sub,
            nn.ReLU(True), up, norm_layer(outer_nc),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The pix2pix U-Net: ``num_downs`` halvings, so sides must be multiples of 2**num_downs."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        norm_layer: NormLayer = nn.BatchNorm2d,
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a pix2pix U-Net needs at least 5 downsamplings, got {num_downs}.")
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm_layer=norm_layer)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer, use_dropout=use_dropout
            )
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(
                ngf * mult, ngf * mult * 2, submodule=block, norm_layer=norm_layer
            )
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
            norm_layer=norm_layer,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _padded_conv3(dim: int, padding_type: str, bias: bool) -> list[nn.Module]:
    """A 3x3 same-size conv, with explicit padding layers as the reference uses them."""
    check_choice("padding type", padding_type, PADDINGS)
    if padding_type == "zero":
        return [nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=bias)]
    pad = nn.ReflectionPad2d(1) if padding_type == "reflect" else nn.ReplicationPad2d(1)
    return [pad, nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias)]


class ResnetBlock(nn.Module):
    """A residual block: x + (conv, norm, relu, [dropout], conv, norm)(x)."""

    def __init__(
        self,
        dim: int,
        padding_type: str,
        norm_layer: NormLayer,
        use_dropout: bool,
        use_bias: bool,
    ) -> None:
        super().__init__()
        layers = [*_padded_conv3(dim, padding_type, use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [*_padded_conv3(dim, padding_type, use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The ResNet generator: 2 stride-2 downsamplings, ``n_blocks`` residual blocks, 2 up."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm_layer: NormLayer = nn.BatchNorm2d,
        use_dropout: bool = False,
        n_blocks: int = 6,
        padding_type: str = "reflect",
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}.")
        bias = convs_take_bias(norm_layer)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        channels = ngf
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                norm_layer(channels * 2),
                nn.ReLU(True),
            ]
            channels *= 2
        layers += [
            ResnetBlock(channels, padding_type, norm_layer, use_dropout, bias)
            for _ in range(n_blocks)
        ]
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(
                    channels, channels // 2, kernel_size=3, stride=2, padding=1,
                    output_padding=1, bias=bias,
                ),
                norm_layer(channels // 2),
                nn.ReLU(True),
            ]
            channels //= 2
        layers += [
            nn.ReflectionPad2d(3), nn.Conv2d(channels, output_nc, kernel_size=7), nn.Tanh()
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_generator(
    spec: GeneratorSpec, *, init_type: str | None = "normal", init_gain: float = 0.02
) -> nn.Module:
    """Build the generator described by ``spec`` (attached as ``net.spec``).

    ``init_type=None`` skips the reference initialisation, e.g. before loading weights.
    """
    norm_layer = norm_layer_factory(spec.norm)
    if spec.netG in UNET_DOWNS:
        net: nn.Module = UnetGenerator(
            spec.network_nc, spec.output_nc, UNET_DOWNS[spec.netG], spec.ngf,
            norm_layer=norm_layer, use_dropout=spec.dropout,
        )
    else:
        net = ResnetGenerator(
            spec.network_nc, spec.output_nc, spec.ngf, norm_layer=norm_layer,
            use_dropout=spec.dropout, n_blocks=RESNET_BLOCKS[spec.netG],
        )
    if init_type is not None:
        init_weights(net, init_type, init_gain)
    net.spec = spec
    return net


def size_divisor(netG: str) -> int:
    """The multiple that input height and width must be for ``netG`` to run."""
    check_choice("generator (netG)", netG, GENERATORS)
    if netG in UNET_DOWNS:
        return 2 ** UNET_DOWNS[netG]
    return 4
