"""Training events: one dataclass per kind, the same JSON the engine always wrote.

The engine yields these events; ``napari-synthgen train --events jsonl`` writes each as one
JSON line (:meth:`Event.dumps`), which the supervisor of the napari train widget reads back
(:func:`from_json`). An event is also a read-only mapping of its JSON (``event["step"]``,
``event.get("checkpoint")``, ``dict(event)``, ``event == {...}``), so code written for plain
dict events keeps working; a reader may attach values of its own (``event["image"] = ...``,
kept in ``extra``). Losses are a ``name -> float`` dict of whatever the family reports.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(kw_only=True, eq=False)
class Event(Mapping[str, Any]):
    """What every event carries: its kind (the JSON ``"event"`` key), the step and the time.

    ``extra`` holds keys this version does not know (from a newer trainer) and values a reader
    attached; they are part of the mapping and of :meth:`to_json`.
    """

    kind: ClassVar[str] = ""
    #: optional fields left out of the JSON when they are None
    omit_if_none: ClassVar[tuple[str, ...]] = ()
    step: int = 0
    time: float = field(default_factory=_time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object: ``{"event": kind, "step": ..., "time": ..., <fields>, <extra>}``."""
        out: dict[str, Any] = {"event": self.kind}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self.omit_if_none:
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    def dumps(self) -> str:
        """One JSON line (values JSON cannot hold are written as strings)."""
        return json.dumps(self.to_json(), default=str)

    # ----------------------------------------------------------------- mapping of the JSON
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    def __setitem__(self, key: str, value: Any) -> None:
        """Set a field, or attach a value of the reader's own (kept in ``extra``)."""
        if key == "event":
            raise KeyError("the kind of an event cannot change")
        if key in {f.name for f in fields(self)} and key != "extra":
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_json()!r})"


@dataclass(kw_only=True, eq=False)
class Started(Event):
    """The run is set up (data read, model built, resumed if asked): what it will do."""

    kind: ClassVar[str] = "started"
    total: int = 0
    resumed_from: int | None = None
    device: str = ""
    precision: str = ""
    precision_note: str = ""
    world_size: int = 1
    n_train_images: int = 0
    n_val_images: int = 0
    #: raw images without masks (``--unlabeled``; a stack counts its slices)
    n_unlabeled_images: int = 0
    tiles_per_epoch: int = 0
    steps_per_epoch: int = 0
    out: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    intensity: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True, eq=False)
class Progress(Event):
    """A step finished: its losses (any names the family reports) and the pace."""

    kind: ClassVar[str] = "progress"
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    tiles_per_s: float = 0.0
    seconds_per_step: float = 0.0
    eta_s: float = 0.0
    elapsed_s: float = 0.0
    epoch: float = 0.0
    steps_this_run: int = 0


@dataclass(kw_only=True, eq=False)
class Sample(Event):
    """A preview mosaic (mask | generated | real) was written."""

    kind: ClassVar[str] = "sample"
    path: str = ""
    layout: str = "mask | generated | real"
    split: str = ""


@dataclass(kw_only=True, eq=False)
class Validation(Event):
    """Scores of the preview tiles against the real images."""

    kind: ClassVar[str] = "validation"
    split: str = ""
    l1: float = 0.0
    ssim: float = 0.0
    mean_generated: float = 0.0
    mean_real: float = 0.0


@dataclass(kw_only=True, eq=False)
class Checkpoint(Event):
    """A model file (``path``, for synthesis) and a training state were written."""

    kind: ClassVar[str] = "checkpoint"
    path: str = ""
    state: str = ""


@dataclass(kw_only=True, eq=False)
class Finished(Event):
    """The run ended normally (``reason``: completed or stopped) at its last checkpoint."""

    kind: ClassVar[str] = "finished"
    reason: str = ""
    checkpoint: str | None = None
    total: int = 0


@dataclass(kw_only=True, eq=False)
class Failed(Event):
    """The run failed: what happened, what to do, and the last good checkpoint if any."""

    kind: ClassVar[str] = "failed"
    omit_if_none: ClassVar[tuple[str, ...]] = ("losses", "traceback")
    reason: str = ""
    message: str = ""
    checkpoint: str | None = None
    losses: dict[str, float] | None = None
    traceback: str | None = None


@dataclass(kw_only=True, eq=False)
class Other(Event):
    """An event of a kind this version does not know (kept whole, in ``extra``)."""

    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"event": self.name, "step": self.step, "time": self.time, **self.extra}


KINDS: dict[str, type[Event]] = {
    cls.kind: cls for cls in (Started, Progress, Sample, Validation, Checkpoint, Finished, Failed)
}


def from_json(data: str | bytes | Mapping[str, Any]) -> Event:
    """The event of a JSON line or object; unknown keys go to ``extra``, unknown kinds to
    :class:`Other`. Raises ValueError for text that is not a JSON object with an event kind."""
    obj = json.loads(data) if isinstance(data, (str, bytes)) else dict(data)
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        raise ValueError(f"not a training event (a JSON object with an 'event' kind): {obj!r}")
    kind = obj.pop("event")
    cls = KINDS.get(kind)
    if cls is None:
        return Other(name=kind, step=obj.pop("step", 0), time=obj.pop("time", 0.0), extra=obj)
    names = {f.name for f in fields(cls)} - {"extra"}
    known = {k: v for k, v in obj.items() if k in names}
    extra = {k: v for k, v in obj.items() if k not in names}
    if "time" not in known:
        known["time"] = 0.0
    return cls(**known, extra=extra)


__all__ = [
    "KINDS",
    "Checkpoint",
    "Event",
    "Failed",
    "Finished",
    "Other",
    "Progress",
    "Sample",
    "Started",
    "Validation",
    "from_json",
]
