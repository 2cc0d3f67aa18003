"""``napari-synthgen``: demo, inspect, generate, train, export.

The commands call the same core functions the napari widgets call. Exit codes: 0 success,
1 something failed (the summary says what), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _add_synthesis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast precision; auto measures what is faster on the CPU")
    p.add_argument("--tile", type=int, default=None, help="tile size (default: the model's)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap (default: tile/4)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per batch")
    p.add_argument("--encoding", default=None, choices=["rgb", "onehot", "label"],
                   help="override the model's mask encoding")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="napari-synthgen",
        description="Synthesize EM images from 3-class masks; train and curate.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"napari-synthgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="open napari with the sample, the widgets and the demo model")
    demo.add_argument("--screenshot", type=Path, default=None,
                      help="save a screenshot of the window to this PNG and exit")

    insp = sub.add_parser("inspect", help="say what a model checkpoint holds")
    insp.add_argument("path", type=Path)
    insp.add_argument("--json", action="store_true", help="print a JSON object")
    insp.add_argument("--encoding", default=None, choices=["rgb", "onehot", "label"])

    gen = sub.add_parser("generate", help="synthesize images for masks")
    gen.add_argument("--model", required=True, type=Path, help="checkpoint file or folder")
    gen.add_argument("--masks", required=True, type=Path,
                     help="a mask file, a folder of masks, or a paired folder (uses masks/)")
    gen.add_argument("--out", required=True, type=Path, help="output folder")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--variations", type=int, default=1,
                     help="images per mask, seeds seed..seed+N-1 (implies --stochastic if N>1)")
    gen.add_argument("--stochastic", action="store_true",
                     help="keep dropout on (pix2pix test-time noise) for seeded variations")
    gen.add_argument("--read-as", default="auto",
                     choices=["auto", "binary", "membrane", "instances"],
                     help="how to read the mask files")
    gen.add_argument("--boundary-width", type=int, default=2,
                     help="boundary width for --read-as binary/instances")
    gen.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_synthesis_options(gen)

    from .training.cli import add_train_parser

    add_train_parser(sub)

    exp = sub.add_parser("export", help="convert an export folder to another layout")
    exp.add_argument("--from", dest="source", required=True, type=Path,
                     help="export folder written by the curation widget / ExportSession")
    exp.add_argument("--nnunet", required=True, type=Path,
                     help="nnU-Net v2 raw folder to write DatasetXXX_NAME into")
    exp.add_argument("--real", type=Path, default=None,
                     help="paired folder of real images/masks for training and validation")
    exp.add_argument("--dataset-id", type=int, default=501)
    exp.add_argument("--name", default="SynthEM")
    exp.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-synthgen`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .widgets.demo import run_demo

            return run_demo(screenshot=args.screenshot)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "train":
            from .training.cli import cmd_train

            return cmd_train(args)
        if args.command == "export":
            return cmd_export(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds (architecture, encoding, size) and what could not be told."""
    from .models.checkpoints import load_model

    info = load_model(args.path, encoding=args.encoding).info
    data = info.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"{args.path}")
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key in ("notes", "metadata"):
            continue
        print(f"  {key:<{width}}  {value}")
    for note in info.notes:
        print(f"  note: {note}")
    return 0


def _mask_files(path: Path) -> list[Path]:
    from .io import is_paired_folder, list_images

    if path.is_file():
        return [path]
    if path.is_dir():
        folder = path / "masks" if is_paired_folder(path) else path
        files = list_images(folder)
        if not files:
            raise ValueError(f"{folder}: no .tif/.tiff/.png masks found.")
        return files
    raise FileNotFoundError(f"{path}: no such file or folder.")


def cmd_generate(args: argparse.Namespace) -> int:
    """Synthesize every mask (and variation) into ``out/images`` with masks in ``out/masks``."""
    from tqdm import tqdm

    from .generate import GenerateJob, run_generate

    if args.variations < 1:
        raise ValueError("--variations must be at least 1.")
    job = GenerateJob(
        model=args.model, masks=_mask_files(args.masks), out=args.out, seed=args.seed,
        variations=args.variations, stochastic=args.stochastic or args.variations > 1,
        read_as=args.read_as, boundary_width=args.boundary_width, overwrite=args.overwrite,
        device=args.device, precision=args.precision, tile=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, encoding=args.encoding,
    )
    t0 = time.perf_counter()
    bar = tqdm(total=len(job.masks) * job.variations, unit="image", desc="generate",
               file=sys.stderr, disable=None)
    result = None
    for event in run_generate(job):
        if event.kind == "setup":
            print(event.message, file=sys.stderr)
        elif event.kind in ("written", "failed", "skipped"):
            bar.update(event.count)
            if event.kind != "written":
                tqdm.write(f"{event.kind}: {event.message}", file=sys.stderr)
        elif event.kind == "done":
            result = event
    bar.close()
    assert result is not None
    dt = time.perf_counter() - t0
    print(f"{result.message} in {dt:.1f} s; output in {job.out}")
    return 1 if result.count else 0


def cmd_export(args: argparse.Namespace) -> int:
    """Convert an export folder to the nnU-Net v2 raw layout."""
    from .curation import export_nnunet

    dataset = export_nnunet(args.source, args.nnunet, dataset_id=args.dataset_id, name=args.name,
                            real=args.real, overwrite=args.overwrite)
    print(f"wrote nnU-Net v2 dataset {dataset}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
