"""Masks -> synthetic images -> curation by a rule -> nnU-Net dataset, without napari.

    python examples/headless_pipeline.py OUT_DIR [--model demo] [--n 20] [--size 512 512]
        [--real PAIRED_FOLDER]

OUT_DIR must be new or empty; it receives masks/ (procedural layouts), generated/ (images,
masks, generate.jsonl), curated/ (an export folder like the Curate widget writes) and nnunet/
(an nnU-Net v2 raw dataset). Real pairs (``--real``, a folder with images/ and masks/) are what
nnU-Net validates on; without them the export says so and the folds hold synthetic cases only.

Every step is also a command (``curate`` accepts by the Curate widget's quality score instead
of this script's contrast rule); for hundreds of masks on several GPUs run them as
    napari-synthgen masks --layout dense --n 500 --size 512 512 --seed 0 --out OUT/masks
    torchrun --nproc_per_node 4 -m napari_synthgen generate --model demo \
        --masks OUT/masks --out OUT/generated
    napari-synthgen curate OUT/generated --out OUT/curated --min-score 0.6 --reference REAL
    napari-synthgen export --from OUT/curated --nnunet OUT/nnunet --real REAL
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_synthgen.curation import ExportSession, export_nnunet
from napari_synthgen.generate import GenerateJob, read_provenance, run_generate
from napari_synthgen.io import find_pairs, read_image, read_mask
from napari_synthgen.mask_sets import make_layout_set
from napari_synthgen.quality import basic_figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="a new or empty folder")
    parser.add_argument("--model", default="demo", help="model file or folder, or 'demo'")
    parser.add_argument("--layout", default="dense", choices=["dense", "sparse"])
    parser.add_argument("--n", type=int, default=20, help="masks to make")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--variations", type=int, default=1, help="images per mask")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-std", type=float, default=10.0,
                        help="accept images whose grey-level standard deviation is at least this")
    parser.add_argument("--real", type=Path, default=None, help="paired folder of real data")
    parser.add_argument("--dataset-id", type=int, default=501)
    parser.add_argument("--name", default="SynthEM")
    parser.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def accept_rule(figures: dict, min_std: float) -> tuple[bool, str]:
    """Keep images with contrast whose mask holds more than one class; say why not otherwise."""
    if not figures["multi_class"]:
        return False, "one-class mask"
    if figures["std"] < min_std:
        return False, f"flat image (std {figures['std']:.1f} < {min_std})"
    return True, f"std {figures['std']:.1f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        print(f"{out} is not empty; choose a new folder.", file=sys.stderr)
        return 2

    # 1. masks: seeded procedural layouts (mask i depends only on (seed, i))
    masks = make_layout_set(out / "masks", kind=args.layout, n=args.n, shape=tuple(args.size),
                            seed=args.seed)
    print(f"1. wrote {len(masks.files)} {args.layout} masks to {masks.out}")

    # 2. generate: one image per mask and seed, with a provenance log
    job = GenerateJob(model=args.model, masks=masks.files, out=out / "generated",
                      seed=args.seed, variations=args.variations,
                      stochastic=args.variations > 1, device=args.device)
    for event in run_generate(job):
        if event.kind in ("note", "warning", "failed"):
            print(f"   {event.kind}: {event.message}", file=sys.stderr)
        elif event.kind == "done":
            print(f"2. {event.message} into {job.out}")
            if event.count:
                return 1

    # 3. curate: accept by a rule, reject the rest, each with its provenance and figures
    provenance = read_provenance(job.out)
    with ExportSession(out / "curated") as session:
        for pair in find_pairs(job.out):
            image, mask = read_image(pair.image), read_mask(pair.mask)
            figures = basic_figures(image, mask)
            keep, why = accept_rule(figures, args.min_std)
            prov = provenance.get(f"images/{pair.image.name}", {})
            decide = session.accept if keep else session.reject
            record = decide(image, mask, provenance=prov, quality=figures)
            print(f"   {pair.stem}: {record['decision']} ({why})")
        print(f"3. accepted {session.n_accepted} of {len(provenance)} into {session.folder}")

    # 4. export: synthetic cases train, real cases (if any) validate
    result = export_nnunet(out / "curated", out / "nnunet", dataset_id=args.dataset_id,
                           name=args.name, real=args.real)
    for warning in result.warnings:
        print(f"   warning: {warning}", file=sys.stderr)
    print(f"4. nnU-Net dataset {result.dataset}: {result.n_synthetic} synthetic, "
          f"{result.n_real} real cases, {result.n_folds} fold(s) in {result.splits.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
