"""Mask editor: new / open / save masks, paint classes, rebuild boundaries, layouts, variations.

Masks are 2-D or (Z, Y, X) stacks (Depth above 1); for a stack, the Stacks section applies the
edits to every slice or the current one, interpolates unpainted slices between painted ones
(:mod:`mask_interpolation`, key K on the mask layer) and switches the 3-D view.
Every edit of an existing mask goes through ``Labels.data_setitem`` so that Ctrl+Z undoes it,
like a brush stroke. Rebuild, Variation and Interpolate compute on a copy of the mask in a
thread worker (seconds on a large stack), so the viewer never waits; the result is applied
when it arrives, unless the mask was painted meanwhile (then nothing is lost: it says so).
New masks start with a class the current synthesis model knows (interior for a model that
never saw background); the Synthesize widget says which on the bus.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    Slider,
    SpinBox,
)
from napari.layers import Image, Labels

from .. import layouts
from ..io import read_mask, read_spacing, write_mask
from ..layout_stacks import vary_stack
from ..mask_interpolation import interpolate_painted, painted_slices
from ..masks import (
    CLASS_NAMES,
    class_fractions,
    coerce_mask,
    default_fill,
    empty_mask,
    rebuild_boundaries,
)
from . import _common
from ._bus import ModelAnnouncement, bus_for
from ._common import (
    CLASS_KEYS,
    add_collapsible,
    add_mask_layer,
    apply_in_place,
    bind_class_keys,
    call_on_destroy,
    report_error,
    select_class,
    show_info,
    widen_path,
    wrap_label,
)
from ._worker import Job, Workers

if TYPE_CHECKING:
    import napari

_TYPED_SIZE = "(typed size)"
#: Key that interpolates a stack's unpainted slices (free in napari's Labels keymap).
INTERPOLATE_KEY = "K"
_EVERY, _CURRENT = "every slice", "current slice"


def _row(*widgets: object, label: str = "") -> Container:
    return Container(widgets=list(widgets), layout="horizontal", labels=False, label=label)


def _interpolate_key(editor: MaskEditor) -> Callable[[Labels], None]:
    """The K binding of a mask layer: interpolate it, holding the editor weakly (a closed
    editor is not kept alive by the layers it bound)."""
    ref = weakref.ref(editor)

    def interpolate(layer: Labels) -> None:
        if (alive := ref()) is not None:
            alive.interpolate(layer=layer)

    return interpolate


class MaskEditor(Container):
    """Dock widget to make and edit 3-class masks (background, interior, boundary)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.bus = bus_for(viewer)  # this viewer's widgets only
        self._bound: set[int] = set()
        self._jobs = Workers()
        #: pixels the last Rebuild / Variation / Interpolate changed (None before any)
        self.last_changed: int | None = None

        self.mask_layer = ComboBox(label="Mask", choices=self._mask_choices, nullable=True)
        # new / open / save
        self.new_height = SpinBox(value=512, min=8, max=65536, label="Height")
        self.new_width = SpinBox(value=512, min=8, max=65536, label="Width")
        self.depth = SpinBox(value=1, min=1, max=4096, label="Depth",
                             tooltip="Slices of a new mask: 1 is a 2-D mask, more a (Z, Y, X) "
                                     "stack.")
        self.like = ComboBox(label="Size of", choices=self._image_choices)
        self.fill = ComboBox(choices=list(CLASS_NAMES), value="background", label="Fill")
        self.fill_note = Label(value="")
        self.new_button = PushButton(text="New mask")
        self.open_path = FileEdit(mode="r", label="File", filter="*.tif *.tiff *.png")
        self.open_as = ComboBox(
            choices=list(_common.READ_AS_CHOICES), value="auto", label="Read as"
        )
        self.open_button = PushButton(text="Open")
        self.save_path = FileEdit(mode="w", label="Save to", filter="*.tif *.tiff *.png")
        self.save_button = PushButton(text="Save")
        # painting
        self.class_buttons = {
            cls: PushButton(text=f"{name} [{key}]") for cls, name, key in CLASS_KEYS
        }
        self.brush = Slider(value=10, min=1, max=100, label="Brush size")
        self.opacity = Slider(value=100, min=0, max=100, label="Opacity %")
        # boundaries and conversions
        self.boundary_width = SpinBox(value=2, min=1, max=50, label="Boundary width")
        self.rebuild_button = PushButton(text="Rebuild boundaries")
        self.convert_source = ComboBox(label="From layer", choices=self._any_layer_choices)
        self.convert_kind = ComboBox(
            choices=["instances", "binary", "membrane"], value="instances", label="Holding"
        )
        self.convert_button = PushButton(text="From instances / binary")
        # layouts and variations
        self.layout_kind = ComboBox(choices=list(layouts.LAYOUT_KINDS), label="Layout")
        self.density = FloatSpinBox(value=0.5, min=0.05, max=1.0, step=0.05, label="Density")
        self.layout_width = SpinBox(value=3, min=1, max=30, label="Membrane width")
        self.layout_seed = SpinBox(value=0, min=0, max=2**31 - 1, label="Seed")
        self.layout_button = PushButton(text="New layout")
        self.strength = FloatSpinBox(value=0.5, min=0.0, max=3.0, step=0.1, label="Strength")
        self.variation_seed = SpinBox(value=0, min=0, max=2**31 - 1, label="Seed")
        self.variation_button = PushButton(text="Variation")
        # stacks (Z, Y, X)
        self.apply_to = ComboBox(choices=[_EVERY, _CURRENT], value=_EVERY, label="Apply to",
                                 tooltip="Where Rebuild boundaries and Variation act on a "
                                         "stack.")
        self.interpolate_button = PushButton(text=f"Interpolate [{INTERPOLATE_KEY}]")
        self.interpolate_button.tooltip = (
            "Fill every unpainted slice between two painted ones (cells morphed from one "
            "painted slice to the next); Ctrl+Z undoes it.")
        self.view_3d = CheckBox(value=False, text="3-D view")
        self.stack_note = Label(value="")
        self.status = Label(value="")

        self.extend([
            Container(widgets=[self.mask_layer]),
            _row(*self.class_buttons.values()),
            Container(widgets=[self.brush, self.opacity]),
            self.status,
        ])
        add_collapsible(self, "New, open, save", [
            self.new_height, self.new_width, self.depth, self.like, self.fill, self.fill_note,
            self.new_button,
            self.open_path, self.open_as, self.open_button, self.save_path, self.save_button,
        ])
        add_collapsible(self, "Boundaries and conversions", [
            self.boundary_width, self.rebuild_button, self.convert_source, self.convert_kind,
            self.convert_button,
        ])
        add_collapsible(self, "New layouts and variations", [
            self.layout_kind, self.density, self.layout_width, self.layout_seed,
            self.layout_button, self.strength, self.variation_seed, self.variation_button,
        ])
        self.stacks_section = add_collapsible(self, "Stacks (Z, Y, X)", [
            self.apply_to, self.interpolate_button, self.view_3d, self.stack_note,
        ])

        self.new_button.changed.connect(self.new_mask)
        self.open_button.changed.connect(self.open_mask)
        self.save_button.changed.connect(self.save_mask)
        for cls, button in self.class_buttons.items():
            button.changed.connect(lambda *_, c=cls: self.pick_class(c))
        self.brush.changed.connect(self._brush_changed)
        self.opacity.changed.connect(self._opacity_changed)
        self.rebuild_button.changed.connect(self.rebuild)
        self.convert_button.changed.connect(self.convert)
        self.layout_button.changed.connect(self.new_layout)
        self.variation_button.changed.connect(self.variation)
        self.interpolate_button.changed.connect(self.interpolate)
        self.view_3d.changed.connect(self._view_3d_changed)
        viewer.dims.events.ndisplay.connect(self._ndisplay_changed)
        self.mask_layer.changed.connect(self._layer_changed)

        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self._refresh_choices)
        viewer.layers.selection.events.active.connect(self._active_changed)
        wrap_label(self.fill_note)
        wrap_label(self.status)
        wrap_label(self.stack_note)
        for path_field in (self.open_path, self.save_path):
            widen_path(path_field)
        self.bus.model_changed.connect(self.model_changed)
        call_on_destroy(self, "teardown")
        self.model_changed(self.bus.current_model())
        self._refresh_choices()
        self._layer_changed()

    def teardown(self) -> None:
        """The widget was closed: stop following the synthesis model, drop running edits."""
        self._jobs.close()
        self.bus.model_changed.disconnect(self.model_changed, missing_ok=True)
        self.viewer.dims.events.ndisplay.disconnect(self._ndisplay_changed)

    def model_changed(self, model: ModelAnnouncement | None) -> None:
        """Start new masks with a class ``model`` knows (the user can still pick another)."""
        fill = default_fill(model.known if model is not None else None)
        self.fill.value = CLASS_NAMES[fill]
        if model is None:
            self.fill_note.value = ""
        elif model.known is None:
            self.fill_note.value = (f"{model.name} has no record of the classes it knows; "
                                    "new masks start as background.")
        else:
            seen = ", ".join(CLASS_NAMES[c] for c in sorted(model.known) if model.known[c] > 0)
            self.fill_note.value = (f"{model.name} knows {seen}: new masks start as "
                                    f"{CLASS_NAMES[fill]}.")

    # ------------------------------------------------------------------ choices
    def _mask_choices(self, _w: object = None) -> list[tuple[str, Labels]]:
        return [(lyr.name, lyr) for lyr in self.viewer.layers if isinstance(lyr, Labels)]

    def _image_choices(self, _w: object = None) -> list[tuple[str, object]]:
        images = [(lyr.name, lyr) for lyr in self.viewer.layers if isinstance(lyr, Image)]
        return [(_TYPED_SIZE, None), *images]

    def _any_layer_choices(self, _w: object = None) -> list[tuple[str, object]]:
        return [(lyr.name, lyr) for lyr in self.viewer.layers
                if isinstance(lyr, (Labels, Image))]

    def _refresh_choices(self, *_: object) -> None:
        current = self.mask_layer.value
        for combo in (self.mask_layer, self.like, self.convert_source):
            combo.reset_choices()
        if current is None and self.mask_layer.choices:
            self.mask_layer.value = self.mask_layer.choices[-1]

    def _active_changed(self, event: object) -> None:
        layer = getattr(event, "value", None)
        if isinstance(layer, Labels) and layer in self.mask_layer.choices:
            self.mask_layer.value = layer

    def _layer_changed(self, *_: object) -> None:
        layer = self.layer
        self._stack_state(layer)
        if layer is None:
            self.status.value = "No mask layer: make one with New mask or New layout."
            return
        if id(layer) not in self._bound:
            bind_class_keys(layer)
            layer.bind_key(INTERPOLATE_KEY, _interpolate_key(self), overwrite=True)
            self._bound.add(id(layer))
        self.brush.value = int(min(max(layer.brush_size, 1), 100))
        self.opacity.value = round(layer.opacity * 100)
        self._show_fractions()

    @property
    def layer(self) -> Labels | None:
        """The mask layer being edited."""
        return self.mask_layer.value

    def _require_layer(self) -> Labels:
        if self.layer is None:
            raise ValueError("choose a mask layer first (or make one with New mask).")
        return self.layer

    def _show_fractions(self) -> None:
        layer = self.layer
        if layer is None:
            return
        try:
            f = class_fractions(np.asarray(layer.data))
        except ValueError as exc:
            self.status.value = f"<span style='color:#f66'>{exc}</span>"
            return
        self.status.value = "  ".join(f"{k} {v:.1%}" for k, v in f.items())

    def _use(self, layer: Labels) -> Labels:
        self._refresh_choices()
        self.mask_layer.value = layer
        self.viewer.layers.selection.active = layer
        return layer

    # ------------------------------------------------------------------ actions
    def new_mask(self, *_: object) -> Labels | None:
        """Add an empty mask of the typed size, or of the chosen image layer's size; with
        Depth above 1 a (Z, Y, X) stack of that many slices."""
        try:
            like = self.like.value
            depth = self.depth.value
            if like is not None:
                shape = tuple(like.data.shape[:-1] if like.rgb else like.data.shape)
                kwargs = {"scale": like.scale, "translate": like.translate}
                if depth > 1 and len(shape) == 2:  # a stack over a 2-D image's plane
                    shape = (depth, *shape)
                    kwargs = {"scale": (1.0, *like.scale), "translate": (0.0, *like.translate)}
            else:
                shape = (self.new_height.value, self.new_width.value)
                kwargs = {}
                if depth > 1:
                    shape = (depth, *shape)
            fill = CLASS_NAMES.index(self.fill.value)
            layer = add_mask_layer(self.viewer, empty_mask(shape, fill), "mask", **kwargs)
            select_class(layer, 1 if fill != 1 else 2)
            return self._use(layer)
        except Exception as exc:
            report_error(exc, "New mask")
            return None

    def open_mask(self, *_: object) -> Labels | None:
        """Read a mask file (TIFF/PNG) into a new mask layer; a stack keeps the voxel spacing
        its file records, for Save."""
        try:
            path = Path(self.open_path.value)
            mask = read_mask(path, self.open_as.value, boundary_width=self.boundary_width.value)
            metadata: dict[str, object] = {"source": str(path)}
            if mask.ndim == 3 and (spacing := read_spacing(path)) is not None:
                metadata["spacing"] = spacing  # written back by Save
            return self._use(add_mask_layer(self.viewer, mask, path.stem, metadata=metadata))
        except Exception as exc:
            report_error(exc, "Open mask", {"read_as": self.open_as.label})
            return None

    def save_mask(self, *_: object) -> Path | None:
        """Save the mask layer as a uint8 TIFF/PNG (atomic; values above 2 refused); a stack
        as a (Z, Y, X) TIFF, with the voxel spacing of the file it was opened from."""
        try:
            layer = self._require_layer()
            path = Path(self.save_path.value)
            if path.suffix.lower() not in (".tif", ".tiff", ".png"):
                path = path.with_suffix(".tif")
            if layer.data.ndim == 3 and path.suffix.lower() == ".png":
                path = path.with_suffix(".tif")  # a PNG holds one slice; a TIFF the stack
            if path.exists() and _common.ask(
                    self.native, "Overwrite the file?",
                    f"{path} already exists. Overwrite it with {layer.name}?",
                    ("Cancel", "Overwrite")) != "Overwrite":
                show_info(f"Not saved: {path} is kept as it was.")
                return None
            data = np.asarray(layer.data)
            spacing = layer.metadata.get("spacing") if data.ndim == 3 else None
            write_mask(path, data, spacing=spacing)
            layer.metadata["source"] = str(path)
            show_info(f"Saved {layer.name} to {path}")
            return path
        except Exception as exc:
            report_error(exc, "Save mask")
            return None

    def pick_class(self, cls: int) -> None:
        """Paint with class ``cls`` (same as its shortcut key on the mask layer)."""
        layer = self.layer
        if layer is not None:
            select_class(layer, cls)
            self.viewer.layers.selection.active = layer

    def _brush_changed(self, value: int) -> None:
        if self.layer is not None:
            self.layer.brush_size = value

    def _opacity_changed(self, value: int) -> None:
        if self.layer is not None:
            self.layer.opacity = value / 100.0

    def rebuild(self, *_: object) -> Job | None:
        """Redraw all boundaries with the chosen width from the painted interior (undoable;
        in a worker)."""
        try:
            layer = self._require_layer()
            width = self.boundary_width.value
            return self._edit(layer, self._on_slices(
                layer, lambda m: rebuild_boundaries(m, width=width)), "Rebuild boundaries",
                lambda n: f"Boundaries rebuilt ({n} pixels changed); Ctrl+Z undoes it.")
        except Exception as exc:
            report_error(exc, "Rebuild boundaries")
            return None

    def convert(self, *_: object) -> Labels | None:
        """Make a 3-class mask from an instance label image or a binary mask layer."""
        try:
            source = self.convert_source.value
            if source is None:
                raise ValueError("choose the layer that holds the instances or binary mask.")
            data = np.asarray(source.data)
            mask = coerce_mask(data, self.convert_kind.value,
                               boundary_width=self.boundary_width.value)
            layer = add_mask_layer(self.viewer, mask, f"{source.name} mask",
                                   scale=source.scale, translate=source.translate)
            return self._use(layer)
        except Exception as exc:
            report_error(exc, "From instances / binary")
            return None

    def new_layout(self, *_: object) -> Labels | None:
        """A seeded procedural layout: replaces the mask in place (undoable) if sizes match."""
        try:
            layer = self.layer
            shape = (tuple(layer.data.shape[-2:]) if layer is not None
                     else (self.new_height.value, self.new_width.value))
            if layer is not None and layer.data.ndim == 3:
                shape = tuple(layer.data.shape)
            mask = layouts.make_layout(
                self.layout_kind.value, shape, density=self.density.value,
                boundary_width=self.layout_width.value, seed=self.layout_seed.value,
            )
            if layer is None:
                return self._use(add_mask_layer(self.viewer, mask, "mask"))
            apply_in_place(layer, mask)
            self._show_fractions()
            return layer
        except Exception as exc:
            report_error(exc, "New layout")
            return None

    def variation(self, *_: object) -> Job | None:
        """A seeded elastic variation of the mask, applied in place (undoable; in a worker); a
        whole stack is varied as a volume (the warp changes slowly with z), so it stays
        continuous."""
        try:
            layer = self._require_layer()
            strength, seed = self.strength.value, self.variation_seed.value

            def vary(m: np.ndarray) -> np.ndarray:
                if m.ndim == 3:
                    return vary_stack(m, strength=strength, seed=seed)
                return layouts.variation(m, strength=strength, seed=seed)

            return self._edit(layer, self._on_slices(layer, vary), "Variation")
        except Exception as exc:
            report_error(exc, "Variation")
            return None

    # ------------------------------------------------------------------ stacks
    def _stack_state(self, layer: Labels | None) -> None:
        """Enable the Stacks section for a (Z, Y, X) mask layer only."""
        stack = layer is not None and layer.data.ndim == 3
        for widget in (self.apply_to, self.interpolate_button):
            widget.enabled = stack
        if layer is None or not stack:
            self.stack_note.value = "For (Z, Y, X) stacks: make one with Depth above 1."
        else:
            self.stack_note.value = (
                f"{layer.data.shape[0]} slices. Paint some of them, then Interpolate "
                f"({INTERPOLATE_KEY} on the mask layer) fills the slices between.")

    def current_slice(self, layer: Labels) -> int:
        """The index of the slice of ``layer`` the viewer shows."""
        z = layer.world_to_data(self.viewer.dims.point)[0]
        return int(np.clip(round(float(z)), 0, layer.data.shape[0] - 1))

    def _on_slices(self, layer: Labels, fn: Callable[[np.ndarray], np.ndarray]
                   ) -> Callable[[np.ndarray], np.ndarray]:
        """``fn`` for the whole mask, or only for the current slice of a stack when Apply to
        says so (the other slices unchanged); the slice is the one shown now, not when the
        worker runs."""
        if layer.data.ndim != 3 or self.apply_to.value == _EVERY:
            return fn
        z = self.current_slice(layer)

        def one_slice(data: np.ndarray) -> np.ndarray:
            new = data.copy()
            new[z] = fn(data[z])
            return new

        return one_slice

    def _edit(self, layer: Labels, compute: Callable[[np.ndarray], np.ndarray], doing: str,
              message: Callable[[int], str] | None = None) -> Job | None:
        """Run ``compute`` on a copy of ``layer``'s mask in a worker and apply the result in
        place as one undoable edit; if the mask was painted meanwhile, nothing is applied and
        the user is told. One edit at a time (the buttons wait)."""
        if self._jobs.busy:
            show_info(f"{doing}: another edit is still running; try again when it ends.")
            return None
        start = np.array(layer.data, copy=True)

        def done(new: np.ndarray, _ctx: object) -> None:
            if layer not in self.viewer.layers:
                return
            if not np.array_equal(np.asarray(layer.data), start):
                from napari.utils.notifications import show_warning

                show_warning(f"{doing}: {layer.name} was edited while it ran, so the result "
                             "was not applied (your strokes are kept); run it again.")
                return
            self.last_changed = apply_in_place(layer, new)
            self._show_fractions()
            if message is not None:
                show_info(message(self.last_changed))

        self._busy(True)
        def finished(_ctx: object) -> None:
            if not self._jobs.closed:  # a closed dock's buttons are gone
                self._busy(False)

        return self._jobs.start(compute, start, doing=doing, on_result=done,
                                on_finish=finished)

    def _busy(self, running: bool) -> None:
        """Grey out the edits while one runs; afterwards the Stacks section follows the layer
        again (``_stack_state``)."""
        self.rebuild_button.enabled = self.variation_button.enabled = not running
        if running:
            self.interpolate_button.enabled = False
        else:
            self._stack_state(self.layer)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Process Qt events until the running edit has been applied (tests, scripts)."""
        self._jobs.wait_idle(timeout)

    def interpolate(self, *_: object, layer: Labels | None = None) -> Job | None:
        """Fill every unpainted slice between painted ones as one undoable edit (in a worker;
        ``last_changed`` then holds the pixels changed)."""
        try:
            layer = layer if isinstance(layer, Labels) else self._require_layer()
            data = np.asarray(layer.data)
            if data.ndim != 3:
                raise ValueError(
                    f"{layer.name} is a 2-D mask; interpolation fills slices of a (Z, Y, X) "
                    "stack. Make one with Depth above 1, or open a TIFF stack.")
            before = ", ".join(map(str, painted_slices(data)))
            return self._edit(layer, interpolate_painted, "Interpolate", lambda n: (
                f"Interpolated between slices {before} ({n} pixels changed); Ctrl+Z undoes it."))
        except Exception as exc:
            report_error(exc, "Interpolate")
            return None

    def _view_3d_changed(self, on: bool) -> None:
        self.viewer.dims.ndisplay = 3 if on else 2

    def _ndisplay_changed(self, *_: object) -> None:
        self.view_3d.value = self.viewer.dims.ndisplay == 3
