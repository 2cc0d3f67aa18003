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

Modules: ``session`` (ExportSession), ``manifest`` (the ledger, durable appends, crash
recovery), ``records`` (provenance as JSON, sample checks), ``nnunet`` (nnU-Net v2 export),
``common`` (constants, ExportError, option wording), ``rules`` (curation by a rule, the
``curate`` command).
"""

from __future__ import annotations

from ..io import DiskFullError
from .common import EXPORT_FORMAT, FORMAT_VERSION, SPLITS_NAME, ExportError, Worded, reword
from .nnunet import (
    NnunetExport,
    choose_folds,
    export_nnunet,
    install_splits,
    preprocessed_folder,
)
from .rules import CurateResult, curate_by_rule
from .session import ExportSession

__all__ = [
    "EXPORT_FORMAT",
    "FORMAT_VERSION",
    "SPLITS_NAME",
    "CurateResult",
    "DiskFullError",
    "ExportError",
    "ExportSession",
    "NnunetExport",
    "Worded",
    "choose_folds",
    "curate_by_rule",
    "export_nnunet",
    "install_splits",
    "preprocessed_folder",
    "reword",
]
