"""Images, masks and paired folders on disk (TIFF and PNG), with atomic writes.

Every write goes to a temporary file in the destination folder, is flushed to disk, then
renamed over the destination: a crash or a full disk never leaves a half-written file under
the final name, and an existing file is never clobbered unless the caller asks for it.

(Z, Y, X) stacks are TIFF ImageJ hyperstacks (axes ZYX, grey), which Fiji and napari open as
stacks, with the voxel spacing (z, y, x) in nm when given (:func:`read_spacing`). Whether a
last axis of 3 or 4 is colour is decided by the file's axes, never by the shape, so a stack of
three or four slices stays a stack; masks are never read as colour unless the file says so.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .masks import MaskError, MaskSource, coerce_mask, validate_mask

IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png")

#: Voxel spacing (z, y, x) in nanometres, as :func:`read_spacing` returns and writers take.
Spacing = tuple[float, float, float]

#: Length units ImageJ writes, in nanometres (spacing is read back in nm).
_UNIT_NM: dict[str, float] = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "\u00b5m": 1e3, "\u03bcm": 1e3, "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3,
    "micrometer": 1e3, "micrometre": 1e3, "mm": 1e6, "cm": 1e7, "m": 1e9,
    "a": 0.1, "angstrom": 0.1,
}

#: Data types the ImageJ TIFF format holds (others are written as plain multi-page TIFF).
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)


class PairingError(ValueError):
    """Images and masks in a paired folder that do not match one-to-one."""


class DiskFullError(OSError):
    """The disk filled up while writing; nothing under the final name was touched."""


class DamagedFileError(ValueError):
    """An image or mask file that exists but cannot be decoded (truncated, corrupt).

    One class for every decoder's failure (``zlib.error``, ``struct.error``, PIL's errors...),
    with a message that names the file and says what to do.
    """

    def __init__(self, path: str | os.PathLike, detail: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"{self.path}: the file is damaged or truncated and cannot be read ({detail}). "
            "Replace it with an intact copy (write or copy it again), or move it out of the "
            "folder."
        )


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path.name}: unsupported file type {suffix or '(none)'}; use .tif, .tiff or .png."
        )
    return suffix


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG file into an array, with errors that name the file.

    A file that exists but cannot be decoded raises :class:`DamagedFileError`.
    """
    p = Path(path)
    suffix = _check_suffix(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file.")
    with decoding(p):
        if suffix in (".tif", ".tiff"):
            return _read_tiff(p)[0]
        import imageio.v3 as iio

        return np.asarray(iio.imread(p))


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """A TIFF's first series and its axes (``'YX'``, ``'ZYX'``, ``'YXS'`` for RGB, ...).

    The axes, not the shape, say whether a last axis of 3 or 4 is colour: a stack of three
    slices is ``'ZYX'`` (or ``'SYX'``/``'QYX'`` from older writers), an RGB image ``'YXS'``.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr = np.asarray(series.asarray())
        axes = str(series.axes)
    if len(axes) != arr.ndim:  # squeezed or odd series: describe the array as it came out
        axes = axes[-arr.ndim:] if len(axes) > arr.ndim else "Q" * (arr.ndim - len(axes)) + axes
    return arr, axes


def _is_colour(path: Path, arr: np.ndarray) -> bool:
    """True when ``arr`` read from ``path`` is an RGB(A) picture (colour samples last).

    TIFF: by the file's axes (``...S`` last). PNG is 2-D, so a last axis of 3 or 4 is colour.
    """
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        return False
    if path.suffix.lower() in (".tif", ".tiff"):
        with decoding(path):
            return _read_tiff(path)[1].endswith("S")
    return True


def read_spacing(path: str | os.PathLike) -> tuple[float, float, float] | None:
    """Voxel spacing (z, y, x) in nm a TIFF records, or None when it records none.

    Read from ImageJ metadata (``spacing``, ``unit``) and the X/YResolution tags (pixels per
    unit), as Fiji writes them; units other than nm are converted (a file without a unit gives
    its numbers as they are). Without a z spacing, z is taken equal to x. PNG records none.
    """
    p = Path(path)
    suffix = _check_suffix(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file.")
    if suffix == ".png":
        return None
    import tifffile

    with decoding(p), tifffile.TiffFile(p) as tif:
        page = tif.pages.first
        ij = tif.imagej_metadata or {}
        xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
        runit = page.tags.get("ResolutionUnit")
        runit_value = int(runit.value) if runit is not None else 2  # TIFF default: inch
    per_px = []
    for tag in (yres, xres):
        num, den = tag.value if tag is not None else (1, 1)
        per_px.append(float(num) / float(den) if den and num else 0.0)
    try:
        z_spacing = None if ij.get("spacing") is None else float(ij["spacing"])
    except (TypeError, ValueError):
        z_spacing = None  # unreadable: as if absent
    if z_spacing is not None and not (math.isfinite(z_spacing) and z_spacing > 0):
        z_spacing = None
    unit = str(ij.get("unit", "")).strip()
    if ij:
        scale = _UNIT_NM.get(unit.lower(), 1.0) if unit else 1.0
        has_xy = unit not in ("", "pixel", "pixels") or any(v not in (0.0, 1.0) for v in per_px)
        if z_spacing is None and not has_xy:
            return None
    elif runit_value == 3:  # centimetre: a physical size even without ImageJ's unit
        scale = 1e7
    else:  # inch (usually screen dpi) or none: nothing physical is said
        return None
    y, x = ((scale / v) if v > 0 else scale for v in per_px)
    z = float(z_spacing) * scale if z_spacing is not None else x
    return tuple(float(f"{v:.7g}") for v in (z, y, x))  # type: ignore[return-value]


@contextlib.contextmanager
def decoding(path: str | os.PathLike) -> Iterator[None]:
    """Turn any decoder failure while reading ``path`` into :class:`DamagedFileError`.

    Missing files and permission errors pass through unchanged: the file is not damaged.
    """
    try:
        yield
    except (FileNotFoundError, PermissionError, IsADirectoryError, MemoryError):
        raise
    except DamagedFileError:
        raise
    except Exception as exc:  # zlib.error, struct.error, ValueError, OSError, SyntaxError...
        kind = type(exc).__name__
        if type(exc).__module__ not in ("builtins", "__main__"):
            kind = f"{type(exc).__module__.split('.')[0]}.{kind}"  # zlib.error, not error
        detail = f"{kind}: {exc}" if str(exc) else kind
        raise DamagedFileError(path, detail) from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a grey-level image or (Z, Y, X) stack; RGB(A) images become 2-D grey.

    Whether a last axis of 3 or 4 is colour is decided by the TIFF's axes, so a stack of
    three or four slices stays a stack.
    """
    arr = read_array(path)
    if _is_colour(Path(path), arr) and arr.shape[0] > 4:
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0])
        # luminance (ITU-R 601), kept in the input's dtype range
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.round(grey).astype(arr.dtype)
    return arr


def read_mask(
    path: str | os.PathLike,
    source: MaskSource = "auto",
    *,
    boundary_width: int = 1,
    allow_float: bool = False,
) -> np.ndarray:
    """Read a mask file and coerce it to classes (see :func:`masks.coerce_mask`).

    A TIFF stack is a stack whatever its depth: ``source="auto"`` reads palette colours only
    from a file whose axes say colour (``YXS``), never from a (Z, Y, X) stack.
    """
    arr = read_array(path)
    if source == "auto" and arr.ndim == 3 and not _is_colour(Path(path), arr):
        source = "classes"
    try:
        return coerce_mask(
            arr, source, boundary_width=boundary_width, allow_float=allow_float
        )
    except MaskError as exc:
        raise MaskError(f"{Path(path).name}: {exc}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. With
    ``overwrite=False`` an existing ``path`` is an error (checked before and at the rename).
    A full disk raises :class:`DiskFullError` with a message that says what to do.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and dest.exists():
        raise FileExistsError(f"{dest} already exists; refusing to overwrite it.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 (and some writers replace the file, e.g. safetensors): outputs
        # get what open() would give them, 0666 minus the umask, so a lab can share them
        os.chmod(tmp, new_file_mode())
        _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, dest)
        else:
            # link() fails if dest appeared meanwhile: no race can clobber a file
            os.link(tmp, dest)
            tmp.unlink()
        fsync_dir(dest.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                exc.errno,
                f"the disk is full while writing {dest}; nothing was overwritten. "
                "Free some space or choose another folder, then try again.",
            ) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def current_umask() -> int:
    """The process's umask (read from /proc on Linux; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a new output file gets: ``0o666`` minus the umask, as ``open()`` would give.

    A replaced file gets it too (not the old file's mode): outputs follow the user's umask.
    """
    return 0o666 & ~current_umask()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_array(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    overwrite: bool = True,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Write an array as TIFF (deflate-compressed) or PNG, atomically. Returns the path.

    A (Z, Y, X) array is written as an ImageJ hyperstack (axes ZYX, grey), which Fiji and
    napari open as a stack; an (H, W, 3|4) array with H > 4 as RGB(A). ``spacing`` (z, y, x)
    in nm is recorded as ImageJ ``spacing`` and X/Y resolution (TIFF only).
    """
    dest = Path(path)
    _check_suffix(dest)
    spacing = check_spacing(spacing)
    with atomic_path(dest, overwrite=overwrite) as tmp:
        _encode(tmp, array, dest, spacing=spacing)
    return dest


def check_spacing(spacing: object, *, what: str = "spacing") -> Spacing | None:
    """``spacing`` as three positive finite floats (z, y, x), None for None, or a ValueError
    naming ``what`` (a keyword, a CLI flag) and an example."""
    if spacing is None:
        return None
    try:
        vals = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(np.isfinite(v) and v > 0 for v in vals):
        raise ValueError(
            f"{what} must be three positive numbers (z, y, x) in nm, e.g. (50, 4, 4) for 50 nm "
            f"sections of 4 nm pixels; got {spacing!r}."
        )
    return vals  # type: ignore[return-value]


def _encode(
    tmp: Path, array: np.ndarray, dest: Path, *, spacing: Spacing | None = None,
    stack: bool = False,
) -> None:
    """Encode ``array`` into the file ``tmp`` in the format ``dest``'s suffix names.

    ``stack=True`` (masks) writes any 3-D array as (Z, Y, X), never as colour.
    """
    suffix = _check_suffix(dest)
    arr = np.ascontiguousarray(array)
    if suffix in (".tif", ".tiff"):
        import tifffile

        compression = "zlib" if arr.dtype == np.uint8 else None
        colour = not stack and arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4
        if (arr.ndim == 2 and spacing is None) or colour or arr.ndim > 3:
            tifffile.imwrite(tmp, arr, compression=compression)  # as always
            return
        axes = "ZYX" if arr.ndim == 3 else "YX"
        kwargs: dict = {"photometric": "minisblack", "compression": compression}
        if spacing is not None:
            kwargs["resolution"] = (1.0 / spacing[2], 1.0 / spacing[1])
        if arr.dtype in _IMAGEJ_DTYPES:
            meta: dict = {"axes": axes}
            if spacing is not None:
                meta.update(spacing=spacing[0], unit="nm")
            tifffile.imwrite(tmp, arr, imagej=True, metadata=meta, **kwargs)
        else:  # ImageJ cannot hold this dtype: a plain stack, one page per slice
            tifffile.imwrite(tmp, arr, metadata={"axes": axes}, **kwargs)
        return
    if stack and arr.ndim == 3:
        raise ValueError(
            f"{dest.name}: PNG holds one 2-D slice; this is a stack of shape {arr.shape}."
            " Save it as .tif instead."
        )
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise ValueError(
            f"{dest.name}: PNG holds 2-D 8- or 16-bit images; got {arr.dtype} {arr.shape}."
            " Save as .tif instead."
        )
    import imageio.v3 as iio

    iio.imwrite(tmp, arr, extension=".png")


def write_pair(image_path: str | os.PathLike, image: np.ndarray,
               mask_path: str | os.PathLike, mask: np.ndarray, *,
               spacing: tuple[float, float, float] | None = None) -> tuple[Path, Path]:
    """Write an image and its mask all-or-nothing (as far as a crash goes).

    Both are encoded to temporary files first; then the mask is renamed into place, then the
    image. An error before the renames leaves neither; a crash between the two renames leaves
    a mask without its image, which :func:`pair_complete` reports as not done.
    """
    img_dest, mask_dest = Path(image_path), Path(mask_path)
    valid = validate_mask(mask)
    spacing = check_spacing(spacing)
    # contexts exit innermost first: the mask's rename, then the image's
    with atomic_path(img_dest) as tmp_img, atomic_path(mask_dest) as tmp_mask:
        _encode(tmp_img, image, img_dest, spacing=spacing, stack=valid.ndim == 3)
        _encode(tmp_mask, valid, mask_dest, spacing=spacing, stack=True)
    return img_dest, mask_dest


def pair_complete(image_path: str | os.PathLike, mask_path: str | os.PathLike) -> bool:
    """True when both files exist and decode: a pair a killed run may not have finished is
    not complete."""
    for path in (image_path, mask_path):
        try:
            read_array(path)
        except (ValueError, OSError):
            return False
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_path` left for ``path``."""
    dest = Path(path)
    if not dest.parent.is_dir():
        return []
    stale = [p for p in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp") if p.is_file()]
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


def write_image(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    overwrite: bool = True,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Write an image or (Z, Y, X) stack atomically (TIFF or PNG by suffix), with spacing."""
    return write_array(path, image, overwrite=overwrite, spacing=spacing)


def write_mask(
    path: str | os.PathLike,
    mask: np.ndarray,
    *,
    overwrite: bool = True,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Validate and write a class mask as ``uint8`` atomically (TIFF or PNG by suffix).

    A 3-D mask is always a (Z, Y, X) stack (an ImageJ hyperstack), never colour, whatever
    its depth; ``spacing`` (z, y, x) in nm is recorded in a TIFF.
    """
    valid = validate_mask(mask)
    dest = Path(path)
    _check_suffix(dest)
    spacing = check_spacing(spacing)
    with atomic_path(dest, overwrite=overwrite) as tmp:
        _encode(tmp, valid, dest, spacing=spacing, stack=True)
    return dest


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """A SHA-256 of an array's dtype, shape and bytes: a stable id for in-memory masks."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


@dataclass(frozen=True)
class Pair:
    """One image and its mask, matched by file stem."""

    stem: str
    image: Path
    mask: Path


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (TIFF/PNG) directly in ``folder``, sorted by name; hidden files skipped."""
    p = Path(folder)
    return sorted(
        f for f in p.iterdir()
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )


def find_pairs(folder: str | os.PathLike) -> list[Pair]:
    """The image/mask pairs of a paired folder (``images/`` and ``masks/`` matched by stem).

    Raises :class:`PairingError` listing every file that has no partner, so that a user can
    fix all of them at once.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PairingError(f"{root}: not a folder.")
    img_dir, mask_dir = root / "images", root / "masks"
    missing = [d.name + "/" for d in (img_dir, mask_dir) if not d.is_dir()]
    if missing:
        raise PairingError(
            f"{root}: a paired folder holds images/ and masks/ with matching file names; "
            f"missing {', '.join(missing)}."
        )
    images = _by_stem(root, img_dir)
    masks = _by_stem(root, mask_dir)
    if not images and not masks:
        raise PairingError(f"{root}: images/ and masks/ hold no .tif/.tiff/.png files.")
    lonely_img = sorted(set(images) - set(masks))
    lonely_mask = sorted(set(masks) - set(images))
    if lonely_img or lonely_mask:
        lines = [f"{root}: images and masks do not pair by file name:"]
        lines += [f"  images/{images[s].name} has no mask" for s in lonely_img[:20]]
        lines += [f"  masks/{masks[s].name} has no image" for s in lonely_mask[:20]]
        extra = len(lonely_img) + len(lonely_mask) - 40
        if extra > 0:
            lines.append(f"  ... and {extra} more")
        raise PairingError("\n".join(lines))
    return [Pair(s, images[s], masks[s]) for s in sorted(images)]


def _by_stem(root: Path, folder: Path) -> dict[str, Path]:
    """The files of ``folder`` by stem; two files with one stem (``a.tif``, ``a.png``) are a
    :class:`PairingError`, as either could be the partner."""
    found: dict[str, list[Path]] = {}
    for f in list_images(folder):
        found.setdefault(f.stem, []).append(f)
    clashes = [files for files in found.values() if len(files) > 1]
    if clashes:
        raise PairingError(
            f"{root}: files in {folder.name}/ differ only by extension, so which one pairs is "
            "unclear: " + "; ".join(" and ".join(f.name for f in c) for c in clashes[:20])
            + ". Rename or remove one of each.")
    return {stem: files[0] for stem, files in found.items()}


def is_paired_folder(folder: str | os.PathLike) -> bool:
    """True if ``folder`` has ``images/`` and ``masks/`` subfolders."""
    p = Path(folder)
    return (p / "images").is_dir() and (p / "masks").is_dir()
