"""Results kept on disk as they are computed, for ``evaluate`` and ``report``.

An output folder holds one command's results and the settings they were made with
(``<kind>_settings.json``). A rerun with the same settings reuses what is there (a killed run
resumes); a rerun with other settings is refused before anything is computed, so earlier
results are never silently replaced. The folder is checked for writing before any work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_path


class OutputNotWritableError(OSError):
    """The output folder cannot be made or written to; nothing was computed."""


class SettingsMismatchError(ValueError):
    """The output folder holds results made with other settings; they are kept."""


def check_writable(folder: str | os.PathLike) -> Path:
    """Raise :class:`OutputNotWritableError` unless files can be written into ``folder``.

    Leaves nothing behind: a probe file is made and removed in ``folder`` or, when it does not
    exist yet, in its nearest existing parent (which must be a folder).
    """
    out = Path(folder)
    probe_dir = out
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputNotWritableError(
            f"cannot write into {out}: {probe_dir} is a file, not a folder. Choose another "
            "output folder.")
    probe = probe_dir / f".napari-synthgen-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise OutputNotWritableError(
            f"cannot write into {out} ({exc.strerror or exc}); nothing was computed. Choose "
            "an output folder you can write to.") from exc
    return out


def fingerprint(items: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """A short SHA-256 of named (image, mask) pairs: their names and pixel data."""
    from .io import sha256_array

    h = hashlib.sha256()
    for name, image, mask in items:
        h.update(f"{name}\0{sha256_array(image)}\0{sha256_array(mask)}\n".encode())
    return h.hexdigest()[:16]


def save_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (NaN allowed, as the figures hold it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True), encoding="utf-8")
    return path


def load_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (a run to redo)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def settings_diff(recorded: dict[str, Any], settings: dict[str, Any],
                  skip: Iterable[str] = ()) -> list[str]:
    """The settings that differ between ``recorded`` (read from a settings file) and
    ``settings`` (compared as the file would hold them: JSON turns tuples into lists), each as
    "key <there> there, <now> now"; keys in ``skip`` are not compared."""
    now = json.loads(json.dumps(settings))
    keys = sorted((set(recorded) | set(now)) - set(skip))
    return [f"{key} {recorded.get(key)!r} there, {now.get(key)!r} now" for key in keys
            if recorded.get(key) != now.get(key)]


def open_results(out: Path, kind: str, settings: dict[str, Any],
                 earlier_outputs: Iterable[str] = ()) -> bool:
    """Record ``settings`` in ``out``, or check them against the recorded ones.

    Returns True when ``out`` already held results of these settings (to reuse). Raises
    :class:`SettingsMismatchError` naming the differences when they differ, or when ``out``
    holds ``earlier_outputs`` of a run that recorded no settings.
    """
    path = out / f"{kind}_settings.json"
    recorded = load_json(path) if path.is_file() else None
    if recorded is None:
        old = [name for name in earlier_outputs if (out / name).exists()]
        if old:
            raise SettingsMismatchError(
                f"{out} already holds {kind} results ({', '.join(old)}) with no record of "
                "their settings; they are kept. Use another output folder (--out), or delete "
                "those files to replace them.")
        out.mkdir(parents=True, exist_ok=True)
        save_json(path, settings)
        return False
    diff = settings_diff(recorded, settings)
    if diff:
        raise SettingsMismatchError(
            f"{out} holds {kind} results made with other settings ({'; '.join(diff)}); they "
            "are kept. Use another output folder (--out) for this run, or delete "
            f"{out} to start over.")
    return True
