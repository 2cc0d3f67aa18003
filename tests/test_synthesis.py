"""Tiled synthesis: any size, no seams, determinism, variations, precision, dirty-tile updates."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen.devices import DeviceError
from napari_synthgen.layouts import make_layout
from napari_synthgen.masks import MaskError
from napari_synthgen.registry import make_synthesizer
from napari_synthgen.synthesis import SynthesisError, Synthesizer
from napari_synthgen.tiling import blend_window, plan_tiles


def _seam_ratio(image: np.ndarray, synth: Synthesizer) -> float:
    """Mean |gradient| across tile edges over the mean |gradient| across all other lines.

    The image is smoothed first (Gaussian, sigma 2): a seam is a step between tiles, while a
    generator's texture (and an untrained one's checkerboard) is high-frequency.
    """
    from scipy.ndimage import gaussian_filter

    grid = plan_tiles(*image.shape, synth.tile, synth.overlap)
    img = gaussian_filter(image.astype(np.float64), 2.0)
    gx = np.abs(np.diff(img, axis=1)).mean(axis=0)  # gradient between column c and c+1
    gy = np.abs(np.diff(img, axis=0)).mean(axis=1)
    edges_x = {x - grid.left + d for x in grid.xs for d in (0, synth.tile)} - {0}
    edges_y = {y - grid.top + d for y in grid.ys for d in (0, synth.tile)} - {0}
    ex = [c - 1 for c in edges_x if 0 < c < image.shape[1]]
    ey = [r - 1 for r in edges_y if 0 < r < image.shape[0]]
    border = np.concatenate([gx[ex], gy[ey]])
    inside = np.concatenate([np.delete(gx, ex), np.delete(gy, ey)])
    return float(border.mean() / inside.mean())


@pytest.mark.parametrize("shape", [(700, 900), (100, 130), (37, 5), (1, 1)])
def test_any_size_returns_mask_shape(tiny_model: Path, shape: tuple[int, int]) -> None:
    mask = make_layout("dense", shape, seed=1) if min(shape) >= 32 else np.ones(shape, np.uint8)
    image = make_synthesizer(tiny_model, device="cpu", precision="fp32")(mask)
    assert image.shape == shape and image.dtype == np.uint8


def test_no_visible_seams(tiny_model: Path) -> None:
    mask = make_layout("dense", (700, 900), seed=3)
    blended = make_synthesizer(tiny_model, device="cpu", precision="fp32")
    image = blended(mask)
    assert image.std() > 5, "the test model must give texture for seams to be visible"
    assert _seam_ratio(image, blended) <= 1.1
    # the measure does see seams: tiles that just abut (no overlap, no blending) leave steps,
    # here from per-tile instance-norm statistics
    exact = make_layout("dense", (640, 896), seed=3)
    hard = make_synthesizer(tiny_model, device="cpu", precision="fp32", overlap=0)
    assert _seam_ratio(hard(exact), hard) > 1.5


def test_blend_window_is_smooth_and_positive() -> None:
    w = blend_window(64, 16)
    assert w.min() > 0 and w.max() == pytest.approx(1.0)
    assert np.all(np.diff(w[32, :32]) >= 0)


def test_deterministic_and_seed_independent_in_eval(tiny_unet: Path, isbi_mask: np.ndarray
                                                   ) -> None:
    synth = make_synthesizer(tiny_unet, device="cpu", precision="fp32")
    a, b = synth(isbi_mask, seed=0), synth(isbi_mask, seed=5)
    np.testing.assert_array_equal(a, b)


def test_stochastic_variations_reproducible_by_seed(tiny_unet: Path, isbi_mask: np.ndarray
                                                    ) -> None:
    synth = make_synthesizer(tiny_unet, device="cpu", precision="fp32", stochastic=True)
    v0, v1, v0_again = synth(isbi_mask, seed=0), synth(isbi_mask, seed=1), synth(isbi_mask, seed=0)
    np.testing.assert_array_equal(v0, v0_again)
    assert np.abs(v0.astype(int) - v1).mean() > 0.5
    # batching does not change a tile's noise: batch 1 gives the same image
    one = make_synthesizer(tiny_unet, device="cpu", precision="fp32", stochastic=True, batch_size=1)
    np.testing.assert_array_equal(one(isbi_mask, seed=1), v1)


def test_bf16_close_to_fp32(tiny_unet: Path, isbi_mask: np.ndarray) -> None:
    fp32 = make_synthesizer(tiny_unet, device="cpu", precision="fp32")(isbi_mask).astype(np.float64)
    bf16 = make_synthesizer(tiny_unet, device="cpu", precision="bf16")(isbi_mask).astype(np.float64)
    rel = np.abs(bf16 - fp32).mean() / max(np.abs(fp32 - 127.5).mean(), 1.0)
    assert rel < 2e-2


def test_auto_precision_follows_the_written_rule(tiny_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen import devices

    for flags, expected in ((frozenset({"amx_bf16", "avx512_bf16"}), "bf16"),
                            (frozenset({"avx512_bf16"}), "bf16"), (frozenset(), "fp32"),
                            (None, "fp32")):
        monkeypatch.setattr(devices, "cpu_bf16_flags", lambda f=flags: f)
        synth = make_synthesizer(tiny_model, device="cpu", precision="auto")
        assert synth.precision == expected, flags
        assert synth.describe()["precision_note"] == synth.precision_note
        assert synth.precision_note.startswith(f"auto: {expected}")
        explicit = make_synthesizer(tiny_model, device="cpu", precision="fp32")
        assert explicit.precision == "fp32" and explicit.precision_note == ""


def test_stack_is_synthesized_slice_by_slice(tiny_model: Path) -> None:
    stack = np.stack([make_layout("dense", (96, 80), seed=s) for s in range(3)])
    synth = make_synthesizer(tiny_model, device="cpu", precision="fp32")
    out = synth(stack)
    assert out.shape == stack.shape
    np.testing.assert_array_equal(out[2], synth(stack[2]))


def test_progress_is_reported(tiny_model: Path) -> None:
    seen: list[tuple[int, int]] = []
    make_synthesizer(tiny_model, device="cpu", precision="fp32", batch_size=3)(
        np.ones((200, 200), np.uint8), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and len(seen) > 2
    assert all(b[0] > a[0] for a, b in itertools.pairwise(seen))


def test_stroke_updates_only_touched_tiles(tiny_model: Path) -> None:
    mask = make_layout("dense", (300, 340), seed=2)
    synth = make_synthesizer(tiny_model, device="cpu", precision="fp32")
    before = synth(mask, keep=True)
    stroke = mask.copy()
    stroke[150:156, 170:178] = 2  # a brush stroke
    after, regions = synth.update(stroke)
    assert regions, "the stroke must dirty some tiles"
    touched = np.zeros(mask.shape, bool)
    for ys, xs in regions:
        touched[ys, xs] = True
    assert touched[150:156, 170:178].all()
    assert touched.mean() < 0.25, "only the tiles under the stroke are recomputed"
    np.testing.assert_array_equal(after[~touched], before[~touched])  # byte-identical elsewhere
    assert not np.array_equal(after[touched], before[touched])
    # and the result is what a full synthesis of the new mask gives
    full = make_synthesizer(tiny_model, device="cpu", precision="fp32")(stroke)
    assert np.abs(full.astype(int) - after).max() <= 1
    # no change, no work
    same, none = synth.update(stroke)
    assert none == [] and np.array_equal(same, after)


def test_update_without_kept_run_falls_back_to_full(tiny_model: Path) -> None:
    synth = make_synthesizer(tiny_model, device="cpu", precision="fp32")
    image, regions = synth.update(np.ones((70, 90), np.uint8))
    assert image.shape == (70, 90) and regions == [(slice(0, 70), slice(0, 90))]


def test_bad_parameters_are_explained(tiny_model: Path, tiny_unet: Path) -> None:
    with pytest.raises(SynthesisError, match=r"multiple of 128"):
        make_synthesizer(tiny_unet, device="cpu", tile=200)
    with pytest.raises(SynthesisError, match=r"overlap 40 must be between 0 and half"):
        make_synthesizer(tiny_model, device="cpu", overlap=40)
    with pytest.raises(ValueError, match=r"trained on 'rgb' masks .*cannot take 'label'"):
        make_synthesizer(tiny_model, device="cpu", encoding="label")
    with pytest.raises(MaskError, match=r"value 9"):
        make_synthesizer(tiny_model, device="cpu", precision="fp32")(np.full((8, 8), 9, np.uint8))


def test_missing_device_is_a_clear_error(tiny_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match=r"no usable CUDA GPU.*'auto' or 'cpu'"):
        make_synthesizer(tiny_model, device="cuda")
    with pytest.raises(DeviceError, match=r"fp16 autocast is not supported on the CPU"):
        make_synthesizer(tiny_model, device="cpu", precision="fp16")


def test_reference_checkpoint_synthesizes_any_size(reference_fixtures: Path) -> None:
    synth = make_synthesizer(reference_fixtures / "resnet9_instance_ngf8", device="cpu",
                        precision="fp32")
    assert synth.encoding == "rgb" and synth.fixed_tile is None
    image = synth(np.ones((300, 410), np.uint8))
    assert image.shape == (300, 410)


def test_tile_plans(reference_fixtures: Path, tiny_model: Path) -> None:
    unet = make_synthesizer(reference_fixtures / "unet256_batch_ngf8", device="cpu")
    # a reference file has no tile size: a slice that fits runs whole, as the reference tests
    whole = unet.plan(512, 512)
    assert (whole.tile, len(whole.tiles), whole.padded_height) == (512, 1, 512)
    assert unet.plan(100, 130).tile == 256 and len(unet.plan(100, 130).tiles) == 1
    assert unet.plan(512, 512, keep=True).tile == 256  # live preview recomputes tiles
    # beyond WHOLE_SLICE_MAX (or where tiles are cheaper) it tiles at 256 with overlap
    big = unet.plan(2048, 2048)
    assert big.tile == 256 and len(big.tiles) > 100
    # a model trained at a tile size always uses it
    trained = make_synthesizer(tiny_model, device="cpu")
    assert trained.fixed_tile == 64 and trained.plan(512, 512).tile == 64


def test_demo_model_gives_em_without_seams() -> None:
    from napari_synthgen.sample_data import demo_model_path, load_sample

    synth = make_synthesizer(demo_model_path(), device="cpu")
    assert synth.fixed_tile == 256 and synth.info.metadata["step"] == 8000
    mask = make_layout("dense", (700, 900), seed=7)
    image = synth(mask)
    assert _seam_ratio(image, synth) <= 1.1
    # EM-like: dark membranes, brighter interiors, grain inside cells
    assert image[mask == 2].mean() + 20 < image[mask == 1].mean()
    real, real_mask = load_sample()
    fake = synth(real_mask)
    assert abs(float(fake.mean()) - float(real.mean())) < 25 and fake.std() > 25
