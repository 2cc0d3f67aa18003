"""The bundled few-step model against its teacher on the same masks: ``report``-style score,
membrane contrast and ``evaluate``'s synthetic-only boundary F1.

    python scripts/fast_vs_teacher.py [--data ../shared/data] [--slices 24 25 26 27 28 29]
        [--size 256] [--eval-steps 100] [--eval-seeds 2] [--no-eval] [--fast-model MODEL]
        [--fast-guidance W] [--teacher-guidance W] [--fast-tile PX] [--teacher-tile PX]
        [--fast-overlap PX] [--fast-start-tile PX]

For the ISBI 2012 slices ``--slices`` (default the last six, 24..29), top-left ``--size`` px
crops, synthesizes every mask with ``--fast-model`` (default the bundled
``demo-diffusion-fast``; or any model file distilled from demo-diffusion, e.g. a run's 1-step
model; with its own default steps) and with ``--teacher`` (default ``demo-diffusion``,
DPM-Solver++ 20 steps; any model, e.g. two pix2pix demos), seed 0, in this process, and prints
a Markdown table per model (and the real crops): the mean
``report`` score per image (reference: the real crops' pairs, as
scripts/z_consistency_synthetic.py), membrane contrast (mean interior minus
mean membrane grey level), RMS difference to the teacher's image and seconds per image. Then,
unless ``--no-eval``, ``evaluate``'s synthetic-only arm (small segmenter, ``--eval-steps``
steps, seeds 0..``--eval-seeds``-1, crop 128) trained on each synthetic set and scored on real
test pairs the sets never saw: ISBI slices 0..3, bottom-right ``--size`` px crops. Pairs are
written to a temporary folder. The issue's targets: score within 0.02 of the teacher's, boundary
F1 within 0.01. ``--teacher-guidance`` / ``--fast-guidance`` set each model's classifier-free
guidance (default: the model's own, 3 for a model that learned the null condition, else 1); a
student distilled without the null condition is compared with its teacher at guidance 1, and
``--fast-model demo-diffusion --fast-guidance 3 --teacher-guidance 1`` measures what guidance
does to the demo. ``--fast-tile`` / ``--teacher-tile`` set each model's tile and
``--fast-overlap`` the fast model's tile overlap (default: the model's own; a quarter tile),
``--fast-start-tile`` its first step's tile (default: its own, 320 px; 0: the model's tile).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_synthgen import quality
from napari_synthgen.evaluation import ARM_SYNTHETIC, evaluate
from napari_synthgen.registry import make_synthesizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read(folder: Path, index: int, crop: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    name = f"isbi2012_train_{index:02d}.tif"
    return (tifffile.imread(folder / "images" / name)[crop],
            tifffile.imread(folder / "masks" / name)[crop])


def write_pairs(root: Path, names: list[str], images: list[np.ndarray],
                masks: list[np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, image, mask in zip(names, images, masks, strict=True):
        tifffile.imwrite(root / "images" / f"{name}.tif", image)
        tifffile.imwrite(root / "masks" / f"{name}.tif", mask)
    return root


def contrast(images: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Mean interior grey level minus mean membrane grey level (class 1 minus class 2)."""
    im, m = np.stack(images), np.stack(masks)
    return float(im[m == 1].mean() - im[m == 2].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--slices", type=int, nargs="+", default=list(range(24, 30)))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--fast-model", default="demo-diffusion-fast",
                        help="the few-step model (bundled name or file; its own steps)")
    parser.add_argument("--fast-guidance", type=float, default=None,
                        help="the few-step model's guidance (default: its own)")
    parser.add_argument("--teacher-guidance", type=float, default=None,
                        help="the teacher's guidance (default: its own)")
    parser.add_argument("--teacher", default="demo-diffusion",
                        help="the model to compare with (default: demo-diffusion, 20 "
                             "DPM-Solver++ steps; any model, e.g. two pix2pix demos)")
    parser.add_argument("--fast-tile", type=int, default=None,
                        help="the fast model's tile in px (default: its own)")
    parser.add_argument("--teacher-tile", type=int, default=None,
                        help="the teacher's tile in px (default: its own)")
    parser.add_argument("--fast-start-tile", type=int, default=None,
                        help="the fast model's first-step tile in px (default: its own; 0: "
                             "every step on the model's tiles)")
    parser.add_argument("--fast-overlap", type=int, default=None,
                        help="the fast model's tile overlap in px (default: a quarter tile)")
    args = parser.parse_args()
    isbi = args.data / "isbi2012"
    crop = np.s_[:args.size, :args.size]
    names = [f"isbi_{i:02d}" for i in args.slices]
    real = [read(isbi, i, crop) for i in args.slices]
    masks = [m for _, m in real]
    stats = quality.reference_from_pairs(real)
    sets: dict[str, list[np.ndarray]] = {"real crops": [im for im, _ in real]}
    seconds: dict[str, float] = {}
    def synthesizer(model: str, guidance: float | None, tile: int | None,
                    overlap: int | None = None, start_tile: int | None = None):
        given = {"guidance": guidance, "tile": tile, "overlap": overlap,
                 "start_tile": start_tile}
        return make_synthesizer(model, **{k: v for k, v in given.items() if v is not None})

    synths = [synthesizer(args.fast_model, args.fast_guidance, args.fast_tile, args.fast_overlap,
                          args.fast_start_tile),
              synthesizer(args.teacher, args.teacher_guidance, args.teacher_tile)]
    model_names = [Path(args.fast_model).name, Path(args.teacher).name]
    samplers = {"ddim": "DDIM", "dpm": "DPM-Solver++"}

    def label(name: str, s: object) -> str:
        if not hasattr(s, "sampler"):  # pix2pix: one forward pass
            return name
        start = f", first step on {s.start_tile}-px tiles" if s.start_tile else ""
        return (f"{name}, {samplers.get(s.sampler, s.sampler)} {s.steps}, guidance "
                f"{s.guidance:g}, tile {s.tile} overlap {s.overlap}{start}")

    labels = [label(n, s) for n, s in zip(model_names, synths, strict=True)]
    for label, synth in zip(labels, synths, strict=True):
        synth(masks[0], seed=1)  # warm-up
        start = time.perf_counter()
        sets[label] = [synth(m, seed=0) for m in masks]
        seconds[label] = (time.perf_counter() - start) / len(masks)
        synth.close()
    teacher = sets[labels[1]]
    print(f"ISBI 2012 slices {args.slices}, top-left {args.size} px, seed 0\n")
    print("| images | report score (mean ± std) | membrane contrast | RMS to teacher | "
          "s / image |")
    print("|---|---|---|---|---|")
    scores: dict[str, float] = {}
    for label, images in sets.items():
        s = [quality.sample_figures(im, m, reference=stats)["score"]
             for im, m in zip(images, masks, strict=True)]
        scores[label] = float(np.mean(s))
        rms = np.sqrt(np.mean([(a.astype(float) - b) ** 2
                               for a, b in zip(images, teacher, strict=True)]))
        sec = f"{seconds[label]:.1f}" if label in seconds else ""
        print(f"| {label} | {np.mean(s):.3f} ± {np.std(s):.3f} | "
              f"{contrast(images, masks):.1f} | {rms:.1f} | {sec} |", flush=True)
    fast, teach = labels
    print(f"\nscore, fast minus teacher: {scores[fast] - scores[teach]:+.3f} "
          "(target: within 0.02)")
    if args.no_eval:
        return
    test = [read(isbi, i, np.s_[-args.size:, -args.size:]) for i in range(4)]
    f1: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        real_dir = write_pairs(root / "real", names, sets["real crops"], masks)
        test_dir = write_pairs(root / "test", [f"test_{i:02d}" for i in range(4)],
                               [im for im, _ in test], [m for _, m in test])
        for k, label in enumerate(labels):
            syn_dir = write_pairs(root / f"syn{k}", names, sets[label], masks)
            start = time.perf_counter()
            result = evaluate(real_dir, syn_dir, test_dir, steps=args.eval_steps,
                              seeds=args.eval_seeds, arms=[ARM_SYNTHETIC], crop=128)
            f1[label] = result.summary[ARM_SYNTHETIC]["boundary_f1"]
            dice = result.summary[ARM_SYNTHETIC]["mean_dice"]
            print(f"{label}: synthetic-only boundary F1 {f1[label][0]:.3f} ± "
                  f"{f1[label][1]:.3f}, mean Dice {dice[0]:.3f} ± {dice[1]:.3f} "
                  f"({args.eval_seeds} seeds, {args.eval_steps} steps, "
                  f"{time.perf_counter() - start:.0f} s)", flush=True)
    print(f"boundary F1, fast minus teacher: {f1[fast][0] - f1[teach][0]:+.3f} "
          "(target: within 0.01)")


if __name__ == "__main__":
    main()
