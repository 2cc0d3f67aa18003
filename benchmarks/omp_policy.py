"""How OpenMP threads wait, and what it costs a batch command; prints a table.

The package sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) so that a viewer
stays responsive beside a training child; ``napari-synthgen`` batch commands give the default
back (napari_synthgen/_omp_policy.py). The policy is read once per process, so each arm is a
``napari-synthgen generate`` child process on the same masks: PASSIVE (as the user would set
it) against the default the command now runs with. Seconds per image come from each run's
generate.jsonl; the images must be byte-identical (only speed may change).

Run: ``python benchmarks/omp_policy.py`` (``--models demo`` for pix2pix only, ``--n 3`` masks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = (("PASSIVE (the package's choice in napari)", "PASSIVE"),
        ("default (batch commands)", None))


def run_arm(model: str, masks: Path, out: Path, policy: str | None, steps: int | None
            ) -> list[float]:
    """Seconds per image of one ``generate`` child with this OpenMP policy."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, "-m", "napari_synthgen", "generate", "--model", model,
           "--masks", str(masks), "--out", str(out)]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    log = (out / "generate.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["seconds"] for line in log if '"seconds"' in line]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["demo-diffusion", "demo"])
    p.add_argument("--n", type=int, default=2, help="masks per arm")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20, help="denoising steps (diffusion)")
    args = p.parse_args()
    from napari_synthgen.mask_sets import make_layout_set

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_layout_set(work / "masks", kind="dense", n=args.n, shape=(args.size, args.size),
                        seed=5)
        print(f"{args.n} dense masks of {args.size} x {args.size}, one generate process per arm, "
              f"{os.cpu_count()} CPUs")
        print(f"| model | {' | '.join(a for a, _ in ARMS)} | default / PASSIVE | same bytes |")
        print("| --- | --- | --- | --- | --- |")
        for model in args.models:
            steps = args.steps if "diffusion" in model else None
            times, outs = [], []
            for i, (_, policy) in enumerate(ARMS):
                out = work / f"{model}-{i}"
                times.append(statistics.median(run_arm(model, work / "masks", out, policy,
                                                       steps)))
                outs.append(out)
            same = all((outs[0] / "images" / f.name).read_bytes() == f.read_bytes()
                       for f in sorted((outs[1] / "images").iterdir()))
            label = f"{model} ({steps} steps)" if steps else model
            print(f"| {label} | {times[0]:.2f} s | {times[1]:.2f} s | "
                  f"**{times[1] / times[0]:.2f}** | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
