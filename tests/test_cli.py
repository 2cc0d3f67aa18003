"""The command line: inspect, generate, export, demo."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen import io, registry
from napari_synthgen.cli import main
from napari_synthgen.curation import ExportSession
from napari_synthgen.layouts import make_layout


def test_inspect_json_for_every_reference_fixture(reference_fixtures: Path, capsys) -> None:
    for name, netG, norm in (("unet256_batch_ngf8", "unet_256", "batch"),
                             ("resnet9_instance_ngf8", "resnet_9blocks", "instance")):
        assert main(["inspect", str(reference_fixtures / name), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        info = {**info, **info["details"]}  # pix2pix's own fields are the family's details
        assert {k: info[k] for k in ("family", "netG", "ngf", "norm", "input_nc", "output_nc",
                                     "encoding")} == {
            "family": "pix2pix", "netG": netG, "ngf": 8, "norm": norm, "input_nc": 3,
            "output_nc": 3, "encoding": "rgb"}
        assert info["params"] > 100_000
    assert info["dropout"] is False  # a ResNet shows whether it had dropout
    main(["inspect", str(reference_fixtures / "unet256_batch_ngf8"), "--json"])
    assert json.loads(capsys.readouterr().out)["details"]["dropout"] == "unknown"
    assert main(["inspect", str(reference_fixtures / "unet256_batch_ngf8")]) == 0
    text = capsys.readouterr().out
    assert "unet_256" in text and "note: dropout cannot be told" in text


def test_inspect_refuses_a_pickle_that_runs_code(tmp_path: Path, capsys) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "latest_net_G.pth"
    bad.write_bytes(pickle.dumps(Evil()))
    assert main(["inspect", str(bad)]) == 1
    assert "never" in capsys.readouterr().err.lower()
    assert not marker.exists()


def test_generate_skips_a_bad_mask_and_reports_it(tmp_path: Path, tiny_model: Path) -> None:
    masks = tmp_path / "masks"
    for i in range(2):
        io.write_mask(masks / f"good{i}.tif", make_layout("dense", (90, 120), seed=i))
    io.write_array(masks / "bad.tif", np.full((40, 40), 9, np.uint8))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_synthgen", "generate", "--model", str(tiny_model),
         "--masks", str(masks), "--out", str(out), "--seed", "7", "--variations", "2",
         "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1  # something failed...
    assert "bad.tif" in proc.stderr and "value 9" in proc.stderr
    assert "wrote 4 images, 2 failed" in proc.stdout  # ...but the others were written
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["good0_s7.tif", "good0_s8.tif", "good1_s7.tif", "good1_s8.tif"]
    image = io.read_image(out / "images" / "good0_s7.tif")
    assert image.dtype == np.uint8 and image.shape == (90, 120)
    np.testing.assert_array_equal(io.read_mask(out / "masks" / "good0_s7.tif"),
                                  io.read_mask(masks / "good0.tif"))
    # a second run does not overwrite unless asked
    assert main(["generate", "--model", str(tiny_model), "--masks", str(masks / "good0.tif"),
                 "--out", str(out), "--seed", "7", "--device", "cpu"]) == 0
    assert len(list((out / "images").iterdir())) == 4


def test_export_to_nnunet(tmp_path: Path, isbi_small: Path, capsys) -> None:
    with ExportSession(tmp_path / "export") as session:
        for s in range(3):
            mask = make_layout("dense", (64, 64), seed=s)
            session.accept((mask * 60).astype(np.uint8), mask, provenance={"seed": s})
    assert main(["export", "--from", str(tmp_path / "export"), "--nnunet", str(tmp_path / "nn"),
                 "--real", str(isbi_small), "--dataset-id", "7", "--name", "EM"]) == 0
    dataset = tmp_path / "nn" / "Dataset007_EM"
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 9 and len(meta["synthgen"]["synthetic_cases"]) == 3
    splits = json.loads((dataset / "splits_final.json").read_text())
    synthetic = set(meta["synthgen"]["synthetic_cases"])
    assert all(not synthetic & set(fold["val"]) for fold in splits)


@pytest.mark.gui
def test_demo_screenshot_shows_mask_colours_beside_em(tmp_path: Path) -> None:
    shot = tmp_path / "demo.png"
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "xcb")}
    proc = subprocess.run([sys.executable, "-m", "napari_synthgen", "demo", "--screenshot",
                           str(shot)], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    image = io.read_array(shot)[..., :3].astype(int)
    green = np.all(np.abs(image - (0, 255, 0)) < 40, axis=-1)
    red = np.all(np.abs(image - (255, 0, 0)) < 40, axis=-1)
    grey = (np.ptp(image, axis=-1) < 8) & (image[..., 0] > 40) & (image[..., 0] < 220)
    assert green.mean() > 0.02 and red.mean() > 0.005
    # an EM image (grey, textured) sits to the right of the coloured mask
    cols = np.nonzero(grey.sum(axis=0) > 0.3 * image.shape[0] * 0.2)[0]
    assert cols.size and np.median(cols) > np.median(np.nonzero(green)[1])


def test_demo_without_a_display_prints_the_headless_recipe(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "napari_synthgen", "demo", "--screenshot",
                           str(tmp_path / "demo.png")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]  # not 134 (Qt's abort)
    assert "No display found" in proc.stderr
    assert "xvfb-run -a napari-synthgen demo --screenshot demo.png" in proc.stderr
    assert not (tmp_path / "demo.png").exists()


_POLICY_PROBE = """
import json, os, sys
import napari_synthgen  # the package chooses PASSIVE before torch can load
chosen = os.environ.get("OMP_WAIT_POLICY")
from napari_synthgen.cli import main
assert main(["masks", "--layout", "dense", "--n", "1", "--size", "128", "128",
             "--out", sys.argv[1]]) == 0
print(json.dumps([chosen, os.environ.get("OMP_WAIT_POLICY")]))
"""


@pytest.mark.parametrize(("user", "expected"), [
    # threads sleep at once, in the viewer and in batch commands: a shared core stays usable
    ({}, ["PASSIVE", "PASSIVE"]),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, ["PASSIVE", "PASSIVE"]),  # the user's value stays
    ({"OMP_WAIT_POLICY": "ACTIVE"}, ["ACTIVE", "ACTIVE"]),
    ({"GOMP_SPINCOUNT": "300000"}, [None, None]),  # a spin count of the user's: left alone
])
def test_commands_choose_openmp_waiting_before_torch_loads(
        tmp_path: Path, user: dict[str, str], expected: list) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | user
    proc = subprocess.run([sys.executable, "-c", _POLICY_PROBE, str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected
    assert len(list((tmp_path / "m").glob("*.tif"))) == 1


# ----------------------------------------------------------------------------- damaged files


def _damaged_pairs(root: Path, isbi_small: Path, *, damage: str = "masks") -> Path:
    """Two pairs from isbi_small written as deflate TIFF (what `masks` writes), the second
    one's ``damage`` file cut in half: a copy interrupted half-way."""
    pairs = io.find_pairs(isbi_small)[:2]
    for pair in pairs:
        io.write_image(root / "images" / f"{pair.stem}.tif", io.read_image(pair.image))
        io.write_mask(root / "masks" / f"{pair.stem}.tif", io.read_mask(pair.mask))
    cut = root / damage / f"{pairs[1].stem}.tif"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return cut


def _says_damaged(code: int, capsys, cut: Path, expected: int = 2) -> None:
    captured = capsys.readouterr()
    err = captured.err if expected == 2 else captured.out + captured.err  # train: stdout
    assert code == expected, err
    assert str(cut) in err and "damaged or truncated" in err and "intact copy" in err
    assert "Traceback" not in err and "zlib" not in err.split(str(cut))[0]


def test_a_damaged_tiff_stops_masks_report_evaluate_export_with_a_clear_message(
        tmp_path: Path, isbi_small: Path, capsys) -> None:
    data = tmp_path / "data"
    cut = _damaged_pairs(data, isbi_small)
    code = main(["masks", "--variations-of", str(data), "--n", "1", "--out",
                 str(tmp_path / "variations")])
    _says_damaged(code, capsys, cut)
    code = main(["report", "--samples", str(data), "--reference", str(isbi_small), "--out",
                 str(tmp_path / "report"), "--consistency-steps", "0"])
    _says_damaged(code, capsys, cut)
    code = main(["evaluate", "--real", str(isbi_small), "--synthetic", str(data), "--test",
                 str(data), "--steps", "1", "--seeds", "1", "--out", str(tmp_path / "ev")])
    _says_damaged(code, capsys, cut)
    with ExportSession(tmp_path / "export") as session:
        mask = make_layout("dense", (64, 64), seed=0)
        session.accept((mask * 60).astype(np.uint8), mask, provenance={"seed": 0})
    real = tmp_path / "real"
    cut_image = _damaged_pairs(real, isbi_small, damage="images")
    code = main(["export", "--from", str(tmp_path / "export"), "--nnunet", str(tmp_path / "nn"),
                 "--real", str(real)])
    _says_damaged(code, capsys, cut_image)


def test_train_names_a_damaged_file(tmp_path: Path, isbi_small: Path, capsys) -> None:
    data = tmp_path / "data"
    cut = _damaged_pairs(data, isbi_small)
    code = main(["train", "--data", str(data), "--steps", "1", "--out", str(tmp_path / "run")])
    _says_damaged(code, capsys, cut, expected=1)


# ----------------------------------------------------------------------------- limits

_GEN = ["generate", "--model", "demo", "--masks", "m", "--out", "o"]
_EVAL = ["evaluate", "--real", "r", "--synthetic", "s", "--test", "t"]


@pytest.mark.parametrize(("argv", "flag", "allowed"), [
    ([*_GEN, "--seed", "-1"], "--seed", "in [0, 4294967295]"),
    ([*_GEN, "--seed", "4294967296"], "--seed", "in [0, 4294967295]"),  # was seed 0
    ([*_GEN, "--tile", "0"], "--tile", ">= 1"),
    ([*_GEN, "--batch-size", "0"], "--batch-size", ">= 1"),
    ([*_GEN, "--overlap", "-2"], "--overlap", ">= 0"),
    (["masks", "--layout", "dense", "--n", "1", "--size", "64", "64", "--out", "o", "--seed",
      "4294967296"], "--seed", "in [0, 4294967295]"),
    ([*_EVAL, "--tolerance", "-5"], "--tolerance", "> 0"),  # was boundary F1 0
    ([*_EVAL, "--tolerance", "nan"], "--tolerance", "> 0"),
    ([*_EVAL, "--crop", "4"], "--crop", ">= 8"),
    ([*_EVAL, "--mix", "1"], "--mix", "in (0, 1)"),
    (["report", "--samples", "s", "--reference", "r", "--out", "o", "--consistency-steps",
      "-1"], "--consistency-steps", ">= 0"),
    (["train", "--data", "d", "--steps", "10", "--nice", "30"], "--nice", "in [-20, 19]"),
    (["train", "--data", "d", "--steps", "0"], "--steps", ">= 1"),
    (["train", "--data", "d", "--steps", "1", "--seed", "-1"], "--seed", "in [0, 4294967295]"),
    (["train", "--data", "d", "--steps", "1", "--val-fraction", "1"], "--val-fraction",
     "in [0, 1)"),
    (["train", "--data", "d", "--steps", "1", "--lr", "0"], "--lr", "> 0"),
    (["export", "--from", "e", "--nnunet", "n", "--dataset-id", "1000"], "--dataset-id",
     "in [1, 999]"),
])
def test_numbers_out_of_range_are_refused_naming_flag_value_and_range(
        argv: list[str], flag: str, allowed: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be {allowed}; got {argv[argv.index(flag) + 1]}" in err


def test_listed_choices_are_enforced_and_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--data", "d", "--steps", "1", "--precision", "fp64"])
    assert "argument --precision: invalid choice: 'fp64'" in capsys.readouterr().err
    for command, shown in (("train", ["(default: 256)", "(default: pix2pix)",
                                      "(--steps N | --epochs N)", "one required"]),
                           ("generate", ["(default: 0)", "(default: auto)"]),
                           ("evaluate", ["(default: 2.0)", "(default: 150)"]),
                           ("masks", ["(default: 0)"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert all(s in out for s in shown), (command, out)
        assert "(default: None)" not in out


@pytest.fixture
def eight_gb(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with 8 GB free, whatever runs the tests."""
    from napari_synthgen import limits

    monkeypatch.setattr(limits, "free_memory", lambda device=None: 8 * limits.GB)


def test_impossible_requests_fail_at_once_saying_what_fits(
        tmp_path: Path, tiny_model: Path, isbi_small: Path, eight_gb: None, capsys) -> None:
    """Each estimate is the documented formula of napari_synthgen.limits; the advice is the
    largest value whose estimate fits in the usable share of what is free."""
    from napari_synthgen import limits

    budget = 8 * limits.GB * limits.USABLE_SHARE
    side = math.isqrt(int(budget / limits.LAYOUT_BYTES_PER_PX))
    tile = math.isqrt(int(budget / limits.SYNTH_BYTES_PER_PX))
    crop = math.isqrt(int(budget / (4 * limits.SEGMENTER_BYTES_PER_PX)))
    batch = int(budget // (256 * 256 * registry.get("pix2pix").train_bytes_per_px))
    masks = tmp_path / "masks"
    io.write_mask(masks / "a.tif", make_layout("dense", (64, 64), seed=1))
    cases = [
        (["masks", "--layout", "dense", "--n", "1", "--size", "100000", "100000"],
         "a 100000 x 100000 mask needs about", f"--size {side} {side}", "err"),
        (["generate", "--model", str(tiny_model), "--masks", str(masks), "--tile", "8192"],
         "synthesis with --tile 8192 and one tile at a time needs about",
         f"use at most --tile {tile}.", "err"),
        (["evaluate", "--real", str(isbi_small), "--synthetic", str(isbi_small), "--test",
          str(isbi_small), "--crop", "100000"],
         "a batch of 4 crops of 100000 px needs about", f"use at most --crop {crop}.", "err"),
        (["train", "--data", str(isbi_small), "--steps", "1", "--batch-size", "100000"],
         "training with --batch-size 100000 at tile 256 needs about",
         f"use at most --batch-size {batch}.", "out"),
    ]
    for i, (argv, need, fits, stream) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main([*argv, "--out", str(out)]) == 1
        text = getattr(capsys.readouterr(), stream)
        assert need in text and "GB, this machine has 8.0 GB free" in text and fits in text, text
        assert not out.exists()  # refused before any work


# ----------------------------------------------------------------------------- curate


def test_readme_flow_masks_generate_curate_export(tmp_path: Path, tiny_model: Path,
                                                  isbi_small: Path, capsys) -> None:
    """masks -> generate -> curate (by score, resumable) -> export, all from the CLI."""
    masks, gen, cur = tmp_path / "masks", tmp_path / "gen", tmp_path / "curated"
    assert main(["masks", "--layout", "dense", "--n", "3", "--size", "64", "64",
                 "--out", str(masks)]) == 0
    assert main(["generate", "--model", str(tiny_model), "--masks", str(masks),
                 "--out", str(gen), "--device", "cpu", "--precision", "fp32"]) == 0
    capsys.readouterr()
    # the tiny model records no training statistics: a score threshold needs real pairs
    assert main(["curate", str(gen), "--out", str(cur), "--min-score", "0.5"]) == 1
    assert "--min-score needs a reference" in capsys.readouterr().err
    assert not cur.exists()
    # scored against real pairs: the threshold splits the set as the scores say
    assert main(["curate", str(gen), "--out", str(cur), "--min-score", "0.5",
                 "--reference", str(isbi_small)]) == 0
    session = ExportSession(cur)
    records = [session.record(i) for i in session.accepted + session.rejected]
    session.close()
    assert len(records) == 3
    assert all((r["decision"] == "accept") == (r["quality"]["score"] >= 0.5) for r in records)
    assert all(r["provenance"]["seed"] == 0 and r["provenance"]["model"] for r in records)
    first = capsys.readouterr().out
    assert "(reference: " in first
    # a second run resumes: nothing decided twice
    assert main(["curate", str(gen), "--out", str(cur), "--min-score", "0.5",
                 "--reference", str(isbi_small)]) == 0
    assert "skipped 3 already decided" in capsys.readouterr().out
    # accept-all into a new folder, then the README's export
    everything = tmp_path / "all"
    assert main(["curate", str(gen), "--out", str(everything)]) == 0
    assert "accepted 3, rejected 0" in capsys.readouterr().out
    assert main(["export", "--from", str(everything), "--nnunet", str(tmp_path / "nnunet"),
                 "--real", str(isbi_small)]) == 0
    dataset = next((tmp_path / "nnunet").iterdir())
    assert len(list((dataset / "imagesTr").iterdir())) >= 3


def test_progress_is_log_lines_when_stderr_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    """A log file (SLURM --output, | tee) gets one line per few seconds, not a redrawn bar."""
    import io as stdio

    from napari_synthgen.progress import LogLines

    assert main(["masks", "--layout", "dense", "--n", "2", "--size", "64", "64",
                 "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "masks (dense): 2/2 mask (100%)" in err and "\r" not in err
    sink = stdio.StringIO()
    lines = LogLines(4, "train", "step", file=sink, every=0)
    lines.update(1)
    lines.set_postfix(loss="0.5")
    lines.update(3)
    lines.close()  # the last count was printed already: nothing more
    assert sink.getvalue().splitlines() == [
        "train: 1/4 step (25%), 0 s", "train: 4/4 step (100%), 0 s, loss 0.5"]


def test_train_length_may_come_from_the_config_file(tmp_path: Path) -> None:
    """--steps/--epochs is required, but a --config file may be where it is given."""
    from napari_synthgen.cli import build_parser
    from napari_synthgen.training.cli import config_from_args

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("data: [d]\nepochs: 3\n", encoding="utf-8")
    args = build_parser().parse_args(["train", "--config", str(cfg_file)])
    cfg = config_from_args(args)
    assert (cfg.steps, cfg.epochs) == (None, 3)
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(cfg_file),
                                                      "--steps", "7"]))
    assert (cfg.steps, cfg.epochs) == (7, None)  # the command line wins
