"""Few-step students of a diffusion model: the distilled models live preview can draw with.

A model made by progressive distillation (``napari-synthgen train --distill-from``) records in
its metadata (``distilled``, written by the diffusion family's ``DistillTrainer``) the SHA-256
of the model it was distilled from, and that model's own ``distilled`` record if it was itself
a student; so a chain demo-diffusion -> 2 steps -> 1 step names every ancestor. A student of
a loaded model is a diffusion model file, among the bundled models and the files beside the
loaded one, whose chain holds the loaded model's SHA-256. Only headers are read (no weights),
so looking costs milliseconds. The Synthesize widget offers the students as its "Preview
model": strokes are drawn by the student with its own few steps, Synthesize by the model.

No Qt, napari or family imports here (the registry is the only way into a family).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import METADATA_KEY

#: how many files beside a model are looked at, at most (a folder of many checkpoints)
MAX_FILES = 200


@dataclass(frozen=True)
class Student:
    """A few-step model distilled (directly or in several runs) from another model.

    ``source`` is what loads it (a bundled model's name or a path), ``name`` what the user
    sees, ``steps`` and ``sampler`` what it was distilled for (its synthesizer's defaults).
    """

    source: str
    name: str
    path: Path
    steps: int
    sampler: str

    def label(self) -> str:
        """'demo-diffusion-fast (1 step)'."""
        return f"{self.name} ({self.steps} step{'s' if self.steps != 1 else ''})"


def header_document(file: str | os.PathLike) -> dict[str, Any] | None:
    """Our header of a ``.safetensors`` model file (family, settings, metadata) read without
    its weights; None for anything else (a foreign or unreadable file)."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            size = int.from_bytes(head, "little")
            if len(head) < 8 or not 1 < size <= 100_000_000:
                return None
            header = json.loads(fh.read(size))
        text = header.get("__metadata__", {}).get(METADATA_KEY)
        doc = json.loads(text) if isinstance(text, str) else None
    except (OSError, ValueError, AttributeError):
        return None
    return doc if isinstance(doc, dict) else None


def ancestors(doc: dict[str, Any]) -> list[str]:
    """SHA-256 of every model a distilled model's header says it came from, nearest first."""
    found: list[str] = []
    rec = doc.get("distilled")
    while isinstance(rec, dict):
        teacher = rec.get("teacher")
        if not isinstance(teacher, dict):
            break
        if isinstance(teacher.get("sha256"), str):
            found.append(teacher["sha256"])
        rec = teacher.get("distilled")
    return found


def _candidates(model_path: Path | None) -> list[tuple[str, str, Path]]:
    """(source, name, file) of the bundled models, then the model files beside ``model_path``."""
    from ...sample_data import BUNDLED_MODELS, bundled_model_path

    out = [(name, name, bundled_model_path(name)) for name in BUNDLED_MODELS]
    if model_path is not None and model_path.parent.is_dir():
        beside = sorted(f for f in model_path.parent.glob("*.safetensors") if f.is_file())
        out += [(str(f), f.name, f) for f in beside[:MAX_FILES]]
    return out


def find_students(info: Any) -> list[Student]:
    """The few-step students of the loaded model ``info`` (a ModelInfo: its ``path`` and
    ``sha256``), fewest steps first, bundled ones before files beside the model. Only
    finished distillations count (a run's intermediate checkpoints are left out)."""
    sha = getattr(info, "sha256", None)
    if not sha or getattr(info, "family", "diffusion") != "diffusion":
        return []
    here = Path(info.path).resolve() if getattr(info, "path", None) else None
    seen: set[Path] = set()
    found: list[tuple[int, int, Student]] = []
    for order, (source, name, file) in enumerate(_candidates(here)):
        real = file.resolve()
        if real == here or real in seen or not file.is_file():
            continue
        seen.add(real)
        doc = header_document(file)
        if doc is None or doc.get("family") != "diffusion" or sha not in ancestors(doc):
            continue
        rec = doc["distilled"]
        steps, sampler = rec.get("steps"), rec.get("sampler")
        if not rec.get("complete", True) or not isinstance(steps, int) or steps < 1:
            continue
        found.append((steps, order, Student(source, name, file, steps, str(sampler))))
    return [s for *_, s in sorted(found, key=lambda x: x[:2])]


def hand_over_kept(source: Any, target: Any) -> int:
    """Give ``target`` (a synthesizer drawing live preview) the results ``source`` keeps for
    live preview (:meth:`DiffusionSynthesizer.adopt_kept`); a synthesizer of another family
    takes nothing. Returns how many slices were handed over."""
    adopt = getattr(target, "adopt_kept", None)
    return int(adopt(source)) if callable(adopt) else 0
