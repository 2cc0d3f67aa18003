"""Stacks synthesized as volumes: initial noise correlated along z (families/diffusion/noise.py).

Real sections' texture continues from slice to slice (adjacent residual correlation 0.40-0.47);
the ``serial`` coupling must give a stack that correlation while every slice stays a sample of
the 2-D distribution, reproducibly; ``independent`` keeps the slices apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_synthgen.cli import main
from napari_synthgen.families.diffusion.files import load_diffusion
from napari_synthgen.families.diffusion.noise import (
    Z_COUPLINGS,
    StackNoise,
    ZCoupling,
    noise_field,
)
from napari_synthgen.families.diffusion.sampling import (
    DiffusionSamplingError,
    DiffusionSynthesizer,
)
from napari_synthgen.zconsistency import z_consistency

ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1])


def test_serial_noise_is_standard_normal_with_the_stated_correlation() -> None:
    coupling = Z_COUPLINGS["serial"]
    noise = StackNoise(coupling)
    fields = [noise.field(5, z, -7, 3, 256, 320) for z in range(24)]
    # slice 0 is the 2-D noise of the seed: a stack's first slice is the 2-D sample
    assert torch.equal(fields[0], noise_field(5, 0, -7, 3, 256, 320))
    for f in fields:  # every slice alone is standard normal (per-slice quality as in 2-D)
        assert abs(float(f.mean())) < 0.02 and abs(float(f.std()) - 1.0) < 0.02
    for lag in (1, 2, 4):
        measured = np.mean([_corr(fields[z], fields[z + lag]) for z in range(24 - lag)])
        assert measured == pytest.approx(coupling.correlation(lag), abs=0.03)
    # any slice alone (live preview of slice 9) equals the same slice computed in order
    assert torch.equal(StackNoise(coupling).field(5, 9, -7, 3, 256, 320), fields[9])
    # another region of the canvas gets the same noise where they overlap
    part = StackNoise(coupling).field(5, 6, 57, 67, 64, 64)
    assert torch.allclose(part, fields[6][64:128, 64:128], atol=1e-5)
    # independent slices are the plain per-slice noise
    assert torch.equal(StackNoise(Z_COUPLINGS["independent"]).field(5, 3, 0, 0, 8, 8),
                       noise_field(5, 3, 0, 0, 8, 8))


def test_a_coupling_whose_weights_do_not_sum_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"weights sum to 0\.9"):
        ZCoupling("bad", ((0.5, 0.9), (0.4, 0.1)))
    with pytest.raises(ValueError, match="must be >= 0 and in"):
        ZCoupling("bad", ((1.0, 1.0),))


@pytest.fixture(scope="module")
def isbi_crop() -> tuple[np.ndarray, np.ndarray]:
    """Six consecutive ISBI sections, 128 x 128: real masks and images of a real stack."""
    names = sorted((ISBI / "masks").glob("*.tif"))[:6]
    masks = np.stack([tifffile.imread(p)[:128, :128] for p in names])
    images = np.stack([tifffile.imread(ISBI / "images" / p.name)[:128, :128] for p in names])
    return masks, images


@pytest.fixture(scope="module")
def demo() -> object:
    return load_diffusion("demo-diffusion")


def _synth(model: object, coupling: str) -> DiffusionSynthesizer:
    return DiffusionSynthesizer(model, device="cpu", precision="bf16", steps=6,
                                z_coupling=coupling)


def test_serial_stacks_continue_texture_through_z_like_real_sections(
        demo: object, isbi_crop: tuple[np.ndarray, np.ndarray]) -> None:
    masks, images = isbi_crop
    serial = _synth(demo, "serial")
    stack = serial(masks, seed=3)
    assert stack.shape == masks.shape and stack.dtype == np.uint8
    # the first slice is the 2-D image of the same seed; the same seed gives the same bytes
    assert np.array_equal(stack[0], serial(masks[0], seed=3))
    assert np.array_equal(serial(masks, seed=3), stack)
    independent = _synth(demo, "independent")(masks, seed=3)
    real = z_consistency(images, masks).adjacent
    tied = z_consistency(stack, masks).adjacent
    apart = z_consistency(independent, masks).adjacent
    assert apart < 0.15  # independent slices share only their masks
    assert abs(tied - real) < 0.15 and tied > apart + 0.2, (tied, real, apart)
    # every slice stays an EM image of its mask: membranes darker than interiors
    for z in range(len(masks)):
        interior = stack[z][masks[z] == 1].mean()
        membrane = stack[z][masks[z] == 2].mean()
        assert interior - membrane > 20
    described = serial.describe()
    assert described["family_settings"]["z_coupling"] == "serial"
    assert described["z_coupling"]["components"] == [[0.2, 0.95], [0.8, 0.35]]


def test_unknown_z_coupling_is_refused(demo: object) -> None:
    with pytest.raises(DiffusionSamplingError, match="unknown z coupling 'wobbly'; use serial"):
        DiffusionSynthesizer(demo, device="cpu", z_coupling="wobbly")


def test_generate_turns_a_mask_stack_into_an_image_stack(
        tmp_path: Path, isbi_crop: tuple[np.ndarray, np.ndarray], capsys) -> None:
    masks, _ = isbi_crop
    folder = tmp_path / "masks"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", masks[:3, :64, :64])
    out = tmp_path / "out"
    assert main(["generate", "--model", "demo-diffusion", "--masks", str(folder), "--out",
                 str(out), "--steps", "3", "--device", "cpu", "--precision", "bf16"]) == 0
    image = tifffile.imread(out / "images" / "stack_s0.tif")
    assert image.shape == (3, 64, 64) and image.dtype == np.uint8
    assert np.array_equal(tifffile.imread(out / "masks" / "stack_s0.tif"), masks[:3, :64, :64])
    record = json.loads((out / "generate.jsonl").read_text().splitlines()[-1])
    assert record["params"]["z_coupling"] == "serial"
    # independent slices on request, recorded; they differ from the serial ones after slice 0
    assert main(["generate", "--model", "demo-diffusion", "--masks", str(folder), "--out",
                 str(tmp_path / "ind"), "--steps", "3", "--device", "cpu", "--precision",
                 "bf16", "--z-coupling", "independent"]) == 0
    other = tifffile.imread(tmp_path / "ind" / "images" / "stack_s0.tif")
    assert np.array_equal(other[0], image[0]) and not np.array_equal(other[1:], image[1:])
    record = json.loads((tmp_path / "ind" / "generate.jsonl").read_text().splitlines()[-1])
    assert record["params"]["z_coupling"] == "independent"
