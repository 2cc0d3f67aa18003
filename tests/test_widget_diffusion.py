"""The Synthesize widget with a diffusion model: its steps, sampler and preview steps shown and
used (hidden for pix2pix), progress per denoising step, Cancel within one step, live preview.
Real viewer, real manifest, a tiny real diffusion U-Net (random weights, 32-px tiles)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen.layouts import make_layout

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui
TILES_PER_STEP = 9  # a 64 x 64 mask in 32-px tiles overlapping by 8: 3 x 3


@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-level U-Net of 8/16 channels, tile 32: milliseconds per tile on the CPU."""
    import torch

    from napari_synthgen.families.diffusion.files import save_diffusion
    from napari_synthgen.families.diffusion.networks import build_unet, make_spec
    from napari_synthgen.widgets._common import keep_triton_out

    keep_triton_out()  # viewers of earlier tests loaded Mesa's LLVM: diffusers comes after
    torch.manual_seed(0)
    spec = make_spec("small", tile=32, block_out_channels=(8, 16), attention=(False, True),
                     attention_head_dim=8)
    return save_diffusion(tmp_path_factory.mktemp("diffusion") / "tiny_diffusion.safetensors",
                          build_unet(spec), spec, {"classes": {"0": 0.1, "1": 0.6, "2": 0.3}})


def _widget(make_napari_viewer, qtbot, model: Path):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")
    w.device.value, w.precision.value = "cpu", "fp32"
    _use(w, qtbot, model)
    layer = viewer.add_labels(make_layout("dense", (64, 64), seed=3), name="m")
    w.mask_layer.value = layer
    return viewer, w, layer


def _use(w, qtbot, model: Path) -> None:
    w.set_model(model)
    qtbot.waitUntil(lambda: w.model is not None and w.model.info.path == str(model),
                    timeout=20000)


def _errors(start: int, *, warnings: bool = False) -> list[str]:
    """Error (and ``warnings``: warning) notifications since record ``start``."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    shown = {NotificationSeverity.ERROR} | ({NotificationSeverity.WARNING} if warnings else set())
    return [str(r.message) for r in notification_manager.records[start:]
            if r.severity in shown]


def _n_notes() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def test_steps_and_sampler_shown_used_and_hidden_for_pix2pix(
        make_napari_viewer, qtbot, tiny_diffusion: Path, tiny_model: Path) -> None:
    from napari_synthgen.families.diffusion.networks import SAMPLERS
    from napari_synthgen.families.diffusion.sampling import FUSIONS
    from napari_synthgen.registry import make_synthesizer

    viewer, w, layer = _widget(make_napari_viewer, qtbot, tiny_diffusion)
    notes = _n_notes()
    fields = w.family_fields
    assert list(fields) == ["steps", "sampler", "preview_steps", "fusion", "z_coupling",
                            "start_tile"]
    assert fields["start_tile"].value == 0  # a model not distilled: every step on its tiles
    assert fields["fusion"].choices == FUSIONS and fields["fusion"].value == "multidiffusion"
    assert not w.family_box.native.isHidden() and w.stochastic.native.isHidden()
    assert fields["sampler"].choices == SAMPLERS and fields["sampler"].value == "dpm"
    assert "diffusion" in w.model_info.value and "U-Net" in w.model_info.value
    fields["steps"].value, fields["sampler"].value = 3, "ddim"
    outputs: list = []
    w.synthesized.connect(outputs.append)
    progress: list = []
    with w._lock:  # the run waits for the lock: its steps are seen from the first
        worker = w.synthesize()
        worker.yielded.connect(progress.append)
        bar = w._jobs.jobs[-1].pbar
        fields["steps"].value = 2  # a change while it runs: the run keeps 3 steps
    w.wait_idle()
    assert [tuple(p) for p in progress] == [(1, 3), (2, 3), (3, 3)]  # one per denoising step
    assert "steps 3" in bar.desc and "ddim" in bar.desc
    params = outputs[0].provenance["params"]
    assert (params["steps"], params["sampler"], params["family"]) == (3, "ddim", "diffusion")
    direct = make_synthesizer(tiny_diffusion, device="cpu", precision="fp32", steps=3,
                         sampler="ddim")(layer.data, seed=0)
    assert np.array_equal(viewer.layers["m_synth"].data, direct)
    assert "steps 3, sampler ddim" in w.status.value
    w.synthesize()  # the next run uses the new value
    w.wait_idle()
    assert outputs[-1].provenance["params"]["steps"] == 2
    # nothing the user cannot act on (diffusers' deprecation notes) reaches the screen
    assert not _errors(notes, warnings=True), _errors(notes, warnings=True)
    # a pix2pix model: no family settings shown, none passed (its synthesizer takes none)
    _use(w, qtbot, tiny_model)
    assert w.family_fields == {} and w.family_box.native.isHidden()
    assert not w.stochastic.native.isHidden()
    w.synthesize()
    w.wait_idle()
    assert outputs[-1].provenance["family"] == "pix2pix"
    # back to diffusion: the values set before are still there
    _use(w, qtbot, tiny_diffusion)
    assert w.family_fields["steps"].value == 2 and w.family_fields["sampler"].value == "ddim"
    assert not _errors(notes), _errors(notes)


def test_cancel_stops_sampling_within_one_step_and_the_viewer_stays_usable(
        make_napari_viewer, qtbot, tiny_diffusion: Path) -> None:
    viewer, w, layer = _widget(make_napari_viewer, qtbot, tiny_diffusion)
    notes = _n_notes()
    steps = 60
    w.family_fields["steps"].value = steps
    calls: list[int] = []  # one per tile the U-Net denoises (in the worker thread)
    hook = w.synthesizer().denoiser.network.register_forward_hook(
        lambda *_: calls.append(1))
    try:
        w.synthesize()
        qtbot.waitUntil(lambda: len(calls) >= 2 * TILES_PER_STEP, timeout=20000)
        w.cancel()
        at_cancel = len(calls)
        w.wait_idle()
    finally:
        hook.remove()
    after = len(calls) - at_cancel
    assert after <= TILES_PER_STEP, f"{after} tiles denoised after Cancel: more than one step"
    assert len(calls) < steps * TILES_PER_STEP
    assert w.status.value == "Cancelled."
    assert "m_synth" not in viewer.layers  # a cancelled run puts nothing on screen
    assert not _errors(notes), _errors(notes)
    assert not w.busy and not w._holds and not w._lock.locked()
    # the viewer and the widget go on: paint, then a new synthesis succeeds
    layer.paint((20, 20), 2)
    w.family_fields["steps"].value = 2
    w.synthesize()
    w.wait_idle()
    out = viewer.layers["m_synth"]
    assert out.data.shape == (64, 64) and out.metadata["params"]["steps"] == 2
    assert not _errors(notes), _errors(notes)


def test_live_preview_with_diffusion_resamples_only_near_the_stroke(
        make_napari_viewer, qtbot, tiny_diffusion: Path) -> None:
    viewer, w, layer = _widget(make_napari_viewer, qtbot, tiny_diffusion)
    notes = _n_notes()
    w.family_fields["preview_steps"].value = 2
    previews: list = []
    w.synthesized.connect(previews.append)
    w.live.value = True
    w.wait_idle()
    assert "synthesized" in w.status.value
    first = previews[-1]
    assert first.name == "live preview" and first.provenance["params"]["preview_steps"] == 2
    before = viewer.layers["m_synth"].data.copy()
    layer.brush_size = 5
    layer.paint((6, 6), 2 if layer.data[6, 6] != 2 else 1)  # a brush stroke in one corner
    w.wait_idle()
    after = viewer.layers["m_synth"].data
    assert "1 tile(s) updated" in w.status.value
    assert not np.array_equal(after[:24, :24], before[:24, :24])  # the stroke shows
    # the touched tile reaches image row/column 28 (32-px tile, 4 px of padding): beyond it
    # nothing was sampled again
    assert np.array_equal(after[28:], before[28:]) and np.array_equal(after[:, 28:],
                                                                       before[:, 28:])
    assert len(previews) == 2 and not _errors(notes), _errors(notes)


#: a fresh process: a napari viewer first (its OpenGL driver may load its own LLVM), then the
#: Synthesize widget loads a diffusion model (diffusers -> torch._dynamo -> triton) and runs it
FRESH = """
import sys
import napari
import numpy as np

viewer = napari.Viewer(show=False)
llvm = "libLLVM" in open("/proc/self/maps").read()
_, w = viewer.window.add_plugin_dock_widget("napari-synthgen", "Synthesize")
w.device.value, w.precision.value = "cpu", "fp32"
w.set_model(sys.argv[1])
w.wait_idle()
w.family_fields["steps"].value = 1
w.mask_layer.value = viewer.add_labels(np.ones((32, 32), np.uint8), name="m")
w.synthesize()
w.wait_idle()
print("ok", viewer.layers["m_synth"].data.shape, "llvm" if llvm else "no llvm")
viewer.close()
"""


def test_a_diffusion_model_loads_in_a_process_whose_viewer_came_first(
        tiny_diffusion: Path) -> None:
    """triton's LLVM crashed the interpreter (segfault) when imported after the one Mesa's
    OpenGL driver loads for napari's canvas; the widget keeps triton out."""
    done = subprocess.run([sys.executable, "-c", FRESH, str(tiny_diffusion)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok (32, 32)" in done.stdout, done.stdout + done.stderr[-3000:]


def test_both_bundled_models_are_offered(make_napari_viewer, qtbot) -> None:
    """The Synthesize widget offers the pix2pix and the diffusion demo side by side."""
    from napari_synthgen.sample_data import bundled_model_path

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthesize")
    offered = [value for _label, value in w._recent_choices()]
    assert "demo" in offered and "demo-diffusion" in offered
    w.recent.value = "demo-diffusion"
    path = str(bundled_model_path("demo-diffusion"))
    qtbot.waitUntil(lambda: w.model is not None and w.model.info.path == path, timeout=30000)
    assert w.model.info.family == "diffusion"


def test_a_mask_stack_is_synthesized_as_a_volume_and_shown_in_3d(
        make_napari_viewer, qtbot, tiny_diffusion: Path) -> None:
    from napari_synthgen.registry import make_synthesizer

    viewer, w, _ = _widget(make_napari_viewer, qtbot, tiny_diffusion)
    stack = np.stack([make_layout("dense", (64, 64), seed=s) for s in (3, 4, 5)])
    layer = viewer.add_labels(stack, name="vol")
    w.mask_layer.value = layer
    fields = w.family_fields
    assert fields["z_coupling"].value == "serial"
    fields["steps"].value = 2
    outputs: list = []
    w.synthesized.connect(outputs.append)
    w.synthesize()
    w.wait_idle()
    out = viewer.layers["vol_synth"].data
    assert out.shape == (3, 64, 64) and viewer.dims.ndisplay == 3
    direct = make_synthesizer(tiny_diffusion, device="cpu", precision="fp32", steps=2)
    assert np.array_equal(out, direct(stack, seed=0))
    assert outputs[0].provenance["params"]["z_coupling"]["name"] == "serial"
    # independent slices on request: the first slice is the same, the others differ
    viewer.dims.ndisplay = 2
    w.show_3d.value = False
    fields["z_coupling"].value = "independent"
    w.synthesize()
    w.wait_idle()
    other = viewer.layers["vol_synth"].data
    assert viewer.dims.ndisplay == 2
    assert np.array_equal(other[0], out[0]) and not np.array_equal(other[1:], out[1:])
