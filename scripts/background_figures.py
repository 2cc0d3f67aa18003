"""Figures of what generated folders paint on background, against real EM; prints a table.

For each folder written by ``napari-synthgen generate`` (images/ + masks/), the median over its
samples of: the periodic-peak excess and the spectrum distance of the whole image against the
real pairs (napari_synthgen.quality), the grey-level spread inside background, and the share
of the image that is background. Used by scripts/pix2pix_unlabel_ab.sh.
Usage: ``python scripts/background_figures.py REAL_PAIRS GENERATED [GENERATED ...]``
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

from napari_synthgen.io import read_image, read_mask
from napari_synthgen.masks import BACKGROUND
from napari_synthgen.quality import reference_figures, reference_from_folder


def folder_figures(folder: Path, reference) -> dict[str, float]:
    """Median figures of one generated folder."""
    rows = []
    for image_path in sorted((folder / "images").glob("*.tif")):
        image = read_image(image_path)
        mask = read_mask(folder / "masks" / image_path.name)
        figures = reference_figures(image, mask, reference)
        background = image[mask == BACKGROUND]
        rows.append({"peak_excess": figures["peak_excess"],
                     "spectrum_dist": figures["spectrum_dist"],
                     "background_std": float(background.std()) if background.size else np.nan,
                     "background_share": float(background.size / mask.size)})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]} | {"n": len(rows)}


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    reference = reference_from_folder(sys.argv[1])
    print("| samples | n | periodic-peak excess | spectrum distance | background std "
          "(grey levels) | background share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in sys.argv[2:]:
        f = folder_figures(Path(name), reference)
        print(f"| {name} | {f['n']} | {f['peak_excess']:.2f} | {f['spectrum_dist']:.3f} | "
              f"{f['background_std']:.1f} | {f['background_share']:.2f} |")


if __name__ == "__main__":
    main()
