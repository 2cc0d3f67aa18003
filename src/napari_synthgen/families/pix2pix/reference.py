"""Recognising a reference pix2pix generator from the key names and shapes of its state dict."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ...models.checkpoints.common import (
    _LIST_LIMIT,
    _NBT,
    _STATS,
    REFERENCE_NAME,
    CheckpointError,
)
from .networks import (
    GENERATORS,
    NORMS,
    RESNET_BLOCKS,
    UNET_DOWNS,
    GeneratorSpec,
    NLayerDiscriminator,
    PixelDiscriminator,
    build_generator,
    norm_layer_factory,
)


@dataclass
class _Resolved:
    """A state dict matched to a generator spec, ready to be loaded."""

    spec: GeneratorSpec
    dropout_known: bool
    state_dict: dict[str, torch.Tensor]
    format: str
    notes: list[str]
    encoding: str | None = None
    tile: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _candidates() -> list[tuple[str, str, bool]]:
    """Every distinguishable (netG, norm, dropout); U-Net dropout leaves no keys, so True."""
    out = []
    for netG in GENERATORS:
        for norm in NORMS:
            for dropout in (True,) if netG in UNET_DOWNS else (False, True):
                out.append((netG, norm, dropout))
    return out


@functools.lru_cache(maxsize=64)
def _expected_shapes(spec: GeneratorSpec) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of ``spec``, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = build_generator(spec, init_type=None)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _template(netG: str, norm: str, dropout: bool) -> frozenset[str]:
    """Key names of a generator; they do not depend on widths or channel counts."""
    shapes = _expected_shapes(GeneratorSpec(netG, 1, 1, 1, norm, dropout))
    return frozenset(k for k in shapes if not k.endswith(_NBT))


@functools.lru_cache(maxsize=1)
def _discriminator_templates() -> dict[frozenset[str], str]:
    out = {}
    for norm in NORMS:
        layer = norm_layer_factory(norm)
        with torch.device("meta"):
            nets = {f"netD 'n_layers', n_layers {n}": NLayerDiscriminator(1, 1, n, layer)
                    for n in range(1, 7)}
            nets["netD 'basic'"] = NLayerDiscriminator(1, 1, 3, layer)
            nets["netD 'pixel'"] = PixelDiscriminator(1, 1, layer)
        for name, net in nets.items():
            out[frozenset(k for k in net.state_dict() if not k.endswith(_NBT))] = name
    return out


def _names(sd: Mapping[str, torch.Tensor]) -> frozenset[str]:
    return frozenset(k for k in sd if not k.endswith(_NBT))


def _match(names: frozenset[str], norms: tuple[str, ...] = NORMS) -> tuple[str, str, bool] | None:
    for netG, norm, dropout in _candidates():
        if norm in norms and _template(netG, norm, dropout) == names:
            return netG, norm, dropout
    return None


def _stale_instance_keys(sd: Mapping[str, torch.Tensor]) -> set[str]:
    """Keys of norm layers that hold only running statistics (old InstanceNorm files)."""
    leaves_of: dict[str, set[str]] = {}
    for key in sd:
        module, _, leaf = key.rpartition(".")
        leaves_of.setdefault(module, set()).add(leaf)
    stale: set[str] = set()
    for module, leaves in leaves_of.items():
        if "running_mean" in leaves and leaves <= set(_STATS):
            stale |= {f"{module}.{leaf}" for leaf in leaves}
    return stale


def _listing(keys: set[str] | frozenset[str]) -> str:
    shown = sorted(keys)[:_LIST_LIMIT]
    more = f", ... ({len(keys) - len(shown)} more)" if len(keys) > len(shown) else ""
    return (", ".join(shown) + more) if shown else "none"


def _closest(names: frozenset[str]) -> tuple[tuple[str, str, bool], frozenset[str]]:
    def score(c: tuple[str, str, bool]) -> tuple[int, int]:
        t = _template(*c)
        return len(names & t), -len(names ^ t)

    best = max(_candidates(), key=score)
    return best, _template(*best)


def _no_generator_error(sd: Mapping[str, torch.Tensor]) -> CheckpointError:
    """Why ``sd`` is no pix2pix generator: the closest one, missing and unexpected keys."""
    names = _names(sd)
    (netG, norm, _), template = _closest(names)
    common = len(names & template)
    lines = [f"the tensors do not form a pix2pix generator ({', '.join(GENERATORS)})."]
    disc = _discriminator_templates().get(names)
    if disc:
        lines.append(
            f"They look like a PatchGAN discriminator ({disc}). napari-synthgen needs the "
            f"generator, which pix2pix saves beside it as {REFERENCE_NAME}."
        )
    if common:
        lines.append(
            f"The closest generator is {netG} with norm '{norm}' "
            f"({common} of its {len(template)} keys are present)."
        )
    else:
        lines.append(f"No key matches any pix2pix generator (closest: {netG}).")
    lines.append(f"Missing keys: {_listing(template - names)}.")
    lines.append(f"Unexpected keys: {_listing(names - template)}.")
    return CheckpointError("\n".join(lines))


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    shape = tuple(sd[key].shape)
    if len(shape) != 4:
        raise CheckpointError(f"tensor {key} has shape {shape}; a convolution weight is 4-D.")
    return shape


def _channels_and_width(sd: Mapping[str, torch.Tensor], netG: str) -> tuple[int, int, int]:
    """(input_nc, output_nc, ngf) from the first and last convolution of ``netG``."""
    if netG in UNET_DOWNS:
        first, last = _shape(sd, "model.model.0.weight"), _shape(sd, "model.model.3.weight")
        return first[1], last[1], first[0]  # ConvTranspose2d weights are (in, out, kh, kw)
    first = _shape(sd, "model.1.weight")
    last = _shape(sd, f"model.{17 + RESNET_BLOCKS[netG]}.weight")
    return first[1], last[0], first[0]


def describe_spec(spec: GeneratorSpec) -> str:
    """A short human description such as 'unet_256, ngf 64, norm batch, 3 -> 3 channels'."""
    noise = f" + {spec.noise_nc} noise" if spec.noise_nc else ""
    if spec.noise_nc and spec.noise_scale > 1:
        noise += f" every {spec.noise_scale} px"
    return (
        f"{spec.netG}, ngf {spec.ngf}, norm {spec.norm}, "
        f"{spec.input_nc}{noise} -> {spec.output_nc} channels"
    )


def _check_fit(sd: Mapping[str, torch.Tensor], spec: GeneratorSpec) -> None:
    """Raise unless ``sd`` loads into ``spec`` with strict key and shape matching."""
    expected = _expected_shapes(spec)
    missing = {k for k in expected if k not in sd and not k.endswith(_NBT)}
    unexpected = {k for k in sd if k not in expected}
    if missing or unexpected:
        raise CheckpointError(
            f"the keys do not fit {describe_spec(spec)}. Missing keys: {_listing(missing)}. "
            f"Unexpected keys: {_listing(unexpected)}."
        )
    for key, shape in expected.items():
        if key in sd and tuple(sd[key].shape) != shape:
            raise CheckpointError(
                f"tensor {key} has shape {tuple(sd[key].shape)}, but {describe_spec(spec)} "
                f"needs {shape}. The file is damaged or comes from a modified architecture."
            )


def _detection_note(spec: GeneratorSpec) -> str:
    if spec.netG in UNET_DOWNS:
        how = f"{UNET_DOWNS[spec.netG]} nested U-Net levels"
    else:
        how = f"{RESNET_BLOCKS[spec.netG]} residual blocks"
    return f"detected {describe_spec(spec)} (from {how} in the key names)"


def _dropout_note(spec: GeneratorSpec) -> str:
    if spec.netG in UNET_DOWNS:
        return (
            "dropout cannot be told from a U-Net checkpoint: it has no parameters; built with "
            "dropout (the pix2pix default), which only matters in training mode"
        )
    indices = "conv_block.1/.6" if spec.dropout else "conv_block.1/.5"
    return f"dropout {'on' if spec.dropout else 'off'} (residual keys {indices})"


def _detect(sd: dict[str, torch.Tensor]) -> _Resolved:
    """Match a bare state dict to a generator; drops stale InstanceNorm statistics."""
    notes: list[str] = []
    found = _match(_names(sd))
    if found is None:
        stale = _stale_instance_keys(sd)
        found = _match(_names(sd) - stale, norms=("instance",)) if stale else None
        if found is None:
            raise _no_generator_error(sd)
        sd = {k: v for k, v in sd.items() if k not in stale}
        notes.append(
            f"stale InstanceNorm running statistics dropped ({len(stale)} keys): old "
            "checkpoints saved them, current pix2pix normalises each image by itself"
        )
    netG, norm, dropout = found
    input_nc, output_nc, ngf = _channels_and_width(sd, netG)
    spec = GeneratorSpec(netG, input_nc, output_nc, ngf, norm, dropout)
    _check_fit(sd, spec)
    notes[:0] = [_detection_note(spec), _dropout_note(spec)]
    return _Resolved(spec, netG not in UNET_DOWNS, sd, "reference-pth", notes)


def detect_generator(state_dict: Mapping[str, torch.Tensor]) -> tuple[GeneratorSpec, list[str]]:
    """Recognise the generator of a reference state dict (already unwrapped and unprefixed).

    Returns the spec and notes on what was detected. U-Net dropout cannot be seen in the keys;
    the spec then says ``dropout=True`` (the pix2pix default) and a note says so.
    """
    found = _detect(dict(state_dict))
    return found.spec, found.notes
