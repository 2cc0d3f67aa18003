"""Seeded synthetic layouts: new 3-class masks to synthesize EM images from, and variations.

Two kinds of new masks: ``"dense"`` tissue (cells packed edge to edge like the ISBI 2012
neuropil, no background) and ``"sparse"`` organelles (mitochondria-like blobs on background).
:func:`variation` and :func:`morphological_variation` make new masks from an existing one
(painted or real), so a few annotated masks give many training inputs.

Every function is pure NumPy/SciPy, returns a ``uint8`` class mask and is reproducible: the
same ``seed`` gives the same array. A shape ``(Z, H, W)`` or a 3-D mask is handled slice by
slice, slice ``i`` using the ``i``-th seed spawned from ``seed`` (slice 0 of a stack equals the
2-D result for the same seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np
from scipy import fft
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .masks import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    _disk,
    instances_to_mask,
    mask_to_instances,
    validate_mask,
)

LAYOUT_KINDS: tuple[str, str] = ("dense", "sparse")

#: Mean cell area (px²) of dense tissue at ``density=1``; density ``d`` gives ``1200 / d``.
#: ``d = 0.5`` on 512 x 512 gives about 109 cells, like ISBI 2012 (88-137 per slice).
CELL_AREA_AT_FULL_DENSITY: float = 1200.0

#: Smallest allowed height and width of a layout: below this no tissue fits.
MIN_SIDE: int = 16

#: Largest allowed membrane / ring width in pixels.
MAX_BOUNDARY_WIDTH: int = 32

#: Default range of an organelle's short axis as a fraction of its long axis.
BLOB_ASPECT: tuple[float, float] = (0.35, 0.7)

_CROSS = ndi.generate_binary_structure(2, 1)
_SQUARE = np.ones((3, 3), dtype=bool)

_Slice2D = Callable[[tuple[int, int], np.random.Generator], np.ndarray]


# ----------------------------------------------------------------------------- public API


def make_layout(
    kind: str,
    shape: Sequence[int],
    *,
    density: float = 0.5,
    boundary_width: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """A new layout of ``kind`` (one of :data:`LAYOUT_KINDS`), e.g. for a "new mask" button."""
    if kind == "dense":
        return dense_tissue(shape, density=density, boundary_width=boundary_width, seed=seed)
    if kind == "sparse":
        return sparse_organelles(shape, density=density, boundary_width=boundary_width, seed=seed)
    raise ValueError(f"unknown layout kind {kind!r}; use one of {', '.join(LAYOUT_KINDS)}.")


def dense_tissue(
    shape: Sequence[int],
    *,
    density: float = 0.5,
    boundary_width: int = 3,
    irregularity: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Cells packed edge to edge with closed membranes and no background, like EM neuropil.

    ``density`` in (0, 1] sets the number of cells: about ``density * H * W / 1200`` (mean
    cell area ``1200 / density`` px², at least 2 cells); 0.5 on 512 x 512 gives ~109 cells, as
    in ISBI 2012. ``boundary_width`` is the membrane thickness between two cells (px), thicker
    at some junctions and stretches. ``irregularity`` in [0, 1] scales the spread of cell sizes,
    the waviness of membranes and the junction blobs; 0 gives a plain polygonal tessellation.
    """
    hw = _check_shape(shape)
    d = _check_fraction(density, "density")
    w = _check_width(boundary_width)
    irr = _check_unit(irregularity, "irregularity")
    return _per_slice_shape(hw, seed, lambda s, rng: _dense_2d(s, d, w, irr, rng)[0])


def sparse_organelles(
    shape: Sequence[int],
    *,
    density: float = 0.3,
    boundary_width: int = 2,
    size: tuple[float, float] = (10, 40),
    aspect: tuple[float, float] = BLOB_ASPECT,
    seed: int = 0,
) -> np.ndarray:
    """Mitochondria-like blobs on background, each an interior inside a closed boundary ring.

    ``density`` in (0, 1] is the fraction of the area the blobs cover (rings included), up to
    what fits: blobs keep apart while there is room (up to ~0.35), then pack and touch, still
    as separate objects; ~0.75 is the most reachable. ``size`` is the range of blob lengths (px,
    long axis, log-uniform); the short axis is ``aspect`` (uniform, default 0.35-0.7) of it, and
    at least ``2 * boundary_width + 3`` so every blob keeps an interior inside its ring of
    ``boundary_width`` px.
    """
    hw = _check_shape(shape)
    d = _check_fraction(density, "density")
    w = _check_width(boundary_width)
    lo, hi = _check_size(size)
    asp = _check_aspect(aspect)
    return _per_slice_shape(hw, seed, lambda s, rng: _sparse_2d(s, d, w, (lo, hi), rng, asp)[0])


def variation(mask: np.ndarray, *, strength: float = 0.5, seed: int = 0) -> np.ndarray:
    """A seeded elastic deformation of ``mask`` (2-D, or 3-D slice by slice), boundaries closed.

    Class mask and objects are warped together by a smooth random displacement field (RMS
    about ``6 * strength`` px, less on slices under 128 px; features ~20-60 px); where the warp
    opens a gap, interior that would touch another object's interior or background becomes
    boundary. ``strength`` in [0, 1]; 0 returns an unchanged copy.
    """
    m = validate_mask(mask)
    s = _check_unit(strength, "strength")
    if s == 0:
        _check_seed(seed)
        return m.copy()
    return _per_slice_mask(m, seed, lambda sl, rng: _vary_2d(sl, s, rng)[0])


def morphological_variation(
    mask: np.ndarray, *, grow: int = 1, coverage: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Thicken (``grow > 0``) or thin (``grow < 0``) boundaries by ``|grow|`` px per side.

    The change is applied in smooth random patches covering about ``coverage`` of the image
    (1.0: everywhere, where ``seed`` has no effect). Thinning never opens a boundary: a boundary
    pixel becomes interior only where all its 8 neighbours belong to the same object.
    """
    m = validate_mask(mask)
    if isinstance(grow, bool) or not isinstance(grow, Integral):
        raise ValueError(f"grow must be an integer number of pixels; got {grow!r}.")
    if abs(int(grow)) > MAX_BOUNDARY_WIDTH:
        raise ValueError(f"grow must be within ±{MAX_BOUNDARY_WIDTH} px; got {grow}.")
    cov = _check_unit(coverage, "coverage")
    if grow == 0 or cov == 0:
        _check_seed(seed)
        return m.copy()
    return _per_slice_mask(m, seed, lambda sl, rng: _morph_2d(sl, int(grow), cov, rng))


# ----------------------------------------------------------------------------- validation


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple of ints, (H, W) or (Z, H, W) with H, W >= :data:`MIN_SIDE`."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be (H, W) or (Z, H, W); got {shape!r}.") from None
    if len(dims) not in (2, 3) or not all(
        isinstance(s, Integral) and not isinstance(s, bool) for s in dims
    ):
        raise ValueError(f"shape must be (H, W) or (Z, H, W) of integers; got {shape!r}.")
    dims = tuple(int(s) for s in dims)
    if len(dims) == 3 and dims[0] < 1:
        raise ValueError(f"a stack needs at least one slice; got shape {dims}.")
    if min(dims[-2:]) < MIN_SIDE:
        raise ValueError(
            f"shape {dims} is too small: height and width must be at least {MIN_SIDE} px."
        )
    return dims


def _real(value: object, name: str) -> float:
    """``value`` as a finite float, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")
    return float(value)


def _check_fraction(value: object, name: str) -> float:
    """A number in (0, 1]."""
    v = _real(value, name)
    if not 0 < v <= 1:
        raise ValueError(f"{name} must be in (0, 1]; got {value!r}.")
    return v


def _check_unit(value: object, name: str) -> float:
    """A number in [0, 1]."""
    v = _real(value, name)
    if not 0 <= v <= 1:
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}.")
    return v


def _check_width(width: object) -> int:
    """A boundary width: an integer number of pixels, 1..MAX_BOUNDARY_WIDTH."""
    if isinstance(width, bool) or not isinstance(width, Integral):
        raise ValueError(f"boundary_width must be an integer number of pixels; got {width!r}.")
    if not 1 <= int(width) <= MAX_BOUNDARY_WIDTH:
        raise ValueError(
            f"boundary_width must be between 1 and {MAX_BOUNDARY_WIDTH} px; got {width}."
        )
    return int(width)


def _check_size(size: object) -> tuple[float, float]:
    """A (min, max) blob length in px: positive, min <= max."""
    try:
        lo, hi = (_real(v, "size") for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"size must be (min, max) blob length in px; got {size!r}.") from None
    if not 0 < lo <= hi:
        raise ValueError(f"size must be (min, max) with 0 < min <= max (px); got {size!r}.")
    return lo, hi


def _check_aspect(aspect: object) -> tuple[float, float]:
    """A (min, max) short / long axis ratio: 0 < min <= max <= 1."""
    try:
        lo, hi = (_real(v, "aspect") for v in aspect)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"aspect must be (min, max) short / long axis ratio; got {aspect!r}.") \
            from None
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"aspect must be (min, max) with 0 < min <= max <= 1; got {aspect!r}.")
    return lo, hi


def _check_seed(seed: object) -> int:
    """A seed: a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    return int(seed)


# ----------------------------------------------------------------------------- stacks, seeds


def _rngs(seed: object, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seed`` (one per slice)."""
    children = np.random.SeedSequence(_check_seed(seed)).spawn(n)
    return [np.random.default_rng(c) for c in children]


def _per_slice_shape(shape: tuple[int, ...], seed: object, fn: _Slice2D) -> np.ndarray:
    """Run a 2-D generator for (H, W), or for each slice of (Z, H, W) with derived seeds."""
    hw = (shape[-2], shape[-1])
    n = 1 if len(shape) == 2 else shape[0]
    slices = [fn(hw, rng).astype(np.uint8, copy=False) for rng in _rngs(seed, n)]
    return slices[0] if len(shape) == 2 else np.stack(slices)


def _per_slice_mask(
    mask: np.ndarray, seed: object, fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]
) -> np.ndarray:
    """Apply a seeded 2-D mask transform to a mask or to each slice of a stack."""
    slices = mask[None] if mask.ndim == 2 else mask
    rngs = _rngs(seed, len(slices))
    out = [fn(s, rng).astype(np.uint8, copy=False) for s, rng in zip(slices, rngs, strict=True)]
    return out[0] if mask.ndim == 2 else np.stack(out)


# ----------------------------------------------------------------------------- noise, warps


def _smooth_noise(
    hw: tuple[int, int], scales: Sequence[tuple[float, float]], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two independent smooth random fields: sums of Gaussian-filtered noise.

    ``scales`` holds ``(sigma_px, rms)`` pairs; each adds a component of about that RMS and
    feature size. Filtering is done by FFT (periodic), one complex transform for both fields.
    """
    h, w = hw
    z = np.empty((h, w), dtype=np.complex64)
    z.real = rng.standard_normal((h, w), dtype=np.float32)
    z.imag = rng.standard_normal((h, w), dtype=np.float32)
    spec = fft.fft2(z, overwrite_x=True)
    transfer = np.zeros((h, w), dtype=np.float32)
    for sigma, rms in scales:  # a Gaussian is separable: outer product of 1-D transfers
        gy = np.exp(-2.0 * math.pi**2 * sigma**2 * fft.fftfreq(h) ** 2)
        gx = np.exp(-2.0 * math.pi**2 * sigma**2 * fft.fftfreq(w) ** 2)
        norm = math.sqrt(float(np.mean(gy * gy) * np.mean(gx * gx)))
        transfer += np.multiply.outer(gy * (rms / norm), gx).astype(np.float32)
    spec *= transfer
    field = fft.ifft2(spec, overwrite_x=True)
    return field.real.copy(), field.imag.copy()


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Fold indices into 0..n-1 by mirroring at the edges (like ``mode='mirror'``)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx > n - 1, period - idx, idx)


def _warp(arrays: Sequence[np.ndarray], dy: np.ndarray, dx: np.ndarray) -> list[np.ndarray]:
    """Sample each 2-D array at ``(y + dy, x + dx)``, nearest neighbour, mirrored at edges."""
    h, w = dy.shape
    iy = _reflect(np.rint(np.arange(h, dtype=np.float32)[:, None] + dy).astype(np.intp), h)
    ix = _reflect(np.rint(np.arange(w, dtype=np.float32)[None, :] + dx).astype(np.intp), w)
    return [a[iy, ix] for a in arrays]


def _neighbours(a: np.ndarray, diagonal: bool = False) -> list[np.ndarray]:
    """The 4-neighbour (or 8-neighbour) values of every pixel; the image edge repeats itself."""
    p = np.pad(a, 1, mode="edge")
    out = [p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]
    if diagonal:
        out += [p[:-2, :-2], p[:-2, 2:], p[2:, :-2], p[2:, 2:]]
    return out


def _close_gaps(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Close every boundary: interior next to background or another object becomes boundary.

    Background counts when 4-adjacent; another object's interior also when diagonal, so that
    8-connected labelling (``skimage.measure.label``'s default) cannot merge two objects.
    """
    interior = mask == INTERIOR
    bad = np.logical_or.reduce(_neighbours(mask == BACKGROUND))
    for nb_lab, nb_int in zip(
        _neighbours(labels, diagonal=True), _neighbours(interior, diagonal=True), strict=True
    ):
        bad |= nb_int & (nb_lab != labels)
    out = mask.copy()
    out[interior & bad] = BOUNDARY
    return out


def _paint_disks(
    out: np.ndarray, centres: np.ndarray, radii: np.ndarray, values: np.ndarray
) -> None:
    """Paint filled disks (vectorised per distinct radius, radii rounded to 0.5 px)."""
    h, w = out.shape
    r2 = np.round(np.asarray(radii) * 2) / 2
    for r in np.unique(r2):
        sel = r2 == r
        rr = math.floor(r)
        yy, xx = np.mgrid[-rr : rr + 1, -rr : rr + 1]
        inside = yy * yy + xx * xx <= r * r
        oy, ox = yy[inside], xx[inside]
        py = centres[sel, 0, None] + oy[None, :]
        px = centres[sel, 1, None] + ox[None, :]
        ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        vals = np.broadcast_to(values[sel, None], py.shape)
        out[py[ok], px[ok]] = vals[ok]


# ----------------------------------------------------------------------------- dense tissue


def _cell_count(hw: tuple[int, int], density: float) -> int:
    """Number of cells for ``density`` (mean cell area ``1200 / density`` px², at least 2)."""
    return max(2, round(density * hw[0] * hw[1] / CELL_AREA_AT_FULL_DENSITY))


def _large_cells(
    hw: tuple[int, int], n: int, irregularity: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Centres and core radii of the large cells (like axon profiles): few, round, apart.

    ``0.3 * irregularity`` of the ``n`` cells are large; together they take about
    ``0.9 * irregularity`` of the area (ISBI: the largest ~15 % of cells hold ~60 %).
    Random sequential addition, largest first; a disk that finds no room shrinks.
    """
    h, w = hw
    n_big = round(0.3 * irregularity * n)
    if n_big == 0:
        return np.zeros((0, 2), dtype=np.intp), np.zeros(0)
    share = min(0.6, 0.9 * irregularity) * h * w
    areas = np.sort(rng.lognormal(0.0, 0.5, n_big))[::-1]
    radii = 0.85 * np.sqrt(areas * share / areas.sum() / math.pi)
    margin = 0.4 * math.sqrt(h * w / n)
    centres = np.zeros((0, 2))
    kept: list[float] = []
    for r in radii:
        for shrink in (1.0, 0.8, 0.6):
            cand = rng.uniform((0, 0), (h, w), size=(32, 2))
            gap = np.linalg.norm(cand[:, None] - centres[None], axis=-1) - np.asarray(kept)
            fits = (gap >= r * shrink + margin).all(axis=1)
            if fits.any():
                centres = np.vstack([centres, cand[np.argmax(fits)]])
                kept.append(r * shrink)
                break
    return np.rint(centres).astype(np.intp), np.asarray(kept)


def _small_cells(
    hw: tuple[int, int],
    n: int,
    big: tuple[np.ndarray, np.ndarray],
    irregularity: float,
    min_gap: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n`` (or a few fewer) centres filling the space around the large cells.

    Candidates come from an intensity ``exp(beta * noise)`` (regions of finer and coarser
    processes); a hard core of half the local spacing, at least ``min_gap`` px (Matérn II
    thinning), keeps them apart, so that no cell is all membrane.
    """
    h, w = hw
    big_c, big_r = big
    free = h * w - math.pi * float(np.sum((big_r / 0.85) ** 2))
    spacing = math.sqrt(max(free, 0.1 * h * w) / max(n, 1))
    noise, _ = _smooth_noise(hw, [(2.0 * spacing, 1.0)], rng)
    lam = np.exp(1.4 * irregularity * noise.astype(np.float64))
    taken = np.zeros(hw, dtype=bool)  # no candidates inside large cells
    _paint_disks(taken, big_c, big_r + 0.3 * spacing, np.ones(len(big_c), dtype=bool))
    mean_lam = float(lam.mean())
    lam[taken] = 0.0
    cdf = np.cumsum(lam.ravel())
    if cdf[-1] <= 0:
        return np.zeros((0, 2), dtype=np.intp)
    idx = np.minimum(np.searchsorted(cdf, rng.random(4 * n + 8) * cdf[-1]), h * w - 1)
    pts = np.column_stack(np.unravel_index(idx, hw)).astype(np.intp)
    local = spacing * np.sqrt(mean_lam / lam.ravel()[idx])  # local spacing at each point
    core = np.maximum(0.5 * local, min_gap)
    keep = _matern_thin(pts, core, rng)
    keep &= _surface_distance(pts, big_c, big_r) >= core
    pts = pts[keep]
    if len(pts) > n:
        pts = pts[rng.permutation(len(pts))[:n]]
    return pts


def _surface_distance(pts: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest disk surface (inf without disks)."""
    if len(centres) == 0 or len(pts) == 0:
        return np.full(len(pts), np.inf)
    out = np.full(len(pts), np.inf)
    for start in range(0, len(centres), 256):  # chunks keep the pairwise array small
        c, r = centres[start : start + 256], radii[start : start + 256]
        d2 = np.square(pts[:, None, 0] - c[None, :, 0]) + np.square(pts[:, None, 1] - c[None, :, 1])
        out = np.minimum(out, (np.sqrt(d2) - r[None, :]).min(axis=1))
    return out


def _matern_thin(pts: np.ndarray, core: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Matérn II thinning: drop a point if a closer-than-``core`` neighbour has a lower mark."""
    if len(pts) < 2:
        return np.ones(len(pts), dtype=bool)
    dist, nb = cKDTree(pts).query(pts, k=min(9, len(pts)))
    dist, nb = dist[:, 1:], nb[:, 1:]
    marks = rng.random(len(pts))
    clash = (dist < np.minimum(core[:, None], core[nb])) & (marks[nb] < marks[:, None])
    return ~clash.any(axis=1)


def _cell_labels(
    hw: tuple[int, int], n: int, irregularity: float, min_gap: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells as an additively weighted Voronoi (Apollonius) diagram of disks (labels 1..).

    Large cells keep their core disk; each small cell gets a disk of ``alpha`` times half the
    distance to its nearest neighbour or large disk (so no two overlap). Every pixel joins the
    nearest disk, which curves the membranes around large cells, like axons among processes.
    Returns the labels and the large cells' centres and core radii.
    """
    big_c, big_r = _large_cells(hw, n, irregularity, rng)
    pts = _small_cells(hw, n - len(big_c), (big_c, big_r), irregularity, min_gap, rng)
    alpha = 0.15 + 0.7 * irregularity
    nn = cKDTree(pts).query(pts, k=2)[0][:, 1] if len(pts) > 1 else np.full(len(pts), np.inf)
    room = np.minimum(nn / 2, _surface_distance(pts, big_c, big_r))
    radii = np.maximum(0.0, alpha * np.minimum(room, 4 * max(hw)) - 0.5)
    centres = np.vstack([big_c.reshape(-1, 2), pts])
    disks = np.zeros(hw, dtype=np.int32)
    all_r = np.concatenate([big_r, radii])
    _paint_disks(disks, centres, all_r, np.arange(1, len(centres) + 1, dtype=np.int32))
    _, (iy, ix) = ndi.distance_transform_edt(disks == 0, return_indices=True)
    return disks[iy, ix], big_c, big_r


def _inclusions(
    labels: np.ndarray,
    big: tuple[np.ndarray, np.ndarray],
    width: int,
    irregularity: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Paint small round profiles inside some large cells (in place); return the dark ones' ids.

    ISBI shows a few vesicle / mitochondrion profiles inside large axons, some as small cells
    with their own membrane and some as solid dark blobs (the returned ids).
    """
    centres, radii = big
    hosts = np.flatnonzero(rng.random(len(centres)) < 0.6 * irregularity)
    a = rng.uniform(3.0, 9.0, len(hosts)) + width
    fits = radii[hosts] > a + width + 4
    hosts, a = hosts[fits], a[fits]
    k = len(hosts)
    reach = rng.uniform(0, 1, k) * (radii[hosts] - a - width - 2)
    phi = rng.uniform(0, 2 * math.pi, k)
    blobs = np.column_stack(
        [
            centres[hosts, 0] + reach * np.sin(phi),
            centres[hosts, 1] + reach * np.cos(phi),
            a,
            a * rng.uniform(0.5, 1.0, k),
            rng.uniform(0, math.pi, k),
            np.zeros(k),
        ]
    )
    start = int(labels.max()) + 1
    ((flat, owner),) = _stamps(labels.shape, blobs)
    np.put(labels, flat, start + owner)
    ids = np.arange(start, start + k)
    return ids[rng.random(k) < 0.4]


def _membranes(labels: np.ndarray, width: int) -> np.ndarray:
    """Class mask with a membrane of ``width`` px between cells, split ceil/floor over sides.

    (``instances_to_mask`` draws ``width`` px on *each* side; here ``width`` is the total.)
    """
    hi, lo = (width + 1) // 2, width // 2
    # a 3 x 3 footprint for hi == 1 keeps cells from touching diagonally (8-connected leaks)
    foot = _SQUARE if hi == 1 else _disk(hi)
    edge = ndi.maximum_filter(labels, footprint=foot, mode="nearest") > labels
    if lo:
        edge |= ndi.minimum_filter(labels, footprint=_disk(lo), mode="nearest") < labels
    return np.where(edge, BOUNDARY, INTERIOR).astype(np.uint8)


def _junction_blobs(
    mask: np.ndarray, labels: np.ndarray, width: int, irregularity: float, rng: np.random.Generator
) -> None:
    """Swell membranes into dark blobs around some junctions of three or more cells (in place).

    Within a random radius of a chosen junction the membrane is dilated by 1-4 px, so blobs
    follow the membranes (triangular, elongated) instead of being round dots.
    """
    if irregularity == 0:
        return
    centres = _junction_centres(labels)
    n = len(centres)
    if n == 0:
        return
    chosen = rng.random(n) < 0.3 + 0.6 * irregularity
    radii = 2 + width + rng.gamma(1.2, 4.0 * irregularity, size=n)
    _swell_around(mask, centres[chosen], radii[chosen])


def _junction_centres(labels: np.ndarray) -> np.ndarray:
    """(n, 2) centres of the places where three or more cells of ``labels`` meet."""
    hi = ndi.maximum_filter(labels, footprint=_SQUARE, mode="nearest")
    lo = ndi.minimum_filter(labels, footprint=_SQUARE, mode="nearest")
    junction, n = ndi.label((hi > labels) & (lo < labels), structure=_SQUARE)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    boxes = ndi.find_objects(junction)
    return np.array(
        [[(b[0].start + b[0].stop) // 2, (b[1].start + b[1].stop) // 2] for b in boxes]
    )


def _swell_around(mask: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> None:
    """Dilate the membrane by 1-4 px (radius / 4) within ``radii`` of ``centres`` (in place)."""
    level = np.clip(np.rint(radii / 4), 1, 4).astype(np.int8)
    zone = np.zeros(mask.shape, dtype=np.int8)
    _paint_disks(zone, centres, radii, level)
    swollen = mask == BOUNDARY
    for k in range(1, 5):  # alternate cross and square: octagons, close to disks
        swollen = ndi.binary_dilation(swollen, structure=_CROSS if k % 2 else _SQUARE)
        mask[swollen & (zone >= k)] = BOUNDARY


def _thick_stretches(
    mask: np.ndarray, spacing: float, irregularity: float, rng: np.random.Generator
) -> None:
    """Thicken membranes by 1 px per side in smooth random patches, 2 px in some (in place)."""
    if irregularity == 0:
        return
    field, _ = _smooth_noise(mask.shape, [(0.4 * spacing, 1.0)], rng)
    _thicken_where(mask, field, irregularity)


def _thicken_where(mask: np.ndarray, field: np.ndarray, irregularity: float) -> None:
    """:func:`_thick_stretches` with its random field given (layout_stacks varies it in z)."""
    grown = mask == BOUNDARY
    for frac in (1.0, 0.4):
        patch = field > np.quantile(field, 1.0 - frac * irregularity)
        grown = ndi.binary_dilation(grown, structure=_CROSS)
        mask[grown & patch] = BOUNDARY


def _drop_specks(mask: np.ndarray, min_area: int) -> None:
    """Interior specks smaller than ``min_area`` px become boundary (in place)."""
    comp, n = ndi.label(mask == INTERIOR, structure=_CROSS)
    if n:
        area = np.bincount(comp.ravel(), minlength=n + 1)
        small = area < min_area
        small[0] = False
        mask[small[comp]] = BOUNDARY


def _dense_2d(
    hw: tuple[int, int], density: float, width: int, irregularity: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One dense-tissue slice and the cell labels it was drawn from."""
    n = _cell_count(hw, density)
    spacing = math.sqrt(hw[0] * hw[1] / n)
    labels, big_c, big_r = _cell_labels(hw, n, irregularity, 1.5 * width + 4, rng)
    dark = _inclusions(labels, (big_c, big_r), width, irregularity, rng)
    dy, dx = _smooth_noise(
        hw,
        [
            (0.5 * spacing, 0.25 * spacing * irregularity),
            (6.0, 1.8 * irregularity),
            (2.0, 0.5 * irregularity),
        ],
        rng,
    )
    (labels,) = _warp([labels], dy, dx)
    mask = _membranes(labels, width)
    mask[np.isin(labels, dark)] = BOUNDARY
    _thick_stretches(mask, spacing, irregularity, rng)
    _junction_blobs(mask, labels, width, irregularity, rng)
    _drop_specks(mask, max(6, width * width))
    return mask, labels


# ----------------------------------------------------------------------------- organelles


def _stamps(
    hw: tuple[int, int],
    blobs: np.ndarray,
    grows: Sequence[float] = (0.0,),
    warp: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pixels of many blobs at once, for each grow distance: (flat indices, owning row).

    ``blobs`` rows are (cy, cx, a, b, theta, m): semi-axes ``a`` along ``theta`` and ``b``;
    ``m`` in [0, 1] blends an ellipse (0) into a capsule (1, straight sides, round ends, as
    mitochondria often are). With ``warp = (dy, dx)`` pixel ``p`` is tested at ``p + d(p)``
    with sub-pixel precision, which bends blobs smoothly (no nearest-neighbour stair steps).
    Blobs are rasterised in groups of similar size, each on a box that fits it.
    """
    order = np.argsort(blobs[:, 2], kind="stable")
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for group in np.array_split(order, max(1, min(4, len(order) // 64))):
        parts.append(_stamp_group(hw, blobs[group], group, grows, warp))
    out = []
    for per_grow in zip(*parts, strict=True):
        flats, owners = zip(*per_grow, strict=True)
        out.append((np.concatenate(flats), np.concatenate(owners)))
    if not parts:
        out = [(np.zeros(0, np.intp), np.zeros(0, np.intp)) for _ in grows]
    return out


def _stamp_group(
    hw: tuple[int, int],
    blobs: np.ndarray,
    rows: np.ndarray,
    grows: Sequence[float],
    warp: tuple[np.ndarray, np.ndarray] | None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_stamps` for one group of blobs; ``rows`` are their row numbers in the caller."""
    cy, cx, a, b, theta, m = blobs.T
    r = math.ceil(float(np.max(a, initial=1.0)) + max(grows))
    off = np.arange(-r, r + 2, dtype=np.intp)
    y0, x0 = np.floor(cy).astype(np.intp), np.floor(cx).astype(np.intp)
    offf = off.astype(np.float32)
    fy = (y0 - cy).astype(np.float32)[:, None, None] + offf[None, :, None]
    fx = (x0 - cx).astype(np.float32)[:, None, None] + offf[None, None, :]
    if warp is not None:
        iy = np.clip(y0[:, None, None] + off[None, :, None], 0, hw[0] - 1)
        ix = np.clip(x0[:, None, None] + off[None, None, :], 0, hw[1] - 1)
        fy, fx = fy + warp[0][iy, ix], fx + warp[1][iy, ix]
    c = np.cos(theta).astype(np.float32)[:, None, None]
    s = np.sin(theta).astype(np.float32)[:, None, None]
    half = (m * (a - b)).astype(np.float32)[:, None, None]  # half length of the straight part
    along = np.maximum(np.abs(fy * c + fx * s) - half, 0)
    across = np.square(fx * c - fy * s)
    out = []
    for g in grows:
        ia = (1.0 / (a + g - half[:, 0, 0])).astype(np.float32)[:, None, None]
        ib = (1.0 / np.square(b + g)).astype(np.float32)[:, None, None]
        owner, iy, ix = np.nonzero(np.square(along * ia) + across * ib <= 1.0)
        py, px = y0[owner] + off[iy], x0[owner] + off[ix]
        inside = (py >= 0) & (py < hw[0]) & (px >= 0) & (px < hw[1])
        out.append((py[inside] * hw[1] + px[inside], rows[owner[inside]]))
    return out


def _blob_params(
    n: int,
    width: int,
    size: tuple[float, float],
    centres: np.ndarray,
    rng: np.random.Generator,
    longest: float,
    aspect: tuple[float, float] = BLOB_ASPECT,
) -> np.ndarray:
    """Random blobs at ``centres`` as rows (cy, cx, a, b, theta, m); log-uniform length.

    Lengths are capped at ``longest`` (but not below ``size[0]``) so a small image is not
    covered by a single blob; blobs are at least ``2 * width + 3`` px across, so that each
    keeps an interior inside its ring.
    """
    length = np.exp(rng.uniform(math.log(size[0]), math.log(size[1]), n))
    length = np.maximum(np.minimum(length, max(size[0], longest)), 2 * width + 3)
    short = np.clip(length * rng.uniform(aspect[0], aspect[1], n), 2 * width + 3, length)
    jitter = rng.random((n, 2))
    return np.column_stack(
        [
            centres[:, 0] + jitter[:, 0],
            centres[:, 1] + jitter[:, 1],
            length / 2,
            short / 2,
            rng.uniform(0, math.pi, n),
            rng.uniform(0.0, 0.8, n),
        ]
    )


def _axis_points(blobs: np.ndarray, k: int = 5) -> np.ndarray:
    """``k`` points along each blob's long axis, ``(n, k, 2)``: the blob lies within ``b``."""
    t = np.linspace(-1.0, 1.0, k)
    half = (blobs[:, 2] - blobs[:, 3])[:, None] * t[None, :]
    theta = blobs[:, 4, None]
    return np.stack(
        [blobs[:, 0, None] + half * np.cos(theta), blobs[:, 1, None] + half * np.sin(theta)], -1
    )


def _clashes(cand: np.ndarray, placed: np.ndarray, gap: float) -> np.ndarray:
    """Candidates that come closer than ``gap`` px to a placed blob or an earlier candidate.

    Blobs are compared as capsules (disks of radius ``b`` along the long axis, which contain
    the blob), through k-d trees, so a whole batch is tested at once.
    """
    k = 5
    n = len(cand)
    pts, own = _axis_points(cand, k).reshape(-1, 2), np.repeat(np.arange(n), k)
    rad = np.repeat(cand[:, 3], k)
    clash = np.zeros(n, dtype=bool)
    if len(placed) and n:
        ppts, prad = _axis_points(placed, k).reshape(-1, 2), np.repeat(placed[:, 3], k)
        reach = float(rad.max() + prad.max() + gap)
        d, j = cKDTree(ppts).query(pts, k=min(8, len(ppts)), distance_upper_bound=reach)
        d, j = d.reshape(len(pts), -1), j.reshape(len(pts), -1)
        found = np.isfinite(d)
        hit = found & (d < rad[:, None] + prad[np.where(found, j, 0)] + gap)
        clash[own[hit.any(axis=1)]] = True
    alive = np.flatnonzero(~clash[own])  # only survivors can clash with each other
    if alive.size:
        sub = cKDTree(pts[alive]).query_pairs(float(2 * rad.max() + gap), output_type="ndarray")
        i, j = alive[sub[:, 0]], alive[sub[:, 1]]
        oi, oj = own[i], own[j]
        d = np.hypot(*(pts[i] - pts[j]).T)
        hit = (oi != oj) & (d < rad[i] + rad[j] + gap)
        clash[np.maximum(oi[hit], oj[hit])] = True  # the later candidate gives way
    return clash


def _mean_blob_area(
    size: tuple[float, float], width: int, longest: float,
    aspect: tuple[float, float] = BLOB_ASPECT,
) -> float:
    """Expected blob area (px²) for :func:`_blob_params`, by quadrature over the lengths."""
    length = np.exp(np.linspace(math.log(size[0]), math.log(size[1]), 64))
    length = np.maximum(np.minimum(length, max(size[0], longest)), 2 * width + 3)
    # the literal keeps the default's bytes ((0.35 + 0.7) / 2 rounds to 0.5249999999999999)
    mean_aspect = 0.525 if aspect == BLOB_ASPECT else 0.5 * (aspect[0] + aspect[1])
    short = np.clip(length * mean_aspect, 2 * width + 3, length)
    return float(np.mean(math.pi / 4 * length * short))


def _place_blobs(
    hw: tuple[int, int],
    density: float,
    width: int,
    size: tuple[float, float],
    rng: np.random.Generator,
    warp: tuple[np.ndarray, np.ndarray] | None = None,
    aspect: tuple[float, float] = BLOB_ASPECT,
) -> np.ndarray:
    """Instance labels of random blobs covering about ``density`` of the area.

    Random sequential addition in vectorised rounds: first blobs keep ``gap`` px clear of each
    other; when that saturates (~0.35 of the area) they may overlap their neighbours by a few
    px and are painted only into free space, so they pack and touch as separate objects.
    """
    n_pix = hw[0] * hw[1]
    target = density * n_pix
    labels = np.zeros(n_pix, dtype=np.int32)
    blocked = np.zeros(n_pix, dtype=bool)  # where no blob centre fits any more
    placed = np.zeros((0, 6))
    mean_area = _mean_blob_area(size, width, 0.6 * min(hw), aspect)
    covered, rate = 0, 0.5
    for gap in (1.0 + width // 2, -(width + 1.0)):
        for _ in range(40):
            free = np.flatnonzero(~blocked)
            if covered >= 0.995 * target or free.size == 0:
                break
            # enough candidates to finish in about one round at the last acceptance rate
            m = (target - covered) / mean_area / max(rate, 0.05)
            m = int(np.clip(1.3 * m, 32, min(8000, 32 + 2 * free.size / mean_area)))
            centres = np.column_stack(np.unravel_index(free[rng.integers(0, free.size, m)], hw))
            cand = _blob_params(m, width, size, centres, rng, 0.6 * min(hw), aspect)
            cand = cand[~_clashes(cand, placed, gap)]
            grows = (0.0, max(gap, 0) + width + 1)
            (flat, owner), (bflat, bowner) = _stamps(hw, cand, grows, warp)
            free_px = labels[flat] == 0
            area = np.bincount(owner, weights=free_px, minlength=len(cand))
            ok = (area >= 0.6 * np.bincount(owner, minlength=len(cand))) & (area > 0)
            gain = np.where(ok, area, 0)
            ok &= np.cumsum(gain) - gain / 2 < target - covered  # overshoot by < half a blob
            ids = np.cumsum(ok).astype(np.int32) + len(placed)
            paint = free_px & ok[owner]
            labels[flat[paint]] = ids[owner[paint]]
            blocked[bflat[ok[bowner]]] = True
            covered += int(paint.sum())
            placed = np.vstack([placed, cand[ok]])
            rate = ok.sum() / m
            if rate < 0.04:  # saturated
                break
        blocked = labels > 0
        rate = 0.5
    return labels.reshape(hw)


def _sparse_2d(
    hw: tuple[int, int],
    density: float,
    width: int,
    size: tuple[float, float],
    rng: np.random.Generator,
    aspect: tuple[float, float] = BLOB_ASPECT,
) -> tuple[np.ndarray, np.ndarray]:
    """One organelle slice and its blob labels: capsules and ellipses, gently bent, with rings."""
    scale = math.sqrt(size[0] * size[1])
    bend = _smooth_noise(hw, [(0.5 * scale, 0.1 * scale)], rng)
    labels = _place_blobs(hw, density, width, size, rng, bend, aspect)
    mask = instances_to_mask(labels, boundary_width=width)
    return _drop_empty_objects(mask, labels)


def _drop_empty_objects(mask: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close gaps, then remove objects left without interior (make them background).

    Removing an object can bare a neighbour's interior, so this repeats until stable.
    """
    labels = labels.copy()
    while True:
        mask = _close_gaps(mask, labels)
        has_interior = np.zeros(int(labels.max()) + 1, dtype=bool)
        has_interior[labels[mask == INTERIOR]] = True
        has_interior[0] = True
        empty = ~has_interior[labels]
        if not empty.any():
            return mask, labels
        mask[empty] = BACKGROUND
        labels[empty] = 0


# ----------------------------------------------------------------------------- variations


def _vary_2d(
    mask: np.ndarray, strength: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One elastically deformed slice and the warped object labels.

    Displacements shrink on slices smaller than 128 px so that content is not shifted by a
    large part of the slice.
    """
    labels = mask_to_instances(mask)
    amp = strength * min(1.0, min(mask.shape) / 128)
    dy, dx = _smooth_noise(mask.shape, [(40.0, 5.0 * amp), (12.0, 3.0 * amp)], rng)
    warped, wlabels = _warp([mask, labels], dy, dx)
    out = _close_gaps(warped, wlabels)
    _drop_fragments(out, wlabels, max_area=20)
    return out, wlabels


def _drop_fragments(mask: np.ndarray, labels: np.ndarray, max_area: int) -> None:
    """Small interior pieces split off an object by the warp become boundary (in place).

    Each object keeps its largest interior piece; others under ``max_area`` px are removed,
    so the warp does not sprinkle specks where membranes were jagged.
    """
    comp, n = ndi.label(mask == INTERIOR, structure=_CROSS)
    if n == 0:
        return
    area = np.bincount(comp.ravel(), minlength=n + 1)
    owner = np.zeros(n + 1, dtype=labels.dtype)
    owner[comp.ravel()] = labels.ravel()  # interior pieces are single-object after closing
    biggest = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    np.maximum.at(biggest, owner[1:], area[1:])
    fragment = (area < max_area) & (area < biggest[owner])
    fragment[0] = False
    mask[fragment[comp]] = BOUNDARY


def _morph_2d(mask: np.ndarray, grow: int, coverage: float, rng: np.random.Generator) -> np.ndarray:
    """Thicken or thin boundaries by ``|grow|`` px per side inside random patches."""
    if coverage >= 1:
        patch = np.ones(mask.shape, dtype=bool)
    else:
        field, _ = _smooth_noise(mask.shape, [(24.0, 1.0)], rng)
        patch = field > np.quantile(field, 1.0 - coverage)
    return _morph_in(mask, grow, patch)


def _morph_in(mask: np.ndarray, grow: int, patch: np.ndarray) -> np.ndarray:
    """:func:`_morph_2d` inside a given ``patch`` (layout_stacks varies it slowly in z)."""
    out = mask.copy()
    if grow > 0:
        for _ in range(grow):
            touch = np.logical_or.reduce([n == BOUNDARY for n in _neighbours(out)])
            out[(out == INTERIOR) & touch & patch] = BOUNDARY
        return out
    labels = mask_to_instances(mask)
    same = np.logical_and.reduce([lab == labels for lab in _neighbours(labels, diagonal=True)])
    for _ in range(-grow):
        nbs = _neighbours(out, diagonal=True)
        own_interior = np.logical_or.reduce([n == INTERIOR for n in nbs[:4]])
        no_bg = np.logical_and.reduce([n != BACKGROUND for n in nbs])
        out[(out == BOUNDARY) & (labels > 0) & own_interior & same & no_bg & patch] = INTERIOR
    return out


__all__ = [
    "BLOB_ASPECT",
    "CELL_AREA_AT_FULL_DENSITY",
    "LAYOUT_KINDS",
    "dense_tissue",
    "make_layout",
    "morphological_variation",
    "sparse_organelles",
    "variation",
]
