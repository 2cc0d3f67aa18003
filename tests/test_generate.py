"""``napari-synthgen generate``: torchrun shares, classes a model never saw, --model demo, and
error messages that name only flags generate has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen import io
from napari_synthgen.cli import cli_message, main
from napari_synthgen.layouts import make_layout
from napari_synthgen.masks import MaskError, class_record, coerce_mask, validate_mask

VENV_BIN = Path(sys.executable).parent


def _tiny(path: Path, *, classes: list[float] | None, netG: str = "unet_128",
          dropout: bool = True) -> Path:
    """A tiny real U-Net (dropout for seeded variations) with or without a class record."""
    import torch

    from napari_synthgen.families.pix2pix.files import save_model
    from napari_synthgen.families.pix2pix.networks import GeneratorSpec, build_generator

    torch.manual_seed(0)
    spec = GeneratorSpec(netG=netG, input_nc=3, output_nc=1, ngf=4, norm="batch",
                         dropout=dropout)
    meta = None if classes is None else {"classes": class_record(classes)}
    return save_model(path, build_generator(spec, init_gain=0.2), spec, encoding="rgb",
                      tile=128, metadata=meta)


@pytest.fixture(scope="module")
def no_background_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained (as its record says) on interior and boundary only, like ISBI."""
    return _tiny(tmp_path_factory.mktemp("m") / "isbi_like.safetensors", classes=[0, 0.75, 0.25])


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 64 x 64 masks; only the second (rank 1 of 2 under torchrun) holds background."""
    root = tmp_path_factory.mktemp("masks")
    io.write_mask(root / "a_dense.tif", make_layout("dense", (64, 64), seed=1))
    io.write_mask(root / "b_sparse.tif", make_layout("sparse", (64, 64), seed=2))
    io.write_mask(root / "c_dense.tif", make_layout("dense", (64, 72), seed=3))
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _images(folder: Path) -> dict[str, bytes]:
    return {f"{sub}/{p.name}": p.read_bytes()
            for sub in ("images", "masks") for p in sorted((folder / sub).iterdir())}


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "generate.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- torchrun


def test_generate_under_torchrun_equals_one_process(tmp_path: Path, mask_folder: Path,
                                                    no_background_model: Path) -> None:
    args = ["generate", "--model", str(no_background_model), "--masks", str(mask_folder),
            "--seed", "5", "--variations", "2", "--device", "cpu", "--precision", "fp32"]
    one = subprocess.run([sys.executable, "-m", "napari_synthgen", *args,
                          "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2",
                          "-m", "napari_synthgen", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=240, env=_env())
    assert two.returncode == 0, two.stderr[-3000:]
    # every image and mask, byte for byte; stochastic variations differ from each other
    ref, got = _images(tmp_path / "one"), _images(tmp_path / "two")
    assert len(ref) == 12 and got == ref
    assert ref["images/a_dense_s5.tif"] != ref["images/a_dense_s6.tif"]
    # one provenance log in one-process order, written by both ranks; no part files left
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "generate.jsonl", "images", "masks"]
    log_one, log_two = _log(tmp_path / "one"), _log(tmp_path / "two")
    key = [(r.get("image"), r.get("warning")) for r in log_one]
    assert [(r.get("image"), r.get("warning")) for r in log_two] == key
    assert len(log_two) == 7 and {r.get("rank") for r in log_two if "image" in r} == {0, 1}
    # the summary counts both ranks' images, once; the warning (from rank 1's mask) once
    assert "wrote 6 images" in two.stdout and two.stdout.count("wrote") == 1
    assert two.stderr.count("warning:") == 1 and "background (0)" in two.stderr


# ----------------------------------------------------------------------------- classes


def test_unseen_class_warned_once_and_recorded(tmp_path: Path, mask_folder: Path,
                                               no_background_model: Path) -> None:
    masks = tmp_path / "masks"
    for i in range(3):  # several masks with background: still one warning
        io.write_mask(masks / f"org{i}.tif", make_layout("sparse", (48, 48), seed=i))
    proc = subprocess.run(
        [sys.executable, "-m", "napari_synthgen", "generate", "--model",
         str(no_background_model), "--masks", str(masks), "--out", str(tmp_path / "out"),
         "--device", "cpu"], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning:") == 1
    line = next(s for s in proc.stderr.splitlines() if s.startswith("warning:"))
    assert "background (0)" in line and "never saw" in line and "isbi_like" in line
    warnings = [r for r in _log(tmp_path / "out") if "warning" in r]
    assert len(warnings) == 1 and warnings[0]["classes"] == [0]
    images = [r for r in _log(tmp_path / "out") if "image" in r]
    assert len(images) == 3 and images[0]["model_classes"] == {"0": 0.0, "1": 0.75, "2": 0.25}


def test_no_warning_for_classes_the_model_knows(tmp_path: Path, mask_folder: Path,
                                                no_background_model: Path, capsys) -> None:
    assert main(["generate", "--model", str(no_background_model), "--masks",
                 str(mask_folder / "a_dense.tif"), "--out", str(tmp_path), "--device",
                 "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "unknown" not in err


def test_unknown_record_is_said_once(tmp_path: Path, mask_folder: Path, tiny_model: Path,
                                     capsys) -> None:
    assert main(["generate", "--model", str(tiny_model), "--masks", str(mask_folder),
                 "--out", str(tmp_path), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: which classes tiny.safetensors was trained on is unknown") == 1
    assert "warning" not in err


def test_inspect_shows_the_classes(no_background_model: Path, tiny_model: Path,
                                   reference_fixtures: Path, capsys) -> None:
    assert main(["inspect", str(no_background_model)]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if "classes" in s)
    assert "background 0%, interior 75%, boundary 25% (never saw: background)" in line
    assert main(["inspect", str(no_background_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == {"0": 0.0, "1": 0.75, "2": 0.25}
    for model in (tiny_model, reference_fixtures / "unet256_batch_ngf8"):
        assert main(["inspect", str(model)]) == 0
        line = next(s for s in capsys.readouterr().out.splitlines() if "classes" in s)
        assert "unknown" in line


# ----------------------------------------------------------------------------- --model demo


def test_model_demo_in_generate_and_inspect(tmp_path: Path, capsys) -> None:
    from napari_synthgen.sample_data import demo_model_path

    io.write_mask(tmp_path / "m" / "cells.tif", make_layout("dense", (64, 64), seed=0))
    io.write_mask(tmp_path / "m" / "organelles.tif", make_layout("sparse", (64, 64), seed=0))
    assert main(["generate", "--model", "demo", "--masks", str(tmp_path / "m"), "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "wrote 2 images" in out
    records = [r for r in _log(tmp_path / "out") if "image" in r]
    assert {r["model"] for r in records} == {str(demo_model_path())}
    image = io.read_image(tmp_path / "out" / "images" / "cells_s0.tif")
    assert image.shape == (64, 64) and image.std() > 5
    # the demo model saw background (unlabelled cells, --unlabel-fraction): no warning for
    # the organelles' background
    assert "warning:" not in err
    assert main(["inspect", "demo"]) == 0
    text = capsys.readouterr().out
    assert "unet_256" in text and "background 0%" not in text and "never saw" not in text
    assert "demo" in main_help("generate") and "demo" in main_help("inspect")


def main_help(command: str) -> str:
    from napari_synthgen.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()


# ----------------------------------------------------------------------------- messages


def _python_errors() -> list[str]:
    """Every mask error that names a Python function or argument, as Python callers see it."""
    labels = np.zeros((40, 40), np.int32)
    labels[2:10, 2:10], labels[12:20, 2:10], labels[22:30, 2:10] = 1, 5, 9
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 1] = 250
    attempts = [lambda: validate_mask(np.eye(8, dtype=bool)),
                lambda: validate_mask(np.ones((8, 8), np.float32)),
                lambda: validate_mask((np.eye(8) * 255).astype(np.uint8)),
                lambda: validate_mask(labels),
                lambda: coerce_mask(np.ones((8, 8), np.float32)),
                lambda: coerce_mask(rgb),
                lambda: coerce_mask(labels, "instances", boundary_width=0)]
    messages = []
    for attempt in attempts:
        with pytest.raises(MaskError) as exc:
            attempt()
        messages.append(str(exc.value))
    return messages


def test_python_callers_see_python_names_the_cli_sees_flags() -> None:
    messages = _python_errors()
    joined = " ".join(messages)
    assert "coerce_mask(" in joined and "allow_float=True" in joined and "--" not in joined
    for message in messages:
        cli = cli_message(message)
        for python_name in ("coerce_mask", "allow_float", "source=", "tolerance=",
                            "boundary_width"):
            assert python_name not in cli, cli
    cli = [cli_message(m) for m in messages]
    assert "--read-as binary" in cli[0] and "--read-as membrane" in cli[0]
    assert "--allow-float" in cli[1] and "--allow-float" in cli[4]
    assert "--read-as instances" in cli[3] and "--boundary-width" in cli[6]


def test_generate_errors_name_its_flags_and_the_flags_work(tmp_path: Path, tiny_model: Path,
                                                           capsys) -> None:
    labels = np.zeros((48, 48), np.uint16)
    labels[4:20, 4:20], labels[24:44, 6:40], labels[4:20, 26:44] = 2, 6, 9
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "floats.tif", make_layout("dense", (48, 48)).astype(np.float32))
    common = ["generate", "--model", str(tiny_model), "--out", str(tmp_path / "out"),
              "--device", "cpu"]
    assert main([*common, "--masks", str(tmp_path / "labels.tif")]) == 1
    err = capsys.readouterr().err
    assert "--read-as instances" in err and "coerce_mask" not in err
    assert main([*common, "--masks", str(tmp_path / "labels.tif"), "--read-as", "instances",
                 "--boundary-width", "2"]) == 0
    assert main([*common, "--masks", str(tmp_path / "floats.tif")]) == 1
    err = capsys.readouterr().err
    assert "--allow-float" in err and "allow_float" not in err
    assert main([*common, "--masks", str(tmp_path / "floats.tif"), "--allow-float"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "floats_s0.tif", "labels_s0.tif"]
    with pytest.raises(SystemExit) as exc:
        main([*common, "--masks", str(tmp_path / "labels.tif"), "--variations", "0"])
    assert exc.value.code == 2 and "--variations" in capsys.readouterr().err


def test_provenance_of_a_run_stopped_before_the_merge_is_still_read(tmp_path: Path) -> None:
    from napari_synthgen.generate import read_provenance

    merged = {"image": "images/a_s0.tif", "seed": 0}
    left = {"image": "images/b_s0.tif", "seed": 0, "_order": [1, 0]}
    (tmp_path / "generate.jsonl").write_text(json.dumps(merged) + "\n")
    (tmp_path / "generate.part1.jsonl").write_text(
        json.dumps({"warning": "unseen_classes", "classes": [0], "_order": [1, -1]}) + "\n"
        + json.dumps(left) + "\n")
    records = read_provenance(tmp_path)
    assert records == {"images/a_s0.tif": merged,
                       "images/b_s0.tif": {"image": "images/b_s0.tif", "seed": 0}}


# ----------------------------------------------------------------------------- nothing lost


def _generate(masks: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["generate", "--model", str(model), "--masks", str(masks), "--out", str(out),
                 "--device", "cpu", "--variations", "2", *extra])


def test_a_killed_run_rerun_ends_with_complete_pairs_logged_once(
        tmp_path: Path, mask_folder: Path, tiny_unet: Path) -> None:
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert _generate(mask_folder, reference, tiny_unet) == 0
    assert _generate(mask_folder, out, tiny_unet) == 0
    # what runs killed at various moments leave (the log records a pair after both renames):
    # a pair whose image rename never came (mask only), an image without its mask, a
    # half-written image, stale temporaries of a write, a complete pair killed before its
    # log line, a half-written log line
    (out / "images" / "a_dense_s0.tif").unlink()
    (out / "masks" / "b_sparse_s1.tif").unlink()
    cut = out / "images" / "c_dense_s0.tif"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (out / "images" / ".c_dense_s1.tif.abc123.tmp").write_bytes(b"half")
    (out / "masks" / ".c_dense_s1.tif.def456.tmp").write_bytes(b"half")
    unfinished = {"images/a_dense_s0.tif", "images/b_sparse_s1.tif", "images/c_dense_s0.tif",
                  "images/b_sparse_s0.tif"}
    lines = (out / "generate.jsonl").read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if json.loads(ln).get("image") not in unfinished]
    (out / "generate.jsonl").write_text("".join(kept) + '{"image": "images/b_sparse_s0')
    assert _generate(mask_folder, out, tiny_unet) == 0
    assert _images(out) == _images(reference)  # every pair complete, same bytes
    assert not [p for sub in ("images", "masks") for p in (out / sub).iterdir()
                if p.name.startswith(".")]
    images = [r["image"] for r in _log(out) if "image" in r]
    assert sorted(images) == sorted(f"images/{n}" for n in
                                    (p.name for p in (reference / "images").iterdir()))
    redone = {r["image"] for r in _log(out) if r.get("redone")}
    assert redone == unfinished
    # a pair damaged after it was logged is redone too; the newest record describes it
    (out / "masks" / "a_dense_s1.tif").write_bytes(b"")
    assert _generate(mask_folder, out, tiny_unet) == 0
    assert _images(out) == _images(reference)
    from napari_synthgen.generate import read_provenance

    assert read_provenance(out)["images/a_dense_s1.tif"].get("redone")


def test_a_pair_is_written_both_or_neither(tmp_path: Path, monkeypatch) -> None:
    mask = make_layout("dense", (32, 32), seed=0)
    real_encode = io._encode

    def fail_on_mask(tmp: Path, array: np.ndarray, dest: Path, **options) -> None:
        if dest.parent.name == "masks":
            raise OSError("simulated failure writing the mask")
        real_encode(tmp, array, dest, **options)

    monkeypatch.setattr(io, "_encode", fail_on_mask)
    with pytest.raises(OSError, match="simulated"):
        io.write_pair(tmp_path / "images" / "a.tif", (mask * 80).astype(np.uint8),
                      tmp_path / "masks" / "a.tif", mask)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_masks_differing_only_by_extension_are_refused(tmp_path: Path, tiny_unet: Path,
                                                       capsys) -> None:
    masks = tmp_path / "masks"
    io.write_mask(masks / "a.tif", make_layout("dense", (32, 32), seed=0))
    io.write_mask(masks / "a.png", make_layout("dense", (32, 32), seed=1))
    io.write_mask(masks / "b.tif", make_layout("dense", (32, 32), seed=2))
    assert _generate(masks, tmp_path / "out", tiny_unet) == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "a.tif" in err and "same file names" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_truncated_mask_is_reported_and_the_rest_written(tmp_path: Path, mask_folder: Path,
                                                           tiny_unet: Path, capsys) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in mask_folder.iterdir():
        (masks / p.name).write_bytes(p.read_bytes())
    cut = masks / "b_sparse.tif"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    out = tmp_path / "out"
    assert _generate(masks, out, tiny_unet) == 1
    captured = capsys.readouterr()
    assert "wrote 4 images, 2 failed" in captured.out
    assert "Traceback" not in captured.err
    tail = captured.err[captured.err.rindex("input file"):]
    assert str(cut) in tail and "damaged or truncated" in tail
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "a_dense_s0.tif", "a_dense_s1.tif", "c_dense_s0.tif", "c_dense_s1.tif"]
    failures = [r for r in _log(out) if "failed" in r]
    assert [r["source_mask"] for r in failures] == [str(cut)]


def test_generated_files_follow_the_umask(tmp_path: Path, mask_folder: Path,
                                          tiny_unet: Path) -> None:
    old = os.umask(0o022)
    try:
        assert _generate(mask_folder / "a_dense.tif", tmp_path / "out", tiny_unet) == 0
    finally:
        os.umask(old)
    files = [p for sub in ("images", "masks") for p in (tmp_path / "out" / sub).iterdir()]
    assert files and all(p.stat().st_mode & 0o777 == 0o644 for p in files)


# ----------------------------------------------------------------------------- limits


def test_the_largest_seed_is_kept_and_seeds_past_it_are_refused(
        tmp_path: Path, mask_folder: Path, no_background_model: Path, capsys) -> None:
    from napari_synthgen.generate import GenerateJob, check_job
    from napari_synthgen.limits import SEED_MAX, LimitError

    base = ["generate", "--model", str(no_background_model), "--masks",
            str(mask_folder / "a_dense.tif"), "--device", "cpu", "--precision", "fp32",
            "--stochastic"]  # dropout noise drawn from the seed
    assert main([*base, "--out", str(tmp_path / "max"), "--seed", str(SEED_MAX)]) == 0
    assert main([*base, "--out", str(tmp_path / "zero"), "--seed", "0"]) == 0
    assert [r["seed"] for r in _log(tmp_path / "max")] == [SEED_MAX]
    # no wrap-around: the largest seed is its own image, not seed 0's (or -1's)
    assert _images(tmp_path / "max")["images/a_dense_s4294967295.tif"] != \
        _images(tmp_path / "zero")["images/a_dense_s0.tif"]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "over"), "--seed", str(SEED_MAX),
                 "--variations", "2"]) == 1
    assert "--seed 4294967295 with 2 variations reaches seed 4294967296" in \
        capsys.readouterr().err
    assert not (tmp_path / "over").exists()
    with pytest.raises(LimitError, match=r"seed must be in \[0, 4294967295\].*got -1"):
        check_job(GenerateJob(model=no_background_model, masks=[], out=tmp_path, seed=-1))
    with pytest.raises(LimitError, match=r"overlap must be in \[0, 64\).*got 64"):
        check_job(GenerateJob(model=no_background_model, masks=[], out=tmp_path, tile=64,
                              overlap=64))


def test_an_encoding_override_against_the_models_record_is_refused(
        tmp_path: Path, mask_folder: Path, no_background_model: Path, capsys) -> None:
    """The model records 'rgb': 'onehot' would give an image without membranes, silently."""
    out = tmp_path / "out"
    assert main(["generate", "--model", str(no_background_model), "--masks", str(mask_folder),
                 "--out", str(out), "--encoding", "onehot", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "trained on 'rgb' masks" in err and "cannot take 'onehot'" in err
    assert not (out / "images").exists() or not any((out / "images").iterdir())
    # the recorded encoding itself is fine
    assert main(["generate", "--model", str(no_background_model), "--masks",
                 str(mask_folder / "a_dense.tif"), "--out", str(out), "--encoding", "rgb",
                 "--device", "cpu"]) == 0


def test_a_stack_mask_gives_a_stack_image_with_its_spacing(tmp_path: Path,
                                                           tiny_model: Path) -> None:
    from napari_synthgen.layout_stacks import layout_stack

    stack = layout_stack("dense", (3, 48, 56), seed=4)  # three slices: once misread as RGB
    io.write_mask(tmp_path / "vol.tif", stack, spacing=(50.0, 4.0, 4.0))
    assert main(["generate", "--model", str(tiny_model), "--masks", str(tmp_path / "vol.tif"),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    image_path = tmp_path / "out" / "images" / "vol_s0.tif"
    image = io.read_image(image_path)
    assert image.shape == (3, 48, 56)
    assert io.read_spacing(image_path) == (50.0, 4.0, 4.0)
    with tifffile.TiffFile(image_path) as tif:  # Fiji and napari see a z-stack, not colour
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
    np.testing.assert_array_equal(io.read_mask(tmp_path / "out" / "masks" / "vol_s0.tif"), stack)
    assert io.read_spacing(tmp_path / "out" / "masks" / "vol_s0.tif") == (50.0, 4.0, 4.0)


# ----------------------------------------------------------------------------- noise


def test_every_mask_gets_its_own_noise_unless_the_seed_alone_is_asked_for(
        tmp_path: Path) -> None:
    """A training set generated with one seed: each mask its own tissue (noise "mask"); the
    same mask and seed the same image; noise "seed" keeps one noise for masks that differ by
    a stroke, so their images differ only near it."""
    import numpy as np
    import tifffile
    import torch

    from napari_synthgen.families.diffusion.files import save_diffusion
    from napari_synthgen.families.diffusion.networks import build_unet, make_spec
    from napari_synthgen.generate import noise_seed

    torch.manual_seed(0)
    spec = make_spec("small", tile=32, block_out_channels=(8, 16), attention=(False, False),
                     attention_head_dim=8)
    model = save_diffusion(tmp_path / "d.safetensors", build_unet(spec), spec,
                           {"classes": {"0": 0.1, "1": 0.6, "2": 0.3}})
    masks = tmp_path / "masks"
    masks.mkdir()
    base = make_layout("dense", (32, 64), seed=1)
    stroke = base.copy()
    stroke[2:6, 56:62] = 2  # a stroke in the right half
    io.write_mask(masks / "a.tif", base)
    io.write_mask(masks / "a_copy.tif", base)
    io.write_mask(masks / "b_stroke.tif", stroke)

    def run(noise: str) -> dict[str, np.ndarray]:
        out = tmp_path / noise
        args = ["generate", "--model", str(model), "--masks", str(masks), "--out", str(out),
                "--seed", "3", "--steps", "3", "--device", "cpu", "--precision", "fp32",
                "--fusion", "shifted", "--noise", noise]
        assert main(args) == 0
        return {r["image"]: tifffile.imread(out / r["image"]).astype(float)
                for r in _log(out) if "image" in r}

    own = run("mask")
    assert np.array_equal(own["images/a_s3.tif"], own["images/a_copy_s3.tif"])
    left = (slice(None), slice(0, 24))  # far from the stroke
    own_gap = np.abs(own["images/a_s3.tif"] - own["images/b_stroke_s3.tif"])[left].mean()
    shared = run("seed")
    shared_gap = np.abs(shared["images/a_s3.tif"] - shared["images/b_stroke_s3.tif"])[left].mean()
    assert own_gap > 10 * max(shared_gap, 0.1), (own_gap, shared_gap)
    log = {r["image"]: r for r in _log(tmp_path / "mask") if "image" in r}
    rec = log["images/b_stroke_s3.tif"]
    assert rec["seed"] == 3 and rec["noise"] == "mask"
    assert rec["noise_seed"] == noise_seed(3, rec["source_mask_sha256"])
    assert all(r["noise_seed"] == 3 for r in _log(tmp_path / "seed") if "image" in r)
