"""The organelle study end to end through the CLI, as a user (and issue 17's hidden check) runs
it: a generator on labelled slices plus raw ones (`train --unlabeled`), `masks
--variations-of`, `generate`, `evaluate --real-sizes`. Tiny networks and budgets: this checks
that the chain holds together and what each step records, not what it achieves."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen.cli import main
from napari_synthgen.registry import load_model

VNC = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc_stack1"
SIDE = 256


def _pairs(root: Path, indices: range, *, masks: bool = True) -> Path:
    """256-px crops of VNC slices with their mitochondria-only masks (class 0: other tissue)."""
    (root / "images").mkdir(parents=True)
    if masks:
        (root / "masks").mkdir()
    for i in indices:
        name = f"vnc_{i:02d}.tif"
        tifffile.imwrite(root / "images" / name,
                         tifffile.imread(VNC / "images" / name)[:SIDE, :SIDE])
        if masks:
            tifffile.imwrite(root / "masks" / name,
                             tifffile.imread(VNC / "masks_mito" / name)[:SIDE, :SIDE])
    return root


@pytest.mark.skipif(not VNC.is_dir(), reason="needs ../shared/data/vnc_stack1")
def test_the_organelle_study_runs_through_the_cli(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    real = _pairs(tmp_path / "real", range(3))
    raw = _pairs(tmp_path / "raw", range(5, 8), masks=False) / "images"
    test = _pairs(tmp_path / "test", range(15, 17))
    gen = tmp_path / "gen"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_synthgen", "train", "--family", "pix2pix",
         "--data", str(real), "--unlabeled", str(raw), "--out", str(gen), "--netG",
         "unet_128", "--ngf", "4", "--ndf", "4", "--tile", "128", "--steps", "3",
         "--batch-size", "2", "--val-fraction", "0"],
        capture_output=True, text=True, timeout=240, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = load_model(gen).info.metadata["provenance"]["unlabeled_images"]
    assert seen == [f"images/vnc_{i:02d}" for i in (5, 6, 7)]

    masks = tmp_path / "masks"
    assert main(["masks", "--variations-of", str(real / "masks"), "--n", "2", "--seed", "1",
                 "--out", str(masks)]) == 0
    made = sorted(masks.glob("*.tif"))
    assert len(made) == 6
    for f in made:  # organelle masks stay organelle masks: mostly class 0, some mitochondria
        m = tifffile.imread(f)
        assert set(np.unique(m)) <= {0, 1, 2} and (m == 0).mean() > 0.5

    syn = tmp_path / "syn"
    assert main(["generate", "--model", str(gen), "--masks", str(masks), "--out",
                 str(syn), "--seed", "0"]) == 0
    images = sorted((syn / "images").glob("*.tif"))
    assert [p.name for p in images] == [p.name for p in sorted((syn / "masks").glob("*.tif"))]
    assert len(images) == 6 and tifffile.imread(images[0]).shape == (SIDE, SIDE)
    records = [json.loads(x) for x in (syn / "generate.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["family"] for r in records} == {"pix2pix"}
    assert all(Path(r["model"]).parent == gen and len(r["model_sha256"]) == 64
               for r in records)
    capsys.readouterr()

    out = tmp_path / "eval"
    assert main(["evaluate", "--real", str(real), "--synthetic", str(syn), "--test", str(test),
                 "--real-sizes", "1,2", "--steps", "3", "--seeds", "2", "--crop", "64",
                 "--batch-size", "2", "--out", str(out)]) == 0
    with (out / "evaluation_sizes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["n_real"], r["arm"]) for r in rows] == [
        ("1", "real"), ("1", "real+synthetic"), ("2", "real"), ("2", "real+synthetic"),
        ("0", "synthetic")]
    mixed = [r for r in rows if r["arm"] == "real+synthetic"]
    assert all(r["diff_dice_interior_pairs"] == "4" for r in mixed)  # 2 seeds x 2 test slices
    # a raw slice the generator learned from is refused as a test image
    leaky = _pairs(tmp_path / "leaky", range(7, 8))
    assert main(["evaluate", "--real", str(real), "--synthetic", str(syn), "--test",
                 str(leaky), "--steps", "1", "--out", str(tmp_path / "e2")]) == 2
    assert "vnc_07" in capsys.readouterr().err
