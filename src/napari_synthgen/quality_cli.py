"""The ``report`` and ``evaluate`` sub-commands (registered by :mod:`.cli`).

``add_report_parser(sub)`` / ``add_evaluate_parser(sub)`` add the sub-parsers and set
``func`` to :func:`cmd_report` / :func:`cmd_evaluate`, which return the exit code (0 done,
1 failed, 2 bad usage, a leaked test image or a damaged input file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .cli_wording import cli_message
from .limits import as_flags, cli_type
from .segmenter import LOSSES


def _positive_int(text: str) -> int:
    """argparse ``type``: a whole number >= 1."""
    return cli_type(int, 1)(text)


def _fraction(low_open: bool, high_open: bool) -> Any:
    """argparse ``type``: a number in [0, 1], either end open."""
    return cli_type(float, 0, 1, low_open=low_open, high_open=high_open)


def _whole_numbers(text: str) -> list[int]:
    """Comma-separated whole numbers (``1,2,5``); empty when one is not a number."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return []


def _sizes(text: str) -> list[int]:
    """argparse ``type``: comma-separated whole numbers >= 1 (``1,2,5``)."""
    sizes = _whole_numbers(text)
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected numbers of real pairs >= 1 separated by commas, e.g. 1,2,5; got {text!r}")
    return sizes


def _arms(text: str) -> list[str]:
    """argparse ``type``: comma-separated arm names (``real,synthetic``); ``evaluate`` checks
    the names, so the message lists the arms of the chosen mode."""
    arms = [part.strip() for part in text.split(",") if part.strip()]
    if not arms:
        raise argparse.ArgumentTypeError(
            f"expected arm names separated by commas, e.g. real or real,synthetic; got {text!r}")
    return arms


def _classes(text: str) -> list[int]:
    """argparse ``type``: comma-separated mask classes (``0`` or ``0,2``); ``evaluate`` checks
    the range."""
    classes = _whole_numbers(text)
    if not classes:
        raise argparse.ArgumentTypeError(
            f"expected mask classes (0, 1, 2) separated by commas, e.g. 0; got {text!r}")
    return classes


def _add_read_as(p: argparse.ArgumentParser, which: str) -> None:
    """``--read-as`` and ``--boundary-width``, as ``generate`` and ``train`` take them."""
    from .cli_wording import READ_AS_HELP
    from .masks import MASK_SOURCES

    p.add_argument("--read-as", default="auto", choices=MASK_SOURCES,
                   help=f"how to read {which}: {READ_AS_HELP}")
    p.add_argument("--boundary-width", type=_positive_int, default=2,
                   help="boundary ring in px drawn for --read-as binary/instances")


def add_report_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``napari-synthgen report --samples DIR --reference DIR --out DIR``."""
    from .report import DEFAULT_CONSISTENCY_STEPS, DEFAULT_FLAG_BELOW

    p = sub.add_parser(
        "report", help="quality figures of synthetic samples against real ones",
        description="Score every synthetic image/mask pair against real pairs: grey levels per "
        "class, power spectrum, periodic artefacts, contrast, SSIM to the real image of the "
        "same mask, diversity per mask, and mask consistency (a small segmenter trained on "
        "the real pairs). Writes report.csv, report.png and report.md. Samples that are (Z, Y, "
        "X) TIFF stacks are scored slice by slice and add z-consistency (correlation of "
        "adjacent slices beyond the mask, flicker) against the reference's stack, or its 2-D "
        "slices in file-name order: report_z.csv, report_z_pairs.csv, report_z.png.")
    p.add_argument("--samples", type=Path, required=True,
                   help="paired folder of synthetic samples (images/, masks/), e.g. generate's "
                   "output")
    p.add_argument("--reference", type=Path, required=True,
                   help="paired folder of real images and masks; or a model checkpoint whose "
                   "metadata holds reference statistics (then no SSIM and no consistency)")
    p.add_argument("--out", type=Path, required=True, help="folder for the report files")
    p.add_argument("--consistency-steps", type=cli_type(int, 0),
                   default=DEFAULT_CONSISTENCY_STEPS,
                   help="training steps of the mask-consistency segmenter (0: skip)")
    p.add_argument("--flag-below", type=_fraction(False, False), default=DEFAULT_FLAG_BELOW,
                   help="flag samples scoring below this")
    p.add_argument("--device", default="cpu", help="cpu, auto, cuda, cuda:N, mps")
    _add_read_as(p, "the --reference folder's masks (the samples hold generate's class masks)")
    p.set_defaults(func=cmd_report)
    return p


def add_evaluate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``napari-synthgen evaluate --real DIR --synthetic DIR --test DIR ...``."""
    from .evaluation import MIN_CROP

    p = sub.add_parser(
        "evaluate", help="does the synthetic set improve a segmenter on real test images?",
        description="Train the same small segmenter with the same budget and seeds on real "
        "pairs only, real plus synthetic, and synthetic only; score each on the real test "
        "pairs (Dice and IoU per class, boundary F1 with a distance tolerance), mean and "
        "spread over seeds. Writes evaluation.csv, evaluation_runs.csv, evaluation.md and "
        "evaluation.png. With --real-sizes 1,2,5 it is a study against the number of real pairs "
        "(see --real-sizes). (Z, Y, X) stack pairs are split into 2-D slices (<stem>_zNNN); "
        "test stacks also get per-stack rows in evaluation_stacks.csv. The default budget "
        "takes a few minutes on a 2-core laptop with ISBI-size images; for a real run use "
        "e.g. --steps 1000 --batch-size 8 --seeds 3 (--device cuda on a GPU).")
    p.add_argument("--real", type=Path, required=True, help="paired folder of real training pairs")
    p.add_argument("--synthetic", type=Path, required=True,
                   help="paired folder of synthetic pairs (e.g. the curated export)")
    p.add_argument("--test", type=Path, required=True,
                   help="paired folder of real test pairs (never in --real or --synthetic)")
    p.add_argument("--steps", type=_positive_int, default=150,
                   help="training steps per run")
    p.add_argument("--seeds", type=_positive_int, default=2,
                   help="seeds per arm, 0..K-1 (3 or more to see the spread)")
    p.add_argument("--mix", type=_fraction(True, True), default=0.5,
                   help="synthetic share of each batch in the real+synthetic arm")
    p.add_argument("--pretrain-synthetic", action="store_true",
                   help="instead of mixing: the first half of the steps on synthetic pairs, "
                   "the second half on real pairs (fresh optimiser)")
    p.add_argument("--pretrain-steps", type=_positive_int, default=None, metavar="STEPS",
                   help="with --pretrain-synthetic: STEPS steps on the synthetic pairs, then "
                   "all of --steps on the real pairs, so the arm sees as many real crops as "
                   "real only (instead of half the steps each)")
    p.add_argument("--real-runs-from", type=Path, default=None, metavar="DIR",
                   help="copy in the real-only runs of an earlier evaluate --out DIR made with "
                   "the same folders and settings (it may differ in --mix, --pretrain-*, "
                   "--synthetic-ignore*), so an ablation of the other arms trains only "
                   "those; needs --out")
    p.add_argument("--min-score", type=_fraction(False, False), default=None,
                   help="use only synthetic pairs whose quality score is at least this "
                   "(reference: --real)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="crops per step")
    p.add_argument("--crop", type=cli_type(int, MIN_CROP), default=128, help="crop side in px")
    p.add_argument("--tolerance", type=cli_type(float, 0, low_open=True), default=2.0,
                   help="boundary F1 distance tolerance in px")
    p.add_argument("--base", type=_positive_int, default=16,
                   help="the segmenter's channels at full resolution (doubled at each of its "
                   "3 levels); 32 is about 4x the compute, to see whether the segmenter's "
                   "size rather than the data limits a study")
    p.add_argument("--loss", default="weighted_ce", choices=list(LOSSES),
                   help="the segmenter's loss: weighted_ce (cross-entropy weighted by inverse "
                   "class frequency) or dice_ce (plain cross-entropy plus the soft Dice of the "
                   "objects, nnU-Net's; for sparse objects such as organelles, whose class "
                   "weights make weighted_ce call every dark patch an object)")
    p.add_argument("--device", default="cpu", help="cpu, auto, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: the project's rule for training at this batch size")
    p.add_argument("--real-sizes", type=_sizes, default=None, metavar="N,N,...",
                   help="a study against the amount of real data: the real-only and "
                   "real+synthetic arms run at each size on a subset of that many real pairs "
                   "(the first N of a permutation drawn per seed, so nested), synthetic-only "
                   "once; adds evaluation_sizes.csv/.png (paired differences with a 95%% "
                   "bootstrap CI over seeds and test images) and evaluation_curves.csv/.png "
                   "(the real-only arm's validation curve)")
    p.add_argument("--arms", type=_arms, default=None, metavar="ARM,ARM",
                   help="run only these arms (default all): real, real+synthetic (or "
                   "synthetic-then-real with --pretrain-synthetic), synthetic. E.g. --arms real "
                   "with --real-sizes 2,5,10,15 for the real data's own learning curve; the "
                   "synthetic folder still sets the class weights, so each run is the same as in "
                   "a full evaluation with the same folders, and a later run with more arms and "
                   "the same --out reuses it")
    p.add_argument("--val-every", type=_positive_int, default=None, metavar="STEPS",
                   help="with --real-sizes: a validation point of the real-only arm every "
                   "STEPS steps (default: a tenth of --steps); held-out real pairs not in the "
                   "subset, else the training loss only")
    p.add_argument("--synthetic-ignore", type=_classes, default=(), metavar="CLASS,...",
                   help="classes whose pixels in the synthetic pairs teach nothing (left out "
                   "of the loss), e.g. 0 where the generator draws class 0 badly; the real "
                   "pairs teach every class and the class weights do not change, so the "
                   "real-only runs are the same with or without it")
    p.add_argument("--synthetic-ignore-off-mask", action="store_true",
                   help="class-0 pixels of the synthetic pairs that the real-only segmenter "
                   "of the same seed (and number of real pairs) calls an object teach "
                   "nothing: objects the generator painted where its masks have none "
                   "(evaluation.md's section on what that segmenter sees in the synthetic "
                   "pairs shows whether there are many); the real-only runs are unchanged")
    _add_read_as(p, "the masks of --real and --test (the synthetic folder holds generate's "
                 "class masks)")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="folder for the result files")
    p.set_defaults(func=cmd_evaluate)
    return p


def _bar(desc: str) -> Any:
    from .progress import progress_bar

    return progress_bar(0, desc, "step")


def cmd_report(args: argparse.Namespace) -> int:
    """Run the quality report with a progress bar; print where the files went."""
    from .report import quality_report

    if args.consistency_steps < 0:
        print("napari-synthgen report: error: --consistency-steps must be >= 0",
              file=sys.stderr)
        return 2
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[stage] = _bar(stage)
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = quality_report(args.samples, args.reference, args.out,
                                consistency_steps=args.consistency_steps, device=args.device,
                                flag_below=args.flag_below, progress=progress,
                                read_as=args.read_as, boundary_width=args.boundary_width)
    finally:
        for bar in bars.values():
            bar.close()
    n_flag = sum(1 for r in result.rows if r["flagged"])
    print(f"scored {len(result.rows)} samples ({n_flag} flagged below {args.flag_below}); "
          f"wrote {', '.join(str(f) for f in result.files)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the utility check with a progress bar; print the table. Exit 2 on a leaked image."""
    from .evaluation import LeakError, evaluate
    from .evaluation_report import markdown_table, write_outputs
    from .io import DamagedFileError

    bar = _bar("evaluate")

    def progress(stage: str, done: int, total: int) -> None:
        bar.total = total
        bar.set_description(stage, refresh=False)
        bar.n = done
        bar.refresh()

    try:
        result = evaluate(args.real, args.synthetic, args.test, steps=args.steps,
                          seeds=args.seeds, mix=args.mix,
                          pretrain_synthetic=args.pretrain_synthetic, min_score=args.min_score,
                          batch_size=args.batch_size, crop=args.crop, base=args.base,
                          device=args.device, precision=args.precision,
                          tolerance=args.tolerance, progress=progress,
                          read_as=args.read_as, boundary_width=args.boundary_width,
                          out=args.out, real_sizes=args.real_sizes, val_every=args.val_every,
                          arms=args.arms, synthetic_ignore=args.synthetic_ignore,
                          loss=args.loss,
                          synthetic_ignore_off_mask=args.synthetic_ignore_off_mask,
                          pretrain_steps=args.pretrain_steps,
                          real_runs_from=args.real_runs_from)
    except LeakError as exc:
        bar.close()
        print(f"napari-synthgen evaluate: error: {exc}", file=sys.stderr)
        return 2
    except DamagedFileError:
        raise  # main() says which file, exit 2
    except ValueError as exc:
        bar.close()
        message = as_flags(str(exc).replace("min_score", "--min-score"), vars(args))
        print(f"error: {cli_message(message)}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    files = write_outputs(result, args.out)
    print(markdown_table(result))
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
