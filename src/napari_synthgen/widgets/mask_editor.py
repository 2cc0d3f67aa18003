"""Mask editor: new / open / save masks, paint classes, rebuild boundaries, layouts, variations.

Every edit of an existing mask goes through ``Labels.data_setitem`` so that Ctrl+Z undoes it,
like a brush stroke. New masks start with a class the current synthesis model knows (interior
for the demo model, which never saw background); the Synthesize widget says which on the bus.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
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
from ..io import read_mask, write_mask
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

if TYPE_CHECKING:
    import napari

_TYPED_SIZE = "(typed size)"


def _row(*widgets: object, label: str = "") -> Container:
    return Container(widgets=list(widgets), layout="horizontal", labels=False, label=label)


class MaskEditor(Container):
    """Dock widget to make and edit 3-class masks (background, interior, boundary)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.bus = bus_for(viewer)  # this viewer's widgets only
        self._bound: set[int] = set()

        self.mask_layer = ComboBox(label="Mask", choices=self._mask_choices, nullable=True)
        # new / open / save
        self.new_height = SpinBox(value=512, min=8, max=65536, label="Height")
        self.new_width = SpinBox(value=512, min=8, max=65536, label="Width")
        self.like = ComboBox(label="Size of", choices=self._image_choices)
        self.fill = ComboBox(choices=list(CLASS_NAMES), value="background", label="Fill")
        self.fill_note = Label(value="")
        self.new_button = PushButton(text="New mask")
        self.open_path = FileEdit(mode="r", label="File", filter="*.tif *.tiff *.png")
        self.open_as = ComboBox(
            choices=["auto", "binary", "membrane", "instances"], value="auto", label="Read as"
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
        self.status = Label(value="")

        self.extend([
            Container(widgets=[self.mask_layer]),
            _row(*self.class_buttons.values()),
            Container(widgets=[self.brush, self.opacity]),
            self.status,
        ])
        add_collapsible(self, "New, open, save", [
            self.new_height, self.new_width, self.like, self.fill, self.fill_note,
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
        self.mask_layer.changed.connect(self._layer_changed)

        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self._refresh_choices)
        viewer.layers.selection.events.active.connect(self._active_changed)
        wrap_label(self.fill_note)
        wrap_label(self.status)
        for path_field in (self.open_path, self.save_path):
            widen_path(path_field)
        self.bus.model_changed.connect(self.model_changed)
        call_on_destroy(self, "teardown")
        self.model_changed(self.bus.current_model())
        self._refresh_choices()
        self._layer_changed()

    def teardown(self) -> None:
        """The widget was closed: stop following the synthesis model."""
        self.bus.model_changed.disconnect(self.model_changed, missing_ok=True)

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
        if layer is None:
            self.status.value = "No mask layer: make one with New mask or New layout."
            return
        if id(layer) not in self._bound:
            bind_class_keys(layer)
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
        """Add an empty mask of the typed size, or of the chosen image layer's size."""
        try:
            like = self.like.value
            if like is not None:
                shape = tuple(like.data.shape[:-1] if like.rgb else like.data.shape)
                kwargs = {"scale": like.scale, "translate": like.translate}
            else:
                shape = (self.new_height.value, self.new_width.value)
                kwargs = {}
            fill = CLASS_NAMES.index(self.fill.value)
            layer = add_mask_layer(self.viewer, empty_mask(shape, fill), "mask", **kwargs)
            select_class(layer, 1 if fill != 1 else 2)
            return self._use(layer)
        except Exception as exc:
            report_error(exc, "New mask")
            return None

    def open_mask(self, *_: object) -> Labels | None:
        """Read a mask file (TIFF/PNG) into a new mask layer."""
        try:
            path = Path(self.open_path.value)
            mask = read_mask(path, self.open_as.value, boundary_width=self.boundary_width.value)
            return self._use(add_mask_layer(self.viewer, mask, path.stem,
                                            metadata={"source": str(path)}))
        except Exception as exc:
            report_error(exc, "Open mask")
            return None

    def save_mask(self, *_: object) -> Path | None:
        """Save the mask layer as a uint8 TIFF/PNG (atomic; values above 2 refused)."""
        try:
            layer = self._require_layer()
            path = Path(self.save_path.value)
            if path.suffix.lower() not in (".tif", ".tiff", ".png"):
                path = path.with_suffix(".tif")
            if path.exists() and _common.ask(
                    self.native, "Overwrite the file?",
                    f"{path} already exists. Overwrite it with {layer.name}?",
                    ("Cancel", "Overwrite")) != "Overwrite":
                show_info(f"Not saved: {path} is kept as it was.")
                return None
            write_mask(path, np.asarray(layer.data))
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

    def rebuild(self, *_: object) -> None:
        """Redraw all boundaries with the chosen width from the painted interior (undoable)."""
        try:
            layer = self._require_layer()
            new = rebuild_boundaries(np.asarray(layer.data), width=self.boundary_width.value)
            n = apply_in_place(layer, new)
            self._show_fractions()
            show_info(f"Boundaries rebuilt ({n} pixels changed); Ctrl+Z undoes it.")
        except Exception as exc:
            report_error(exc, "Rebuild boundaries")

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

    def variation(self, *_: object) -> None:
        """A seeded elastic variation of the mask, applied in place (undoable)."""
        try:
            layer = self._require_layer()
            new = layouts.variation(np.asarray(layer.data), strength=self.strength.value,
                                    seed=self.variation_seed.value)
            apply_in_place(layer, new)
            self._show_fractions()
        except Exception as exc:
            report_error(exc, "Variation")
