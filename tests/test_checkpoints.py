"""Checkpoints: reference fixtures, generator detection, our format, and every refusal."""

from __future__ import annotations

import functools
import json
import os
import pickle
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from napari_synthgen.families.pix2pix.files import save_model
from napari_synthgen.families.pix2pix.networks import (
    GeneratorSpec,
    ResnetGenerator,
    UnetGenerator,
    build_discriminator,
    build_generator,
    init_weights,
)
from napari_synthgen.families.pix2pix.reference import detect_generator
from napari_synthgen.io import sha256_file
from napari_synthgen.masks import class_record
from napari_synthgen.models.checkpoints import (
    CONTAINER_KEYS,
    CheckpointError,
    default_encoding,
    read_state_dict,
    read_training_state,
    validate_encoding,
)
from napari_synthgen.registry import inspect_model, load_model
from napari_synthgen.sample_data import demo_model_path

SIDE = {"unet_128": 128, "unet_256": 256, "resnet_6blocks": 32, "resnet_9blocks": 32}

# --------------------------------------------------------------------------- helpers


def _random_generator(spec: GeneratorSpec, seed: int = 0) -> nn.Module:
    """A randomly initialised generator whose BatchNorm statistics are not the defaults."""
    torch.manual_seed(seed)
    net = build_generator(spec)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
    return net.eval()


def _input(input_nc: int, side: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, input_nc, side, side, generator=gen) * 2 - 1


def _run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net.eval()(x)


def _same_outputs(a: nn.Module, b: nn.Module, spec: GeneratorSpec) -> bool:
    x = _input(spec.input_nc, SIDE[spec.netG])
    return torch.equal(_run(a, x), _run(b, x))


def _tiny_resnet() -> tuple[GeneratorSpec, nn.Module]:
    spec = GeneratorSpec("resnet_6blocks", 3, 3, 4, "batch", False)
    return spec, _random_generator(spec)


def _error(path: str | os.PathLike, **kwargs: object) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- reference fixtures

FIXTURES = {
    "unet256_batch_ngf8": ("unet_256", "batch", "unknown"),
    "unet256_batch_ngf8_warmstats": ("unet_256", "batch", "unknown"),
    "resnet9_instance_ngf8": ("resnet_9blocks", "instance", False),
}


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_fixture_loads_and_reproduces_outputs(
    reference_fixtures: Path, name: str
) -> None:
    manifest = json.loads((reference_fixtures / "manifest.json").read_text())["models"][name]
    loaded = load_model(reference_fixtures / name / "latest_net_G.pth")
    info = loaded.info
    netG, norm, dropout = FIXTURES[name]
    assert (*(info.details[k] for k in ("netG", "ngf", "norm")), info.input_nc, info.output_nc,
            info.details["dropout"]) == (
        netG, 8, norm, 3, 3, dropout
    )
    assert (info.format, info.family, info.encoding, info.encoding_source) == (
        "reference-pth", "pix2pix", "rgb", "default"
    )
    assert info.params == manifest["n_params"]
    assert info.sha256 == manifest["checkpoint_sha256"]
    assert info.tile is None and info.metadata == {}
    net = loaded.network
    assert not net.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in net.parameters())
    x = torch.from_numpy(np.load(reference_fixtures / "input_1x3x256x256.npy"))
    with torch.inference_mode():
        out = net(x).numpy()
    expected = np.load(reference_fixtures / name / "output_eval.npy")
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_reference_folder_takes_latest_net_g(reference_fixtures: Path) -> None:
    folder = reference_fixtures / "resnet9_instance_ngf8"
    info = load_model(folder).info
    assert info.path == str(folder / "latest_net_G.pth")
    assert any("latest_net_G.pth" in n for n in info.notes)


def test_inspect_model_is_json(reference_fixtures: Path) -> None:
    data = inspect_model(reference_fixtures / "unet256_batch_ngf8")
    json.dumps(data)
    for key in ("family", "input_nc", "output_nc", "encoding", "params", "details"):
        assert key in data
    assert {"netG", "ngf", "norm", "architecture"} <= set(data["details"])
    assert data["details"]["dropout"] == "unknown"
    assert any("dropout cannot be told" in n for n in data["notes"])


# --------------------------------------------------------------------------- detection

_SHAPES = [(4, 1, 1), (6, 3, 1), (16, 1, 3), (4, 3, 3)]
_COMBOS = [
    (netG, norm, dropout)
    for netG in SIDE
    for norm in ("batch", "instance", "none")
    for dropout in (False, True)
    if not (netG.startswith("unet") and dropout is False and norm != "batch")
]
DETECTION_CASES = [
    pytest.param(*combo, *_SHAPES[i % len(_SHAPES)], id="-".join(map(str, combo + _SHAPES[
        i % len(_SHAPES)])))
    for i, combo in enumerate(_COMBOS)
]


@pytest.mark.parametrize(("netG", "norm", "dropout", "ngf", "input_nc", "output_nc"),
                         DETECTION_CASES)
def test_detects_every_generator(
    tmp_path: Path, netG: str, norm: str, dropout: bool, ngf: int, input_nc: int, output_nc: int
) -> None:
    spec = GeneratorSpec(netG, input_nc, output_nc, ngf, norm, dropout)
    net = _random_generator(spec)
    path = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path)
    info = loaded.info
    resnet = netG.startswith("resnet")
    assert (*(info.details[k] for k in ("netG", "ngf", "norm")), info.input_nc,
            info.output_nc) == (
        netG, ngf, norm, input_nc, output_nc
    )
    assert info.details["dropout"] == (dropout if resnet else "unknown")
    assert loaded.spec == (spec if resnet else replace(spec, dropout=True))
    assert info.encoding == {1: "label", 3: "rgb"}[input_nc]
    assert detect_generator(net.state_dict())[0] == loaded.spec
    assert _same_outputs(loaded.network, net, spec)


WRAPPINGS = ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."]


@pytest.mark.parametrize("prefix", WRAPPINGS)
def test_wrapper_prefixes_are_stripped(tmp_path: Path, prefix: str) -> None:
    spec, net = _tiny_resnet()
    torch.save({prefix + k: v for k, v in net.state_dict().items()}, tmp_path / "g.pth")
    loaded = load_model(tmp_path / "g.pth")
    for part in prefix.split(".")[:-1]:
        assert f"prefix '{part}.' stripped" in loaded.info.notes
    assert _same_outputs(loaded.network, net, spec)


def test_data_parallel_state_dict_loads(tmp_path: Path) -> None:
    spec = GeneratorSpec("unet_128", 3, 3, 4, "batch")
    net = _random_generator(spec)
    torch.save(nn.DataParallel(net).state_dict(), tmp_path / "dp.pth")
    loaded = load_model(tmp_path / "dp.pth")
    assert "prefix 'module.' stripped" in loaded.info.notes
    assert _same_outputs(loaded.network, net, spec)


@pytest.mark.parametrize("netG", ["unet_128", "resnet_6blocks"])
def test_old_instance_norm_running_stats_are_dropped(tmp_path: Path, netG: str) -> None:
    """Old reference files used InstanceNorm(track_running_stats=True): stats are stale."""
    old_norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=True)
    if netG == "unet_128":
        old: nn.Module = UnetGenerator(1, 3, 7, 4, norm_layer=old_norm, use_dropout=False)
    else:
        old = ResnetGenerator(1, 3, 4, norm_layer=old_norm, n_blocks=6)
    init_weights(old)
    x = _input(1, SIDE[netG])
    with torch.no_grad():
        old.train()(x * 0.5 + 0.3)  # fill the running statistics with something
    stats = [k for k in old.state_dict() if k.rpartition(".")[2].startswith(("running", "num"))]
    torch.save(old.state_dict(), tmp_path / "old.pth")
    loaded = load_model(tmp_path / "old.pth")
    assert loaded.info.details["norm"] == "instance" and loaded.info.details["netG"] == netG
    assert f"stale InstanceNorm running statistics dropped ({len(stats)} keys)" in " ".join(
        loaded.info.notes)
    with torch.inference_mode():
        expected = old.train()(x)  # instance statistics, as current pix2pix uses them
        assert torch.allclose(loaded.network(x), expected, atol=1e-6)


def test_batchnorm_without_num_batches_tracked_loads(tmp_path: Path) -> None:
    """Files from torch < 0.4.1 have no num_batches_tracked; torch fills in 0."""
    spec, net = _tiny_resnet()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old_bn.pth")
    loaded = load_model(tmp_path / "old_bn.pth")
    assert loaded.info.details["norm"] == "batch"
    assert _same_outputs(loaded.network, net, spec)


def test_half_precision_weights_load_as_float32(tmp_path: Path) -> None:
    _, net = _tiny_resnet()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in
                net.state_dict().items()}, tmp_path / "half.pth")
    loaded = load_model(tmp_path / "half.pth")
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())


@pytest.mark.parametrize("key", CONTAINER_KEYS)
def test_containers_are_unwrapped(tmp_path: Path, key: str) -> None:
    spec, net = _tiny_resnet()
    torch.save({key: net.state_dict(), "epoch": 3, "opt": {"lr": 0.0002}}, tmp_path / "c.pth")
    loaded = load_model(tmp_path / "c.pth")
    assert any(f"'{key}' entry" in n for n in loaded.info.notes)
    assert _same_outputs(loaded.network, net, spec)


def test_training_module_with_generator_and_discriminator(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    disc = build_discriminator(6, 4)
    flat = {f"netG.{k}": v for k, v in net.state_dict().items()}
    flat.update({f"netD.{k}": v for k, v in disc.state_dict().items()})
    torch.save({"state_dict": flat, "global_step": 10}, tmp_path / "lightning.ckpt")
    loaded = load_model(tmp_path / "lightning.ckpt")
    assert any("under prefix 'netG.'" in n for n in loaded.info.notes)
    assert _same_outputs(loaded.network, net, spec)


def test_read_state_dict(tmp_path: Path) -> None:
    _, net = _tiny_resnet()
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path /
               "x.pt")
    sd = read_state_dict(tmp_path / "x.pt")
    assert list(sd) == list(net.state_dict())


# --------------------------------------------------------------------------- our format

METADATA = {
    "intensity": {"mean": 121.5, "std": 30.25, "percentiles": {"1": 20.0, "99": 230.0}},
    "config": {"lr": 0.0002, "epochs": 5, "netG": "unet_128", "tile": 128},
    "provenance": {"source": "isbi2012", "git": "abc123"},
    "step": 1200,
}


def test_our_format_round_trips(tmp_path: Path) -> None:
    spec = GeneratorSpec("unet_128", 3, 1, 4, "batch", False)
    net = _random_generator(spec)
    path = save_model(tmp_path / "model.safetensors", nn.DataParallel(net), spec,
                      encoding="onehot", tile=128, metadata=METADATA)
    assert path == tmp_path / "model.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp files left
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["napari_synthgen"])
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys()}  # noqa: SIM118
        assert any(k.endswith("running_var") for k in fh.keys())  # noqa: SIM118
    assert header["format_version"] == 1 and header["family"] == "pix2pix"
    without_noise = {k: v for k, v in asdict(spec).items()
                     if k not in ("noise_nc", "noise_scale")}
    assert header["generator"] == without_noise  # no noise is left out: the old layout
    assert header["encoding"] == "onehot"
    assert dtypes == {torch.float32, torch.int64}
    loaded = load_model(path)
    info = loaded.info
    assert loaded.spec == spec and info.details["dropout"] is False
    assert (info.format, info.encoding, info.encoding_source, info.tile) == (
        "synthgen-safetensors", "onehot", "metadata", 128
    )
    assert info.metadata == METADATA
    assert info.sha256 == sha256_file(path)
    assert _same_outputs(loaded.network, net, spec)
    assert load_model(tmp_path).info.path == str(path)  # the folder finds it too
    # an override may repeat the recorded encoding, never contradict it (a silent wrong image)
    assert load_model(path, encoding="onehot").info.encoding_source == "override"
    with pytest.raises(CheckpointError, match=r"trained on 'onehot' masks .*cannot take 'rgb'"):
        load_model(path, encoding="rgb")


def test_save_model_converts_numpy_metadata(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    meta = {"intensity": {"mean": np.float32(0.5), "hist": np.arange(3)}, "run": Path("a/b")}
    save_model(tmp_path / "m.safetensors", net, spec, encoding="rgb", metadata=meta)
    info = load_model(tmp_path / "m.safetensors").info
    assert info.metadata == {"intensity": {"mean": 0.5, "hist": [0, 1, 2]}, "run": "a/b"}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"encoding": "label"}, "needs 1 input channel"),
        ({"encoding": "rgb", "metadata": {"encoding": "x"}}, "may not set encoding"),
        ({"encoding": "rgb", "metadata": {"f": object()}}, "cannot be stored as JSON"),
        ({"encoding": "rgb", "tile": 0}, "tile must be a positive integer"),
    ],
)
def test_save_model_refuses_bad_arguments(tmp_path: Path, kwargs: dict, words: str) -> None:
    spec, net = _tiny_resnet()
    with pytest.raises(CheckpointError, match=words):
        save_model(tmp_path / "m.safetensors", net, spec, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_model_refuses_spec_mismatch_and_suffix(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    with pytest.raises(CheckpointError, match="does not match its spec"):
        save_model(tmp_path / "m.safetensors", net, replace(spec, ngf=8), encoding="rgb")
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        save_model(tmp_path / "m.pth", net, spec, encoding="rgb")


def test_plain_safetensors_is_detected(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "g.safetensors")
    loaded = load_model(tmp_path / "g.safetensors")
    assert loaded.info.format == "reference-safetensors"
    assert loaded.spec == spec and loaded.info.encoding_source == "default"


def _forge(tmp_path: Path, header: dict) -> Path:
    spec = GeneratorSpec("unet_128", 3, 3, 4, "batch")
    net = build_generator(spec)
    path = tmp_path / "forged.safetensors"
    save_file(dict(net.state_dict()), path, metadata={"napari_synthgen": json.dumps(header)})
    return path


def test_our_format_architecture_mismatch(tmp_path: Path) -> None:
    gen = asdict(GeneratorSpec("unet_256", 3, 3, 4, "batch"))
    path = _forge(tmp_path, {"format_version": 1, "family": "pix2pix", "generator": gen,
                             "encoding": "rgb", "tile": 256})
    msg = _error(path)
    assert "metadata says unet_256" in msg and "do not fit" in msg
    assert "look like unet_128" in msg and "forged.safetensors" in msg


def test_our_format_from_the_future(tmp_path: Path) -> None:
    gen = asdict(GeneratorSpec("unet_128", 3, 3, 4, "batch"))
    path = _forge(tmp_path, {"format_version": 7, "family": "pix2pix", "generator": gen})
    assert "newer napari-synthgen" in _error(path)


# --------------------------------------------------------------------------- folders


def test_folder_takes_newest_safetensors(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    old = save_model(tmp_path / "a.safetensors", net, spec, encoding="rgb", metadata={"step": 1})
    new = save_model(tmp_path / "b.safetensors", net, spec, encoding="rgb", metadata={"step": 2})
    os.utime(old, (2_000_000_000, 2_000_000_000))
    os.utime(new, (1_000_000_000, 1_000_000_000))
    info = load_model(tmp_path).info
    assert info.path == str(old) and info.metadata["step"] == 1
    assert any("newest of 2" in n and "b.safetensors" in n for n in info.notes)


def test_folder_prefers_reference_file(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    save_model(tmp_path / "a.safetensors", net, spec, encoding="rgb")
    torch.save(net.state_dict(), tmp_path / "latest_net_G.pth")
    assert load_model(tmp_path).info.format == "reference-pth"


def test_folder_without_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "images").mkdir()
    msg = _error(tmp_path)
    assert "no model found" in msg and "latest_net_G.pth" in msg
    assert "notes.txt" in msg and "images/" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds: nothing" in _error(empty)


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.pth")


# --------------------------------------------------------------------------- refusals


class _Payload:
    """Unpickling this would create ``marker``: the classic code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _assert_refused_as_code(msg: str) -> None:
    assert "pickled Python object" in msg and "run code" in msg
    assert "never executes code" in msg and "torch.save(net.state_dict(), path)" in msg


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_not_executed(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "latest_net_G.pth"
    if how == "torch.save":
        torch.save({"model.1.weight": _Payload(marker)}, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"model.1.weight": _Payload(marker)}, fh, protocol=4)
    assert not marker.exists()
    msg = _error(path)
    _assert_refused_as_code(msg)
    assert "open" in msg
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    _, net = _tiny_resnet()
    torch.save(net, tmp_path / "whole.pth")
    msg = _error(tmp_path / "whole.pth")
    _assert_refused_as_code(msg)
    assert "ResnetGenerator" in msg


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated upstream
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), tmp_path / "scripted.pt")
    msg = _error(tmp_path / "scripted.pt")
    assert "TorchScript archive" in msg and "torch.save(net.state_dict(), path)" in msg


def test_truncated_file(tmp_path: Path, reference_fixtures: Path) -> None:
    data = (reference_fixtures / "resnet9_instance_ngf8" / "latest_net_G.pth").read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    msg = _error(path)
    assert "truncated or corrupt" in msg and "half.pth" in msg


def test_truncated_safetensors(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    path = save_model(tmp_path / "m.safetensors", net, spec, encoding="rgb")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert "truncated or corrupt" in _error(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "PNG image"),
        (b"epoch,loss\n1,0.5\n", "text file"),
        (b"\x00\x01\x02\xff\xfe" * 10, "unknown kind"),
    ],
)
def test_not_a_model_file(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "latest_net_G.pth"
    path.write_bytes(content)
    msg = _error(path)
    assert "not a model file" in msg and words in msg and str(path) in msg


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "latest_net_G.pth"
    path.touch()
    msg = _error(path)
    assert "empty" in msg and str(path) in msg


def test_discriminator_state_dict(tmp_path: Path) -> None:
    torch.save(build_discriminator(6, 8).state_dict(), tmp_path / "latest_net_D.pth")
    msg = _error(tmp_path / "latest_net_D.pth")
    assert "do not form a pix2pix generator" in msg
    assert "discriminator (netD 'basic')" in msg and "latest_net_G.pth" in msg
    assert "closest generator is resnet_" in msg
    assert "Missing keys: model.1.weight" in msg and "model.11.weight" in msg


def test_random_tensors(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.rand(3, 3), "decoder.bias": torch.rand(3)},
               tmp_path / "x.pth")
    msg = _error(tmp_path / "x.pth")
    assert "do not form a pix2pix generator" in msg and "No key matches" in msg
    assert "Unexpected keys: decoder.bias, encoder.weight" in msg


def test_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "loss": [0.1, 0.2]}, tmp_path / "x.pth")
    msg = _error(tmp_path / "x.pth")
    assert "not a state dict of tensors" in msg and "'epoch'" in msg


def test_shape_mismatch_names_key_and_shapes(tmp_path: Path) -> None:
    _, net = _tiny_resnet()
    sd = dict(net.state_dict())
    sd["model.12.conv_block.1.weight"] = torch.zeros(16, 16, 3, 5)
    torch.save(sd, tmp_path / "bad.pth")
    msg = _error(tmp_path / "bad.pth")
    assert "model.12.conv_block.1.weight" in msg
    assert "(16, 16, 3, 5)" in msg and "(16, 16, 3, 3)" in msg


# --------------------------------------------------------------------------- options


def test_encoding_override(tmp_path: Path) -> None:
    spec = GeneratorSpec("resnet_6blocks", 1, 1, 4, "instance", False)
    torch.save(_random_generator(spec).state_dict(), tmp_path / "g.pth")
    info = load_model(tmp_path / "g.pth").info
    assert (info.encoding, info.encoding_source) == ("label", "default")
    msg = _error(tmp_path / "g.pth", encoding="rgb")
    assert "'rgb' needs 3 input channel(s)" in msg and "takes 1" in msg and "use label" in msg
    assert "unknown encoding 'hsv'" in _error(tmp_path / "g.pth", encoding="hsv")
    _, net = _tiny_resnet()
    torch.save(net.state_dict(), tmp_path / "rgb.pth")
    info = load_model(tmp_path / "rgb.pth", encoding="onehot").info
    assert (info.encoding, info.encoding_source) == ("onehot", "override")


def test_encoding_helpers() -> None:
    assert default_encoding(1) == "label" and default_encoding(3) == "rgb"
    with pytest.raises(CheckpointError, match="takes 2 input channels"):
        default_encoding(2)
    assert validate_encoding("onehot", 3) == "onehot"
    with pytest.raises(CheckpointError, match="no mask encoding fits"):
        validate_encoding("rgb", 5)
    with pytest.raises(CheckpointError, match="use sparse"):
        validate_encoding("rgb", 2)


def test_two_channel_model_needs_no_guess(tmp_path: Path) -> None:
    spec = GeneratorSpec("resnet_6blocks", 2, 1, 4, "batch", False)
    torch.save(_random_generator(spec).state_dict(), tmp_path / "g.pth")
    assert "takes 2 input channels" in _error(tmp_path / "g.pth")


def test_dropout_option(tmp_path: Path) -> None:
    spec = GeneratorSpec("unet_128", 3, 3, 4, "batch", True)
    torch.save(_random_generator(spec).state_dict(), tmp_path / "u.pth")
    loaded = load_model(tmp_path / "u.pth", dropout=False)
    assert loaded.info.details["dropout"] is False and loaded.spec.dropout is False
    assert not any(isinstance(m, nn.Dropout) for m in loaded.network.modules())
    _, net = _tiny_resnet()
    torch.save(net.state_dict(), tmp_path / "r.pth")
    assert "saved without dropout" in _error(tmp_path / "r.pth", dropout=True)


# ------------------------------------------------------------------ classes, bundled models


def test_model_info_classes_from_our_metadata(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    record = class_record([0.0, 3.0, 1.0])
    path = save_model(tmp_path / "c.safetensors", net, spec, encoding="rgb",
                      metadata={"classes": record})
    info = load_model(path).info
    assert info.classes == {0: 0.0, 1: 0.75, 2: 0.25}
    assert info.metadata["classes"] == record
    assert json.loads(json.dumps(info.to_dict()))["classes"] == {"0": 0.0, "1": 0.75, "2": 0.25}
    plain = save_model(tmp_path / "p.safetensors", net, spec, encoding="rgb")
    assert load_model(plain).info.classes is None  # saved before the record existed: unknown


def test_reference_checkpoint_classes_are_unknown(reference_fixtures: Path) -> None:
    info = load_model(reference_fixtures / "unet256_batch_ngf8").info
    assert info.classes is None and info.to_dict()["classes"] is None


def test_demo_model_by_name_knows_its_classes() -> None:
    loaded = load_model("demo")
    assert Path(loaded.info.path) == demo_model_path()
    assert any("bundled model 'demo'" in n for n in loaded.info.notes)
    classes = loaded.info.classes
    # ISBI masks have no background; --unlabel-fraction 0.3 showed 30 % of the cells as
    # background in training, and the record says so (expected fractions)
    assert classes is not None and classes[0] == pytest.approx(0.3, abs=0.02)
    assert classes[1] > 0.4 and classes[2] > 0.1
    assert sum(classes.values()) == pytest.approx(1.0, abs=1e-5)
    assert inspect_model("demo")["classes"] == classes


def test_unknown_model_name_says_which_names_exist(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    msg = _error("demo-nonexistent")
    assert "demo-nonexistent: no such file or folder" in msg and "'demo'" in msg


def test_an_existing_path_named_like_a_bundled_model_wins(tmp_path: Path, monkeypatch) -> None:
    spec, net = _tiny_resnet()
    save_model(tmp_path / "demo" / "mine.safetensors", net, spec, encoding="rgb")
    monkeypatch.chdir(tmp_path)
    assert load_model("demo").info.path == str(Path("demo") / "mine.safetensors")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"generator": None}, "has no generator spec"),
        ({"generator": "unet_128"}, "generator spec is a str, not a dictionary"),
        ({"generator": {"netG": "unet_128"}}, "generator spec lacks input_nc, output_nc, ngf"),
        ({"generator": {**asdict(GeneratorSpec("unet_128", 3, 3, 4)), "depth": 3}},
         "unknown entries depth"),
        ({"generator": {**asdict(GeneratorSpec("unet_128", 3, 3, 4)), "norm": "group"}},
         "generator spec is not valid"),
        ({"family": None}, "names no model family"),
        ({"format_version": None}, "no valid format_version (found None)"),
    ],
)
def test_our_format_with_an_incomplete_header_is_a_clear_error(
    tmp_path: Path, change: dict, expected: str
) -> None:
    header = {"format_version": 1, "family": "pix2pix",
              "generator": asdict(GeneratorSpec("unet_128", 3, 3, 4, "batch")), "encoding": "rgb"}
    header.update(change)
    header = {k: v for k, v in header.items() if v is not None}
    msg = _error(_forge(tmp_path, header))
    assert expected in msg and "forged.safetensors" in msg
    assert "save the model again" in msg


def test_training_state_is_checked_for_what_resume_needs(tmp_path: Path) -> None:
    good = {"model": {"G": {}}, "step": 5, "rng": {}, "config": {"netG": "unet_256"}}
    torch.save(good, tmp_path / "ok.state.pt")
    assert read_training_state(tmp_path / "ok.state.pt")["step"] == 5
    torch.save({"model": {"G": {}}, "step": 5, "rng": {}}, tmp_path / "noconfig.state.pt")
    with pytest.raises(CheckpointError, match="has no config entry"):
        read_training_state(tmp_path / "noconfig.state.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.state.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor, not a napari-synthgen training"):
        read_training_state(tmp_path / "tensor.state.pt")
    spec, net = _tiny_resnet()
    model = save_model(tmp_path / "G.safetensors", net, spec, encoding="rgb")
    with pytest.raises(CheckpointError, match=r"model file .*not a training state"):
        read_training_state(model)


def test_a_training_state_given_as_model_points_at_its_model_file(tmp_path: Path) -> None:
    spec, net = _tiny_resnet()
    model = save_model(tmp_path / "G_step_0000010.safetensors", net, spec, encoding="onehot")
    state = tmp_path / "checkpoints" / "step_0000010.state.pt"
    state.parent.mkdir()
    torch.save({"model": {"G": net.state_dict()}, "step": 10, "rng": {}, "config": {}}, state)
    msg = _error(state)
    assert "training state" in msg and f"open {model} instead" in msg


def test_our_file_whose_header_length_starts_like_a_pickle_loads(tmp_path: Path) -> None:
    """One file in 256 has a header length whose first byte is 0x80, a pickle's first byte."""
    spec = GeneratorSpec(netG="resnet_6blocks", input_nc=3, output_nc=1, ngf=4, norm="instance")
    net = build_generator(spec)
    for pad in range(300):
        path = save_model(tmp_path / "g.safetensors", net, spec, encoding="rgb", tile=64,
                          metadata={"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    model = load_model(path)
    assert model.info.format == "synthgen-safetensors" and model.info.metadata["note"]
