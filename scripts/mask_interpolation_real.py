"""Mask interpolation between painted slices, measured on real serial sections.

    python scripts/mask_interpolation_real.py [--data ../shared/data] [--gap 4] [--step 1]

ISBI 2012's masks are 30 consecutive sections. For every k (every ``--step``-th), sections k and
k + ``--gap`` are the painted keys and the ``--gap`` - 1 sections between them are made by
:func:`napari_synthgen.mask_interpolation.interpolate_slices` and, for comparison, by copying
the nearest key (the earlier one on a tie). Each is compared with the real sections: pixel
agreement (fraction of pixels with the real class) and mean cell IoU (every real cell against
its best-overlapping cell of the made slice).
Prints a Markdown table. The data set stays outside the package (../shared/data/isbi2012).
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
    pairs = np.bincount(ra.ravel().astype(np.int64) * (nb + 1) + mb.ravel(),
                        minlength=(na + 1) * (nb + 1)).reshape(na + 1, nb + 1)
    area_r, area_m = pairs.sum(axis=1)[1:], pairs.sum(axis=0)[1:]
    inter = pairs[1:, 1:].astype(np.float64)
    iou = inter / (area_r[:, None] + area_m[None, :] - inter + 1e-12)
    return float(iou.max(axis=1).mean()) if nb else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--gap", type=int, default=4, help="keys k and k + gap")
    parser.add_argument("--step", type=int, default=1, help="take every step-th k")
    args = parser.parse_args()
    folder = args.data / "isbi2012" / "masks"
    names = sorted(p.name for p in folder.glob("*.tif"))
    if not names:
        raise SystemExit(f"{folder} holds no .tif masks.")
    stack = np.stack([tifffile.imread(folder / n) for n in names])
    gap = args.gap
    scores: dict[str, list[tuple[float, float]]] = {"interpolated": [], "nearest": []}
    seconds = 0.0
    for k in range(0, len(stack) - gap, args.step):
        a, b = stack[k], stack[k + gap]
        t0 = time.perf_counter()
        made = interpolate_slices(a, b, gap - 1)
        seconds += time.perf_counter() - t0
        for i in range(1, gap):
            real = stack[k + i]
            nearest = a if i <= gap - i else b
            for name, m in (("interpolated", made[i - 1]), ("nearest", nearest)):
                scores[name].append((float((m == real).mean()), cell_iou(real, m)))
    n_windows = len(range(0, len(stack) - gap, args.step))
    print(f"ISBI 2012 masks, keys k and k+{gap} for {n_windows} values of k, "
          f"{gap - 1} slices made between each ({seconds / n_windows:.2f} s per window)\n")
    print("| method | pixel agreement | mean cell IoU |")
    print("|---|---|---|")
    for name, rows in scores.items():
        arr = np.array(rows)
        print(f"| {name} | {arr[:, 0].mean():.3f} | {np.nanmean(arr[:, 1]):.3f} |")


if __name__ == "__main__":
    main()
