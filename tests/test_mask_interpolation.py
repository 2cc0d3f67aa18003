"""Interpolating mask slices between painted ones (mask_interpolation)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_synthgen.mask_interpolation import (
    interpolate_painted,
    interpolate_slices,
    painted_slices,
)
from napari_synthgen.masks import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    MaskError,
    instances_to_mask,
    mask_to_instances,
)


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int32)
    return instances_to_mask(inst, boundary_width=2)


def _centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask != BACKGROUND)
    return float(ys.mean()), float(xs.mean())


def _assert_valid(mask: np.ndarray) -> None:
    """Values are classes and boundaries are closed: no interior touches background, and
    cells stay apart under 8-connectivity too."""
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
    interior = mask == INTERIOR
    # no interior pixel touches background
    pad = np.pad(mask, 1, mode="edge")
    for nb in (pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]):
        assert not (interior & (nb == BACKGROUND)).any()
    assert ndi.label(interior)[1] == ndi.label(interior, structure=np.ones((3, 3)))[1]


def test_a_moved_disc_sits_at_intermediate_positions_in_between() -> None:
    shape = (64, 96)  # discs overlapping a little: the same cell, moved 20 px
    a, b = _disc(shape, 32, 38, 14), _disc(shape, 32, 58, 14)
    made = interpolate_slices(a, b, 3)
    assert made.shape == (3, 64, 96) and made.dtype == np.uint8
    for i, m in enumerate(made, start=1):
        _assert_valid(m)
        cy, cx = _centre(m)
        assert abs(cx - (38 + 20 * i / 4)) < 1.5 and abs(cy - 32) < 1
        assert int(mask_to_instances(m).max()) == 1  # one disc, not two halves
        area = int((m != BACKGROUND).sum())
        # linear distance blending thins a moving shape part-way, never to a sliver
        assert 0.6 * np.pi * 14**2 < area < 1.05 * np.pi * 14**2
        assert (m == BOUNDARY).any() and (m == INTERIOR).any()


def test_a_painted_stack_gets_every_gap_filled(isbi_dir) -> None:
    import tifffile

    real = np.stack([tifffile.imread(isbi_dir / "masks" / f"isbi2012_train_{i:02d}.tif")
                     [:160, :160] for i in range(7)])
    stack = np.ones_like(real)  # a new stack filled with interior
    keys = [0, 3, 6]
    stack[keys] = real[keys]
    assert painted_slices(stack) == keys
    out = interpolate_painted(stack)
    assert out.shape == stack.shape
    np.testing.assert_array_equal(out[keys], real[keys])  # keys byte-identical
    for z in (1, 2, 4, 5):
        _assert_valid(out[z])
        assert (out[z] == real[z]).mean() > 0.6  # close to the real section
        assert set(np.unique(out[z])) == {INTERIOR, BOUNDARY}
    assert painted_slices(out) == list(range(7))
    # same input, same bytes
    assert interpolate_painted(stack).tobytes() == out.tobytes()


def test_unpainted_ends_stay_and_bad_input_is_refused() -> None:
    stack = np.zeros((5, 40, 40), np.uint8)
    stack[1] = _disc((40, 40), 20, 14, 8)
    stack[3] = _disc((40, 40), 20, 26, 8)
    out = interpolate_painted(stack)
    assert not out[0].any() and not out[4].any() and out[2].any()
    assert painted_slices(stack, blank=BACKGROUND) == [1, 3]
    with pytest.raises(MaskError, match="at least two painted slices; this stack has 1"):
        interpolate_painted(np.where(np.arange(5)[:, None, None] == 1, stack, 0))
    with pytest.raises(MaskError, match=r"shape \(Z, H, W\)"):
        interpolate_painted(stack[0])
    with pytest.raises(MaskError, match="one shape"):
        interpolate_slices(stack[1], stack[1, :20], 2)
    assert interpolate_slices(stack[1], stack[3], 0).shape == (0, 40, 40)


@pytest.mark.parametrize("corner", [(0, 0), (256, 256)])
def test_real_middle_section_is_closer_than_a_copied_key(isbi_dir, corner) -> None:
    """VNC stack 1 (with background): sections 0 and 4 painted, 2 made; the made one agrees
    with the real section 2 better than a copy of section 0, and keeps the keys' background."""
    import tifffile

    y, x = corner
    folder = isbi_dir.parent / "vnc_stack1" / "masks"
    real = np.stack([tifffile.imread(folder / f"vnc_{i:02d}.tif")[y:y + 256, x:x + 256]
                     for i in range(5)])
    made = interpolate_slices(real[0], real[4], 3)
    assert (made[1] == real[2]).mean() > (real[0] == real[2]).mean() + 0.01
    keys_bg = max((real[0] == BACKGROUND).mean(), (real[4] == BACKGROUND).mean())
    for m in made:
        _assert_valid(m)
        assert (m == BACKGROUND).mean() <= keys_bg + 0.02


def test_core_module_imports_no_gui_and_no_torch() -> None:
    code = ("import sys, napari_synthgen.mask_interpolation; bad = [m for m in sys.modules if "
            "m.split('.')[0] in ('napari', 'magicgui', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', "
            "'superqt', 'torch')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
