"""What the widgets tell each other, without holding references to one another.

The synthesis widget publishes every synthesized candidate; the curation widget queues them.
The train widget asks the synthesis widget to use a new checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup


@dataclass
class Candidate:
    """A synthesized image with its mask and where it came from (for the export manifest)."""

    image: np.ndarray
    mask: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str = ""


class _Bus(SignalGroup):
    candidates = Signal(list)  # list[Candidate]
    use_model = Signal(str)  # path of a checkpoint


bus = _Bus()
