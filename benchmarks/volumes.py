"""Seconds per slice of a synthesized (Z, Y, X) stack against 2-D synthesis, in one process.

For the bundled ``demo-diffusion`` model (DPM-Solver++ ``--steps``, the written precision
rule) on the first ``--slices`` ISBI 2012 mask sections cropped to ``--size`` px: each slice
synthesized alone as a 2-D mask (the baseline), the stack with ``z_coupling="serial"`` (its
initial noise correlated along z) and with ``independent``; seconds per slice and the ratio to
2-D. The pix2pix demo is timed the same way (a stack is its slices, one after another).
Rounds alternate the cases so a busy machine slows them alike; the table gives the median of
wall time and of the process's CPU time (steadier than wall time on a shared machine).

    python benchmarks/volumes.py [--slices 6] [--size 256] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import tifffile

from napari_synthgen.registry import make_synthesizer

ISBI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    names = sorted((ISBI / "masks").glob("*.tif"))[: args.slices]
    masks = np.stack([tifffile.imread(p)[: args.size, : args.size] for p in names])
    synths = {
        "diffusion": {c: make_synthesizer("demo-diffusion", steps=args.steps, z_coupling=c)
                      for c in ("serial", "independent")},
        "pix2pix": {"stack": make_synthesizer("demo")},
    }
    cases = {
        "diffusion, 2-D slice by slice": lambda: [synths["diffusion"]["serial"](m, seed=0)
                                                  for m in masks],
        "diffusion stack, serial": lambda: synths["diffusion"]["serial"](masks, seed=0),
        "diffusion stack, independent":
            lambda: synths["diffusion"]["independent"](masks, seed=0),
        "pix2pix, 2-D slice by slice": lambda: [synths["pix2pix"]["stack"](m, seed=0)
                                                for m in masks],
        "pix2pix stack": lambda: synths["pix2pix"]["stack"](masks, seed=0),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, run in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append((time.perf_counter() - start) / len(masks))
            cpu[name].append((time.process_time() - start_cpu) / len(masks))
    desc = synths["diffusion"]["serial"].describe()
    print(f"{len(masks)} slices of {args.size} px, demo-diffusion DPM-Solver++ {args.steps} "
          f"steps ({desc['device']}, {desc['precision']}), median of {args.rounds} rounds\n")
    print("| case | s / slice | ratio to 2-D | CPU s / slice | CPU ratio to 2-D |\n"
          "|---|---|---|---|---|")
    for name, values in times.items():
        base_name = f"{name.split(',')[0].split(' ')[0]}, 2-D slice by slice"
        wall, wall_base = statistics.median(values), statistics.median(times[base_name])
        busy, busy_base = statistics.median(cpu[name]), statistics.median(cpu[base_name])
        print(f"| {name} | {wall:.2f} | {wall / wall_base:.2f} | {busy:.2f} | "
              f"{busy / busy_base:.2f} |")


if __name__ == "__main__":
    main()
