"""A/B: does pix2pix paint unlabelled tissue (class 0) more like real EM when raw images without
masks join training (``train --unlabeled``)?

On the VNC stack with its mitochondria-only masks (class 0 = unlabelled tissue, ~93 % of the
pixels): A trains on 5 labelled slices (00-04); B on the same 5 plus 10 raw slices (05-14) as
``--unlabeled``, same steps and seed. Both generate the held-out masks (slices 15-19), and the
class-0 texture of their images is compared with the real held-out images':

- grey level mean / standard deviation under class 0 (contrast: blur lowers the std),
- mean local standard deviation in 7 x 7 windows and mean gradient magnitude under class 0
  (fine texture: flat blur lowers both),
- the log power spectrum of 128-px windows that lie entirely in class 0, its distance to the
  real windows' (:func:`napari_synthgen.quality.spectrum_distance`) and its periodic-peak
  figure (a repeating pattern is a spike),
- ``napari-synthgen report`` against the real held-out pairs: the per-class grey-level distance
  ``wd_background``, ``spectrum_dist``, ``std_ratio`` and the combined ``score`` (consistency
  segmenter off: this is about texture).

Usage (from the repository, outputs outside it)::

    PYTHONPATH=src python scripts/pix2pix_unlabeled_ab.py --out /work/runs/pixunl \\
        --vnc ../shared/data/vnc_stack1 --steps 1500 --variants A B:1 B:10

A variant is ``A`` (labelled only) or ``B:<lambda_unlabeled>``; finished runs are reused.
Writes ``OUT/ab.json`` and ``OUT/ab.md`` (the table).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

LABELLED = range(0, 5)
RAW = range(5, 15)
HELDOUT = range(15, 20)
WINDOW = 128
TRAIN_ARGS = ["--netG", "unet_128", "--ngf", "32", "--ndf", "32", "--tile", "128",
              "--batch-size", "4", "--precision", "fp32", "--log-every", "50",
              "--sample-every", "500"]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(src.resolve())


def build_data(vnc: Path, out: Path) -> dict[str, Path]:
    """Paired folders (labelled, held-out) and a folder of raw images, as symlinks."""
    data = out / "data"
    for name, ids in (("lab", LABELLED), ("heldout", HELDOUT)):
        for i in ids:
            _link(vnc / "images" / f"vnc_{i:02d}.tif", data / name / "images" / f"vnc_{i:02d}.tif")
            _link(vnc / "masks_mito" / f"vnc_{i:02d}.tif",
                  data / name / "masks" / f"vnc_{i:02d}.tif")
    for i in RAW:
        _link(vnc / "images" / f"vnc_{i:02d}.tif", data / "raw" / f"vnc_{i:02d}.tif")
    return {"lab": data / "lab", "heldout": data / "heldout", "raw": data / "raw"}


def _cli(*args: str, log: Path) -> None:
    cmd = [sys.executable, "-m", "napari_synthgen", *args]
    print("$", " ".join(cmd), flush=True)
    with log.open("w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})


def train_and_generate(variant: str, data: dict[str, Path], out: Path, steps: int,
                       seed: int) -> Path:
    """Train the variant (unless its model exists) and generate the held-out masks."""
    folder = out / (variant if variant == "A" else f"B_lu{float(variant[2:]):g}")
    run = folder / "run"
    if not (run / "latest.json").exists() or not list(run.glob(f"G_step_{steps:07d}*")):
        args = ["train", "--family", "pix2pix", "--data", str(data["lab"]),
                "--val", str(data["heldout"]), "--out", str(run), *TRAIN_ARGS,
                "--steps", str(steps), "--seed", str(seed), "--checkpoint-every", str(steps)]
        if variant != "A":
            args += ["--unlabeled", str(data["raw"]), "--lambda-unlabeled", variant[2:]]
        folder.mkdir(parents=True, exist_ok=True)
        _cli(*args, log=folder / "train.log")
    gen = folder / "gen"
    if not (gen / "images").exists() or len(list((gen / "images").iterdir())) < len(HELDOUT):
        _cli("generate", "--model", str(run), "--masks", str(data["heldout"]), "--out",
             str(gen), "--seed", "0", "--overwrite", log=folder / "generate.log")
    return gen


# --------------------------------------------------------------------------- figures
def _local_std(img: np.ndarray, k: int = 7) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    m = uniform_filter(img, k)
    return np.sqrt(np.maximum(uniform_filter(img * img, k) - m * m, 0.0))


def _class0_windows(mask: np.ndarray) -> list[tuple[int, int]]:
    """Corners of non-overlapping 128-px windows entirely in class 0."""
    h, w = mask.shape
    return [(y, x) for y in range(0, h - WINDOW + 1, WINDOW) for x in range(0, w - WINDOW + 1,
                                                                            WINDOW)
            if not mask[y:y + WINDOW, x:x + WINDOW].any()]


def texture_figures(image: np.ndarray, mask: np.ndarray, windows: list[tuple[int, int]]
                    ) -> dict[str, object]:
    """Class-0 texture figures of one image (grey levels on a 0..1 scale)."""
    from scipy.ndimage import binary_erosion, sobel

    from napari_synthgen.quality import spectrum_figures, to_unit

    unit = to_unit(image).astype(np.float64)
    sel = mask == 0
    inner = binary_erosion(sel, iterations=4)  # away from the objects' edges
    grad = np.hypot(sobel(unit, 0), sobel(unit, 1)) / 8.0
    spectra, peaks = [], []
    for y, x in windows:
        spec, peak = spectrum_figures(unit[y:y + WINDOW, x:x + WINDOW])
        spectra.append(spec)
        peaks.append(peak)
    return {"c0_mean": float(unit[sel].mean()), "c0_std": float(unit[sel].std()),
            "c0_local_std": float(_local_std(unit)[inner].mean()),
            "c0_grad": float(grad[inner].mean()),
            "c0_spectrum": np.mean(spectra, 0), "c0_peak": float(np.mean(peaks))}


def measure(folder: Path, heldout: Path, real_spectrum: np.ndarray | None) -> dict[str, float]:
    """Mean class-0 figures over the held-out masks of a paired folder."""
    from napari_synthgen.io import read_image, read_mask
    from napari_synthgen.quality import spectrum_distance

    rows = []
    for i in HELDOUT:
        name = f"vnc_{i:02d}.tif"
        mask = read_mask(heldout / "masks" / name)
        # generate names its images <mask>_s<seed>.tif
        image = read_image(sorted((folder / "images").glob(f"vnc_{i:02d}*"))[0])
        rows.append(texture_figures(image, mask, _class0_windows(mask)))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "c0_spectrum"}
    spectrum = np.mean([r["c0_spectrum"] for r in rows], 0)
    out["c0_spectrum_dist"] = (spectrum_distance(spectrum, real_spectrum)
                               if real_spectrum is not None else 0.0)
    out["_spectrum"] = spectrum.tolist()  # type: ignore[assignment]
    return out


def report_figures(gen: Path, heldout: Path, out: Path) -> dict[str, float]:
    """``napari-synthgen report`` (consistency off): mean of its per-sample figures."""
    rep = out / "report"
    if not (rep / "report.csv").exists():
        _cli("report", "--samples", str(gen), "--reference", str(heldout), "--out", str(rep),
             "--consistency-steps", "0", log=out / "report.log")
    with (rep / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    keys = ("wd_background", "wd_mean", "spectrum_dist", "std_ratio", "score")
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in keys}


COLUMNS = (("c0_mean", "class-0 mean"), ("c0_std", "class-0 std"),
           ("c0_local_std", "local std 7x7"), ("c0_grad", "gradient"),
           ("c0_spectrum_dist", "class-0 spectrum dist"), ("c0_peak", "periodic peak"),
           ("wd_background", "report wd_background"), ("spectrum_dist", "report spectrum_dist"),
           ("std_ratio", "report std_ratio"), ("score", "report score"))


def table(results: dict[str, dict[str, float]]) -> str:
    head = "| run | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, figs in results.items():
        cells = [f"{figs[k]:.4f}" if k in figs else "-" for k, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vnc", type=Path, default=Path("../shared/data/vnc_stack1"))
    p.add_argument("--out", type=Path, default=Path("/work/runs/pixunl"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["A", "B:1", "B:10"])
    args = p.parse_args(argv)
    data = build_data(args.vnc, args.out)
    real = measure(data["heldout"], data["heldout"], None)
    real_spectrum = np.asarray(real["_spectrum"])
    results = {"real (held-out)": real}
    for variant in args.variants:
        gen = train_and_generate(variant, data, args.out, args.steps, args.seed)
        figs = measure(gen, data["heldout"], real_spectrum)
        figs.update(report_figures(gen, data["heldout"], gen.parent))
        results[variant] = figs
    for figs in results.values():
        figs.pop("_spectrum", None)
    (args.out / "ab.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    (args.out / "ab.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
