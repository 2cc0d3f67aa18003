"""The manifest (append-only JSON lines) and crash recovery of an export folder.

``_Ledger`` is the state a manifest describes; ``_ManifestFolder`` holds what a session does to
its folder below the decisions: appending records durably, repairing a torn tail, and making
the files agree with the manifest again after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import DiskFullError, atomic_path, fsync_dir
from .common import (
    _ID_RE,
    MANIFEST_NAME,
    ExportError,
    _id_number,
    _is_disk_full,
    _remove_quietly,
    _short_list,
    _stamp,
    _write_all,
)


def _dumps(record: Mapping[str, Any]) -> bytes:
    """One manifest line: strict JSON, ASCII, newline-terminated."""
    return (json.dumps(record, allow_nan=False, separators=(", ", ": ")) + "\n").encode("ascii")


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


class _ManifestFolder:
    """Manifest appends and crash recovery of an export folder (mixed into ExportSession)."""

    _folder: Path
    _ledger: _Ledger
    _warnings: list[str]
    _orphans: list[Path]
    _next_number: int

    @property
    def _manifest(self) -> Path:
        return self._folder / MANIFEST_NAME

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
