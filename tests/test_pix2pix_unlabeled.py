"""pix2pix learns from unlabelled images: tiles without a mask train an unconditional PatchGAN
(images only), never L1 or the conditional D; resume is exact; the CLI records them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_synthgen import registry
from napari_synthgen.masks import NO_LABEL
from napari_synthgen.registry import load_model, make_config
from napari_synthgen.training.config import ConfigError, TrainConfig
from napari_synthgen.training.engine import latest_checkpoint, train

TINY = dict(netG="unet_128", ngf=4, ndf=4, tile=128, precision="fp32")


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> Path:
    """Three ISBI images without masks (a plain folder of images)."""
    root = tmp_path_factory.mktemp("raw")
    for i in range(20, 23):
        name = f"isbi2012_train_{i:02d}.tif"
        shutil.copy(isbi_dir / "images" / name, root / name)
    return root


def _trainer(cfg: TrainConfig):
    from napari_synthgen.families.pix2pix.training import Pix2PixModel

    torch.manual_seed(0)
    return Pix2PixModel(cfg.validate(), torch.device("cpu"), "fp32", total_steps=10)


def _batch(n_labelled: int, n_raw: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    masks = torch.randint(0, 3, (n_labelled + n_raw, 128, 128), generator=g).to(torch.uint8)
    masks[n_labelled:] = NO_LABEL
    images = torch.rand(n_labelled + n_raw, 1, 128, 128, generator=g) * 2 - 1
    return masks, images


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_a_batch_of_only_unlabelled_tiles_trains_only_the_unconditional_d(raw_dir: Path,
                                                                          isbi_small: Path
                                                                          ) -> None:
    cfg = make_config(data=[str(isbi_small)], unlabeled=[str(raw_dir)], steps=10, **TINY)
    model = _trainer(cfg)
    assert model.Du_raw is not None
    g0, d0, du0 = _params(model.G_raw), _params(model.D_raw), _params(model.Du_raw)
    result = model.step(*_batch(0, 2))
    assert result.losses["G_L1"] == 0.0 and result.losses["G_GAN"] == 0.0
    assert result.losses["DU_real"] > 0.0 and result.finite
    assert all(torch.equal(v, _params(model.G_raw)[k]) for k, v in g0.items())
    assert all(torch.equal(v, _params(model.D_raw)[k]) for k, v in d0.items())
    assert any(not torch.equal(v, _params(model.Du_raw)[k]) for k, v in du0.items())


def test_l1_and_the_conditional_d_see_only_the_labelled_tiles(raw_dir: Path,
                                                              isbi_small: Path) -> None:
    """A batch of 2 labelled + 2 raw tiles gives G and D the same update as the 2 labelled
    tiles alone (with D_u's weight 0, so that only the L1 and conditional terms act)."""
    cfg = make_config(data=[str(isbi_small)], unlabeled=[str(raw_dir)], steps=10,
                      lambda_unlabeled=0.0, dropout=False, **TINY)
    mixed, alone = _trainer(cfg), _trainer(cfg)
    masks, images = _batch(2, 2)
    a = mixed.step(masks, images).losses
    b = alone.step(masks[:2], images[:2]).losses
    assert a == b
    for one, two in ((mixed.G_raw, alone.G_raw), (mixed.D_raw, alone.D_raw)):
        for (k, v), w in zip(_params(one).items(), _params(two).values(), strict=True):
            assert torch.equal(v, w), k


def test_unconditional_d_sees_every_real_tile_and_pushes_g(raw_dir: Path,
                                                           isbi_small: Path) -> None:
    cfg = make_config(data=[str(isbi_small)], unlabeled=[str(raw_dir)], steps=10, **TINY)
    model = _trainer(cfg)
    seen: list[int] = []
    model.Du_raw.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    result = model.step(*_batch(1, 3))
    # D_u: the fake (1 labelled tile) and the 4 real tiles, then G's fake through it
    assert seen == [1, 4, 1]
    assert set(result.losses) == {"G_GAN", "G_L1", "D_real", "D_fake", "G_U", "DU_real",
                                  "DU_fake"}
    # without unlabelled tiles the run has no D_u and reports the usual four losses
    plain = _trainer(make_config(data=[str(isbi_small)], steps=10, **TINY))
    assert plain.Du_raw is None and "D_u" not in plain.state_dict()
    assert set(plain.step(*_batch(2, 0)).losses) == {"G_GAN", "G_L1", "D_real", "D_fake"}


def test_stop_and_resume_with_unlabelled_images_equals_one_run(tmp_path: Path, raw_dir: Path,
                                                               isbi_small: Path) -> None:
    def cfg(out: Path) -> TrainConfig:
        return make_config(data=[str(isbi_small)], unlabeled=[str(raw_dir)], out=str(out),
                           steps=8, batch_size=2, checkpoint_every=100, sample_every=100,
                           seed=3, **TINY)

    full = list(train(cfg(tmp_path / "full")))
    assert full[-1]["event"] == "finished" and full[-1]["step"] == 8
    seen: list[int] = []

    def stop() -> bool:
        return bool(seen) and seen[-1] >= 3

    for event in train(cfg(tmp_path / "split"), stop=stop):
        if event["event"] == "progress":
            seen.append(event["step"])
    assert latest_checkpoint(tmp_path / "split")[0] == 3
    second = list(train(cfg(tmp_path / "split"), resume=tmp_path / "split"))
    assert second[0]["resumed_from"] == 3 and second[-1]["step"] == 8
    a = load_model(tmp_path / "full").network.state_dict()
    b = load_model(tmp_path / "split").network.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    # the unconditional discriminator and its optimiser resume exactly too
    sa, sb = (torch.load(tmp_path / run / "checkpoints" / "step_0000008.state.pt",
                         weights_only=False)["model"] for run in ("full", "split"))
    for key in ("D_u", "opt_Du"):
        assert key in sa
    for key, value in sa["D_u"].items():
        assert torch.equal(value, sb["D_u"][key]), f"D_u {key} differs after resume"


def test_cli_trains_pix2pix_with_unlabeled_and_records_them(tmp_path: Path, raw_dir: Path,
                                                            isbi_small: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_synthgen", "train", "--family", "pix2pix",
         "--data", str(isbi_small), "--unlabeled", str(raw_dir), "--out", str(out),
         "--netG", "unet_128", "--ngf", "4", "--ndf", "4", "--tile", "128", "--steps", "4",
         "--batch-size", "2", "--lambda-unlabeled", "2", "--events", "jsonl"],
        capture_output=True, text=True, timeout=240, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert events[0]["n_unlabeled_images"] == 3
    assert "DU_real" in [e for e in events if e["event"] == "progress"][-1]["losses"]
    meta = load_model(out).info.metadata
    assert meta["null_condition"] is False  # its generator never sees the null input
    assert meta["config"]["lambda_unlabeled"] == 2.0
    assert meta["provenance"]["unlabeled_images"] == [
        f"{raw_dir.name}/isbi2012_train_{i}" for i in (20, 21, 22)]


def test_two_processes_train_with_unlabelled_tiles(tmp_path: Path, raw_dir: Path,
                                                   isbi_small: Path) -> None:
    """Under DDP a process whose tiles all lack a mask still runs G and D (zero loss)."""
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "napari_synthgen", "train", "--data", str(isbi_small), "--unlabeled",
         str(raw_dir), "--out", str(out), "--netG", "unet_128", "--ngf", "4", "--ndf", "4",
         "--tile", "128", "--steps", "6", "--checkpoint-every", "6", "--sample-every", "6",
         "--events", "jsonl"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_model(out).info.metadata["step"] == 6


def test_a_family_that_does_not_learn_unlabelled_tiles_is_refused_them(isbi_small: Path
                                                                       ) -> None:
    from toy_family import TOY

    registry.register(TOY)
    try:
        assert not TOY.learns_unlabeled
        with pytest.raises(ConfigError, match="does not learn from images without masks"):
            make_config("toy", data=[str(isbi_small)], steps=1,
                        unlabeled=[str(isbi_small)]).validate()
    finally:
        registry.unregister("toy")
    assert registry.get("pix2pix").learns_unlabeled
    with pytest.raises(ConfigError, match="lambda_unlabeled must be >= 0"):
        make_config(data=["x"], steps=1, lambda_unlabeled=-1.0).validate()
