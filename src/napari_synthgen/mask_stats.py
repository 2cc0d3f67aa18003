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
    n, areas, lengths, elong, irreg, weights = 0, [], [], [], [], []
    for p in props:
        if p.area < MIN_OBJECT_AREA:
            continue
        n += 1
        r0, c0, r1, c1 = p.bbox
        if r0 == 0 or c0 == 0 or r1 == h or c1 == w:
            continue  # cut by the edge: counted, but its size and shape are not known
        major, minor = p.axis_major_length, p.axis_minor_length
        # Miles-Lantuejoul: a large object is seen whole less often; weigh it up by the
        # inverse of the area where its box fits, so statistics do not depend on image size
        weights.append(h * w / max((h - r1 + r0 + 1) * (w - c1 + c0 + 1), 1))
        areas.append(p.area)
        lengths.append(major)
        elong.append(major / max(minor, 1.0))
        convex = perimeter(p.image_convex)
        irreg.append(p.perimeter / convex if convex > 0 else 1.0)
    counts = np.bincount(mask.ravel(), minlength=3)[:3]
    return {
        "pixels": h * w, "counts": counts, "n": n, "areas": areas, "lengths": lengths,
        "elong": elong, "irreg": irreg, "weights": weights, "band": _band(mask == BOUNDARY),
    }


def _quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Weighted quantiles ``qs`` of ``values`` (linear between the weights' midpoints)."""
    order = np.argsort(values, kind="stable")
    v, wt = values[order], weights[order]
    cum = (np.cumsum(wt) - 0.5 * wt) / wt.sum()
    return np.interp(qs, cum, v)


def _log_fit(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Median and robust log-normal sigma (interquartile range of the logs / 1.349)."""
    if len(values) == 0:
        return 0.0, 0.0
    q25, q50, q75 = _quantiles(np.log(values), weights, (0.25, 0.5, 0.75))
    return float(math.exp(q50)), float((q75 - q25) / 1.349)


def measure_masks(masks: np.ndarray | Iterable[np.ndarray]) -> MaskStats:
    """Measure the size and shape statistics of ``masks`` (2-D masks, stacks, or a list).

    Objects are :func:`masks.mask_to_instances` regions (interior grown into its boundary);
    those cut by the image edge count for the density but not for sizes and shapes, and the
    others are weighted (Miles-Lantuejoul) so that large objects, more often cut, are not
    under-represented: the statistics hardly depend on the image size.
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

    areas, lengths, weights = cat("areas"), cat("lengths"), cat("weights")
    band_area = sum(p["band"][0] for p in parts)
    band_length = sum(p["band"][1] for p in parts)
    area_med, area_sig = _log_fit(areas, weights)
    len_med, len_sig = _log_fit(lengths, weights)
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
        elongation=float(_quantiles(cat("elong"), weights, (0.5,))[0]) if areas.size else 1.0,
        irregularity=float(_quantiles(cat("irreg"), weights, (0.5,))[0]) if areas.size else 1.0,
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
            7.05109, -0.890139, 0.00203226, 0.102286, -0.000315109,
            -0.000188604, 0.0173133, -0.000477507, 6.80017, -1.01256,
            -0.00279888, 0.0076202, -0.000571952, 0.000123029, -0.0123875,
            2.48796e-05, 6.40792, -1.33953, 0.0159137, -0.226261,
            0.0768988, 0.00326453, -0.0608741, 0.0258484, 6.16067,
            -1.27601, 0.0388139, 0.124748, 0.15178, 0.00761766,
            0.0667429, 0.0461312, 5.95057, -1.18666, 0.0735903,
            -0.0596942, 0.199308, 0.0110228, -0.0571535, 0.0543284,
            5.71886, -1.09885, 0.139689, 0.0145348, 0.231102,
            0.0109514, -0.0232845, 0.0568699, 5.98555, -0.477458,
            0.1366, 0.53366, 0.169884, 0.0109526, 0.0503246,
            0.0262031, 6.00635, -0.347788, 0.20221, 0.589858,
            0.249967, 0.0117656, 0.106315, 0.0474255, 6.32993,
            0.406753, 0.198845, 1.32981, 0.127576, 0.00492575,
            0.31218, 0.00495769,
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
            0.351978, -9.64341e-05, -0.00287524, -0.0512676, -0.00538598,
            5.58488e-05, -0.0157237, -0.00320978, 0.466996, -0.0114518,
            -0.00902148, -0.000444934, -0.0138102, 4.15057e-05, 0.0137981,
            -0.00516594, 0.738929, 0.0292699, -0.0168962, -0.231146,
            -0.0510408, -0.00206765, -0.0899103, -0.0156477, 0.978532,
            0.135534, -0.0345688, -0.0763202, -0.00982971, 0.00231422,
            -0.0113261, -0.00157437, 1.1759, 0.352229, -0.00415831,
            0.307678, 0.03822, 0.00113404, 0.132569, 0.0174388,
            1.12397, -0.359561, 0.0369475, -0.795185, 0.0235793,
            -0.00226185, -0.261205, 0.00809178, 1.44661, -1.33434,
            -0.0593766, -1.76122, -0.056622, 0.000507397, -0.468653,
            -0.0175527, 1.67086, -0.614995, -0.0679778, -1.04053,
            -0.0896345, -0.00360755, -0.25702, -0.0205546, 1.86997,
            0.40432, -0.0960525, 0.730056, -0.0791305, -0.00322993,
            0.358683, -0.0101827,
        ],
        'length_spread': [
            0.20506, 0.0166442, -0.00230819, -0.037304, -0.000665194,
            0.000228508, -0.0141268, 0.000373243, 0.243597, 0.0601704,
            3.37687e-05, 0.094059, -0.0067723, -0.000380355, 0.0412023,
            -0.00241304, 0.354414, -0.0898061, -0.00654511, -0.215971,
            -0.0211582, -0.000904826, -0.0717108, -0.00643174, 0.490325,
            0.0661701, -0.012823, -0.064798, -0.00570213, 0.000484957,
            -0.0216082, -0.00016084, 0.605322, 0.300301, -0.00436809,
            0.318329, 0.00390485, -6.463e-05, 0.117268, 0.00293805,
            0.608051, -0.189544, -0.00268973, -0.371149, -0.00821261,
            -0.000668447, -0.117803, -0.00365269, 0.738749, -0.351143,
            -0.0203344, -0.424592, -0.039181, -0.00190854, -0.0910012,
            -0.0141906, 0.820673, -0.249954, -0.0340006, -0.405626,
            -0.0434932, -0.0026703, -0.0926955, -0.00647941, 0.918928,
            0.137405, -0.059664, 0.307879, -0.0379138, -0.000440696,
            0.153142, -0.00498851,
        ],
        'irregularity': [
            1.0, 2.65053e-15, -9.28521e-18, 5.66654e-16, 3.84553e-18,
            -6.61214e-17, -2.28534e-16, -3.11383e-16, 1.01407, -0.00458729,
            -0.0015413, -0.00488148, -0.000716427, 8.84675e-05, -0.00117688,
            -0.000263297, 1.0207, 0.00709467, -0.00279202, 0.00780619,
            -0.00174192, 0.000151226, 0.00210564, -0.000630651, 1.01652,
            -0.0057998, -0.0015494, 0.00288463, 0.000972474, 0.000132741,
            0.00219156, 0.000476127, 1.01657, 0.00232019, -0.00106137,
            0.0132438, 0.00138028, 0.000146662, 0.00478443, 0.000496871,
            1.01464, -0.0083244, -0.000808061, -0.000306229, 0.00170158,
            0.000172597, 0.000279522, 0.000427379, 1.01712, -0.00265339,
            -0.000441661, 0.00916985, 0.00107971, 0.000120501, 0.0037108,
            0.000455328, 1.01724, -0.0113839, 0.000772936, -0.008599,
            0.00210601, 6.3175e-05, -0.00441672, 0.000271282, 1.02006,
            0.00065581, 0.000888169, 0.013794, 0.00266476, 8.23715e-05,
            0.00540723, 0.000847598,
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
            0.683993, -0.161372, 0.158479, 0.286837, 0.149078,
            -0.106146, -0.0351151, 0.0974232, -0.248453, -0.742042,
            -0.0252798, -0.0428301, -0.0101987, 0.00274614, 0.303668,
            0.0147275,
        ],
        'length_spread': [
            0.132829, 0.052096, -0.125306, 0.32822, -0.464428,
            -1.29371, 0.00637535, -0.0793005, 0.198676, 1.46906,
            -0.019609, 0.0411583, 0.252158, -0.00086236, -0.015348,
            0.0206325,
        ],
        'log_elongation': [
            -0.729061, -0.0432091, -0.21455, 0.982159, 0.363667,
            -0.442784, 0.00536226, -0.0806674, -0.209282, 2.89523,
            0.0123031, 0.046082, -0.0661796, -0.0114716, -0.948026,
            0.126468,
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
