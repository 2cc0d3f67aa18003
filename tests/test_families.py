"""The model-family registry: pix2pix through it, unknown families, and a toy second family that
trains through the engine, saves, loads, inspects and synthesizes like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_synthgen import registry
from napari_synthgen.families.base import Family
from napari_synthgen.families.pix2pix.synthesizer import Pix2PixSynthesizer
from napari_synthgen.models.checkpoints import (
    CheckpointError,
    save_family_model,
)
from napari_synthgen.registry import (
    config_from_dict,
    load_model,
    make_config,
    make_synthesizer,
)
from napari_synthgen.synthesis import Synthesizer
from napari_synthgen.training.config import ConfigError
from napari_synthgen.training.engine import latest_checkpoint, train
from toy_family import TOY, ToyFamily
from toy_family.network import ToyNet
from toy_family.synthesizer import ToySynthesizer


@pytest.fixture
def toy() -> Family:
    family = registry.register(TOY)  # the one line that adds a family
    yield family
    registry.unregister("toy")


# --------------------------------------------------------------------------- the registry


def test_pix2pix_is_the_first_family_and_the_default() -> None:
    assert registry.names()[0] == "pix2pix"
    p2p = registry.get("pix2pix")
    assert p2p.loss_names == ("G_GAN", "G_L1", "D_real", "D_fake")
    cfg = make_config(data=["x"], steps=1, netG="unet_128", ngf=8)
    assert cfg.family == "pix2pix" and cfg.netG == "unet_128" and cfg.settings.ngf == 8
    assert list(cfg.to_dict()) == list(p2p.config_order), "config.yaml keeps its old layout"
    assert config_from_dict(cfg.to_dict()) == cfg


def test_an_unknown_family_is_a_clear_error_that_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(registry.FamilyError, match=r"unknown model family 'nope'; known "
                                                   r"families: pix2pix"):
        registry.get("nope")
    with pytest.raises(ConfigError, match="known families: pix2pix"):
        make_config(family="nope", data=["x"], steps=1)
    from safetensors.torch import save_file

    forged = tmp_path / "forged.safetensors"
    header = {"format_version": 1, "family": "nope", "encoding": "rgb", "tile": 64}
    save_file({"w": torch.zeros(2)}, forged, metadata={"napari_synthgen": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"holds a 'nope' model.*known families: pix2pix"):
        load_model(forged)
    with pytest.raises(CheckpointError, match="'nope' model"):
        make_synthesizer(forged)
    from napari_synthgen.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--family", "nope", "--data", "x", "--steps", "1"])
    assert exit_.value.code == 2


def test_register_refuses_a_second_family_of_the_same_name(toy: Family) -> None:
    with pytest.raises(registry.FamilyError, match="already registered"):
        registry.register(ToyFamily())
    assert registry.register(toy) is toy  # the same object again is fine
    assert set(registry.names()) == {*(f.name for f in registry.BUILTIN), "toy"}


def test_settings_of_another_family_are_refused_by_name(toy: Family) -> None:
    with pytest.raises(ConfigError, match=r"netG is a pix2pix setting.*this configuration is toy"):
        make_config(family="toy", data=["x"], steps=1, netG="unet_128")
    with pytest.raises(ConfigError, match="width is a toy setting"):
        make_config(data=["x"], steps=1, width=3)
    cfg = make_config(family="toy", data=["x"], steps=1)
    assert (cfg.encoding, cfg.tile, cfg.out) == ("onehot", 64, "runs/toy"), "family defaults"
    with pytest.raises(AttributeError, match="no setting 'netG'"):
        _ = cfg.netG
    with pytest.raises(ConfigError, match="width must be at least 1"):
        make_config(family="toy", data=["x"], steps=1, width=0).validate()


def test_the_train_cli_offers_every_family_and_its_options(toy: Family) -> None:
    from napari_synthgen.cli import build_parser
    from napari_synthgen.training.cli import config_from_args

    args = build_parser().parse_args(["train", "--family", "toy", "--toy-width", "3",
                                      "--data", "x", "--steps", "2", "--lr", "0.01"])
    cfg = config_from_args(args)
    assert (cfg.family, cfg.width, cfg.lr, cfg.steps) == ("toy", 3, 0.01, 2)


# --------------------------------------------------------------------------- a second family


def test_a_second_family_trains_saves_loads_and_synthesizes(
    toy: Family, isbi_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "toy"
    cfg = make_config(family="toy", data=[str(isbi_small)], out=str(out), steps=2,
                      batch_size=2, width=3, precision="fp32", device="cpu",
                      checkpoint_every=1, sample_every=1)
    events = list(train(cfg))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished", events[-1]
    progress = [e for e in events if e["event"] == "progress"]
    assert [set(p["losses"]) for p in progress] == [{"l1", "scale"}] * 2
    assert "netG" not in (out / "config.yaml").read_text()
    step, g, _state = latest_checkpoint(out)
    assert step == 2

    model = load_model(g)
    assert model.info.family == "toy"
    assert model.info.details == {"architecture": "toy width 3", "width": 3}
    assert model.info.metadata["step"] == 2 and model.info.classes is not None
    assert model.info.short() == "toy toy width 3"

    synth = make_synthesizer(g)
    assert isinstance(synth, ToySynthesizer) and isinstance(synth, Synthesizer)
    mask = np.zeros((150, 170), np.uint8)
    mask[20:90, 30:120] = 1
    mask[60:64, :] = 2
    image = synth(mask, seed=0, keep=True)
    assert image.shape == mask.shape and image.dtype == np.uint8
    edited = mask.copy()
    edited[100:110, 140:150] = 1
    live, regions = synth.update(edited)
    np.testing.assert_array_equal(live, synth(edited))
    assert regions and len(regions) < len(synth.plan(*mask.shape).tiles)
    assert synth.describe()["model"]["family"] == "toy"

    from napari_synthgen.cli import main

    capsys.readouterr()
    assert main(["inspect", str(g)]) == 0
    text = capsys.readouterr().out
    assert "toy width 3" in text and "netG" not in text

    # a resume must keep the family's architecture settings
    changed = make_config(family="toy", data=[str(isbi_small)], out=str(out), steps=4, width=5,
                          precision="fp32", device="cpu")
    failed = list(train(changed, resume=out))[-1]
    assert failed["event"] == "failed" and "width: checkpoint 3, now 5" in failed["message"]


def test_the_synthesizer_factory_dispatches_on_the_family(
    tiny_model: Path, toy: Family, reference_fixtures: Path, tmp_path: Path
) -> None:
    from napari_synthgen.models.checkpoints import model_family
    from napari_synthgen.registry import make_synthesizer

    assert model_family(tiny_model) == "pix2pix"
    assert model_family(reference_fixtures / "unet256_batch_ngf8") == "pix2pix"
    assert model_family(tmp_path / "nothing-here") is None
    toy_file = save_family_model(tmp_path / "toy.safetensors", ToyNet(3, 2), family="toy",
                                 entries={"toy": {"width": 2}}, encoding="onehot", tile=32)
    assert model_family(toy_file) == "toy"
    assert type(make_synthesizer(toy_file)) is ToySynthesizer
    pix = make_synthesizer(tiny_model, device="cpu", precision="fp32")
    assert type(pix) is Pix2PixSynthesizer and pix.info.family == "pix2pix"
    with pytest.raises(ValueError, match=r"holds a pix2pix model, not a toy one"):
        ToySynthesizer(tiny_model)


def test_the_pix2pix_entry_offers_the_choices_its_networks_build() -> None:
    """The entry stays light (no torch), so it repeats the names networks.py builds."""
    from dataclasses import fields

    from napari_synthgen.families.pix2pix import GAN_MODES, PIX2PIX
    from napari_synthgen.families.pix2pix.networks import (
        DISCRIMINATORS,
        GENERATORS,
        INIT_TYPES,
        NORMS,
    )

    declared = {f.name: set(f.metadata.get("choices", ())) for f in fields(PIX2PIX.settings)}
    for key, known in (("netG", GENERATORS), ("norm", NORMS), ("netD", DISCRIMINATORS),
                       ("gan_mode", GAN_MODES), ("init_type", INIT_TYPES)):
        assert declared[key] == set(known), key
