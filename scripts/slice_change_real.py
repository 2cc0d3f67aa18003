"""How much masks change between adjacent serial sections: real stacks against generated ones.

    python scripts/slice_change_real.py [--data ../shared/data] [--size 512] [--depth 12]
        [--seeds 3]

Prints a Markdown table of :func:`napari_synthgen.layout_stacks.stack_change` (the fraction of
pixels whose class changes from one slice to the next): for the dense masks of ISBI 2012 (30
sections) and VNC stack 1 (20 sections), for VNC's mitochondria masks (also relative to the
organelle pixels), and for stacks from ``layout_stack`` at the default drift. These figures
calibrate ``layout_stacks.DEFAULT_DRIFT`` and ``SPARSE_PACE``. The data sets stay outside the
package (their licences: ../shared/data/*/README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile

from napari_synthgen.layout_stacks import DEFAULT_DRIFT, layout_stack, stack_change
from napari_synthgen.masks import BACKGROUND

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_masks(folder: Path) -> np.ndarray:
    """Consecutive 2-D section masks of ``folder``, in file-name order, as one stack."""
    names = sorted(folder.glob("*.tif"))
    if not names:
        raise SystemExit(f"{folder} holds no .tif sections.")
    return np.stack([tifffile.imread(n) for n in names])


def row(label: str, stack: np.ndarray) -> str:
    """One table row: shape, change per slice, and change relative to the labelled pixels."""
    change = stack_change(stack)
    labelled = float(np.mean(stack != BACKGROUND))
    z, h, w = stack.shape
    return (f"| {label} | {z} x {h} x {w} | {change:.3f} | {labelled:.3f} | "
            f"{change / labelled:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--size", type=int, default=512, help="generated stacks: H = W")
    parser.add_argument("--depth", type=int, default=12, help="generated stacks: slices")
    parser.add_argument("--seeds", type=int, default=3, help="generated stacks per kind")
    args = parser.parse_args()
    print("| stack | Z x Y x X | change per slice | labelled fraction | change / labelled |")
    print("|---|---|---|---|---|")
    print(row("ISBI 2012 masks (real)", read_masks(args.data / "isbi2012" / "masks")))
    print(row("VNC stack 1 masks (real)", read_masks(args.data / "vnc_stack1" / "masks")))
    print(row("VNC stack 1 mitochondria (real)",
              read_masks(args.data / "vnc_stack1" / "masks_mito")))
    shape = (args.depth, args.size, args.size)
    for kind in ("dense", "sparse"):
        for seed in range(args.seeds):
            stack = layout_stack(kind, shape, seed=seed)
            print(row(f"layout_stack {kind}, drift {DEFAULT_DRIFT:g}, seed {seed}", stack),
                  flush=True)


if __name__ == "__main__":
    main()
