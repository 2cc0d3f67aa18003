"""The pix2pix networks: reference key layout, shapes, initialisation and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from napari_synthgen.families.pix2pix.networks import (
    DISCRIMINATORS,
    GENERATORS,
    NORMS,
    GeneratorSpec,
    Identity,
    ResnetBlock,
    build_discriminator,
    build_generator,
    init_weights,
    norm_layer_factory,
    size_divisor,
)

SIDE = {"unet_128": 128, "unet_256": 256, "resnet_6blocks": 32, "resnet_9blocks": 32}


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _spec_of(config: dict) -> GeneratorSpec:
    return GeneratorSpec(
        config["netG"], config["input_nc"], config["output_nc"], config["ngf"],
        config["norm"], config["use_dropout"],
    )


@pytest.mark.parametrize(
    "name", ["unet256_batch_ngf8", "unet256_batch_ngf8_warmstats", "resnet9_instance_ngf8"]
)
def test_key_layout_equals_reference(reference_fixtures: Path, name: str) -> None:
    model = _manifest(reference_fixtures)["models"][name]
    net = build_generator(_spec_of(model["config"]))
    layout = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert layout == [(k, v) for k, v in model["keys"].items()]
    assert sum(p.numel() for p in net.parameters()) == model["n_params"]


@pytest.mark.parametrize("name", ["unet256_batch_ngf8", "resnet9_instance_ngf8"])
def test_init_is_bit_identical_to_reference(reference_fixtures: Path, name: str) -> None:
    """Same seed, same module order, same init: the reference weights, bit for bit."""
    config = _manifest(reference_fixtures)["models"][name]["config"]
    torch.manual_seed(0)
    net = build_generator(_spec_of(config))
    ref = torch.load(reference_fixtures / name / "latest_net_G.pth", weights_only=True)
    for key, value in net.state_dict().items():
        assert torch.equal(value, ref[key]), key


@pytest.mark.parametrize("netG", GENERATORS)
@pytest.mark.parametrize("norm", NORMS)
def test_generators_run_at_their_size_divisor(netG: str, norm: str) -> None:
    spec = GeneratorSpec(netG, input_nc=1, output_nc=2, ngf=2, norm=norm)
    net = build_generator(spec).eval()
    assert net.spec is spec
    side = SIDE[netG]
    assert side % size_divisor(netG) == 0
    with torch.inference_mode():
        out = net(torch.rand(1, 1, side, side) * 2 - 1)
    assert out.shape == (1, 2, side, side)
    assert out.abs().max() <= 1  # tanh


def test_size_divisor() -> None:
    assert [size_divisor(g) for g in GENERATORS] == [128, 256, 4, 4]
    with pytest.raises(ValueError, match="unet_128"):
        size_divisor("unet_512")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"netG": "unet_64"}, "unknown generator"),
        ({"netG": "unet_256", "norm": "group"}, "unknown norm"),
        ({"netG": "unet_256", "ngf": 0}, "ngf must be a positive integer"),
        ({"netG": "unet_256", "input_nc": 2.0}, "input_nc must be a positive integer"),
        ({"netG": "unet_256", "output_nc": True}, "output_nc must be a positive integer"),
        ({"netG": "unet_256", "dropout": "yes"}, "dropout must be True or False"),
    ],
)
def test_spec_validation(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        GeneratorSpec(**kwargs)


def test_norm_factory() -> None:
    batch = norm_layer_factory("batch")(4)
    assert isinstance(batch, nn.BatchNorm2d) and batch.affine and batch.track_running_stats
    inst = norm_layer_factory("instance")(4)
    assert isinstance(inst, nn.InstanceNorm2d)
    assert not inst.affine and not inst.track_running_stats
    assert list(inst.state_dict()) == []
    none = norm_layer_factory("none")(4)
    assert isinstance(none, Identity) and list(none.state_dict()) == []
    with pytest.raises(ValueError, match="batch, instance, none"):
        norm_layer_factory("layer")


def test_none_norm_has_no_conv_biases_but_keeps_positions() -> None:
    """Reference quirk: use_bias is False for 'none'; only the output layers keep a bias."""
    unet = build_generator(GeneratorSpec("unet_128", ngf=2, norm="none")).state_dict()
    assert [k for k in unet if k.endswith("bias")] == ["model.model.3.bias"]
    assert "model.model.1.model.5.weight" in unet  # up conv still at index 5
    spec = GeneratorSpec("resnet_6blocks", ngf=2, norm="none", dropout=False)
    resnet = build_generator(spec).state_dict()
    assert [k for k in resnet if k.endswith("bias")] == ["model.23.bias"]
    assert "model.10.conv_block.5.weight" in resnet  # Identity holds index 2


def test_resnet_dropout_shifts_key_indices() -> None:
    off = build_generator(GeneratorSpec("resnet_6blocks", ngf=2, dropout=False)).state_dict()
    on = build_generator(GeneratorSpec("resnet_6blocks", ngf=2, dropout=True)).state_dict()
    assert "model.10.conv_block.5.weight" in off and "model.10.conv_block.6.weight" in on
    unet_off = build_generator(GeneratorSpec("unet_128", ngf=2, dropout=False)).state_dict()
    unet_on = build_generator(GeneratorSpec("unet_128", ngf=2, dropout=True)).state_dict()
    assert list(unet_off) == list(unet_on)  # U-Net dropout leaves no trace


@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_resnet_block_paddings_keep_size(padding: str) -> None:
    block = ResnetBlock(4, padding, norm_layer_factory("batch"), False, False)
    assert block(torch.rand(1, 4, 8, 8)).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="padding"):
        ResnetBlock(4, "circular", norm_layer_factory("batch"), False, False)


def _shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_basic_discriminator_keys() -> None:
    shapes = _shapes(build_discriminator(6, 64, "basic"))
    assert shapes["model.0.weight"] == (64, 6, 4, 4)
    assert shapes["model.0.bias"] == (64,)
    assert shapes["model.2.weight"] == (128, 64, 4, 4)
    assert "model.2.bias" not in shapes  # batch norm follows: no bias
    assert shapes["model.3.weight"] == (128,)
    assert shapes["model.3.running_var"] == (128,)
    assert shapes["model.5.weight"] == (256, 128, 4, 4)
    assert shapes["model.8.weight"] == (512, 256, 4, 4)
    assert shapes["model.9.weight"] == (512,)
    assert shapes["model.11.weight"] == (1, 512, 4, 4)
    assert shapes["model.11.bias"] == (1,)
    assert len(shapes) == 2 + 3 * 6 + 2


def test_n_layers_discriminator_caps_width_and_runs() -> None:
    net = build_discriminator(3, 4, "n_layers", n_layers=5, norm="instance")
    shapes = _shapes(net)
    assert shapes["model.14.weight"] == (32, 32, 4, 4)  # min(2**5, 8) * ndf
    assert shapes["model.2.bias"] == (8,)  # instance norm: convs have biases
    assert shapes["model.17.weight"] == (1, 32, 4, 4)
    assert net(torch.rand(1, 3, 128, 128)).shape == (1, 1, 2, 2)
    basic = build_discriminator(3, 4, "basic")
    assert basic(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def test_pixel_discriminator_keys() -> None:
    shapes = _shapes(build_discriminator(6, 64, "pixel"))
    assert shapes["net.0.weight"] == (64, 6, 1, 1)
    assert shapes["net.0.bias"] == (64,)
    assert shapes["net.2.weight"] == (128, 64, 1, 1)
    assert shapes["net.3.weight"] == (128,)
    assert shapes["net.5.weight"] == (1, 128, 1, 1)
    assert "net.2.bias" not in shapes and "net.5.bias" not in shapes
    inst = _shapes(build_discriminator(6, 8, "pixel", norm="instance"))
    assert "net.2.bias" in inst and "net.5.bias" in inst and "net.3.weight" not in inst


def test_discriminator_validation() -> None:
    assert DISCRIMINATORS == ("basic", "n_layers", "pixel")
    with pytest.raises(ValueError, match="unknown discriminator"):
        build_discriminator(3, netD="patch")


def test_init_weights_semantics() -> None:
    torch.manual_seed(3)
    net = build_generator(GeneratorSpec("resnet_6blocks", ngf=16, norm="batch"))
    conv = net.model[4]
    bn = net.model[5]
    assert abs(conv.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(net.model[23].bias) == 0
    assert abs(bn.weight.mean().item() - 1) < 0.01 and torch.count_nonzero(bn.bias) == 0
    for kind in ("xavier", "kaiming", "orthogonal"):
        init_weights(net, kind, gain=0.5)
        assert torch.count_nonzero(net.model[23].bias) == 0
    with pytest.raises(ValueError, match="normal, xavier, kaiming, orthogonal"):
        init_weights(net, "uniform")
