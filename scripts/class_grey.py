"""Grey levels per mask class of paired folders: does a generator draw each class at the grey of
the real images? (e.g. mitochondria drawn darker and flatter than real ones)

    python scripts/class_grey.py runs/repl/real:binary runs/repl/syn runs/repl/test:binary

Each argument is a paired folder (``images/``, ``masks/``), optionally ``:READ_AS`` for how its
masks are read (``binary`` for 0/255 organelle masks; default auto). Prints a Markdown table:
per folder and class, the pixels, the grey mean, standard deviation and 10/50/90 % quantiles
on the unit scale (8-bit images divided by 255; what ``report`` compares as ``wd_<class>``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_synthgen.io import find_pairs, read_image, read_mask
from napari_synthgen.masks import CLASS_NAMES, N_CLASSES
from napari_synthgen.quality import to_unit


def class_values(folder: Path, read_as: str = "auto") -> list[np.ndarray]:
    """Per class, the unit-scale grey values of every pixel of that class in the folder."""
    values: list[list[np.ndarray]] = [[] for _ in range(N_CLASSES)]
    for pair in find_pairs(folder):
        image = to_unit(read_image(pair.image))
        mask = read_mask(pair.mask, source=read_as, boundary_width=2)  # evaluate's ring
        for c in range(N_CLASSES):
            values[c].append(image[mask == c])
    return [np.concatenate(v) if v else np.empty(0) for v in values]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="FOLDER[:READ_AS] of image/mask pairs")
    args = p.parse_args()
    print("| folder | class | pixels | mean | std | q10 | q50 | q90 |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.folders:
        folder, _, read_as = spec.partition(":")
        for c, v in enumerate(class_values(Path(folder), read_as or "auto")):
            if v.size == 0:
                continue
            q10, q50, q90 = np.quantile(v, [0.1, 0.5, 0.9])
            print(f"| {folder} | {c} ({CLASS_NAMES[c]}) | {v.size} | {v.mean():.3f} | "
                  f"{v.std():.3f} | {q10:.3f} | {q50:.3f} | {q90:.3f} |")


if __name__ == "__main__":
    main()
