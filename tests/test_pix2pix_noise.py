"""pix2pix with noise channels (``noise_nc``): a region the mask leaves uniform is drawn anew for
each seed and does not repeat from tile to tile; the same seed gives the same bytes, tiles and
live-preview updates see the same noise, resume is exact, and files without noise are as
before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_synthgen.families.pix2pix.files import save_model
from napari_synthgen.families.pix2pix.networks import GeneratorSpec, build_generator
from napari_synthgen.families.pix2pix.synthesizer import NOISE_BLOCK, noise_crop
from napari_synthgen.models.checkpoints.common import METADATA_KEY
from napari_synthgen.registry import load_model, make_config, make_synthesizer
from napari_synthgen.training.config import ConfigError
from napari_synthgen.training.engine import latest_checkpoint, train

TINY = dict(netG="unet_128", ngf=4, ndf=4, tile=128, precision="fp32")


def _model(path: Path, noise_nc: int, noise_scale: int = 1) -> Path:
    torch.manual_seed(0)
    spec = GeneratorSpec("unet_128", input_nc=3, output_nc=1, ngf=4, noise_nc=noise_nc,
                         noise_scale=noise_scale)
    return save_model(path, build_generator(spec).eval(), spec, encoding="onehot", tile=128)


def _header(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return json.loads(fh.metadata()[METADATA_KEY])


def test_noise_canvas_is_the_same_numbers_for_any_window() -> None:
    whole = noise_crop(5, 2, 0, 0, 3 * NOISE_BLOCK, 2)
    assert whole.shape == (2, 3 * NOISE_BLOCK, 3 * NOISE_BLOCK) and whole.dtype == np.float32
    for y, x, size in ((10, 20, 64), (63, 64, 100), (0, 70, 1), (37, 5, 128)):
        assert np.array_equal(noise_crop(5, 2, y, x, size, 2),
                              whole[:, y:y + size, x:x + size])
    assert abs(float(whole.mean())) < 0.05 and abs(float(whole.std()) - 1) < 0.05
    assert not np.array_equal(noise_crop(6, 2, 0, 0, 64, 1), noise_crop(5, 2, 0, 0, 64, 1))
    assert not np.array_equal(noise_crop(5, 3, 0, 0, 64, 1), noise_crop(5, 2, 0, 0, 64, 1))


def test_a_file_records_its_noise_and_one_without_keeps_its_layout(tmp_path: Path) -> None:
    noisy = load_model(_model(tmp_path / "noisy.safetensors", 2))
    assert noisy.spec.noise_nc == 2 and noisy.info.input_nc == 3
    assert noisy.network.model.model[0].in_channels == 5  # 3 mask channels, then 2 of noise
    assert "2 noise channel(s)" in noisy.info.details["summary"]
    assert _header(tmp_path / "noisy.safetensors")["generator"]["noise_nc"] == 2
    plain = tmp_path / "plain.safetensors"
    _model(plain, 0)
    assert "noise_nc" not in _header(plain)["generator"]  # the layout files always had
    assert load_model(plain).spec.noise_nc == 0
    with pytest.raises(ValueError, match="noise_nc must be a whole number >= 0"):
        GeneratorSpec("unet_128", noise_nc=-1)


def _seeded_and_seamless(synth, mask: np.ndarray) -> None:
    """The same seed gives the same bytes, another seed other tissue, and live preview
    recomputes the touched tiles with the noise the full run used there; closes ``synth``."""
    a, again, b = synth(mask, seed=0), synth(mask, seed=0), synth(mask, seed=1)
    assert np.array_equal(a, again) and not np.array_equal(a, b)
    synth(mask, seed=4, keep=True)
    edited = mask.copy()
    edited[200:210, 200:210] = 2
    image, regions = synth.update(edited)
    assert regions and np.array_equal(image, synth(edited, seed=4))
    synth.close()


def test_noise_draws_a_uniform_region_anew_per_seed_seamlessly(tmp_path: Path) -> None:
    mask = np.zeros((300, 260), np.uint8)  # one class everywhere: nothing but noise to vary
    mask[100:140, 50:90] = 1
    synth = make_synthesizer(load_model(_model(tmp_path / "n.safetensors", 1)), device="cpu",
                             precision="fp32")
    assert synth.describe()["noise_nc"] == 1
    _seeded_and_seamless(synth, mask)
    plain = make_synthesizer(load_model(_model(tmp_path / "p.safetensors", 0)), device="cpu",
                             precision="fp32")
    assert "noise_nc" not in plain.describe()
    assert np.array_equal(plain(mask, seed=0), plain(mask, seed=1))  # nothing to vary
    plain.close()


def test_training_with_noise_resumes_exactly_and_is_checked(tmp_path: Path,
                                                           isbi_small: Path) -> None:
    def cfg(out: Path, **extra):
        return make_config(data=[str(isbi_small)], out=str(out), **{
            "steps": 6, "batch_size": 2, "checkpoint_every": 100, "sample_every": 3, "seed": 2,
            "noise_nc": 1, **TINY, **extra})

    full = list(train(cfg(tmp_path / "full")))
    assert full[-1]["event"] == "finished"
    seen: list[int] = []
    for event in train(cfg(tmp_path / "split"), stop=lambda: bool(seen) and seen[-1] >= 3):
        if event["event"] == "progress":
            seen.append(event["step"])
    assert latest_checkpoint(tmp_path / "split")[0] == 3
    list(train(cfg(tmp_path / "split"), resume=tmp_path / "split"))
    a, b = (load_model(tmp_path / run) for run in ("full", "split"))
    assert a.spec.noise_nc == 1
    for key, value in a.network.state_dict().items():
        assert torch.equal(value, b.network.state_dict()[key]), f"{key} differs after resume"
    refused = list(train(cfg(tmp_path / "split", noise_nc=0, steps=8),
                         resume=tmp_path / "split"))[-1]
    assert refused["event"] == "failed" and "noise_nc: checkpoint 1, now 0" in refused["message"]
    with pytest.raises(ConfigError, match="noise_nc must be >= 0"):
        cfg(tmp_path / "bad", noise_nc=-1).validate()


def test_coarse_noise_is_smooth_unit_variance_and_the_same_in_any_window() -> None:
    """noise_scale 8: one value every 8 px, interpolated and renormalised, so neighbouring
    pixels agree (no grain) and every pixel still has unit variance; any window of the slice's
    field holds the same numbers, as overlapping tiles must."""
    from napari_synthgen.families.pix2pix import noise

    field = noise.draw((256, 1, 64, 64), 8, torch.Generator().manual_seed(0))
    assert abs(float(field.std()) - 1) < 0.02
    per_pixel = field.std(dim=0)[0]  # over the batch: unit variance at every phase
    assert float(per_pixel.min()) > 0.8 and float(per_pixel.max()) < 1.2
    smooth = float((field[..., 1:] * field[..., :-1]).mean())
    grain = noise.draw((256, 1, 64, 64), 1, torch.Generator().manual_seed(0))
    rough = float((grain[..., 1:] * grain[..., :-1]).mean())
    assert smooth > 0.9 and abs(rough) < 0.05
    coarse = torch.randn(1, 1, 50, 50)
    whole = noise.upsample(coarse, 8, 0, 0, 300, 300)
    for y, x in ((37, 91), (8, 0), (100, 163)):
        part = coarse[..., y // 8:y // 8 + noise.coarse_extent(y, 128, 8),
                      x // 8:x // 8 + noise.coarse_extent(x, 128, 8)]
        assert torch.allclose(noise.upsample(part, 8, y, x, 128, 128),
                              whole[..., y:y + 128, x:x + 128], atol=1e-6)


def test_a_coarse_noise_model_is_recorded_seeded_and_seamless(tmp_path: Path) -> None:
    path = _model(tmp_path / "coarse.safetensors", 1, noise_scale=8)
    assert _header(path)["generator"]["noise_scale"] == 8
    assert "noise_scale" not in _header(_model(tmp_path / "fine.safetensors", 1))["generator"]
    model = load_model(path)
    assert model.spec.noise_scale == 8 and "every 8 px" in model.info.details["summary"]
    mask = np.zeros((300, 260), np.uint8)
    mask[100:140, 50:90] = 1
    synth = make_synthesizer(model, device="cpu", precision="fp32")
    assert synth.describe()["noise_scale"] == 8
    _seeded_and_seamless(synth, mask)
    with pytest.raises(ValueError, match="noise_scale must be a whole number >= 1"):
        GeneratorSpec("unet_128", noise_nc=1, noise_scale=0)


def test_training_with_coarse_noise_records_it_and_needs_noise(tmp_path: Path,
                                                               isbi_small: Path) -> None:
    def cfg(out: Path, **extra):
        return make_config(data=[str(isbi_small)], out=str(out), **{
            "steps": 3, "batch_size": 2, "checkpoint_every": 100, "sample_every": 100,
            "seed": 2, "noise_nc": 1, "noise_scale": 8, **TINY, **extra})

    assert list(train(cfg(tmp_path / "run")))[-1]["event"] == "finished"
    assert load_model(tmp_path / "run").spec.noise_scale == 8
    with pytest.raises(ConfigError, match="noise_nc is 0"):
        cfg(tmp_path / "bad", noise_nc=0).validate()
