"""What learning from unlabelled images costs: training steps with and without raw tiles, and
sampling with and without classifier-free guidance, as ratios measured in one process.

- Training: the same family, network, batch and tiles per step, once on labelled tiles only
  and once with ``--unlabeled`` (half of each batch from raw ISBI slices). Diffusion should
  cost the same per step (a raw tile is one more tile through the same U-Net); pix2pix adds
  its unconditional discriminator D_u.
- Sampling: a diffusion model of the demo's size (random weights: the time does not depend on
  them) at 256 x 256, 10 DPM-Solver++ steps, guidance 1 (the plain model) against 2 (one
  more U-Net call per tile and step).
- Memory: raw slices are kept in their own dtype and scaled crop by crop.

Times are process CPU time (both cores' work, steadier than wall time on a shared machine) and
wall time. Run: ``python benchmarks/unlabeled.py [--steps 6] [--families diffusion pix2pix]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from napari_synthgen import registry
from napari_synthgen.training.data import TileSampler, load_samples, load_unlabeled
from napari_synthgen.training.engine import resolve_training_precision

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
#: the bundled demos' training settings (tile, batch, network)
SETTINGS = {
    "diffusion": {"tile": 128, "batch_size": 4, "unet_config": "small"},
    "pix2pix": {"tile": 256, "batch_size": 4, "netG": "unet_256", "ngf": 16, "ndf": 32},
}


def _raw_folder(tmp: Path) -> Path:
    """ISBI slices 05-24 as raw images (no masks)."""
    import shutil

    raw = tmp / "raw"
    raw.mkdir()
    for i in range(5, 25):
        shutil.copy(SHARED / "images" / f"isbi2012_train_{i:02d}.tif", raw)
    return raw


def time_training(family: str, raw: Path | None, steps: int) -> tuple[float, float, str]:
    """(CPU s, wall s) per step of ``family`` on ISBI 00-04, with ``raw`` unlabelled slices
    (half of each batch) or none; two warm-up steps first."""
    extra = {"unlabeled": [str(raw)], "unlabeled_share": 0.5} if raw else {}
    cfg = registry.make_config(family, data=[str(SHARED)], steps=steps + 2, seed=0,
                               flips=True, rot90=True, **SETTINGS[family], **extra).validate()
    device = torch.device("cpu")
    precision, _ = resolve_training_precision(cfg, device)
    samples = load_samples([SHARED])[:5]
    sampler = TileSampler(samples, tile=cfg.tile, stride=None, batch_size=cfg.batch_size,
                          seed=0, flips=True, rot90=True,
                          unlabeled=load_unlabeled([raw]) if raw else (),
                          unlabeled_share=cfg.unlabeled_share)
    torch.manual_seed(0)
    trainer = registry.get(family).build_trainer(cfg, device, precision, steps + 2, False)
    for k in range(2):
        trainer.step(*sampler.batch(k))
    c0, w0 = time.process_time(), time.perf_counter()
    for k in range(2, steps + 2):
        trainer.step(*sampler.batch(k))
    return ((time.process_time() - c0) / steps, (time.perf_counter() - w0) / steps, precision)


def time_guidance(guidance: float, steps: int = 10) -> tuple[float, float]:
    """(CPU s, wall s) of one 256 x 256 sample with ``guidance``."""
    from napari_synthgen.families.diffusion.files import save_diffusion
    from napari_synthgen.families.diffusion.networks import build_unet, make_spec
    from napari_synthgen.layouts import make_layout
    from napari_synthgen.registry import load_model, make_synthesizer

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        spec = make_spec("small", tile=128)
        path = save_diffusion(Path(tmp) / "m.safetensors", build_unet(spec), spec,
                              {"null_condition": True})
        synth = make_synthesizer(load_model(path), device="cpu", steps=steps,
                                 guidance=guidance)
    mask = make_layout("dense", (256, 256), seed=1)
    synth(mask[:128, :128], seed=0)  # warm-up
    c0, w0 = time.process_time(), time.perf_counter()
    synth(mask, seed=0)
    return time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per arm")
    parser.add_argument("--families", nargs="+", default=["diffusion", "pix2pix"])
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = _raw_folder(Path(tmp))
        for family in args.families:
            base = time_training(family, None, args.steps)
            unl = time_training(family, raw, args.steps)
            rows.append((f"train {family}, step ({base[2]})", base[:2], unl[:2],
                         "labelled only", "+ --unlabeled (half of each batch)"))
        n_raw = len(load_unlabeled([raw]))
        raw_bytes = sum(r.image.nbytes for r in load_unlabeled([raw]))
    g1, g2 = time_guidance(1.0), time_guidance(2.0)
    rows.append(("sample 256 x 256, 10 steps", g1, g2, "guidance 1", "guidance 2"))
    print(f"{'what':34} {'plain':>22} {'with':>22}  CPU ratio  wall ratio")
    for what, (c0, w0), (c1, w1), a, b in rows:
        print(f"{what:34} {a:>14} {c0:6.2f}s  {b[:14]:>14} {c1:6.2f}s  {c1 / c0:8.2f}x  "
              f"{w1 / w0:8.2f}x")
    print(f"raw slices held for training: {n_raw} ISBI slices, {raw_bytes / 2**20:.1f} MiB "
          f"(as float32 they would take {4 * raw_bytes / 2**20:.1f} MiB)")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU(s), numpy {np.__version__}")


if __name__ == "__main__":
    main()
