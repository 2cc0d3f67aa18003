"""The diffusion family through the shared machinery: train CLI, engine, resume, torchrun,
load_model, inspect, generate and the Synthesizer factory."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_synthgen import registry
from napari_synthgen.cli import main
from napari_synthgen.families.diffusion.sampling import DiffusionSynthesizer
from napari_synthgen.layouts import make_layout
from napari_synthgen.registry import (
    known_keys,
    load_model,
    make_config,
    make_synthesizer,
)
from napari_synthgen.training.cli import add_train_parser, config_from_args
from napari_synthgen.training.config import ConfigError, TrainConfig
from napari_synthgen.training.engine import latest_checkpoint, train

#: a U-Net of two narrow levels: trains and samples in milliseconds per tile
TINY = {"block_out_channels": [8, 16], "attention": [False, True], "attention_head_dim": 8}
RUN = ["--tile", "32", "--batch-size", "2", "--device", "cpu", "--precision", "fp32",
       "--preview-steps", "2"]


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump({"overrides": TINY, "warmup_steps": 1}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, isbi_small: Path, tiny_yaml: Path
            ) -> Path:
    """A diffusion run of 3 steps through ``napari-synthgen train``."""
    out = tmp_path_factory.mktemp("diff") / "run"
    code = main(["train", "--family", "diffusion", "--data", str(isbi_small), "--out", str(out),
                 "--steps", "3", "--config", str(tiny_yaml), "--unlabel-fraction", "0.3",
                 "--prediction", "epsilon", "--checkpoint-every", "2", "--sample-every", "3",
                 *RUN])
    assert code == 0
    return out


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    values = {"data": [str(data)], "out": str(out), "steps": 4, "tile": 32, "batch_size": 2,
              "device": "cpu", "precision": "fp32", "preview_steps": 2, "warmup_steps": 1,
              "overrides": TINY, "checkpoint_every": 100, "sample_every": 100, **kw}
    return make_config(family="diffusion", **values)


def test_settings_map_onto_the_trainer_config_without_repeating_common_keys(
        tmp_path: Path, isbi_small: Path) -> None:
    fam = registry.get("diffusion")
    common = set(known_keys()) - set(registry.get("pix2pix").setting_names())
    assert not set(fam.setting_names()) & common
    cfg = _cfg(isbi_small, tmp_path, lr=1e-3, seed=5)
    dc = fam.diffusion_config(cfg)
    assert (dc.lr, dc.tile, dc.encoding, dc.seed, dc.batch_size) == (1e-3, 32, "onehot", 5, 2)
    assert cfg.encoding == "onehot" and cfg.validate() is cfg
    with pytest.raises(ConfigError, match="multiple of"):
        _cfg(isbi_small, tmp_path, tile=33).validate()
    with pytest.raises(ConfigError, match="prediction 'x0' unknown"):
        _cfg(isbi_small, tmp_path, prediction="x0").validate()
    with pytest.raises(ConfigError, match="netG is a pix2pix setting"):
        _cfg(isbi_small, tmp_path, netG="unet_128")
    # `--config small|base` names the U-Net configuration; a file is still a file
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--family", "diffusion", "--data", "d", "--steps", "1",
                              "--config", "base"])
    assert config_from_args(args).unet_config == "base"


def test_cli_train_load_inspect_and_generate(cli_run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             tiny_model: Path) -> None:
    model = load_model(cli_run)
    info = model.info
    assert info.family == "diffusion" and "netG" not in info.details
    assert info.details["prediction"] == "epsilon" and info.details["ema"] is True
    assert info.details["steps_trained"] == 3 and info.tile == 32
    assert info.metadata["config"]["unlabel_fraction"] == 0.3
    # 30 % of the cells were shown as background: the model knows background (ISBI has none)
    assert info.classes[0] > 0.2 and abs(sum(info.classes.values()) - 1) < 1e-3
    assert (cli_run / "samples" / "step_0000003.png").is_file()
    capsys.readouterr()
    assert main(["inspect", str(cli_run)]) == 0
    shown = capsys.readouterr().out
    for word in ("family           diffusion", "squaredcos_cap_v2", "epsilon", "ema ",
                 "steps_trained    3", "tile             32", "onehot", "params"):
        assert word in shown, shown

    masks = tmp_path / "masks"
    masks.mkdir()
    import tifffile

    tifffile.imwrite(masks / "m.tif", make_layout("dense", (40, 48), seed=1))
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(cli_run), "--masks", str(masks), "--out", str(out),
                 "--steps", "2", "--sampler", "ddim", "--fusion", "shifted", "--variations", "2",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    a, b = (tifffile.imread(out / "images" / f"m_s{s}.tif") for s in (0, 1))
    assert a.shape == (40, 48) and a.dtype == np.uint8 and not np.array_equal(a, b)
    records = [json.loads(x) for x in (out / "generate.jsonl").read_text().splitlines()]
    assert [r["params"]["steps"] for r in records] == [2, 2]
    assert {r["params"]["sampler"] for r in records} == {"ddim"}
    assert {r["params"]["fusion"] for r in records} == {"shifted"}
    assert records[0]["family"] == "diffusion" and records[0]["params"]["stochastic"] is True
    # pix2pix models refuse the diffusion options, naming them
    capsys.readouterr()
    assert main(["generate", "--model", str(tiny_model), "--masks", str(masks), "--out",
                 str(tmp_path / "p"), "--steps", "2"]) == 2
    assert "--steps applies to diffusion models only" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model), "--masks", str(masks), "--out",
                 str(tmp_path / "p"), "--fusion", "shifted"]) == 2
    assert "--fusion applies to diffusion models only" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model), "--masks", str(masks), "--out",
                 str(tmp_path / "p"), "--start-tile", "512"]) == 2
    assert "--start-tile applies to diffusion models only" in capsys.readouterr().err
    # the first step's tile is recorded with every image, and a bad one refused, saying why
    big = tmp_path / "big"
    big.mkdir()
    tifffile.imwrite(big / "m.tif", make_layout("dense", (150, 170), seed=1))
    assert main(["generate", "--model", str(cli_run), "--masks", str(big), "--out",
                 str(tmp_path / "s"), "--steps", "2", "--start-tile", "96", "--device", "cpu",
                 "--precision", "fp32"]) == 0
    record = json.loads((tmp_path / "s" / "generate.jsonl").read_text().splitlines()[0])
    assert record["params"]["start_tile"] == 96
    capsys.readouterr()
    assert main(["generate", "--model", str(cli_run), "--masks", str(big), "--out",
                 str(tmp_path / "t"), "--start-tile", "20", "--device", "cpu"]) != 0
    assert "start tile 20 does not fit" in capsys.readouterr().err


def test_synthesizer_factory_runs_per_denoising_step(cli_run: Path) -> None:
    model = load_model(cli_run)
    synth = make_synthesizer(model, device="cpu", precision="fp32", steps=3, stochastic=False)
    assert isinstance(synth, DiffusionSynthesizer) and synth.stochastic
    described = synth.describe()
    assert described["stochastic"] is True
    assert described["family_settings"] == {"steps": 3, "sampler": "dpm", "preview_steps": 8,
                                            "fusion": "multidiffusion",
                                            "z_coupling": "serial", "guidance": 1.0,
                                            "guidance_where": "labelled", "start_tile": 0}
    mask = make_layout("dense", (40, 40), seed=2)
    gen = synth.run(mask, seed=4)
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            image = stop.value
            break
    assert seen == [(1, 3), (2, 3), (3, 3)]
    np.testing.assert_array_equal(image, synth(mask, seed=4))
    stack = np.stack([mask, mask])
    gen = synth.run(stack, seed=4)
    assert next(gen) == (1, 6)
    gen.close()  # the widget cancels by no longer iterating: nothing else runs
    with pytest.raises(ValueError, match="encoding cannot be changed"):
        make_synthesizer(model, device="cpu", encoding="rgb")
    synth.close()


def test_stop_and_resume_through_the_engine_equals_an_uninterrupted_run(
        tmp_path: Path, isbi_small: Path) -> None:
    straight = list(train(_cfg(isbi_small, tmp_path / "a", unlabel_fraction=0.5)))
    assert straight[-1]["event"] == "finished"
    calls = iter(range(100))
    stopped = list(train(_cfg(isbi_small, tmp_path / "b", unlabel_fraction=0.5),
                         stop=lambda: next(calls) >= 2))
    assert stopped[-1]["reason"] == "stopped" and stopped[-1]["step"] == 2
    resumed = list(train(_cfg(isbi_small, tmp_path / "b", unlabel_fraction=0.5),
                         resume=tmp_path / "b"))
    assert resumed[0]["resumed_from"] == 2 and resumed[-1]["step"] == 4
    states = [torch.load(latest_checkpoint(tmp_path / r)[2], weights_only=True)["model"]
              for r in ("a", "b")]
    for key in ("unet",):
        for name, value in states[0][key].items():
            assert torch.equal(value, states[1][key][name]), name
    for x, y in zip(states[0]["ema"]["shadow_params"], states[1]["ema"]["shadow_params"],
                    strict=True):
        assert torch.equal(x, y)
    files = [load_model(tmp_path / r).network.state_dict() for r in ("a", "b")]
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])


def test_two_processes_train_the_diffusion_family(tmp_path: Path, isbi_small: Path,
                                                  tiny_yaml: Path) -> None:
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "napari_synthgen", "train", "--family", "diffusion", "--data", str(isbi_small),
         "--out", str(out), "--config", str(tiny_yaml), *RUN, "--steps", "3",
         "--checkpoint-every", "2", "--sample-every", "3", "--events", "jsonl"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    started = [e for e in events if e["event"] == "started"]
    assert len(started) == 1 and started[0]["world_size"] == 2
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 3]
    assert all(np.isfinite(e["losses"]["mse"]) for e in events if e["event"] == "progress")
    info = load_model(out).info
    assert info.family == "diffusion" and info.details["steps_trained"] == 3


def test_family_is_read_from_any_header_length(tmp_path: Path) -> None:
    """A header whose length's first byte is 0x80 (a pickle's opcode) is still read as ours."""
    from napari_synthgen.families.diffusion.files import save_diffusion
    from napari_synthgen.families.diffusion.networks import build_unet, make_spec
    from napari_synthgen.models.checkpoints.locate import model_family

    spec = make_spec("small", tile=32, **TINY)
    net = build_unet(spec)
    for pad in range(300):  # find a note length that makes the header length end in 0x80
        path = save_diffusion(tmp_path / "m.safetensors", net, spec, {"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    assert model_family(path) == "diffusion"
    assert type(make_synthesizer(path, device="cpu", precision="fp32")).__name__ == \
        "DiffusionSynthesizer"


def test_bundled_diffusion_model_draws_dark_membranes_and_varies_with_the_seed() -> None:
    """On a procedural mask it never saw, membranes come out much darker than cell interiors,
    and two seeds give visibly different images."""
    from napari_synthgen.sample_data import resolve_model_source

    path = resolve_model_source("demo-diffusion")
    info = load_model(path).info
    assert info.family == "diffusion" and path.stat().st_size < 25 * 2**20
    assert info.classes[0] > 0  # trained with --unlabel-fraction: background is known
    mask = make_layout("dense", (128, 128), seed=3)
    synth = make_synthesizer("demo-diffusion", device="cpu", steps=8)
    a, b = synth(mask, seed=0), synth(mask, seed=1)
    for img in (a, b):
        assert img[mask == 2].mean() < img[mask == 1].mean() - 20
    assert np.abs(a.astype(float) - b).mean() > 8
    assert np.array_equal(a, synth(mask, seed=0))  # same seed, same image
