"""Device and precision choices, explicit and in one place.

``auto`` picks CUDA, then Apple MPS, then the CPU. Precision is ``fp32``, ``bf16`` or ``fp16``
autocast, or ``auto``: bf16 (fp16 where bf16 is missing) on CUDA, fp32 on MPS, and on the CPU
whichever of fp32 and bf16 is measured to be faster for the model at hand (CPUs with AMX run
bf16 convolutions several times faster; others run them slower).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Literal

import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
Precision = Literal["fp32", "bf16", "fp16"]

_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def default_precision(device: torch.device) -> Precision:
    """The precision ``auto`` uses where nothing is measured (CUDA, MPS)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """Autocast to ``precision`` on ``device``; fp32 runs plainly."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def time_call(fn: Callable[[], object], repeats: int = 2) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs after one warm-up (synchronising CUDA)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_bf16_speedup(run: Callable[[Precision], object]) -> float:
    """How many times faster ``run("bf16")`` is than ``run("fp32")`` on this CPU."""
    t32 = time_call(lambda: run("fp32"))
    t16 = time_call(lambda: run("bf16"))
    return t32 / max(t16, 1e-9)


def cpu_bf16_flags() -> set[str] | None:
    """The CPU's bf16 features (``amx_bf16``, ``avx512_bf16``) from /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split()) & {"amx_bf16", "avx512_bf16"}
    except OSError:
        pass
    return None


def choose_cpu_precision(run: Callable[[Precision], object], *, threshold: float = 1.25,
                         trust_amx: bool = True) -> tuple[Precision, str]:
    """fp32 or bf16 for work on this CPU, and why.

    A CPU with AMX-BF16 runs bf16 inference several times faster (seen here: 3-4x), one
    without any bf16 instructions runs it slower; both are known from the CPU flags, which,
    unlike a timing, cannot be fooled by other programs loading the machine. In between (or
    where the flags cannot be read, or ``trust_amx`` is False because the work also casts
    weights and gradients, as training does) ``run`` is timed in both precisions.
    """
    flags = cpu_bf16_flags()
    if flags is not None and "amx_bf16" in flags and trust_amx:
        return "bf16", "auto: bf16 (this CPU has AMX-BF16)"
    if flags is not None and not flags:
        return "fp32", "auto: fp32 (this CPU has no bf16 instructions)"
    try:
        speedup = cpu_bf16_speedup(run)
    except RuntimeError:  # bf16 kernels missing on this CPU / build
        return "fp32", "auto: fp32 (bf16 does not run here)"
    choice: Precision = "bf16" if speedup >= threshold else "fp32"
    return choice, f"auto: {choice} (bf16 measured {speedup:.2f}x fp32 on this CPU)"
