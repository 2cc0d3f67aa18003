"""Keep triton out of a process whose OpenGL driver already loaded its own LLVM.

napari's canvas on Mesa (llvmpipe, radeonsi) loads ``libLLVM``; importing diffusers then imports
``torch._dynamo``, which imports triton, whose bundled LLVM crashes the interpreter on import
(a segfault, seen with a viewer open followed by ``import diffusers``). Synthesis and training
compile no GPU kernels, so nothing is lost by hiding triton there.
"""

from __future__ import annotations

import sys


def keep_triton_out() -> bool:
    """Hide triton when another LLVM is loaded and triton is not yet; returns whether it did.

    Called before every diffusers import (``models.diffusion``), so a script that opens a viewer
    and then builds a diffusion synthesizer is as safe as the napari widget.
    """
    if "triton" in sys.modules:
        return False  # imported before the driver's LLVM, or kept out already
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            maps = fh.read()
    except OSError:  # not Linux: no Mesa LLVM clash known there
        return False
    if "libLLVM" not in maps:
        return False
    sys.modules["triton"] = None  # `import triton` raises ImportError: torch treats it as absent
    return True
