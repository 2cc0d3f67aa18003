"""Does a generator's conditioning survive large uniform label regions? (issue 17, part 2)

A disk of one class, ``--radius`` px (default 200: a region several model tiles across) is
pasted into a real mask, with a boundary ring where the class is an object class, and the
model draws the mask with ``--seeds`` seeds. Inside the disk the script measures, against the
distance from the disk's edge, the grey-level mean and the local standard deviation (7 x 7
windows: the texture) and compares them with the same class in the real images. A condition
that normalisation washes out inside a uniform region (Park et al., SPADE, CVPR 2019) shows as
figures that drift from the class's real values once the distance passes half a tile; a model
without a noise input shows as a pattern that repeats with the tile (``repeat``: the largest
normalised autocorrelation of the disk's central 256 x 256 crop at a lag of 12 px or more;
the real column: 256-px crops of the real images that are at least 90 % that class).

    python scripts/uniform_regions.py "demo:isbi:1" "demo-diffusion:isbi:1" \\
        "runs/mito_pix/gen:mito:0" "runs/mito_pixn/gen:mito:0,1" "runs/mito_d/gen:mito:0,1" \\
        "runs/vnc1500/gen:vnc:0,1" --out docs/images/uniform_regions.png

Each spec is MODEL:SETTING:CLASSES[:stochastic] (``stochastic``: a pix2pix model with its
test-time dropout on, seeded per tile, as ``generate --stochastic``). SETTING picks the real
slices: isbi = ISBI 2012 00-04, vnc = VNC dense 00-04, mito = VNC mitochondria 00-04 (the
labelled slices of the study). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tifffile
from scipy import ndimage as ndi

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = {"isbi": (SHARED / "isbi2012", "masks", "isbi2012_train_"),
        "vnc": (SHARED / "vnc_stack1", "masks", "vnc_"),
        "mito": (SHARED / "vnc_stack1", "masks_mito", "vnc_")}
CLASS_NAMES = {"isbi": ("-", "cell interior", "membrane"),
               "vnc": ("glia, extracellular", "cell interior", "membrane"),
               "mito": ("other tissue", "mitochondrion", "its boundary")}
#: distance bins (px from the disk's edge) of the profiles
BINS = (0, 8, 16, 32, 48, 64, 96, 128, 160, 200)
MIN_LAG = 12
CROP = 256


def _real(setting: str) -> list[tuple[np.ndarray, np.ndarray]]:
    root, masks, pre = REAL[setting]
    return [(tifffile.imread(root / "images" / f"{pre}{i:02d}.tif"),
             tifffile.imread(root / masks / f"{pre}{i:02d}.tif")) for i in range(5)]


def local_std(image: np.ndarray, size: int = 7) -> np.ndarray:
    """Standard deviation of grey levels (0..1) in ``size`` x ``size`` windows."""
    x = image.astype(np.float64) / 255.0
    m = ndi.uniform_filter(x, size)
    return np.sqrt(np.maximum(ndi.uniform_filter(x * x, size) - m * m, 0.0))


def repeat_score(crop: np.ndarray) -> float:
    """Largest normalised autocorrelation at a lag of at least MIN_LAG px (circular, FFT)."""
    x = crop.astype(np.float64)
    x = x - x.mean()
    f = np.fft.fft2(x)
    ac = np.fft.fftshift(np.real(np.fft.ifft2(f * np.conj(f))))
    ac /= ac.max() if ac.max() > 0 else 1.0
    cy, cx = ac.shape[0] // 2, ac.shape[1] // 2
    yy, xx = np.ogrid[:ac.shape[0], :ac.shape[1]]
    ac[(yy - cy) ** 2 + (xx - cx) ** 2 < MIN_LAG ** 2] = -np.inf
    return float(ac.max())


def real_stats(setting: str, cls: int) -> dict[str, float]:
    """The class's grey mean, local std and repeat score in the real labelled slices (pixels
    at least 4 px from another class; mean and std over slices)."""
    means, stds, reps = [], [], []
    for image, mask in _real(setting):
        inside = ndi.binary_erosion(mask == cls, iterations=4)
        if inside.sum() < 100:
            continue
        means.append(image[inside].mean() / 255.0)
        stds.append(local_std(image)[inside].mean())
        share = ndi.uniform_filter((mask == cls).astype(np.float64), CROP)
        h = CROP // 2
        ys, xs = np.nonzero(share[h:-h, h:-h] >= 0.9)
        if len(ys):
            k = np.random.default_rng(0).choice(len(ys), min(4, len(ys)), replace=False)
            reps += [repeat_score(image[ys[j]:ys[j] + CROP, xs[j]:xs[j] + CROP]) for j in k]
    return {"mean": float(np.mean(means)), "mean_sd": float(np.std(means)),
            "lstd": float(np.mean(stds)), "lstd_sd": float(np.std(stds)),
            "repeat": float(np.mean(reps)) if reps else math.nan}


def disk_mask(base: np.ndarray, cls: int, radius: int, ring: int) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """``base`` with a centred disk of ``cls`` (an object class gets a boundary ring of class 2
    ``ring`` px wide); returns the mask and the disk's distance-to-edge map (0 outside)."""
    h, w = base.shape
    yy, xx = np.ogrid[:h, :w]
    r = np.sqrt((yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2)
    mask = base.copy()
    if cls == 1:
        mask[r < radius + ring] = 2
    mask[r < radius] = cls
    return mask, np.where(r < radius, radius - r, 0.0)


def profile(image: np.ndarray, dist: np.ndarray) -> tuple[list[float], list[float]]:
    """Grey mean and local std of ``image`` in each distance bin of the disk."""
    ls = local_std(image)
    g = image.astype(np.float64) / 255.0
    means, stds = [], []
    for lo, hi in itertools.pairwise(BINS):
        sel = (dist > lo) & (dist <= hi)
        means.append(float(g[sel].mean()) if sel.any() else math.nan)
        stds.append(float(ls[sel].mean()) if sel.any() else math.nan)
    return means, stds


def _name(model: str) -> str:
    """A model's short name: a bundled name, a file name, or a run's folder (RUN/gen -> RUN)."""
    path = Path(model)
    return path.parent.name if path.name == "gen" else path.name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="+", help="MODEL:SETTING:CLASSES, e.g. demo-diffusion:isbi:1")
    p.add_argument("--radius", type=int, default=200)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=12, help="diffusion sampler steps")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    from napari_synthgen.registry import load_model, make_synthesizer

    rows, panels = [], []
    for spec in args.specs:
        parts = spec.split(":")
        stochastic = parts[-1] == "stochastic"
        model_name, setting, classes = parts[:3]
        model = load_model(model_name)
        family = model.info.family
        settings: dict = {"device": "cpu"}
        if family == "diffusion":
            settings["steps"] = args.steps
        if stochastic:
            settings["stochastic"] = True
            family += ", dropout on"
        synth = make_synthesizer(model, **settings)
        base = _real(setting)[0][1][:512, :512]
        try:
            for cls in (int(c) for c in classes.split(",")):
                mask, dist = disk_mask(base, cls, args.radius, ring=5)
                ref = real_stats(setting, cls)
                means, stds, reps, first = [], [], [], None
                for seed in range(args.seeds):
                    img = synth(mask, seed=seed)
                    first = img if first is None else first
                    m, s = profile(img, dist)
                    means.append(m)
                    stds.append(s)
                    c0 = mask.shape[0] // 2 - CROP // 2
                    reps.append(repeat_score(img[c0:c0 + CROP, c0:c0 + CROP]))
                means_a, stds_a = np.array(means).mean(0), np.array(stds).mean(0)
                label = f"{_name(model_name)} ({family}), {setting} class {cls}"
                panels.append((label, first, mask, means_a, stds_a, ref))
                deep = [i for i, lo in enumerate(BINS[:-1]) if lo >= 64]
                rows.append(f"| {_name(model_name)} | {family} | {setting} | {cls} "
                            f"({CLASS_NAMES[setting][cls]}) | {means_a[1]:.3f} / "
                            f"{np.mean(means_a[deep]):.3f} | {ref['mean']:.3f} | "
                            f"{stds_a[1]:.3f} / {np.mean(stds_a[deep]):.3f} | "
                            f"{ref['lstd']:.3f} | {np.mean(reps):.2f} | {ref['repeat']:.2f} |")
                print(rows[-1], flush=True)
        finally:
            synth.close()

    fig, axes = plt.subplots(len(panels), 3, figsize=(11, 2.9 * len(panels)), squeeze=False)
    centres = [(lo + hi) / 2 for lo, hi in itertools.pairwise(BINS)]
    for r, (label, img, mask, means, stds, ref) in enumerate(panels):
        ax = axes[r, 0]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.contour(mask == mask[mask.shape[0] // 2, mask.shape[1] // 2], levels=[0.5],
                   colors="#ff7f0e", linewidths=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=8)
        for ax, vals, key, what in ((axes[r, 1], means, "mean", "grey-level mean"),
                                    (axes[r, 2], stds, "lstd", "local std (7 x 7)")):
            ax.plot(centres, vals, marker="o", color="#2ca02c", label="synthetic, in the disk")
            ax.axhspan(ref[key] - ref[f"{key}_sd"], ref[key] + ref[f"{key}_sd"], color="0.8",
                       label="real, this class (± sd over slices)")
            ax.axhline(ref[key], color="0.4", lw=1)
            ax.axvline(64, color="k", ls=":", lw=0.8)
            ax.set_xlabel("px from the disk's edge (dotted: half a 128-px tile)", fontsize=8)
            ax.set_ylabel(what)
            ax.legend(fontsize=7)
    fig.tight_layout()
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=60)
    Image.open(buf).convert("RGB").quantize(256).save(args.out, optimize=True)
    print("\n| model | family | setting | class | grey mean, edge (8-16 px) / deep (64+ px) | "
          "real | local std, edge / deep | real | repeat | real repeat |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
