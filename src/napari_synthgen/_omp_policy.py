"""How OpenMP threads wait, chosen before torch loads (importing the package does it).

PyTorch's OpenMP runtime (libgomp) keeps idle threads spinning (about 3 ms) before they sleep.
When another job wants a core (synthesis in napari beside a training child, training beside
generation, another user), a spinning thread burns the time slice its partner needs to reach
the barrier: a tiny model ran about 100x slower in the viewer (120 s instead of 1.1 s), one
diffusion image took 113.6 s instead of 30.0 s in ``generate``. So every process that imports
the package, the viewer and the ``napari-synthgen`` batch commands alike, runs with
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once). Alone on the machine this costs a batch
command some speed (benchmarks/omp_policy.py: a 256 x 256 diffusion sample 1.4x slower on a
2-core EPYC), against 2-4x saved when a core is shared; a bounded spin (``GOMP_SPINCOUNT``)
lost as much as the default under load. Only speed changes: the threads and the arithmetic are
the same, so are the bytes.

The user's own setting wins: with ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the
environment nothing is changed (``OMP_WAIT_POLICY=ACTIVE`` or ``GOMP_SPINCOUNT=300000`` gives a
batch job on a machine of its own libgomp's spinning back).
"""

from __future__ import annotations

import os

#: the variables through which a user chooses how libgomp threads wait
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
#: True when the package, not the user, chose the policy
CHOSEN_HERE = not any(name in os.environ for name in USER_VARIABLES)
if CHOSEN_HERE:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
