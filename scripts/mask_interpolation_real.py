"""Mask interpolation between painted slices, measured on real serial sections.

    python scripts/mask_interpolation_real.py [--data ../shared/data] [--gap 4] [--step 1]
        [--stacks isbi2012 vnc_stack1]

The masks of ISBI 2012 (30 consecutive 512 x 512 sections) and VNC stack 1 (20 consecutive
1024 x 1024 sections). For every k (every ``--step``-th), sections k and k + ``--gap`` are the
painted keys and the ``--gap`` - 1 sections between them are made by
:func:`napari_synthgen.mask_interpolation.interpolate_slices` and, for comparison, by copying
the nearest key (the earlier one on a tie). Each is compared with the real sections: pixel
agreement (fraction of pixels with the real class) and mean cell IoU (every real cell against
its best-overlapping cell of the made slice). Prints a Markdown table. The data sets stay
outside the package (their licences: ../shared/data/*/README.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_synthgen.mask_interpolation import interpolate_slices
from napari_synthgen.masks import mask_to_instances

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cell_iou(real: np.ndarray, made: np.ndarray) -> float:
    """Mean over the real cells of the IoU with their best-matching made cell.

    Cells are :func:`masks.mask_to_instances`'s: interior components grown into their boundary.
    """
    ra, mb = mask_to_instances(real), mask_to_instances(made)
    na, nb = int(ra.max()), int(mb.max())
    if na == 0:
        return float("nan")
    if nb == 0:
        return 0.0
    pairs = np.bincount(ra.ravel().astype(np.int64) * (nb + 1) + mb.ravel(),
                        minlength=(na + 1) * (nb + 1)).reshape(na + 1, nb + 1)
    area_r, area_m = pairs.sum(axis=1)[1:], pairs.sum(axis=0)[1:]
    inter = pairs[1:, 1:].astype(np.float64)
    iou = inter / (area_r[:, None] + area_m[None, :] - inter + 1e-12)
    return float(iou.max(axis=1).mean())


def measure(stack: np.ndarray, gap: int, step: int) -> tuple[dict[str, np.ndarray], float, int]:
    """Per made slice (pixel agreement, cell IoU) for both methods; seconds per window."""
    scores: dict[str, list[tuple[float, float]]] = {"interpolated": [], "nearest key": []}
    seconds, windows = 0.0, range(0, len(stack) - gap, step)
    for k in windows:
        a, b = stack[k], stack[k + gap]
        t0 = time.perf_counter()
        made = interpolate_slices(a, b, gap - 1)
        seconds += time.perf_counter() - t0
        for i in range(1, gap):
            real = stack[k + i]
            nearest = a if i <= gap - i else b
            for name, m in (("interpolated", made[i - 1]), ("nearest key", nearest)):
                scores[name].append((float((m == real).mean()), cell_iou(real, m)))
    return ({name: np.array(rows) for name, rows in scores.items()},
            seconds / max(len(windows), 1), len(windows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--gap", type=int, default=4, help="keys k and k + gap")
    parser.add_argument("--step", type=int, default=1, help="take every step-th k")
    parser.add_argument("--stacks", nargs="+", default=["isbi2012", "vnc_stack1"])
    args = parser.parse_args()
    if args.gap < 2 or args.step < 1:
        raise SystemExit("--gap must be at least 2 (a slice between the keys), --step at least 1.")
    print(f"Keys k and k+{args.gap}, the {args.gap - 1} sections between them made.\n")
    print("| stack | windows | method | pixel agreement | mean cell IoU | s per window |")
    print("|---|---|---|---|---|---|")
    for name in args.stacks:
        folder = args.data / name / "masks"
        paths = sorted(folder.glob("*.tif"))
        if len(paths) <= args.gap:
            raise SystemExit(f"{folder} holds {len(paths)} .tif masks; need more than --gap.")
        stack = np.stack([tifffile.imread(p) for p in paths])
        scores, seconds, n = measure(stack, args.gap, args.step)
        for method, arr in scores.items():
            sec = f"{seconds:.2f}" if method == "interpolated" else ""
            print(f"| {name} | {n} | {method} | {arr[:, 0].mean():.3f} | "
                  f"{np.nanmean(arr[:, 1]):.3f} | {sec} |")


if __name__ == "__main__":
    main()
