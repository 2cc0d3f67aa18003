"""The mask editor, reader, writer and sample through the real manifest in a real viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from app_model.types import KeyBinding

from napari_synthgen import io
from napari_synthgen.masks import BACKGROUND, BOUNDARY, INTERIOR, class_fractions
from napari_synthgen.napari_io import MaskNotSavedError

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _press(layer, key: str) -> None:
    """Run the layer's binding for ``key``, as a key press on the canvas does."""
    layer.keymap[KeyBinding.from_str(key)](layer)


def _colour_share(shot: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.all(np.abs(shot[..., :3].astype(int) - rgb) <= tol, axis=-1)


def test_paint_each_class_and_see_its_colour(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=True)
    editor = _dock(viewer, "Mask editor")
    editor.new_height.value, editor.new_width.value = 60, 90
    editor.fill.value = "background"
    layer = editor.new_mask()
    assert layer.data.shape == (60, 90) and layer.opacity == 1.0
    # paint each class in its own third, picking the class by button and by shortcut key
    editor.class_buttons[INTERIOR].changed(True)
    assert layer.selected_label == INTERIOR
    layer.brush_size = 20
    for x in range(32, 58, 4):
        for y in range(4, 60, 6):
            layer.paint((y, x), layer.selected_label)
    _press(layer, "O")
    assert layer.selected_label == BOUNDARY
    for x in range(64, 90, 4):
        for y in range(4, 60, 6):
            layer.paint((y, x), layer.selected_label)
    _press(layer, "G")
    layer.paint((30, 5), layer.selected_label)
    assert set(np.unique(layer.data[:, 62:])) == {BOUNDARY}
    assert (layer.data[:, 36:54] == INTERIOR).all() and (layer.data[:, :20] == 0).all()

    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    green, red = _colour_share(shot, (0, 255, 0)), _colour_share(shot, (255, 0, 0))
    assert green.mean() > 0.05 and red.mean() > 0.05
    assert np.nonzero(green)[1].mean() < np.nonzero(red)[1].mean()  # green left of red
    # painting is undoable
    layer.undo()
    assert layer.data[30, 5] == 0


def test_edits_are_in_place_and_undoable(make_napari_viewer, isbi_mask: np.ndarray) -> None:
    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    layer = viewer.add_labels(isbi_mask.copy(), name="isbi")
    editor.mask_layer.value = layer
    data_id = id(layer.data)
    before = layer.data.copy()
    editor.boundary_width.value = 1
    editor.rebuild()
    editor.wait_idle()
    assert id(layer.data) == data_id  # the same array, edited in place
    assert class_fractions(layer.data)["boundary"] < class_fractions(before)["boundary"]
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    editor.variation_seed.value = 3
    editor.variation()
    editor.wait_idle()
    assert not np.array_equal(layer.data, before)
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    editor.layout_kind.value = "sparse"
    editor.new_layout()
    assert class_fractions(layer.data)["background"] > 0.3
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_edits_run_in_a_worker_and_never_overwrite_strokes(make_napari_viewer,
                                                            isbi_mask: np.ndarray) -> None:
    """Rebuild / Variation / Interpolate return at once (the viewer never waits) and apply
    their result when it arrives; a stroke painted meanwhile is kept and the user is told."""
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    layer = viewer.add_labels(isbi_mask.copy(), name="isbi")
    editor.mask_layer.value = layer
    before = layer.data.copy()
    job = editor.variation()
    assert job is not None
    # results arrive through the Qt event loop: nothing changed before it runs
    np.testing.assert_array_equal(layer.data, before)
    assert not editor.variation_button.enabled and not editor.rebuild_button.enabled
    assert editor.rebuild() is None  # one edit at a time
    stroke = INTERIOR if layer.data[3, 4] == BOUNDARY else BOUNDARY
    layer.data_setitem((np.array([3]), np.array([4])), stroke)  # a stroke meanwhile
    stroked = layer.data.copy()
    n = len(notification_manager.records)
    editor.wait_idle()
    np.testing.assert_array_equal(layer.data, stroked)  # the stroke kept, nothing overwritten
    said = [str(r.message) for r in notification_manager.records[n:]]
    assert any("was edited while it ran" in m and "run it again" in m for m in said), said
    assert editor.variation_button.enabled and editor.rebuild_button.enabled
    # run again on the unchanged mask: applied, one undo step
    editor.variation()
    editor.wait_idle()
    assert not np.array_equal(layer.data, stroked) and editor.last_changed > 0
    layer.undo()
    np.testing.assert_array_equal(layer.data, stroked)


def test_new_mask_like_an_image_and_conversions(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    img = viewer.add_image(np.zeros((40, 50), np.uint8), name="em", scale=(2.0, 2.0))
    editor.like.value = img
    layer = editor.new_mask()
    assert layer.data.shape == (40, 50) and tuple(layer.scale) == (2.0, 2.0)
    inst = np.zeros((40, 50), np.int32)
    inst[5:20, 5:20], inst[5:20, 20:40] = 1, 2
    viewer.add_labels(inst, name="instances")
    editor.convert_source.value = viewer.layers["instances"]
    editor.convert_kind.value = "instances"
    converted = editor.convert()
    assert converted.name == "instances mask"
    assert set(np.unique(converted.data)) == {0, 1, 2}


def test_save_and_open_round_trip(make_napari_viewer, tmp_path: Path,
                                  isbi_mask: np.ndarray) -> None:
    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    layer = viewer.add_labels(isbi_mask.copy(), name="m")
    editor.mask_layer.value = layer
    editor.save_path.value = tmp_path / "saved.tif"
    assert editor.save_mask() == tmp_path / "saved.tif"
    np.testing.assert_array_equal(io.read_mask(tmp_path / "saved.tif"), isbi_mask)
    editor.open_path.value = tmp_path / "saved.tif"
    opened = editor.open_mask()
    assert opened.name == "saved" and opened.colormap.color_dict[2].tolist()[:3] == [1, 0, 0]


def test_open_binary_mask_names_the_read_as_field(make_napari_viewer, tmp_path: Path) -> None:
    """An organelle mask saved 0/255, opened as auto, is refused with the field to change
    (not the core's Python call); with Read as 'binary' it opens as a 3-class mask."""
    import imageio.v3 as iio
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    objects = np.zeros((64, 64), np.uint8)
    objects[10:30, 12:40] = 255
    iio.imwrite(tmp_path / "mito.png", objects)
    editor.open_path.value = tmp_path / "mito.png"
    n = len(notification_manager.records)
    assert editor.open_mask() is None
    said = [str(r.message) for r in notification_manager.records[n:]]
    assert any("choose Read as 'binary'" in m for m in said), said
    assert not any("coerce_mask" in m for m in said), said
    editor.open_as.value = "binary"
    opened = editor.open_mask()
    assert set(np.unique(opened.data)) == {BACKGROUND, INTERIOR, BOUNDARY}
    assert (opened.data[objects == 0] == BACKGROUND).all()


def test_save_asks_before_overwriting_a_file(make_napari_viewer, tmp_path: Path,
                                             isbi_mask: np.ndarray,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen.widgets import _common

    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    target = tmp_path / "mask.tif"
    io.write_mask(target, isbi_mask)
    before = target.read_bytes()
    editor.mask_layer.value = viewer.add_labels(np.ones_like(isbi_mask), name="m")
    editor.save_path.value = target
    asked: list[str] = []

    def answer(choice: str):
        def ask(parent, title, text, buttons):
            asked.append(text)
            assert choice in buttons
            return choice
        return ask

    monkeypatch.setattr(_common, "ask", answer("Cancel"))
    assert editor.save_mask() is None
    assert target.read_bytes() == before and str(target) in asked[0]
    monkeypatch.setattr(_common, "ask", answer("Overwrite"))
    assert editor.save_mask() == target and len(asked) == 2
    assert (io.read_mask(target) == 1).all()


def test_bad_values_are_refused_with_a_message(make_napari_viewer, tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    bad = np.zeros((8, 8), np.int32)
    bad[1, 2] = 5
    editor.mask_layer.value = viewer.add_labels(bad, name="bad")
    editor.save_path.value = tmp_path / "bad.tif"
    n = len(notification_manager.records)
    assert editor.save_mask() is None
    assert not (tmp_path / "bad.tif").exists()
    messages = [str(r.message) for r in notification_manager.records[n:]]
    assert any("value 5 at row 1, column 2" in m for m in messages)
    # napari's own save through our writer refuses too
    with pytest.raises(MaskNotSavedError, match="value 5 at row 1, column 2"):
        viewer.layers["bad"].save(str(tmp_path / "bad2.tif"), plugin=PLUGIN)
    assert not (tmp_path / "bad2.tif").exists()


def test_reader_and_sample_through_napari(make_napari_viewer, tmp_path: Path,
                                          isbi_mask: np.ndarray) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "isbi2012")
    assert [lyr.name for lyr in viewer.layers] == ["EM sample", "mask"]
    assert viewer.layers["mask"].colormap.color_dict[1].tolist()[:3] == [0, 1, 0]
    io.write_mask(tmp_path / "m.tif", isbi_mask)
    [layer] = viewer.open(str(tmp_path / "m.tif"), plugin=PLUGIN)
    assert layer.data.dtype == np.uint8 and layer.opacity == 1.0


def _discs(shape: tuple[int, int], cx: int) -> np.ndarray:
    """A slice with one cell (a disc of interior inside its boundary) on background."""
    from napari_synthgen.masks import instances_to_mask

    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = ((yy - shape[0] // 2) ** 2 + (xx - cx) ** 2 <= 12**2).astype(np.int32)
    return instances_to_mask(inst, boundary_width=2)


def test_stack_paint_interpolate_undo_save_reopen(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    assert not editor.interpolate_button.enabled  # no stack yet
    editor.new_height.value, editor.new_width.value = 48, 80
    editor.depth.value = 4
    editor.fill.value = "background"
    layer = editor.new_mask()
    assert layer.data.shape == (4, 48, 80) and editor.interpolate_button.enabled
    # paint slices 0 and 3 (as strokes would: through the layer's data)
    first, last = _discs((48, 80), 30), _discs((48, 80), 48)
    slab = np.zeros((4, 48, 80), np.uint8)
    slab[0], slab[3] = first, last
    layer.data_setitem(np.nonzero(slab), slab[np.nonzero(slab)])
    before = layer.data.copy()
    assert not before[1].any() and not before[2].any()
    # Interpolate by its key on the layer: one cell per middle slice, moving along x
    from napari.utils.shortcuts import default_shortcuts

    key = KeyBinding.from_str("K")
    assert not [name for name, keys in default_shortcuts.items()  # napari's own keys
                if any(KeyBinding.validate(k) == key for k in keys)]
    _press(layer, "K")
    editor.wait_idle()
    np.testing.assert_array_equal(layer.data[[0, 3]], before[[0, 3]])
    xs = [np.nonzero(layer.data[z])[1].mean() for z in range(4)]
    assert xs[0] < xs[1] < xs[2] < xs[3]
    assert {INTERIOR, BOUNDARY} <= set(np.unique(layer.data[1]))
    layer.undo()  # one undo step restores the unpainted slices
    np.testing.assert_array_equal(layer.data, before)
    assert editor.interpolate() is not None  # the button does the same
    editor.wait_idle()
    assert editor.last_changed > 0
    # save as a TIFF stack (a .png name too) and open it again as (Z, Y, X)
    editor.save_path.value = tmp_path / "stack.png"
    assert editor.save_mask() == tmp_path / "stack.tif"
    editor.open_path.value = tmp_path / "stack.tif"
    opened = editor.open_mask()
    assert opened.data.shape == (4, 48, 80) and editor.interpolate_button.enabled
    np.testing.assert_array_equal(opened.data, layer.data)
    # a stack opened from a file with voxel spacing is saved with it
    io.write_mask(tmp_path / "spaced.tif", layer.data, spacing=(50.0, 4.0, 4.0))
    editor.open_path.value = tmp_path / "spaced.tif"
    editor.open_mask()
    editor.save_path.value = tmp_path / "spaced_copy.tif"
    assert editor.save_mask() == tmp_path / "spaced_copy.tif"
    assert io.read_spacing(tmp_path / "spaced_copy.tif") == pytest.approx((50.0, 4.0, 4.0))
    # 3-D view toggle
    editor.view_3d.value = True
    assert viewer.dims.ndisplay == 3
    viewer.dims.ndisplay = 2
    assert editor.view_3d.value is False


def test_stack_edits_apply_to_every_or_the_current_slice(make_napari_viewer,
                                                          isbi_mask: np.ndarray) -> None:
    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    stack = np.stack([isbi_mask[:96, :96], isbi_mask[96:192, :96], isbi_mask[:96, 96:192]])
    layer = viewer.add_labels(stack.copy(), name="stack")
    editor.mask_layer.value = layer
    editor.boundary_width.value = 1
    viewer.dims.set_current_step(0, 1)
    editor.apply_to.value = "current slice"
    editor.rebuild()
    editor.wait_idle()
    changed = [not np.array_equal(layer.data[z], stack[z]) for z in range(3)]
    assert changed == [False, True, False]
    layer.undo()
    np.testing.assert_array_equal(layer.data, stack)
    editor.apply_to.value = "every slice"
    editor.rebuild()
    editor.wait_idle()
    assert all(not np.array_equal(layer.data[z], stack[z]) for z in range(3))
    # Variation of every slice varies the stack as a volume (continuous through z)
    from napari_synthgen.layout_stacks import vary_stack

    before = layer.data.copy()
    editor.variation()
    editor.wait_idle()
    assert layer.data.tobytes() == vary_stack(before, strength=0.5, seed=0).tobytes()
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_depth_one_and_2d_masks_are_unchanged(make_napari_viewer) -> None:
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    editor = _dock(viewer, "Mask editor")
    editor.new_height.value, editor.new_width.value = 30, 40
    assert editor.depth.value == 1
    layer = editor.new_mask()
    assert layer.data.shape == (30, 40) and not editor.interpolate_button.enabled
    n = len(notification_manager.records)
    assert editor.interpolate() is None  # a 2-D mask has no slices to fill
    assert any("2-D mask" in str(r.message) for r in notification_manager.records[n:])
    # the 2-D edits give the core functions' bytes, whatever Apply to says
    from napari_synthgen.layouts import variation
    from napari_synthgen.masks import rebuild_boundaries

    layer.data_setitem(np.nonzero(np.pad(np.ones((10, 14), bool), ((8, 12), (6, 20)))),
                       INTERIOR)
    editor.apply_to.value = "current slice"
    before = layer.data.copy()
    editor.rebuild()
    editor.wait_idle()
    assert layer.data.tobytes() == rebuild_boundaries(before, width=2).tobytes()
    before = layer.data.copy()
    editor.variation()
    editor.wait_idle()
    assert layer.data.tobytes() == variation(before, strength=0.5, seed=0).tobytes()
