"""Organelle masks saved as 0/255 (the usual binary form) through the whole CLI: `train`,
`generate`, `evaluate` and `report` refuse them with the flag to use, and read them with
`--read-as binary` (objects become interior with a boundary ring, the rest class 0), recording
how in what they write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from napari_synthgen.cli import main
from napari_synthgen.cli_wording import read_as_wording
from napari_synthgen.masks import coerce_mask
from napari_synthgen.training.data import load_samples

VNC = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc_stack1"
SIDE = 256


def _binary_pairs(root: Path, indices: range) -> Path:
    """256-px VNC crops with their mitochondria as a 0/255 mask (each holds some)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in indices:
        name = f"vnc_{i:02d}.tif"
        tifffile.imwrite(root / "images" / name,
                         tifffile.imread(VNC / "images" / name)[:SIDE, :SIDE])
        mito = tifffile.imread(VNC / "masks_mito" / name)[:SIDE, :SIDE] > 0
        tifffile.imwrite(root / "masks" / name, (mito * 255).astype(np.uint8))
    return root


@pytest.mark.skipif(not VNC.is_dir(), reason="needs ../shared/data/vnc_stack1")
def test_binary_organelle_masks_are_read_as_the_user_says(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = _binary_pairs(tmp_path / "real", range(3))
    test = _binary_pairs(tmp_path / "test", range(15, 17))
    gen = tmp_path / "gen"
    train = ["train", "--family", "pix2pix", "--data", str(real), "--out", str(gen), "--netG",
             "unet_128", "--ngf", "4", "--ndf", "4", "--tile", "128", "--steps", "2",
             "--val-fraction", "0"]
    # refused as they are, every file named, with the flag that reads them; nothing trained
    capsys.readouterr()
    assert main(train) == 1
    out = capsys.readouterr()
    said = out.out + out.err
    assert "read it with --read-as binary" in said and "vnc_01.tif" in said
    assert not list(gen.glob("*.safetensors"))
    # the Train widget shows a training child's message with its own field instead of the flag
    worded = read_as_wording(said, "Masks read as")
    assert "choose Masks read as 'binary'" in worded and "--read-as" not in worded

    assert main([*train, "--read-as", "binary", "--boundary-width", "2"]) == 0
    cfg = yaml.safe_load((gen / "config.yaml").read_text())
    assert (cfg["read_as"], cfg["boundary_width"]) == ("binary", 2)
    # what training saw: each mitochondrion as interior inside a 2-px boundary, the rest 0
    raw = tifffile.imread(real / "masks" / "vnc_01.tif")
    seen = {s.name: s.mask for s in load_samples([real], read_as="binary")}["real/vnc_01"]
    assert np.array_equal(seen, coerce_mask(raw, "binary", boundary_width=2))
    assert set(np.unique(seen)) == {0, 1, 2} and np.array_equal(seen == 0, raw == 0)

    syn = tmp_path / "syn"
    assert main(["generate", "--model", str(gen), "--masks", str(real / "masks"), "--out",
                 str(syn), "--read-as", "binary", "--seed", "0"]) == 0
    assert np.array_equal(tifffile.imread(syn / "masks" / "vnc_01_s0.tif"), seen)

    ev = tmp_path / "eval"
    evaluate = ["evaluate", "--real", str(real), "--synthetic", str(syn), "--test", str(test),
                "--steps", "2", "--seeds", "1", "--batch-size", "2", "--out", str(ev)]
    capsys.readouterr()
    assert main(evaluate) == 1
    assert "read it with --read-as binary" in capsys.readouterr().err
    assert main([*evaluate, "--read-as", "binary"]) == 0
    settings = json.loads((ev / "evaluate_settings.json").read_text())
    assert settings["read_as"] == ["binary", 2]
    rows = list((ev / "evaluation.csv").read_text().splitlines())
    assert len(rows) == 4  # header and the three arms

    rep = tmp_path / "report"
    assert main(["report", "--samples", str(syn), "--reference", str(real), "--read-as",
                 "binary", "--consistency-steps", "0", "--out", str(rep)]) == 0
    assert json.loads((rep / "report_settings.json").read_text())["read_as"] == ["binary", 2]
    assert (rep / "report.png").is_file()
