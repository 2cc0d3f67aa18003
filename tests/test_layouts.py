"""Tests for napari_synthgen.layouts: new layouts and variations are valid, closed and seeded.

Property-based over seeds, sizes (small, non-square, odd) and parameters. "Closed" is checked
against the objects each mask was drawn from (the private ``_*_2d`` generators return them;
a test ties each generator to its public function): two objects' interiors never touch, not
even diagonally, and sparse / variation interiors never touch background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_synthgen import layouts as lay
from napari_synthgen.layouts import (
    LAYOUT_KINDS,
    dense_tissue,
    make_layout,
    morphological_variation,
    sparse_organelles,
    variation,
)
from napari_synthgen.masks import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    MaskError,
    class_fractions,
    mask_to_instances,
)

FAST = settings(max_examples=25, deadline=None)

sides = st.one_of(st.integers(16, 40), st.integers(41, 180), st.sampled_from([48, 64, 97, 131]))
shapes = st.tuples(sides, sides)
seeds = st.integers(0, 2**32 - 1)
densities = st.floats(0.02, 1.0)
widths = st.integers(1, 6)
units = st.floats(0.0, 1.0)


# ----------------------------------------------------------------------------- helpers


def _pairs(a: np.ndarray, diagonal: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Views of every 4-adjacent (and, optionally, diagonal) pixel pair of ``a``."""
    out = [(a[:, :-1], a[:, 1:]), (a[:-1, :], a[1:, :])]
    if diagonal:
        out += [(a[:-1, :-1], a[1:, 1:]), (a[:-1, 1:], a[1:, :-1])]
    return out


def assert_valid(mask: np.ndarray, shape: tuple[int, ...]) -> None:
    """A uint8 class mask of the requested shape."""
    assert mask.dtype == np.uint8
    assert mask.shape == tuple(shape)
    assert set(np.unique(mask).tolist()) <= {BACKGROUND, INTERIOR, BOUNDARY}


def assert_objects_closed(mask: np.ndarray, labels: np.ndarray) -> None:
    """Interiors of two different objects are never adjacent (4- or 8-neighbours)."""
    interior = mask == INTERIOR
    for (ip, iq), (lp, lq) in zip(
        _pairs(interior, diagonal=True), _pairs(labels, diagonal=True), strict=True
    ):
        touching = ip & iq & (lp != lq)
        assert not touching.any(), f"{int(touching.sum())} interior contacts between objects"
    # so every interior component lies within one object
    comp, n = ndi.label(interior)
    if n:
        lo = ndi.minimum(labels, comp, np.arange(1, n + 1))
        hi = ndi.maximum(labels, comp, np.arange(1, n + 1))
        assert np.array_equal(lo, hi)


def assert_enclosed(mask: np.ndarray) -> None:
    """No interior pixel is 4-adjacent to background."""
    interior, bg = mask == INTERIOR, mask == BACKGROUND
    for (ip, iq), (bp, bq) in zip(_pairs(interior), _pairs(bg), strict=True):
        assert not (ip & bq).any()
        assert not (iq & bp).any()


def assert_cells_apart(mask: np.ndarray) -> None:
    """With mask_to_instances' objects, no interior pixel touches another object's interior."""
    inst = mask_to_instances(mask)
    interior = mask == INTERIOR
    for (ip, iq), (lp, lq) in zip(_pairs(interior), _pairs(inst), strict=True):
        assert not (ip & iq & (lp != lq)).any()


def n_cells(mask: np.ndarray, connectivity: int = 1) -> int:
    """Number of interior components, 4-connected (1) or 8-connected (2)."""
    structure = ndi.generate_binary_structure(2, connectivity)
    return int(ndi.label(mask == INTERIOR, structure=structure)[1])


def rng_for(seed: int) -> np.random.Generator:
    """The generator a 2-D public call with ``seed`` uses."""
    return lay._rngs(seed, 1)[0]


@pytest.fixture(scope="session")
def isbi_masks(isbi_dir: Path) -> list[np.ndarray]:
    """A few real ISBI 2012 masks (classes 1 and 2, 512 x 512)."""
    return [
        tifffile.imread(isbi_dir / "masks" / f"isbi2012_train_{i:02d}.tif") for i in (0, 9, 18, 29)
    ]


# ----------------------------------------------------------------------------- dense tissue


@FAST
@given(shape=shapes, density=densities, width=widths, irregularity=units, seed=seeds)
def test_dense_is_closed_tissue_without_background(
    shape: tuple[int, int], density: float, width: int, irregularity: float, seed: int
) -> None:
    mask, labels = lay._dense_2d(shape, density, width, irregularity, rng_for(seed))
    assert_valid(mask, shape)
    assert not (mask == BACKGROUND).any()
    assert (mask == INTERIOR).any()
    assert_objects_closed(mask, labels)
    assert_cells_apart(mask)
    expected = lay._cell_count(shape, density)
    assert expected / 2 - 1 <= n_cells(mask) <= 1.5 * expected + 3


@FAST
@given(shape=shapes, density=densities, width=widths, irregularity=units, seed=seeds)
def test_dense_public_matches_generator_and_is_deterministic(
    shape: tuple[int, int], density: float, width: int, irregularity: float, seed: int
) -> None:
    kw = {"density": density, "boundary_width": width, "irregularity": irregularity}
    mask = dense_tissue(shape, seed=seed, **kw)
    assert np.array_equal(mask, dense_tissue(shape, seed=seed, **kw))
    ref, _ = lay._dense_2d(shape, density, width, irregularity, rng_for(seed))
    assert np.array_equal(mask, ref)


@FAST
@given(h=st.integers(48, 160), w=st.integers(48, 160), seed=seeds)
def test_dense_different_seeds_differ(h: int, w: int, seed: int) -> None:
    assert not np.array_equal(dense_tissue((h, w), seed=seed), dense_tissue((h, w), seed=seed + 1))


@pytest.mark.parametrize("width", [3, 4])
def test_dense_default_density_is_isbi_like(width: int) -> None:
    """Density 0.5 on 512 x 512: ~100 cells (ISBI 88-137), boundary fraction 0.14-0.3."""
    for seed in range(3):
        mask = dense_tissue((512, 512), boundary_width=width, seed=seed)
        assert 85 <= n_cells(mask) <= 140
        assert 0.14 <= class_fractions(mask)["boundary"] <= 0.3


def test_dense_density_orders_cell_counts() -> None:
    counts = [n_cells(dense_tissue((256, 256), density=d, seed=1)) for d in (0.1, 0.4, 1.0)]
    assert counts[0] < counts[1] < counts[2]


# ----------------------------------------------------------------------------- organelles


@FAST
@given(
    shape=shapes,
    density=densities,
    width=st.integers(1, 4),
    lo=st.floats(0, 30),
    ratio=st.floats(1, 4),
    seed=seeds,
)
def test_sparse_blobs_are_enclosed_on_background(
    shape: tuple[int, int], density: float, width: int, lo: float, ratio: float, seed: int
) -> None:
    size = (1 + lo, (1 + lo) * ratio)  # may be thinner than the ring allows: blobs widen
    mask, labels = lay._sparse_2d(shape, density, width, size, rng_for(seed))
    assert_valid(mask, shape)
    assert (mask == BACKGROUND).any()
    assert_enclosed(mask)
    assert_objects_closed(mask, labels)
    assert np.array_equal(labels == 0, mask == BACKGROUND)
    ids = np.unique(labels[labels > 0])
    assert np.array_equal(ids, np.unique(labels[mask == INTERIOR]))  # each blob has interior


@FAST
@given(h=st.integers(96, 200), w=st.integers(96, 200), density=st.floats(0.05, 0.4), seed=seeds)
def test_sparse_density_is_covered_fraction(h: int, w: int, density: float, seed: int) -> None:
    mask = sparse_organelles((h, w), density=density, seed=seed)
    assert abs((1 - class_fractions(mask)["background"]) - density) < 0.05


@FAST
@given(shape=shapes, density=densities, width=st.integers(1, 4), seed=seeds)
def test_sparse_public_matches_generator_and_is_deterministic(
    shape: tuple[int, int], density: float, width: int, seed: int
) -> None:
    mask = sparse_organelles(shape, density=density, boundary_width=width, seed=seed)
    again = sparse_organelles(shape, density=density, boundary_width=width, seed=seed)
    assert np.array_equal(mask, again)
    ref, _ = lay._sparse_2d(shape, density, width, (10.0, 40.0), rng_for(seed))
    assert np.array_equal(mask, ref)


@FAST
@given(h=st.integers(48, 160), w=st.integers(48, 160), seed=seeds)
def test_sparse_different_seeds_differ(h: int, w: int, seed: int) -> None:
    a = sparse_organelles((h, w), seed=seed)
    assert not np.array_equal(a, sparse_organelles((h, w), seed=seed + 1))


def test_sparse_blobs_are_elongated_and_sized() -> None:
    """Blobs span the requested lengths and are longer than wide, like mitochondria."""
    _, labels = lay._sparse_2d((512, 512), 0.3, 2, (10.0, 40.0), rng_for(0))
    ids = np.arange(1, int(labels.max()) + 1)
    boxes = [b for b in ndi.find_objects(labels) if b is not None]
    spans = np.array([max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes])
    assert len(spans) > 200
    assert np.percentile(spans, 5) >= 7 and np.percentile(spans, 95) <= 48
    area = ndi.sum_labels(np.ones_like(labels), labels, ids)
    # a filled ellipse of the same length would be larger than these elongated blobs
    assert np.median(area[area > 0] / (np.pi / 4 * spans**2)) < 0.8


# ----------------------------------------------------------------------------- stacks, kinds


@pytest.mark.parametrize("kind", LAYOUT_KINDS)
def test_make_layout_dispatches_and_stacks(kind: str) -> None:
    stack = make_layout(kind, (3, 64, 80), density=0.4, boundary_width=2, seed=5)
    assert_valid(stack, (3, 64, 80))
    assert np.array_equal(
        stack[0], make_layout(kind, (64, 80), density=0.4, boundary_width=2, seed=5)
    )
    assert not np.array_equal(stack[0], stack[1])
    assert not np.array_equal(stack[1], stack[2])


def test_make_layout_kinds() -> None:
    dense = make_layout("dense", (96, 96), seed=1)
    sparse = make_layout("sparse", (96, 96), seed=1)
    assert not (dense == BACKGROUND).any()
    assert (sparse == BACKGROUND).any()


# ----------------------------------------------------------------------------- variations


def _check_variation(mask: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Run the 2-D variation, check the invariants, return the result.

    Class fractions are compared from 48 px up: on a 16 px slice one pixel row is 0.06.
    """
    out, labels = lay._vary_2d(mask, strength, rng_for(seed))
    assert np.array_equal(out, variation(mask, strength=strength, seed=seed))
    assert_valid(out, mask.shape)
    assert_enclosed(out)
    assert_objects_closed(out, labels)
    if min(mask.shape) >= 48:
        before, after = class_fractions(mask), class_fractions(out)
        for name in before:
            assert abs(before[name] - after[name]) < 0.05, (name, before[name], after[name])
    return out


@settings(max_examples=12, deadline=None)
@given(index=st.integers(0, 3), strength=st.floats(0.05, 1.0), seed=seeds)
def test_variation_of_real_isbi_mask(
    isbi_masks: list[np.ndarray], index: int, strength: float, seed: int
) -> None:
    mask = isbi_masks[index]
    out = _check_variation(mask, strength, seed)
    assert not (out == BACKGROUND).any()
    assert 0.85 * n_cells(mask) <= n_cells(out) <= 1.15 * n_cells(mask)
    assert not np.array_equal(out, mask)


@FAST
@given(shape=shapes, width=st.integers(2, 4), strength=st.floats(0.05, 1.0), seed=seeds)
def test_variation_of_dense_layout(
    shape: tuple[int, int], width: int, strength: float, seed: int
) -> None:
    mask = dense_tissue(shape, boundary_width=width, seed=seed)
    out = _check_variation(mask, strength, seed + 1)
    assert not (out == BACKGROUND).any()


@FAST
@given(shape=shapes, density=st.floats(0.05, 0.6), strength=st.floats(0.05, 1.0), seed=seeds)
def test_variation_of_sparse_layout(
    shape: tuple[int, int], density: float, strength: float, seed: int
) -> None:
    mask = sparse_organelles(shape, density=density, seed=seed)
    _check_variation(mask, strength, seed + 1)


@FAST
@given(shape=shapes, seed=seeds)
def test_variation_strength_zero_is_identity(shape: tuple[int, int], seed: int) -> None:
    mask = dense_tissue(shape, seed=seed)
    out = variation(mask, strength=0, seed=seed)
    assert np.array_equal(out, mask)
    assert out is not mask


def test_variation_of_stack(isbi_masks: list[np.ndarray]) -> None:
    stack = np.stack([m[:200, :300] for m in isbi_masks[:3]])
    out = variation(stack, strength=0.7, seed=3)
    assert_valid(out, stack.shape)
    assert np.array_equal(out, variation(stack, strength=0.7, seed=3))
    assert np.array_equal(out[0], variation(stack[0], strength=0.7, seed=3))
    for before, after in zip(stack, out, strict=True):
        assert_enclosed(after)
        assert abs(class_fractions(before)["boundary"] - class_fractions(after)["boundary"]) < 0.05
        assert not np.array_equal(before, after)
    assert not np.array_equal(
        variation(stack, strength=0.7, seed=3), variation(stack, strength=0.7, seed=4)
    )


def test_variation_accepts_other_integer_dtypes() -> None:
    mask = dense_tissue((64, 64), seed=2).astype(np.int64)
    out = variation(mask, seed=1)
    assert out.dtype == np.uint8


# ----------------------------------------------------------------------------- morphology


@FAST
@given(
    kind=st.sampled_from(LAYOUT_KINDS),
    shape=shapes,
    grow=st.integers(-3, 3),
    coverage=st.floats(0.0, 1.0),
    seed=seeds,
)
def test_morphological_variation(
    kind: str, shape: tuple[int, int], grow: int, coverage: float, seed: int
) -> None:
    mask = make_layout(kind, shape, boundary_width=3, seed=seed)
    out = morphological_variation(mask, grow=grow, coverage=coverage, seed=seed)
    assert_valid(out, shape)
    assert np.array_equal(
        out, morphological_variation(mask, grow=grow, coverage=coverage, seed=seed)
    )
    assert np.array_equal(out == BACKGROUND, mask == BACKGROUND)
    assert_enclosed(out)
    boundary_before, boundary_after = (mask == BOUNDARY).sum(), (out == BOUNDARY).sum()
    if grow == 0 or coverage == 0:
        assert np.array_equal(out, mask)
    elif grow > 0:
        assert boundary_after >= boundary_before
        assert not ((out == INTERIOR) & (mask != INTERIOR)).any()  # interior only shrinks
    else:
        assert boundary_after <= boundary_before
        assert n_cells(out) == n_cells(mask)  # thinning never joins two cells,
        assert n_cells(out, 2) == n_cells(mask, 2)  # not even diagonally


def test_morphological_variation_thins_and_thickens_isbi(isbi_masks: list[np.ndarray]) -> None:
    mask = isbi_masks[0]
    base = class_fractions(mask)["boundary"]
    thin = class_fractions(morphological_variation(mask, grow=-1))["boundary"]
    thick = class_fractions(morphological_variation(mask, grow=1))["boundary"]
    assert thin < base - 0.02 and thick > base + 0.02
    patchy = morphological_variation(mask, grow=2, coverage=0.3, seed=1)
    assert (
        base
        < class_fractions(patchy)["boundary"]
        < class_fractions(morphological_variation(mask, grow=2))["boundary"]
    )


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: make_layout("voronoi", (64, 64)),
            "unknown layout kind 'voronoi'; use one of dense, sparse",
        ),
        (lambda: dense_tissue((8, 64)), "too small"),
        (lambda: dense_tissue((64,)), r"\(H, W\) or \(Z, H, W\)"),
        (lambda: dense_tissue((1, 2, 64, 64)), r"\(H, W\) or \(Z, H, W\)"),
        (lambda: dense_tissue((64.5, 64)), "integers"),
        (lambda: dense_tissue(64), r"\(H, W\)"),
        (lambda: dense_tissue((0, 64, 64)), "at least one slice"),
        (lambda: dense_tissue((64, 64), density=0), r"density must be in \(0, 1\]"),
        (lambda: dense_tissue((64, 64), density=1.5), r"density must be in \(0, 1\]"),
        (lambda: dense_tissue((64, 64), density=float("nan")), "finite number"),
        (lambda: dense_tissue((64, 64), density="0.5"), "finite number"),
        (lambda: dense_tissue((64, 64), boundary_width=0), "between 1 and"),
        (lambda: dense_tissue((64, 64), boundary_width=2.5), "integer number of pixels"),
        (lambda: dense_tissue((64, 64), boundary_width=True), "integer number of pixels"),
        (lambda: dense_tissue((64, 64), irregularity=1.2), r"irregularity must be in \[0, 1\]"),
        (lambda: dense_tissue((64, 64), seed=-1), "non-negative integer"),
        (lambda: dense_tissue((64, 64), seed=1.5), "non-negative integer"),
        (lambda: sparse_organelles((64, 64), density=-0.1), "density"),
        (lambda: sparse_organelles((64, 64), size=(0, 40)), "0 < min <= max"),
        (lambda: sparse_organelles((64, 64), size=(40, 10)), "0 < min <= max"),
        (lambda: sparse_organelles((64, 64), size=(10, 20, 30)), r"\(min, max\)"),
        (lambda: sparse_organelles((64, 64), size="big"), r"\(min, max\)"),
        (lambda: variation(np.zeros((32, 32)), strength=0.5), "dtype float64"),
        (lambda: variation(np.full((32, 32), 3, np.uint8)), "value 3"),
        (lambda: variation(np.zeros(32, np.uint8)), "1 dimensions"),
        (
            lambda: variation(np.ones((32, 32), np.uint8), strength=1.5),
            r"strength must be in \[0, 1\]",
        ),
        (lambda: variation(np.ones((32, 32), np.uint8), strength=0, seed=-2), "non-negative"),
        (lambda: morphological_variation(np.ones((32, 32), np.uint8), grow=1.5), "integer"),
        (lambda: morphological_variation(np.ones((32, 32), np.uint8), coverage=2), "coverage"),
    ],
)
def test_clear_errors(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_mask_errors_are_mask_errors() -> None:
    with pytest.raises(MaskError):
        variation(np.full((16, 16), 7, np.uint8))
