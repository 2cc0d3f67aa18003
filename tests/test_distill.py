"""Progressive distillation of a diffusion model: the student, its file, resume, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_synthgen.cli import main
from napari_synthgen.families.diffusion.distill import DistillPlan, check_plan
from napari_synthgen.families.diffusion.files import load_diffusion
from napari_synthgen.families.diffusion.sampling import (
    Denoiser,
    DiffusionSynthesizer,
    sample_batch,
)
from napari_synthgen.families.diffusion.training import DiffusionConfig, DiffusionTrainer
from napari_synthgen.layouts import make_layout
from napari_synthgen.registry import load_model, make_config
from napari_synthgen.training.config import ConfigError
from napari_synthgen.training.data import TileSampler, load_samples
from napari_synthgen.training.engine import latest_checkpoint, train

CPU = torch.device("cpu")
TINY = {"block_out_channels": [8, 16], "attention": [False, True], "attention_head_dim": 8}
TILE = 32


@pytest.fixture(scope="module")
def teacher(isbi_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny diffusion model trained briefly on six ISBI slices (the teacher)."""
    cfg = DiffusionConfig(tile=TILE, batch_size=4, lr=2e-3, warmup_steps=5,
                          overrides=dict(TINY))
    data = TileSampler(load_samples([isbi_small]), tile=TILE, stride=None, batch_size=4,
                       seed=0, flips=True)
    trainer = DiffusionTrainer(cfg, CPU, "fp32", total_steps=16)
    for k in range(16):
        trainer.step(*data.batch(k))
    return trainer.save_model(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


def _cfg(data: Path, out: Path, teacher: Path, **kw: object):
    values = {"data": [str(data)], "out": str(out), "steps": 16, "tile": TILE, "batch_size": 4,
              "device": "cpu", "precision": "fp32", "lr": 1e-3, "warmup_steps": 2,
              "distill_from": str(teacher), "distill_start_steps": 8, "distill_steps": 2,
              "checkpoint_every": 100, "sample_every": 100, "log_every": 100,
              "n_preview": 1, **kw}
    return make_config(family="diffusion", **values)


@pytest.fixture(scope="module")
def student(isbi_small: Path, teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-round distillation (8 -> 4 -> 2 DDIM steps) of the tiny teacher."""
    out = tmp_path_factory.mktemp("distill") / "run"
    events = list(train(_cfg(isbi_small, out, teacher)))
    assert events[-1]["event"] == "finished", events[-1]
    return out


def test_the_student_in_few_steps_is_closer_to_the_teacher_than_the_teacher_in_few_steps(
        student: Path, teacher: Path, isbi_small: Path) -> None:
    masks = torch.stack([TileSampler(load_samples([isbi_small]), tile=TILE, stride=None,
                                     batch_size=1, seed=9).batch(k)[0][0] for k in range(6)])

    def samples(path: Path, steps: int) -> torch.Tensor:
        model = load_diffusion(path)
        den = Denoiser(model.network, model.spec, CPU, "fp32")
        return sample_batch(den, masks, seed=3, steps=steps, sampler="ddim")

    reference = samples(teacher, 8)  # what the distillation chain started from
    own = float(((samples(teacher, 2) - reference) ** 2).mean())
    distilled = float(((samples(load_model(student).info.path, 2) - reference) ** 2).mean())
    print(f"MSE to the teacher's 8 steps: teacher 2 steps {own:.4f}, student {distilled:.4f}")
    assert distilled < 0.8 * own, (distilled, own)


def test_the_distilled_file_records_its_teacher_and_samples_with_its_own_steps(
        student: Path, teacher: Path) -> None:
    from napari_synthgen.io import sha256_file

    model = load_model(student)
    rec = model.info.metadata["distilled"]
    assert rec["teacher"]["sha256"] == sha256_file(teacher)
    assert rec["teacher"]["name"] == str(teacher)
    assert (rec["rounds"], rec["start_steps"], rec["steps"], rec["sampler"]) == (2, 8, 2, "ddim")
    assert rec["complete"] is True and rec["round_bounds"] == [0, 8, 16]
    assert model.spec == load_diffusion(teacher).spec  # the teacher's architecture
    synth = DiffusionSynthesizer(model, device="cpu", precision="fp32")
    assert (synth.steps, synth.sampler, synth.notes) == (2, "ddim", [])
    mask = make_layout("dense", (TILE, TILE), seed=1)
    progress: list[tuple[int, int]] = []
    synth(mask, seed=0, progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (2, 2)
    # an explicit --steps wins, with a note; a model that was not distilled keeps 20 DPM steps
    asked = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=8)
    assert asked.steps == 8 and "distilled for 2 ddim steps" in asked.notes[0]
    plain = DiffusionSynthesizer(load_diffusion(teacher), device="cpu", precision="fp32")
    assert (plain.steps, plain.sampler, plain.notes) == (20, "dpm", [])
    # its first step runs on tiles 2.5 model tiles wide (off for the plain teacher), as
    # recorded; a larger tile asked for scales it
    assert (synth.start_tile, plain.start_tile) == (80, 0)
    assert DiffusionSynthesizer.model_defaults(model)["start_tile"] == 80
    assert DiffusionSynthesizer(model, device="cpu", tile=64).start_tile == 160


def test_a_distilled_student_is_distilled_again_to_one_step_and_found_as_a_student(
        isbi_small: Path, student: Path, teacher: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """One more round from the 2-step student (as scripts/distill_demo_1step.yaml does from
    demo-diffusion-fast): a 2-step start is accepted, the 1-step file records the whole chain,
    and both students are found for the original teacher, fewest steps first."""
    import shutil

    from napari_synthgen.io import sha256_file
    from napari_synthgen.models.checkpoints.students import (
        ancestors,
        find_students,
        header_document,
    )

    assert check_plan(2, 1, 4) == [] and DistillPlan(2, 1, 4).rounds == 1
    two = load_model(student)
    out = tmp_path_factory.mktemp("distill1") / "run"
    events = list(train(_cfg(isbi_small, out, Path(two.info.path), steps=4,
                             distill_start_steps=2, distill_steps=1)))
    assert events[-1]["event"] == "finished", events[-1]
    one = load_model(out)
    rec = one.info.metadata["distilled"]
    assert (rec["rounds"], rec["start_steps"], rec["steps"], rec["complete"]) == (1, 2, 1, True)
    assert rec["teacher"]["distilled"]["steps"] == 2  # the teacher's own record, kept
    assert ancestors(header_document(one.info.path)) == [two.info.sha256,
                                                         sha256_file(teacher)]
    synth = DiffusionSynthesizer(one, device="cpu", precision="fp32")
    assert (synth.steps, synth.sampler) == (1, "ddim")
    # beside the teacher: both students (an unfinished one and a stranger are not offered)
    folder = Path(teacher).parent
    shutil.copy(one.info.path, folder / "one_step.safetensors")
    shutil.copy(two.info.path, folder / "two_step.safetensors")
    found = find_students(load_model(teacher).info)
    assert [(s.name, s.steps, s.sampler) for s in found] == [
        ("one_step.safetensors", 1, "ddim"), ("two_step.safetensors", 2, "ddim")]
    assert found[0].label() == "one_step.safetensors (1 step)"
    assert find_students(load_model(folder / "one_step.safetensors").info) == []
    assert [s.steps for s in find_students(load_model(folder / "two_step.safetensors").info)
            ] == [1]


def test_the_bundled_demo_diffusion_has_the_bundled_fast_model_as_its_student() -> None:
    from types import SimpleNamespace

    from napari_synthgen.io import sha256_file
    from napari_synthgen.models.checkpoints.students import find_students
    from napari_synthgen.sample_data import bundled_model_path

    demo = bundled_model_path("demo-diffusion")
    if not demo.is_file() or not bundled_model_path("demo-diffusion-fast").is_file():
        pytest.skip("the bundled diffusion models are not installed")
    info = SimpleNamespace(path=str(demo), sha256=sha256_file(demo), family="diffusion")
    found = find_students(info)  # headers only: no weights loaded
    assert [s.source for s in found] == ["demo-diffusion-fast"]
    assert found[0].sampler == "ddim" and found[0].steps in (1, 2)


def test_generate_uses_the_distilled_steps_and_notes_other_steps(
        student: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import tifffile

    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "m.tif", make_layout("dense", (TILE, TILE), seed=2))
    common = ["--model", str(student), "--masks", str(masks), "--device", "cpu",
              "--precision", "fp32"]
    assert main(["generate", *common, "--out", str(tmp_path / "a")]) == 0
    record = json.loads((tmp_path / "a" / "generate.jsonl").read_text().splitlines()[0])
    assert (record["params"]["steps"], record["params"]["sampler"]) == (2, "ddim")
    capsys.readouterr()
    assert main(["generate", *common, "--out", str(tmp_path / "b"), "--steps", "3"]) == 0
    said = capsys.readouterr()
    shown = " ".join((said.out + said.err).split())  # the CLI wraps long lines
    assert "distilled for 2 ddim steps; running steps 3 as asked" in shown


def test_stop_and_resume_equals_an_uninterrupted_distillation(
        tmp_path: Path, isbi_small: Path, teacher: Path) -> None:
    kw = {"steps": 6, "distill_start_steps": 8, "distill_steps": 2}  # rounds at 0 and 3
    straight = list(train(_cfg(isbi_small, tmp_path / "a", teacher, **kw)))
    assert straight[-1]["reason"] == "completed"
    calls = iter(range(100))
    stopped = list(train(_cfg(isbi_small, tmp_path / "b", teacher, **kw),
                         stop=lambda: next(calls) >= 3))  # stops at the round boundary
    assert stopped[-1]["reason"] == "stopped" and stopped[-1]["step"] == 3
    resumed = list(train(_cfg(isbi_small, tmp_path / "b", teacher, **kw),
                         resume=tmp_path / "b"))
    assert resumed[0]["resumed_from"] == 3 and resumed[-1]["step"] == 6
    states = [torch.load(latest_checkpoint(tmp_path / r)[2], weights_only=True)["model"]
              for r in ("a", "b")]
    assert states[0]["round"] == states[1]["round"] == 1
    for key in ("unet", "teacher"):
        for name, value in states[0][key].items():
            assert torch.equal(value, states[1][key][name]), (key, name)
    for x, y in zip(states[0]["ema"]["shadow_params"], states[1]["ema"]["shadow_params"],
                    strict=True):
        assert torch.equal(x, y)
    assert states[0]["sched"] == states[1]["sched"]
    files = [load_model(tmp_path / r).network.state_dict() for r in ("a", "b")]
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])


def test_a_pix2pix_or_missing_teacher_and_bad_step_counts_are_refused(
        tmp_path: Path, isbi_small: Path, tiny_model: Path, teacher: Path,
        student: Path) -> None:
    with pytest.raises(ConfigError,
                       match=r"distill_from .* is a pix2pix model; it must be a diffusion"):
        _cfg(isbi_small, tmp_path / "p", tiny_model).validate()
    with pytest.raises(ConfigError, match=r"distill_from .* cannot be read: .*no such file"):
        _cfg(isbi_small, tmp_path / "m", tmp_path / "nothing.safetensors").validate()
    with pytest.raises(ConfigError, match="times a power of two"):
        _cfg(isbi_small, tmp_path / "s", teacher, distill_start_steps=12).validate()
    with pytest.raises(ConfigError, match="trained on 'onehot' masks"):
        _cfg(isbi_small, tmp_path / "e", teacher, encoding="rgb").validate()
    # a distilled teacher runs only its own steps: a round must start from them
    two = load_model(student).info.path
    with pytest.raises(ConfigError, match="itself distilled for 2 DDIM steps"):
        _cfg(isbi_small, tmp_path / "d", Path(two), distill_start_steps=4,
             distill_steps=1).validate()
    _cfg(isbi_small, tmp_path / "d", Path(two), distill_start_steps=2,
         distill_steps=1).validate()
    assert check_plan(32, 3) and not check_plan(32, 4, 3)
    assert check_plan(32, 4, 2)  # three rounds need three steps
    plan = DistillPlan(32, 4, 10)
    assert plan.bounds() == [0, 3, 6, 10] and plan.round_of(6) == 2
    assert [plan.student_steps(r) for r in range(3)] == [16, 8, 4]


def test_the_bundled_fast_name_is_known_and_says_how_to_make_it_when_missing() -> None:
    from napari_synthgen.sample_data import bundled_model_path, resolve_model_source

    path = bundled_model_path("demo-diffusion-fast")
    if path.is_file():
        model = load_model("demo-diffusion-fast")
        assert model.info.metadata["distilled"]["steps"] <= 4
        return
    with pytest.raises(FileNotFoundError, match=r"pack_diffusion_fast\.py"):
        resolve_model_source("demo-diffusion-fast")


@pytest.mark.gui
def test_the_synthesize_widget_opens_a_distilled_model_with_its_own_steps(
        make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from napari_synthgen.families.diffusion.files import save_diffusion
    from napari_synthgen.families.diffusion.networks import build_unet, make_spec
    from napari_synthgen.widgets._common import keep_triton_out

    keep_triton_out()
    torch.manual_seed(0)
    spec = make_spec("small", tile=32, block_out_channels=(8, 16), attention=(False, True),
                     attention_head_dim=8)
    net = build_unet(spec)
    plain = save_diffusion(tmp_path / "plain.safetensors", net, spec)
    fast = save_diffusion(tmp_path / "fast.safetensors", net, spec,
                          {"distilled": {"steps": 2, "sampler": "ddim", "rounds": 2}})
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-synthgen", "Synthesize")

    def use(model: Path) -> None:
        w.set_model(model)
        qtbot.waitUntil(lambda: w.model is not None and w.model.info.path == str(model),
                        timeout=20000)

    def shown() -> tuple[int, str, int]:
        return (w.family_fields["steps"].value, w.family_fields["sampler"].value,
                w.family_fields["start_tile"].value)

    use(fast)
    assert shown() == (2, "ddim", 80)  # its first step on tiles 2.5 model tiles wide
    use(plain)
    assert shown() == (20, "dpm", 0)  # fields left at a model's defaults follow the next model
    w.family_fields["steps"].value = 7
    use(fast)
    assert shown() == (7, "ddim", 80)  # the user's steps stay; the untouched ones follow


@pytest.fixture(scope="module")
def guided_teacher(isbi_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny diffusion model that learned the null condition (half its tiles without mask)."""
    out = tmp_path_factory.mktemp("guided") / "run"
    cfg = make_config(family="diffusion", data=[str(isbi_small)], out=str(out), steps=8,
                      tile=TILE, batch_size=4, device="cpu", precision="fp32", lr=2e-3,
                      warmup_steps=2, cond_dropout=0.5, overrides=dict(TINY),
                      checkpoint_every=100, sample_every=100, log_every=100, n_preview=1)
    events = list(train(cfg))
    assert events[-1]["event"] == "finished", events[-1]
    return Path(load_model(out).info.path)


def test_guided_distillation_bakes_the_teachers_guidance_into_the_student(
        tmp_path: Path, isbi_small: Path, guided_teacher: Path, teacher: Path) -> None:
    from napari_synthgen.encoding import encode_masks
    from napari_synthgen.families.diffusion.distill import DistillTrainer

    # by default the student learns what the teacher draws by default: guidance 3 for a
    # teacher that learned the null condition; the student itself runs unguided (1 call/step)
    out = tmp_path / "run"
    events = list(train(_cfg(isbi_small, out, guided_teacher, steps=4, distill_start_steps=4)))
    assert events[-1]["event"] == "finished", events[-1]
    student = load_model(out)
    rec = student.info.metadata["distilled"]
    assert rec["guidance"] == 3.0 and rec["teacher"]["guidance"] == 3.0
    assert DiffusionSynthesizer(student, device="cpu", precision="fp32").guidance == 1.0
    # the guided teacher step is the guided mix of its conditional and null steps (DDIM is
    # linear in the network's output), both halves run as one batch
    trainer = DistillTrainer(DiffusionConfig(tile=TILE, overrides=dict(TINY)),
                             load_diffusion(guided_teacher), CPU, "fp32", total_steps=4)
    assert trainer.guidance == 3.0
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1, TILE, TILE, generator=g)
    masks = torch.from_numpy(make_layout("dense", (TILE, TILE), seed=4)).long().repeat(2, 1, 1)
    cond = encode_masks(masks, trainer.lut)
    t, s = torch.tensor([750, 500]), torch.tensor([500, 250])
    with torch.no_grad():
        on = trainer._ddim(trainer.teacher, z, cond, t, s)
        off = trainer._ddim(trainer.teacher, z, torch.zeros_like(cond), t, s)
        guided = trainer._ddim(trainer.teacher, z, cond, t, s, 3.0)
    assert not torch.allclose(on, off, atol=1e-3)  # the mask matters to the teacher
    assert torch.allclose(guided, off + 3.0 * (on - off), atol=1e-4)
    # a weight is checked against the teacher: guidance needs the null condition
    _cfg(isbi_small, tmp_path / "w", guided_teacher, distill_guidance=2.0).validate()
    with pytest.raises(ConfigError, match="distill_guidance: guidance 3 needs a model that "
                                          "learned the null condition"):
        _cfg(isbi_small, tmp_path / "n", teacher, distill_guidance=3.0).validate()
    assert DistillTrainer(DiffusionConfig(tile=TILE, overrides=dict(TINY)),
                          load_diffusion(teacher), CPU, "fp32", total_steps=4).guidance == 1.0


def test_adversarial_distillation_trains_its_discriminator_records_it_and_resumes_exactly(
        tmp_path: Path, isbi_small: Path, teacher: Path) -> None:
    kw = {"steps": 4, "distill_start_steps": 2, "distill_steps": 1, "distill_adversarial": 0.5,
          "log_every": 1}
    straight = list(train(_cfg(isbi_small, tmp_path / "a", teacher, **kw)))
    assert straight[-1]["reason"] == "completed", straight[-1]
    steps = [e for e in straight if e["event"] == "progress"]
    assert steps and all({"mse", "adv", "adv_weight", "disc"} <= set(e["losses"]) for e in steps)
    assert all(e["losses"]["adv_weight"] > 0 for e in steps)  # the adaptive weight is live
    calls = iter(range(100))
    stopped = list(train(_cfg(isbi_small, tmp_path / "b", teacher, **kw),
                         stop=lambda: next(calls) >= 2))
    assert stopped[-1]["reason"] == "stopped" and stopped[-1]["step"] == 2
    list(train(_cfg(isbi_small, tmp_path / "b", teacher, **kw), resume=tmp_path / "b"))
    states = [torch.load(latest_checkpoint(tmp_path / r)[2], weights_only=True)["model"]
              for r in ("a", "b")]
    for key in ("unet", "disc"):
        for name, value in states[0][key].items():
            assert torch.equal(value, states[1][key][name]), (key, name)
    # the discriminator learned: its weights moved from the seeded start
    from napari_synthgen.families.diffusion.distill import DistillTrainer

    fresh = DistillTrainer(DiffusionConfig(tile=TILE, overrides=dict(TINY),
                                           distill_start_steps=2, distill_steps=1,
                                           distill_adversarial=0.5),
                           load_diffusion(teacher), CPU, "fp32", total_steps=4)
    assert fresh.disc is not None
    assert any(not torch.equal(v, states[0]["disc"][k])
               for k, v in fresh.disc.state_dict().items() if v.is_floating_point())
    rec = load_model(tmp_path / "a").info.metadata["distilled"]
    assert rec["adversarial"] == 0.5 and "PatchGAN" in rec["method"]
    # a plain run records 0 and trains no discriminator
    plain = DistillTrainer(DiffusionConfig(tile=TILE, overrides=dict(TINY)),
                           load_diffusion(teacher), CPU, "fp32", total_steps=4)
    assert plain.disc is None and plain.distilled_record()["adversarial"] == 0.0
    with pytest.raises(ConfigError, match="distill_adversarial must be 0 or more"):
        _cfg(isbi_small, tmp_path / "n", teacher, distill_adversarial=-1.0).validate()
    with pytest.raises(ConfigError, match="give the teacher with distill_from"):
        make_config(family="diffusion", data=[str(isbi_small)], out=str(tmp_path / "x"),
                    tile=TILE, distill_adversarial=0.5).validate()
