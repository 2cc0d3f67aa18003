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
  add_noise / get_velocity, AdamW, EMAModel).

The sampled model is first trained for ``--train-steps`` steps (its weights are then past
random, so precision errors are measured on images with structure; it is not a good model).
Run: ``python benchmarks/diffusion.py`` (``--quick`` samples 512 x 512 instead of 1024).
"""

from __future__ import annotations

import argparse
import os
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
from napari_synthgen.families.diffusion.sampling import DiffusionSynthesizer
from napari_synthgen.families.diffusion.training import DiffusionConfig, DiffusionTrainer
from napari_synthgen.layouts import make_layout
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--timing-steps", type=int, default=3, help="training steps timed")
    ap.add_argument("--quick", action="store_true", help="512 x 512 instead of 1024 x 1024")
    args = ap.parse_args()
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

    width = max(len(r[0]) for r in rows)
    print()
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
