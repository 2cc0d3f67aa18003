"""docs/images/volume_slices.png: a real ISBI 2012 stack against its masks synthesized as a
volume (serial z coupling) and slice by slice (independent), seen from the side.

    python scripts/volume_figure.py [--slices 10] [--size 256] [--steps 20] [--out PNG]

Top row: slice 0 of each stack (the same mask; serial slice 0 equals the 2-D sample). Rows
below: a side view (rows y0..y0+h of column x, every slice stretched to the section thickness
over the pixel size, 50 nm / 4 nm, like Fiji's orthogonal views), and each stack's texture
beyond the mask in the same side view (each slice minus its per-class mean grey levels,
smoothed with sigma 2: what :mod:`napari_synthgen.zconsistency` correlates). Real texture
runs on through z in streaks; independent slices make a pattern that changes every slice.
The data set stays outside the package (its licence).
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tifffile
from PIL import Image

from napari_synthgen.registry import make_synthesizer
from napari_synthgen.zconsistency import residuals, unit_stack, z_consistency

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012"
#: ISBI 2012: 50 nm sections of 4 nm pixels.
Z_STRETCH = 50 / 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "volume_slices.png")
    args = parser.parse_args()
    names = sorted(p.name for p in (ISBI / "images").glob("*.tif"))[: args.slices]
    crop = np.s_[: args.size, : args.size]
    real = np.stack([tifffile.imread(ISBI / "images" / n)[crop] for n in names])
    masks = np.stack([tifffile.imread(ISBI / "masks" / n)[crop] for n in names])
    stacks = {"real sections (ISBI 2012)": real}
    for coupling, label in (("serial", "synthesized as a volume (serial)"),
                            ("independent", "slice by slice (independent)")):
        synth = make_synthesizer("demo-diffusion", steps=args.steps, z_coupling=coupling)
        stacks[label] = synth(masks, seed=0)
        synth.close()
    x = args.size // 2
    fig, axes = plt.subplots(3, 3, figsize=(11, 7.2),
                             gridspec_kw={"height_ratios": [2.2, 1, 1]})
    extent = [0, args.size, args.slices * Z_STRETCH, 0]
    for col, (label, stack) in enumerate(stacks.items()):
        lag1 = z_consistency(stack, masks).lag_corr[0]
        axes[0, col].imshow(stack[0], cmap="gray", vmin=0, vmax=255)
        axes[0, col].axvline(x, color="#ffcc00", lw=0.8)
        axes[0, col].set_title(f"{label}\nadjacent-slice correlation beyond the mask {lag1:.2f}",
                               fontsize=9)
        axes[1, col].imshow(stack[:, :, x], cmap="gray", vmin=0, vmax=255, aspect="auto",
                            extent=extent, interpolation="nearest")
        res = residuals(unit_stack(stack), masks)[0][:, :, x]
        lim = float(np.percentile(np.abs(res), 99))
        axes[2, col].imshow(res, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                            extent=extent, interpolation="nearest")
    axes[1, 0].set_ylabel("side view\n(z down)", fontsize=9)
    axes[2, 0].set_ylabel("texture beyond\nthe mask", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{args.slices} sections of {args.size} px, demo-diffusion, DPM-Solver++ "
                 f"{args.steps} steps, seed 0; side views along the yellow line", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90)
    # a 256-colour palette keeps the picture under the docs' 300 KB (EM texture compresses badly)
    Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
        args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1000} KB)")


if __name__ == "__main__":
    main()
