"""Size and shape statistics of 3-class masks, and layout parameters calibrated on them.

:func:`measure_masks` summarises a set of masks (real or synthetic) in a :class:`MaskStats`:
which layout kind fits, objects per area, the log-normal fit of object areas, membrane / ring
width, elongation, boundary irregularity (perimeter against convex perimeter) and the class
fractions. :func:`layout_params` turns such statistics into parameters of
:func:`layouts.dense_tissue` or :func:`layouts.sparse_organelles`, so that new layouts have
statistics close to the measured ones (``masks --like DIR``); ``strength`` widens the
parameters' spread from mask to mask, to make sets more diverse than the real one.

The mapping inverts a small forward model: each statistic of a layout is a least-squares fit
of polynomial features of the layout's parameters, fitted by ``scripts/calibrate_mask_stats.py``
on layouts measured over a grid of parameters; the coefficients are cached below. The inverse
is a search over a fine grid of parameters (:data:`SEARCH_GRID`), deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from skimage.measure import perimeter, regionprops
from skimage.morphology import skeletonize

from .layouts import BLOB_ASPECT, MAX_BOUNDARY_WIDTH
from .masks import BACKGROUND, BOUNDARY, INTERIOR, MaskError, mask_to_instances, validate_mask

#: A set whose background (class 0) covers less than this is dense tissue, else sparse.
DENSE_MAX_BACKGROUND: float = 0.2

#: Objects smaller than this (px, interior and boundary share) are specks, not counted.
MIN_OBJECT_AREA: int = 8

#: The statistics the forward model predicts, per layout kind, and how much each counts when
#: choosing parameters (weights divide a statistic's difference; larger = less important).
FIT_STATS: dict[str, dict[str, float]] = {
    "dense": {
        "log_count": 0.15,  # log objects per Mpx
        "log_area": 0.15,  # log median object area
        "boundary_width": 0.5,  # px
        "area_spread": 0.08,  # log-normal sigma
        "length_spread": 0.06,  # sigma of log long axis
        "irregularity": 0.02,  # perimeter / convex perimeter
    },
    "sparse": {
        "log_coverage": 0.1,  # log fraction of pixels in objects
        "boundary_width": 0.5,
        "log_length": 0.08,  # log median long axis (px)
        "length_spread": 0.06,  # sigma of log long axis
        "log_elongation": 0.05,  # log median long / short axis
    },
}


@dataclass(frozen=True)
class MaskStats:
    """Size and shape statistics of a set of masks (pixels; per-object medians)."""

    kind: str  # "dense" (class 0 rare) or "sparse" (objects on background)
    n_masks: int  # 2-D slices measured
    n_objects: int  # objects measured (not touching the edge)
    class_fractions: tuple[float, float, float]  # background, interior, boundary
    coverage: float  # fraction of pixels in objects (interior + boundary)
    count_per_mpx: float  # objects per 10^6 px
    area_median: float  # px², log-normal fit: median
    area_spread: float  # log-normal sigma of object areas
    length_median: float  # long axis (px), median
    length_spread: float  # sigma of the log long axis
    boundary_width: float  # membrane / ring thickness (px): boundary area / skeleton length
    elongation: float  # long / short axis, median
    irregularity: float  # perimeter / convex perimeter, median (1: convex)

    def to_dict(self) -> dict[str, Any]:
        """The statistics as a JSON-serialisable dict (floats rounded to 4 significant digits)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float):
                value = _round(value)
            elif isinstance(value, tuple):
                value = [_round(v) for v in value]
            out[key] = value
        return out

    def fit_values(self) -> dict[str, float]:
        """The statistics the calibration matches, by the names of :data:`FIT_STATS`."""
        return {
            "log_count": math.log(max(self.count_per_mpx, 1e-3)),
            "log_area": math.log(max(self.area_median, 1e-3)),
            "boundary_width": self.boundary_width,
            "area_spread": self.area_spread,
            "irregularity": self.irregularity,
            "log_coverage": math.log(max(self.coverage, 1e-6)),
            "log_length": math.log(max(self.length_median, 1e-3)),
            "length_spread": self.length_spread,
            "log_elongation": math.log(max(self.elongation, 1e-3)),
        }


def _round(v: float) -> float:
    return float(f"{v:.4g}") if math.isfinite(v) else v


# ----------------------------------------------------------------------------- measuring


def _slices(masks: np.ndarray | Iterable[np.ndarray]) -> list[np.ndarray]:
    """Every 2-D slice of ``masks`` (one mask, a stack, or an iterable of either), validated."""
    items = [masks] if isinstance(masks, np.ndarray) else list(masks)
    if not items:
        raise MaskError("no masks to measure; give at least one 3-class mask.")
    out: list[np.ndarray] = []
    for i, m in enumerate(items):
        v = validate_mask(np.asarray(m), name=f"mask {i}")
        out.extend([v] if v.ndim == 2 else list(v))
    return out


def _skeleton_length(skel: np.ndarray) -> float:
    """Length (px) of a one-pixel skeleton: orthogonal links 1, unbridged diagonal links √2."""
    a, b, c, d = skel[:-1, :-1], skel[:-1, 1:], skel[1:, :-1], skel[1:, 1:]
    orth = int((skel[:, :-1] & skel[:, 1:]).sum() + (skel[:-1, :] & skel[1:, :]).sum())
    diag = int((a & d & ~(b | c)).sum() + (b & c & ~(a | d)).sum())
    return orth + math.sqrt(2.0) * diag


def _band(band: np.ndarray) -> tuple[float, float]:
    """Area and skeleton length (px) of a band of pixels: their ratio is its mean thickness."""
    if not band.any():
        return 0.0, 0.0
    return float(band.sum()), _skeleton_length(skeletonize(band))


def _measure_slice(mask: np.ndarray) -> dict[str, Any]:
    """The raw per-object and per-pixel measurements of one 2-D slice."""
    h, w = mask.shape
    labels = mask_to_instances(mask)
    props = regionprops(labels)
    n, areas, lengths, elong, irreg = 0, [], [], [], []
    for p in props:
        if p.area < MIN_OBJECT_AREA:
            continue
        n += 1
        r0, c0, r1, c1 = p.bbox
        if r0 == 0 or c0 == 0 or r1 == h or c1 == w:
            continue  # cut by the edge: counted, but its size and shape are not known
        major, minor = p.axis_major_length, p.axis_minor_length
        areas.append(p.area)
        lengths.append(major)
        elong.append(major / max(minor, 1.0))
        convex = perimeter(p.image_convex)
        irreg.append(p.perimeter / convex if convex > 0 else 1.0)
    counts = np.bincount(mask.ravel(), minlength=3)[:3]
    return {
        "pixels": h * w, "counts": counts, "n": n, "areas": areas, "lengths": lengths,
        "elong": elong, "irreg": irreg, "band": _band(mask == BOUNDARY),
    }


def _log_fit(values: Sequence[float]) -> tuple[float, float]:
    """Median and robust log-normal sigma (interquartile range of the logs / 1.349)."""
    if len(values) == 0:
        return 0.0, 0.0
    logs = np.log(np.asarray(values, dtype=np.float64))
    q25, q50, q75 = np.percentile(logs, [25, 50, 75])
    return float(math.exp(q50)), float((q75 - q25) / 1.349)


def measure_masks(masks: np.ndarray | Iterable[np.ndarray]) -> MaskStats:
    """Measure the size and shape statistics of ``masks`` (2-D masks, stacks, or a list).

    Objects are :func:`masks.mask_to_instances` regions (interior grown into its boundary);
    those cut by the image edge count for the density but not for sizes and shapes.
    """
    parts = [_measure_slice(s) for s in _slices(masks)]
    pixels = sum(p["pixels"] for p in parts)
    counts = np.sum([p["counts"] for p in parts], axis=0).astype(np.float64)
    fractions = counts / max(pixels, 1)
    objects = sum(p["n"] for p in parts)
    if objects == 0:
        raise MaskError(
            f"the {len(parts)} mask slice(s) hold no objects (no interior, class 1, of at least "
            f"{MIN_OBJECT_AREA} px): there is nothing to measure. Give masks with cells or "
            "organelles painted as interior (1) inside a boundary (2)."
        )

    def cat(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(p[key], dtype=np.float64) for p in parts])

    areas, lengths = cat("areas"), cat("lengths")
    band_area = sum(p["band"][0] for p in parts)
    band_length = sum(p["band"][1] for p in parts)
    area_med, area_sig = _log_fit(areas)
    len_med, len_sig = _log_fit(lengths)
    return MaskStats(
        kind="dense" if fractions[BACKGROUND] < DENSE_MAX_BACKGROUND else "sparse",
        n_masks=len(parts),
        n_objects=int(areas.size),
        class_fractions=(float(fractions[0]), float(fractions[1]), float(fractions[2])),
        coverage=float(fractions[INTERIOR] + fractions[BOUNDARY]),
        count_per_mpx=1e6 * objects / pixels,
        area_median=area_med,
        area_spread=area_sig,
        length_median=len_med,
        length_spread=len_sig,
        boundary_width=band_area / band_length if band_length > 0 else 0.0,
        elongation=float(np.median(cat("elong"))) if areas.size else 1.0,
        irregularity=float(np.median(cat("irreg"))) if areas.size else 1.0,
    )


# ----------------------------------------------------------------------------- forward model


def _feature_matrix(kind: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Rows of forward-model features from parameter columns (d = log density, w = width;
    dense: r = irregularity; sparse: g, h = log centre and half log range of sizes, a = aspect).
    """
    d, w = cols["d"], cols["w"]
    one = np.ones_like(d)
    if kind == "dense":
        r = cols["r"]
        quad = [d * d, w * w, r * r, d * r, w * r, d * w]
        cubic = [d**3, w**3, r**3, d * d * w, d * d * r, w * w * d, w * w * r, r * r * d,
                 r * r * w, d * w * r]
        return np.stack([one, d, w, r, *quad, *cubic], axis=-1)
    g, h, a = cols["g"], cols["h"], cols["a"]
    return np.stack([one, d, w, g, h, a, d * d, g * g, h * h, a * a, d * g, w * g, g * h, d * w,
                     a * g, a * d], axis=-1)


def param_features(kind: str, params: dict[str, Any]) -> np.ndarray:
    """Features of layout parameters that the forward model is linear in (see the script)."""
    cols = {"d": math.log(float(params["density"])), "w": float(params["boundary_width"])}
    if kind == "dense":
        cols["r"] = float(params["irregularity"])
    else:
        lo, hi = (float(v) for v in params["size"])
        cols.update(g=0.5 * math.log(lo * hi), h=0.5 * math.log(hi / lo),
                    a=float(params.get("aspect", BLOB_ASPECT)[0]))
    return _feature_matrix(kind, {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()})


def aspect_range(a: float) -> tuple[float, float]:
    """The sparse layout's ``aspect`` for short / long axis ratio ``a``: (a, min(1, 2a))."""
    return (_round(a), _round(min(1.0, 2.0 * a)))


#: Forward-model coefficients per kind and statistic (dot with :func:`param_features`), made by
#: ``scripts/calibrate_mask_stats.py``, which rewrites the block between the markers.
# BEGIN CALIBRATION
FORWARD: dict[str, dict[str, list[float]]] = {
    'dense': {
        'log_count': [
            6.68975, 1.08379, 0.0377482, 0.431661, 0.0415574,
            -0.006851, -0.81678, -0.193803, -0.0872646, -0.00742463,
            -0.00387399, 0.000296478, 0.106322, -0.0120437, -0.18102,
            -0.00213479, -0.00270229, -0.335695, -0.00172655, -0.0521194,
        ],
        'log_area': [
            7.16217, -0.789189, -0.0887418, -1.52458, 0.382894,
            0.0196111, -1.9394, -0.130164, 0.0584391, 0.0199813,
            0.14763, -0.00120501, 2.35943, 0.0293424, 0.385371,
            0.00385963, 0.0108817, 0.826952, 0.137689, 0.139342,
        ],
        'boundary_width': [
            0.69747, -0.268693, 0.409681, 3.07124, -0.29905,
            0.0834229, 1.38983, 0.939224, 0.366158, 0.000203485,
            -0.106403, -0.00544847, -0.123372, -0.0206754, 0.0899166,
            -0.0064783, -0.00512433, -0.123483, -0.189526, -0.00530174,
        ],
        'area_spread': [
            0.413414, 0.213948, 0.0178812, -0.124068, 0.0329908,
            -0.00228626, 2.07976, -0.312473, -0.00644257, -0.00163379,
            -0.0237683, -0.000105385, -0.496574, -0.0140603, -0.254215,
            -0.00304228, 0.00173308, 0.151966, -0.0979479, -0.0302428,
        ],
        'length_spread': [
            0.231753, 0.134845, -0.000837491, -0.0563965, 0.0583279,
            2.32608e-07, 1.01935, -0.105226, 0.0265717, -0.00364624,
            -0.000699335, -4.93549e-05, -0.317581, -0.00706902, -0.143716,
            -0.00123766, -0.00267085, -0.0606279, -0.0531717, -0.016535,
        ],
        'irregularity': [
            1.01154, 0.00404869, -0.0104882, 0.0781447, 0.00590983,
            0.00260884, -0.13786, -0.0123227, -0.0019296, 0.000358104,
            0.00236993, -0.000184426, 0.0718992, 0.000572087, -0.0003474,
            5.19192e-05, -1.18689e-05, 0.00529764, 0.00390647, 0.00111666,
        ],
    },
    'sparse': {
        'log_coverage': [
            0.120386, 1.03698, -0.00141672, -0.0532056, 0.00863747,
            -0.0936933, 0.000815341, 0.00253726, -0.0272097, -0.0327137,
            -0.0116343, 0.00117269, 0.00482376, 0.000994596, 0.0362608,
            -0.0162002,
        ],
        'boundary_width': [
            0.456468, -0.116895, 1.31209, -0.504945, 0.0293932,
            -0.670774, -0.0144891, 0.0982917, -0.093258, 0.311687,
            0.0272359, -0.0944786, 0.00971034, -0.0088097, 0.0589099,
            -0.0363197,
        ],
        'log_length': [
            0.553756, -0.159006, 0.167157, 0.353973, 0.321599,
            -0.067902, -0.0343398, 0.0906753, -0.272354, -0.829751,
            -0.0223643, -0.0466031, -0.0698924, 0.00211547, 0.309695,
            0.00593664,
        ],
        'length_spread': [
            -0.198993, -0.00129606, -0.113008, 0.492886, -0.349624,
            -1.17348, 0.00542014, -0.0953037, 0.198589, 1.60316,
            -0.00653686, 0.0376603, 0.204237, 0.000215062, -0.0779518,
            0.0547279,
        ],
        'log_elongation': [
            -0.844333, -0.0602481, -0.208321, 1.0369, 0.394708,
            -0.415354, 0.00460261, -0.0859428, -0.196861, 2.91391,
            0.0161583, 0.0442184, -0.0816674, -0.0109113, -0.958961,
            0.130738,
        ],
    },
}
# END CALIBRATION


def predict(kind: str, params: dict[str, Any]) -> dict[str, float]:
    """The statistics the forward model expects for a layout of ``kind`` with ``params``."""
    x = param_features(kind, params)
    return {k: float(np.dot(FORWARD[kind][k], x)) for k in FIT_STATS[kind]}


#: The parameter grid the inverse searches, per kind: values of each column (see
#: :func:`_feature_matrix`); every combination is a candidate.
SEARCH_GRID: dict[str, dict[str, np.ndarray]] = {
    "dense": {"d": np.log(np.geomspace(0.05, 1.0, 61)), "w": np.arange(1.0, 13.0),
              "r": np.linspace(0.0, 1.0, 41)},
    "sparse": {"d": np.log(np.geomspace(0.005, 0.75, 25)), "w": np.arange(1.0, 7.0),
               "g": np.log(np.geomspace(4.0, 200.0, 25)), "h": np.linspace(0.0, 1.0, 9),
               "a": np.linspace(0.15, 0.65, 11)},
}

_GRID_CACHE: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}


def _candidates(kind: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every combination of :data:`SEARCH_GRID` (flat columns) and its feature rows (cached)."""
    if kind not in _GRID_CACHE:
        names = list(SEARCH_GRID[kind])
        mesh = np.meshgrid(*(SEARCH_GRID[kind][k] for k in names), indexing="ij")
        cols = {k: m.ravel() for k, m in zip(names, mesh, strict=True)}
        _GRID_CACHE[kind] = (cols, _feature_matrix(kind, cols))
    return _GRID_CACHE[kind]


def calibrated_params(stats: MaskStats) -> dict[str, Any]:
    """The layout parameters whose predicted statistics are closest to ``stats`` (strength 0)."""
    kind = stats.kind
    cols, feats = _candidates(kind)
    target = stats.fit_values()
    cost = np.zeros(len(feats))
    for key, scale in FIT_STATS[kind].items():
        pred = feats @ np.asarray(FORWARD[kind][key])
        cost += np.square((pred - target[key]) / scale)
    i = int(np.argmin(cost))
    best: dict[str, Any] = {"density": _round(math.exp(cols["d"][i])),
                            "boundary_width": int(cols["w"][i])}
    if kind == "dense":
        best["irregularity"] = _round(float(cols["r"][i]))
    else:
        g, h = float(cols["g"][i]), float(cols["h"][i])
        best["size"] = (_round(math.exp(g - h)), _round(math.exp(g + h)))
        best["aspect"] = aspect_range(float(cols["a"][i]))
    return best


# ----------------------------------------------------------------------------- strength

#: What ``strength`` 1 does to each mask's parameters (drawn per mask from its seed):
#: density times 2^u, boundary width plus round(1.5 u) px, irregularity plus 0.3 u (dense),
#: organelle length range widened by a factor 1.6 at each end and short / long axis ratio plus
#: 0.1 u (sparse); u uniform in [-1, 1].
#: Strength S scales every spread by S.
STRENGTH_HELP: str = (
    "0 = as measured; S > 0 draws each mask's parameters around the calibrated ones: density "
    "times 2^(S u), boundary width + round(1.5 S u) px, dense irregularity + 0.3 S u, sparse "
    "organelle length range widened by 1.6^S at each end and short / long axis ratio + 0.1 S u "
    "(u uniform in -1..1 per mask and parameter), so sizes, widths and shapes spread wider "
    "than the real ones"
)


def layout_params(stats: MaskStats, strength: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Parameters for ``stats.kind``'s layout function that reproduce ``stats``.

    ``strength`` 0 gives the calibrated parameters; above 0 they are drawn around them from
    ``seed`` (see :data:`STRENGTH_HELP`), so a set spreads wider than the measured one.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (
            0.0 <= float(strength) <= 1.0):
        raise ValueError(f"strength must be a number in [0, 1]; got {strength!r}.")
    params = calibrated_params(stats)
    s = float(strength)
    if s == 0:
        return params
    u = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x11CE,))).uniform(
        -1.0, 1.0, 4)
    params["density"] = _round(float(np.clip(params["density"] * 2.0 ** (s * u[0]), 1e-3, 1.0)))
    params["boundary_width"] = int(np.clip(params["boundary_width"] + round(1.5 * s * u[1]), 1,
                                           MAX_BOUNDARY_WIDTH))
    if stats.kind == "dense":
        params["irregularity"] = _round(float(np.clip(params["irregularity"] + 0.3 * s * u[2],
                                                      0.0, 1.0)))
    else:
        lo, hi = params["size"]
        f = 1.6**s
        params["size"] = (_round(lo / f), _round(hi * f))
        a = float(np.clip(params["aspect"][0] + 0.1 * s * u[3], 0.1, 0.9))
        params["aspect"] = aspect_range(a)
    return params


__all__ = [
    "DENSE_MAX_BACKGROUND",
    "FIT_STATS",
    "STRENGTH_HELP",
    "MaskStats",
    "aspect_range",
    "calibrated_params",
    "layout_params",
    "measure_masks",
    "param_features",
    "predict",
]
