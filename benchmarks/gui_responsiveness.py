"""How responsive the viewer stays while the Train widget trains; prints a table.

The GUI thread must never wait on training (the trainer is a child process read by a thread).
This measures it as a user feels it: a 10 ms Qt timer ticks on the GUI thread of a real napari
viewer with the Train widget docked, first with nothing running, then while the widget trains a
small pix2pix; the gaps between ticks are how long the event loop could not answer. Printed: the
ticks, the largest gap, the 99th percentile, and training's ratio to idle. The tests assert what
the user sees instead (events, plot, preview, stop, checkpoint): wall-clock gaps depend on how
loaded the machine is.

Run: ``python benchmarks/gui_responsiveness.py`` (needs a display; headless:
``xvfb-run -a python benchmarks/gui_responsiveness.py``); ``--seconds 20`` per arm.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

TICK_MS = 10


def paired_folder(root: Path) -> Path:
    """Three image/mask pairs from the bundled ISBI sample (it and its flips)."""
    from napari_synthgen import io
    from napari_synthgen.sample_data import load_sample

    image, mask = load_sample()
    for i, (img, msk) in enumerate(((image, mask), (image[::-1], mask[::-1]),
                                    (image[:, ::-1], mask[:, ::-1]))):
        io.write_image(root / "images" / f"s{i}.tif", np.ascontiguousarray(img))
        io.write_mask(root / "masks" / f"s{i}.tif", np.ascontiguousarray(msk))
    return root


def tick_gaps(seconds: float) -> np.ndarray:
    """Run the Qt event loop for ``seconds`` with a 10 ms timer; the gaps between its ticks (s)."""
    from qtpy.QtCore import QEventLoop, QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    timer.start(TICK_MS)
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    timer.stop()
    return np.diff(ticks)


def wait_for(app, condition, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the trainer did not report in time")
        app.processEvents()
        time.sleep(0.01)


def row(name: str, gaps: np.ndarray) -> tuple[str, int, float, float]:
    return name, len(gaps) + 1, float(gaps.max()) * 1000, float(np.percentile(gaps, 99)) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of each arm")
    args = p.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    with tempfile.TemporaryDirectory() as tmp:
        data = paired_folder(Path(tmp) / "data")
        viewer = napari.Viewer(show=True)
        viewer.open_sample("napari-synthgen", "isbi2012")  # napari's first-layer set-up first
        _, w = viewer.window.add_plugin_dock_widget("napari-synthgen", "Train")
        w.data.value = str(data)
        w.out.value = str(Path(tmp) / "run")
        w.steps.value = 1_000_000
        w.netG.value, w.ngf.value, w.ndf.value, w.tile.value = "unet_128", 16, 16, 128
        w.batch.value, w.sample_every.value, w.checkpoint_every.value = 2, 10, 1_000_000
        app = QApplication.instance()
        wait_for(app, lambda: not w.busy, 60)  # the data check
        idle = tick_gaps(args.seconds)
        w.start()
        wait_for(app, lambda: any(e["event"] == "progress" for e in w.events), 300)
        training = tick_gaps(args.seconds)
        steps = sum(e["event"] == "progress" for e in w.events)
        w.stop()
        wait_for(app, lambda: not w.busy, 120)
        viewer.close()

    rows = [row("idle viewer", idle), row("Train widget training", training)]
    print(f"GUI thread responsiveness, {TICK_MS} ms Qt timer, {args.seconds:.0f} s per arm, "
          f"{os.cpu_count()} CPU(s), {steps} training steps seen")
    print(f"| {'arm':<24} | ticks | max gap (ms) | p99 gap (ms) |")
    print(f"| {'-' * 24} | ----- | ------------ | ------------ |")
    for name, n, mx, p99 in rows:
        print(f"| {name:<24} | {n:5d} | {mx:12.1f} | {p99:12.1f} |")
    (_, _, mx0, p0), (_, _, mx1, p1) = rows
    print(f"| {'training / idle':<24} |       | {mx1 / mx0:12.2f} | {p1 / p0:12.2f} |")


if __name__ == "__main__":
    main()
