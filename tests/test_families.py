"""The model-family registry: pix2pix through it, unknown families, and a toy second family that
trains through the engine, saves, loads, inspects and synthesizes like any other."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_synthgen import families
from napari_synthgen.encoding import encode_masks, encoding_lut, n_channels
from napari_synthgen.families import CliOption, Family, StepResult
from napari_synthgen.models.checkpoints import (
    CheckpointError,
    family_metadata,
    load_model,
    model_info,
    save_family_model,
)
from napari_synthgen.synthesis import Pix2PixSynthesizer, Synthesizer
from napari_synthgen.training.config import ConfigError, TrainConfig
from napari_synthgen.training.engine import latest_checkpoint, train

# --------------------------------------------------------------------------- a toy family


@dataclass
class ToySettings:
    width: int = 4
    smooth: float = 0.0


class ToyNet(nn.Module):
    """Encoded mask -> image: one 3x3 convolution, ReLU, one 1x1 convolution, tanh."""

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_ch, width, 3, padding=1)
        self.b = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.b(F.relu(self.a(x))))


class ToyTrainer:
    def __init__(self, cfg: TrainConfig, device: torch.device, total_steps: int) -> None:
        self.cfg, self.device = cfg, device
        self.net = ToyNet(n_channels(cfg.encoding), cfg.width).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.lut = encoding_lut(cfg.encoding, device)

    def step(self, masks: torch.Tensor, images: torch.Tensor) -> StepResult:
        out = self.net(encode_masks(masks.to(self.device), self.lut))
        loss = F.l1_loss(out, images.to(self.device))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        scale = float(out.detach().abs().mean())
        return StepResult({"l1": float(loss.detach()), "scale": scale},
                          bool(torch.isfinite(loss)))

    @torch.no_grad()
    def generate(self, masks: torch.Tensor) -> torch.Tensor:
        return self.net(encode_masks(masks.to(self.device), self.lut))[:, 0].cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])

    def set_base_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def save_model(self, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
        return save_family_model(path, self.net, family="toy",
                                 entries={"toy": {"width": self.cfg.width}},
                                 encoding=self.cfg.encoding, tile=self.cfg.tile,
                                 metadata=metadata)


class ToySynthesizer(Synthesizer):
    family = "toy"

    def __init__(self, model: Any, *, device: str = "cpu", precision: str = "fp32",
                 tile: int | None = None, overlap: int | None = None,
                 batch_size: int | None = None, encoding: str | None = None,
                 stochastic: bool = False) -> None:
        self.model = model = self._load(model, encoding)
        self.info, self.encoding = model.info, model.info.encoding
        self.device = torch.device("cpu")
        self.tile = int(tile or model.info.tile)
        self.overlap = self.tile // 4 if overlap is None else overlap
        self.batch_size = batch_size or 4
        self.stochastic = stochastic
        self.precision, self.precision_note = "fp32", "the toy runs fp32"
        self._lut = encoding_lut(self.encoding)
        self._windows, self._cache = {}, {}

    def _infer(self, padded, origins, seed, z, t):
        crops = np.stack([padded[y : y + t, x : x + t] for y, x in origins])
        with torch.inference_mode():
            out = self.model.network(encode_masks(torch.from_numpy(crops), self._lut))
        return out[:, 0].numpy()


class ToyFamily(Family):
    name = "toy"
    settings = ToySettings
    arch_keys = ("width",)
    loss_names = ("l1", "scale")
    defaults: ClassVar[dict[str, Any]] = {"encoding": "onehot", "tile": 64, "out": "runs/toy"}
    cli_options = (CliOption("--toy-width", "width", int, "toy network width"),)

    def validate(self, cfg: TrainConfig) -> list[str]:
        return [] if cfg.width >= 1 else [f"width must be at least 1; got {cfg.width}."]

    def summary(self, config: dict[str, Any]) -> str:
        return f"toy width {config['width']}"

    def build_trainer(self, cfg, device, precision, total_steps, ddp):
        return ToyTrainer(cfg, device, total_steps)

    def load(self, tensors, doc, *, file, kind, notes, encoding, dropout):
        from napari_synthgen.models.checkpoints import LoadedModel

        if doc is None:
            raise CheckpointError("toy models are only saved by napari-synthgen.")
        width = doc["toy"]["width"]
        enc = encoding or doc["encoding"]
        net = ToyNet(n_channels(enc), width)
        net.load_state_dict(tensors, strict=True)
        info = model_info("toy", file, net.eval(), input_nc=n_channels(enc), output_nc=1,
                          encoding=enc, encoding_source="metadata", tile=doc["tile"],
                          format="synthgen-safetensors", notes=notes,
                          metadata=family_metadata(doc, ("toy",)),
                          details={"architecture": f"toy width {width}", "width": width})
        return LoadedModel(network=net, info=info, spec={"width": width})

    def synthesizer_class(self) -> type:
        return ToySynthesizer


@pytest.fixture
def toy() -> Family:
    family = families.register(ToyFamily())
    yield family
    families.unregister("toy")


# --------------------------------------------------------------------------- the registry


def test_pix2pix_is_the_first_family_and_the_default() -> None:
    assert families.names()[0] == "pix2pix"
    p2p = families.get("pix2pix")
    assert p2p.loss_names == ("G_GAN", "G_L1", "D_real", "D_fake")
    cfg = TrainConfig(data=["x"], steps=1, netG="unet_128", ngf=8)
    assert cfg.family == "pix2pix" and cfg.netG == "unet_128" and cfg.settings.ngf == 8
    assert list(cfg.to_dict()) == list(p2p.config_order), "config.yaml keeps its old layout"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_an_unknown_family_is_a_clear_error_that_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(families.FamilyError, match=r"unknown model family 'nope'; known "
                                                   r"families: pix2pix"):
        families.get("nope")
    with pytest.raises(ConfigError, match="known families: pix2pix"):
        TrainConfig(family="nope", data=["x"], steps=1)
    from safetensors.torch import save_file

    forged = tmp_path / "forged.safetensors"
    header = {"format_version": 1, "family": "nope", "encoding": "rgb", "tile": 64}
    save_file({"w": torch.zeros(2)}, forged, metadata={"napari_synthgen": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"holds a 'nope' model.*known families: pix2pix"):
        load_model(forged)
    with pytest.raises(CheckpointError, match="'nope' model"):
        Synthesizer(forged)
    from napari_synthgen.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--family", "nope", "--data", "x", "--steps", "1"])
    assert exit_.value.code == 2


def test_register_refuses_a_second_family_of_the_same_name(toy: Family) -> None:
    with pytest.raises(families.FamilyError, match="already registered"):
        families.register(ToyFamily())
    assert families.register(toy) is toy  # the same object again is fine
    assert set(families.names()) == {*families.BUILTIN, "toy"}


def test_settings_of_another_family_are_refused_by_name(toy: Family) -> None:
    with pytest.raises(ConfigError, match=r"netG is a pix2pix setting.*this configuration is toy"):
        TrainConfig(family="toy", data=["x"], steps=1, netG="unet_128")
    with pytest.raises(ConfigError, match="width is a toy setting"):
        TrainConfig(data=["x"], steps=1, width=3)
    cfg = TrainConfig(family="toy", data=["x"], steps=1)
    assert (cfg.encoding, cfg.tile, cfg.out) == ("onehot", 64, "runs/toy"), "family defaults"
    with pytest.raises(AttributeError, match="no setting 'netG'"):
        _ = cfg.netG
    with pytest.raises(ConfigError, match="width must be at least 1"):
        TrainConfig(family="toy", data=["x"], steps=1, width=0).validate()


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
    cfg = TrainConfig(family="toy", data=[str(isbi_small)], out=str(out), steps=2,
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
    assert model.info.family == "toy" and model.info.netG is None
    assert model.info.details == {"architecture": "toy width 3", "width": 3}
    assert model.info.metadata["step"] == 2 and model.info.classes is not None
    assert model.info.short() == "toy toy width 3"

    synth = Synthesizer(g)
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
    changed = TrainConfig(family="toy", data=[str(isbi_small)], out=str(out), steps=4, width=5,
                          precision="fp32", device="cpu")
    failed = list(train(changed, resume=out))[-1]
    assert failed["event"] == "failed" and "width: checkpoint 3, now 5" in failed["message"]


def test_the_synthesizer_factory_dispatches_on_the_family(
    tiny_model: Path, toy: Family, reference_fixtures: Path, tmp_path: Path
) -> None:
    from napari_synthgen.models.checkpoints import model_family
    from napari_synthgen.synthesis import make_synthesizer

    assert model_family(tiny_model) == "pix2pix"
    assert model_family(reference_fixtures / "unet256_batch_ngf8") == "pix2pix"
    assert model_family(tmp_path / "nothing-here") is None
    toy_file = save_family_model(tmp_path / "toy.safetensors", ToyNet(3, 2), family="toy",
                                 entries={"toy": {"width": 2}}, encoding="onehot", tile=32)
    assert model_family(toy_file) == "toy"
    assert type(make_synthesizer(toy_file)) is ToySynthesizer
    pix = Synthesizer(tiny_model, device="cpu", precision="fp32")
    assert type(pix) is Pix2PixSynthesizer and pix.info.family == "pix2pix"
    with pytest.raises(ValueError, match=r"runs toy models, but .* holds a pix2pix model"):
        ToySynthesizer(tiny_model)
