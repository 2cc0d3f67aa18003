"""``napari-synthgen demo``: napari with the sample EM mask, the plugin's widgets and demo model."""

from __future__ import annotations

import os
from pathlib import Path

PLUGIN = "napari-synthgen"
#: Widgets docked by the demo, in order (display names from napari.yaml).
DEMO_WIDGETS: tuple[str, ...] = ("Mask editor", "Synthesize", "Curate")


def build_demo_viewer(*, show: bool = True):
    """A viewer with the sample image and mask side by side and the widgets docked."""
    import napari

    viewer = napari.Viewer(title="napari-synthgen demo", show=show)
    viewer.open_sample(PLUGIN, "isbi2012")
    for i, name in enumerate(DEMO_WIDGETS):
        viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=i > 1)
    viewer.grid.enabled = True
    viewer.grid.stride = -1  # the mask (top layer) first, then the EM image
    viewer.layers.selection.active = viewer.layers["mask"]
    viewer.reset_view()
    return viewer


def run_demo(screenshot: Path | None = None) -> int:
    """Open the demo; with ``screenshot`` save the whole window to that file and exit."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = build_demo_viewer(show=True)
    if screenshot is None:
        napari.run()
        return 0
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    viewer.window.resize(1500, 950)
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()
    for _ in range(10):
        app.processEvents()
    viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
    viewer.close()
    print(f"saved {screenshot}")
    return 0
