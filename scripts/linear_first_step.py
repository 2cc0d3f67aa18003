"""A measured negative (issue 18): the 2-step ``demo-diffusion-fast`` with its first U-Net step
replaced by a linear map, i.e. one U-Net call per tile instead of two.

    python scripts/linear_first_step.py [--kernel 21] [--no-noise] [fast_vs_teacher options]

The first DDIM step (t = 999) of the 2-step model predicts a clean image x0 from the mask and
the starting noise; the second step refines ``z_499`` made from it. This script records that
first prediction on ISBI 2012 slices 00-23 (two 256 px crops each, a seed per slice), fits
x0 ~ K_mask * onehot(mask) + K_noise * noise + b (``--kernel`` px convolutions, least squares
on 3000 random pixels per crop; ``--no-noise`` drops the noise term), then runs
scripts/fast_vs_teacher.py (the remaining options go to it) with the first step of every
2-step DDIM sampling computed by that map: the second step is the model's own. It prints the
fit's RMS error against the spread of x0 over seeds, then fast_vs_teacher's tables.
An experiment: it replaces ``sampling.denoise_steps`` in this process only.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from napari_synthgen.families.diffusion import sampling
from napari_synthgen.registry import make_synthesizer

HERE = Path(__file__).resolve().parent
ISBI = HERE.parents[1] / "shared" / "data" / "isbi2012"
STATE: dict[str, object] = {"cond": None, "record": None, "prior": None}
_encode = sampling.Denoiser.encode


def encode(self, masks: torch.Tensor) -> torch.Tensor:
    """The synthesizer encodes a canvas's mask once before sampling it: keep it."""
    cond = _encode(self, masks)
    STATE["cond"] = cond[0] if cond.dim() == 4 else cond
    return cond


def denoise_steps(predict, noise, spec, *, steps, sampler="dpm"):
    """sampling.denoise_steps, recording the first step's x0 or computing it with the map."""
    scheduler = sampling.make_scheduler(spec, sampler)
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        prior = STATE["prior"]
        if i == 0 and steps == 2 and sampler == "ddim" and prior is not None:
            x0 = prior(STATE["cond"], x[0, 0])[None, None]
            ab = scheduler.alphas_cumprod[int(t)]
            a, s = ab.sqrt(), (1 - ab).sqrt()
            out = a * (x - a * x0) / s - s * x0  # the v-prediction that gives this x0
        else:
            out = predict(scheduler.scale_model_input(x, t), t)
        res = scheduler.step(out, t, x)
        if i == 0 and STATE["record"] is not None:
            STATE["record"].append((STATE["cond"].clone(), x[0, 0].clone(),
                                    res.pred_original_sample[0, 0].clone()))
        x = res.prev_sample
        yield i + 1
    return x


class LinearFirstStep:
    """x0 = K_mask * cond + K_noise * noise + b, reflect-padded convolutions."""

    def __init__(self, weight: torch.Tensor, bias: float, k: int, noise: bool) -> None:
        self.weight, self.bias, self.k, self.noise = weight, bias, k, noise

    def __call__(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        src = torch.cat([cond, z[None]]) if self.noise else cond
        src = F.pad(src[None].float(), (self.k // 2,) * 4, mode="reflect")
        return F.conv2d(src, self.weight)[0, 0] + self.bias


def fit(k: int, noise: bool) -> LinearFirstStep:
    synth = make_synthesizer("demo-diffusion-fast")
    STATE["record"] = []
    for i in range(24):
        mask = tifffile.imread(ISBI / "masks" / f"isbi2012_train_{i:02d}.tif")
        for crop in (np.s_[:256, :256], np.s_[256:, 256:]):
            synth(mask[crop], seed=i)
    rec = STATE["record"]
    STATE["record"] = []
    for seed in (100, 101):  # the same mask, two seeds: how much x0 depends on the noise
        synth(mask[:256, :256], seed=seed)
    (_, _, a), (_, _, b) = STATE["record"]
    STATE["record"] = None
    synth.close()
    conds = torch.stack([r[0] for r in rec]).float()
    zs = torch.stack([r[1] for r in rec]).float()[:, None]
    ys = torch.stack([r[2] for r in rec]).float()
    src = torch.cat([conds, zs], 1) if noise else conds
    padded = F.pad(src, (k // 2,) * 4, mode="reflect")
    g = torch.Generator().manual_seed(0)
    rows, targets = [], []
    for i in range(len(src)):
        ys_ = torch.randint(0, src.shape[2], (3000,), generator=g).tolist()
        xs_ = torch.randint(0, src.shape[3], (3000,), generator=g).tolist()
        rows.append(torch.stack([padded[i, :, y:y + k, x:x + k].reshape(-1)
                                 for y, x in zip(ys_, xs_, strict=True)]))
        targets.append(ys[i, ys_, xs_])
    X = torch.cat(rows).double()
    X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    Y = torch.cat(targets).double()
    sol = torch.linalg.solve(X.T @ X + 1e-3 * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)
    prior = LinearFirstStep(sol[:-1].float().reshape(1, -1, k, k), float(sol[-1]), k, noise)
    err = torch.stack([prior(c, z[0]) for c, z in zip(conds, zs, strict=True)]) - ys
    print(f"first-step x0 of the 2-step model: std {float(ys.std()):.3f}, RMS difference "
          f"between two seeds {float((a - b).pow(2).mean().sqrt()):.3f}; linear map "
          f"({k} px, noise term {noise}) RMS error {float(err.pow(2).mean().sqrt()):.3f}",
          flush=True)
    return prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", type=int, default=21)
    ap.add_argument("--no-noise", action="store_true")
    args, rest = ap.parse_known_args()
    sampling.Denoiser.encode = encode
    sampling.denoise_steps = denoise_steps
    STATE["prior"] = fit(args.kernel, not args.no_noise)
    sys.argv = [str(HERE / "fast_vs_teacher.py"), *rest]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
