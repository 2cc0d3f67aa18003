"""``napari-synthgen``: demo, inspect, masks, generate, train, report, evaluate, curate, export.

The commands call the same core functions the napari widgets call. Exit codes: 0 success,
1 something failed (the summary says what), 2 bad usage or a damaged input file. Core
functions word their errors for Python callers; :func:`cli_message` rewrites the Python names in
them into this command's flags.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import _omp_policy  # noqa: F401  (OpenMP threads wait passively; before torch)
from .cli_wording import READ_AS_HELP, cli_message
from .limits import SEED_TYPE, LimitError, as_flags
from .masks import MASK_SOURCES as MASK_READ_AS  # what --read-as accepts
from .progress import progress_bar

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _add_synthesis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="precision; auto chooses from the device and the CPU's features "
                   "(recorded with every image)")
    p.add_argument("--tile", type=_number(int, 1), default=None,
                   help="tile size (default: the model's)")
    p.add_argument("--overlap", type=_number(int, 0), default=None,
                   help="tile overlap (default: tile/4)")
    p.add_argument("--batch-size", type=_number(int, 1), default=None, help="tiles per batch")
    p.add_argument("--encoding", default=None, choices=["rgb", "onehot", "label"],
                   help="override the model's mask encoding")


class UsageError(ValueError):
    """A bad combination of flags: reported like argparse's own errors, exit code 2."""


def _number(kind: type, low: float | None = None, high: float | None = None, *,
            low_open: bool = False, high_open: bool = False) -> object:
    """An argparse ``type`` that also checks the range, so the error names the flag."""
    from .limits import cli_type

    return cli_type(kind, low, high, low_open=low_open, high_open=high_open)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, without "(default: None)" for options whose default
    means "not given" (their help says what happens then) or False for plain flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or isinstance(
                action, (argparse._StoreConstAction, argparse._VersionAction)):
            return action.help
        return super()._get_help_string(action)


def _model_help(what: str) -> str:
    return f"{what}, or 'demo' for the bundled demo model"


def _add_masks_parser(sub: argparse._SubParsersAction) -> None:
    from .layout_stacks import DEFAULT_DRIFT, MAX_DRIFT
    from .layouts import LAYOUT_KINDS, MAX_BOUNDARY_WIDTH, MIN_SIDE
    from .mask_stats import STRENGTH_HELP

    p = sub.add_parser(
        "masks", help="make new masks (layouts, layouts like real masks) or variations of "
        "masks, for generate",
        description="Write seeded 3-class masks (uint8 TIFF, 0 background, 1 interior, "
        "2 boundary) that `generate --masks DIR` reads. The same seed gives the same files; "
        "mask i does not depend on --n.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--layout", choices=LAYOUT_KINDS,
                      help="new masks: dense tissue (no background) or sparse organelles")
    what.add_argument("--variations-of", type=Path, metavar="SRC",
                      help="vary every mask in SRC (a mask file, a folder of masks or a paired "
                      "folder); a (Z, H, W) stack is varied as a volume, continuous through z")
    what.add_argument("--like", type=Path, metavar="DIR",
                      help="new layouts calibrated on the masks in DIR (a folder of masks, a "
                      "paired folder or one mask file): dense or sparse, cell / organelle sizes "
                      "and their spread, boundary width, shapes and coverage are measured and "
                      "matched; masks.jsonl records the statistics and each mask's parameters. "
                      "--density, --boundary-width, --irregularity, --blob-size override them")
    p.add_argument("--n", type=_number(int, 1), required=True,
                   help="masks to make (--layout, --like) or variations per source mask")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=SEED_TYPE, default=0,
                   help="the same seed (and options) gives byte-identical files")
    p.add_argument("--size", type=_number(int, MIN_SIDE), nargs=2, metavar=("H", "W"),
                   help="mask height and width in px (--layout; --like: default the first "
                   "source mask's)")
    p.add_argument("--depth", type=_number(int, 1), default=1, metavar="Z",
                   help="--layout, --like: slices per mask; above 1 each file is a (Z, H, W) "
                   "stack whose cells and organelles continue through z (default 1: 2-D masks)")
    p.add_argument("--drift", type=_number(float, 0, MAX_DRIFT), default=None, metavar="D",
                   help="--layout or --like with --depth: change between adjacent slices, "
                   f"0..1 (default {DEFAULT_DRIFT:g}: about 0.2 of the pixels change class per "
                   "slice, like real serial sections)")
    p.add_argument("--density", type=_number(float, 0, 1, low_open=True), default=None,
                   help="dense: cells per area (0.5 is ISBI-like); sparse: fraction covered "
                   "by organelles (default 0.3)")
    p.add_argument("--boundary-width", type=_number(int, 1, MAX_BOUNDARY_WIDTH), default=None,
                   help="membrane / ring width in px (default: dense 3, sparse 2; with "
                   "--variations-of: the width for --read-as binary/instances, default 2)")
    p.add_argument("--irregularity", type=_number(float, 0, 1), default=None,
                   help="dense: spread of cell sizes and wavy membranes, 0..1 (default 0.5)")
    p.add_argument("--blob-size", type=_number(float, 0, low_open=True), nargs=2,
                   metavar=("MIN", "MAX"), default=None,
                   help="sparse: range of organelle lengths in px (default 10 40)")
    p.add_argument("--strength", type=_number(float, 0, 1), default=None,
                   help="variations: elastic warp strength 0..1 (default 0.5; 0: none). "
                   f"--like: how much wider than measured, 0..1 (default 0): {STRENGTH_HELP}")
    p.add_argument("--grow", type=_number(int, 0, MAX_BOUNDARY_WIDTH), default=None,
                   help="variations: thicken or thin boundaries by up to this many px "
                   "(default 1; 0: none)")
    p.add_argument("--coverage", type=_number(float, 0, 1), default=None,
                   help="variations: fraction of the image --grow changes (default 0.5)")
    p.add_argument("--read-as", default="auto", choices=MASK_READ_AS,
                   help="variations, --like: how to read the source masks")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")



def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="napari-synthgen", formatter_class=HelpFormatter,
        description="Synthesize EM images from 3-class masks; train and curate.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"napari-synthgen {__version__}")
    # every sub-command shows its defaults in --help
    sub = parser.add_subparsers(dest="command", required=True, parser_class=functools.partial(
        argparse.ArgumentParser, formatter_class=HelpFormatter))

    demo = sub.add_parser(
        "demo", help="open napari with the sample, the widgets and the demo model")
    demo.add_argument("--screenshot", type=Path, default=None,
                      help="save a screenshot of the window to this PNG and exit")

    insp = sub.add_parser("inspect", help="say what a model checkpoint holds")
    insp.add_argument("path", help=_model_help("checkpoint file or folder"))
    insp.add_argument("--json", action="store_true", help="print a JSON object")
    insp.add_argument("--encoding", default=None, choices=["rgb", "onehot", "label"])

    _add_masks_parser(sub)

    gen = sub.add_parser(
        "generate", help="synthesize images for masks",
        description="Synthesize an image per mask and seed into OUT/images (masks in "
        "OUT/masks, provenance in OUT/generate.jsonl). Under `torchrun --nproc_per_node N -m "
        "napari_synthgen generate ...` each process takes every N-th mask; the files equal a "
        "one-process run.")
    gen.add_argument("--model", required=True, help=_model_help("checkpoint file or folder"))
    gen.add_argument("--masks", required=True, type=Path,
                     help="a mask file, a folder of masks, or a paired folder (uses masks/)")
    gen.add_argument("--out", required=True, type=Path, help="output folder")
    gen.add_argument("--seed", type=SEED_TYPE, default=0,
                     help="first seed; the same model, mask, seed and settings give the same "
                     "image")
    gen.add_argument("--variations", type=_number(int, 1), default=1,
                     help="images per mask, seeds seed..seed+N-1 (implies --stochastic if N>1)")
    gen.add_argument("--stochastic", action="store_true",
                     help="keep dropout on (pix2pix test-time noise) for seeded variations")
    gen.add_argument("--noise", choices=("mask", "seed"), default="mask",
                     help="what picks each image's starting noise: mask (the seed and the "
                     "mask's content: every mask gets its own tissue, as a training set needs) "
                     "or seed (the seed alone: masks that differ by a stroke give images that "
                     "differ only there)")
    gen.add_argument("--read-as", default="auto", choices=MASK_READ_AS,
                     help=f"how to read the mask files: {READ_AS_HELP}")
    gen.add_argument("--boundary-width", type=_number(int, 1), default=2,
                     help="boundary width for --read-as binary/instances")
    gen.add_argument("--allow-float", action="store_true",
                     help="accept float mask files whose values are whole numbers")
    gen.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    gen.add_argument("--steps", type=_number(int, 1), default=None,
                     help="denoising steps of a diffusion model (default 20; refused for "
                     "pix2pix models)")
    gen.add_argument("--sampler", choices=["dpm", "ddim"], default=None,
                     help="diffusion sampler: dpm (DPM-Solver++, default) or ddim (refused for "
                     "pix2pix models)")
    gen.add_argument("--fusion", choices=["multidiffusion", "shifted"], default=None,
                     help="how a diffusion model's tiles are fused on masks larger than a tile: "
                     "multidiffusion (overlapping tiles blended, default) or shifted "
                     "(non-overlapping tiles moved at every step, 1.6-1.7x faster, for 10 steps "
                     "or more; refused for pix2pix models)")
    gen.add_argument("--start-tile", type=_number(int, 0), default=None, metavar="PX",
                     help="run a diffusion model's first MultiDiffusion step (from pure noise) "
                     "on tiles up to PX wide, a multiple of the model's divisor and at least its "
                     "tile: fewer U-Net pixels for the same image (default: 2.5 tiles for "
                     "distilled few-step models, where it saves a quarter of the time; 0 for "
                     "others, 0 = off; refused for pix2pix models)")
    gen.add_argument("--z-coupling", choices=["serial", "independent"], default=None,
                     help="how the slices of a (Z, Y, X) mask stack are tied by a diffusion "
                     "model: serial (texture continues through z like serial sections, "
                     "default) or independent (each slice on its own; refused for pix2pix "
                     "models)")
    gen.add_argument("--guidance", type=_number(float, 0), default=None, metavar="W",
                     help="classifier-free guidance weight of a diffusion model trained with "
                     "--unlabeled or --cond-dropout (default 3; refused for other models): 1 is "
                     "the plain conditional model, which follows a mask only loosely; above 1 "
                     "follows it more strictly; below 1 leans on the unlabelled tissue. Each "
                     "value other than 1 doubles the network work")
    gen.add_argument("--guidance-where", choices=["everywhere", "labelled"], default=None,
                     help="where --guidance applies: labelled (default: only where the mask "
                     "draws interior or boundary; class 0 keeps the model's unguided tissue, "
                     "for organelle masks whose class 0 is unlabelled tissue) or everywhere "
                     "(plain classifier-free guidance); masks without class 0 give the same "
                     "image either way")
    _add_synthesis_options(gen)

    from .training.cli import add_train_parser

    add_train_parser(sub)

    from .quality_cli import add_evaluate_parser, add_report_parser

    add_report_parser(sub)
    add_evaluate_parser(sub)

    cur = sub.add_parser(
        "curate", help="accept or reject generated pairs by a rule into an export folder",
        description="Score every pair of GENERATED (generate's output) as the Curate widget "
        "does, against --reference (real pairs) or else the training statistics the "
        "generating model carries; accept pairs scoring at least --min-score into the export "
        "folder OUT and reject the others (without --min-score every pair is accepted). OUT "
        "is what `export --from` reads; a stopped run resumes, skipping decided pairs. A "
        "(Z, Y, X) stack pair is one sample, decided whole by the mean of its slices' scores.")
    cur.add_argument("generated", type=Path, help="paired folder of generated pairs")
    cur.add_argument("--out", required=True, type=Path,
                     help="export folder (new, or an export to resume)")
    cur.add_argument("--min-score", type=_number(float, 0, 1), default=None,
                     help="accept pairs whose quality score is at least this (default: accept "
                     "all)")
    cur.add_argument("--reference", type=Path, default=None,
                     help="paired folder of real pairs (or a model checkpoint) to score "
                     "against (default: the generating model's training statistics)")

    exp = sub.add_parser(
        "export", help="convert an export folder to another layout",
        description="Write the accepted samples of an export folder (plus --real pairs) as an "
        "nnU-Net v2 raw dataset whose splits validate on real cases only. 2-D samples become "
        "PNG cases (NaturalImage2DIO); (Z, Y, X) stacks become 3-D TIFF cases (Tiff3DIO), "
        "each with its voxel spacing in <case>.json (from the manifest or the files, else "
        "--spacing). A dataset holds one kind: a mix of 2-D and 3-D is refused.")
    exp.add_argument("--from", dest="source", required=True, type=Path,
                     help="export folder written by the curation widget / ExportSession")
    exp.add_argument("--nnunet", required=True, type=Path,
                     help="nnU-Net v2 raw folder to write DatasetXXX_NAME into")
    exp.add_argument("--real", type=Path, default=None,
                     help="paired folder of real images/masks for training and validation")
    exp.add_argument("--dataset-id", type=_number(int, 1, 999), default=501,
                     help="nnU-Net dataset number")
    exp.add_argument("--name", default="SynthEM", help="dataset name")
    exp.add_argument("--folds", type=_number(int, 1), default=None,
                     help="cross-validation folds (default: one per real pair, at most 5)")
    exp.add_argument("--install-splits", action="store_true",
                     help="copy splits_final.json to $nnUNet_preprocessed/DatasetXXX_NAME/, "
                          "where nnU-Net reads it")
    exp.add_argument("--preprocessed", type=Path, default=None,
                     help="nnU-Net preprocessed folder for --install-splits "
                          "(default: $nnUNet_preprocessed)")
    exp.add_argument("--spacing", type=_spacing, default=None, metavar="Z,Y,X",
                     help="voxel spacing of (Z, Y, X) stacks whose files and records carry "
                     "none, e.g. 50,4,4 (nm); nnU-Net reads it from <case>.json")
    exp.add_argument("--overwrite", action="store_true")
    return parser


def _spacing(text: str) -> tuple[float, float, float]:
    """argparse ``type``: ``Z,Y,X`` as three positive numbers."""
    from .io import check_spacing

    try:
        return check_spacing(text.replace(" ", ",").split(",") if text.strip() else ())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give three positive numbers Z,Y,X (e.g. 50,4,4); got {text!r}") from None


#: what ``demo`` says without a display (as the Makefile's demo target does)
HEADLESS_RECIPE = (
    "No display found (DISPLAY and WAYLAND_DISPLAY are unset). On a headless machine, install "
    "Xvfb (from a source checkout: bash scripts/ensure-sysdeps.sh) and run:\n"
    "  xvfb-run -a napari-synthgen demo --screenshot demo.png\n"
    "or set QT_QPA_PLATFORM=offscreen.")
#: Qt platforms that need no display server
_HEADLESS_QT = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def has_display(env: dict[str, str] | None = None, platform: str = sys.platform) -> bool:
    """Whether Qt can open a window here: on Linux a DISPLAY / WAYLAND_DISPLAY, or a Qt
    platform that needs none; other systems always have one. Checked before Qt is imported."""
    env = dict(os.environ) if env is None else env
    if not platform.startswith("linux"):
        return True
    if env.get("QT_QPA_PLATFORM", "").split(":")[0] in _HEADLESS_QT:
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-synthgen`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            if not has_display():  # Qt would abort the process (exit 134) with no display
                print(HEADLESS_RECIPE, file=sys.stderr)
                return 1
            from .widgets.demo import run_demo

            return run_demo(screenshot=args.screenshot)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "masks":
            return cmd_masks(args)
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "train":
            from .training.cli import cmd_train

            return cmd_train(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "curate":
            return cmd_curate(args)
        if args.command in ("report", "evaluate"):
            return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"napari-synthgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except LimitError as exc:  # a setting out of range or too large: name its flag
        print(f"error: {as_flags(str(exc), vars(args))}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as exc:
        if damaged_file(exc) is not None:  # bad input, like bad usage: exit 2, no traceback
            print(f"napari-synthgen {args.command}: error: {cli_message(str(exc))}",
                  file=sys.stderr)
            return 2
        print(f"error: {cli_message(str(exc))}", file=sys.stderr)
        return 1
    return 2


def damaged_file(exc: BaseException) -> Path | None:
    """The damaged input file behind ``exc`` (itself or a cause it wraps), if any."""
    from .io import DamagedFileError

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, DamagedFileError):
            return cur.path
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds (architecture, encoding, size) and what could not be told."""
    from .generate import model_classes
    from .registry import load_model

    info = load_model(args.path, encoding=args.encoding).info
    data = info.to_dict()
    known = model_classes(info)
    data["classes"] = None if known is None else {str(c): f for c, f in sorted(known.items())}
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"{args.path}")
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key in ("notes", "metadata", "details"):
            continue
        if key == "classes":
            value = _describe_classes(known)
        print(f"  {key:<{width}}  {value}")
    for key, value in info.details.items():  # what the family says of itself
        if key not in ("short", "summary"):  # the same again, in other words
            print(f"  {key:<{width}}  {value}")
    for note in info.notes:
        print(f"  note: {note}")
    return 0


def _describe_classes(known: dict[int, float] | None) -> str:
    """"background 0%, interior 78%, boundary 22% (never saw: background)" or "unknown ..."."""
    from .masks import CLASS_NAMES

    if known is None:
        return "unknown (the checkpoint does not record the classes it was trained on)"
    text = ", ".join(f"{CLASS_NAMES[c]} {known.get(c, 0.0):.0%}" for c in range(len(CLASS_NAMES)))
    unseen = [CLASS_NAMES[c] for c in range(len(CLASS_NAMES)) if known.get(c, 0.0) <= 0]
    return text + (f" (never saw: {', '.join(unseen)})" if unseen else "")


def cmd_masks(args: argparse.Namespace) -> int:
    """Write a seeded set of new masks, or variations of existing masks, with progress."""
    from .mask_sets import make_layout_set, make_like_set, make_variation_set, mask_sources

    layout_only = {"--size": args.size, "--density": args.density,
                   "--irregularity": args.irregularity, "--blob-size": args.blob_size,
                   "--depth": None if args.depth == 1 else args.depth, "--drift": args.drift}
    vary_only = {"--strength": args.strength, "--grow": args.grow, "--coverage": args.coverage,
                 "--read-as": None if args.read_as == "auto" else args.read_as}
    if args.layout is not None:
        _refuse(vary_only, "--variations-of")
        if args.size is None:
            raise UsageError("--layout needs --size H W (the mask height and width in px).")
        if args.layout == "dense" and args.blob_size is not None:
            raise UsageError("--blob-size applies to --layout sparse only.")
        if args.layout == "sparse" and args.irregularity is not None:
            raise UsageError("--irregularity applies to --layout dense only.")
        if args.drift is not None and args.depth == 1:
            raise UsageError("--drift applies to stacks: add --depth Z (2 or more slices).")
        if args.blob_size is not None and args.blob_size[0] > args.blob_size[1]:
            raise UsageError(f"--blob-size MIN MAX needs MIN <= MAX; got {args.blob_size}.")
        total, desc = args.n, f"masks ({args.layout})"
    elif args.like is not None:
        _refuse({k: v for k, v in vary_only.items() if k not in ("--strength", "--read-as")},
                "--variations-of")
        if args.drift is not None and args.depth == 1:
            raise UsageError("--drift applies to stacks: add --depth Z (2 or more slices).")
        if args.blob_size is not None and args.blob_size[0] > args.blob_size[1]:
            raise UsageError(f"--blob-size MIN MAX needs MIN <= MAX; got {args.blob_size}.")
        total, desc = args.n, "masks (like)"
    else:
        _refuse(layout_only, "--layout")
        total = args.n * len(mask_sources(args.variations_of))
        desc = "variations"
    bar = progress_bar(total, desc, "mask")
    try:
        if args.layout is not None:
            result = make_layout_set(
                args.out, kind=args.layout, n=args.n, shape=tuple(args.size), seed=args.seed,
                density=args.density, boundary_width=args.boundary_width,
                irregularity=args.irregularity,
                blob_size=None if args.blob_size is None else tuple(args.blob_size),
                depth=args.depth, drift=args.drift,
                overwrite=args.overwrite, progress=lambda i, path: bar.update(1))
        elif args.like is not None:
            result = make_like_set(
                args.like, args.out, n=args.n, seed=args.seed,
                shape=None if args.size is None else tuple(args.size),
                strength=0.0 if args.strength is None else args.strength,
                density=args.density, boundary_width=args.boundary_width,
                irregularity=args.irregularity,
                blob_size=None if args.blob_size is None else tuple(args.blob_size),
                depth=args.depth, drift=args.drift, read_as=args.read_as,
                overwrite=args.overwrite, progress=lambda i, path: bar.update(1))
        else:
            result = make_variation_set(
                args.variations_of, args.out, n=args.n, seed=args.seed,
                strength=0.5 if args.strength is None else args.strength,
                grow=1 if args.grow is None else args.grow,
                coverage=0.5 if args.coverage is None else args.coverage,
                read_as=args.read_as,
                boundary_width=2 if args.boundary_width is None else args.boundary_width,
                overwrite=args.overwrite, progress=lambda i, path: bar.update(1))
    finally:
        bar.close()
    print(f"wrote {len(result.files)} mask{'s' if len(result.files) != 1 else ''} to "
          f"{result.out}")
    return 0


def _refuse(options: dict[str, object], needed: str) -> None:
    """A UsageError naming the first given option that only works with ``needed``."""
    given = [flag for flag, value in options.items() if value is not None]
    if given:
        raise UsageError(f"{given[0]} only applies with {needed}.")


def _mask_files(path: Path) -> list[Path]:
    from .mask_sets import mask_sources

    return mask_sources(path)


def cmd_generate(args: argparse.Namespace) -> int:
    """Synthesize every mask (and variation) into ``out/images`` with masks in ``out/masks``."""
    from tqdm import tqdm

    from .generate import GenerateJob, process_share, run_generate
    from .sample_data import resolve_model_source

    if args.variations < 1:
        raise UsageError("--variations must be at least 1.")
    model = resolve_model_source(args.model)
    options = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler),
                                 ("fusion", args.fusion), ("z_coupling", args.z_coupling),
                                 ("guidance", args.guidance),
                                 ("guidance_where", args.guidance_where),
                                 ("start_tile", args.start_tile))
               if v is not None}
    if options:
        from .models.checkpoints.locate import model_family

        family = model_family(model)
        if family is not None and family != "diffusion":
            flags = " and ".join(f"--{k.replace('_', '-')}" for k in options)
            verb = "apply" if len(options) > 1 else "applies"
            raise UsageError(f"{flags} {verb} to diffusion models only; {args.model} is a "
                             f"{family} model. Leave {flags} out.")
    job = GenerateJob(
        model=model, options=options, masks=_mask_files(args.masks), out=args.out,
        seed=args.seed, variations=args.variations,
        stochastic=args.stochastic or args.variations > 1, read_as=args.read_as,
        boundary_width=args.boundary_width, allow_float=args.allow_float,
        overwrite=args.overwrite, device=args.device, precision=args.precision, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size, encoding=args.encoding,
        noise=args.noise,
    )
    share = process_share()
    # under torchrun rank 0 shows its own share's progress and reports for everyone
    prefix = "" if share.world == 1 else f"[rank {share.rank}] "
    t0 = time.perf_counter()
    bar = progress_bar(len(share.indices(len(job.masks))) * job.variations,
                       "generate" if share.world == 1 else f"generate (rank 0 of {share.world})",
                       "image", disable=not share.main)
    result = None
    for event in run_generate(job):
        if event.kind == "setup":
            print(event.message, file=sys.stderr)
        elif event.kind in ("note", "warning"):
            tqdm.write(f"{event.kind}: {cli_message(event.message)}", file=sys.stderr)
        elif event.kind in ("written", "failed", "skipped"):
            bar.update(event.count)
            if event.kind != "written":
                tqdm.write(f"{prefix}{event.kind}: {cli_message(event.message)}",
                           file=sys.stderr)
        elif event.kind == "done":
            result = event
    bar.close()
    assert result is not None
    dt = time.perf_counter() - t0
    if share.main:
        print(f"{result.message} in {dt:.1f} s; output in {job.out}")
        _list_failed(result.data.get("failed_files", []))
    return 1 if result.count else 0


def _list_failed(failed: list[dict[str, str]]) -> None:
    """Repeat, after the summary, which input files failed and why (one line each)."""
    if not failed:
        return
    print(f"{len(failed)} input file{'s' if len(failed) != 1 else ''} failed; the others were "
          "written (fix or remove these and run again: finished images are skipped):",
          file=sys.stderr)
    for item in failed:
        print(f"  {item['path']}: {cli_message(item['reason'])}", file=sys.stderr)


def cmd_curate(args: argparse.Namespace) -> int:
    """Accept / reject every generated pair by the score rule into an export folder."""
    from .curation import ExportError, curate_by_rule

    bar = progress_bar(None, "curate", "pair")

    def progress(done: int, total: int, record: dict | None) -> None:
        bar.total = total
        bar.update(1)

    try:
        result = curate_by_rule(args.generated, args.out, min_score=args.min_score,
                                reference=args.reference, progress=progress)
    except ExportError as exc:
        raise ExportError(str(exc).replace("min_score", "--min-score").replace(
            "reference=REAL_PAIRS", "--reference REAL_PAIRS")) from None
    finally:
        bar.close()
    print(f"accepted {result.accepted}, rejected {result.rejected}"
          + (f", skipped {result.skipped} already decided" if result.skipped else "")
          + f" (reference: {result.reference}); export folder {result.folder}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Convert an export folder to the nnU-Net v2 raw layout (warnings go to stderr)."""
    from .curation import ExportError, export_nnunet, install_splits, preprocessed_folder, reword

    flags = {"n_folds": "--folds", "real": "--real", "overwrite": "--overwrite",
             "dataset_id": "--dataset-id", "name": "--name", "out_dir": "--nnunet",
             "preprocessed_root": "--preprocessed", "spacing": "--spacing"}
    try:
        if args.install_splits:  # say what is missing before anything is written
            preprocessed_folder(args.preprocessed)
        result = export_nnunet(args.source, args.nnunet, dataset_id=args.dataset_id,
                               name=args.name, real=args.real, n_folds=args.folds,
                               overwrite=args.overwrite, spacing=args.spacing)
        for warning in result.warnings:
            print(f"warning: {reword(warning, flags)}", file=sys.stderr)
        print(f"wrote nnU-Net v2 dataset {result.dataset} ({result.n_synthetic} synthetic, "
              f"{result.n_real} real cases, {result.n_folds} fold(s))")
        if args.install_splits:
            print(f"installed {install_splits(result.dataset, args.preprocessed)}")
    except ExportError as exc:  # name the options as flags; main() prints it
        raise ExportError(reword(exc, flags)) from None
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
