"""Crops placed over objects (``train --object-share``): with sparse organelles most random
crops hold none, so a share of them is centred on a random object pixel, as nnU-Net
oversamples foreground."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_synthgen.cli import main
from napari_synthgen.encoding import image_to_unit
from napari_synthgen.registry import load_model, make_config
from napari_synthgen.training.config import ConfigError
from napari_synthgen.training.data import DataError, Sample, TileSampler


def _sparse_samples() -> list[Sample]:
    """Two 256 px images: one with a single 12 px object (interior ringed by boundary) in a
    corner, one with no object at all."""
    rng = np.random.default_rng(0)
    mask = np.zeros((256, 256), np.uint8)
    mask[200:212, 30:42] = 2
    mask[202:210, 32:40] = 1
    empty = np.zeros_like(mask)
    return [Sample(n, rng.integers(0, 255, (256, 256), dtype=np.uint8), m)
            for n, m in (("organelle", mask), ("tissue", empty))]


def test_a_share_of_the_crops_holds_an_object_and_the_rest_are_unchanged() -> None:
    samples = _sparse_samples()
    kw = {"tile": 32, "stride": None, "batch_size": 8, "seed": 5, "flips": True, "rot90": True}
    plain, all_objects = TileSampler(samples, **kw), TileSampler(samples, **kw, object_share=1)
    half = TileSampler(samples, **kw, object_share=0.5)
    n_plain = n_half = 0
    for step in range(8):
        (pm, pi), (hm, hi) = plain.batch(step), half.batch(step)
        om = all_objects.batch(step)[0]
        has = (om > 0).flatten(1).any(1)
        assert bool(has.all())  # every crop over an object: both classes
        assert {1, 2} <= set(torch.unique(om).tolist())
        held = (hm > 0).flatten(1).any(1)
        n_plain += int((pm > 0).flatten(1).any(1).sum())
        n_half += int(held.sum())
        # a crop without an object was not placed: it is the one a run without it draws
        assert torch.equal(hm[~held], pm[~held]) and torch.equal(hi[~held], pi[~held])
        again = TileSampler(samples, **kw, object_share=0.5).batch(step)  # (seed, step) only
        assert torch.equal(again[0], hm) and torch.equal(again[1], hi)
    assert n_plain <= 4 and n_half >= 20  # a 12 px object in 2 x 256^2: rare without it
    # two ranks see what one process with their whole batch sees
    ranks = [TileSampler(samples, **{**kw, "batch_size": 4}, object_share=0.5, rank=r, world=2)
             for r in (0, 1)]
    assert torch.equal(torch.cat([r.batch(3)[0] for r in ranks]), half.batch(3)[0])


def test_object_crops_keep_image_and_mask_aligned() -> None:
    samples = _sparse_samples()
    src = samples[0]
    s = TileSampler(samples, tile=32, stride=None, batch_size=1, seed=1, object_share=1.0)
    corners = set()
    for step in range(20):
        m, im = s.batch(step)
        # where the crop sits in the image with the object (found by its mask and image)
        found = [(y, x) for y in range(225) for x in range(225)
                 if np.array_equal(src.mask[y:y + 32, x:x + 32], m[0].numpy())
                 and np.array_equal(image_to_unit(src.image[y:y + 32, x:x + 32]), im[0, 0].numpy())]
        assert len(found) == 1
        corners.add(found[0])
    assert len(corners) > 10  # the object falls at random places inside the tile


def test_images_without_objects_give_plain_crops_and_a_grid_refuses_it() -> None:
    empty = [s for s in _sparse_samples() if s.name == "tissue"]
    kw = {"tile": 32, "stride": None, "batch_size": 4, "seed": 2}
    assert torch.equal(TileSampler(empty, **kw, object_share=1).batch(0)[1],
                       TileSampler(empty, **kw).batch(0)[1])
    with pytest.raises(DataError, match="drop one of them"):
        TileSampler(empty, **{**kw, "stride": 16}, object_share=0.3)


def test_config_checks_the_share(isbi_small: Path) -> None:
    base = {"data": [str(isbi_small)], "steps": 1}
    with pytest.raises(ConfigError, match=r"object_share is a share of tiles in \[0, 1\]"):
        make_config(family="pix2pix", object_share=1.5, **base).validate()
    with pytest.raises(ConfigError, match="drop --stride or --object-share"):
        make_config(family="pix2pix", object_share=0.3, stride=64, **base).validate()


def test_train_object_share_through_the_cli_is_recorded(tmp_path: Path,
                                                        isbi_dir: Path) -> None:
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    mask = np.zeros((96, 96), np.uint8)
    mask[60:72, 10:22] = 255  # one organelle, read as binary
    image = tifffile.imread(isbi_dir / "images" / "isbi2012_train_00.tif")[:96, :96]
    tifffile.imwrite(data / "images" / "a.tif", image)
    tifffile.imwrite(data / "masks" / "a.tif", mask)
    out = tmp_path / "run"
    assert main(["train", "--family", "pix2pix", "--data", str(data), "--out", str(out),
                 "--read-as", "binary", "--object-share", "0.5", "--netG", "resnet_6blocks",
                 "--ngf", "4", "--ndf", "4", "--tile", "32", "--batch-size", "2", "--steps", "2",
                 "--val-fraction", "0", "--device", "cpu", "--precision", "fp32"]) == 0
    assert load_model(out).info.metadata["config"]["object_share"] == 0.5
    assert "object_share: 0.5" in (out / "config.yaml").read_text(encoding="utf-8")
