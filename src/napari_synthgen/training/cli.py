"""``napari-synthgen train``: the training engine on the command line (and under torchrun).

Settings come from the defaults, then ``--config FILE`` (YAML/JSON), then the options given on
the command line. ``--family`` chooses among the registered model families, whose own options
(pix2pix: ``--netG``, ``--ngf``...) are added from the registry. With ``--events jsonl`` every
event is one JSON line on stdout for a supervising program (the napari train widget); otherwise
a progress bar shows on stderr, with whatever losses the family reports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .. import registry
from ..cli_wording import READ_AS_HELP, cli_message
from ..limits import NICE_RANGE, SEED_TYPE, as_flags, cli_type
from ..masks import ENCODINGS, MASK_SOURCES
from .config import TrainConfig
from .events import Event, Failed

# option -> (config key, type, help) for the settings every family shares; all default to None
# so that only given options override (each family adds its own, see families.CliOption).
# The types check the ranges (limits.cli_type), so argparse names the flag in its error.
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--out", "out", str, "output folder for checkpoints, samples and the config"),
    ("--tile", "tile", cli_type(int, 1), "tile size (pixels)"),
    ("--stride", "stride", cli_type(int, 1),
     "tile stride for a grid of tiles (default: random crops)"),
    ("--batch-size", "batch_size", cli_type(int, 1), "tiles per step and process"),
    ("--val-fraction", "val_fraction", cli_type(float, 0, 1, high_open=True),
     "fraction of source images held out"),
    ("--encoding", "encoding", str, "mask encoding"),
    ("--lr", "lr", cli_type(float, 0, low_open=True), "learning rate"),
    ("--unlabel-fraction", "unlabel_fraction", cli_type(float, 0, 1),
     "share of cells turned into background in each training mask, image kept "
     "(teaches class 0 as unlabelled tissue)"),
    ("--unlabeled-share", "unlabeled_share", cli_type(float, 0, 1),
     "share of each batch's tiles drawn from the --unlabeled images"),
    ("--cond-dropout", "cond_dropout", cli_type(float, 0, 1),
     "share of the labelled tiles trained without their mask (the null condition, for "
     "guidance without unlabelled images)"),
    ("--object-share", "object_share", cli_type(float, 0, 1),
     "share of the random crops placed over an object (interior or boundary), so that "
     "sparse organelles are seen often enough to learn their texture (nnU-Net uses 0.33)"),
    ("--read-as", "read_as", str,
     f"how to read the mask files of --data and --val: {READ_AS_HELP}"),
    ("--boundary-width", "boundary_width", cli_type(int, 1),
     "boundary ring in px drawn for --read-as binary/instances (default 2)"),
    ("--seed", "seed", SEED_TYPE, "random seed"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N, mps"),
    ("--precision", "precision", str, "numeric precision"),
    ("--checkpoint-every", "checkpoint_every", cli_type(int, 1), "steps between checkpoints"),
    ("--sample-every", "sample_every", cli_type(int, 1), "steps between preview samples"),
    ("--log-every", "log_every", cli_type(int, 1), "steps between progress events"),
    ("--keep-checkpoints", "keep_checkpoints", cli_type(int, 1), "checkpoints kept on disk"),
]
#: options whose values are a fixed list (argparse enforces them)
_CHOICES: dict[str, tuple[str, ...]] = {
    "encoding": ENCODINGS,
    "read_as": MASK_SOURCES,
    "precision": ("auto", "fp32", "bf16", "fp16"),
}
#: the training length: one of these is required, on the command line or in --config
_LENGTH: list[tuple[str, str, Any, str]] = [
    ("--steps", "steps", cli_type(int, 1), "optimisation steps"),
    ("--epochs", "epochs", cli_type(int, 1), "passes over the training tiles"),
]
_FLAGS: list[tuple[str, str, bool, str]] = [
    ("--flips", "flips", True, "random horizontal/vertical flips"),
    ("--rot90", "rot90", True, "random 90-degree turns"),
    ("--no-channels-last", "channels_last", False, "plain NCHW memory format"),
]


def _family_options() -> tuple[list[tuple[str, str, Any, str]], list[tuple[str, str, Any, str]]]:
    """(options, flags) of every registered family, each flag once (families may share one)."""
    options: dict[str, tuple[str, str, Any, str]] = {}
    flags: dict[str, tuple[str, str, Any, str]] = {}
    for name in registry.names():
        for opt in registry.get(name).cli_options:
            target = flags if opt.is_flag else options
            if opt.flag in options or opt.flag in flags:
                continue
            target[opt.flag] = (opt.flag, opt.key, opt.value if opt.is_flag else opt.type,
                                opt.help)
    return list(options.values()), list(flags.values())


def _family_choices() -> dict[str, tuple[Any, ...]]:
    """setting -> the values a family declares for it (its settings field's ``choices``), so
    that argparse refuses others and lists them."""
    choices: dict[str, tuple[Any, ...]] = {}
    for name in registry.names():
        for f in dataclasses.fields(registry.get(name).settings):
            declared = tuple(f.metadata.get("choices", ()))
            if declared:
                choices[f.name] = tuple(dict.fromkeys(choices.get(f.name, ()) + declared))
    return choices


def _defaults() -> dict[str, Any]:
    """Each setting's default as a fresh configuration has it, for the help text (a family
    setting: the default of the first family that has it)."""
    values: dict[str, Any] = {}
    for name in reversed(registry.names()):
        with contextlib.suppress(Exception):  # a plug-in family that cannot be built bare
            values.update(registry.make_config(name).to_dict())
    values.update(registry.make_config().to_dict())
    return values


def _with_default(help_: str, default: Any) -> str:
    return help_ if default is None else f"{help_} (default: {default})"


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train", help="train a model on paired images and masks",
        usage="%(prog)s --data DIR [DIR ...] (--steps N | --epochs N) [options]",
        description="Settings come from the defaults, then --config FILE, then the options "
        "given here. One of --steps / --epochs is required, here or in the --config file. "
        "Messages go to stdout, the progress to stderr (--events jsonl: one JSON event per "
        "line on stdout instead).")
    defaults = _defaults()
    p.add_argument("--data", nargs="+", default=None,
                   help="paired folders (images/ + masks/) or reference aligned folders")
    p.add_argument("--val", nargs="+", default=None, help="validation folders (else a split)")
    p.add_argument("--unlabeled", nargs="+", default=None, metavar="DIR",
                   help="raw images without masks that join training (folders of images, "
                   "stacks, or paired folders' images/): they teach the tissue, the masks "
                   "teach the layout (diffusion: the null condition of classifier-free "
                   "guidance, see generate --guidance; pix2pix: an unconditional "
                   "discriminator, see --lambda-unlabeled)")
    p.add_argument("--family", default=None, choices=registry.names(),
                   help=_with_default("model family", defaults.get("family")))
    length = p.add_argument_group(
        "training length (one required, here or in --config)").add_mutually_exclusive_group()
    for flag, key, typ, help_ in _LENGTH:
        length.add_argument(flag, dest=key, type=typ, default=None, metavar="N", help=help_)
    options, flags = _family_options()
    choices = {**_family_choices(), **_CHOICES}
    for flag, key, typ, help_ in _OPTIONS + options:
        p.add_argument(flag, dest=key, type=typ, default=None, choices=choices.get(key),
                       help=_with_default(help_, defaults.get(key)))
    for flag, key, _value, help_ in _FLAGS + flags:
        p.add_argument(flag, dest=key, action="store_const", const=_value, default=None,
                       help=help_)
    p.add_argument("--config", type=Path, default=None,
                   help="YAML or JSON configuration file; for --family diffusion also small "
                   "or base, the U-Net configuration (as --unet-config)")
    p.add_argument("--resume", nargs="?", const="", default=None,
                   help="resume from --out (or from the given folder / state file)")
    p.add_argument("--events", choices=["jsonl"], default=None,
                   help="write one JSON event per line to stdout")
    p.add_argument("--stop-file", type=Path, default=None,
                   help="stop (saving a checkpoint) when this file appears")
    p.add_argument("--nice", type=cli_type(int, *NICE_RANGE), default=0,
                   help="lower this process's CPU priority by N (keeps a GUI responsive)")
    return p


def _resumed_run(args: argparse.Namespace) -> Path | None:
    """The run folder ``--resume`` continues (given, or --out; a state file's run), when it
    holds the configuration the run saved."""
    if getattr(args, "resume", None) is None:
        return None
    target = Path(args.resume) if args.resume else (Path(args.out) if args.out else None)
    if target is not None and target.is_file():  # RUN/checkpoints/step_*.state.pt
        target = target.parent.parent
    return target if target is not None and (target / "config.yaml").is_file() else None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < the resumed run's saved configuration < --config file < options given on the
    command line. So ``train --resume RUN --steps N`` continues RUN as it was set up, to N
    steps, writing into RUN (unless --out says otherwise)."""
    preset = _preset(args.config)
    values: dict[str, Any] = (_file_values(args.config, args.family)
                              if args.config and preset is None else {})
    run = _resumed_run(args)
    if run is not None and not values:
        values = {**registry.load_config(run / "config.yaml").to_dict(), "out": str(run)}
    for key in ("data", "val", "unlabeled"):
        if getattr(args, key) is not None:
            values[key] = list(getattr(args, key))
    if args.family is not None:
        values["family"] = args.family
    options, flags = _family_options()
    for _flag, key, _typ, _help in _OPTIONS + _LENGTH + options + _FLAGS + flags:
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    for key, value in (preset or {}).items():
        if getattr(args, key, None) is None:
            values[key] = value
    if values.get("steps") is not None and args.epochs is None and args.steps is not None:
        values["epochs"] = None
    if values.get("epochs") is not None and args.steps is None and args.epochs is not None:
        values["steps"] = None
    return registry.config_from_dict(values)


def _file_values(path: Path, family: str | None) -> dict[str, Any]:
    """The settings of a configuration file; ``--family`` (when given) decides the family, so
    a file of diffusion settings needs no ``family:`` line when the command line says it."""
    if family is None:
        return registry.load_config(path).to_dict()
    from .config import read_config_file

    raw = read_config_file(path)
    return registry.config_from_dict({**raw, "family": family}).to_dict()


def _preset(config: Path | None) -> dict[str, Any] | None:
    """``--config NAME`` where NAME is a family's preset (diffusion: small, base): the
    settings it stands for. A file of that name, if there is one, is still read as a file."""
    if config is None or config.is_file():
        return None
    for name in registry.names():
        preset = registry.get(name).presets.get(str(config))
        if preset is not None:
            return dict(preset)
    return None


class _StopFlag:
    """Stop requests from a stop file, SIGTERM/SIGINT, or a supervisor that went away."""

    def __init__(self, stop_file: Path | None) -> None:
        self.stop_file = stop_file
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.requested:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        if self.stop_file is not None and self.stop_file.exists():
            self.requested = True
        return self.requested


#: settings whose Python names messages may use, worded as flags for this command
_SETTING_NAMES = ("batch_size", "tile", "seed", "val_fraction", "stride")


def _print_human(event: Event, bar: Any) -> None:
    kind = event["event"]
    if kind == "started":
        cfg = event["config"]
        try:
            arch = registry.get(cfg["family"]).summary(cfg)
        except registry.FamilyError:
            arch = ""
        bar.reset(total=event["total"])
        bar.update(event["step"])
        bar.write(
            f"training {cfg['family']} {arch} on "
            f"{event['n_train_images']} images ({event['n_val_images']} validation"
            + (f", {event['n_unlabeled_images']} unlabelled"
               if event.get("n_unlabeled_images") else "")
            + f"), {event['total']} steps, {event['device']} {event['precision']}, "
            f"{event['world_size']} process(es)"
            + (f"; resumed at step {event['resumed_from']}" if event["resumed_from"] else "")
        )
        for note in registry.start_advice(event):
            bar.write(f"note: {note}")
    elif kind == "progress":
        bar.n = event["step"]
        losses = {name: f"{value:.3f}" for name, value in event["losses"].items()}
        bar.set_postfix(**losses, tiles_s=f"{event['tiles_per_s']:.1f}", refresh=False)
        bar.refresh()
    elif kind == "validation":
        bar.write(f"step {event['step']}: {event['split']} L1 {event['l1']:.2f} grey levels, "
                  f"SSIM {event['ssim']:.3f}")
    elif kind == "checkpoint":
        bar.write(f"step {event['step']}: checkpoint {event['path']}")
    elif kind == "finished":
        bar.write(f"finished ({event['reason']}) at step {event['step']}: {event['checkpoint']}")
    elif kind == "failed":
        bar.write(f"error: {cli_message(as_flags(event['message'], _SETTING_NAMES))}")


def cmd_train(args: argparse.Namespace) -> int:
    """Run training from the command line; exit code 1 if it failed."""
    from .config import ConfigError
    from .engine import train

    try:
        cfg = config_from_args(args)
        cfg.validate()
    except ConfigError as exc:
        if args.events:
            _emit(Failed(step=0, reason="ConfigError", message=str(exc)))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.nice and hasattr(os, "nice"):
        try:
            os.nice(args.nice)
        except OSError as exc:  # a negative --nice needs privileges: say so, train anyway
            print(f"note: --nice {args.nice} not applied ({exc.strerror or exc}); a negative "
                  "value needs root.", file=sys.stderr)
    stop = _StopFlag(args.stop_file)
    resume = None
    if args.resume is not None:
        resume = args.resume or cfg.out
    status = 0
    bar = None
    if not args.events:
        from ..progress import progress_bar

        bar = progress_bar(1, "train", "step", dynamic_ncols=True)
    try:
        for event in train(cfg, resume=resume, stop=stop):
            if event["event"] == "failed":
                status = 1
            if args.events:
                if not _emit(event):
                    stop.requested = True  # the supervisor is gone: save and stop
            else:
                _print_human(event, bar)
    finally:
        if bar is not None:
            bar.close()
    return status


def _emit(event: Event) -> bool:
    """Write one JSON line to stdout; False if the reader has gone away."""
    try:
        sys.stdout.write(event.dumps() + "\n")
        sys.stdout.flush()
        return True
    except (BrokenPipeError, OSError):
        return False
