"""Regenerate the documentation's pictures in docs/images/ with the project's own code.

Run by ``make docs`` under Xvfb (napari needs an X server to draw its canvas)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_docs.py

It makes a few seeded masks, synthesizes them with the bundled demo model, scores them against
ISBI 2012 pairs (``report``), runs a tiny ``evaluate`` and a tiny real training run (its events
recorded), then opens real napari viewers with the plugin's widgets and saves a screenshot of
each. Same seeds, same pictures (up to font rendering). A few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
ISBI = REPO.parent / "shared" / "data" / "isbi2012"
PLUGIN = "napari-synthgen"
#: what each picture shows (the names the docs link to; tests/test_docs.py checks them)
IMAGES: dict[str, str] = {
    "demo.png": "the demo: mask | synthetic | real EM, with the plugin's widgets",
    "mask_editor.png": "the Mask editor with a procedural dense layout",
    "live_preview.png": "live preview mid-stroke: a new membrane painted, the image follows",
    "synthesize.png": "the Synthesize widget: a layout mask and its image (2 seeded variations)",
    "curate.png": "the Curate widget: quality figures beside the reference, a flagged sample",
    "train.png": "the Train widget mid-run: loss plot, ETA and the preview mosaic",
    "report.png": "napari-synthgen report: quality figures of generated samples vs ISBI pairs",
    "evaluate.png": "napari-synthgen evaluate: a tiny utility check (real / real+synth / synth)",
    "synthesize_diffusion.png": "the Synthesize widget with the bundled diffusion model",
    "check_utility.png": "the Check utility widget: a tiny study's verdicts and figure",
}
#: pictures of long runs (minutes to hours of CPU): made by the scripts named, not by make docs
RESULTS: dict[str, tuple[str, ...]] = {
    "utility_compare.png": ("scripts/utility_run_isbi.sh", "scripts/utility_compare.py"),
    "volume_slices.png": ("scripts/volume_figure.py",),
    "utility_curves.png": ("scripts/utility_study.sh", "scripts/utility_figure.py"),
    "utility_samples.png": ("scripts/utility_study.sh", "scripts/utility_figure.py"),
    "utility_guidance.png": ("scripts/utility_study.sh", "scripts/utility_figure.py"),
    "utility_isbi_samples.png": ("scripts/utility_study.sh", "scripts/utility_isbi_pretrained.sh",
                                 "scripts/utility_figure.py"),
    "utility_vnc_convergence.png": ("scripts/utility_study.sh",),
    "utility_pix2pix_samples.png": ("scripts/utility_study.sh", "scripts/utility_figure.py"),
    "utility_pix2pix_curves.png": ("scripts/utility_study.sh", "scripts/utility_figure.py"),
    "utility_classes.png": ("scripts/utility_study.sh", "scripts/utility_figure.py"),
    "utility_ceiling.png": ("scripts/utility_ceiling.sh", "scripts/utility_figure.py"),
    "utility_mito_report.png": ("scripts/utility_study.sh", "scripts/utility_figure.py"),
    "uniform_regions.png": ("scripts/utility_study.sh", "scripts/uniform_regions.py"),
    "noise_scale.png": ("scripts/organelle_folders.py", "scripts/utility_study.sh",
                        "scripts/noise_figure.py"),
}
MAX_BYTES = 290_000
TRAIN_STEPS = 300  # the recorded run (about 30 s on 2 CPU cores); the picture stops at 80 %
WINDOW = (1500, 950)


# ------------------------------------------------------------------------ CLI reference
def cli_reference() -> str:
    """docs/cli.md: every sub-command's --help, from the parser itself (100 columns)."""
    from napari_synthgen.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "102"  # argparse wraps at COLUMNS - 2
    try:
        parser = build_parser()
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = ["# Command-line reference", "",
                 "Generated from the parser by `python scripts/make_docs.py --cli` (also run by "
                 "`make docs`); `tests/test_docs.py` fails when it is out of date. Every command "
                 "also takes `--help`.", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in subs.choices.items():
            parts += [f"## {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


# ------------------------------------------------------------------------ headless inputs
def _cli(*args: str, stdout: Path | None = None) -> None:
    """Run ``napari-synthgen ARGS`` (fails loudly, showing the command's error output)."""
    cmd = [sys.executable, "-m", "napari_synthgen", *args]
    print("$ napari-synthgen " + " ".join(args), flush=True)
    with open(stdout, "w") if stdout else open(os.devnull, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"napari-synthgen {args[0]} failed:\n{proc.stderr[-3000:]}")


def _pairs(dest: Path, indices: range) -> Path:
    """A paired folder with the ISBI pairs of ``indices`` (copies, so nothing else leaks in)."""
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for i in indices:
            name = f"isbi2012_train_{i:02d}.tif"
            shutil.copy(ISBI / sub / name, dest / sub / name)
    return dest


def make_inputs(work: Path, reuse: bool = False) -> dict[str, Path]:
    """Masks, generated samples, a report, an evaluation and recorded training events
    (``reuse``: keep what an earlier run left in ``work``)."""
    if not ISBI.is_dir():
        raise SystemExit(f"{ISBI} is missing: make docs needs the ISBI 2012 pairs there.")
    paths = {"real": _pairs(work / "real", range(0, 4)),
             "test": _pairs(work / "test", range(27, 30)),  # held out by the demo
             "masks": work / "masks", "generated": work / "generated",
             "report": work / "report", "evaluation": work / "evaluation",
             "run": work / "run", "events": work / "events.jsonl"}
    if reuse and paths["events"].is_file():
        return paths
    for key in ("masks", "generated", "report", "evaluation", "run"):
        shutil.rmtree(paths[key], ignore_errors=True)
    shutil.rmtree(work / "sparse", ignore_errors=True)
    _cli("masks", "--layout", "dense", "--n", "3", "--size", "256", "256", "--seed", "1",
         "--out", str(paths["masks"]))
    _cli("masks", "--layout", "sparse", "--n", "1", "--size", "256", "256", "--seed", "2",
         "--out", str(work / "sparse"))
    shutil.copy(next((work / "sparse").glob("*.tif")), paths["masks"] / "sparse_0000.tif")
    _cli("generate", "--model", "demo", "--masks", str(paths["masks"]), "--out",
         str(paths["generated"]), "--variations", "2", "--seed", "0", "--precision", "fp32")
    _cli("report", "--samples", str(paths["generated"]), "--reference", str(paths["real"]),
         "--out", str(paths["report"]), "--consistency-steps", "30")
    _cli("evaluate", "--real", str(paths["real"]), "--synthetic", str(paths["generated"]),
         "--test", str(paths["test"]), "--steps", "20", "--seeds", "2", "--batch-size", "2",
         "--crop", "96", "--precision", "fp32", "--out", str(paths["evaluation"]))
    _cli("train", "--data", str(paths["real"]), "--out", str(paths["run"]), "--steps",
         str(TRAIN_STEPS), "--netG", "unet_128", "--ngf", "16", "--ndf", "16", "--tile", "128",
         "--batch-size", "2", "--sample-every", "60", "--checkpoint-every", str(TRAIN_STEPS),
         "--log-every", "3",
         "--seed", "0", "--precision", "fp32", "--events", "jsonl", stdout=paths["events"])
    return paths


# ------------------------------------------------------------------------------- saving
def save_png(image: Any, dest: Path, max_bytes: int = MAX_BYTES) -> Path:
    """Save an RGB(A) array or image file as a PNG with a 256-colour palette, smaller when it
    is still over ``max_bytes``. The palette is nearly lossless here (grey EM has at most 256
    levels, the interface a few colours) and halves a screenshot of EM texture, which
    compresses badly as RGB; docs/images/ has a 3 MB budget (tests/test_docs.py)."""
    import numpy as np
    from PIL import Image

    img = Image.open(image) if isinstance(image, (str, Path, io.BytesIO)) else (
        Image.fromarray(np.asarray(image)))
    img = img.convert("RGB")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for scale in (1.0, 0.85, 0.7, 0.6, 0.5):
        size = (round(img.width * scale), round(img.height * scale))
        candidate = img if scale == 1.0 else img.resize(size, Image.LANCZOS)
        out = candidate.quantize(256, dither=Image.Dither.NONE)
        out.save(dest, optimize=True)
        if dest.stat().st_size <= max_bytes:
            print(f"saved {dest} ({out.width} x {out.height}, "
                  f"{dest.stat().st_size // 1000} KB)", flush=True)
            return dest
    raise SystemExit(f"{dest}: cannot get the picture under {max_bytes} bytes")


# --------------------------------------------------------------------------- the viewers
def _settle(seconds: float = 0.5) -> None:
    """Let Qt draw (process events for a while)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _wait(cond: Callable[[], bool], what: str, timeout: float = 120) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        QApplication.instance().processEvents()
        time.sleep(0.02)


def _viewer(title: str) -> Any:
    import napari

    viewer = napari.Viewer(title=title, show=True)
    viewer.window.resize(*WINDOW)
    return viewer


def _dock(viewer: Any, name: str) -> Any:
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _shot(viewer: Any, name: str, out: Path, size: tuple[int, int] = WINDOW,
          max_bytes: int = MAX_BYTES) -> None:
    """Fit the canvas to the layers and save the whole window."""
    from qtpy.QtGui import QCursor

    QCursor.setPos(1599, 999)  # the pointer off the window: no hover text in the status bar
    viewer.window.resize(*size)
    _settle(1.0)
    viewer.reset_view()
    _settle(0.3)
    save_png(viewer.screenshot(canvas_only=False, flash=False), out / name, max_bytes)
    viewer.close()
    _settle(0.2)


def _grid(viewer: Any, columns: int) -> None:
    viewer.grid.enabled = True
    viewer.grid.stride = -1
    viewer.grid.shape = (1, columns)


def _expand(widget: Any, title_part: str) -> None:
    """Open the collapsible section of ``widget`` whose title holds ``title_part``."""
    from superqt import QCollapsible

    for section in widget.native.findChildren(QCollapsible):
        if title_part in section.text():
            section.expand(animate=False)


def shot_demo(out: Path, paths: dict[str, Path]) -> None:
    from napari_synthgen.widgets.demo import build_demo_viewer

    viewer = build_demo_viewer(show=True)
    for layer in viewer.layers:
        if layer.name == "mask":
            layer.opacity = 1.0
    _shot(viewer, "demo.png", out, size=(1500, 800))


def shot_live_preview(out: Path, paths: dict[str, Path]) -> None:
    """The demo with live preview on, after a brush stroke drew a new membrane across cells."""
    import numpy as np

    from napari_synthgen.widgets.demo import build_demo_viewer

    viewer = build_demo_viewer(show=True)
    _, synth = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")  # the demo's own
    mask = viewer.layers["mask"]
    mask.opacity = 1.0
    mask.mode = "paint"
    mask.brush_size = 9
    mask.selected_label = 2  # the boundary class the stroke paints
    viewer.layers.remove("EM sample")  # mask | synthetic only: larger on the canvas
    viewer.grid.shape = (1, 2)
    _wait(lambda: not synth._live_running, "the first preview")
    before = np.asarray(viewer.layers["mask_synth"].data).copy()
    for t in np.linspace(0.0, 1.0, 150):  # one stroke, dab by dab, as a mouse drag paints
        y = 140 + 240 * t
        x = 110 + 300 * t + 40 * np.sin(6 * t)
        mask.paint((round(y), round(x)), 2)
        _settle(0.01)
    _wait(lambda: synth._live_applied >= synth._live_request and not synth._live_running
          and not synth._live_pending, "the live preview", timeout=120)
    _settle(0.5)
    after = np.asarray(viewer.layers["mask_synth"].data)
    if np.array_equal(before, after):
        raise SystemExit("the live preview did not change the synthetic image")
    _shot(viewer, "live_preview.png", out, size=(1500, 800))


def shot_mask_editor(out: Path, paths: dict[str, Path]) -> None:
    viewer = _viewer("napari-synthgen: mask editor")
    editor = _dock(viewer, "Mask editor")
    editor.layout_kind.value = "dense"
    editor.density.value = 0.5
    editor.layout_seed.value = 3
    editor.new_height.value = editor.new_width.value = 512
    layer = editor.new_layout()
    if layer is None:
        raise SystemExit("New layout made no mask")
    layer.opacity = 1.0
    viewer.layers.selection.active = layer
    layer.mode = "paint"
    _expand(editor, "layouts")
    _shot(viewer, "mask_editor.png", out)


def shot_synthesize(out: Path, paths: dict[str, Path]) -> None:
    from napari_synthgen.sample_data import demo_model_path

    _synthesize_shot(out, paths, demo_model_path(), "synthesize.png")


def diffusion_model() -> Path | None:
    """The bundled diffusion demo model, when this version has one."""
    from napari_synthgen.sample_data import BUNDLED_MODELS, bundled_model_path

    if "demo-diffusion" not in BUNDLED_MODELS:
        return None
    path = bundled_model_path("demo-diffusion")
    return path if path.is_file() else None


def shot_synthesize_diffusion(out: Path, paths: dict[str, Path]) -> None:
    model = diffusion_model()
    if model is None:
        raise SystemExit("no bundled diffusion model (demo-diffusion) in this version")
    _synthesize_shot(out, paths, model, "synthesize_diffusion.png")


def _synthesize_shot(out: Path, paths: dict[str, Path], model: Path | None, name: str) -> None:
    """A layout mask synthesized by ``model`` with two seeded variations (a slider)."""
    from napari_synthgen import io
    from napari_synthgen.widgets._common import add_mask_layer

    viewer = _viewer("napari-synthgen: synthesize")
    mask = io.read_array(sorted(paths["masks"].glob("*.tif"))[0])
    layer = add_mask_layer(viewer, mask, "layout mask", opacity=1.0)
    synth = _dock(viewer, "Synthesize")
    synth.set_model(model)
    _wait(lambda: synth.model is not None, "the demo model")
    synth.mask_layer.value = layer
    synth.seed.value = 0
    synth.variations.value = 2
    synth.stochastic.value = True
    synth.precision.value = "fp32"
    synth.synthesize()
    synth.wait_idle(timeout=600)
    _settle(0.5)
    synth_name = f"{layer.name}_synth"
    if synth_name in viewer.layers:  # mask first, then its image
        viewer.layers.move(viewer.layers.index(synth_name), viewer.layers.index(layer))
    _grid(viewer, len(viewer.layers))
    viewer.layers.selection.active = layer
    _shot(viewer, name, out, size=(1500, 860))


def shot_curate(out: Path, paths: dict[str, Path]) -> None:
    viewer = _viewer("napari-synthgen: curate")
    curate = _dock(viewer, "Curate")
    curate.folder.value = str(paths["generated"].parent / "export")
    curate.open_session()
    curate.reference_folder.value = str(paths["real"])
    curate.choose_reference()
    curate.load_folder(paths["generated"])
    curate.wait_idle(timeout=300)
    if not curate.queue:
        raise SystemExit("Curate loaded no candidates")
    _wait(lambda: all(it.figures is not None or it.figures_error for it in curate.queue),
          "the quality figures", timeout=300)
    curate.wait_idle(timeout=60)
    scores = sorted(it.score for it in curate.queue if math.isfinite(it.score))
    if scores and not any(it.flagged(curate.threshold.value) for it in curate.queue):
        # nothing below the default threshold this time: raise it just above the worst score
        # so the picture shows what a flagged sample looks like
        curate.threshold.value = round(scores[0] + 0.01, 2)
        curate.wait_idle(timeout=60)
    flagged = [i for i, it in enumerate(curate.queue) if it.flagged(curate.threshold.value)]
    curate.show_candidate(flagged[0] if flagged else 0)
    _settle(1.0)
    _shot(viewer, "curate.png", out)


def shot_train(out: Path, paths: dict[str, Path]) -> None:
    """The Train widget fed the events a real (tiny) run wrote, stopped mid-run."""
    from napari_synthgen import io

    events = [json.loads(line) for line in paths["events"].read_text().splitlines()
              if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress"]
    if not progress:
        raise SystemExit(f"the training run wrote no progress events ({paths['events']})")
    stop_at = progress[int(len(progress) * 0.8)]["step"]
    viewer = _viewer("napari-synthgen: train")
    train = _dock(viewer, "Train")
    train.data.value = str(paths["real"])
    train.out.value = str(paths["run"])
    train.steps.value = TRAIN_STEPS
    train.tile.value, train.batch.value, train.sample_every.value = 128, 2, 60
    train.netG.value, train.ngf.value, train.ndf.value = "unet_128", 16, 16  # as recorded
    train._set_running(True)
    train.plot.clear()
    for event in events:
        if event["event"] in ("finished", "checkpoint") or event.get("step", 0) > stop_at:
            continue
        if event["event"] == "sample":
            event["image"] = io.read_array(event["path"])
        train._on_event(event)
    train.plot.draw()
    _settle(0.5)
    _shot(viewer, "train.png", out, size=(1500, 860))


def shot_check_utility(out: Path, paths: dict[str, Path]) -> None:
    """The Check utility widget after a tiny study (real sizes 1 and 4, 20 steps, 2 seeds)."""
    viewer = _viewer("napari-synthgen: check utility")
    viewer.open(str(paths["test"]), plugin=PLUGIN)  # the real test pairs it scores on
    for layer in viewer.layers:
        if layer.name.endswith("masks"):
            layer.opacity = 0.3
    check = _dock(viewer, "Check utility")
    check.real.value, check.test.value = str(paths["real"]), str(paths["test"])
    check.synthetic.value = str(paths["generated"])
    check.out.value = str(paths["generated"].parent / "evaluation_widget")
    check.sizes.value, check.steps.value, check.seeds.value, check.batch.value = "1,4", 20, 2, 2
    if check.run() is None:
        raise SystemExit(f"Check utility did not start: {check.status.value}")
    check.wait_idle(timeout=600)
    if check.result is None:
        raise SystemExit(f"Check utility failed: {check.status.value}")
    _settle(1.0)
    check.show_figure(Path(str(check.out.value)) / "evaluation_sizes.png")  # at its docked width
    _settle(0.5)
    _shot(viewer, "check_utility.png", out, size=(1500, 950), max_bytes=240_000)


SHOTS: dict[str, Callable[[Path, dict[str, Path]], None]] = {
    "demo.png": shot_demo, "mask_editor.png": shot_mask_editor,
    "live_preview.png": shot_live_preview, "synthesize.png": shot_synthesize,
    "curate.png": shot_curate, "train.png": shot_train,
    "synthesize_diffusion.png": shot_synthesize_diffusion,
    "check_utility.png": shot_check_utility,
}


#: pictures made when their model is there (not linked from the docs until it always is)
OPTIONAL: dict[str, tuple[str, Callable[[], Path | None],
                          Callable[[Path, dict[str, Path]], None]]] = {
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go")
    parser.add_argument("--only", nargs="+", choices=[*IMAGES, *OPTIONAL], default=None,
                        help="make only these pictures")
    parser.add_argument("--work", type=Path, default=None,
                        help="intermediate files (default: napari-synthgen-docs in the "
                        "temporary folder, emptied first unless --reuse)")
    parser.add_argument("--cli", action="store_true",
                        help="only write docs/cli.md (the command-line reference; no X needed)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the inputs an earlier run left in the work folder")
    args = parser.parse_args(argv)
    wanted = args.only or list(IMAGES)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cli_md = REPO / "docs" / "cli.md"
    cli_md.write_text(cli_reference(), encoding="utf-8")
    print(f"wrote {cli_md}")
    if args.cli:
        return 0
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    if not os.environ.get("DISPLAY"):
        raise SystemExit("no X display: run under xvfb-run (make docs does), see "
                         "docs/troubleshooting.md")
    t0 = time.perf_counter()
    # a fixed place, so the paths the widgets show are the same in every run
    work = args.work or Path(tempfile.gettempdir()) / "napari-synthgen-docs"
    marker = work / ".made-by-make_docs"
    if work.exists() and any(work.iterdir()) and not marker.exists():
        raise SystemExit(f"{work} holds files this script did not write; choose an empty "
                         "--work folder.")
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    marker.touch()
    os.environ["NAPARI_SYNTHGEN_CONFIG_DIR"] = str(work / "config")  # not the user's
    paths = make_inputs(work, reuse=args.reuse)
    if "report.png" in wanted:
        save_png(paths["report"] / "report.png", args.out / "report.png")
    if "evaluate.png" in wanted:
        save_png(paths["evaluation"] / "evaluation.png", args.out / "evaluate.png")
    made = [name for name in wanted if name in ("report.png", "evaluate.png")]
    for name in wanted:
        if name in SHOTS:
            SHOTS[name](args.out, paths)
            made.append(name)
    for name, (_what, available, shot) in OPTIONAL.items():
        if (args.only is None or name in args.only) and available() is not None:
            shot(args.out, paths)
            made.append(name)
    print(f"made {len(made)} pictures in {time.perf_counter() - t0:.0f} s: {', '.join(made)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
