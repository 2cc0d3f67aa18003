"""Write VNC mitochondria as a user's organelle data often come: a second check of issue 17.

The study (docs/utility.md) ran on `vnc_stack1/masks_mito` as 3-class TIFFs, labelled 00-04 and
test 15-19. This writes the same tissue the other way round and in another form, to run the
whole chain as a user with new data would (`utility_study.sh folders`, `--read-as binary`):

- labelled 15-19 (``labelled/images``, ``labelled/masks``), raw 05-14 (``raw/``, images only,
  generator only), test 00-04 (``test/``): contiguous blocks, so no test slice neighbours a
  labelled one, and the labelled and test blocks swap places with the study's;
- 8-bit PNG images and 0/255 PNG masks (every mitochondrion 255, the rest 0: the masks' own
  boundary ring is dropped, ``--read-as binary`` draws one), cropped to 1000 x 900 (not square,
  not a multiple of the 128-px tiles).

Usage: python scripts/organelle_folders.py OUT   (vnc_stack1 is not part of the package; its
licence allows tests, benchmarks and studies, so OUT stays outside the repository)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

VNC = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc_stack1"
SPLIT = {"labelled": range(15, 20), "raw": range(5, 15), "test": range(0, 5)}
CROP = (slice(0, 1000), slice(60, 960))  # 1000 x 900


def write_folders(out: Path, vnc: Path = VNC) -> dict[str, int]:
    """Write the three folders under ``out``; return how many slices each holds."""
    counts = {}
    for part, slices in SPLIT.items():
        for i in slices:
            name = f"vnc_{i:02d}"
            image = tifffile.imread(vnc / "images" / f"{name}.tif")[CROP]
            if image.dtype != np.uint8:
                raise SystemExit(f"{name}: expected 8-bit images, found {image.dtype}")
            if part == "raw":
                (out / "raw").mkdir(parents=True, exist_ok=True)
                iio.imwrite(out / "raw" / f"{name}.png", image)
                continue
            mask = tifffile.imread(vnc / "masks_mito" / f"{name}.tif")[CROP]
            for sub in ("images", "masks"):
                (out / part / sub).mkdir(parents=True, exist_ok=True)
            iio.imwrite(out / part / "images" / f"{name}.png", image)
            objects = np.where(mask > 0, 255, 0).astype(np.uint8)
            iio.imwrite(out / part / "masks" / f"{name}.png", objects)
        counts[part] = len(slices)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write labelled/, raw/ and test/ into")
    args = parser.parse_args()
    counts = write_folders(args.out)
    print(", ".join(f"{k}: {v} slices" for k, v in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()
