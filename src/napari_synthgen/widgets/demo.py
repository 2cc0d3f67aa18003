"""``napari-synthgen demo``: napari with the sample EM mask, the plugin's widgets and demo model."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

PLUGIN = "napari-synthgen"
#: Widgets docked by the demo, in order (display names from napari.yaml); all but the first two
#: are tabified with the second.
DEMO_WIDGETS: tuple[str, ...] = ("Mask editor", "Synthesize", "Curate")


def build_demo_viewer(*, show: bool = True) -> Any:
    """A viewer with the sample mask, its synthetic image and the real EM side by side.

    With the bundled demo model the mask is synthesized at once and live preview is on, so
    painting on the mask updates the synthetic image.
    """
    import napari

    viewer = napari.Viewer(title="napari-synthgen demo", show=show)
    viewer.open_sample(PLUGIN, "isbi2012")
    widgets, docks = {}, {}
    for i, name in enumerate(DEMO_WIDGETS):
        docks[name], widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name,
                                                                          tabify=i > 1)
    mask = viewer.layers["mask"]
    synth = widgets["Synthesize"]
    synth.mask_layer.value = mask
    from ..sample_data import demo_model_path

    demo = demo_model_path()
    if demo is not None:  # the demo shows the demo model, not the user's last one
        if Path(str(synth.model_path.value)) != demo:  # the field holds what is loading
            synth.set_model(demo)
        _synthesize_when_loaded(viewer, synth, mask)
    viewer.grid.enabled = True
    viewer.grid.stride = -1  # top layer first: mask | synthetic | real EM
    viewer.grid.shape = (1, len(viewer.layers))
    viewer.layers.selection.active = mask
    _arrange_docks(list(docks.values()), raise_=docks["Synthesize"])
    viewer.reset_view()
    return viewer


def _arrange_docks(docks: list[Any], raise_: Any, width: int = 440) -> None:
    """Show the Synthesize tab and give the canvas room: docks start ``width`` px wide."""
    from qtpy.QtWidgets import QApplication

    for dock in docks:
        dock.setMaximumWidth(width)
    QApplication.processEvents()
    raise_.raise_()
    for dock in docks:
        dock.setMaximumWidth(16_777_215)  # the user can widen them again


def _synthesize_when_loaded(viewer: Any, synth: Any, mask: Any) -> None:
    """Wait (processing events) for the demo model, then synthesize with live preview on."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + 60
    while synth.model is None and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    if synth.model is None:
        return
    synth.live.value = True  # synthesizes the mask and follows the brush from now on
    synth.wait_idle()
    name = f"{mask.name}_synth"
    if name in viewer.layers:
        viewer.layers.move(viewer.layers.index(name), viewer.layers.index(mask))
    viewer.layers.selection.active = mask


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
    viewer.window.resize(1500, 950)
    for _ in range(30):
        app.processEvents()
    viewer.reset_view()
    for _ in range(10):
        app.processEvents()
    viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
    viewer.close()
    print(f"saved {screenshot}")
    return 0
