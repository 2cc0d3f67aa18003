"""Size and shape statistics of 3-class masks, and layout parameters calibrated on them.

:func:`measure_masks` summarises a set of masks (real or synthetic) in a :class:`MaskStats`:
which layout kind fits, objects per area, the log-normal fit of object areas, membrane / ring
width, elongation, boundary irregularity (perimeter against convex perimeter) and the class
fractions. :func:`layout_params` turns such statistics into parameters of
:func:`layouts.dense_tissue` or :func:`layouts.sparse_organelles`, so that new layouts have
statistics close to the measured ones (``masks --like DIR``); ``strength`` widens the
parameters' spread from mask to mask, to make sets more diverse than the real one.

The mapping inverts a small forward model: each statistic of a layout is a least-squares fit
on features of the layout's parameters (polynomial; dense: piecewise linear in irregularity),
fitted by ``scripts/calibrate_mask_stats.py`` on layouts measured over a grid of parameters;
the coefficients are cached below. The inverse is a search over a fine grid of parameters
(:data:`SEARCH_GRID`) for the least weighted squared difference (:data:`FIT_STATS`).
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


#: Knots of the dense forward model's piecewise-linear dependence on irregularity.
IRREGULARITY_KNOTS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _feature_matrix(kind: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Rows of forward-model features from parameter columns (d = log density, w = width;
    dense: r = irregularity; sparse: g, h = log centre and half log range of sizes, a = aspect).
    """
    d, w = cols["d"], cols["w"]
    one = np.ones_like(d)
    if kind == "dense":
        # smooth in density and width, piecewise linear in irregularity (cell sizes change
        # fast and not monotonically between 0.5 and 0.8)
        base = [one, d, w, d * d, d * w, w * w, d**3, d * d * w]
        hats = [np.interp(cols["r"], IRREGULARITY_KNOTS, np.eye(len(IRREGULARITY_KNOTS))[k])
                for k in range(len(IRREGULARITY_KNOTS))]
        return np.stack([b * hat for hat in hats for b in base], axis=-1)
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
            6.72534, 1.01175, 1.85962e-15, 0.0184639, 2.7478e-15,
            -6.245e-17, 0.00520408, -7.77156e-16, 6.72806, 1.00313,
            -0.000430709, 0.00919322, 0.000595882, 3.66268e-05, 0.00299006,
            0.000284359, 6.77374, 1.06224, -0.0151077, -0.0283199,
            -0.0580824, -0.00255183, -0.0226046, -0.0193159, 6.78345,
            1.14138, -0.0360398, 0.0237055, -0.0996688, -0.00450622,
            -0.00446798, -0.0294257, 6.78573, 0.906488, -0.0590319,
            -0.244784, -0.120836, -0.00504902, -0.0806972, -0.0332941,
            6.78086, 0.996452, -0.0782983, 0.00330175, -0.120741,
            -0.00546997, 0.0170377, -0.0284168, 6.62487, 1.01563,
            -0.0729812, 0.281007, -0.0808748, -0.00416945, 0.118119,
            -0.0138456, 6.57918, 0.757361, -0.0935215, 0.0257177,
            -0.0812449, -0.00289804, 0.0403899, -0.0123496, 6.51773,
            0.730257, -0.0913794, 0.00811945, -0.0618534, -0.00131697,
            0.0369823, -0.0070903,
        ],
        'log_area': [
            7.04764, -0.865045, -0.000983918, 0.119505, 7.41659e-05,
            9.86918e-05, 0.0201895, -0.000388964, 6.79057, -0.934179,
            -0.00487228, 0.0901769, -0.00137569, 0.000268586, 0.00813574,
            -4.98766e-05, 6.34325, -1.35537, 0.0188937, -0.259041,
            0.0845777, 0.00361224, -0.0718252, 0.0276402, 6.06666,
            -1.26749, 0.0505091, 0.108485, 0.155838, 0.00672468,
            0.0517726, 0.047151, 5.87357, -1.23128, 0.0769577,
            -0.177948, 0.204135, 0.0106926, -0.104175, 0.0562803,
            5.67685, -0.783328, 0.127215, 0.329486, 0.213967,
            0.0117504, 0.0630417, 0.0497031, 5.85345, -0.185956,
            0.151144, 0.93592, 0.193878, 0.00951703, 0.206817,
            0.0430047, 5.84665, -0.35925, 0.202544, 0.54651,
            0.254991, 0.011393, 0.0813094, 0.0502112, 5.98655,
            0.0345334, 0.230766, 0.935194, 0.181336, 0.00399209,
            0.191652, 0.0258686,
        ],
        'boundary_width': [
            0.583758, 0.0322074, 0.624953, -0.0363246, -0.0453071,
            0.0153992, -0.0141964, -0.00750299, 1.1027, -0.0836296,
            0.723403, -0.273485, -0.0123639, 0.015875, -0.106674,
            -0.00661966, 1.88437, 0.372904, 0.770801, 0.268249,
            0.0184319, 0.0150598, 0.0860437, 0.00118265, 2.31057,
            0.534144, 0.777292, 0.411935, 0.0244473, 0.0165076,
            0.130229, 0.00800663, 2.81981, 0.380126, 0.756401,
            0.0683484, -0.0227022, 0.0178729, 0.00815548, -0.0169039,
            3.26904, 0.936287, 0.807383, 0.665063, -0.013538,
            0.0160726, 0.173929, -0.0173435, 3.96273, 1.14159,
            0.760137, 0.218324, -0.15617, 0.0165377, -0.0358919,
            -0.0737498, 4.51417, 1.4681, 0.782304, 0.574851,
            -0.152692, 0.0142542, 0.0859451, -0.0651678, 4.86097,
            0.356017, 0.814064, -0.772383, -0.158282, 0.00858009,
            -0.30102, -0.0611366,
        ],
        'area_spread': [
            0.348778, 0.0182211, -0.000380327, -0.0497286, -0.00817079,
            -0.000224988, -0.0161153, -0.00412393, 0.464505, 0.115104,
            -0.00436213, 0.121648, -0.010295, -0.000199609, 0.047635,
            -0.00395133, 0.703963, -0.0633378, -0.0212706, -0.435816,
            -0.0554161, -0.00180193, -0.166651, -0.0170816, 0.96916,
            0.200041, -0.0491336, -0.156046, -0.0640822, -0.000207801,
            -0.0549534, -0.0183534, 0.994642, 0.17379, -0.0132131,
            0.0493948, 0.0374691, 0.00183625, 0.0531392, 0.0165665,
            0.893774, -1.01287, -0.00712603, -1.22266, 0.0944254,
            0.00382064, -0.344103, 0.0368611, 1.1777, -1.16636,
            -0.0285236, -1.50821, 0.0157624, 0.00128841, -0.422447,
            0.00626371, 1.46169, -0.0923031, -0.0332812, -0.672477,
            -0.0432518, -0.00213641, -0.206996, -0.00984242, 1.74056,
            0.330333, -0.101968, 0.0973291, -0.110671, -0.000251427,
            0.0611784, -0.0388985,
        ],
        'length_spread': [
            0.200413, -0.0128963, -0.00213704, -0.0832284, -0.00093621,
            0.000187341, -0.0318045, -0.000313205, 0.243705, 0.0886296,
            -0.000807879, 0.13146, -0.00615935, -0.00036248, 0.0532057,
            -0.00187245, 0.333689, -0.0975589, -0.00427006, -0.224223,
            -0.0216806, -0.00118406, -0.0651905, -0.00684863, 0.473431,
            0.129466, -0.0124453, -0.0119787, -0.0187976, -0.000589194,
            -0.00836438, -0.0044107, 0.531942, 0.109081, -0.00788862,
            0.0728609, 0.00370514, 4.16318e-05, 0.044343, 0.00304428,
            0.480896, -0.232598, 0.00899345, -0.316624, 0.0163311,
            -0.00123992, -0.0959721, 0.00634155, 0.645126, -0.385446,
            -0.00872844, -0.566292, -0.0115614, -0.0017803, -0.164875,
            -0.00496419, 0.746818, -0.161008, -0.0264245, -0.3852,
            -0.0204891, -0.00144313, -0.11334, -0.00125639, 0.874925,
            0.111643, -0.0528705, 0.108184, -0.0506808, -0.000814965,
            0.0576447, -0.0160753,
        ],
        'irregularity': [
            1.0, -6.03469e-15, 9.35019e-17, -7.92469e-15, 3.73441e-16,
            -7.64559e-17, -2.44547e-15, -1.60462e-16, 1.01393, -0.00364979,
            -0.00151903, -0.00406086, -0.00077628, 8.33526e-05, -0.000999577,
            -0.000287161, 1.01993, 0.00818215, -0.00263893, 0.00888391,
            -0.00169494, 0.000135618, 0.00256258, -0.000564829, 1.0159,
            -0.00502837, -0.00160819, 0.00356382, 0.000967635, 0.000130821,
            0.00230206, 0.000490073, 1.01493, 0.00108441, -0.000946514,
            0.0110301, 0.0013565, 0.000131343, 0.00407301, 0.000526068,
            1.01203, -0.00931059, -0.000291014, 9.13594e-05, 0.00236813,
            0.00013224, 0.00112072, 0.000862356, 1.01461, -0.00244909,
            -0.000302008, 0.00911972, 0.00174487, 0.000130651, 0.00371246,
            0.000751603, 1.01374, -0.0100049, 0.000985887, -0.00476469,
            0.00298664, 9.13994e-05, -0.00235774, 0.000765336, 1.01468,
            0.00154127, 0.00171558, 0.0153082, 0.0032907, 2.63531e-05,
            0.00568138, 0.0010985,
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
