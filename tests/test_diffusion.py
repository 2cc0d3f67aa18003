"""Mask-conditioned diffusion: training, files, seeds, seams, cancel, resume, unlabelled cells."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_synthgen.families.diffusion.files import load_diffusion, save_diffusion
from napari_synthgen.families.diffusion.networks import DiffusionSpecError, make_spec
from napari_synthgen.families.diffusion.sampling import (
    Cancelled,
    DiffusionSamplingError,
    DiffusionSynthesizer,
    noise_field,
)
from napari_synthgen.families.diffusion.training import DiffusionConfig, DiffusionTrainer
from napari_synthgen.layouts import make_layout
from napari_synthgen.masks import BACKGROUND, BOUNDARY, INTERIOR
from napari_synthgen.models.checkpoints import CheckpointError
from napari_synthgen.training.data import TileSampler, load_samples
from napari_synthgen.training.unlabel import unlabel_cells

try:
    from napari_synthgen.tiling import plan_tiles
except ImportError:  # before tiling moved out of synthesis.py
    from napari_synthgen.tiling import plan_tiles
from napari_synthgen.tiling import shift_offsets

CPU = torch.device("cpu")
TINY = {"block_out_channels": (16, 32), "attention": (False, True), "attention_head_dim": 16}
TRAIN_STEPS = 40


def _config(**kw: object) -> DiffusionConfig:
    base = {"tile": 64, "batch_size": 4, "lr": 2e-3, "warmup_steps": 5, "preview_steps": 4,
            "overrides": dict(TINY)}
    return DiffusionConfig(**{**base, **kw})


def _sampler(isbi_small: Path, cfg: DiffusionConfig) -> TileSampler:
    return TileSampler(load_samples([isbi_small]), tile=cfg.tile, stride=None,
                       batch_size=cfg.batch_size, seed=cfg.seed, flips=True)


@pytest.fixture(scope="module")
def trained(isbi_small: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, list[float], DiffusionTrainer]:
    """A tiny diffusion model trained briefly on six ISBI slices, and its losses."""
    cfg = _config()
    data = _sampler(isbi_small, cfg)
    trainer = DiffusionTrainer(cfg, CPU, "fp32", total_steps=TRAIN_STEPS)
    losses = []
    for k in range(TRAIN_STEPS):
        result = trainer.step(*data.batch(k))
        assert result.finite
        losses.append(result.losses["mse"])
    path = trainer.save_model(tmp_path_factory.mktemp("diffusion") / "tiny.safetensors",
                              {"classes": {"0": 0.0, "1": 0.7, "2": 0.3}})
    return path, losses, trainer


def _seam_ratio(image: np.ndarray, tile: int, overlap: int) -> float:
    """Mean |gradient| across tile edges over the mean |gradient| across all other lines
    (after Gaussian smoothing), as the pix2pix seam test measures it."""
    grid = plan_tiles(*image.shape, tile, overlap)
    edges_x = {x - grid.left + d for x in grid.xs for d in (0, tile)} - {0}
    edges_y = {y - grid.top + d for y in grid.ys for d in (0, tile)} - {0}
    return _edge_ratio(image, edges_y, edges_x)


def _edge_ratio(image: np.ndarray, edges_y: set[int], edges_x: set[int]) -> float:
    """:func:`_seam_ratio` for tile edges given as image rows and columns."""
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(image.astype(np.float64), 2.0)
    gx = np.abs(np.diff(img, axis=1)).mean(axis=0)
    gy = np.abs(np.diff(img, axis=0)).mean(axis=1)
    ex = [c - 1 for c in edges_x if 0 < c < image.shape[1]]
    ey = [r - 1 for r in edges_y if 0 < r < image.shape[0]]
    border = np.concatenate([gx[ex], gy[ey]])
    inside = np.concatenate([np.delete(gx, ex), np.delete(gy, ey)])
    return float(border.mean() / inside.mean())


def test_training_loss_falls_and_the_file_samples_identically(trained: tuple) -> None:
    path, losses, trainer = trained
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.7 * first, f"loss did not fall: {first:.4f} -> {last:.4f}"
    loaded = load_diffusion(path)
    assert loaded.info.family == "diffusion" and loaded.info.details["ema"]
    assert loaded.info.details["steps_trained"] == TRAIN_STEPS and loaded.info.classes == {
        0: 0.0, 1: 0.7, 2: 0.3}
    assert loaded.spec == trainer.spec
    ema = trainer.ema_network()
    for name, value in ema.state_dict().items():
        assert torch.equal(value, loaded.network.state_dict()[name]), name
    mask = make_layout("dense", (64, 64), seed=4)
    one = DiffusionSynthesizer(path, device="cpu", precision="fp32", steps=4)(mask, seed=3)
    two = DiffusionSynthesizer(load_diffusion(path), device="cpu", precision="fp32",
                               steps=4)(mask, seed=3)
    np.testing.assert_array_equal(one, two)
    # previews come from the EMA weights with a fixed seed: deterministic
    masks = torch.from_numpy(mask)[None]
    assert torch.equal(trainer.generate(masks), trainer.generate(masks))


def test_same_seed_same_image_whatever_the_batch_two_seeds_differ(trained: tuple) -> None:
    path = trained[0]
    mask = make_layout("dense", (100, 120), seed=5)  # several 64-px tiles
    model = load_diffusion(path)
    kw = {"device": "cpu", "precision": "fp32", "steps": 3}
    one = DiffusionSynthesizer(model, batch_size=1, **kw)(mask, seed=7)
    four = DiffusionSynthesizer(model, batch_size=4, **kw)(mask, seed=7)
    np.testing.assert_array_equal(one, four)
    other = DiffusionSynthesizer(model, batch_size=4, **kw)(mask, seed=8)
    assert np.abs(other.astype(int) - one).mean() > 5


def test_noise_is_a_function_of_seed_and_position() -> None:
    whole = noise_field(3, 0, -10, -20, 150, 170)
    part = noise_field(3, 0, 40, 30, 50, 60)
    assert torch.equal(whole[50:100, 50:110], part)
    assert not torch.equal(noise_field(4, 0, 40, 30, 50, 60), part)
    assert not torch.equal(noise_field(3, 1, 40, 30, 50, 60), part)


def test_larger_mask_than_tile_has_no_seams(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    mask = make_layout("dense", (200, 232), seed=6)
    fused = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=4, batch_size=8)
    image = fused(mask, seed=1)
    assert image.std() > 5, "the model must give texture for seams to be visible"
    fused_ratio = _seam_ratio(image, fused.tile, fused.overlap)
    assert fused_ratio <= 1.1
    # the measure does see seams: tiles sampled alone and laid side by side (no overlap,
    # so nothing is fused) leave steps between them
    exact = make_layout("dense", (192, 192), seed=6)
    hard = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=4, overlap=0,
                                batch_size=9)
    hard_ratio = _seam_ratio(hard(exact, seed=1), hard.tile, 0)
    assert hard_ratio > 1.2


def test_progress_per_step_and_cancel_within_one_step(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    synth = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=5)
    seen: list[tuple[int, int]] = []
    stack = np.stack([make_layout("dense", (64, 64), seed=s) for s in (1, 2)])
    out = synth(stack, progress=lambda d, t: seen.append((d, t)))
    assert out.shape == stack.shape and seen == [(i, 10) for i in range(1, 11)]
    done: list[int] = []
    with pytest.raises(Cancelled):
        synth(stack[0], progress=lambda d, t: done.append(d), cancel=lambda: len(done) >= 2)
    assert done == [1, 2]


def test_bf16_is_close_to_fp32(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    mask = make_layout("dense", (64, 64), seed=2)
    a = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=4)(mask, seed=2)
    b = DiffusionSynthesizer(model, device="cpu", precision="bf16", steps=4)(mask, seed=2)
    assert np.abs(a.astype(int) - b).mean() < 6


def test_live_preview_resamples_only_touched_tiles(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    synth = DiffusionSynthesizer(model, device="cpu", precision="fp32", preview_steps=3)
    mask = make_layout("dense", (160, 200), seed=3)
    before, regions = synth.update(mask, seed=4)
    assert regions == [(slice(0, 160), slice(0, 200))]
    stroke = mask.copy()
    stroke[20:26, 20:30] = BOUNDARY
    after, regions = synth.update(stroke)
    touched = np.zeros(mask.shape, bool)
    for ys, xs in regions:
        touched[ys, xs] = True
    assert touched[20:26, 20:30].all() and touched.mean() < 0.6
    np.testing.assert_array_equal(after[~touched], before[~touched])
    assert not np.array_equal(after[touched], before[touched])
    same, none = synth.update(stroke)
    assert none == [] and np.array_equal(same, after)


def test_exact_resume(isbi_small: Path) -> None:
    cfg = _config(overrides={"block_out_channels": (8, 16), "attention": (False, False)},
                  tile=32, warmup_steps=2)
    data = _sampler(isbi_small, cfg)
    straight = DiffusionTrainer(cfg, CPU, "fp32", total_steps=6)
    for k in range(6):
        straight.step(*data.batch(k))
    first = DiffusionTrainer(cfg, CPU, "fp32", total_steps=6)
    for k in range(3):
        first.step(*data.batch(k))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = DiffusionTrainer(cfg, CPU, "fp32", total_steps=6)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    for k in range(3, 6):
        resumed.step(*data.batch(k))
    for a, b in zip(straight.network.parameters(), resumed.network.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_network().parameters(), resumed.ema_network().parameters(),
                    strict=True):
        assert torch.equal(a, b)
    assert straight.lr == resumed.lr


def _cell_grid(n: int = 4, cell: int = 12, wall: int = 3) -> np.ndarray:
    side = n * (cell + wall) + wall
    mask = np.full((side, side), BOUNDARY, np.uint8)
    for i in range(n):
        for j in range(n):
            y, x = wall + i * (cell + wall), wall + j * (cell + wall)
            mask[y : y + cell, x : x + cell] = INTERIOR
    return mask


def test_unlabel_cells_removes_whole_cells_and_keeps_the_others() -> None:
    mask = _cell_grid()
    out = unlabel_cells(mask, 0.5, np.random.default_rng(1))
    cell, wall = 12, 3
    removed, kept = [], []
    for i in range(4):
        for j in range(4):
            y, x = wall + i * (cell + wall), wall + j * (cell + wall)
            inner = out[y : y + cell, x : x + cell]
            ring = out[y - wall : y + cell + wall, x - wall : x + cell + wall].copy()
            ring[wall:-wall, wall:-wall] = INTERIOR
            assert (inner == BACKGROUND).all() or (inner == INTERIOR).all()
            if (inner == BACKGROUND).all():
                removed.append((i, j))
            else:
                kept.append((i, j))
                # a kept cell keeps its whole boundary ring
                assert (ring[ring != INTERIOR] == BOUNDARY).all()
    assert removed and kept
    # walls between two removed cells (or a removed cell and the image edge) are background
    for i, j in removed:
        y, x = wall + i * (cell + wall), wall + j * (cell + wall)
        if j == 0:
            assert (out[y : y + cell, :wall] == BACKGROUND).all()
        if (i, j + 1) in removed:
            assert (out[y : y + cell, x + cell : x + cell + wall] == BACKGROUND).all()
    assert set(np.unique(out)) <= {BACKGROUND, INTERIOR, BOUNDARY}
    np.testing.assert_array_equal(unlabel_cells(mask, 0.0, np.random.default_rng(1)), mask)
    assert (unlabel_cells(mask, 1.0, np.random.default_rng(1)) == BACKGROUND).all()


def test_files_of_other_families_and_damaged_headers_are_refused(
        trained: tuple, tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    with pytest.raises(CheckpointError, match="'pix2pix' model, not a diffusion model"):
        load_diffusion(tiny_model)
    path = trained[0]
    tensors = load_file(path)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad, metadata={"napari_synthgen": "{not json"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_diffusion(bad)
    doc = {"format_version": 1, "family": "diffusion", "spec": {"config": "small",
                                                               "block_out_channels": [7]}}
    save_file(tensors, bad, metadata={"napari_synthgen": json.dumps(doc)})
    with pytest.raises(CheckpointError, match="save the model again"):
        load_diffusion(bad)
    spec = load_diffusion(path).spec
    with pytest.raises(CheckpointError, match="metadata may not set"):
        save_diffusion(tmp_path / "x.safetensors", load_diffusion(path).network, spec,
                       {"family": "other"})
    with pytest.raises(DiffusionSpecError, match="multiple of"):
        make_spec("small", tile=100)
    with pytest.raises(DiffusionSamplingError, match="unknown sampler"):
        DiffusionSynthesizer(path, device="cpu", precision="fp32", sampler="euler")


def test_ddim_sampler_runs_and_differs_from_dpm(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    mask = make_layout("dense", (64, 64), seed=2)
    kw = {"device": "cpu", "precision": "fp32", "steps": 4}
    ddim = DiffusionSynthesizer(model, sampler="ddim", **kw)
    assert ddim.describe()["sampler"] == "ddim"
    a = ddim(mask, seed=1)
    b = DiffusionSynthesizer(model, sampler="dpm", **kw)(mask, seed=1)
    assert a.shape == b.shape == mask.shape and not np.array_equal(a, b)



# --------------------------------------------------------------------------- shifted windows


def _shifted_edges(synth: DiffusionSynthesizer, shape: tuple[int, int], seed: int,
                   step: int) -> tuple[set[int], set[int]]:
    """Image rows and columns where the tiles of shifted-window ``step`` meet."""
    grid = synth.plan_shifted(*shape)
    dy, dx = shift_offsets(seed, 0, step, grid)
    rows = {(k * grid.tile_h + dy) % grid.padded_height - grid.top for k in range(grid.ny)}
    cols = {(k * grid.tile_w + dx) % grid.padded_width - grid.left for k in range(grid.nx)}
    return rows, cols


def test_shifted_windows_same_seed_same_bytes_whatever_the_batch(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    mask = make_layout("dense", (131, 77), seed=5)  # odd sizes, larger than the 64-px tile
    kw = {"device": "cpu", "precision": "fp32", "steps": 3, "fusion": "shifted"}
    one = DiffusionSynthesizer(model, batch_size=1, **kw)(mask, seed=7)
    four = DiffusionSynthesizer(model, batch_size=4, **kw)
    assert one.shape == mask.shape and one.dtype == np.uint8
    np.testing.assert_array_equal(one, four(mask, seed=7))
    assert np.abs(four(mask, seed=8).astype(int) - one).mean() > 5
    fused = DiffusionSynthesizer(model, **{**kw, "fusion": "multidiffusion"})(mask, seed=7)
    assert not np.array_equal(one, fused)  # the fusion is the only difference...
    assert np.abs(one.astype(int) - fused).mean() < 25  # ...and the noise is the same
    described = four.describe()
    assert described["fusion"] == "shifted" and described["family_settings"]["fusion"] == "shifted"
    # a long thin strip: one tile down (never shifted), several across
    strip = make_layout("dense", (40, 150), seed=2)
    assert four(strip, seed=1).shape == (40, 150)
    # a mask within one tile has nothing to fuse: both fusions give the same bytes
    small = make_layout("dense", (50, 60), seed=3)
    np.testing.assert_array_equal(four(small, seed=2),
                                  DiffusionSynthesizer(model, **{**kw, "fusion":
                                                                 "multidiffusion"})(small, seed=2))
    with pytest.raises(DiffusionSamplingError, match="unknown fusion 'spot'; use multidiffusion"):
        DiffusionSynthesizer(model, device="cpu", fusion="spot")


def test_shifted_windows_have_no_seams(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    mask = make_layout("dense", (200, 232), seed=6)
    steps = 4
    synth = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=steps,
                                 fusion="shifted")
    image = synth(mask, seed=1)
    assert image.std() > 5, "the model must give texture for seams to be visible"
    # where the last step's tiles met (any earlier seam was denoised again later), where
    # MultiDiffusion's tiles would meet, and where every step's tiles met
    last = _edge_ratio(image, *_shifted_edges(synth, mask.shape, 1, steps - 1))
    every = [_shifted_edges(synth, mask.shape, 1, k) for k in range(steps)]
    anywhere = _edge_ratio(image, set().union(*(r for r, _ in every)),
                           set().union(*(c for _, c in every)))
    assert max(last, anywhere, _seam_ratio(image, synth.tile, synth.overlap)) <= 1.1
    grid = synth.plan_shifted(*mask.shape)
    assert len({shift_offsets(1, 0, k, grid) for k in range(steps)}) == steps  # it moves


def test_shifted_windows_run_each_tile_once_per_step(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    mask = make_layout("dense", (200, 232), seed=6)
    calls = {"shifted": 0, "multidiffusion": 0}
    for fusion in calls:
        synth = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=2,
                                     fusion=fusion)

        def count(*_: object, fusion: str = fusion) -> None:
            calls[fusion] += 1

        synth.denoiser.network.register_forward_pre_hook(count)
        synth(mask, seed=0)
    grid = synth.plan_shifted(*mask.shape)
    # non-overlapping tiles that cover the padded canvas exactly, each run once per step
    assert grid.ny * grid.tile_h == grid.padded_height
    assert grid.nx * grid.tile_w == grid.padded_width
    assert calls["shifted"] == 2 * grid.ny * grid.nx == 2 * 16
    assert calls["multidiffusion"] == 2 * len(synth.plan(*mask.shape).tiles) == 2 * 25
    # the canvas is the image and a margin, not a whole extra tile
    assert grid.padded_height * grid.padded_width < 1.3 * mask.size


def test_live_preview_after_a_shifted_run_resamples_only_near_the_stroke(trained: tuple) -> None:
    model = load_diffusion(trained[0])
    synth = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=2,
                                 preview_steps=2, fusion="shifted")
    mask = make_layout("dense", (160, 200), seed=3)
    before = synth(mask, seed=4, keep=True)
    stroke = mask.copy()
    stroke[20:26, 20:30] = BOUNDARY
    after, regions = synth.update(stroke)  # MultiDiffusion over the touched tiles
    touched = np.zeros(mask.shape, bool)
    for ys, xs in regions:
        touched[ys, xs] = True
    assert touched[20:26, 20:30].all() and touched.mean() < 0.6
    np.testing.assert_array_equal(after[~touched], before[~touched])
    assert not np.array_equal(after[touched], before[touched])


# --------------------------------------------------------------------------- first-step tiles


def test_a_first_step_on_large_tiles_runs_fewer_pixels_keeps_the_image_and_its_seeds(
        trained: tuple) -> None:
    model = load_diffusion(trained[0])
    mask = make_layout("dense", (200, 232), seed=6)
    kw = {"device": "cpu", "precision": "fp32", "steps": 3}
    pixels: dict[int, list[int]] = {0: [], 160: []}
    images = {}
    for start in pixels:
        synth = DiffusionSynthesizer(model, start_tile=start, **kw)

        def count(_: object, args: tuple, start: int = start) -> None:
            pixels[start].append(args[0].shape[-2] * args[0].shape[-1] * args[0].shape[0])

        synth.denoiser.network.register_forward_pre_hook(count)
        images[start] = synth(mask, seed=1)
    canvas = synth.plan(*mask.shape)
    plain_tiles = len(canvas.tiles)
    start_grid = synth.plan_start(canvas.padded_height, canvas.padded_width)
    assert synth.describe()["start_tile"] == 160
    assert synth.describe()["family_settings"]["start_tile"] == 160
    # steps 2 and 3 are the same calls; the first runs the start grid's few large tiles
    assert len(pixels[0]) == 3 * plain_tiles
    assert len(pixels[160]) == 2 * plain_tiles + len(start_grid.tiles) and len(
        start_grid.tiles) < plain_tiles
    first = sum(pixels[160]) - 2 * sum(pixels[0]) // 3
    assert first < 0.75 * sum(pixels[0]) // 3, "the first step computes fewer pixels"
    # the same picture (the noise is the same; only the first prediction's tiling differs),
    # without seams where either grid's tiles meet, and seeded like every run
    a, b = images[0].astype(int), images[160].astype(int)
    assert not np.array_equal(a, b) and np.abs(a - b).mean() < 0.25 * np.abs(a - a.mean()).mean()
    assert _seam_ratio(images[160], synth.tile, synth.overlap) <= 1.1
    rows = {y + d - canvas.top for y in start_grid.ys for d in (0, start_grid.tile_h)}
    cols = {x + d - canvas.left for x in start_grid.xs for d in (0, start_grid.tile_w)}
    assert _edge_ratio(images[160], rows, cols) <= 1.1
    batched = DiffusionSynthesizer(model, start_tile=160, batch_size=1, **kw)
    np.testing.assert_array_equal(batched(mask, seed=1), images[160])
    assert np.abs(batched(mask, seed=2).astype(int) - b).mean() > 5
    # a mask within one tile has one tile to run: the start tile changes nothing
    small = make_layout("dense", (50, 60), seed=3)
    np.testing.assert_array_equal(DiffusionSynthesizer(model, start_tile=160, **kw)(small, seed=2),
                                  DiffusionSynthesizer(model, start_tile=0, **kw)(small, seed=2))


def test_start_tiles_default_off_for_a_plain_model_and_bad_values_are_refused(
        trained: tuple) -> None:
    model = load_diffusion(trained[0])
    synth = DiffusionSynthesizer(model, device="cpu")
    assert synth.start_tile == 0 and DiffusionSynthesizer.model_defaults(model)["start_tile"] == 0
    div = model.spec.divisor
    for bad in (synth.tile - div, synth.tile + 1, -synth.tile, "big"):
        with pytest.raises(DiffusionSamplingError, match=f"use 0 .* multiple of {div} px"):
            DiffusionSynthesizer(model, device="cpu", start_tile=bad)
