"""The same mask drawn by pix2pix generators that differ only in their noise, beside real tissue.

Each run is a ``utility_study.sh`` folder whose ``syn/`` holds ``generate``'s pairs of the same
masks (the runs share ``masks/``); the figure shows one crop of the same sample from each, at
full resolution (grain and repetition only show 1:1), after a crop of a real test image.

    python scripts/noise_figure.py runs/rep_data/test/images/vnc_00.png \\
        "no noise:runs/rep" "noise every px:runs/repf" "noise every 8 px:runs/repn" \\
        --out docs/images/noise_scale.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from napari_synthgen.io import read_array

CROP = 160


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("real", type=Path, help="a real image to crop for comparison")
    p.add_argument("runs", nargs="+", help="LABEL:RUN_DIR, each with syn/images/")
    p.add_argument("--sample", default=None,
                   help="file name in syn/images (default: the last by name, a calibrated layout)")
    p.add_argument("--at", type=int, nargs=2, default=(0, 0), metavar=("Y", "X"),
                   help="top-left corner of the crop in the sample")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    runs = [spec.split(":", 1) for spec in args.runs]
    name = args.sample or sorted(p.name for p in (Path(runs[0][1]) / "syn" / "images")
                                 .glob("*.tif"))[-1]
    y, x = args.at
    panels = [("real tissue", read_array(args.real)[:CROP, :CROP])]
    panels += [(label, read_array(Path(run) / "syn" / "images" / name)[y:y + CROP, x:x + CROP])
               for label, run in runs]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.7 * len(panels), 1.95), dpi=100)
    for ax, (label, crop) in zip(axes, panels, strict=True):
        ax.imshow(crop, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=8, pad=3)
        ax.set_axis_off()
    fig.tight_layout(pad=0.8)
    import io

    from make_docs import save_png  # the docs' palette PNG writer (scripts/make_docs.py)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    save_png(buffer, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB): {name}")


if __name__ == "__main__":
    main()
