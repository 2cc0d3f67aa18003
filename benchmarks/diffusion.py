"""Diffusion speed and accuracy on this machine, in one process; prints a table.

For the ``small`` configuration (4.3 M parameters):

- time per denoising step of a 256 x 256 tile, fp32 against the precision the written rule
  picks for inference (``devices.auto_precision``; bf16 on a CPU with AMX / AVX-512 bf16);
- one 256 x 256 sample: DPM-Solver++ 20 steps against DDIM 50, in both precisions, and the
  error of the rule's precision against fp32 (RMS difference over the fp32 image's standard
  deviation, and the largest grey-level difference);
- a 1024 x 1024 sample (tiles of 256 fused at every step), DPM-Solver++ 20, rule precision;
- a training step (batch 4, 256 px tiles of ISBI): ``DiffusionTrainer`` in fp32 and in the
  rule's training precision, against a plain diffusers fp32 loop (UNet2DModel, DDPMScheduler
  add_noise / get_velocity, AdamW, EMAModel);
- large images with the bundled ``demo-diffusion`` model (tile 128), rule precision: shifted
  non-overlapping windows against MultiDiffusion at 1024 and 2048 px (U-Net calls and seconds
  per denoising step, a 20-step image as 20 of those steps, the ratio), the peak memory of one
  step of each in a fresh process, and the seam ratio of a 512 x 512 image in 4 and 10 steps
  (mean gradient across the lines where tiles meet over the mean elsewhere; 1.0 is seamless)
  with each fusion and with tiles sampled alone side by side (the seams the measure sees);
- ``--fast``: the bundled few-step ``demo-diffusion-fast`` (its defaults: 2 DDIM steps)
  against its teacher ``demo-diffusion`` with DPM-Solver++ 20 steps, on the first ISBI mask
  (512 x 512), rule precision, each after a warm-up call: wall and process CPU time, the ratio
  fast / teacher (the issue's target: at most 0.1), and U-Net calls and the time inside them
  (a timer around the network's forward), to show where the fast model's time goes.
  ``--fast-model`` times another few-step model instead (a file, e.g. a 1-step run's model).
  Then the few-step model alone on a 2048 x 2048 dense layout with its own defaults (the
  issue's other target: at most 60 s on 2 cores; ``--fast-large SIDE``, 0 skips it).
- ``--commands``: the same two models timed as whole ``napari-synthgen generate`` commands
  side by side (``--commands-masks`` ISBI masks of 512 x 512, interleaved, best of
  ``--fast-repeats``), as a user or a check that times the commands sees them, against a
  third command that only imports what ``generate`` imports (Python, torch, diffusers and
  the package): the fixed start-up cost both commands pay before their first step.
- ``--preview``: live preview of one brush stroke, drawn by the few-step model (its own
  steps, as the Synthesize widget's "Preview model" does) against the teacher with its
  preview steps (8, the widget's default): on the first ISBI mask (512 x 512), each keeps a
  preview of the whole mask, then the same 10 strokes (discs of radius 8 painted membrane at
  random places) are redrawn with ``update``; median ms per stroke, U-Net calls, the ratio.

The sampled model is first trained for ``--train-steps`` steps (its weights are then past
random, so precision errors are measured on images with structure; it is not a good model).
Run: ``python benchmarks/diffusion.py`` (``--quick`` samples 512 x 512 instead of 1024, and
compares the fusions at 512 and 1024); ``--fusion-only`` runs only the large-image comparison;
``--fast`` runs only the few-step model against its teacher; ``--commands`` only the two as
whole commands; ``--preview`` only the stroke preview of both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F

from napari_synthgen.devices import auto_precision
from napari_synthgen.families.diffusion.files import load_diffusion
from napari_synthgen.families.diffusion.networks import (
    build_unet,
    count_parameters,
    training_scheduler,
)
from napari_synthgen.families.diffusion.sampling import FUSIONS, DiffusionSynthesizer
from napari_synthgen.families.diffusion.training import DiffusionConfig, DiffusionTrainer
from napari_synthgen.layouts import make_layout
from napari_synthgen.tiling import plan_tiles, shift_offsets
from napari_synthgen.training.data import TileSampler, load_samples

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
CPU = torch.device("cpu")


def timed(fn, repeats: int = 1) -> float:
    """The best of ``repeats`` wall times of ``fn()`` (after no warm-up: callers warm up)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class PlainDiffusersLoop:
    """A plain diffusers fp32 training loop on the same network, for comparison."""

    def __init__(self, data: TileSampler) -> None:
        from diffusers.training_utils import EMAModel

        from napari_synthgen.encoding import encoding_lut

        spec = DiffusionConfig().spec()
        torch.manual_seed(0)
        self.data = data
        self.unet = build_unet(spec).train()
        self.sched = training_scheduler(spec)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=5e-4)
        self.ema = EMAModel(self.unet.parameters(), decay=0.999)
        self.lut = encoding_lut("onehot")

    def step(self, masks: torch.Tensor, images: torch.Tensor) -> None:
        from napari_synthgen.encoding import encode_masks

        noise = torch.randn_like(images)
        t = torch.randint(0, 1000, (images.shape[0],))
        x_t = self.sched.add_noise(images, noise, t)
        target = self.sched.get_velocity(images, noise, t)
        out = self.unet(torch.cat([x_t, encode_masks(masks, self.lut)], 1), t).sample
        loss = F.mse_loss(out, target)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.ema.step(self.unet.parameters())


def step_times(loops: dict[str, object], data: TileSampler, steps: int) -> dict[str, float]:
    """Seconds per training step of each loop, measured interleaved (one step of each in
    turn, best of ``steps``) so that other load on the machine hits them alike."""
    batches = [data.batch(k) for k in range(steps + 1)]
    for loop in loops.values():
        loop.step(*batches[0])  # warm-up
    best = dict.fromkeys(loops, float("inf"))
    for k in range(1, steps + 1):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            loop.step(*batches[k])
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def edge_ratio(image: np.ndarray, rows: set[int], cols: set[int]) -> float:
    """Mean |gradient| across the given image rows and columns over the mean across all other
    lines, after Gaussian smoothing (the seam measure of tests/test_diffusion.py)."""
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(image.astype(np.float64), 2.0)
    gx = np.abs(np.diff(img, axis=1)).mean(axis=0)
    gy = np.abs(np.diff(img, axis=0)).mean(axis=1)
    ex = [c - 1 for c in cols if 0 < c < image.shape[1]]
    ey = [r - 1 for r in rows if 0 < r < image.shape[0]]
    seams = np.concatenate([gx[ex], gy[ey]])
    inside = np.concatenate([np.delete(gx, ex), np.delete(gy, ey)])
    return float(seams.mean() / inside.mean())


def multidiffusion_edges(shape: tuple[int, int], tile: int, overlap: int
                         ) -> tuple[set[int], set[int]]:
    """Image rows and columns where the tiles of plan_tiles meet."""
    grid = plan_tiles(*shape, tile, overlap)
    return ({y - grid.top + d for y in grid.ys for d in (0, tile)} - {0},
            {x - grid.left + d for x in grid.xs for d in (0, tile)} - {0})


def shifted_edges(synth: DiffusionSynthesizer, shape: tuple[int, int], seed: int, step: int
                  ) -> tuple[set[int], set[int]]:
    """Image rows and columns where the tiles of shifted-window ``step`` meet."""
    grid = synth.plan_shifted(*shape)
    dy, dx = shift_offsets(seed, 0, step, grid)
    return ({(k * grid.tile_h + dy) % grid.padded_height - grid.top for k in range(grid.ny)},
            {(k * grid.tile_w + dx) % grid.padded_width - grid.left for k in range(grid.nx)})


_MEMORY_CHILD = """
import json, os, sys, threading, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
from napari_synthgen.families.diffusion.sampling import DiffusionSynthesizer
from napari_synthgen.layouts import make_layout
from napari_synthgen.registry import load_model
side, fusion, model = int(sys.argv[1]), sys.argv[2], sys.argv[3]
synth = DiffusionSynthesizer(load_model(model), device="cpu", fusion=fusion)
mask = make_layout("dense", (side, side), seed=3)
synth(make_layout("dense", (128, 128), seed=2), steps=1)  # warm-up
before = rss_mb()
peak, running = [before], [True]
def sample():  # RSS every 2 ms while the step runs (ru_maxrss holds the model load's peak)
    while running[0]:
        peak.append(rss_mb())
        time.sleep(0.002)
watcher = threading.Thread(target=sample)
watcher.start()
synth(mask, seed=0, steps=1)
running[0] = False
watcher.join()
print(json.dumps({"before_mb": before, "peak_mb": max(peak)}))
"""


def child_memory(side: int, fusion: str, model: str = "demo-diffusion") -> dict[str, float]:
    """Peak RSS of the first denoising step of a ``side`` x ``side`` image (``model``'s own
    settings: a few-step model's first step runs on its large start tiles), in a fresh
    process."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(side), fusion, model],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fusion_rows(sizes: tuple[int, ...], steps: int, seam_side: int,
                seam_steps: tuple[int, ...]) -> list[tuple[str, str]]:
    """Shifted windows against MultiDiffusion with the bundled demo model (rule precision)."""
    from napari_synthgen.registry import load_model

    model = load_model("demo-diffusion")
    rows: list[tuple[str, str]] = []
    synths = {f: DiffusionSynthesizer(model, device="cpu", fusion=f) for f in FUSIONS}
    calls = dict.fromkeys(FUSIONS, 0)
    for f, synth in synths.items():
        synth(make_layout("dense", (128, 128), seed=2), steps=1)  # warm-up
        synth.denoiser.network.register_forward_pre_hook(
            lambda *_, f=f: calls.__setitem__(f, calls[f] + 1))
    precision = synths["shifted"].precision
    for side in sizes:
        mask = make_layout("dense", (side, side), seed=3)
        per_step, cpu, n_calls = {}, {}, {}
        for f, synth in synths.items():
            calls[f] = 0
            c0 = time.process_time()
            per_step[f] = timed(lambda s=synth, m=mask: s(m, seed=0, steps=steps)) / steps
            cpu[f] = (time.process_time() - c0) / steps  # less sensitive to other jobs
            n_calls[f] = calls[f] // steps
        sg = synths["shifted"].plan_shifted(side, side)
        md = synths["multidiffusion"].plan(side, side)
        px = {"multidiffusion": len(md.tiles) * md.tile**2,
              "shifted": sg.padded_height * sg.padded_width}
        for f in FUSIONS:
            tiles = (f"{md.tile} px, overlap {md.overlap}" if f == "multidiffusion"
                     else f"{sg.tile_h} px, no overlap")
            rows.append((f"{side} x {side}, {f} ({tiles}, {precision}): U-Net calls per step, "
                         "pixels computed / image pixels",
                         f"{n_calls[f]}, {px[f] / side**2:.2f}"))
            rows.append((f"{side} x {side}, {f}: s per step (CPU s); a 20-step image "
                         "(20 x a step)", f"{per_step[f]:.2f} s ({cpu[f]:.2f}); "
                         f"{20 * per_step[f]:.0f} s"))
            print(rows[-2], rows[-1], flush=True)
        rows.append((f"{side} x {side}: multidiffusion time / shifted time (CPU time)",
                     f"{per_step['multidiffusion'] / per_step['shifted']:.2f} "
                     f"({cpu['multidiffusion'] / cpu['shifted']:.2f})"))
        print(rows[-1], flush=True)
    for side in sizes:
        for f in FUSIONS:
            r = child_memory(side, f)
            rows.append((f"{side} x {side}, {f}: peak RSS during one step (fresh process); "
                         "above the RSS before it", f"{r['peak_mb']:.0f} MB; "
                         f"{r['peak_mb'] - r['before_mb']:.0f} MB"))
            print(rows[-1], flush=True)

    # seams: each fusion on the same mask and seed, measured where its tiles meet
    mask = make_layout("dense", (seam_side, seam_side), seed=6)
    tile = synths["multidiffusion"].tile
    shifted = synths["shifted"]
    md_edges = multidiffusion_edges(mask.shape, tile, synths["multidiffusion"].overlap)
    for n in seam_steps:
        images = {f: s(mask, seed=1, steps=n) for f, s in synths.items()}
        last = shifted_edges(shifted, mask.shape, 1, n - 1)
        label = f"{seam_side} x {seam_side}, dpm {n}: seam ratio"
        rows += [
            (f"{label}, multidiffusion (where its tiles meet)",
             f"{edge_ratio(images['multidiffusion'], *md_edges):.3f}"),
            (f"{label}, shifted (where the last step's tiles meet)",
             f"{edge_ratio(images['shifted'], *last):.3f}"),
            (f"{label}, shifted (where multidiffusion's tiles meet)",
             f"{edge_ratio(images['shifted'], *md_edges):.3f}"),
            (f"{label}, multidiffusion where shifted's last tiles meet (no seam there)",
             f"{edge_ratio(images['multidiffusion'], *last):.3f}"),
            (f"{seam_side} x {seam_side}, dpm {n}: shifted against multidiffusion, mean "
             "|difference|",
             f"{np.abs(images['shifted'].astype(float) - images['multidiffusion']).mean():.1f} "
             f"grey levels (image std {images['multidiffusion'].std():.0f})"),
        ]
        print(*rows[-5:], sep="\n", flush=True)
    n = seam_steps[-1]
    hard = DiffusionSynthesizer(model, device="cpu", overlap=0)(mask, seed=1, steps=n)
    rows.append((f"{seam_side} x {seam_side}, dpm {n}: seam ratio, tiles sampled alone side "
                 "by side (overlap 0; seams)",
                 f"{edge_ratio(hard, *multidiffusion_edges(mask.shape, tile, 0)):.3f}"))
    return rows


def _label(model: str, synth: DiffusionSynthesizer) -> str:
    """'isbi2012_diffusion_small_fast.safetensors, DDIM 1 (its default), first step on
    320-px tiles'."""
    sampler = {"ddim": "DDIM", "dpm": "DPM-Solver++"}[synth.sampler]
    start = (f"first step on {synth.start_tile}-px tiles" if synth.start_tile
             else "every step on the model's tiles")
    return f"{Path(model).name}, {sampler} {synth.steps} (its default), {start}"


def fast_rows(repeats: int, model: str = "demo-diffusion-fast") -> list[tuple[str, str]]:
    """A few-step ``model`` (default ``demo-diffusion-fast``, with its own steps) against
    ``demo-diffusion`` with DPM-Solver++ 20 steps on the first ISBI mask, in this process,
    after a warm-up call each; the baseline of the first step's large tiles (``start_tile``)
    is the same few-step model with every step on the model's tiles."""
    import tifffile

    from napari_synthgen.registry import make_synthesizer

    mask = tifffile.imread(sorted((SHARED / "masks").glob("*.tif"))[0])
    synths = {"fast": make_synthesizer(model),
              "fast, model tiles": make_synthesizer(model, start_tile=0),
              "teacher": make_synthesizer("demo-diffusion", steps=20)}
    net: dict[str, list[float]] = {k: [] for k in synths}  # seconds of each U-Net call
    for name, synth in synths.items():
        synth(mask, seed=1)  # warm-up on the same size
        network, start = synth.denoiser.network, [0.0]
        network.register_forward_pre_hook(lambda *_, s=start: s.__setitem__(0, time.perf_counter()))
        network.register_forward_hook(
            lambda *_, s=start, n=name: net[n].append(time.perf_counter() - s[0]))
    wall, cpu, calls, inside = {}, {}, {}, {}
    for name in synths:
        wall[name], cpu[name] = float("inf"), float("inf")
    for _ in range(repeats):  # interleaved, best of ``repeats``: other load hits both alike
        for name, synth in synths.items():
            net[name].clear()
            c0, t0 = time.process_time(), time.perf_counter()
            synth(mask, seed=0)
            w, c = time.perf_counter() - t0, time.process_time() - c0
            if w < wall[name]:
                calls[name], inside[name] = len(net[name]), sum(net[name])
            wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
    rows: list[tuple[str, str]] = []
    labels = {"fast": _label(model, synths["fast"]),
              "fast, model tiles": _label(model, synths["fast, model tiles"]),
              "teacher": "demo-diffusion, DPM-Solver++ 20"}
    for name, synth in synths.items():
        rows.append((f"{mask.shape[0]} x {mask.shape[1]}, {labels[name]}, {synth.precision}: "
                     "wall s (CPU s)", f"{wall[name]:.2f} ({cpu[name]:.2f})"))
        rows.append((f"{labels[name]}: U-Net calls, s inside them (share of wall), "
                     "ms per call", f"{calls[name]}, {inside[name]:.2f} "
                     f"({inside[name] / wall[name]:.0%}), "
                     f"{1000 * inside[name] / max(calls[name], 1):.0f}"))
        print(*rows[-2:], sep="\n", flush=True)
    rows.append(("fast / teacher, wall (CPU); target at most 0.1",
                 f"**{wall['fast'] / wall['teacher']:.3f}** "
                 f"({cpu['fast'] / cpu['teacher']:.3f})"))
    rows.append(("fast / teacher, U-Net calls; time inside them",
                 f"{calls['fast'] / calls['teacher']:.3f}; "
                 f"{inside['fast'] / inside['teacher']:.3f}"))
    base = "fast, model tiles"
    rows.append(("fast with every step on the model's tiles / teacher, wall (CPU)",
                 f"{wall[base] / wall['teacher']:.3f} ({cpu[base] / cpu['teacher']:.3f})"))
    rows.append(("fast / fast with every step on the model's tiles, wall",
                 f"{wall['fast'] / wall[base]:.3f}"))
    for synth in synths.values():
        synth.close()
    return rows


def large_fast_rows(model: str = "demo-diffusion-fast", side: int = 2048
                    ) -> list[tuple[str, str]]:
    """The few-step ``model`` with its own defaults on a ``side`` x ``side`` dense layout (the
    issue's target: 2048 x 2048 in at most 60 s on 2 cores), once after a warm-up on 512 px,
    with its U-Net calls, and the peak memory of its first step (the largest tiles it runs)
    at 512 px and ``side``: flat in size when the canvas, not the tiles, is what grows."""
    from napari_synthgen.registry import make_synthesizer

    synth = make_synthesizer(model)
    calls = [0]
    synth.denoiser.network.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    synth(make_layout("dense", (512, 512), seed=2), seed=1)  # warm-up
    mask = make_layout("dense", (side, side), seed=3)
    calls[0] = 0
    c0, t0 = time.process_time(), time.perf_counter()
    synth(mask, seed=0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    plan = synth.plan(side, side)
    tiling = (f"{plan.tile} px, overlap {plan.overlap}" if synth.fusion == "multidiffusion"
              else f"{synth.fusion}")
    if synth.fusion == "multidiffusion" and synth.start_tile:
        first = synth.plan_start(plan.padded_height, plan.padded_width)
        tiling += (f"; first step {len(first.tiles)} tiles of {first.tile_h} x "
                   f"{first.tile_w}")
    synth.close()
    rows = [(f"{side} x {side}, {_label(model, synth)}, {synth.fusion} ({tiling}), "
             f"{synth.precision}: wall s (CPU s); target at most 60",
             f"**{wall:.1f}** ({cpu:.1f})"),
            (f"{side} x {side}: U-Net calls, ms of wall per call", f"{calls[0]}, "
             f"{1000 * wall / max(calls[0], 1):.0f}")]
    for n in (512, side):  # the first step: the largest tiles the few-step model runs
        r = child_memory(n, synth.fusion, model)
        rows.append((f"{n} x {n}, {Path(model).name}: peak RSS during its first step (fresh "
                     "process); above the RSS before it", f"{r['peak_mb']:.0f} MB; "
                     f"{r['peak_mb'] - r['before_mb']:.0f} MB"))
        print(rows[-1], flush=True)
    return rows


def tile_cost_rows(model: str = "demo-diffusion-fast", repeats: int = 3
                   ) -> list[tuple[str, str]]:
    """Seconds per megapixel of one U-Net step of ``model`` (its precision on the CPU) by tile
    side: 36 tiles of 128 px (a 512 px slice's MultiDiffusion grid), 4 of 288 px (its first
    step on 320 px start tiles), one of 544 px (the whole canvas) and one of 640 px; pure
    noise input, interleaved, best of ``repeats``. What ``START_TILE_FACTOR`` was chosen on."""
    from napari_synthgen.registry import make_synthesizer

    den = make_synthesizer(model).denoiser
    channels = den.encode(torch.zeros(1, 8, 8, dtype=torch.uint8)).shape[1]
    shapes = ((128, 36), (288, 4), (544, 1), (640, 1))
    best = dict.fromkeys(shapes, float("inf"))
    for _ in range(repeats):
        for side, n in shapes:
            x = torch.randn(1, 1, side, side)
            c = torch.zeros(1, channels, side, side)
            t0 = time.perf_counter()
            for _ in range(n):
                den(x, c, 999)
            best[(side, n)] = min(best[(side, n)], time.perf_counter() - t0)
    return [(f"{Path(model).name}, {den.dtype}: {n} tile(s) of {side} px, s per megapixel "
             f"(s in all)", f"{sec / (n * side * side / 1e6):.2f} ({sec:.2f})")
            for (side, n), sec in best.items()]


def preview_rows(model: str = "demo-diffusion-fast", strokes: int = 10) -> list[tuple[str, str]]:
    """One brush stroke's live preview: the few-step ``model`` with its own steps against
    ``demo-diffusion`` with the widget's default preview steps, on the first ISBI mask."""
    import tifffile

    from napari_synthgen.registry import load_model, make_synthesizer

    mask = tifffile.imread(sorted((SHARED / "masks").glob("*.tif"))[0])
    student = load_model(model)
    own = DiffusionSynthesizer.model_defaults(student)["steps"]  # as the widget builds it
    synths = {"student": make_synthesizer(student, preview_steps=own),
              "teacher": make_synthesizer("demo-diffusion")}
    calls = dict.fromkeys(synths, 0)
    for name, synth in synths.items():
        synth.denoiser.network.register_forward_pre_hook(
            lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
        synth.update(mask, seed=0)  # the kept preview of the whole mask (and a warm-up)
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    times: dict[str, list[float]] = {k: [] for k in synths}
    n_calls: dict[str, list[int]] = {k: [] for k in synths}
    for _ in range(strokes):  # the same strokes for both, interleaved
        y, x = rng.integers(16, mask.shape[0] - 16, size=2)
        mask = mask.copy()
        mask[(yy - y) ** 2 + (xx - x) ** 2 <= 64] = 2
        for name, synth in synths.items():
            calls[name] = 0
            t0 = time.perf_counter()
            synth.update(mask)
            times[name].append(time.perf_counter() - t0)
            n_calls[name].append(calls[name])
    med = {k: float(np.median(v)) for k, v in times.items()}
    labels = {"student": f"{Path(model).name}, {synths['student'].sampler} "
                         f"{synths['student'].preview_steps} steps (its own)",
              "teacher": f"demo-diffusion, {synths['teacher'].sampler} "
                         f"{synths['teacher'].preview_steps} preview steps"}
    rows = [(f"{mask.shape[0]} x {mask.shape[1]}, one stroke's preview, {labels[k]}: median "
             f"ms of {strokes} (U-Net calls, mean)",
             f"{1000 * med[k]:.0f} ({np.mean(n_calls[k]):.1f})") for k in synths]
    rows.append(("stroke preview, student / teacher (median time)",
                 f"**{med['student'] / med['teacher']:.3f}**"))
    for synth in synths.values():
        synth.close()
    return rows


def command_rows(repeats: int, model: str = "demo-diffusion-fast", n_masks: int = 1
                 ) -> list[tuple[str, str]]:
    """Whole ``generate`` commands of the few-step ``model`` and of ``demo-diffusion`` (20
    DPM-Solver++ steps) on the first ``n_masks`` ISBI masks, and a command that only imports
    what ``generate`` imports; interleaved, best wall time of ``repeats``."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        masks = Path(tmp) / "masks"
        masks.mkdir()
        for path in sorted((SHARED / "masks").glob("*.tif"))[:n_masks]:
            shutil.copy(path, masks)
        run = [sys.executable, "-m", "napari_synthgen", "generate", "--masks", str(masks),
               "--overwrite", "--out"]
        commands = {
            "start-up only (imports)": [sys.executable, "-c", "import napari_synthgen.generate, "
                                        "diffusers.models.unets.unet_2d"],
            f"generate --model {model}": [*run, f"{tmp}/fast", "--model", model],
            "generate --model demo-diffusion --steps 20": [
                *run, f"{tmp}/teacher", "--model", "demo-diffusion", "--steps", "20"],
        }
        wall = dict.fromkeys(commands, float("inf"))
        for _ in range(repeats):  # interleaved: other load hits all alike
            for name, command in commands.items():
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                wall[name] = min(wall[name], time.perf_counter() - t0)
                print(f"{name}: {wall[name]:.2f} s", flush=True)
    start, fast, teacher = wall.values()
    rows = [(f"{n_masks} mask(s) of 512 x 512, whole command: {name}, wall s", f"{sec:.2f}")
            for name, sec in wall.items()]
    rows.append(("fast / teacher, whole commands", f"**{fast / teacher:.3f}**"))
    rows.append(("fast / teacher, start-up subtracted from both",
                 f"{(fast - start) / (teacher - start):.3f}"))
    return rows


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print()
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--timing-steps", type=int, default=3, help="training steps timed")
    ap.add_argument("--quick", action="store_true",
                    help="512 x 512 instead of 1024 x 1024; fusions at 512 and 1024")
    ap.add_argument("--fusion-only", action="store_true",
                    help="only shifted windows against MultiDiffusion on large images")
    ap.add_argument("--fusion-steps", type=int, default=1,
                    help="denoising steps timed per large image (a 20-step image is 20 of them)")
    ap.add_argument("--fast", action="store_true",
                    help="only demo-diffusion-fast (2 DDIM steps) against its 20-step teacher")
    ap.add_argument("--fast-repeats", type=int, default=2,
                    help="timed calls of each model with --fast (best of them)")
    ap.add_argument("--fast-model", default="demo-diffusion-fast",
                    help="the few-step model of --fast and --preview (bundled name or file)")
    ap.add_argument("--fast-large", type=int, default=2048, metavar="SIDE",
                    help="with --fast, also the few-step model alone on a SIDE x SIDE layout "
                         "(0: skip)")
    ap.add_argument("--commands", action="store_true",
                    help="only the few-step model against the teacher as whole generate "
                         "commands, with the start-up cost they share")
    ap.add_argument("--commands-masks", type=int, default=1,
                    help="ISBI masks each command of --commands synthesizes")
    ap.add_argument("--tile-cost", action="store_true",
                    help="only the few-step model's U-Net cost per megapixel by tile side")
    ap.add_argument("--preview", action="store_true",
                    help="only one stroke's live preview: few-step model against the teacher")
    args = ap.parse_args()
    if args.commands:
        print_table(command_rows(args.fast_repeats, args.fast_model, args.commands_masks))
        return
    if args.tile_cost:
        print_table(tile_cost_rows(args.fast_model))
        return
    if args.fast or args.preview:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"{auto_precision(CPU, 'inference')[1]}", flush=True)
        if args.preview:
            print_table(preview_rows(args.fast_model))
            return
        rows = fast_rows(args.fast_repeats, args.fast_model)
        if args.fast_large:
            rows += large_fast_rows(args.fast_model, args.fast_large)
        print_table(rows)
        return
    fusion_args = (((512, 1024), args.fusion_steps, 256, (4, 10)) if args.quick
                   else ((1024, 2048), args.fusion_steps, 512, (4, 10)))
    if args.fusion_only:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"{auto_precision(CPU, 'inference')[1]}", flush=True)
        print_table(fusion_rows(*fusion_args))
        return
    rows: list[tuple[str, str]] = []
    rule_inf, note_inf = auto_precision(CPU, "inference")
    rule_train, note_train = auto_precision(CPU, "training", batch_size=4)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {note_inf}; "
          f"{note_train}", flush=True)

    # ---- training: ours (fp32 and rule) against plain diffusers fp32
    samples = load_samples([SHARED])[:6]
    cfg = DiffusionConfig(batch_size=4, warmup_steps=10, lr=5e-4)
    data = TileSampler(samples, tile=cfg.spec().tile, stride=None, batch_size=4, seed=0,
                       flips=True)
    trainer = DiffusionTrainer(cfg, CPU, "fp32", total_steps=args.train_steps)
    print(f"small: {count_parameters(trainer.network) / 1e6:.2f} M parameters", flush=True)
    losses = [trainer.step(*data.batch(k)).losses["mse"] for k in range(args.train_steps)]
    print(f"trained {args.train_steps} steps, loss {np.mean(losses[:5]):.3f} -> "
          f"{np.mean(losses[-5:]):.3f}", flush=True)
    loops: dict[str, object] = {"ours fp32": DiffusionTrainer(cfg, CPU, "fp32", total_steps=100)}
    if rule_train != "fp32":
        loops[f"ours {rule_train} (rule)"] = DiffusionTrainer(cfg, CPU, rule_train,
                                                              total_steps=100)
    loops["plain diffusers fp32"] = PlainDiffusersLoop(data)
    for name, sec in step_times(loops, data, args.timing_steps).items():
        rows.append((f"train step, {name} (batch 4, 256 px)", f"{sec:.2f} s"))
        print(rows[-1], flush=True)
    path = trainer.save_model(Path("/tmp") / f"bench_diffusion_{os.getpid()}.safetensors")
    model = load_diffusion(path)
    path.unlink()

    # ---- sampling 256 x 256
    mask = make_layout("dense", (256, 256), seed=1)
    images: dict[tuple[str, str, int], np.ndarray] = {}
    for precision in dict.fromkeys(("fp32", rule_inf)):
        for sampler, steps in (("dpm", 20), ("ddim", 50)):
            synth = DiffusionSynthesizer(model, device="cpu", precision=precision,
                                         sampler=sampler, steps=steps)
            synth(make_layout("dense", (256, 256), seed=2), steps=2)  # warm-up
            t = timed(lambda s=synth, p=precision: images.__setitem__(
                (p, s.sampler, s.steps), s(mask, seed=0)))
            if sampler == "dpm":
                rows.append((f"denoising step 256 px, {precision}", f"{t / steps:.3f} s"))
            rows.append((f"256 x 256 sample, {sampler} {steps} steps, {precision}",
                         f"{t:.2f} s"))
            print(rows[-1], flush=True)
    if rule_inf != "fp32":
        ref = images[("fp32", "dpm", 20)].astype(np.float64)
        fast = images[(rule_inf, "dpm", 20)].astype(np.float64)
        err = np.sqrt(np.mean((fast - ref) ** 2)) / ref.std()
        rows.append((f"{rule_inf} vs fp32 (dpm 20): RMS / std, max |diff|",
                     f"{err:.3f}, {int(np.abs(fast - ref).max())} grey levels"))
    ddim_vs_dpm = (np.sqrt(np.mean((images[("fp32", "ddim", 50)].astype(float)
                                    - images[("fp32", "dpm", 20)]) ** 2))
                   / images[("fp32", "dpm", 20)].std())
    rows.append(("ddim 50 vs dpm 20 (fp32, same seed): RMS / std", f"{ddim_vs_dpm:.3f}"))

    # ---- a large tiled sample
    side = 512 if args.quick else 1024
    big = make_layout("dense", (side, side), seed=3)
    synth = DiffusionSynthesizer(model, device="cpu", precision=rule_inf, steps=20)
    grid = synth.plan(side, side)
    t = timed(lambda: synth(big, seed=0))
    rows.append((f"{side} x {side} sample, dpm 20, {rule_inf} ({len(grid.tiles)} tiles of "
                 f"{grid.tile}, overlap {grid.overlap})", f"{t:.1f} s"))
    rows += fusion_rows(*fusion_args)
    print_table(rows)


if __name__ == "__main__":
    main()
