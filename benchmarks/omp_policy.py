"""How OpenMP threads wait, alone and beside a competing busy process; prints a table.

libgomp (PyTorch's OpenMP runtime on Linux) lets an idle thread spin before it sleeps:
``OMP_WAIT_POLICY=PASSIVE`` sleeps at once, ``GOMP_SPINCOUNT=N`` spins N rounds (about
N / 100,000 ms), and with neither set it spins 300,000 rounds (about 3 ms). Spinning helps a
process that has the cores to itself (many short barriers) and hurts badly when another job
wants a core: a thread spins away the time slice its partner needs to reach the barrier.

The policy is read once per process, so each arm is a ``napari-synthgen generate`` child
process on the same masks, run once alone and once while a busy-looping process (a second
job: training, the viewer, another user) competes for a core. Seconds per image come from each
run's generate.jsonl; the images of every arm must be byte-identical (only speed may change).

Run: ``python benchmarks/omp_policy.py`` (about 2 minutes; ``--models demo`` for pix2pix only,
``--n 2`` masks, ``--size 256``, ``--steps 10``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: GOMP_SPINCOUNT values measured against PASSIVE; 300000 is what libgomp spins when neither
#: variable is set
DEFAULT_SPINS = (10000, 300000)


def arms(spins: list[int]) -> list[tuple[str, dict[str, str]]]:
    """(label, environment) of each arm; every arm sets its values explicitly, so the
    package's own choice (napari_synthgen/_omp_policy.py) does not change what is measured."""
    out = [("PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"})]
    for n in spins:
        label = f"spin {n // 1000}k" if n >= 1000 else f"spin {n}"
        if n == 300000:
            label = "libgomp default (spin 300k)"
        out.append((label, {"GOMP_SPINCOUNT": str(n)}))
    return out


_POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def run_arm(model: str, masks: Path, out: Path, policy: dict[str, str], steps: int | None
            ) -> list[float]:
    """Seconds per image of one ``generate`` child with this OpenMP policy."""
    env = {k: v for k, v in os.environ.items() if k not in _POLICY_VARS} | policy
    cmd = [sys.executable, "-m", "napari_synthgen", "generate", "--model", model,
           "--masks", str(masks), "--out", str(out)]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    log = (out / "generate.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["seconds"] for line in log if '"seconds"' in line]


@contextmanager
def competing_load(busy: bool):
    """A process that keeps one core busy (a pure-Python loop) while the block runs."""
    if not busy:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def same_images(a: Path, b: Path) -> bool:
    """True when both output folders hold the same image files, byte for byte."""
    files = sorted((a / "images").iterdir())
    return bool(files) and all((b / "images" / f.name).read_bytes() == f.read_bytes()
                               for f in files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["demo-diffusion", "demo"])
    p.add_argument("--n", type=int, default=2, help="masks per arm")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="denoising steps (diffusion)")
    p.add_argument("--spins", type=int, nargs="+", default=list(DEFAULT_SPINS),
                   help="GOMP_SPINCOUNT values to compare with PASSIVE")
    args = p.parse_args()
    arm_list = arms(args.spins)
    from napari_synthgen.mask_sets import make_layout_set

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_layout_set(work / "masks", kind="dense", n=args.n, shape=(args.size, args.size),
                        seed=5)
        print(f"{args.n} dense masks of {args.size} x {args.size}, one generate process per "
              f"arm, {os.cpu_count()} CPUs; seconds per image (median); 'busy' = one "
              "busy-looping process competing for a core")
        labels = [label for label, _ in arm_list]
        print(f"| model | load | {' | '.join(labels)} | "
              f"{' | '.join(f'{lab} / PASSIVE' for lab in labels[1:])} | same bytes |")
        print("| --- " * (2 * len(arm_list) + 2) + "|")
        for model in args.models:
            steps = args.steps if "diffusion" in model else None
            outs = []
            for busy in (False, True):
                times = []
                with competing_load(busy):
                    for i, (_, policy) in enumerate(arm_list):
                        out = work / f"{model}-{int(busy)}-{i}"
                        times.append(statistics.median(
                            run_arm(model, work / "masks", out, policy, steps)))
                        outs.append(out)
                same = all(same_images(outs[0], o) for o in outs[1:])
                label = f"{model} ({steps} steps)" if steps else model
                ratios = " | ".join(f"**{t / times[0]:.2f}**" for t in times[1:])
                print(f"| {label} | {'busy' if busy else 'alone'} | "
                      f"{' | '.join(f'{t:.2f} s' for t in times)} | {ratios} | "
                      f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
