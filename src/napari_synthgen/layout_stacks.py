"""Seeded (Z, H, W) mask stacks that are continuous through z, like serial EM sections.

:mod:`layouts` draws each slice of a stack on its own, so neighbouring slices share nothing.
Here a stack is one volume: dense cells drift slowly from slice to slice (their centres move,
their sizes and outlines change), some end or branch and new ones appear; sparse organelles
are mitochondria-like tubes that run through several slices, their cross-sections moving and
growing and shrinking towards the tube's ends. Boundaries are rebuilt on every slice as
:mod:`layouts` does, so every slice is a valid 2-D mask. :func:`vary_stack` varies an existing
stack with a deformation field that changes slowly in z, so the variation stays continuous.

``drift`` says how much changes between adjacent slices. :data:`DEFAULT_DRIFT` is calibrated
so that :func:`stack_change` of a dense stack, the fraction of pixels whose class changes from
one slice to the next, is about that of real serial sections (``scripts/slice_change_real.py``:
0.21 on the VNC stack, 0.28 on ISBI 2012). Pure NumPy/SciPy; the same seed gives the same bytes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from numbers import Integral

import numpy as np
from scipy import ndimage as ndi
from scipy.special import ndtr

from .layouts import (
    LAYOUT_KINDS,
    _blob_params,
    _cell_count,
    _check_fraction,
    _check_seed,
    _check_shape,
    _check_size,
    _check_unit,
    _check_width,
    _close_gaps,
    _drop_empty_objects,
    _drop_fragments,
    _drop_specks,
    _junction_centres,
    _large_cells,
    _mean_blob_area,
    _membranes,
    _morph_in,
    _paint_disks,
    _small_cells,
    _smooth_noise,
    _stamps,
    _surface_distance,
    _swell_around,
    _thicken_where,
    _warp,
)
from .masks import BOUNDARY, MaskError, instances_to_mask, mask_to_instances, validate_mask

#: Default change between adjacent slices: mean in-plane movement of a cell per slice as a
#: fraction of the mean cell spacing (and the pace of every other change). Calibrated so that
#: dense stacks change about 0.2 of their pixels' classes per slice, like real sections.
DEFAULT_DRIFT: float = 0.25

#: Organelle tubes change at this fraction of ``drift`` (calibrated on the VNC mitochondria).
SPARSE_PACE: float = 0.4

#: Largest allowed drift: beyond it neighbouring slices no longer look like one volume.
MAX_DRIFT: float = 1.0

#: Slices between independent deformation fields of :func:`vary_stack` (by default).
VARY_Z_PERIOD: float = 8.0

_DEFAULTS = {"dense": (0.5, 3), "sparse": (0.3, 2)}


# ----------------------------------------------------------------------------- public API


def layout_stack(
    kind: str,
    shape: Sequence[int],
    *,
    density: float | None = None,
    boundary_width: int | None = None,
    irregularity: float | None = None,
    size: tuple[float, float] | None = None,
    drift: float = DEFAULT_DRIFT,
    seed: int = 0,
) -> np.ndarray:
    """A new (Z, H, W) ``uint8`` stack of ``kind`` (``"dense"`` or ``"sparse"``), continuous in z.

    ``density``, ``boundary_width``, ``irregularity`` (dense) and ``size`` (sparse) mean what
    they mean for :func:`layouts.dense_tissue` / :func:`layouts.sparse_organelles` and take
    their defaults when None. ``drift`` in [0, 1] is the per-slice change (cell movement as a
    fraction of the cell spacing, and the pace of shape changes, endings, branchings and tube
    ends); 0 repeats one slice.
    """
    if kind not in LAYOUT_KINDS:
        raise ValueError(f"unknown layout kind {kind!r}; use one of {', '.join(LAYOUT_KINDS)}.")
    dims = _check_shape(shape)
    if len(dims) != 3:
        raise ValueError(f"shape must be (Z, H, W) for a stack; got {tuple(shape)!r}. For one "
                         "slice use layouts.make_layout.")
    d = _check_fraction(_DEFAULTS[kind][0] if density is None else density, "density")
    w = _check_width(_DEFAULTS[kind][1] if boundary_width is None else boundary_width)
    dr = _check_drift(drift)
    rng = np.random.default_rng(np.random.SeedSequence(_check_seed(seed)))
    if kind == "dense":
        if size is not None:
            raise ValueError("size applies to sparse layouts only (organelle lengths).")
        irr = _check_unit(0.5 if irregularity is None else irregularity, "irregularity")
        return _dense_stack(dims, d, w, irr, dr, rng)
    if irregularity is not None:
        raise ValueError("irregularity applies to dense layouts only.")
    lo_hi = _check_size((10, 40) if size is None else size)
    return _sparse_stack(dims, d, w, lo_hi, dr, rng)


def vary_stack(
    stack: np.ndarray,
    *,
    strength: float = 0.5,
    grow: int = 0,
    coverage: float = 1.0,
    z_period: float = VARY_Z_PERIOD,
    seed: int = 0,
) -> np.ndarray:
    """A seeded variation of a (Z, H, W) mask stack that stays continuous through z.

    Like :func:`layouts.variation` then :func:`layouts.morphological_variation` (same
    ``strength``, ``grow``, ``coverage``), but the displacement field and the grow/shrink
    patches change slowly with z (a new independent field every ``z_period`` slices, blended
    in between), so neighbouring slices are warped alike. Boundaries are closed on every slice.
    Slice 0 equals ``layouts.variation(stack[0], strength=strength, seed=seed)`` when
    ``grow`` is 0.
    """
    m = validate_mask(stack, name="stack")
    if m.ndim != 3:
        raise MaskError(f"vary_stack takes a (Z, H, W) stack; got shape {m.shape}. For one "
                        "slice use layouts.variation.")
    s = _check_unit(strength, "strength")
    if isinstance(grow, bool) or not isinstance(grow, Integral) or abs(int(grow)) > 32:
        raise ValueError(f"grow must be a whole number of px within ±32; got {grow!r}.")
    cov = _check_unit(coverage, "coverage")
    if isinstance(z_period, bool) or not isinstance(z_period, (int, float)) or not (
        math.isfinite(z_period) and z_period > 0
    ):
        raise ValueError(f"z_period must be a positive number of slices; got {z_period!r}.")
    root = np.random.SeedSequence(_check_seed(seed))
    hw = m.shape[1:]
    amp = s * min(1.0, min(hw) / 128)
    # keyframe k of the warp is drawn from the k-th child of the seed, as layouts.variation
    # draws slice k: slice 0 of a stack varied here is the 2-D variation of slice 0
    warp_keys = _KeyRngs(root)
    patch_keys = _KeyRngs(np.random.SeedSequence(int(seed), spawn_key=(1 << 20,)))
    warp = _z_fields(hw, [(40.0, 5.0 * amp), (12.0, 3.0 * amp)], 1.0 / z_period, warp_keys)
    patches = _z_fields(hw, [(24.0, 1.0)], 1.0 / z_period, patch_keys)
    out = np.empty_like(m)
    for z, (sl, (dy, dx), (pf, _)) in enumerate(zip(m, warp, patches, strict=False)):
        if s > 0:
            labels = mask_to_instances(sl)
            warped, wlabels = _warp([sl, labels], dy, dx)
            sl = _close_gaps(warped, wlabels)
            _drop_fragments(sl, wlabels, max_area=20)
        if grow and cov > 0:
            patch = np.ones(hw, bool) if cov >= 1 else pf > np.quantile(pf, 1.0 - cov)
            sl = _morph_in(sl, int(grow), patch)
        out[z] = sl
    return out


def stack_change(stack: np.ndarray) -> float:
    """Mean fraction of pixels whose class changes between adjacent slices (0 for one slice).

    The number :data:`DEFAULT_DRIFT` is calibrated on: about 0.21 for the VNC stack and 0.28
    for ISBI 2012 (serial sections of 45-50 nm).
    """
    m = validate_mask(stack, name="stack")
    if m.ndim != 3:
        raise MaskError(f"stack_change takes a (Z, H, W) stack; got shape {m.shape}.")
    if len(m) < 2:
        return 0.0
    return float(np.mean([np.count_nonzero(a != b) / a.size for a, b in itertools.pairwise(m)]))


# ----------------------------------------------------------------------------- helpers


def _check_drift(drift: object) -> float:
    """A drift in [0, MAX_DRIFT]."""
    if isinstance(drift, bool) or not isinstance(drift, (int, float, np.floating)) or not (
        math.isfinite(drift) and 0 <= drift <= MAX_DRIFT
    ):
        raise ValueError(f"drift must be a number in [0, {MAX_DRIFT:g}] (change per slice; "
                         f"default {DEFAULT_DRIFT:g}); got {drift!r}.")
    return float(drift)


class _KeyRngs:
    """Generators for keyframes 0, 1, 2, ...: the k-th child of a seed sequence."""

    def __init__(self, root: np.random.SeedSequence) -> None:
        self.root = root

    def __call__(self, k: int) -> np.random.Generator:
        child = np.random.SeedSequence(self.root.entropy,
                                       spawn_key=(*self.root.spawn_key, k))
        return np.random.default_rng(child)


def _z_fields(
    hw: tuple[int, int], scales: Sequence[tuple[float, float]], rate: float, keys: _KeyRngs
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Smooth 2-D field pairs for slices 0, 1, ..., changing slowly and evenly with z.

    Independent keyframes ``F_k`` (:func:`layouts._smooth_noise`) sit ``1 / rate`` slices
    apart; between two, slice z gets ``cos(a) F_k + sin(a) F_k+1`` (a from 0 to pi/2), which
    keeps the fields' spread constant. ``rate`` 0 repeats ``F_0``.
    """
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def key(k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in cache:
            for old in [c for c in cache if c < k - 1]:
                del cache[old]
            cache[k] = _smooth_noise(hw, scales, keys(k))
        return cache[k]

    z = 0
    while True:
        pos = z * rate
        k = math.floor(pos)
        t = pos - k
        a0 = key(k)
        if t == 0:
            yield a0
        else:
            a1 = key(k + 1)
            c, s = math.cos(0.5 * math.pi * t), math.sin(0.5 * math.pi * t)
            yield (c * a0[0] + s * a1[0], c * a0[1] + s * a1[1])
        z += 1


# ----------------------------------------------------------------------------- dense


class _Cells:
    """The cells of a dense stack at the current slice: positions, velocities, sizes, life."""

    def __init__(self, pos: np.ndarray, target: np.ndarray, big: np.ndarray) -> None:
        n = len(pos)
        self.pos = pos.astype(np.float64)
        self.vel = np.zeros((n, 2))
        self.target = target.astype(np.float64)  # radius of the cell's disk when unhindered
        self.logsize = np.zeros(n)
        self.big = big.astype(bool)
        self.life = np.ones(n)  # -1: not (yet / any more) there, 1: fully there
        self.pace = np.zeros(n)  # change of life per slice: > 0 appearing, < 0 ending

    def add(self, pos: np.ndarray, vel: np.ndarray, target: np.ndarray, pace: float) -> None:
        k = len(pos)
        self.pos = np.vstack([self.pos, pos])
        self.vel = np.vstack([self.vel, vel])
        self.target = np.concatenate([self.target, target])
        self.logsize = np.concatenate([self.logsize, np.zeros(k)])
        self.big = np.concatenate([self.big, np.zeros(k, bool)])
        self.life = np.concatenate([self.life, -np.ones(k)])
        self.pace = np.concatenate([self.pace, np.full(k, pace)])

    def keep(self, sel: np.ndarray) -> None:
        for name in ("pos", "vel", "target", "logsize", "big", "life", "pace"):
            setattr(self, name, getattr(self, name)[sel])


def _dense_stack(
    dims: tuple[int, ...], density: float, width: int, irr: float, drift: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A dense-tissue stack: the cells of :func:`layouts.dense_tissue`, moving through z."""
    n_z, hw = dims[0], (dims[1], dims[2])
    n = _cell_count(hw, density)
    spacing = math.sqrt(hw[0] * hw[1] / n)
    # slice 0's cells are drawn as layouts._cell_labels draws them
    big_c, big_r = _large_cells(hw, n, irr, rng)
    pts = _small_cells(hw, n - len(big_c), (big_c, big_r), irr, 1.5 * width + 4, rng)
    alpha = 0.15 + 0.7 * irr
    nn = (_nearest(pts) if len(pts) > 1 else np.full(len(pts), np.inf))
    room = np.minimum(nn / 2, _surface_distance(pts, big_c, big_r))
    small_r = np.maximum(0.0, alpha * np.minimum(room, 4 * max(hw)) - 0.5)
    cells = _Cells(np.vstack([big_c.reshape(-1, 2), pts]), np.concatenate([big_r, small_r]),
                   np.concatenate([np.ones(len(big_c), bool), np.zeros(len(pts), bool)]))
    typical_r = float(np.median(small_r)) if len(small_r) else 0.25 * spacing
    rho = 0.8  # velocities and sizes keep 80 % of their change from one slice to the next
    speed = drift * spacing / math.sqrt(2.0)
    cells.vel = rng.normal(0, speed, cells.pos.shape)
    ramp = max(2, round(0.4 / drift)) if drift > 0 else 2  # slices to appear or end
    turnover = 0.12 * drift  # fraction of cells that start ending (and appearing) per slice
    warp = _z_fields(hw, [(0.5 * spacing, 0.25 * spacing * irr), (6.0, 1.8 * irr),
                          (2.0, 0.5 * irr)], 0.6 * drift, _KeyRngs(_child(rng)))
    thick = _z_fields(hw, [(0.4 * spacing, 1.0)], 0.6 * drift, _KeyRngs(_child(rng)))
    blobs = _z_fields(hw, [(0.6 * spacing, 1.0)], 0.6 * drift, _KeyRngs(_child(rng)))
    radii_big = big_r
    inclusions = _Inclusions(big_r, width, irr, n_z, drift, rng)
    out = np.empty(dims, np.uint8)
    for z in range(n_z):
        if z:
            _step_cells(cells, hw, spacing, typical_r, rho, speed, drift, ramp, turnover, rng)
        labels, radii = _rasterise(cells, hw, spacing)
        dark = inclusions.paint(labels, cells.pos[: len(radii_big)], radii[: len(radii_big)], z)
        (labels,) = _warp([labels], *next(warp))
        mask = _membranes(labels, width)
        mask[np.isin(labels, dark)] = BOUNDARY
        if irr > 0:
            _thicken_where(mask, next(thick)[0], irr)
            _swell_junctions(mask, labels, width, irr, next(blobs))
        _drop_specks(mask, max(6, width * width))
        out[z] = mask
    return out


def _child(rng: np.random.Generator) -> np.random.SeedSequence:
    """A seed sequence for one z-continuous field family, drawn from ``rng``."""
    return np.random.SeedSequence(int(rng.integers(0, 2**63)))


def _nearest(pts: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest other point."""
    from scipy.spatial import cKDTree

    return cKDTree(pts).query(pts, k=2)[0][:, 1]


def _step_cells(
    cells: _Cells, hw: tuple[int, int], spacing: float, typical_r: float, rho: float,
    speed: float, drift: float, ramp: int, turnover: float, rng: np.random.Generator,
) -> None:
    """Move the cells to the next slice: drift, size change, endings, branchings, new cells."""
    n = len(cells.pos)
    cells.vel = rho * cells.vel + math.sqrt(1 - rho * rho) * rng.normal(0, speed, (n, 2))
    cells.pos += cells.vel
    for axis, side in enumerate(hw):  # mirror at the edges, so cells stay in view
        low, high = cells.pos[:, axis] < 0, cells.pos[:, axis] > side - 1
        cells.pos[low, axis] *= -1
        cells.pos[high, axis] = 2 * (side - 1) - cells.pos[high, axis]
        cells.vel[low | high, axis] *= -1
    cells.logsize = rho * cells.logsize + math.sqrt(1 - rho * rho) * rng.normal(0, drift, n)
    cells.life = np.clip(cells.life + cells.pace, -1, 1)
    cells.pace[(cells.life >= 1) & (cells.pace > 0)] = 0
    cells.keep(~((cells.life <= -1) & (cells.pace < 0)))
    # some small cells start ending; as many new ones start: half branch off a cell
    steady = (cells.pace == 0) & ~cells.big
    ending = steady & (rng.random(len(cells.pos)) < turnover)
    cells.pace[ending] = -2.0 / ramp
    k = int(ending.sum())
    if k == 0:
        return
    parents = np.flatnonzero(steady & ~ending)
    branch = rng.random(k) < 0.5
    pos = rng.uniform((0, 0), (hw[0] - 1, hw[1] - 1), (k, 2))
    vel = rng.normal(0, speed, (k, 2))
    if parents.size:
        pick = parents[rng.integers(0, parents.size, k)]
        away = rng.normal(0, 1, (k, 2))
        away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-9)
        pos[branch] = cells.pos[pick[branch]] + 0.2 * spacing * away[branch]
        vel[branch] = cells.vel[pick[branch]] + 0.5 * speed * away[branch]
        cells.vel[pick[branch]] -= 0.5 * speed * away[branch]
    target = typical_r * np.exp(rng.normal(0, 0.3, k))
    cells.add(np.clip(pos, 0, np.array(hw) - 1), vel, target, 2.0 / ramp)


def _rasterise(
    cells: _Cells, hw: tuple[int, int], spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cell labels of one slice: an additively weighted Voronoi diagram of the cells' disks.

    Each pixel joins the cell whose disk surface is nearest, as in :mod:`layouts`; disks are
    shrunk so that none overlaps. A cell that appears or ends has a negative weight that
    grows or falls over a few slices, so its region grows from, or shrinks to, nothing.
    Returns the labels (cell number + 1) and each cell's disk radius on this slice.
    """
    weight = cells.target * np.exp(cells.logsize)
    weight = np.where(cells.life >= 0, cells.life * weight, cells.life * 0.7 * spacing)
    pos = cells.pos
    positive = np.flatnonzero(weight > 0)
    r = weight.copy()
    if positive.size > 1:
        from scipy.spatial import cKDTree

        pp, wp = pos[positive], weight[positive]
        pairs = cKDTree(pp).query_pairs(2 * float(wp.max()), output_type="ndarray")
        if len(pairs):
            i, j = pairs[:, 0], pairs[:, 1]
            d = np.hypot(*(pp[i] - pp[j]).T)
            share = d / (wp[i] + wp[j])
            cap = np.ones(len(pp))
            np.minimum.at(cap, i, share)
            np.minimum.at(cap, j, share)
            r[positive] = wp * np.minimum(cap, 1.0)
    ids = np.arange(1, len(pos) + 1, dtype=np.int32)
    disks = np.zeros(hw, np.int32)
    centres = np.rint(pos[positive]).astype(np.intp)
    _paint_disks(disks, centres, np.maximum(r[positive] - 0.5, 0.0), ids[positive])
    dist, (iy, ix) = ndi.distance_transform_edt(disks == 0, return_indices=True)
    labels = disks[iy, ix]
    reach = 3 * spacing
    for c in np.flatnonzero(weight <= 0):  # few: the cells appearing or ending
        y0, x0 = (max(0, int(pos[c, a] - reach)) for a in (0, 1))
        y1, x1 = int(min(hw[0], pos[c, 0] + reach + 1)), int(min(hw[1], pos[c, 1] + reach + 1))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        own = np.hypot(yy - pos[c, 0], xx - pos[c, 1]) - weight[c]
        win = (slice(y0, y1), slice(x0, x1))
        take = own < dist[win]
        dist[win][take] = own[take]
        labels[win][take] = ids[c]
    return labels, np.maximum(r, 0.0)


class _Inclusions:
    """Organelle profiles inside large cells (as :func:`layouts._inclusions` paints on one
    slice), here tubes through several slices that move with their cell and narrow towards
    their ends; some are solid dark blobs (all boundary), the others small cells."""

    def __init__(self, big_r: np.ndarray, width: int, irr: float, n_z: int, drift: float,
                 rng: np.random.Generator) -> None:
        pace = drift / DEFAULT_DRIFT
        rows = []  # host, z centre, half length, a, b/a, theta, reach, phi, dark
        for host in np.flatnonzero(rng.random(len(big_r)) < 0.6 * irr):
            z = -rng.uniform(0, 20.0 / pace) if pace else 0.0
            while z < n_z:
                length = rng.uniform(10.0, 40.0) / pace if pace else math.inf
                rows.append([host, z + length / 2 if pace else 0.0, length / 2,
                             rng.uniform(3.0, 9.0) + width, rng.uniform(0.5, 1.0),
                             rng.uniform(0, math.pi), rng.uniform(0, 1),
                             rng.uniform(0, 2 * math.pi), rng.random() < 0.4])
                if not pace:
                    break
                z += length + rng.uniform(0, 10.0) / pace
        self.rows = np.array(rows, dtype=np.float64).reshape(-1, 9)
        self.width = width
        self.spin = rng.normal(0, 0.3 * drift, len(self.rows))

    def paint(self, labels: np.ndarray, centres: np.ndarray, radii: np.ndarray,
              z: int) -> np.ndarray:
        """Paint the profiles of slice ``z`` into ``labels`` (in place); return the dark ids."""
        if not len(self.rows):
            return np.zeros(0, np.int32)
        host = self.rows[:, 0].astype(np.intp)
        zc, half, a = self.rows[:, 1], self.rows[:, 2], self.rows[:, 3]
        u = np.where(np.isfinite(half), (z - zc) / np.where(np.isfinite(half), half, 1), 0.0)
        a = a * np.sqrt(np.clip(1 - u * u, 0, 1))
        r = radii[host]
        live = (np.abs(u) < 1) & (a >= 2.0) & (r > a + self.width + 4)
        if not live.any():
            return np.zeros(0, np.int32)
        rows, host, a, r = self.rows[live], host[live], a[live], r[live]
        reach = rows[:, 6] * (r - a - self.width - 2)
        blobs = np.column_stack([
            centres[host, 0] + reach * np.sin(rows[:, 7]),
            centres[host, 1] + reach * np.cos(rows[:, 7]),
            a, a * rows[:, 4], rows[:, 5] + self.spin[live] * z, np.zeros(len(rows)),
        ])
        start = int(labels.max()) + 1
        ((flat, owner),) = _stamps(labels.shape, blobs)
        np.put(labels, flat, start + owner)
        return (start + np.flatnonzero(rows[:, 8] > 0)).astype(np.int32)


def _swell_junctions(
    mask: np.ndarray, labels: np.ndarray, width: int, irr: float,
    fields: tuple[np.ndarray, np.ndarray],
) -> None:
    """:func:`layouts._junction_blobs` with its choices read from fields that change slowly
    in z, so a swollen junction stays swollen while it moves (in place)."""
    centres = _junction_centres(labels)
    if len(centres) == 0:
        return
    u1 = ndtr(fields[0][centres[:, 0], centres[:, 1]] / _rms(fields[0]))
    u2 = ndtr(fields[1][centres[:, 0], centres[:, 1]] / _rms(fields[1]))
    chosen = u1 < 0.3 + 0.6 * irr
    radii = 2 + width - 4.8 * irr * np.log(np.clip(u2, 1e-6, 1.0))
    _swell_around(mask, centres[chosen], radii[chosen])


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) or 1.0


# ----------------------------------------------------------------------------- sparse


def _sparse_stack(
    dims: tuple[int, ...], density: float, width: int, size: tuple[float, float], drift: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mitochondria-like tubes through z: each a capsule cross-section that moves a little per
    slice (the tube is oblique) and narrows towards the tube's rounded ends."""
    n_z, hw = dims[0], (dims[1], dims[2])
    longest = 0.6 * min(hw)
    mean_area = _mean_blob_area(size, width, longest)
    scale = math.sqrt(size[0] * size[1])
    # organelles change at 0.4 of the tissue's pace: at the default drift 0.48 of their pixels
    # change class per slice, as for the VNC stack's mitochondria (0.026 of 0.054)
    drift = SPARSE_PACE * drift
    # tube lengths in slices: 10 to 40 sections at the default, longer when less changes
    pace = drift / (SPARSE_PACE * DEFAULT_DRIFT) if drift > 0 else 0.0
    lo_len, hi_len = 10.0, 40.0
    mean_len = 0.5 * (lo_len + hi_len) / max(pace, 1e-9) if pace else math.inf
    # a tube's cross-section has 2/3 of its full area on average (rounded ends); some are
    # painted over by neighbours: 1.45 times as many tubes make up for that
    per_slice = 1.45 * density * hw[0] * hw[1] / (mean_area * 2.0 / 3.0)
    if pace:
        n_tubes = max(1, round(per_slice * (n_z - 1 + mean_len) / mean_len))
    else:  # endless tubes: every cross-section at its full size
        n_tubes = max(1, round(per_slice * 2.0 / 3.0))
    centres = rng.uniform((0, 0), hw, (n_tubes, 2))
    blobs = _blob_params(n_tubes, width, size, np.floor(centres), rng, longest)
    if pace:
        half = 0.5 * rng.uniform(lo_len, hi_len, n_tubes) / pace
        zc = rng.uniform(-half, n_z - 1 + half)
    else:
        half = np.full(n_tubes, math.inf)
        zc = np.zeros(n_tubes)
    vel = rng.normal(0, drift * scale / math.sqrt(2.0), (n_tubes, 2))
    spin = rng.normal(0, 0.5 * drift, n_tubes)  # slow turn of the cross-section (rad/slice)
    bend = _z_fields(hw, [(0.5 * scale, 0.1 * scale)], 0.6 * drift, _KeyRngs(_child(rng)))
    min_b = width + 1.5  # a cross-section thinner than this has no interior
    out = np.empty(dims, np.uint8)
    for z in range(n_z):
        u = np.where(np.isfinite(half), (z - zc) / np.where(np.isfinite(half), half, 1), 0.0)
        profile = np.sqrt(np.clip(1 - u * u, 0, 1))
        rows = blobs.copy()
        rows[:, 0] += vel[:, 0] * (z - zc)
        rows[:, 1] += vel[:, 1] * (z - zc)
        rows[:, 2] *= profile
        rows[:, 3] *= profile
        rows[:, 4] += spin * (z - zc)
        live = (rows[:, 3] >= min_b) & (np.abs(u) < 1)
        rows[:, 2] = np.maximum(rows[:, 2], rows[:, 3])
        labels = _paint_tubes(hw, rows, np.flatnonzero(live), next(bend))
        mask = instances_to_mask(labels, boundary_width=width)
        out[z] = _drop_empty_objects(mask, labels)[0]
    return out


def _paint_tubes(
    hw: tuple[int, int], rows: np.ndarray, live: np.ndarray,
    warp: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Labels of the live cross-sections (tube number + 1); the older tube wins an overlap.

    A cross-section left with less than 0.6 of its area is not drawn on that slice (as
    :func:`layouts._place_blobs` refuses such blobs), so overlaps leave no slivers.
    """
    labels = np.zeros(hw[0] * hw[1], np.int32)
    none = np.iinfo(np.int32).max
    while live.size:
        ((flat, owner),) = _stamps(hw, rows[live], (0.0,), warp)
        first = np.full(hw[0] * hw[1], none, np.int32)
        np.minimum.at(first, flat, owner.astype(np.int32))
        won = np.bincount(owner[first[flat] == owner], minlength=live.size)
        total = np.bincount(owner, minlength=live.size)
        ok = won >= 0.6 * total
        if ok.all():
            hit = first < none
            labels[hit] = live[first[hit]] + 1
            break
        live = live[ok]  # drop those that lost too much, then paint again
    return labels.reshape(hw)


__all__ = ["DEFAULT_DRIFT", "MAX_DRIFT", "layout_stack", "stack_change", "vary_stack"]
