"""What the widgets tell each other, without holding references to one another.

The synthesis widget publishes every synthesized candidate and the model it uses (with the
classes that model knows); the curation widget queues candidates, the mask editor starts new
masks with a class the model knows. The train widget asks the synthesis widget to use a new
checkpoint.
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


@dataclass(frozen=True)
class ModelAnnouncement:
    """The model the synthesis widget now uses: its name, file and the classes it knows
    (class id -> training fraction; None when unknown, as for reference checkpoints)."""

    name: str
    path: str
    known: dict[int, float] | None


class _Bus(SignalGroup):
    candidates = Signal(list)  # list[Candidate]
    use_model = Signal(str)  # path of a checkpoint
    model_changed = Signal(object)  # ModelAnnouncement, or None when no model is in use


bus = _Bus()
_last_model: list[ModelAnnouncement] = []


def announce_model(announcement: ModelAnnouncement) -> None:
    """Tell the other widgets which model is in use (a widget docked later asks current_model)."""
    _last_model[:] = [announcement]
    bus.model_changed.emit(announcement)


def current_model() -> ModelAnnouncement | None:
    """The model announced last, if any."""
    return _last_model[0] if _last_model else None


def withdraw_model(announcement: ModelAnnouncement | None) -> None:
    """The widget that announced ``announcement`` closed: no model is in use any more."""
    if announcement is not None and current_model() is announcement:
        _last_model.clear()
        bus.model_changed.emit(None)
