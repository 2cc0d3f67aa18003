"""Curating synthetic samples into a crash-safe, provenance-tracked export folder.

An export folder is training data for segmentation, so nothing in it may be half-written or
unaccounted for::

    <folder>/synthgen_export.json   marker (format, format_version, created, plugin_version)
    <folder>/images/<id>.tif        accepted images (2-D, dtype as given)
    <folder>/masks/<id>.tif         their masks (uint8 classes 0/1/2)
    <folder>/manifest.jsonl         one JSON record per decision, append-only
    <folder>/trash/images|masks/    files of undone accepts (moved, never deleted)
    <folder>/.lock                  advisory lock: one writing session at a time

The manifest is the truth. A decision counts once its line is on disk (flushed and fsynced);
files are written before the line, so after a crash every reported id has its files, and files
without a line are *orphans*: kept, listed, never exported, their ids never reused.

Records (one JSON object per line):

- accept: ``id``, ``decision``, ``time`` (UTC ISO 8601), ``files`` and ``sha256`` (of the
  written files), ``shape``, ``dtype``, ``quality``, ``synthetic``, ``plugin_version``,
  ``provenance``.
- reject: the same without ``files``; ``sha256``/``shape``/``dtype``/``quality`` only when the
  image/mask were given, and then ``sha256`` holds :func:`io.sha256_array` of the arrays
  (rejected pixels are never stored).
- undo: ``decision`` "undo", ``target`` (the id undone), ``target_decision``, ``time``,
  ``plugin_version`` and, for an accept, ``files`` (where in ``trash/`` they went). Undo records
  have no ``id`` of their own: ids name samples, and an undo is not a sample.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import math
import os
import random
import re
import threading
import warnings as _warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .io import (
    DiskFullError,
    atomic_path,
    find_pairs,
    fsync_dir,
    read_image,
    read_mask,
    sha256_array,
    sha256_file,
    write_array,
    write_image,
    write_mask,
)
from .masks import CLASS_NAMES, MaskError, validate_mask
from .quality import basic_figures

try:  # POSIX only; elsewhere sessions are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EXPORT_FORMAT",
    "FORMAT_VERSION",
    "DiskFullError",
    "ExportError",
    "ExportSession",
    "export_nnunet",
]

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


# ----------------------------------------------------------------------- JSON provenance


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (NumPy values, Paths, sets, dates converted), or ExportError.

    Non-finite floats become the strings "nan"/"inf"/"-inf" so that the manifest stays strict
    JSON; arrays larger than ``_MAX_INLINE_ARRAY`` elements are stored as shape/dtype/SHA-256.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, np.ndarray):
        return _jsonable_array(value, where)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if isinstance(value, os.PathLike):
        return str(Path(value))
    if isinstance(value, Mapping):
        return {_json_key(k, where): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_jsonable(v, f"{where} item") for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise ExportError(
        f"provenance {where}: a {type(value).__name__} cannot be stored in the manifest; pass "
        "a str, number, bool, None, list, dict, Path or NumPy value (e.g. str(obj))."
    )


def _jsonable_array(arr: np.ndarray, where: str) -> Any:
    """Small arrays as nested lists, large ones as a digest (the manifest is not a data store)."""
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind in "USM" and arr.size <= _MAX_INLINE_ARRAY:
            return [_jsonable(v, where) for v in arr.astype(str).ravel().tolist()]
        raise ExportError(
            f"provenance {where}: arrays of dtype {arr.dtype} cannot be stored in the manifest; "
            "pass numbers, strings or a path to the data."
        )
    if arr.size <= _MAX_INLINE_ARRAY:
        return _jsonable(arr.tolist(), where)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": sha256_array(arr)}


def _json_key(key: Any, where: str) -> str:
    """A dict key as a JSON object key."""
    if isinstance(key, str):
        return key
    if isinstance(key, (int, float, bool, np.integer, np.floating, np.bool_)):
        return str(_jsonable(key, where))
    raise ExportError(
        f"provenance {where}: dict key {key!r} ({type(key).__name__}) is not a string or number."
    )


def _dumps(record: Mapping[str, Any]) -> bytes:
    """One manifest line: strict JSON, ASCII, newline-terminated."""
    return (json.dumps(record, allow_nan=False, separators=(", ", ": ")) + "\n").encode("ascii")


# ---------------------------------------------------------------------- sample checking


def _check_image(image: Any) -> np.ndarray:
    """The image as an array if it is 2-D, numeric and finite, else ExportError."""
    img = np.asarray(image)
    if img.ndim != 2 or img.size == 0:
        raise ExportError(
            f"the image has shape {img.shape}; a sample image is a non-empty 2-D (H, W) array."
        )
    if img.dtype.kind not in "uif":
        raise ExportError(
            f"the image has dtype {img.dtype}; a sample image holds integer or float grey levels."
        )
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        raise ExportError("the image holds NaN or infinite values; fix the image, then retry.")
    return img


def _check_mask(mask: Any) -> np.ndarray:
    """The mask as uint8 classes, or ExportError carrying the :class:`MaskError` message."""
    try:
        return validate_mask(mask)
    except MaskError as exc:
        raise ExportError(f"invalid mask: {exc}") from exc


def _check_sample(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate an image/mask pair before anything is written."""
    m = _check_mask(mask)
    img = _check_image(image)
    if img.shape != m.shape:
        raise ExportError(
            f"image shape {img.shape} and mask shape {m.shape} differ; a sample is a 2-D image "
            "and its mask of the same height and width. Nothing was written."
        )
    return img, m


# ------------------------------------------------------------------------------ ledger


@dataclass
class _Ledger:
    """The state a manifest describes: decisions in order, which are undone, the highest id."""

    records: list[dict[str, Any]] = field(default_factory=list)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    undone: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_number: int = 0

    def apply(self, record: dict[str, Any]) -> str | None:
        """Add one parsed record; returns a problem description if it was not usable."""
        self.records.append(record)
        for key in ("id", "target"):
            n = _id_number(str(record.get(key, "")))
            if n is not None:
                self.max_number = max(self.max_number, n)
        decision = record.get("decision")
        if decision in ("accept", "reject"):
            return self._apply_decision(record)
        if decision == "undo":
            return self._apply_undo(record)
        return f"unknown decision {decision!r}"

    def _apply_decision(self, record: dict[str, Any]) -> str | None:
        sid = record.get("id")
        if not isinstance(sid, str) or _id_number(sid) is None:
            return f"{record.get('decision')} record without a valid id"
        if sid in self.decisions:
            return f"duplicate id {sid} (the first record is kept)"
        if record["decision"] == "accept" and not _has_files(record):
            return f"accept record {sid} without files"
        self.decisions[sid] = record
        return None

    def _apply_undo(self, record: dict[str, Any]) -> str | None:
        target = record.get("target")
        if target not in self.decisions:
            return f"undo of unknown id {target!r}"
        if target in self.undone:
            return f"second undo of {target} (ignored)"
        self.undone[target] = record
        return None

    def ids(self, decision: str) -> list[str]:
        """Ids whose decision is ``decision`` and that are not undone, oldest first."""
        return [
            sid for sid, r in self.decisions.items()
            if r["decision"] == decision and sid not in self.undone
        ]

    def newest_open(self) -> str | None:
        """The newest decision not yet undone (what ``undo`` acts on)."""
        for sid in reversed(self.decisions):
            if sid not in self.undone:
                return sid
        return None


def _has_files(record: Mapping[str, Any]) -> bool:
    files = record.get("files")
    return isinstance(files, dict) and all(isinstance(files.get(k), str) for k in ("image", "mask"))


def _split_manifest(data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """The byte length of the sound part of a manifest and its lines (with line numbers).

    The sound part ends after the last newline-terminated line that parses as a JSON object;
    what follows it (a partial line, or garbage from a torn write) is the damaged tail.
    """
    lines = data.splitlines(keepends=True)
    keep = len(lines)
    while keep and not _line_ok(lines[keep - 1]):
        keep -= 1
    sound = sum(len(line) for line in lines[:keep])
    return sound, list(enumerate(lines[:keep], start=1))


def _line_ok(line: bytes) -> bool:
    """True for a complete (newline-terminated) line holding a JSON object, or a blank line."""
    if not line.endswith(b"\n"):
        return False
    if not line.strip():
        return True
    return _parse_line(line) is not None


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _read_ledger(manifest: Path) -> tuple[_Ledger, list[str], int]:
    """Parse a manifest without changing it: ledger, problems, byte length of its sound part."""
    data = manifest.read_bytes() if manifest.exists() else b""
    sound, lines = _split_manifest(data)
    ledger, problems = _Ledger(), []
    for lineno, line in lines:
        if not line.strip():
            continue
        record = _parse_line(line)
        problem = "not a JSON object" if record is None else ledger.apply(record)
        if problem:
            problems.append(f"{manifest.name} line {lineno}: {problem}; the line was kept.")
    return ledger, problems, sound


# ----------------------------------------------------------------------------- session


class ExportSession:
    """One curator writing into an export folder: accept, reject and undo, crash-safely.

    Opening an empty or missing folder creates an export; opening an export resumes it (ids
    continue, undo reaches back into earlier sessions); anything else is refused. Only one
    session may have a folder open at a time. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, folder: str | os.PathLike, *, image_format: str = ".tif") -> None:
        fmt = image_format.lower()
        if fmt not in IMAGE_FORMATS:
            raise ExportError(
                f"image_format {image_format!r} is not supported; use one of "
                f"{', '.join(IMAGE_FORMATS)}."
            )
        self._folder = Path(folder).expanduser().absolute()
        self._ext = fmt
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        self._closed = False
        self._warnings: list[str] = []
        self._orphans: list[Path] = []
        self._ledger = _Ledger()
        self._next_number = 1
        self._open_folder()
        try:
            self._lock()
            self._ensure_layout()
            self._resume()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    @property
    def _manifest(self) -> Path:
        return self._folder / MANIFEST_NAME

    def _open_folder(self) -> None:
        """Create a missing folder; refuse files, foreign folders and unwritable folders."""
        f = self._folder
        if f.exists() and not f.is_dir():
            raise ExportError(f"{f} is a file, not a folder; choose a folder for the export.")
        if not f.exists():
            try:
                f.mkdir(parents=True)
            except OSError as exc:
                raise ExportError(
                    f"cannot create the export folder {f} ({exc.strerror or exc}); choose a "
                    "folder you can write to."
                ) from exc
        self._refuse_foreign()
        self._probe_writable()

    def _refuse_foreign(self) -> None:
        """Refuse a non-empty folder without a marker: it belongs to someone else."""
        if (self._folder / MARKER_NAME).exists():
            return
        found = sorted(
            p.name + ("/" if p.is_dir() else "")
            for p in self._folder.iterdir()
            if p.name not in _IGNORABLE and not p.name.startswith(_PROBE_PREFIX)
        )
        if found:
            hint = (
                f" (it looks like an export whose {MARKER_NAME} was deleted; restore it to "
                "resume)" if MANIFEST_NAME in found else ""
            )
            raise ExportError(
                f"{self._folder} holds files that are not a napari-synthgen export: "
                f"{_short_list(found)}{hint}; choose an empty folder or an existing export."
            )

    def _probe_writable(self) -> None:
        """Create and remove a probe file: the only reliable test of write permission."""
        probe = self._folder / f"{_PROBE_PREFIX}{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, b"probe")
            finally:
                os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            with contextlib.suppress(OSError):
                probe.unlink()
            if _is_disk_full(exc):
                raise DiskFullError(
                    exc.errno, f"the disk holding {self._folder} is full; free some space or "
                    "choose another folder."
                ) from exc
            raise ExportError(
                f"{self._folder} is not writable ({exc.strerror or exc}); choose a folder you "
                "can write to, or get write permission for it."
            ) from exc

    def _lock(self) -> None:
        """Take the folder's advisory lock, or say which process holds it."""
        if fcntl is None:  # pragma: no cover - no advisory locks on this platform
            return
        fd = os.open(self._folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ExportError(
                f"{self._folder} is open in another session (pid {holder}); close it there "
                "first, or choose another folder."
            ) from None
        except OSError as exc:  # e.g. a network filesystem without locks
            os.close(fd)
            self._warnings.append(
                f"could not lock {self._folder} ({exc.strerror or exc}); make sure no other "
                "session writes to it at the same time."
            )
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _ensure_layout(self) -> None:
        """Write the marker first (so a half-created export is still recognised), then the rest."""
        marker = self._folder / MARKER_NAME
        if marker.exists():
            self._check_marker(marker)
        else:
            info = {
                "format": EXPORT_FORMAT,
                "format_version": FORMAT_VERSION,
                "created": _utc_now(),
                "plugin_version": __version__,
            }
            with atomic_path(marker, overwrite=False) as tmp:
                tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        for sub in ("images", "masks", "trash"):
            (self._folder / sub).mkdir(exist_ok=True)
        if not self._manifest.exists():
            os.close(os.open(self._manifest, os.O_WRONLY | os.O_CREAT, 0o644))
        fsync_dir(self._folder)

    def _check_marker(self, marker: Path) -> None:
        """Refuse a marker that is unreadable, of another format or from a newer plugin."""
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportError(
                f"{marker} cannot be read ({exc}); restore it from a backup or choose another "
                "folder."
            ) from exc
        if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
            raise ExportError(f"{marker} is not a napari-synthgen export marker.")
        version = info.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ExportError(
                f"{self._folder} was written by a newer napari-synthgen (format_version "
                f"{version}); update the plugin to resume it."
            )

    def _resume(self) -> None:
        """Repair the manifest tail, load it, make files agree with it, find the next id."""
        self._repair_manifest()
        ledger, problems, _ = _read_ledger(self._manifest)
        self._ledger = ledger
        self._warnings.extend(problems)
        self._remove_temp_files()
        self._reconcile_files()
        self._orphans = self._find_orphans()
        if self._orphans:
            self._warnings.append(
                f"{len(self._orphans)} file(s) in images/ or masks/ have no manifest record "
                f"(written just before a crash?); they are kept but not exported: "
                f"{_short_list(p.relative_to(self._folder) for p in self._orphans)}."
            )
        self._next_number = self._highest_number() + 1

    def _repair_manifest(self) -> None:
        """Cut a partial or unparsable final line off the manifest, keeping it in a file."""
        data = self._manifest.read_bytes()
        sound, _ = _split_manifest(data)
        if sound == len(data):
            return
        damaged = self._folder / f"{MANIFEST_NAME}.damaged-{_stamp()}"
        with atomic_path(damaged, overwrite=False) as tmp:
            tmp.write_bytes(data[sound:])
        fd = os.open(self._manifest, os.O_WRONLY)
        try:
            os.ftruncate(fd, sound)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._warnings.append(
            f"the end of {MANIFEST_NAME} was damaged ({len(data) - sound} bytes, probably an "
            f"interrupted write); it was cut off and kept in {damaged.name}."
        )

    def _sample_dirs(self) -> list[Path]:
        f = self._folder
        return [f / "images", f / "masks", f / "trash" / "images", f / "trash" / "masks"]

    def _remove_temp_files(self) -> None:
        """Delete temporary files of interrupted atomic writes (never complete, never named)."""
        removed = 0
        for d in [self._folder, *self._sample_dirs()]:
            if not d.is_dir():
                continue
            for p in d.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                    with contextlib.suppress(OSError):
                        p.unlink()
                        removed += 1
        if removed:
            self._warnings.append(
                f"removed {removed} unfinished temporary file(s) of an interrupted write."
            )

    def _reconcile_files(self) -> None:
        """Move files so that accepted samples are in images/masks and undone ones in trash."""
        for sid, record in self._ledger.decisions.items():
            if record["decision"] != "accept":
                continue
            undone = sid in self._ledger.undone
            for kind in ("image", "mask"):
                live = self._folder / record["files"][kind]
                trashed = self._trash_path(record["files"][kind])
                src, dst = (live, trashed) if undone else (trashed, live)
                if dst.exists():
                    continue
                if src.exists():
                    self._move(src, dst)
                    verb = "finished moving" if undone else "restored"
                    self._warnings.append(
                        f"{verb} {src.relative_to(self._folder)} -> "
                        f"{dst.relative_to(self._folder)} (an undo was interrupted)."
                    )
                elif not undone:
                    self._warnings.append(
                        f"accepted sample {sid}: {record['files'][kind]} is missing."
                    )

    def _find_orphans(self) -> list[Path]:
        """Files in images/ and masks/ that no current accept record names."""
        named = {
            (self._folder / r["files"][k]).resolve()
            for sid in self._ledger.ids("accept")
            for r in [self._ledger.decisions[sid]]
            for k in ("image", "mask")
        }
        return sorted(
            p for d in self._sample_dirs()[:2] for p in d.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.resolve() not in named
        )

    def _highest_number(self) -> int:
        """The highest id number in the manifest, sample folders, trash and damaged tails."""
        numbers = [self._ledger.max_number]
        for d in self._sample_dirs():
            if d.is_dir():
                numbers += [_id_number(p.stem) or 0 for p in d.iterdir()]
        for p in self._folder.glob(f"{MANIFEST_NAME}.damaged-*"):
            text = p.read_bytes().decode("ascii", "replace")
            numbers += [int(n) for n in _ID_RE.findall(text)]
        return max(numbers)

    # ------------------------------------------------------------------ views

    @property
    def folder(self) -> Path:
        """The export folder (absolute)."""
        return self._folder

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every parsed manifest record, oldest first (a copy)."""
        with self._mutex:
            return copy.deepcopy(self._ledger.records)

    @property
    def accepted(self) -> list[str]:
        """Ids currently accepted (not undone), oldest first."""
        with self._mutex:
            return self._ledger.ids("accept")

    @property
    def rejected(self) -> list[str]:
        """Ids currently rejected (not undone), oldest first."""
        with self._mutex:
            return self._ledger.ids("reject")

    @property
    def n_accepted(self) -> int:
        """How many samples are currently accepted."""
        return len(self.accepted)

    @property
    def n_rejected(self) -> int:
        """How many samples are currently rejected."""
        return len(self.rejected)

    def counts(self) -> dict[str, int]:
        """``{"accepted": n, "rejected": n}`` for a status line."""
        return {"accepted": self.n_accepted, "rejected": self.n_rejected}

    @property
    def warnings(self) -> list[str]:
        """Things found on opening (damaged manifest, missing files, orphans ...)."""
        return list(self._warnings)

    @property
    def orphans(self) -> list[Path]:
        """Files in images/ or masks/ without a manifest record (kept, never exported)."""
        return list(self._orphans)

    @property
    def can_undo(self) -> bool:
        """True if there is a decision that :meth:`undo` would undo (for enabling a button)."""
        with self._mutex:
            return self._ledger.newest_open() is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def record(self, sample_id: str) -> dict[str, Any]:
        """The accept/reject record of ``sample_id`` (a copy); KeyError if there is none."""
        with self._mutex:
            return copy.deepcopy(self._ledger.decisions[sample_id])

    def path(self, sample_id: str, kind: str = "image") -> Path:
        """Where the image or mask of an accepted sample is stored."""
        return self._folder / self.record(sample_id)["files"][kind]

    # ------------------------------------------------------------------ decisions

    def accept(
        self,
        image: Any,
        mask: Any,
        *,
        quality: Mapping[str, Any] | None = None,
        synthetic: bool = True,
        **provenance: Any,
    ) -> dict[str, Any]:
        """Store an image and its mask as training data and record it; returns the record.

        Everything is validated before anything is written; the record is on disk (fsynced)
        when this returns. Keyword arguments other than ``quality``/``synthetic`` are
        provenance (``source_mask``, ``model``, ``seed``, ``params`` ...).
        """
        with self._mutex:
            self._check_open()
            img, m = _check_sample(image, mask)
            self._check_storable(img)
            record = self._new_record("accept", img, m, quality, synthetic, provenance)
            sid = self._reserve_id()
            files = {"image": f"images/{sid}{self._ext}", "mask": f"masks/{sid}{self._ext}"}
            paths = self._write_sample(files, img, m)
            record = {"id": sid, **record, "files": files}
            record["sha256"] = {k: sha256_file(p) for k, p in paths.items()}
            self._append(record, rollback=list(paths.values()))
            return copy.deepcopy(record)

    def reject(
        self,
        image: Any = None,
        mask: Any = None,
        *,
        quality: Mapping[str, Any] | None = None,
        synthetic: bool = True,
        **provenance: Any,
    ) -> dict[str, Any]:
        """Record that a sample was rejected (hashes and figures, no pixels); returns the record."""
        with self._mutex:
            self._check_open()
            img = None if image is None else _check_image(image)
            m = None if mask is None else _check_mask(mask)
            if img is not None and m is not None:
                img, m = _check_sample(img, m)
            record = self._new_record("reject", img, m, quality, synthetic, provenance)
            record = {"id": self._reserve_id(), **record}
            self._append(record)
            return copy.deepcopy(record)

    def undo(self) -> dict[str, Any] | None:
        """Undo the newest decision not yet undone; returns the undo record, or None.

        An undone accept's files move to ``trash/images`` and ``trash/masks`` (same names).
        The record is written first; if the move is interrupted, reopening finishes it.
        """
        with self._mutex:
            self._check_open()
            sid = self._ledger.newest_open()
            if sid is None:
                return None
            target = self._ledger.decisions[sid]
            record: dict[str, Any] = {
                "decision": "undo",
                "target": sid,
                "target_decision": target["decision"],
                "time": _utc_now(),
                "plugin_version": __version__,
            }
            if target["decision"] == "accept":
                record["files"] = {k: f"trash/{v}" for k, v in target["files"].items()}
            self._append(record)
            if target["decision"] == "accept":
                self._trash_files(target)
            return copy.deepcopy(record)

    def _new_record(
        self,
        decision: str,
        image: np.ndarray | None,
        mask: np.ndarray | None,
        quality: Mapping[str, Any] | None,
        synthetic: bool,
        provenance: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The record fields that need no files, all JSON-checked before anything is written."""
        record: dict[str, Any] = {"decision": decision, "time": _utc_now()}
        if image is not None:
            record["shape"] = list(image.shape)
            record["dtype"] = str(image.dtype)
        if decision == "reject" and (image is not None or mask is not None):
            record["sha256"] = {
                k: sha256_array(a) for k, a in (("image", image), ("mask", mask)) if a is not None
            }
        if quality is not None:
            record["quality"] = _jsonable(dict(quality), "quality")
        elif image is not None and mask is not None:
            record["quality"] = _jsonable(basic_figures(image, mask), "quality")
        record["synthetic"] = bool(synthetic)
        record["plugin_version"] = __version__
        record["provenance"] = self._provenance(provenance, mask)
        return record

    @staticmethod
    def _provenance(provenance: Mapping[str, Any], mask: np.ndarray | None) -> dict[str, Any]:
        """Caller's provenance as JSON, with ``source_mask_sha256`` filled in from the mask."""
        prov = {k: _jsonable(v, repr(k)) for k, v in provenance.items()}
        if mask is not None and prov.get("source_mask_sha256") is None:
            prov["source_mask_sha256"] = sha256_array(mask)
        return prov

    # ------------------------------------------------------------------ writing

    def _check_open(self) -> None:
        if self._closed:
            raise ExportError(f"the session on {self._folder} is closed; open a new one.")

    def _check_storable(self, image: np.ndarray) -> None:
        """PNG stores only 8- and 16-bit grey images; say so before anything is written."""
        if self._ext == ".png" and image.dtype not in (np.uint8, np.uint16):
            raise ExportError(
                f"PNG holds 8- or 16-bit images; this image is {image.dtype}. Open the export "
                "with image_format='.tif' or convert the image."
            )

    def _reserve_id(self) -> str:
        """The next unused id; a failed write skips its id rather than risk reusing it."""
        n = self._next_number
        while any(
            any(d.glob(f"{_format_id(n)}.*")) for d in self._sample_dirs() if d.is_dir()
        ):
            n += 1
        self._next_number = n + 1
        return _format_id(n)

    def _write_sample(
        self, files: Mapping[str, str], image: np.ndarray, mask: np.ndarray
    ) -> dict[str, Path]:
        """Write image, then mask, atomically and never over a file; all or nothing."""
        paths = {k: self._folder / v for k, v in files.items()}
        written: list[Path] = []
        try:
            write_image(paths["image"], image, overwrite=False)
            written.append(paths["image"])
            write_mask(paths["mask"], mask, overwrite=False)
            written.append(paths["mask"])
        except BaseException:
            _remove_quietly(written)
            raise
        return paths

    def _append(self, record: dict[str, Any], rollback: list[Path] | None = None) -> None:
        """Append a record to the manifest durably; on failure undo everything of this sample."""
        line = _dumps(record)
        try:
            self._ensure_clean_tail()
            self._append_line(line)
        except BaseException:
            _remove_quietly(rollback or [])
            raise
        self._ledger.apply(record)

    def _ensure_clean_tail(self) -> None:
        """Repair the manifest if an earlier failed append left a partial line."""
        size = self._manifest.stat().st_size
        if size:
            with open(self._manifest, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    self._repair_manifest()

    def _append_line(self, line: bytes) -> None:
        """Append one line, flush and fsync; on error truncate back to the previous length."""
        fd = os.open(self._manifest, os.O_WRONLY | os.O_APPEND)
        try:
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                if _is_disk_full(exc):
                    raise DiskFullError(
                        exc.errno,
                        f"the disk is full while recording a decision in {self._manifest}; "
                        "the sample was not stored and nothing else changed. Free some space, "
                        "then try again.",
                    ) from exc
                raise
        finally:
            os.close(fd)

    def _trash_path(self, rel: str) -> Path:
        return self._folder / "trash" / rel

    def _trash_files(self, record: Mapping[str, Any]) -> None:
        """Move an undone accept's files into trash/ (the undo record is already written)."""
        try:
            for rel in record["files"].values():
                src = self._folder / rel
                if src.exists():
                    self._move(src, self._trash_path(rel))
        except OSError as exc:
            raise ExportError(
                f"the undo of {record['id']} is recorded but its files could not be moved to "
                f"trash/ ({exc}); they will be moved when the export is next opened."
            ) from exc

    def _move(self, src: Path, dst: Path) -> None:
        """Rename ``src`` to ``dst`` (same filesystem: atomic), never over an existing file."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            raise FileExistsError(errno.EEXIST, f"{dst} already exists", str(dst))
        os.rename(src, dst)
        fsync_dir(dst.parent)
        fsync_dir(src.parent)

    # ------------------------------------------------------------------ checks, lifecycle

    def verify(self) -> list[str]:
        """Problems with accepted samples: missing files or SHA-256 mismatches (empty if none)."""
        problems = []
        for sid in self.accepted:
            record = self._ledger.decisions[sid]
            for kind, rel in record["files"].items():
                p = self._folder / rel
                if not p.is_file():
                    problems.append(f"{sid}: {rel} is missing.")
                elif sha256_file(p) != record.get("sha256", {}).get(kind):
                    problems.append(f"{sid}: {rel} does not match its SHA-256 in the manifest.")
        return problems

    def summary(self) -> str:
        """A few lines for a CLI: folder, counts, orphans and warnings."""
        lines = [
            f"export {self._folder}",
            f"  accepted {self.n_accepted}, rejected {self.n_rejected}, "
            f"undone {len(self._ledger.undone)}, next id {_format_id(self._next_number)}",
        ]
        if self._orphans:
            lines.append(f"  orphans {len(self._orphans)} (files without a manifest record)")
        lines += [f"  warning: {w}" for w in self._warnings]
        return "\n".join(lines)

    def close(self) -> None:
        """Release the folder's lock; the session cannot record anything afterwards."""
        self._closed = True
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __enter__(self) -> ExportSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"ExportSession({str(self._folder)!r}, accepted={self.n_accepted}, "
            f"rejected={self.n_rejected}, {state})"
        )


# --------------------------------------------------------------------------- nnU-Net export


@dataclass(frozen=True)
class _Case:
    """One nnU-Net training case: where its image and mask come from."""

    name: str
    image: Path
    mask: Path
    sha256: Mapping[str, str] | None = None  # expected file hashes (synthetic cases)


def export_nnunet(
    export_folder: str | os.PathLike | ExportSession,
    out_dir: str | os.PathLike,
    *,
    dataset_id: int = 501,
    name: str = "SynthEM",
    real: str | os.PathLike | None = None,
    file_ending: str = ".png",
    n_folds: int = 5,
    overwrite: bool = False,
) -> Path:
    """Write accepted samples (plus optional real pairs) as an nnU-Net v2 raw dataset.

    Synthetic cases are only ever trained on: ``splits_final.json`` validates on real cases
    (from ``real``, a paired images/masks folder), so scores measure real-data performance.
    Reads the export without locking it, so an open session may keep curating.
    Returns the dataset folder ``out_dir/Dataset{dataset_id:03d}_{name}``.
    """
    _check_nnunet_args(dataset_id, name, file_ending, n_folds)
    source = export_folder.folder if isinstance(export_folder, ExportSession) else Path(
        export_folder
    ).expanduser().absolute()
    synthetic = _synthetic_cases(source)
    real_cases = _real_cases(real) if real is not None else []
    _check_real_count(len(real_cases), n_folds)
    dataset = Path(out_dir).expanduser().absolute() / f"Dataset{dataset_id:03d}_{name}"
    _prepare_dataset_dir(dataset, overwrite)
    for case in [*synthetic, *real_cases]:
        _write_case(dataset, case, file_ending)
    names = [c.name for c in [*synthetic, *real_cases]]
    _remove_stale_cases(dataset, names, file_ending)
    info = _dataset_json(name, file_ending, synthetic, real_cases, source, real)
    _write_json(dataset / "dataset.json", info)
    splits = _make_splits([c.name for c in synthetic], [c.name for c in real_cases], n_folds)
    _write_json(dataset / "splits_final.json", splits)
    return dataset


def _check_nnunet_args(dataset_id: int, name: str, file_ending: str, n_folds: int) -> None:
    """Refuse arguments nnU-Net would reject later, when the mistake is harder to trace."""
    if not isinstance(dataset_id, (int, np.integer)) or not 1 <= int(dataset_id) <= 999:
        raise ExportError(f"dataset_id must be 1..999 (custom datasets: 500+); got {dataset_id}.")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ExportError(
            f"dataset name {name!r}: use letters, digits, '_' and '-' only (e.g. 'SynthEM')."
        )
    if file_ending not in _NNUNET_ENDINGS:
        raise ExportError(f"file_ending must be one of {', '.join(_NNUNET_ENDINGS)}.")
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ExportError(f"n_folds must be at least 1; got {n_folds}.")


def _synthetic_cases(source: Path) -> list[_Case]:
    """The currently accepted samples of an export folder, read without locking it."""
    if not (source / MARKER_NAME).is_file():
        raise ExportError(
            f"{source} is not a napari-synthgen export (no {MARKER_NAME}); pass the folder "
            "that curation wrote."
        )
    ledger, _, _ = _read_ledger(source / MANIFEST_NAME)
    cases = []
    for sid in ledger.ids("accept"):
        record = ledger.decisions[sid]
        files = record["files"]
        cases.append(
            _Case(sid, source / files["image"], source / files["mask"], record.get("sha256"))
        )
    return cases


def _real_cases(real: str | os.PathLike) -> list[_Case]:
    """Real image/mask pairs of a paired folder, named ``real_<stem>``."""
    try:
        pairs = find_pairs(real)
    except ValueError as exc:
        raise ExportError(f"real data: {exc}") from exc
    return [_Case(f"real_{p.stem}", p.image, p.mask) for p in pairs]


def _check_real_count(n_real: int, n_folds: int) -> None:
    """Warn without real data (no validation possible); refuse too few for the folds."""
    if n_real == 0:
        _warnings.warn(
            "no real data given: every fold's validation set is empty, so nnU-Net cannot "
            "measure how well the model does on real images. Pass real=<paired folder>.",
            UserWarning,
            stacklevel=3,
        )
    elif n_real < n_folds:
        raise ExportError(
            f"{n_real} real case(s) cannot fill {n_folds} validation folds; pass "
            f"n_folds={n_real} or fewer, or add real data."
        )


def _prepare_dataset_dir(dataset: Path, overwrite: bool) -> None:
    """Create the dataset folders; refuse a non-empty dataset folder unless ``overwrite``."""
    if dataset.exists() and not dataset.is_dir():
        raise ExportError(f"{dataset} is a file; choose another out_dir or dataset name.")
    if dataset.is_dir() and any(dataset.iterdir()) and not overwrite:
        raise ExportError(
            f"{dataset} already exists and is not empty; pass overwrite=True to replace it, or "
            "choose another dataset_id or name."
        )
    for sub in ("imagesTr", "labelsTr"):
        (dataset / sub).mkdir(parents=True, exist_ok=True)


def _write_case(dataset: Path, case: _Case, file_ending: str) -> None:
    """Check one case (hashes, shapes, classes) and write its image and label atomically."""
    if case.sha256:
        for kind, path in (("image", case.image), ("mask", case.mask)):
            if not path.is_file() or sha256_file(path) != case.sha256.get(kind):
                raise ExportError(
                    f"{case.name}: {path} is missing or does not match its SHA-256 in the "
                    "manifest; open the export in a session to see what was found."
                )
    try:
        image = _png_image(read_image(case.image), case.image)
        mask = read_mask(case.mask)
    except (OSError, ValueError) as exc:  # MaskError is a ValueError
        raise ExportError(f"{case.name}: {exc}") from exc
    if image.shape != mask.shape:
        raise ExportError(
            f"{case.name}: image shape {image.shape} and mask shape {mask.shape} differ."
        )
    write_array(dataset / "imagesTr" / f"{case.name}_0000{file_ending}", image)
    write_mask(dataset / "labelsTr" / f"{case.name}{file_ending}", mask)


def _png_image(image: np.ndarray, path: Path) -> np.ndarray:
    """A 2-D image as 8-bit (16-bit kept); floats in 0..1 scaled by 255, others min-max scaled."""
    if image.ndim != 2:
        raise ExportError(f"{path}: nnU-Net 2-D cases are single grey images; got {image.shape}.")
    if image.dtype in (np.uint8, np.uint16):
        return image
    data = image.astype(np.float64)
    lo, hi = float(data.min()), float(data.max())
    if image.dtype.kind in "iu" and lo >= 0 and hi <= 255:
        return image.astype(np.uint8)
    if image.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        return image.astype(np.uint16)
    if image.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return np.round(data * 255).astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.round((data - lo) * scale).astype(np.uint8)


def _remove_stale_cases(dataset: Path, names: list[str], file_ending: str) -> None:
    """After an overwrite, remove cases of an earlier export that are no longer included."""
    keep = {f"{n}_0000{file_ending}" for n in names} | {f"{n}{file_ending}" for n in names}
    for sub in ("imagesTr", "labelsTr"):
        for p in (dataset / sub).iterdir():
            if p.is_file() and p.name not in keep:
                p.unlink()


def _dataset_json(
    name: str,
    file_ending: str,
    synthetic: list[_Case],
    real_cases: list[_Case],
    source: Path,
    real: str | os.PathLike | None,
) -> dict[str, Any]:
    """nnU-Net's dataset.json plus a ``synthgen`` entry saying which cases are synthetic."""
    return {
        "name": name,
        "description": "Synthetic EM images curated with napari-synthgen"
        + (", plus real images" if real_cases else ""),
        "channel_names": {"0": "EM"},
        "labels": {cls: i for i, cls in enumerate(CLASS_NAMES)},
        "numTraining": len(synthetic) + len(real_cases),
        "file_ending": file_ending,
        "overwrite_image_reader_writer": "NaturalImage2DIO",
        "synthgen": {
            "synthetic_cases": [c.name for c in synthetic],
            "real_cases": [c.name for c in real_cases],
            "source_export": str(source),
            "real_source": None if real is None else str(Path(real).absolute()),
            "plugin_version": __version__,
            "created": _utc_now(),
            "splits": "splits_final.json validates on real cases only; copy it to "
            "nnUNet_preprocessed/<dataset>/ to use it.",
        },
    }


def _make_splits(synthetic: list[str], real: list[str], n_folds: int) -> list[dict[str, list]]:
    """K folds over the real cases; synthetic cases are in every fold's train, never in val."""
    shuffled = sorted(real)
    random.Random(_SPLIT_SEED).shuffle(shuffled)
    folds = []
    for k in range(n_folds):
        val = set(shuffled[k::n_folds])
        train_real = sorted(c for c in real if c not in val)
        folds.append({"train": sorted(synthetic) + train_real, "val": sorted(val)})
    return folds


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (indented, for people reading it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
