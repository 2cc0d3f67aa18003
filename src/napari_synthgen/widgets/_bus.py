"""What the widgets of one viewer tell each other, without holding references to one another.

The synthesis widget publishes every synthesized candidate and the model it uses (with the
classes that model knows); the curation widget queues candidates, the mask editor starts new
masks with a class the model knows. The train widget asks the synthesis widget to use a new
checkpoint.
"""

from __future__ import annotations

import weakref
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


class Bus(SignalGroup):
    """What the widgets of one viewer tell each other (each viewer has its own: two viewers
    never cross-talk). Get it with :func:`bus_for`."""

    candidates = Signal(list)  # list[Candidate]
    use_model = Signal(str)  # path of a checkpoint
    model_changed = Signal(object)  # ModelAnnouncement, or None when no model is in use

    def __init__(self) -> None:
        super().__init__()
        self._last_model: ModelAnnouncement | None = None

    def announce_model(self, announcement: ModelAnnouncement) -> None:
        """Tell the other widgets which model is in use (one docked later asks
        :meth:`current_model`)."""
        self._last_model = announcement
        self.model_changed.emit(announcement)

    def current_model(self) -> ModelAnnouncement | None:
        """The model announced last in this viewer, if any."""
        return self._last_model

    def withdraw_model(self, announcement: ModelAnnouncement | None) -> None:
        """The widget that announced ``announcement`` closed: no model is in use any more."""
        if announcement is not None and self._last_model is announcement:
            self._last_model = None
            self.model_changed.emit(None)


#: id(viewer) -> (a weak reference to it, its bus); an entry goes when its viewer does
_BUSES: dict[int, tuple[weakref.ref, Bus]] = {}


def bus_for(viewer: Any) -> Bus:
    """The bus of ``viewer``'s widgets (made on first use; forgotten with the viewer).

    napari hands each plugin widget its own proxy of the viewer: the viewer behind it
    (``__wrapped__``) is the key, so all widgets of one viewer share one bus."""
    while hasattr(viewer, "__wrapped__"):
        viewer = viewer.__wrapped__
    key = id(viewer)
    entry = _BUSES.get(key)
    if entry is not None and entry[0]() is viewer:
        return entry[1]
    bus = Bus()
    _BUSES[key] = (weakref.ref(viewer, lambda _ref, key=key: _BUSES.pop(key, None)), bus)
    return bus
