"""Live preview drawn by a few-step student of the loaded diffusion model ("Preview model"):
offered and chosen by default when one is found, strokes drawn by it with its own steps while
Synthesize runs the loaded model, shown in the status line and the provenance, and a stroke
after Synthesize redraws only the tiles it touched on top of the full result. Real viewer,
real manifest, tiny real diffusion U-Nets (random weights, 32-px tiles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_synthgen.layouts import make_layout

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui
CLASSES = {"0": 0.1, "1": 0.6, "2": 0.3}


def _tiny(path: Path, seed: int, metadata: dict) -> Path:
    import torch

    from napari_synthgen.families.diffusion.files import save_diffusion
    from napari_synthgen.families.diffusion.networks import build_unet, make_spec
    from napari_synthgen.widgets._common import keep_triton_out

    keep_triton_out()  # viewers of earlier tests loaded Mesa's LLVM: diffusers comes after
    torch.manual_seed(seed)
    spec = make_spec("small", tile=32, block_out_channels=(8, 16), attention=(False, True),
                     attention_head_dim=8)
    return save_diffusion(path, build_unet(spec), spec, {"classes": CLASSES, **metadata})


@pytest.fixture(scope="module")
def teacher_and_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny diffusion model and, beside it, a "1-step student" whose record names it."""
    from napari_synthgen.io import sha256_file

    folder = tmp_path_factory.mktemp("preview_model")
    teacher = _tiny(folder / "tiny_teacher.safetensors", 0, {})
    record = {"teacher": {"name": str(teacher), "sha256": sha256_file(teacher)},
              "steps": 1, "sampler": "ddim", "complete": True}
    student = _tiny(folder / "tiny_student.safetensors", 1, {"distilled": record})
    return teacher, student


def _errors(start: int) -> list[str]:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [str(r.message) for r in notification_manager.records[start:]
            if r.severity in (NotificationSeverity.ERROR, NotificationSeverity.WARNING)]


def _use(w, qtbot, model: Path) -> None:
    w.set_model(model)
    qtbot.waitUntil(lambda: w.model is not None and w.model.info.path == str(model),
                    timeout=20000)


def test_strokes_drawn_by_the_student_synthesize_by_the_model(
        make_napari_viewer, qtbot, teacher_and_student: tuple[Path, Path],
        tiny_model: Path) -> None:
    from napari.utils.notifications import notification_manager

    from napari_synthgen.registry import make_synthesizer

    teacher, student = teacher_and_student
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")
    w.device.value, w.precision.value = "cpu", "fp32"
    notes = len(notification_manager.records)
    _use(w, qtbot, teacher)
    layer = viewer.add_labels(make_layout("dense", (64, 64), seed=3), name="m")
    w.mask_layer.value = layer
    # offered, and chosen by default
    assert [c for c in w.preview_model.choices] == ["same model", str(student)]
    assert w.preview_model.value == str(student) and not w._preview_box.native.isHidden()
    assert w.preview_student.steps == 1
    w.family_fields["preview_steps"].value = 2  # the loaded model's own preview steps
    w.family_fields["steps"].value = 3
    shown: list = []
    w.synthesized.connect(shown.append)

    # live preview: the student draws, with its own single step
    w.live.value = True
    w.wait_idle()
    assert w.status.value.startswith("live preview: tiny_student.safetensors, 1 step, ")
    assert "synthesized" in w.status.value
    prov = shown[-1].provenance
    assert prov["model"] == str(student) and prov["params"]["preview_steps"] == 1
    assert prov["preview_model"] == {"name": "tiny_student.safetensors", "steps": 1,
                                     "sampler": "ddim"}
    assert prov["preview_of"]["model"] == str(teacher)
    direct = make_synthesizer(student, device="cpu", precision="fp32", preview_steps=1)
    assert np.array_equal(viewer.layers["m_synth"].data, direct.update(layer.data, seed=0)[0])

    # Synthesize: the loaded model's full sampler
    w.synthesize()
    w.wait_idle()
    prov = shown[-1].provenance
    assert prov["model"] == str(teacher) and prov["params"]["steps"] == 3
    assert "preview_model" not in prov
    full = viewer.layers["m_synth"].data.copy()
    assert np.array_equal(full, make_synthesizer(teacher, device="cpu", precision="fp32",
                                                 steps=3)(layer.data, seed=0))

    # a stroke: the student redraws the touched tile on top of the full result
    layer.brush_size = 5
    layer.paint((6, 6), 2 if layer.data[6, 6] != 2 else 1)
    w.wait_idle()
    after = viewer.layers["m_synth"].data
    assert "tiny_student.safetensors, 1 step" in w.status.value
    assert "1 tile(s) updated" in w.status.value
    assert not np.array_equal(after[:24, :24], full[:24, :24])
    assert np.array_equal(after[28:], full[28:]) and np.array_equal(after[:, 28:],
                                                                     full[:, 28:])

    # "same model": the loaded model draws the preview with its preview steps
    w.preview_model.value = "same model"
    w.wait_idle()
    assert w.preview_student is None
    assert w.status.value.startswith("live preview: tiny_teacher.safetensors, 2 steps, ")
    assert shown[-1].provenance["model"] == str(teacher)
    assert "preview_model" not in shown[-1].provenance
    w.live.value = False
    assert not w.busy and not w._holds and not w._lock.locked()
    assert not _errors(notes), _errors(notes)

    # a pix2pix model draws its own preview: no preview model offered
    _use(w, qtbot, tiny_model)
    assert w._preview_box.native.isHidden() and w.preview_student is None


def test_no_student_only_same_model(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    lonely = _tiny(tmp_path / "lonely.safetensors", 2, {})
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")
    _use(w, qtbot, lonely)
    assert list(w.preview_model.choices) == ["same model"]
    assert w.preview_student is None


def test_the_student_of_a_guided_teacher_previews_with_its_own_guidance(
        make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """A teacher that samples at guidance 3 and its student distilled at 3 (guidance baked in,
    no null condition of its own): strokes are drawn by the student unguided, not refused,
    while Synthesize runs the teacher at the field's guidance."""
    from napari.utils.notifications import notification_manager

    from napari_synthgen.io import sha256_file
    from napari_synthgen.registry import make_synthesizer

    teacher = _tiny(tmp_path / "guided_teacher.safetensors", 0, {"null_condition": True})
    record = {"teacher": {"name": str(teacher), "sha256": sha256_file(teacher),
                          "guidance": 3.0},
              "steps": 1, "sampler": "ddim", "guidance": 3.0, "complete": True}
    student = _tiny(tmp_path / "guided_student.safetensors", 1, {"distilled": record})
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")
    w.device.value, w.precision.value = "cpu", "fp32"
    notes = len(notification_manager.records)
    _use(w, qtbot, teacher)
    assert w.family_fields["guidance"].value == 3.0
    w.family_fields["guidance_where"].value = "everywhere"
    assert w.preview_model.value == str(student)
    layer = viewer.add_labels(make_layout("sparse", (64, 64), seed=3), name="m")
    w.mask_layer.value = layer
    shown: list = []
    w.synthesized.connect(shown.append)
    w.live.value = True
    w.wait_idle()
    assert not _errors(notes), _errors(notes)
    prov = shown[-1].provenance
    assert prov["model"] == str(student) and prov["params"]["guidance"] == 1.0
    direct = make_synthesizer(student, device="cpu", precision="fp32", preview_steps=1)
    assert np.array_equal(viewer.layers["m_synth"].data, direct.update(layer.data, seed=0)[0])
    w.live.value = False
    w.family_fields["steps"].value = 2
    w.synthesize()
    w.wait_idle()
    prov = shown[-1].provenance
    assert prov["model"] == str(teacher) and prov["params"]["guidance"] == 3.0
    assert prov["params"]["guidance_where"] == "everywhere"
    assert not _errors(notes), _errors(notes)
