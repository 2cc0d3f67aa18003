"""The command line: inspect, generate, export, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_synthgen import io
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
    (None, ["PASSIVE", None]),           # a batch command gets OpenMP's default waiting back
    ("PASSIVE", ["PASSIVE", "PASSIVE"]),  # the user's (or the Train widget's child's) value stays
    ("ACTIVE", ["ACTIVE", "ACTIVE"]),
])
def test_batch_commands_choose_openmp_waiting_before_torch_loads(
        tmp_path: Path, user: str | None, expected: list) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user is not None:
        env["OMP_WAIT_POLICY"] = user
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
