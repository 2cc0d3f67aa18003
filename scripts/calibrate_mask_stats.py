"""Fit the forward model of napari_synthgen.mask_stats: layout parameters -> mask statistics.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python scripts/calibrate_mask_stats.py [--write] [--table]

It makes seeded layouts (512 x 512) over a grid of ``dense_tissue`` parameters (two seeds per
point) and a seeded random design of ``sparse_organelles`` parameters (one seed per point),
measures them with ``measure_masks``, fits each statistic of
``FIT_STATS`` by least squares on ``param_features`` and prints the coefficients with the fit's
RMS residual. ``--write`` replaces the block between ``# BEGIN CALIBRATION`` and
``# END CALIBRATION`` in mask_stats.py. ``--table`` then prints real vs calibrated vs default
statistics for the ISBI 2012 and VNC masks in ../shared/data (Markdown, for docs/guide.md).
Same grid and seeds, same coefficients. A few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_synthgen import mask_stats  # noqa: E402
from napari_synthgen.layouts import dense_tissue, sparse_organelles  # noqa: E402
from napari_synthgen.mask_sets import derived_seed  # noqa: E402
from napari_synthgen.mask_stats import (  # noqa: E402
    FIT_STATS,
    IRREGULARITY_KNOTS,
    aspect_range,
    layout_params,
    measure_masks,
    param_features,
)

SHAPE = (512, 512)
DATA = REPO.parent / "shared" / "data"

GRID = {
    "dense": [
        {"density": d, "boundary_width": w, "irregularity": r}
        for d, w, r in itertools.product((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
                                         (1, 2, 3, 4, 6, 8), IRREGULARITY_KNOTS)
    ],
    # a seeded random design over (log density, width, log size, size range, aspect)
    "sparse": [
        {"density": float(math.exp(r.uniform(math.log(0.02), math.log(0.5)))),
         "boundary_width": int(r.integers(1, 6)),
         "size": (g * math.exp(-h), g * math.exp(h)),
         "aspect": aspect_range(float(r.uniform(0.2, 0.6)))}
        for r in [np.random.default_rng(20261205)]
        for g, h in [(float(math.exp(r.uniform(math.log(8), math.log(90)))),
                      float(r.uniform(0, 0.8))) for _ in range(360)]
    ],
}
#: seeds per grid point
SEEDS = {"dense": (0, 1), "sparse": (0,)}


def make(kind: str, params: dict, seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """One layout of ``kind`` with ``params``."""
    fn = dense_tissue if kind == "dense" else sparse_organelles
    return fn(shape, seed=seed, **params)


def measure(kind: str) -> list[tuple[dict, dict[str, float]]]:
    """Measure the layouts of ``kind``'s grid: (parameters, statistics) per point."""
    out = []
    t0 = time.time()
    for params in GRID[kind]:
        stats = measure_masks([make(kind, params, s) for s in SEEDS[kind]])
        out.append((params, stats.fit_values()))
    print(f"{kind}: {len(GRID[kind])} points in {time.time() - t0:.0f} s", file=sys.stderr)
    return out


def fit(kind: str, points: list[tuple[dict, dict[str, float]]]) -> dict[str, list[float]]:
    """Fit every statistic of ``kind`` on the measured points; prints the RMS residuals."""
    x = np.stack([param_features(kind, params) for params, _ in points])
    out = {}
    for key in FIT_STATS[kind]:
        y = np.array([t[key] for _, t in points])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        rms = float(np.sqrt(np.mean(np.square(x @ coef - y))))
        print(f"{kind:6s} {key:15s} rms {rms:.4f} (range {y.min():.3f}..{y.max():.3f})",
              file=sys.stderr)
        out[key] = [float(f"{c:.6g}") for c in coef]
    return out


def write(forward: dict[str, dict[str, list[float]]]) -> None:
    """Replace the calibration block of mask_stats.py with ``forward``."""
    path = REPO / "src" / "napari_synthgen" / "mask_stats.py"
    text = path.read_text()
    head, rest = text.split("# BEGIN CALIBRATION\n")
    _, tail = rest.split("# END CALIBRATION\n")
    lines = ["FORWARD: dict[str, dict[str, list[float]]] = {"]
    for kind, stats in forward.items():
        lines.append(f"    {kind!r}: {{")
        for key, coef in stats.items():
            lines.append(f"        {key!r}: [")
            for i in range(0, len(coef), 5):
                lines.append("            " + " ".join(f"{c!r}," for c in coef[i:i + 5]))
            lines.append("        ],")
        lines.append("    },")
    lines.append("}")
    path.write_text(head + "# BEGIN CALIBRATION\n" + "\n".join(lines) + "\n# END CALIBRATION\n"
                    + tail)


COLUMNS = ("count_per_mpx", "area_median", "area_spread", "boundary_width", "elongation",
           "irregularity", "coverage", "length_median", "length_spread")


def table() -> None:
    """Markdown: real vs calibrated (``--like``) vs default layout statistics."""
    import tifffile

    sets = [("ISBI 2012 (30 x 512²)", DATA / "isbi2012" / "masks"),
            ("VNC stack 1, dense (20 x 1024²)", DATA / "vnc_stack1" / "masks"),
            ("VNC stack 1, mitochondria (20 x 1024²)", DATA / "vnc_stack1" / "masks_mito")]
    print("| set | masks | " + " | ".join(COLUMNS) + " | parameters |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for name, folder in sets:
        masks = [tifffile.imread(p) for p in sorted(folder.glob("*.tif"))]
        real = measure_masks(masks)
        shape = masks[0].shape[-2:]
        params = layout_params(real)
        n = 8 if shape[0] <= 512 else 4
        like = measure_masks([make(real.kind, params, derived_seed(0, i), shape)
                              for i in range(n)])
        default = measure_masks([make(real.kind, {}, derived_seed(0, i), shape)
                                 for i in range(n)])
        for label, st, p in (("real", real, ""), (f"`--like` ({n})", like, json.dumps(params)),
                             (f"default ({n})", default, "defaults")):
            d = st.to_dict()
            print(f"| {name} | {label} | " + " | ".join(f"{d[c]:.4g}" for c in COLUMNS)
                  + f" | {p} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="update mask_stats.py")
    ap.add_argument("--table", action="store_true", help="print the real/like/default table")
    ap.add_argument("--skip-fit", action="store_true", help="only the table")
    ap.add_argument("--points", type=Path, default=None,
                    help="JSON file of measured grid points: read if it exists (refit without "
                    "measuring), else written")
    ap.add_argument("--kinds", nargs="+", default=["dense", "sparse"],
                    help="refit only these kinds (the others keep their coefficients)")
    args = ap.parse_args()
    if not args.skip_fit:
        forward = dict(mask_stats.FORWARD)
        saved = json.loads(args.points.read_text()) if args.points and args.points.exists() else {}
        for kind in args.kinds:
            if kind not in saved:
                saved[kind] = measure(kind)
            forward[kind] = fit(kind, saved[kind])
        if args.points:
            args.points.write_text(json.dumps(saved))
        print(json.dumps(forward, indent=1))
        if args.write:
            write(forward)
            mask_stats.FORWARD.clear()
            mask_stats.FORWARD.update(forward)
    if args.table:
        table()


if __name__ == "__main__":
    main()
