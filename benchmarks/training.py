"""Training step speed on this machine: our pix2pix step against a plain eager fp32 step.

Both steps train the same networks (``unet_256`` generator with ``ngf`` 64, ``basic`` PatchGAN
with ``ndf`` 64, batch norm: the reference defaults) with the same losses (LSGAN + 100 x L1) and
Adam, on the same ISBI tiles, at 256 x 256 with batch 1 and 4. The plain step is written out
here the way the reference implementation runs it (fp32, NCHW, one process); ours is
``training.pix2pix.Pix2PixModel`` (channels_last) timed in fp32 and in bf16, with the precision
the ``auto`` rule picks for that batch size marked, so the rule in ``devices.auto_precision``
can be checked against this CPU. Run: ``python benchmarks/training.py [--batches 1 2 4]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from napari_synthgen.devices import cpu_bf16_flags
from napari_synthgen.encoding import encode_masks, encoding_lut
from napari_synthgen.families.pix2pix.networks import (
    GeneratorSpec,
    build_discriminator,
    build_generator,
)
from napari_synthgen.families.pix2pix.training import Pix2PixModel
from napari_synthgen.registry import make_config
from napari_synthgen.training.data import TileSampler, load_samples
from napari_synthgen.training.engine import resolve_training_precision

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


class PlainStep:
    """The reference pix2pix step, fp32 eager: D on (A, fake) and (A, real), then G."""

    def __init__(self, ngf: int, ndf: int) -> None:
        torch.manual_seed(0)
        self.G = build_generator(GeneratorSpec(netG="unet_256", output_nc=1, ngf=ngf)).train()
        self.D = build_discriminator(4, ndf=ndf).train()
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.lut = encoding_lut("rgb")

    def __call__(self, masks: torch.Tensor, images: torch.Tensor) -> None:
        a = encode_masks(masks, self.lut)
        fake = self.G(a)
        for p in self.D.parameters():
            p.requires_grad_(True)
        self.opt_D.zero_grad()
        pf = self.D(torch.cat([a, fake.detach()], 1))
        pr = self.D(torch.cat([a, images], 1))
        loss_d = 0.5 * (F.mse_loss(pf, torch.zeros_like(pf)) + F.mse_loss(pr, torch.ones_like(pr)))
        loss_d.backward()
        self.opt_D.step()
        for p in self.D.parameters():
            p.requires_grad_(False)
        self.opt_G.zero_grad()
        pg = self.D(torch.cat([a, fake], 1))
        loss_g = F.mse_loss(pg, torch.ones_like(pg)) + 100.0 * F.l1_loss(fake, images)
        loss_g.backward()
        self.opt_G.step()


def time_steps(step, sampler: TileSampler, n: int) -> float:
    """Median seconds per step over ``n`` steps after two warm-up steps."""
    for k in range(2):
        step(*sampler.batch(k))
    times = []
    for k in range(2, 2 + n):
        masks, images = sampler.batch(k)
        t0 = time.perf_counter()
        step(masks, images)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    samples = load_samples([SHARED])
    flags = sorted(cpu_bf16_flags() or []) or ["none"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU bf16 flags: {' '.join(flags)}")
    rows = []
    for batch in args.batches:
        sampler = TileSampler(samples, tile=256, stride=None, batch_size=batch, seed=0)
        cfg = make_config(data=[str(SHARED)], steps=1000, ngf=args.ngf, ndf=args.ndf,
                          batch_size=batch, tile=256)
        auto, note = resolve_training_precision(cfg, torch.device("cpu"))
        plain = PlainStep(args.ngf, args.ndf)
        t_plain = time_steps(plain, sampler, args.steps)
        times = {}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            ours = Pix2PixModel(cfg, torch.device("cpu"), precision, total_steps=1000)
            times[precision] = time_steps(ours.step, sampler, args.steps)
        rows.append((batch, t_plain, times, auto, note))
    print(f"\nunet_256 ngf {args.ngf} + basic D ndf {args.ndf}, 256 x 256 tiles, CPU "
          "(s/step: median; ratios against plain fp32 eager)\n")
    print(f"{'batch':>5}  {'plain fp32':>10}  {'ours fp32':>9}  {'ours bf16':>9}  "
          f"{'fp32/plain':>10}  {'bf16/plain':>10}  {'bf16 speedup':>12}  auto rule")
    for batch, tp, t, auto, note in rows:
        print(f"{batch:>5}  {tp:>10.3f}  {t['fp32']:>9.3f}  {t['bf16']:>9.3f}  "
              f"{t['fp32'] / tp:>10.2f}  {t['bf16'] / tp:>10.2f}  "
              f"{t['fp32'] / t['bf16']:>11.2f}x  {auto}: {note}")


if __name__ == "__main__":
    main()
