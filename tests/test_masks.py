"""The 3-class mask model: validation, coercion, conversions, boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from napari_synthgen import masks as M

masks_2d = arrays(
    np.uint8,
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    elements=st.integers(0, 2),
)


@given(masks_2d)
@settings(max_examples=60, deadline=None)
def test_palette_round_trip(mask: np.ndarray) -> None:
    rgb = M.to_palette(mask)
    assert rgb.shape == (*mask.shape, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(M.from_palette(rgb), mask)
    # an alpha channel is ignored; auto-detection of palette images works for real sizes
    rgba = np.concatenate([rgb, np.full((*mask.shape, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(M.from_palette(rgba), mask)


def test_palette_colours_are_the_reference_ones() -> None:
    rgb = M.to_palette(np.array([[0, 1, 2]], np.uint8))
    assert rgb[0].tolist() == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]


def test_auto_detects_palette_image(isbi_mask: np.ndarray) -> None:
    np.testing.assert_array_equal(M.coerce_mask(M.to_palette(isbi_mask)), isbi_mask)


def test_palette_error_names_colour_and_location() -> None:
    rgb = M.to_palette(np.ones((8, 8), np.uint8))
    rgb[3, 5] = (10, 200, 30)
    with pytest.raises(M.MaskError, match=r"colour \(10, 200, 30\) at row 3, column 5"):
        M.from_palette(rgb)
    # within tolerance it maps to the nearest class colour
    assert M.from_palette(rgb, tolerance=60)[3, 5] == M.INTERIOR


def _instances(draw_shape: tuple[int, int], seed: int, n: int) -> np.ndarray:
    """Random touching instances: a Voronoi partition with some background holes."""
    rng = np.random.default_rng(seed)
    h, w = draw_shape
    pts = rng.uniform(0, (h, w), size=(n, 2))
    yy, xx = np.mgrid[:h, :w]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    lab = (np.argmin(d, axis=-1) + 1).astype(np.int32)
    lab[rng.random((h, w)) < 0.05] = 0
    lab[lab == 1] = 0  # one whole region is background
    return lab


@given(st.integers(0, 10_000), st.integers(2, 30), st.integers(1, 3),
       st.tuples(st.integers(5, 60), st.integers(5, 60)))
@settings(max_examples=60, deadline=None)
def test_instances_to_mask_properties(seed: int, n: int, width: int,
                                      shape: tuple[int, int]) -> None:
    lab = _instances(shape, seed, n)
    mask = M.instances_to_mask(lab, boundary_width=width)
    assert mask.dtype == np.uint8 and mask.shape == lab.shape
    # background stays background, objects stay objects
    np.testing.assert_array_equal(mask == M.BACKGROUND, lab == 0)
    # every instance keeps some interior
    for i in np.unique(lab[lab > 0]):
        assert (mask[lab == i] == M.INTERIOR).any(), f"instance {i} lost its interior"
    # every boundary pixel is within `width` of another instance or background
    fp = M._disk(width)
    hi = ndi.maximum_filter(lab, footprint=fp, mode="nearest")
    lo = ndi.minimum_filter(lab, footprint=fp, mode="nearest")
    near_other = (hi != lab) | (lo != lab)
    bnd = mask == M.BOUNDARY
    assert near_other[bnd].all()
    # boundaries are closed: no interior pixel 4-touches another instance or background
    interior = mask == M.INTERIOR
    blamed: set[int] = set()
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        a, b = tuple(a), tuple(b)
        differ = lab[a] != lab[b]
        blamed |= set(lab[a][interior[a] & differ].tolist())
        blamed |= set(lab[b][interior[b] & differ].tolist())
    # an interior pixel next to a different label is allowed only in objects too thin to have
    # a boundary-free core (their core is kept as interior so that no object disappears)
    for i in blamed:
        obj = lab == i
        assert ndi.distance_transform_edt(np.pad(obj, 1)).max() <= width + 1


def test_instances_width_one_every_boundary_touches_other() -> None:
    lab = np.zeros((20, 20), np.int32)
    lab[2:10, 2:10] = 1
    lab[2:10, 10:18] = 2
    lab[12:18, 4:16] = 3
    mask = M.instances_to_mask(lab, boundary_width=1)
    bnd = np.argwhere(mask == M.BOUNDARY)
    for y, x in bnd:
        nb = [lab[yy, xx] for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
              if 0 <= yy < 20 and 0 <= xx < 20]
        assert any(v != lab[y, x] for v in nb)
    # two touching squares are separated by a boundary two pixels thick (one each side)
    assert (mask[5, 9:11] == M.BOUNDARY).all() and mask[5, 8] == M.INTERIOR


def test_tiny_instance_keeps_interior() -> None:
    lab = np.zeros((9, 9), np.int32)
    lab[4, 4] = 5
    mask = M.instances_to_mask(lab, boundary_width=3)
    assert mask[4, 4] == M.INTERIOR


def test_binary_and_membrane_sources() -> None:
    b = np.zeros((20, 20), bool)
    b[4:12, 4:12] = True
    m = M.coerce_mask(b, "binary", boundary_width=1)
    assert m[0, 0] == M.BACKGROUND and m[8, 8] == M.INTERIOR and m[4, 8] == M.BOUNDARY
    np.testing.assert_array_equal(M.coerce_mask(b.astype(np.uint8) * 255, "binary"), m)
    mem = M.coerce_mask(b.astype(np.uint8) * 255, "membrane")
    assert set(np.unique(mem)) == {M.INTERIOR, M.BOUNDARY} and mem[8, 8] == M.INTERIOR


def test_isbi_mask_round_trips_through_instances(isbi_mask: np.ndarray) -> None:
    inst = M.mask_to_instances(isbi_mask)
    assert 80 < inst.max() < 200
    # every interior pixel belongs to an instance; the instance keeps its interior
    assert (inst[isbi_mask == M.INTERIOR] > 0).all()
    rebuilt = M.rebuild_boundaries(isbi_mask, width=2)
    f = M.class_fractions(rebuilt)
    assert f["background"] == 0.0 and 0.05 < f["boundary"] < 0.35


def test_rebuild_boundaries_from_painted_interior() -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[5:20, 5:35] = M.INTERIOR  # two cells separated by a painted boundary line
    mask[5:20, 19:21] = M.BOUNDARY
    out = M.rebuild_boundaries(mask, width=2)
    assert out[0, 0] == M.BACKGROUND
    assert (out[12, 5:7] == M.BOUNDARY).all() and out[12, 7] == M.INTERIOR
    # the separating line is kept closed between the two cells
    assert (out[6:19, 19:21] == M.BOUNDARY).all()
    _, n = ndi.label(out == M.INTERIOR)
    assert n == 2


@pytest.mark.parametrize(
    ("data", "kwargs", "pattern"),
    [
        (np.array([[0, 1], [3, 2]], np.uint8), {}, r"value 3 at row 1, column 0"),
        (np.array([[0, -1], [1, 2]], np.int16), {}, r"value -1 at row 0, column 1"),
        (np.zeros((4, 4), bool), {}, r"boolean.*source='binary'"),
        (np.full((4, 4), 255, np.uint8), {}, r"0 and 255.*binary"),
        (np.arange(16, dtype=np.int32).reshape(4, 4), {}, r"instance label.*instances"),
        (np.zeros((4, 4), np.float32), {}, r"float32.*allow_float=True"),
        (np.full((4, 4), 0.5), {"allow_float": True}, r"non-integer value 0.5 at row 0"),
        (np.zeros(5, np.uint8), {}, r"1 dimensions"),
        (np.zeros((2, 2, 2, 2), np.uint8), {}, r"4 dimensions"),
        (np.array([[0, 7]], np.uint8), {"source": "binary"}, r"binary mask holds 0/1 or 0/255"),
        (np.zeros((2, 2), np.uint8), {"source": "nonsense"}, r"unknown mask source"),
    ],
)
def test_bad_masks_give_clear_errors(data: np.ndarray, kwargs: dict, pattern: str) -> None:
    with pytest.raises(M.MaskError, match=pattern):
        M.coerce_mask(data, **kwargs)


def test_error_locates_slice_in_stack() -> None:
    stack = np.zeros((3, 5, 5), np.uint8)
    stack[2, 1, 4] = 9
    with pytest.raises(M.MaskError, match=r"slice 2, row 1, column 4"):
        M.validate_mask(stack)


def test_float_masks_on_request() -> None:
    f = np.array([[0.0, 1.0], [2.0, 1.0]])
    np.testing.assert_array_equal(M.coerce_mask(f, allow_float=True), f.astype(np.uint8))


def test_stacks_are_processed_slice_by_slice() -> None:
    lab = np.zeros((2, 10, 10), np.int32)
    lab[0, 2:8, 2:8] = 1
    lab[1, 2:8, 2:8] = 1  # same id in another slice: a separate object per slice
    m = M.instances_to_mask(lab)
    np.testing.assert_array_equal(m[0], m[1])
    assert M.mask_to_instances(m).shape == lab.shape


def test_class_fractions_and_present(isbi_mask: np.ndarray) -> None:
    f = M.class_fractions(isbi_mask)
    assert f["background"] == 0.0 and abs(sum(f.values()) - 1.0) < 1e-9
    assert M.classes_present(isbi_mask) == [1, 2]


def test_empty_mask_validation() -> None:
    assert M.empty_mask((3, 4), M.INTERIOR).tolist() == [[1] * 4] * 3
    with pytest.raises(M.MaskError):
        M.empty_mask((0, 4))
    with pytest.raises(M.MaskError):
        M.empty_mask((4, 4), 3)
