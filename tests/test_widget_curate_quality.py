"""Quality figures in the Curate widget: the score against a reference (the model's training
statistics or a folder of real pairs), sorting, flagging, bulk decisions by threshold with a
confirmation, Undo of a bulk decision as one step, and the figures in the manifest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen import io
from napari_synthgen.layouts import make_layout
from napari_synthgen.widgets._bus import Candidate
from napari_synthgen.widgets._queue import canvas_text

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui
CROP = 128


def _dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _crop(arr: np.ndarray, i: int) -> np.ndarray:
    y, x = divmod(i, 4)
    return np.ascontiguousarray(arr[y * CROP:(y + 1) * CROP, x * CROP:(x + 1) * CROP])


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def model_with_reference(tmp_path_factory: pytest.TempPathFactory, isbi_image: np.ndarray,
                         isbi_mask: np.ndarray) -> Path:
    """A tiny real generator whose metadata carries reference statistics of real ISBI crops
    (as training stores them)."""
    import torch

    from napari_synthgen.families.pix2pix.files import save_model
    from napari_synthgen.families.pix2pix.networks import GeneratorSpec, build_generator
    from napari_synthgen.quality import REFERENCE_KEY, reference_record

    torch.manual_seed(0)
    spec = GeneratorSpec(netG="resnet_6blocks", input_nc=3, output_nc=1, ngf=4,
                         norm="instance", dropout=False)
    reference = reference_record((_crop(isbi_image, i), _crop(isbi_mask, i)) for i in range(4))
    return save_model(tmp_path_factory.mktemp("models") / "with_reference.safetensors",
                      build_generator(spec), spec, encoding="rgb", tile=64,
                      metadata={REFERENCE_KEY: reference})


def test_figures_and_score_against_the_models_reference(make_napari_viewer, qtbot,
                                                        model_with_reference: Path,
                                                        tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    synth = _dock(viewer, "Synthesize")
    curate = _dock(viewer, "Curate")
    synth.set_model(model_with_reference)
    qtbot.waitUntil(lambda: synth.model is not None, timeout=20000)
    qtbot.waitUntil(lambda: "Reference: training data" in curate.reference_note.value,
                    timeout=20000)
    assert "4 image(s)" in curate.reference_note.value
    synth.mask_layer.value = viewer.add_labels(make_layout("dense", (96, 96), seed=1), name="mk")
    synth.synthesize()
    synth.wait_idle()
    curate.wait_idle()
    item = curate.current()
    assert item is not None and item.figures is not None
    assert math.isfinite(item.score) and 0.0 <= item.score <= 1.0
    assert f"<b>{item.score:.3f}" in curate.table.value or f"{item.score:.3f} ⚑" in \
        curate.table.value
    assert "grey-level distance, boundary" in curate.table.value
    # the panel draws this candidate's curves over the reference's
    assert len(curate.panel.ax_spec.lines) == 2  # real (dashed) and this one
    assert len(curate.panel.ax_hist.lines) >= 2 and curate.panel.ax_hist.collections
    assert f"{item.score:.2f}" in curate.queue_list.item(0).text()
    dark = curate.panel.colours["background"]
    viewer.theme = "light"  # the panel follows napari's theme, as the train widget's plot
    assert curate.panel.colours["background"] != dark
    assert len(curate.panel.ax_spec.lines) == 2
    # the manifest records the figures and the reference they were computed against
    curate.folder.value = tmp_path / "export"
    record = curate.accept()
    assert record is not None
    quality = _manifest(tmp_path / "export")[0]["quality"]
    assert quality["score"] == pytest.approx(item.score)
    for key in ("wd_background", "wd_interior", "wd_boundary", "spectrum_dist", "std_ratio"):
        assert key in quality
    assert quality["reference"].startswith("training data of")


def test_sort_flag_bulk_accept_and_undo(make_napari_viewer, tmp_path: Path,
                                        isbi_image: np.ndarray, isbi_mask: np.ndarray) -> None:
    from scipy.ndimage import gaussian_filter

    ref = tmp_path / "real"
    for i in range(3):
        io.write_image(ref / "images" / f"r{i}.tif", _crop(isbi_image, i))
        io.write_mask(ref / "masks" / f"r{i}.tif", _crop(isbi_mask, i))
    rng = np.random.default_rng(0)
    real = [_crop(isbi_image, i) for i in (5, 6, 9)]
    masks = [_crop(isbi_mask, i) for i in (5, 6, 9)]
    images = {
        "real a": (real[0], masks[0]),
        "real b": (real[1], masks[1]),
        "blurred": (gaussian_filter(real[2].astype(float), 3).astype(np.uint8), masks[2]),
        "noise": (rng.integers(0, 256, (CROP, CROP), dtype=np.uint8), masks[2]),
        "inverted": (255 - real[2], masks[2]),
    }
    viewer = make_napari_viewer()
    curate = _dock(viewer, "Curate")
    curate.folder.value = tmp_path / "export"
    curate.reference_folder.value = ref
    curate.add_candidates([Candidate(img, m, {"kind": name}, name=name)
                           for name, (img, m) in images.items()])
    curate.wait_idle(30)
    assert "3 image(s)" in curate.reference_note.value
    scores = {it.name: it.score for it in curate.queue}
    assert all(math.isfinite(s) for s in scores.values()), scores
    # known answers: real crops score above every damaged copy
    assert min(scores["real a"], scores["real b"]) > max(
        scores["blurred"], scores["noise"], scores["inverted"]), scores

    curate.order.value = "score, lowest first"
    ordered = [it.score for it in curate.queue]
    assert ordered == sorted(ordered)
    assert [curate.queue_list.item(i).text().split()[-1] for i in range(len(ordered))] == [
        it.name.split()[-1] for it in curate.queue]
    curate.order.value = "score, highest first"
    assert [it.score for it in curate.queue] == sorted(ordered, reverse=True)

    # flag everything below the real crops
    curate.threshold.value = round(
        (min(scores["real a"], scores["real b"]) + max(scores["blurred"], scores["noise"],
                                                       scores["inverted"])) / 2, 2)
    flagged = {it.name for it in curate.queue if it.flagged(curate.threshold.value)}
    assert flagged == {"blurred", "noise", "inverted"}
    rows = {curate.queue_list.item(i).text() for i in range(curate.queue_list.count())}
    assert {r.split()[-1] for r in rows if r.startswith("⚑")} == {"blurred", "noise",
                                                                   "inverted"}
    curate.show_candidate(next(i for i, it in enumerate(curate.queue) if it.name == "noise"))
    overlay = canvas_text(viewer)
    assert overlay.visible and "flagged" in overlay.text
    assert "⚑ flagged" in curate.position.value
    curate.show_candidate(next(i for i, it in enumerate(curate.queue) if it.name == "real a"))
    assert not overlay.visible and "flagged" not in curate.position.value
    curate.show_candidate(next(i for i, it in enumerate(curate.queue) if it.name == "noise"))

    # one single decision first, then a bulk accept; a declined confirmation does nothing
    assert curate.reject() is not None  # the noise image
    asked: list[str] = []
    curate.confirm = lambda title, text: asked.append(text) or False
    assert curate.accept_above() is None and curate.session.n_accepted == 0
    assert "2 undecided candidate(s)" in asked[0]
    curate.confirm = lambda title, text: True
    assert curate.accept_above() is not None
    curate.wait_idle(30)
    accepted = {it.name for it in curate.queue if it.decision == "accept"}
    assert accepted == {"real a", "real b"} and curate.session.n_accepted == 2
    export = tmp_path / "export"
    records = _manifest(export)
    assert [r["decision"] for r in records] == ["reject", "accept", "accept"]
    for r in records[1:]:
        assert r["provenance"]["bulk_decision"].startswith("accept score ≥")
        assert r["quality"]["score"] >= curate.threshold.value
    assert len(list((export / "images").iterdir())) == 2

    # Undo takes the whole bulk decision back as one step, then the single one
    curate.undo()
    assert curate.session.counts() == {"accepted": 0, "rejected": 1}
    assert not any(it.decision == "accept" for it in curate.queue)
    assert not list((export / "images").iterdir())
    assert len(list((export / "trash").rglob("*.tif"))) == 4  # 2 images + 2 masks
    curate.undo()
    assert curate.session.counts() == {"accepted": 0, "rejected": 0}
    assert all(it.decision is None for it in curate.queue)
    assert curate.undo() is None and "Nothing to undo" in curate.status.value


def test_bulk_reject_below_and_unscored_candidates(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    curate = _dock(viewer, "Curate")
    curate.folder.value = tmp_path / "export"
    rng = np.random.default_rng(1)
    curate.add_candidates([Candidate(rng.integers(0, 256, (64, 64), dtype=np.uint8),
                                     make_layout("dense", (64, 64), seed=i), name=f"c{i}")
                           for i in range(2)])
    curate.wait_idle(30)
    # no model, no folder: figures without a score; nothing is flagged or decided in bulk
    assert "No reference" in curate.reference_note.value
    # a folder that is not a paired folder: said beside the field, no error notification
    from napari.utils.notifications import notification_manager

    n = len(notification_manager.records)
    (tmp_path / "notpaired").mkdir()
    curate.reference_folder.value = tmp_path / "notpaired"
    curate.wait_idle(30)
    assert "No reference (real pairs in" in curate.reference_note.value
    assert len(notification_manager.records) == n
    curate.reference_folder.line_edit.value = ""  # the user clears the field
    curate.wait_idle(30)
    assert "No reference: choose" in curate.reference_note.value
    assert all(it.figures is not None and not math.isfinite(it.score) for it in curate.queue)
    curate.confirm = lambda title, text: True
    assert curate.reject_below() is None and "No undecided candidate" in curate.status.value
    assert curate.accept() is not None
    quality = _manifest(tmp_path / "export")[0]["quality"]
    assert quality["score"] == "nan" and quality["reference"] == "none"
    assert "frac_boundary" in quality


def test_interrupted_bulk_undo_stays_consistent(make_napari_viewer, tmp_path: Path,
                                               isbi_image: np.ndarray, isbi_mask: np.ndarray,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ref = tmp_path / "real"
    io.write_image(ref / "images" / "r.tif", _crop(isbi_image, 0))
    io.write_mask(ref / "masks" / "r.tif", _crop(isbi_mask, 0))
    viewer = make_napari_viewer()
    curate = _dock(viewer, "Curate")
    curate.folder.value = tmp_path / "export"
    curate.reference_folder.value = ref
    curate.add_candidates([Candidate(_crop(isbi_image, i), _crop(isbi_mask, i), name=f"c{i}")
                           for i in (1, 2, 3)])
    curate.wait_idle(30)
    curate.threshold.value = 0.0
    from napari_synthgen.widgets import _common  # the real question, answered Yes

    asked: list[str] = []
    monkeypatch.setattr(_common, "ask", lambda parent, title, text, buttons: asked.append(
        text) or "Yes")
    assert curate.accept_above() is not None and "3 undecided" in asked[0]
    curate.wait_idle(30)
    assert curate.session.n_accepted == 3
    # the disk fails while the second undone sample's files move to the trash: that undo is
    # already recorded, so the widget follows the manifest, and Undo goes on from there
    session = curate.session
    real_trash, calls = session._trash_files, []

    def failing(record):
        calls.append(record["id"])
        if len(calls) == 2:
            raise OSError("disk failed")
        real_trash(record)

    monkeypatch.setattr(session, "_trash_files", failing)
    curate.undo()
    assert session.n_accepted == 1
    decided = [it for it in curate.queue if it.decision]
    assert len(decided) == 1 and decided[0].record_id == session.accepted[0]
    monkeypatch.setattr(session, "_trash_files", real_trash)
    curate.undo()
    assert session.n_accepted == 0 and all(it.decision is None for it in curate.queue)
    assert curate.undo() is None


def test_cancelling_a_bulk_accept_keeps_what_it_recorded(make_napari_viewer, qtbot,
                                                          tmp_path: Path, isbi_image: np.ndarray,
                                                          isbi_mask: np.ndarray,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk decision shows napari's cancelable progress; Cancel stops it after the sample
    under way, and the widget agrees with the manifest on what was decided."""
    import threading

    ref = tmp_path / "real"
    io.write_image(ref / "images" / "r.tif", _crop(isbi_image, 0))
    io.write_mask(ref / "masks" / "r.tif", _crop(isbi_mask, 0))
    viewer = make_napari_viewer()
    curate = _dock(viewer, "Curate")
    curate.folder.value = tmp_path / "export"
    curate.reference_folder.value = ref
    curate.add_candidates([Candidate(_crop(isbi_image, i), _crop(isbi_mask, i), name=f"c{i}")
                           for i in range(1, 7)])
    curate.wait_idle(30)
    curate.threshold.value = 0.0
    curate.confirm = lambda title, text: True
    session = curate.open_session()
    real_accept, gate = session.accept, threading.Event()

    def slow_accept(*args, **kwargs):  # the disk is slow after two samples
        if session.n_accepted >= 2:
            gate.wait(10)
        return real_accept(*args, **kwargs)

    monkeypatch.setattr(session, "accept", slow_accept)
    assert curate.accept_above() is not None
    pbar = next(job.pbar for job in curate._jobs.jobs if job.kind == "bulk")
    from napari.utils import cancelable_progress

    assert isinstance(pbar, cancelable_progress)  # napari shows a Cancel button
    qtbot.waitUntil(lambda: session.n_accepted >= 2, timeout=20000)
    pbar.cancel()  # the user presses Cancel
    gate.set()
    curate.wait_idle(30)
    decided = {it.record_id for it in curate.queue if it.decision == "accept"}
    assert 2 <= len(decided) < 6 and decided == set(session.accepted)
    curate.undo()  # the cancelled bulk decision is still one step
    assert session.n_accepted == 0 and all(it.decision is None for it in curate.queue)
