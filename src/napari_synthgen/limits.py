"""Allowed ranges of numeric settings, and memory checks made before any work starts.

One checker serves the command line (:func:`cli_type` makes argparse ``type=`` functions, so
the error names the flag) and the core functions the widgets call (:func:`check_range`, which
names the Python parameter). Memory checks estimate what a request needs from its sizes with
the simple formulas below and refuse it up front with what fits, instead of growing until the
kernel kills the process.

Memory formulas (bytes; the constants are measured peaks on the CPU in fp32, rounded up about
2x, see docs/design.md "Requests are checked against memory"):

- synthesis: ``batch * tile**2 * SYNTH_BYTES_PER_PX`` (network activations of one batch of tiles)
- training: ``batch * tile**2 * <the family's train_bytes_per_px>`` (activations kept for the
  backward pass, both networks, the batch's tensors)
- evaluate's segmenter: ``batch * crop**2 * SEGMENTER_BYTES_PER_PX``
- a new mask layout: ``height * width * LAYOUT_BYTES_PER_PX`` (label maps, distance transforms)
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

#: the largest seed: seeds feed 32-bit generators, so 2**32 would silently be seed 0
SEED_MAX = 2**32 - 1
#: what a nice increment may be (``os.nice``; below 0 needs privileges)
NICE_RANGE = (-20, 19)

#: synthesis bytes per pixel of a batch of tiles (measured: diffusion demo 2.2 KB at 512 px,
#: pix2pix demo 0.16 KB)
SYNTH_BYTES_PER_PX = 4096
#: training bytes per pixel of a batch for a family that declares none (each family declares
#: its own ``Family.train_bytes_per_px``: pix2pix 2048, diffusion 16384)
TRAIN_BYTES_PER_PX_UNKNOWN = 16384
#: evaluate's segmenter, training (measured 2.3 KB at crop 512, batch 4)
SEGMENTER_BYTES_PER_PX = 4096
#: a new dense or sparse layout (measured 51 B at 2048 x 2048)
LAYOUT_BYTES_PER_PX = 96
#: share of the free memory a request may plan to use (the rest: the model, Python, the OS)
USABLE_SHARE = 0.8
GB = 1024**3


class LimitError(ValueError):
    """A setting outside its allowed range, or a request larger than the memory there is."""


# ----------------------------------------------------------------------------- ranges


def describe_range(low: float | None = None, high: float | None = None, *,
                   low_open: bool = False, high_open: bool = False) -> str:
    """"in [0, 4294967295]", ">= 1", "> 0", "in (0, 1)": how messages state a range."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return "any number"


def _outside(value: float, low: float | None, high: float | None, low_open: bool,
             high_open: bool) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return True
    if low is not None and (value <= low if low_open else value < low):
        return True
    return high is not None and (value >= high if high_open else value > high)


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False, what: str = "") -> float:
    """``value`` if it lies in the range, else a :class:`LimitError` naming ``name``, the value
    and the range (``what`` adds what the setting means)."""
    if _outside(value, low, high, low_open, high_open):
        rng = describe_range(low, high, low_open=low_open, high_open=high_open)
        raise LimitError(f"{name} must be {rng}{f' ({what})' if what else ''}; got {value}.")
    return value


def check_seed(name: str, seed: int, count: int = 1) -> int:
    """A seed (and the ``count - 1`` that follow it) within [0, SEED_MAX]."""
    check_range(name, seed, 0, SEED_MAX, what="seeds are 32-bit")
    if seed + count - 1 > SEED_MAX:
        raise LimitError(f"{name} {seed} with {count} variations reaches seed "
                         f"{seed + count - 1}, above the largest seed {SEED_MAX}; use "
                         f"{name} {SEED_MAX - count + 1} or lower.")
    return seed


def cli_type(kind: type, low: float | None = None, high: float | None = None, *,
             low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` that parses ``kind`` and checks the range; argparse's error then
    reads "argument --seed: must be in [0, 4294967295]; got -1"."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}; got {text!r}"
            ) from None
        if _outside(value, low, high, low_open, high_open):
            rng = describe_range(low, high, low_open=low_open, high_open=high_open)
            raise argparse.ArgumentTypeError(f"must be {rng}; got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid int value" wording
    return parse


SEED_TYPE = cli_type(int, 0, SEED_MAX)


# ----------------------------------------------------------------------------- memory


def free_memory(device: str | None = None) -> int | None:
    """Bytes free now on ``device`` (CUDA: the GPU's; otherwise RAM: psutil, else
    /proc/meminfo's MemAvailable); None when it cannot be told (then nothing is refused)."""
    if device is not None and str(device).startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                index = torch.device(device).index
                return int(torch.cuda.mem_get_info(index or 0)[0])
        except (ImportError, RuntimeError, ValueError):
            return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / GB:.2f} GB"


def check_memory(need: float, *, what: str, largest: Callable[[float], int], option: str,
                 device: str | None = None, say: Callable[[int], str] | None = None) -> None:
    """Refuse a request estimated at ``need`` bytes when it exceeds the usable share of free
    memory: "<what> needs about X GB, this machine has Y GB free; use at most <option> N".
    ``largest(budget)`` gives the largest value of ``option`` that fits in ``budget`` bytes;
    ``say(N)`` words the advice when "<option> N" would not."""
    free = free_memory(device)
    if free is None:
        return
    budget = free * USABLE_SHARE
    if need <= budget:
        return
    where = "the GPU has" if device is not None and str(device).startswith("cuda") \
        else "this machine has"
    fit = largest(budget)
    advice = (f"use at most {say(fit) if say else f'{option} {fit}'}" if fit >= 1
              else f"no {option} fits; free memory or use a smaller model")
    raise LimitError(f"{what} needs about {_gb(need)}, {where} {_gb(free)} free; {advice}.")


def _largest_side(budget: float, per_px: float, count: int) -> int:
    return math.isqrt(int(budget / (per_px * max(count, 1))))


def check_synthesis_memory(tile: int, batch_size: int | None, device: str | None = None, *,
                           names: tuple[str, str] = ("tile", "batch_size")) -> None:
    """Synthesis: ``batch * tile**2 * SYNTH_BYTES_PER_PX`` must fit (``names``: how to call
    the tile and batch settings in the message)."""
    batch = max(batch_size or 1, 1)
    need = batch * tile * tile * SYNTH_BYTES_PER_PX
    tiles = f"{names[1]} {batch}" if batch_size else "one tile at a time"
    check_memory(need, what=f"synthesis with {names[0]} {tile} and {tiles}",
                 largest=lambda b: _largest_side(b, SYNTH_BYTES_PER_PX, batch),
                 option=names[0], device=device)


def check_training_memory(tile: int, batch_size: int, device: str | None = None, *,
                          per_px: int | None = None,
                          names: tuple[str, str] = ("batch_size", "tile")) -> None:
    """Training: ``batch * tile**2 * per_px`` (the family's ``train_bytes_per_px``) must fit;
    says the largest batch that does."""
    per_px = int(per_px or TRAIN_BYTES_PER_PX_UNKNOWN)
    need = batch_size * tile * tile * per_px
    check_memory(need, what=f"training with {names[0]} {batch_size} at {names[1]} {tile}",
                 largest=lambda b: int(b // (tile * tile * per_px)), option=names[0],
                 device=device)


def check_layout_memory(height: int, width: int) -> None:
    """A new mask layout of ``height`` x ``width``: ``H * W * LAYOUT_BYTES_PER_PX`` must fit."""
    need = height * width * LAYOUT_BYTES_PER_PX
    check_memory(need, what=f"a {height} x {width} mask",
                 largest=lambda b: math.isqrt(int(b / LAYOUT_BYTES_PER_PX)),
                 option="shape", device=None,
                 say=lambda n: f"{n} x {n} px (shape=({n}, {n}), --size {n} {n})")


def as_flags(message: str, names: Iterable[str]) -> str:
    """A message of this module with the Python names of settings written as command-line
    flags (``batch_size`` -> ``--batch-size``) where it names one: at the start, and in
    "use at most NAME" / "use NAME"."""
    for name in sorted(names, key=len, reverse=True):
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"(^|use at most |; use |with |and ){re.escape(name)}(?=[ ,;.])",
                         rf"\g<1>{flag}", message)
    return message
