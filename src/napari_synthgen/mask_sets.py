"""Many masks at once: seeded layout sets and variation sets written to a folder.

Backs ``napari-synthgen masks`` and scripts. Mask ``i`` of a set is drawn from a seed derived
from ``(seed, i)`` alone (``numpy.random.SeedSequence(seed, spawn_key=(i,))``), so it does not
depend on how many masks are made: ``n=10`` gives the first ten masks of ``n=100``, byte for
byte. A variation is derived from ``(seed, source file name, j)``, so adding a file to the
source folder does not change the variations of the others. :func:`make_like_set` (``masks
--like``) writes layouts calibrated on measured masks (:mod:`mask_stats`). Every file written is
recorded in ``masks.jsonl`` (no times, so the same call writes the same bytes).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .io import IMAGE_SUFFIXES, is_paired_folder, list_images, read_mask, write_mask
from .layout_stacks import DEFAULT_DRIFT, layout_stack, vary_stack
from .layouts import (
    LAYOUT_KINDS,
    MIN_SIDE,
    dense_tissue,
    morphological_variation,
    sparse_organelles,
    variation,
)
from .limits import LAYOUT_BYTES_PER_PX, check_layout_memory, check_memory, check_seed
from .mask_stats import MaskStats, calibrated_params, layout_params, measure_masks
from .masks import MaskError, MaskSource

LOG_NAME = "masks.jsonl"

#: Called after each file is written, with the number written so far and the path.
Progress = Callable[[int, Path], None]


@dataclass(frozen=True)
class MaskSetResult:
    """The files a mask-set call wrote, in order, and the folder they are in."""

    out: Path
    files: list[Path]


def derived_seed(seed: int, *key: int) -> int:
    """A 32-bit seed for item ``key`` of a set seeded with ``seed``; independent of set size."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be a whole number; got {seed!r}.")
    check_seed("seed", int(seed))
    ss = np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key))
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _name_key(name: str) -> int:
    """A stable number for a file stem (CRC-32), so variations follow the file, not its rank."""
    return zlib.crc32(name.encode("utf-8"))


def _check_count(n: object, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n!r}.")
    return int(n)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """(H, W) or (Z, H, W) of whole numbers, H and W at least :data:`layouts.MIN_SIDE`."""
    dims = tuple(shape)
    if len(dims) not in (2, 3) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in dims
    ):
        raise ValueError(f"shape must be (H, W) or (Z, H, W) of positive integers; got {shape!r}.")
    if min(dims[-2:]) < MIN_SIDE:
        raise ValueError(f"shape {dims} is too small: height and width must be at least "
                         f"{MIN_SIDE} px.")
    check_layout_memory(int(dims[-2]), int(dims[-1]))
    return tuple(int(d) for d in dims)


def _claim(out: Path, names: Sequence[str], overwrite: bool) -> list[Path]:
    """The output paths; refuses (before writing anything) to replace files unless asked."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in names]
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise FileExistsError(
                f"{existing[0]}{more} already exist{'s' if len(existing) == 1 else ''}; "
                "choose another folder or seed, or pass overwrite=True."
            )
    return paths


def _log(out: Path, records: list[dict[str, Any]]) -> None:
    """Append the records of a call to ``masks.jsonl``."""
    with open(out / LOG_NAME, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")


def layout_name(kind: str, seed: int, index: int) -> str:
    """The file name of mask ``index`` of a layout set: ``<kind>_seed<seed>_<index:05d>.tif``."""
    return f"{kind}_seed{seed}_{index:05d}.tif"


def _depth_maker(
    kind: str,
    make: Callable[..., np.ndarray],
    shape: tuple[int, ...],
    z: int,
    drift: float | None,
    opts: dict[str, Any],
) -> tuple[Callable[..., np.ndarray], float | None]:
    """The layout maker for ``depth`` z (2-D ``make`` for 1, else a z-continuous stack), checked.

    Returns the maker and the drift used (None for 2-D masks).
    """
    if z == 1 and drift is not None:
        raise ValueError("drift applies to stacks only (depth 2 or more).")
    if z == 1:
        return make, None
    if len(shape) != 2:
        raise ValueError(f"with depth={z} give shape as (H, W); got {shape}.")
    z_drift = DEFAULT_DRIFT if drift is None else drift
    h, w = shape
    # a stack holds depth bytes per px beside one slice's working memory
    check_memory(h * w * (LAYOUT_BYTES_PER_PX + z), what=f"a {z} x {h} x {w} mask stack",
                 largest=lambda b: int(b / (h * w)) - LAYOUT_BYTES_PER_PX, option="depth")
    layout_stack(kind, (2, 2 * MIN_SIDE, 2 * MIN_SIDE), drift=z_drift, **opts)  # checks

    def stack(hw: tuple[int, ...], seed: int, **kw: Any) -> np.ndarray:
        return layout_stack(kind, (z, *hw), drift=z_drift, seed=seed, **kw)

    return stack, z_drift


def make_layout_set(
    out: str | os.PathLike,
    *,
    kind: str,
    n: int,
    shape: Sequence[int],
    seed: int = 0,
    density: float | None = None,
    boundary_width: int | None = None,
    irregularity: float | None = None,
    blob_size: tuple[float, float] | None = None,
    depth: int = 1,
    drift: float | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> MaskSetResult:
    """Write ``n`` new ``kind`` masks (``"dense"`` or ``"sparse"``) of ``shape`` into ``out``.

    Options left ``None`` take the layout's default. ``irregularity`` is for dense tissue,
    ``blob_size`` (min, max px) for sparse organelles. Files are uint8 TIFFs of classes 0..2.
    ``depth`` > 1 makes each file a (depth, H, W) stack continuous through z
    (:func:`layout_stacks.layout_stack`, with ``drift``: the change per slice); ``shape`` is
    then (H, W). ``depth`` 1 gives the 2-D masks of earlier versions, byte for byte.
    """
    if kind not in LAYOUT_KINDS:
        raise ValueError(f"unknown layout kind {kind!r}; use one of {', '.join(LAYOUT_KINDS)}.")
    count = _check_count(n)
    derived_seed(seed)  # validates
    opts: dict[str, Any] = {}
    if density is not None:
        opts["density"] = density
    if boundary_width is not None:
        opts["boundary_width"] = boundary_width
    if kind == "dense":
        if blob_size is not None:
            raise ValueError("blob_size applies to sparse layouts only.")
        if irregularity is not None:
            opts["irregularity"] = irregularity
        make = dense_tissue
    else:
        if irregularity is not None:
            raise ValueError("irregularity applies to dense layouts only.")
        if blob_size is not None:
            opts["size"] = tuple(blob_size)
        make = sparse_organelles
    shape = _check_shape(shape)
    make((2 * MIN_SIDE, 2 * MIN_SIDE), seed=0, **opts)  # checks the options before any write
    z = _check_count(depth, "depth")
    make, z_drift = _depth_maker(kind, make, shape, z, drift, opts)
    out_dir = Path(out)
    paths = _claim(out_dir, [layout_name(kind, seed, i) for i in range(count)], overwrite)
    records = []
    for i, path in enumerate(paths):
        s = derived_seed(seed, i)
        write_mask(path, make(shape, seed=s, **opts))
        rec = {
            "file": path.name, "layout": kind, "index": i, "seed": seed, "mask_seed": s,
            "shape": list(shape), "options": {k: (list(v) if isinstance(v, tuple) else v)
                                              for k, v in opts.items()},
            "plugin_version": __version__,
        }
        if z > 1:  # 2-D records stay as they were
            rec.update(shape=[z, *shape], depth=z, drift=z_drift)
        records.append(rec)
        if progress is not None:
            progress(i + 1, path)
    _log(out_dir, records)
    return MaskSetResult(out_dir, paths)


def like_name(kind: str, seed: int, index: int) -> str:
    """File name of mask ``index`` of a ``--like`` set: ``like_<kind>_seed<seed>_<index>.tif``."""
    return f"like_{kind}_seed{seed}_{index:05d}.tif"


def measure_source(
    source: str | os.PathLike, *, read_as: MaskSource = "auto", boundary_width: int = 2
) -> tuple[MaskStats, list[Path], tuple[int, int]]:
    """Measure the masks of ``source`` (a mask file, a folder of masks or a paired folder).

    Returns the statistics, the files measured and the first mask's (H, W).
    """
    files = mask_sources(source)
    masks = [read_mask(f, read_as, boundary_width=boundary_width) for f in files]
    try:
        stats = measure_masks(masks)
    except MaskError as exc:
        raise MaskError(f"{source}: {exc}") from None
    h, w = masks[0].shape[-2:]
    return stats, files, (int(h), int(w))


def make_like_set(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int,
    shape: Sequence[int] | None = None,
    seed: int = 0,
    strength: float = 0.0,
    density: float | None = None,
    boundary_width: int | None = None,
    irregularity: float | None = None,
    blob_size: tuple[float, float] | None = None,
    depth: int = 1,
    drift: float | None = None,
    read_as: MaskSource = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> MaskSetResult:
    """Write ``n`` new layouts whose statistics are calibrated on the masks of ``source``.

    The masks are measured (:func:`mask_stats.measure_masks`: dense tissue or sparse
    organelles, cell sizes, membrane width, shapes, coverage) and each new mask uses
    :func:`mask_stats.layout_params` for them; ``strength`` 0..1 spreads the parameters from
    mask to mask (:data:`mask_stats.STRENGTH_HELP`). Options given override the calibrated
    value for every mask. ``shape`` defaults to the first source mask's (H, W); ``depth`` and
    ``drift`` are as for :func:`make_layout_set` (stacks' organelles keep the stack layout's
    own shape: the calibrated ``aspect`` is not used). ``masks.jsonl`` records the measured
    statistics and each mask's parameters.
    """
    count = _check_count(n)
    derived_seed(seed)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (
            0 <= strength <= 1):
        raise ValueError(f"strength must be a number in [0, 1]; got {strength!r}.")
    stats, files, first_hw = measure_source(source, read_as=read_as)
    kind = stats.kind
    if kind == "dense" and blob_size is not None:
        raise ValueError(f"{source} measures as dense tissue; blob_size applies to sparse "
                         "layouts only.")
    if kind == "sparse" and irregularity is not None:
        raise ValueError(f"{source} measures as sparse organelles; irregularity applies to "
                         "dense layouts only.")
    given: dict[str, Any] = {"density": density, "boundary_width": boundary_width,
                             "irregularity": irregularity,
                             "size": None if blob_size is None else tuple(blob_size)}
    given = {k: v for k, v in given.items() if v is not None}
    make = dense_tissue if kind == "dense" else sparse_organelles
    z = _check_count(depth, "depth")
    # stacks' organelles are tubes of the layout's own shape: no aspect
    drop = ("aspect",) if z > 1 else ()

    def params_for(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in {**p, **given}.items() if k not in drop}

    base = params_for(calibrated_params(stats))
    make((2 * MIN_SIDE, 2 * MIN_SIDE), seed=0, **base)  # checks the options before any write
    shape = _check_shape(first_hw if shape is None else shape)
    make, z_drift = _depth_maker(kind, make, shape, z, drift, base)
    out_dir = Path(out)
    paths = _claim(out_dir, [like_name(kind, seed, i) for i in range(count)], overwrite)
    measured = stats.to_dict()
    records = []
    for i, path in enumerate(paths):
        s = derived_seed(seed, i)
        params = params_for(layout_params(stats, strength, seed=s))
        write_mask(path, make(shape, seed=s, **params))
        rec = {
            "file": path.name, "layout": kind, "index": i, "seed": seed, "mask_seed": s,
            "shape": list(shape) if z == 1 else [z, *shape],
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
            "like": {"source": os.fspath(source), "files": len(files), "strength": strength,
                     "given": sorted(given), "stats": measured},
            "plugin_version": __version__,
        }
        if z > 1:
            rec.update(depth=z, drift=z_drift)
        records.append(rec)
        if progress is not None:
            progress(i + 1, path)
    _log(out_dir, records)
    return MaskSetResult(out_dir, paths)


def mask_sources(source: str | os.PathLike) -> list[Path]:
    """The mask files of ``source``: one file, a folder of masks, or a paired folder's masks/."""
    src = Path(source)
    if src.is_file():
        if src.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{src}: not a mask file; use .tif, .tiff or .png.")
        return [src]
    if src.is_dir():
        folder = src / "masks" if is_paired_folder(src) else src
        files = list_images(folder)
        if not files:
            raise ValueError(f"{folder}: no .tif/.tiff/.png masks found.")
        return files
    raise FileNotFoundError(f"{src}: no such file or folder.")


def variation_name(stem: str, seed: int, index: int) -> str:
    """File name of variation ``index`` of ``stem``: ``<stem>_var<seed>_<index:04d>.tif``."""
    return f"{stem}_var{seed}_{index:04d}.tif"


def make_variation_set(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int,
    seed: int = 0,
    strength: float = 0.5,
    grow: int = 1,
    coverage: float = 0.5,
    read_as: MaskSource = "auto",
    boundary_width: int = 2,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> MaskSetResult:
    """Write ``n`` variations of every mask in ``source`` into ``out``.

    Each variation is an elastic warp of ``strength`` (0: none), then boundaries thickened or
    thinned by a random whole number of px in ``-grow..grow`` over about ``coverage`` of the
    image (``grow`` 0: none). ``read_as`` and ``boundary_width`` say how to read the sources.
    A (Z, H, W) stack is varied as a volume (:func:`layout_stacks.vary_stack`): the warp and
    the patches change slowly with z, so the variation stays continuous through z.
    """
    count = _check_count(n)
    derived_seed(seed)
    if isinstance(grow, bool) or not isinstance(grow, (int, np.integer)) or grow < 0:
        raise ValueError(f"grow must be a non-negative whole number of px; got {grow!r}.")
    files = mask_sources(source)
    stems = [f.stem for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f"{source}: several files share the name {dupes[0]!r} (e.g. .tif and "
                         ".png); keep one of them.")
    masks = [read_mask(f, read_as, boundary_width=boundary_width) for f in files]
    # validate options on the first mask before any file is claimed or written
    variation(masks[0][..., :MIN_SIDE, :MIN_SIDE], strength=strength, seed=0)
    morphological_variation(masks[0][..., :MIN_SIDE, :MIN_SIDE], grow=int(grow),
                            coverage=coverage, seed=0)
    out_dir = Path(out)
    names = [variation_name(f.stem, seed, j) for f in files for j in range(count)]
    paths = iter(_claim(out_dir, names, overwrite))
    records, done, written = [], 0, []
    for src, mask in zip(files, masks, strict=True):
        for j in range(count):
            path = next(paths)
            s = derived_seed(seed, _name_key(src.stem), j)
            rng = np.random.default_rng(s)
            g = int(rng.integers(-int(grow), int(grow) + 1)) if grow else 0
            if mask.ndim == 3:
                varied = vary_stack(mask, strength=strength, grow=g, coverage=coverage, seed=s)
            else:
                varied = variation(mask, strength=strength, seed=s)
                varied = morphological_variation(varied, grow=g, coverage=coverage, seed=s)
            write_mask(path, varied)
            written.append(path)
            records.append({
                "file": path.name, "source": os.fspath(src), "index": j, "seed": seed,
                "mask_seed": s, "strength": strength, "grow": g, "coverage": coverage,
                "plugin_version": __version__,
            })
            done += 1
            if progress is not None:
                progress(done, path)
    _log(out_dir, records)
    return MaskSetResult(out_dir, written)


__all__ = [
    "LOG_NAME",
    "MaskSetResult",
    "derived_seed",
    "layout_name",
    "like_name",
    "make_layout_set",
    "make_like_set",
    "make_variation_set",
    "mask_sources",
    "measure_source",
    "variation_name",
]
