"""Device and precision choices, explicit and in one place.

``auto`` picks CUDA, then Apple MPS, then the CPU. Precision is ``fp32``, ``bf16`` or ``fp16``
autocast, or ``auto``, which :func:`auto_precision` decides by a written rule from the device,
the CPU's flags and the kind of work, never by a timing, so that a seed gives the same bytes
whatever else the machine is doing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
Precision = Literal["fp32", "bf16", "fp16"]

_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


#: CPU flags that give bf16 arithmetic in hardware (AMX tiles, or AVX-512 dot products).
BF16_FLAGS: frozenset[str] = frozenset({"amx_bf16", "avx512_bf16"})
#: Training takes bf16 on a bf16 CPU from this batch size up: below it the weight and gradient
#: casts cost more than bf16 convolutions save (docs/design.md has the measurements).
TRAIN_BF16_MIN_BATCH: int = 4

Work = Literal["inference", "training"]


class DeviceError(RuntimeError):
    """A device or precision that this machine cannot provide."""


def mps_available() -> bool:
    """True when Apple's Metal backend can be used."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA, then MPS, then CPU; an explicit device that is missing is an error."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was asked for, but this machine has no usable CUDA GPU "
                "(or this torch build has no CUDA). Use device 'auto' or 'cpu'."
            )
        return torch.device(name)
    if name == "mps":
        if not mps_available():
            raise DeviceError("device 'mps' was asked for, but Apple MPS is not available here.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {device!r}; use one of {', '.join(DEVICES)} or cuda:N.")


def check_precision(precision: str, device: torch.device) -> Precision:
    """Validate an explicit precision for ``device`` (``auto`` is resolved elsewhere)."""
    p = str(precision).lower()
    if p not in ("fp32", "bf16", "fp16"):
        raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if p == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 autocast is not supported on the CPU; use bf16 or fp32.")
    if p == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU has no bf16 support; use fp16 or fp32.")
    return p  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """Autocast to ``precision`` on ``device``; fp32 runs plainly."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def cpu_bf16_flags() -> frozenset[str] | None:
    """The CPU's bf16 features (``amx_bf16``, ``avx512_bf16``) from /proc/cpuinfo; None where
    the flags cannot be read (macOS, Windows, a sandbox without /proc)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split()) & BF16_FLAGS
    except OSError:
        pass
    return None



def auto_precision(device: torch.device, work: Work, *, batch_size: int = 1,
                   flags: frozenset[str] | str | None = "read") -> tuple[Precision, str]:
    """The precision ``auto`` means, and the rule that chose it, from facts alone.

    Never a timing: a timing depends on what else the machine runs, and the same seed must give
    the same bytes on a quiet or a busy machine. The rule (measured in ``benchmarks/``):

    - CUDA: bf16 autocast where the GPU has it, else fp16 (with a gradient scaler in training).
    - MPS: fp32.
    - CPU with bf16 instructions (``amx_bf16`` or ``avx512_bf16``): inference bf16 (bf16 weights,
      channels_last: 0.2-0.35 of fp32 time); training bf16 from batch ``TRAIN_BF16_MIN_BATCH``
      up, fp32 below.
    - CPU without bf16 instructions, or whose flags cannot be read: fp32.

    ``flags`` is for tests: the bf16 flags to assume instead of reading /proc/cpuinfo.
    """
    if work not in ("inference", "training"):
        raise ValueError(f"work must be 'inference' or 'training'; got {work!r}.")
    if device.type == "cuda":
        p: Precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return p, f"auto: {p} on CUDA"
    if device.type != "cpu":
        return "fp32", f"auto: fp32 on {device.type}"
    found = cpu_bf16_flags() if flags == "read" else flags
    if found is None:
        return "fp32", "auto: fp32 (this CPU's bf16 support cannot be read)"
    have = sorted(set(found) & BF16_FLAGS)
    if not have:
        return "fp32", "auto: fp32 (this CPU has no bf16 instructions)"
    which = "+".join(have)
    if work == "inference":
        return "bf16", f"auto: bf16 (CPU has {which}; inference)"
    if batch_size >= TRAIN_BF16_MIN_BATCH:
        return "bf16", (f"auto: bf16 (CPU has {which}; training batch {batch_size} >= "
                        f"{TRAIN_BF16_MIN_BATCH})")
    return "fp32", (f"auto: fp32 (CPU has {which}, but training batch {batch_size} < "
                    f"{TRAIN_BF16_MIN_BATCH}: casts cost more than bf16 saves)")
