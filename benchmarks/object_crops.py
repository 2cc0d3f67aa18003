"""What placing crops over objects (``train --object-share``) costs the tile sampler, and what
it buys: the share of crops that hold an object pixel, on the VNC mitochondria masks (20
slices of 1024 x 1024, mitochondria about 5 % of the pixels).

Rows: the plain sampler (the baseline, same process), then ``object_share`` 0.33 and 1.0:
set-up time (the flat indices of every object pixel, per image and class), their memory, the time
per batch of 8 tiles of 128 px (flips and turns on), the share of tiles with an object pixel
and the share of object pixels in them. A training step of a small network costs tens of
milliseconds, so a sampler cost of a few hundred microseconds per batch is none.

Run: ``python benchmarks/object_crops.py [--batches 300]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_synthgen.io import read_array
from napari_synthgen.masks import coerce_mask
from napari_synthgen.training.data import Sample, TileSampler

VNC = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc_stack1"


def _samples() -> list[Sample]:
    """The 20 VNC slices with their mitochondria masks (3 classes, as training reads them)."""
    out = []
    for m in sorted((VNC / "masks_mito").glob("*.tif")):
        mask = coerce_mask(read_array(m))
        out.append(Sample(m.stem, read_array(VNC / "images" / m.name), mask))
    return out


def measure(samples: list[Sample], share: float, batches: int) -> dict[str, float]:
    """Set-up seconds, index megabytes, microseconds per batch and the share of tiles with an
    object for one ``object_share``."""
    t0 = time.perf_counter()
    sampler = TileSampler(samples, tile=128, stride=None, batch_size=8, seed=0, flips=True,
                          rot90=True, object_share=share)
    setup = time.perf_counter() - t0
    mb = sum(i.nbytes for o in sampler.objects for i in o.values()) / 2**20
    held = pixels = 0.0
    t0 = time.perf_counter()
    for k in range(batches):
        masks, _ = sampler.batch(k)
        held += int((masks > 0).flatten(1).any(1).sum())
        pixels += float((masks > 0).float().mean())
    per_batch = (time.perf_counter() - t0) / batches
    return {"setup_s": setup, "index_mb": mb, "batch_us": per_batch * 1e6,
            "with_object": held / (8 * batches), "object_pixels": pixels / batches}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=300)
    args = p.parse_args()
    samples = _samples()
    frac = np.mean([(s.mask > 0).mean() for s in samples])
    print(f"{len(samples)} VNC mitochondria slices, object pixels {frac:.1%}; "
          f"{args.batches} batches of 8 tiles of 128 px")
    TileSampler(samples, tile=128, stride=None, batch_size=8, seed=0)  # warm-up
    rows = [(share, measure(samples, share, args.batches)) for share in (0.0, 0.33, 1.0)]
    base = rows[0][1]["batch_us"]
    print("| object_share | set-up (s) | indices (MB) | per batch (us) | vs plain "
          "| tiles with an object | object pixels |")
    print("|---|---|---|---|---|---|---|")
    for share, r in rows:
        print(f"| {share:g} | {r['setup_s']:.3f} | {r['index_mb']:.1f} | {r['batch_us']:.0f} | "
              f"{r['batch_us'] / base:.2f}x | {r['with_object']:.0%} | "
              f"{r['object_pixels']:.1%} |")


if __name__ == "__main__":
    main()
