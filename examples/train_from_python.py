"""Train a small pix2pix model from Python, watching the events the engine yields.

    python examples/train_from_python.py DATA_DIR OUT_DIR [--steps 200]

DATA_DIR is a paired folder (images/ + masks/), for example ../shared/data/isbi2012.
"""

from __future__ import annotations

import argparse

from napari_synthgen.registry import make_config
from napari_synthgen.training.engine import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    cfg = make_config(data=[args.data], out=args.out, steps=args.steps, ngf=16, ndf=32,
                      batch_size=4, flips=True, rot90=True, sample_every=50,
                      checkpoint_every=100, log_every=10)
    for event in train(cfg):
        kind = event["event"]
        if kind == "progress":
            losses = ", ".join(f"{k} {v:.3f}" for k, v in event["losses"].items())
            print(f"step {event['step']}/{event['total']}: {losses}, ETA {event['eta_s']:.0f} s")
        elif kind in ("checkpoint", "sample"):
            print(f"{kind}: {event['path']}")
        elif kind == "validation":
            print(f"validation L1 {event['l1']:.1f} grey levels, SSIM {event['ssim']:.3f}")
        elif kind in ("finished", "failed"):
            print(kind, event.get("message") or event.get("checkpoint"))


if __name__ == "__main__":
    main()
