"""Run napari-synthgen as on an AVX2-only CPU (no AVX-512, no bf16): on PYTHONPATH, this hides
the ``avx512*`` and ``amx*`` flags from readers of /proc/cpuinfo, so ``auto`` precision follows
the rule for a CPU without bf16. Pair it with ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` so that the kernels are those of such a CPU (docs/testing.md)."""

import builtins
import io

_open = builtins.open


def _without_avx512(file, *args, **kwargs):
    if file != "/proc/cpuinfo":
        return _open(file, *args, **kwargs)
    with _open(file, *args, **kwargs) as fh:
        lines = fh.read().splitlines(True)
    for i, line in enumerate(lines):
        if line.startswith("flags"):
            head, _, flags = line.partition(":")
            kept = [f for f in flags.split() if not f.startswith(("avx512", "amx"))]
            lines[i] = f"{head}: {' '.join(kept)}\n"
    return io.StringIO("".join(lines))


builtins.open = _without_avx512
