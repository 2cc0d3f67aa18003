"""Synthetic sets drawn on the same masks, side by side: what they paint where the mask says
nothing (class 0), against the real pairs.

    python scripts/class0_ab.py REAL SYN [SYN ...]

REAL is a paired folder of real images (``images/``, ``masks/``); each SYN a ``generate``
output folder. Only the image names every SYN holds are compared (the same masks and, with
``generate``'s default ``--noise mask`` and the same seed, the same starting noise), so the
sets differ only in how they were sampled. Prints a Markdown table, a row per set (means over
the images): class-0 grey mean and standard deviation, class-0 grey-level distance to the real
class 0 (``report``'s Wasserstein figure), class-0 edge strength (mean gradient magnitude,
Gaussian sigma 1.5 px), the grey mean of classes 1-2, the whole-image spectrum distance and
``report``'s score. docs/unlabeled.md's guidance table comes from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from napari_synthgen import quality

COLUMNS = ("class-0 grey mean", "class-0 grey std", "class-0 grey-level distance",
           "class-0 edge strength", "classes 1-2 grey mean", "spectrum distance", "score")


def figures(image: np.ndarray, mask: np.ndarray, ref: quality.ReferenceStats) -> list[float]:
    """The table's columns for one pair."""
    grey = image.astype(np.float64)
    edges = ndimage.gaussian_gradient_magnitude(grey, 1.5)
    c0, drawn = mask == 0, mask > 0
    fig = quality.sample_figures(image, mask, reference=ref)  # report's figures and score
    return [grey[c0].mean(), grey[c0].std(), fig["wd_background"], edges[c0].mean(),
            grey[drawn].mean() if drawn.any() else np.nan, fig["spectrum_dist"], fig["score"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("real", type=Path)
    parser.add_argument("synthetic", type=Path, nargs="+")
    args = parser.parse_args()
    real = [(tifffile.imread(f), tifffile.imread(args.real / "masks" / f.name))
            for f in sorted((args.real / "images").glob("*.tif"))]
    ref = quality.reference_from_pairs(real)
    names = sorted(set.intersection(*[{f.name for f in (s / "images").glob("*.tif")}
                                      for s in args.synthetic]))
    if not names:
        raise SystemExit("the synthetic folders share no image name: nothing to compare.")
    rows = {"real": [figures(im, m, ref) for im, m in real]}
    for folder in args.synthetic:
        rows[str(folder)] = [figures(tifffile.imread(folder / "images" / n),
                                     tifffile.imread(folder / "masks" / n), ref) for n in names]
    print(f"{len(names)} images on the same masks; real: {len(real)} pairs\n")
    print("| set | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, values in rows.items():
        means = np.nanmean(np.asarray(values, dtype=np.float64), axis=0)
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in means) + " |")


if __name__ == "__main__":
    main()
