"""Constants, the export error, wording of option names, and small helpers shared by curation."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..io import fsync_dir

EXPORT_FORMAT = "napari-synthgen-export"
FORMAT_VERSION = 1
MARKER_NAME = "synthgen_export.json"
MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".lock"
ID_PREFIX = "syn_"
IMAGE_FORMATS = (".tif", ".tiff", ".png")

_ID_RE = re.compile(r"syn_(\d+)")
_PROBE_PREFIX = ".synthgen-probe-"
#: Files a desktop or an interrupted session leaves behind; they do not make a folder foreign.
_IGNORABLE = {".DS_Store", "Thumbs.db", "desktop.ini", LOCK_NAME}
#: Arrays up to this many elements are stored in provenance as lists, larger ones as a digest.
_MAX_INLINE_ARRAY = 1024
_NNUNET_ENDINGS = (".png", ".tif")
_SPLIT_SEED = 12345  # the seed nnU-Net itself uses for its default splits
SPLITS_NAME = "splits_final.json"



class ExportError(RuntimeError):
    """A refused export operation; the message says what was wrong and what to do."""


# --------------------------------------------------------------------------- small helpers


def _utc_now() -> str:
    """The current UTC time in ISO 8601, millisecond precision."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _stamp() -> str:
    """A compact UTC timestamp for file names."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _format_id(number: int) -> str:
    """The sample id for a sequence number (``syn_000001``)."""
    return f"{ID_PREFIX}{number:06d}"


def _id_number(name: str) -> int | None:
    """The sequence number of a sample id or file stem, or None if it is not one."""
    m = _ID_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _remove_quietly(paths: Iterable[Path]) -> None:
    """Remove files written for a sample that failed; a leftover becomes an orphan."""
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()
    for parent in {p.parent for p in paths}:
        fsync_dir(parent)


def _short_list(items: Iterable[Any], limit: int = 5) -> str:
    """``a, b, c ... and 4 more`` for messages."""
    items = [str(i) for i in items]
    text = ", ".join(items[:limit])
    return text + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


# ------------------------------------------------------------------ naming options in messages


class Worded(str):
    """A message that names options: as a str it reads in Python form (``n_folds=2``);
    :func:`reword` gives it in another caller's form (``--folds 2``).

    ``template`` holds ``{0}``, ``{1}`` ... for ``options``, each a (Python name, value) pair;
    the value ``...`` names the option alone.
    """

    template: str
    options: tuple[tuple[str, Any], ...]

    def __new__(cls, template: str, *options: tuple[str, Any]) -> Worded:
        obj = super().__new__(cls, _render(template, options, None))
        obj.template, obj.options = template, options
        return obj


def _option_text(name: str, value: Any, flags: Mapping[str, str] | None) -> str:
    flag = flags.get(name) if flags else None
    if flag is None:
        return name if value is ... else f"{name}={value}"
    return flag if value is ... or value is True else f"{flag} {value}"


def _render(template: str, options: tuple[tuple[str, Any], ...],
            flags: Mapping[str, str] | None) -> str:
    return template.format(*(_option_text(n, v, flags) for n, v in options))


def reword(message: str | BaseException, flags: Mapping[str, str]) -> str:
    """``message`` (a warning or an error) with the options it names as ``flags`` spell them.

    ``flags`` maps Python keyword names to a CLI's flags (``{"n_folds": "--folds"}``); options
    without a flag, and plain messages, stay as they are.
    """
    text = message.args[0] if isinstance(message, BaseException) and message.args else message
    if isinstance(text, Worded):
        return _render(text.template, text.options, flags)
    return str(message)
