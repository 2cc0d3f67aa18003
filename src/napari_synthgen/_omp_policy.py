"""How OpenMP threads wait, chosen before torch loads (importing the package does it).

PyTorch's OpenMP runtime (libgomp) keeps idle threads spinning for a while. When synthesis in
napari and a training child process share the cores, the spinning made a tiny model run about
100x slower here (120 s instead of 1.1 s), so the package sets ``OMP_WAIT_POLICY=PASSIVE``
unless the user set a value. In a process of its own, PASSIVE costs instead: threads sleep in
the kernel at every barrier and small per-tile work pays for it (benchmarks/omp_policy.py:
a 512 x 512 diffusion sample 39 s instead of 25 s on a 2-core EPYC), so the command line gives its
batch commands the default back (:func:`batch_default`). Only speed changes: the threads and
the arithmetic are the same, so are the bytes.
"""

from __future__ import annotations

import os
import sys

#: True when the package, not the user, chose the policy
CHOSEN_HERE = "OMP_WAIT_POLICY" not in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def batch_default() -> bool:
    """Give this process OpenMP's default waiting back if the package chose PASSIVE and torch
    has not loaded yet (libgomp reads the policy once, when it loads); True when it did. For
    processes with no viewer to keep responsive: the ``napari-synthgen`` batch commands. The
    training child the Train widget starts sets PASSIVE itself, so it is kept there."""
    if CHOSEN_HERE and "torch" not in sys.modules \
            and os.environ.get("OMP_WAIT_POLICY") == "PASSIVE":
        del os.environ["OMP_WAIT_POLICY"]
        return True
    return False
