"""nnU-Net v2 export: accepted samples (plus real pairs) as a raw dataset whose splits validate
on real cases only, and installing those splits where nnU-Net reads them."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io import (
    atomic_path,
    check_spacing,
    find_pairs,
    read_image,
    read_mask,
    sha256_file,
    write_array,
    write_mask,
)
from ..masks import CLASS_NAMES
from .common import (
    _NNUNET_ENDINGS,
    _SPLIT_SEED,
    MANIFEST_NAME,
    MARKER_NAME,
    SPLITS_NAME,
    ExportError,
    Worded,
    _short_list,
    _utc_now,
)
from .manifest import _read_ledger
from .session import ExportSession
from .stacks import _stack_shape, file_is_stack, is_stack, pair_spacing

#: Folds nnU-Net trains by default; with fewer real pairs, one fold per real pair.
DEFAULT_FOLDS = 5
#: The environment variable naming nnU-Net's preprocessed folder (nnU-Net's own spelling).
PREPROCESSED_VAR = "nnUNet_preprocessed"
#: What an nnU-Net dataset folder is called (nnUNet_raw/DatasetXXX_Name).
_DATASET_RE = re.compile(r"Dataset\d{3}_[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class NnunetExport:
    """What :func:`export_nnunet` wrote, and warnings the caller must show the user."""

    dataset: Path
    splits: Path
    n_folds: int
    n_synthetic: int
    n_real: int
    warnings: list[str] = field(default_factory=list)
    stacks: bool = False  # 3-D cases (Tiff3DIO, spacing in <case>.json)


@dataclass(frozen=True)
class _Case:
    """One nnU-Net training case: where its image and mask come from."""

    name: str
    image: Path
    mask: Path
    sha256: Mapping[str, str] | None = None  # expected file hashes (synthetic cases)
    stack: bool = False  # a (Z, Y, X) case
    spacing: tuple[float, float, float] | None = None  # (z, y, x) the manifest records


def export_nnunet(
    export_folder: str | os.PathLike | ExportSession,
    out_dir: str | os.PathLike,
    *,
    dataset_id: int = 501,
    name: str = "SynthEM",
    real: str | os.PathLike | None = None,
    file_ending: str | None = None,
    n_folds: int | None = None,
    overwrite: bool = False,
    spacing: Sequence[float] | None = None,
) -> NnunetExport:
    """Write accepted samples (plus optional real pairs) as an nnU-Net v2 raw dataset.

    Synthetic cases are only ever trained on: ``splits_final.json`` validates on real cases
    (from ``real``, a paired images/masks folder), so scores measure real-data performance.
    ``n_folds`` None means one fold per real pair, at most 5 (1 without real pairs).
    (Z, Y, X) stacks become 3-D cases in nnU-Net's Tiff3DIO layout: ``.tif`` files and a
    ``<case>.json`` beside each holding ``{"spacing": [z, y, x]}``, from the manifest or the
    files, else ``spacing``; 2-D and 3-D cases are never mixed in one dataset.
    ``file_ending`` None means ``.png`` for 2-D cases and ``.tif`` for stacks.
    Reads the export without locking it, so an open session may keep curating. Nothing is
    raised as a Python warning (a GUI worker would hide it): ``warnings`` of the result say
    what the user must know.
    """
    _check_nnunet_args(dataset_id, name, file_ending, n_folds)
    fallback = None
    if spacing is not None:
        try:
            fallback = check_spacing(spacing)
        except ValueError:
            got = repr(spacing).replace("{", "{{").replace("}", "}}")  # a template below
            raise ExportError(Worded(
                "{0} must be three positive numbers (z, y, x), e.g. 50,4,4 for 50 nm sections "
                f"of 4 nm pixels; got {got}.", ("spacing", ...))) from None
    source = export_folder.folder if isinstance(export_folder, ExportSession) else Path(
        export_folder
    ).expanduser().absolute()
    synthetic = _synthetic_cases(source)
    real_cases = _real_cases(real) if real is not None else []
    stacks = _check_dimensions(synthetic, real_cases)
    if stacks:
        if file_ending not in (None, ".tif"):
            raise ExportError(f"nnU-Net reads 3-D cases from .tif files (Tiff3DIO); "
                              f"file_ending {file_ending!r} cannot hold a stack.")
        file_ending = ".tif"
    elif file_ending is None:
        file_ending = ".png"
    cases, warnings = [*synthetic, *real_cases], []
    if stacks:
        cases, warnings = _with_spacing(cases, fallback)
    folds, fold_warnings = choose_folds(len(real_cases), n_folds)
    warnings = fold_warnings + warnings
    dataset = Path(out_dir).expanduser().absolute() / f"Dataset{dataset_id:03d}_{name}"
    _prepare_dataset_dir(dataset, overwrite)
    for case in cases:
        _write_case(dataset, case, file_ending)
    names = [c.name for c in cases]
    _remove_stale_cases(dataset, names, file_ending)
    info = _dataset_json(name, file_ending, synthetic, real_cases, source, real, folds, stacks)
    _write_json(dataset / "dataset.json", info)
    splits = _make_splits([c.name for c in synthetic], [c.name for c in real_cases], folds)
    _write_json(dataset / SPLITS_NAME, splits)
    return NnunetExport(dataset, dataset / SPLITS_NAME, folds, len(synthetic), len(real_cases),
                        warnings, stacks)


def _check_dimensions(synthetic: list[_Case], real_cases: list[_Case]) -> bool:
    """True when every case is a (Z, Y, X) stack, False when every case is 2-D; a mix is
    refused (nnU-Net trains one kind of case per dataset)."""
    flat = [c.name for c in [*synthetic, *real_cases] if not c.stack]
    deep = [c.name for c in [*synthetic, *real_cases] if c.stack]
    if flat and deep:
        raise ExportError(Worded(
            f"the export mixes 2-D cases ({_short_list(flat)}) and (Z, Y, X) stacks "
            f"({_short_list(deep)}); an nnU-Net dataset holds one kind. Export each kind as "
            "its own dataset: curate stacks and 2-D pairs into separate export folders (undo "
            "or reject the other kind here), give {0} pairs of the same kind, and choose "
            "another {1} for the second dataset.", ("real", ...), ("dataset_id", ...),
        ))
    return bool(deep)


def _with_spacing(cases: list[_Case], fallback: tuple[float, float, float] | None
                  ) -> tuple[list[_Case], list[str]]:
    """Each stack case with its spacing: the manifest's, else its files', else ``fallback``;
    stacks without any are refused, and a ``fallback`` the files contradict is a warning."""
    out, missing, differ = [], [], []
    for case in cases:
        found = case.spacing or pair_spacing(case.image, case.mask)
        if found is not None and fallback is not None and not np.allclose(found, fallback):
            differ.append(f"{case.name} {tuple(found)}")
        chosen = found or fallback
        if chosen is None:
            missing.append(case.name)
        out.append(replace(case, spacing=chosen))
    if missing:
        raise ExportError(Worded(
            f"nnU-Net needs the voxel spacing of 3-D cases, and {_short_list(missing)} record "
            "none (no ImageJ spacing or resolution in the files, none in the manifest); pass "
            "{0} (the stacks' z, y, x spacing, e.g. 50,4,4 for 50 nm sections of 4 nm "
            "pixels). Nothing was written.", ("spacing", "Z,Y,X"),
        ))
    warnings = [Worded(
        f"{{0}} was used only for stacks without a spacing of their own; these record "
        f"another one, which was kept: {_short_list(differ)}.", ("spacing", ...),
    )] if differ else []
    return out, warnings


def choose_folds(n_real: int, n_folds: int | None) -> tuple[int, list[str]]:
    """The number of folds for ``n_real`` real pairs (``n_folds`` None: one per real pair, up to
    5, and 1 without real pairs) and what the user must be told about it."""
    if n_folds is None:
        folds = max(1, min(DEFAULT_FOLDS, n_real))
    elif 0 < n_real < n_folds:
        raise ExportError(Worded(
            f"{n_real} real pair(s) cannot fill {n_folds} validation folds; pass {{0}} or "
            "fewer, leave {1} unset (one fold per real pair, up to 5), or add real data.",
            ("n_folds", n_real), ("n_folds", ...),
        ))
    else:
        folds = int(n_folds)
    warnings: list[str] = []
    if n_real == 0:
        warnings.append(Worded(
            "no real pairs given: every fold's validation set is empty, so nnU-Net cannot "
            "measure how the model does on real images, and training a numbered fold needs "
            "validation cases. Pass {0}, or train nnU-Net on fold 'all'.",
            ("real", "<paired folder>"),
        ))
    elif n_real == 1:
        warnings.append(
            "only 1 real pair: its one fold trains on the synthetic cases alone and validates "
            "on that single real image, so the score says little; add real pairs for a "
            "cross-validation."
        )
    if n_real and folds < DEFAULT_FOLDS:
        warnings.append(
            f"{SPLITS_NAME} holds {folds} fold(s) (one per real pair); train folds "
            f"0..{folds - 1} only: for a higher fold nnU-Net makes its own random split, which "
            "validates on synthetic cases."
        )
    return folds, warnings


def install_splits(
    dataset_dir: str | os.PathLike | NnunetExport,
    preprocessed_root: str | os.PathLike | None = None,
) -> Path:
    """Copy ``splits_final.json`` of an exported dataset to where nnU-Net reads it,
    ``<preprocessed_root>/<DatasetXXX_Name>/``; the root defaults to $nnUNet_preprocessed."""
    if isinstance(dataset_dir, NnunetExport):
        dataset_dir = dataset_dir.dataset
    dataset = Path(dataset_dir).expanduser().absolute()
    splits = dataset / SPLITS_NAME
    if not _DATASET_RE.fullmatch(dataset.name):
        raise ExportError(
            f"{dataset} is not an nnU-Net dataset folder (named DatasetXXX_Name); give the "
            "folder the nnU-Net export wrote."
        )
    if not splits.is_file():
        raise ExportError(f"{splits} does not exist; export the dataset to nnU-Net first.")
    root_path = preprocessed_folder(preprocessed_root)
    dest = root_path / dataset.name / SPLITS_NAME
    dest.parent.mkdir(exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(splits.read_bytes())
    return dest


def preprocessed_folder(preprocessed_root: str | os.PathLike | None = None) -> Path:
    """nnU-Net's preprocessed folder: ``preprocessed_root``, else $nnUNet_preprocessed; it must
    exist (a missing one is most likely a typo)."""
    root = preprocessed_root if preprocessed_root not in (None, "") else os.environ.get(
        PREPROCESSED_VAR)
    if not root:
        raise ExportError(Worded(
            f"{PREPROCESSED_VAR} is not set, so it is not known where nnU-Net reads its splits "
            f"from; set the environment variable {PREPROCESSED_VAR} (nnU-Net needs it too) or "
            "pass {0}.", ("preprocessed_root", "<folder>"),
        ))
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise ExportError(
            f"the nnU-Net preprocessed folder {path} does not exist; create it, or point "
            f"{PREPROCESSED_VAR} at nnU-Net's preprocessed folder."
        )
    return path


def _check_nnunet_args(
    dataset_id: int, name: str, file_ending: str, n_folds: int | None
) -> None:
    """Refuse arguments nnU-Net would reject later, when the mistake is harder to trace."""
    if not isinstance(dataset_id, (int, np.integer)) or not 1 <= int(dataset_id) <= 999:
        raise ExportError(Worded(
            f"{{0}} must be 1..999 (custom datasets: 500+); got {dataset_id}.",
            ("dataset_id", ...),
        ))
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ExportError(Worded(
            f"dataset {{0}} {name!r}: use letters, digits, '_' and '-' only (e.g. 'SynthEM').",
            ("name", ...),
        ))
    if file_ending is not None and file_ending not in _NNUNET_ENDINGS:
        raise ExportError(f"file_ending must be one of {', '.join(_NNUNET_ENDINGS)}.")
    if n_folds is not None and (
        isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1
    ):
        raise ExportError(Worded(
            f"{{0}} must be at least 1, or unset to follow the real pairs; got {n_folds!r}.",
            ("n_folds", ...),
        ))


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
        shape = record.get("shape")
        image = source / files["image"]
        stack = _stack_shape(shape) if isinstance(shape, list) else file_is_stack(image)
        spacing = record.get("spacing")
        cases.append(_Case(sid, image, source / files["mask"], record.get("sha256"), stack,
                           tuple(spacing) if isinstance(spacing, list) else None))
    return cases


def _real_cases(real: str | os.PathLike) -> list[_Case]:
    """Real image/mask pairs of a paired folder, named ``real_<stem>``."""
    try:
        pairs = find_pairs(real)
    except ValueError as exc:
        raise ExportError(f"real data: {exc}") from exc
    try:
        return [_Case(f"real_{p.stem}", p.image, p.mask, stack=file_is_stack(p.image))
                for p in pairs]
    except ValueError as exc:  # a damaged file
        raise ExportError(f"real data: {exc}") from exc


def _prepare_dataset_dir(dataset: Path, overwrite: bool) -> None:
    """Create the dataset folders; refuse a non-empty dataset folder unless ``overwrite``."""
    if dataset.exists() and not dataset.is_dir():
        raise ExportError(Worded(
            f"{dataset} is a file; choose another {{0}} or {{1}}.", ("out_dir", ...), ("name", ...)
        ))
    if dataset.is_dir() and any(dataset.iterdir()) and not overwrite:
        raise ExportError(Worded(
            f"{dataset} already exists and is not empty; pass {{0}} to replace it, or choose "
            "another {1} or {2}.", ("overwrite", True), ("dataset_id", ...), ("name", ...)
        ))
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
        image = read_image(case.image)
        image = image if case.stack else _png_image(image, case.image)
        mask = read_mask(case.mask)
    except (OSError, ValueError) as exc:  # MaskError is a ValueError
        raise ExportError(f"{case.name}: {exc}") from exc
    if image.shape != mask.shape:
        raise ExportError(
            f"{case.name}: image shape {image.shape} and mask shape {mask.shape} differ."
        )
    if case.stack and not is_stack(image):
        raise ExportError(f"{case.name}: expected a (Z, Y, X) stack; {case.image} holds "
                          f"{image.shape}.")
    images, labels = dataset / "imagesTr", dataset / "labelsTr"
    write_array(images / f"{case.name}_0000{file_ending}", image, spacing=case.spacing)
    write_mask(labels / f"{case.name}{file_ending}", mask, spacing=case.spacing)
    if case.stack:  # Tiff3DIO's sidecar: image1_0000.tif -> image1.json, seg1.tif -> seg1.json
        for folder in (images, labels):
            _write_json(folder / f"{case.name}.json", {"spacing": list(case.spacing or ())})


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
    keep = ({f"{n}_0000{file_ending}" for n in names} | {f"{n}{file_ending}" for n in names}
            | {f"{n}.json" for n in names})
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
    n_folds: int,
    stacks: bool = False,
) -> dict[str, Any]:
    """nnU-Net's dataset.json plus a ``synthgen`` entry saying which cases are synthetic."""
    info = {
        "name": name,
        "description": "Synthetic EM images curated with napari-synthgen"
        + (", plus real images" if real_cases else ""),
        "channel_names": {"0": "EM"},
        "labels": {cls: i for i, cls in enumerate(CLASS_NAMES)},
        "numTraining": len(synthetic) + len(real_cases),
        "file_ending": file_ending,
        "overwrite_image_reader_writer": "Tiff3DIO" if stacks else "NaturalImage2DIO",
        "synthgen": {
            "synthetic_cases": [c.name for c in synthetic],
            "real_cases": [c.name for c in real_cases],
            "source_export": str(source),
            "real_source": None if real is None else str(Path(real).absolute()),
            "plugin_version": __version__,
            "created": _utc_now(),
            "n_folds": n_folds,
            "splits": f"{SPLITS_NAME} validates on real cases only; nnU-Net reads it from "
            "$nnUNet_preprocessed/<this dataset's folder name>/, so copy it there to use it, "
            f"and train folds 0..{n_folds - 1} only (for a higher fold nnU-Net makes its own "
            "random split, which validates on synthetic cases).",
        },
    }
    if stacks:
        info["synthgen"]["dimensions"] = 3
        info["synthgen"]["spacing"] = ("each case's (z, y, x) voxel spacing is in "
                                       "<case>.json beside its files (Tiff3DIO)")
    return info


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
