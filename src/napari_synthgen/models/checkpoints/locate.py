"""Finding a model file (a path, a folder, a bundled name) and reading it without running code.

What every family's loading shares: the file a source means, its raw tensors and header, and
the family its header names (foreign files are pix2pix). Building the network is the
family's job; :func:`napari_synthgen.registry.load_model` picks the family.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .common import REFERENCE_NAME, CheckpointError
from .ours import our_header
from .reading import _read

#: the family of files without our header (reference checkpoints)
FOREIGN_FAMILY = "pix2pix"


@dataclass
class ModelFile:
    """A model file read safely: its tensors, our header (None for foreign files) and notes."""

    file: Path
    family: str
    doc: dict[str, Any] | None
    tensors: dict[str, torch.Tensor]
    kind: str
    notes: list[str]


def read_model_file(source: str | os.PathLike) -> ModelFile:
    """Resolve ``source`` to a file and read it: tensors, header document, family name.

    Errors are :class:`CheckpointError` naming the file.
    """
    file, notes = resolve_model_file(source)
    raw = _read(file)
    try:
        found = our_header(raw.header)
    except CheckpointError as exc:
        raise CheckpointError(f"{file}: {exc}") from None
    family, doc = found if found is not None else (FOREIGN_FAMILY, None)
    return ModelFile(file, family, doc, raw.tensors, raw.kind, notes + raw.notes)


def _newest(files: list[Path]) -> Path:
    return max(files, key=lambda f: (f.stat().st_mtime_ns, f.name))


def _pick_in_folder(folder: Path) -> tuple[Path, list[str]]:
    """The model file of a folder: latest_net_G.pth, else the newest .safetensors."""
    reference = folder / REFERENCE_NAME
    if reference.is_file():
        return reference, [f"took {REFERENCE_NAME} from folder {folder.name}"]
    visible = sorted(f for f in folder.iterdir() if not f.name.startswith("."))
    files = [f for f in visible if f.is_file()]
    for group in (
        [f for f in files if f.suffix.lower() == ".safetensors"],
        [f for f in files if f.name.endswith("_net_G.pth")],
    ):
        if group:
            chosen = _newest(group)
            others = ", ".join(f.name for f in group if f != chosen)
            note = f"took {chosen.name} from folder {folder.name}"
            if others:
                note += f", the newest of {len(group)} model files (others: {others})"
            return chosen, [note]
    held = ", ".join(f.name + ("/" if f.is_dir() else "") for f in visible[:20]) or "nothing"
    raise CheckpointError(
        f"{folder}: no model found. Expected {REFERENCE_NAME} (a pix2pix checkpoint folder) "
        f"or a .safetensors model saved by napari-synthgen; the folder holds: {held}."
    )


def resolve_model_file(source: str | os.PathLike) -> tuple[Path, list[str]]:
    """The model file for a path, a folder or a bundled model name such as "demo"."""
    from ...sample_data import BUNDLED_MODELS, resolve_model_source

    try:
        path = resolve_model_source(source)
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    bundled = path != Path(source).expanduser()
    notes = [f"bundled model {os.fspath(source)!r}: {path.name}"] if bundled else []
    if path.is_dir():
        found, more = _pick_in_folder(path)
        return found, notes + more
    if not path.is_file():
        names = ", ".join(repr(n) for n in BUNDLED_MODELS)
        raise CheckpointError(
            f"{path}: no such file or folder. Give a model file or folder, or the name of a "
            f"bundled model ({names})."
        )
    return path, notes


def model_family(source: str | os.PathLike) -> str | None:
    """The family a model file names, read from its header alone (no weights): FOREIGN_FAMILY
    for foreign files, None when the source cannot be read (loading then says why)."""
    import json

    from .common import METADATA_KEY

    try:
        file, _ = resolve_model_file(source)
        with open(file, "rb") as fh:
            head = fh.read(9)
            size = int.from_bytes(head[:8], "little")
            # safetensors: an 8-byte header length, then a JSON object. Anything else (a torch
            # zip or pickle) is a reference pix2pix file. Sniffing b"\x80" for a pickle would
            # misread a header whose length happens to end in 0x80.
            if len(head) < 9 or head[8:9] != b"{" or not 0 < size <= 100_000_000:
                return FOREIGN_FAMILY
            header = json.loads(head[8:] + fh.read(size - 1))
        text = header.get("__metadata__", {}).get(METADATA_KEY)
        if text is None:
            return FOREIGN_FAMILY
        family = json.loads(text).get("family")
        return family if isinstance(family, str) else None
    except (CheckpointError, OSError, ValueError, AttributeError):
        return None
