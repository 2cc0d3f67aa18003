"""Memory per pixel of each request kind against the constants limits.py checks with; a table.

``napari_synthgen.limits`` refuses a request whose estimate (bytes per pixel x pixels) exceeds
the free memory. This script measures the real peak of each kind, each in a child process of
its own (peak RSS after the step minus before it, per pixel of the request), so the constants
can be checked on any machine: they should stay about 2x above the measured figures.

Run: ``python benchmarks/memory.py`` (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: (label, kind, arguments) of each measurement
CASES = (
    ("mask layout, dense 2048 x 2048", "layout", ["dense", 2048]),
    ("synthesis, pix2pix demo, tile 512", "synth", ["demo", 512]),
    ("synthesis, diffusion demo, tile 512", "synth", ["demo-diffusion", 512]),
    ("evaluate segmenter, crop 512, batch 4", "segmenter", [512, 4]),
)


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(kind: str, args: list) -> float:
    """Bytes per pixel of one request of ``kind`` (run in this process)."""
    import numpy as np

    from napari_synthgen.layouts import make_layout

    if kind == "layout":
        make_layout(args[0], (256, 256), seed=1)
        base = _peak()
        make_layout(args[0], (args[1], args[1]), seed=1)
        return (_peak() - base) / args[1] ** 2
    if kind == "synth":
        from napari_synthgen import make_synthesizer

        extra = {"steps": 2} if "diffusion" in args[0] else {}
        synth = make_synthesizer(args[0], device="cpu", precision="fp32", tile=args[1],
                            batch_size=1, **extra)
        mask = make_layout("dense", (args[1], args[1]), seed=1)
        base = _peak()
        synth(mask, seed=0)
        return (_peak() - base) / args[1] ** 2
    from napari_synthgen.segmenter import Phase, Pool, SegmenterConfig, train_segmenter

    crop, batch = args
    mask = make_layout("dense", (crop, crop), seed=1)
    pool = Pool.from_pairs([((mask * 80 + 20).astype(np.uint8), mask)], ["a"])
    import torch  # noqa: F401  (loaded before the baseline)

    base = _peak()
    train_segmenter([Phase(1, pool)], SegmenterConfig(steps=1, batch_size=batch, crop=crop,
                                                      device="cpu", precision="fp32"))
    return (_peak() - base) / (crop * crop * batch)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], json.loads(sys.argv[3]))))
        return
    from napari_synthgen import limits

    constants = {"layout": limits.LAYOUT_BYTES_PER_PX, "synth": limits.SYNTH_BYTES_PER_PX,
                 "segmenter": limits.SEGMENTER_BYTES_PER_PX}
    print("| request | measured B/px | limits.py B/px | limits / measured |")
    print("| --- | --- | --- | --- |")
    for label, kind, args in CASES:
        out = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(args)],
                             check=True, capture_output=True, text=True).stdout
        per_px = float(out.strip().splitlines()[-1])
        print(f"| {label} | {per_px:.0f} | {constants[kind]} | "
              f"**{constants[kind] / max(per_px, 1):.1f}** |", flush=True)
    print("training (one step, batch 1 against batch 4 at tile 256, peak RSS of "
          "`napari-synthgen train`): see docs/benchmarks.md")


if __name__ == "__main__":
    main()
