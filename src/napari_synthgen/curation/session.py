"""ExportSession: one curator accepting, rejecting and undoing samples in an export folder."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io import (
    DiskFullError,
    atomic_path,
    check_spacing,
    fsync_dir,
    sha256_array,
    sha256_file,
    write_image,
    write_mask,
)
from ..quality import basic_figures
from .common import (
    _IGNORABLE,
    _PROBE_PREFIX,
    EXPORT_FORMAT,
    FORMAT_VERSION,
    IMAGE_FORMATS,
    LOCK_NAME,
    MANIFEST_NAME,
    MARKER_NAME,
    ExportError,
    _format_id,
    _is_disk_full,
    _remove_quietly,
    _short_list,
    _utc_now,
    _write_all,
)
from .manifest import _Ledger, _ManifestFolder
from .records import _check_image, _check_mask, _check_sample, _json_key, _jsonable

try:  # POSIX only; elsewhere sessions are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class ExportSession(_ManifestFolder):
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
        provenance: Mapping[str, Any] | None = None,
        quality: Mapping[str, Any] | None = None,
        synthetic: bool = True,
        spacing: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Store an image and its mask as training data and record it; returns the record.

        Everything is validated before anything is written; the record is on disk (fsynced)
        when this returns. ``provenance`` is stored as given (``source_mask``, ``model``,
        ``seed``, ``params`` ...); any key is allowed, including "quality" or "synthetic".
        A (Z, Y, X) stack and its mask stack are one sample; ``spacing`` (z, y, x), when
        known, is recorded (``spacing``) for the nnU-Net export.
        """
        with self._mutex:
            self._check_open()
            img, m = _check_sample(image, mask)
            self._check_storable(img)
            record = self._new_record("accept", img, m, quality, synthetic, provenance,
                                      spacing)
            sid = self._reserve_id()
            files = {"image": f"images/{sid}{self._ext}", "mask": f"masks/{sid}{self._ext}"}
            paths = self._write_sample(files, img, m, record.get("spacing"))
            record = {"id": sid, **record, "files": files}
            record["sha256"] = {k: sha256_file(p) for k, p in paths.items()}
            self._append(record, rollback=list(paths.values()))
            return copy.deepcopy(record)

    def reject(
        self,
        image: Any = None,
        mask: Any = None,
        *,
        provenance: Mapping[str, Any] | None = None,
        quality: Mapping[str, Any] | None = None,
        synthetic: bool = True,
        spacing: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Record that a sample was rejected (hashes and figures, no pixels); returns the record.

        ``provenance`` and ``spacing`` are stored as given, as for :meth:`accept`.
        """
        with self._mutex:
            self._check_open()
            img = None if image is None else _check_image(image)
            m = None if mask is None else _check_mask(mask)
            if img is not None and m is not None:
                img, m = _check_sample(img, m)
            record = self._new_record("reject", img, m, quality, synthetic, provenance,
                                      spacing)
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
        provenance: Mapping[str, Any] | None,
        spacing: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """The record fields that need no files, all JSON-checked before anything is written."""
        record: dict[str, Any] = {"decision": decision, "time": _utc_now()}
        if image is not None:
            record["shape"] = list(image.shape)
            record["dtype"] = str(image.dtype)
        if spacing is not None:
            try:
                record["spacing"] = list(check_spacing(spacing))
            except ValueError as exc:
                raise ExportError(f"{exc} Nothing was written.") from exc
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
    def _provenance(
        provenance: Mapping[str, Any] | None, mask: np.ndarray | None
    ) -> dict[str, Any]:
        """Caller's provenance as JSON, with ``source_mask_sha256`` filled in from the mask."""
        if provenance is not None and not isinstance(provenance, Mapping):
            raise ExportError(
                f"provenance must be a mapping (a dict of names to values); got a "
                f"{type(provenance).__name__}."
            )
        prov = {
            _json_key(k, "keys"): _jsonable(v, repr(k))
            for k, v in (provenance or {}).items()
        }
        if mask is not None and prov.get("source_mask_sha256") is None:
            prov["source_mask_sha256"] = sha256_array(mask)
        return prov

    # ------------------------------------------------------------------ writing

    def _check_open(self) -> None:
        if self._closed:
            raise ExportError(f"the session on {self._folder} is closed; open a new one.")

    def _check_storable(self, image: np.ndarray) -> None:
        """PNG stores only 2-D 8- and 16-bit grey images; say so before anything is written."""
        if self._ext == ".png" and image.ndim != 2:
            raise ExportError(
                f"PNG holds 2-D images; this sample is a {image.shape} stack. Open the export "
                "with image_format='.tif' (stacks are kept whole, one TIFF per stack)."
            )
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
        self, files: Mapping[str, str], image: np.ndarray, mask: np.ndarray,
        spacing: Sequence[float] | None = None,
    ) -> dict[str, Path]:
        """Write image, then mask, atomically and never over a file; all or nothing."""
        paths = {k: self._folder / v for k, v in files.items()}
        written: list[Path] = []
        try:
            write_image(paths["image"], image, overwrite=False, spacing=spacing)
            written.append(paths["image"])
            write_mask(paths["mask"], mask, overwrite=False, spacing=spacing)
            written.append(paths["mask"])
        except BaseException:
            _remove_quietly(written)
            raise
        return paths

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
