"""Small helpers the napari widgets share: mask layers, in-place edits, class keys, messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info, show_warning

from ..cli_wording import read_as_wording
from ..masks import BACKGROUND, BOUNDARY, INTERIOR, MaskError, validate_mask
from ..napari_io import mask_layer_kwargs
from ._worker import report_error

if TYPE_CHECKING:
    import napari

#: The mask readings a widget offers (``masks.coerce_mask``'s ``source``; classes and palette
#: are what ``auto`` reads).
READ_AS_CHOICES: tuple[str, ...] = ("auto", "binary", "membrane", "instances")

#: Class, button text and shortcut key. Keys free in napari's Labels keymap (E erases = 0 too).
CLASS_KEYS: tuple[tuple[int, str, str], ...] = (
    (BACKGROUND, "Background", "G"),
    (INTERIOR, "Interior", "I"),
    (BOUNDARY, "Boundary", "O"),
)


def add_mask_layer(viewer: napari.viewer.Viewer, data: np.ndarray, name: str,
                   **kwargs: Any) -> Labels:
    """Add a class mask as a Labels layer with the fixed colours and class shortcuts."""
    layer = viewer.add_labels(validate_mask(data), **mask_layer_kwargs(name, **kwargs))
    bind_class_keys(layer)
    return layer


def set_or_add_mask_layer(viewer: napari.viewer.Viewer, data: np.ndarray, name: str,
                          **kwargs: Any) -> Labels:
    """Replace the data of the mask layer called ``name`` if it exists, else add it."""
    if name in viewer.layers and isinstance(viewer.layers[name], Labels):
        layer = viewer.layers[name]
        if layer.data.shape == data.shape:
            apply_in_place(layer, data)
            return layer
        viewer.layers.remove(layer)
    return add_mask_layer(viewer, data, name, **kwargs)


def apply_in_place(layer: Labels, new: np.ndarray) -> int:
    """Write ``new`` into a Labels layer as one undoable edit (Ctrl+Z reverts it).

    Only changed pixels are written, through ``data_setitem``, which records napari's undo
    history and emits the paint event that live preview listens to. Returns the pixels changed.
    """
    new = validate_mask(new)
    if new.shape != layer.data.shape:
        raise MaskError(
            f"the new mask has shape {new.shape} but layer {layer.name!r} has {layer.data.shape}."
        )
    changed = np.nonzero(np.asarray(layer.data) != new)
    if changed[0].size:
        layer.data_setitem(changed, new[changed])
    return int(changed[0].size)


def select_class(layer: Labels, cls: int) -> None:
    """Paint with class ``cls`` from now on (and switch the layer to painting)."""
    layer.selected_label = int(cls)
    if layer.mode not in ("paint", "fill"):
        layer.mode = "paint"


def bind_class_keys(layer: Labels) -> None:
    """Bind the class shortcuts (G, I, O) on a mask layer."""
    for cls, _, key in CLASS_KEYS:

        def pick(lyr: Labels, cls: int = cls) -> None:
            select_class(lyr, cls)

        layer.bind_key(key, pick, overwrite=True)


def ask(parent: Any, title: str, text: str, buttons: Sequence[str]) -> str | None:
    """Ask the user a question in a message box; returns the text of the button pressed, or
    None when the box was closed without an answer. The first button is the default; a button
    named "Cancel" is the one Escape presses. Tests answer by replacing this function."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle(title)
    box.setText(text)
    made = {}
    for i, label in enumerate(buttons):
        role = (QMessageBox.ButtonRole.RejectRole if label.lower() == "cancel"
                else QMessageBox.ButtonRole.AcceptRole)
        made[label] = button = box.addButton(label, role)
        if i == 0:
            box.setDefaultButton(button)
        if role == QMessageBox.ButtonRole.RejectRole:
            box.setEscapeButton(button)
    box.exec()
    clicked = box.clickedButton()
    return next((label for label, b in made.items() if b is clicked), None)


def add_collapsible(container: Any, title: str, widgets: list[Any], *,
                    expanded: bool = False) -> Any:
    """Append a collapsible section holding ``widgets`` (magicgui) to ``container``."""
    from magicgui.widgets import Container
    from superqt import QCollapsible

    section = QCollapsible(title)
    section.addWidget(Container(widgets=widgets).native)
    if expanded:
        section.expand(animate=False)
    container.native.layout().addWidget(section)
    return section


def shrink_combo(combo: Any, chars: int = 16) -> None:
    """Let a combo box of long entries (paths) stay narrow instead of widening its dock."""
    from qtpy.QtWidgets import QComboBox

    native = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(chars)


def connect_weakly(signal: Any, obj: Any, method: str) -> None:
    """Connect a Qt signal to ``obj.<method>()`` through a weak reference.

    A long-lived sender (the QApplication, a Qt object's ``destroyed``) then does not keep the
    widget, and through it the viewer, alive.
    """
    import weakref

    ref = weakref.ref(obj)

    def slot(*_: object) -> None:
        target = ref()
        if target is not None:
            getattr(target, method)()

    signal.connect(slot)


def call_on_destroy(widget: Any, method: str) -> None:
    """Call ``widget.<method>()`` when its Qt object is destroyed (the dock widget closed)."""
    connect_weakly(widget.native.destroyed, widget, method)


def wrap_label(label: Any) -> None:
    """Let a label's text wrap to the dock's width instead of widening or clipping it."""
    from qtpy.QtWidgets import QSizePolicy

    native = label.native
    native.setWordWrap(True)
    policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    policy.setHeightForWidth(True)
    native.setSizePolicy(policy)


def widen_path(file_edit: Any, chars: int = 16) -> None:
    """Make a path field wide enough to read (about ``chars`` characters) and let it stretch."""
    from qtpy.QtWidgets import QSizePolicy

    line = getattr(file_edit, "line_edit", file_edit).native
    line.setMinimumWidth(line.fontMetrics().averageCharWidth() * chars)
    line.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)


__all__ = [
    "CLASS_KEYS",
    "READ_AS_CHOICES",
    "add_collapsible",
    "add_mask_layer",
    "apply_in_place",
    "ask",
    "bind_class_keys",
    "call_on_destroy",
    "connect_weakly",
    "read_as_wording",
    "report_error",
    "select_class",
    "set_or_add_mask_layer",
    "show_error",
    "show_info",
    "show_warning",
    "shrink_combo",
    "widen_path",
    "wrap_label",
]


def scroll_body(container: Any) -> Any:
    """A scrollable body inside ``container``: its sections scroll when the dock is short, so
    a window with several docks still fits a laptop screen. Call :func:`fit_scroll_width`
    once it is filled."""
    from magicgui.widgets import Container

    body = Container(labels=False, scrollable=True)
    container.native.layout().addWidget(body.root_native_widget)
    return body


def fit_scroll_width(body: Any, widest: int = 460) -> None:
    """Size a scroll body's width to what its widgets need, at most ``widest`` px: magicgui
    sizes it while adding widgets from their one-line width, and a label holding a long path
    (which cannot wrap) would otherwise make the dock as wide as the path."""
    body.native.layout().activate()
    need = body.native.minimumSizeHint().width() + 20
    body.root_native_widget.setMinimumWidth(min(need, widest))


def keep_triton_out() -> bool:
    """See :func:`napari_synthgen._triton_guard.keep_triton_out` (the core calls it too)."""
    from .._triton_guard import keep_triton_out as guard

    return guard()
