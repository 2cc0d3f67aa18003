"""The example scripts run headless on tiny inputs and leave what they promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from napari_synthgen import io

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=240, env=env)


def test_headless_pipeline_masks_to_nnunet(tmp_path: Path, isbi_small: Path) -> None:
    out = tmp_path / "run"
    proc = _run("headless_pipeline.py", str(out), "--n", "3", "--size", "64", "64",
                "--device", "cpu", "--real", str(isbi_small), "--dataset-id", "42",
                "--name", "Tiny")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in ("1. wrote 3 dense masks", "2. wrote 3 images", "3. accepted", "4. nnU-Net"):
        assert step in proc.stdout, proc.stdout

    # masks and generated images: 3 of each, 64 x 64
    assert len(list((out / "masks").glob("*.tif"))) == 3
    pairs = io.find_pairs(out / "generated")
    assert len(pairs) == 3 and all(io.read_image(p.image).shape == (64, 64) for p in pairs)

    # curation: every candidate decided, accepted ones carry their generate provenance
    records = [json.loads(line) for line in (out / "curated" / "manifest.jsonl").read_text()
               .splitlines() if line.strip()]
    decisions = [r for r in records if r.get("decision") in ("accept", "reject")]
    accepted = [r for r in decisions if r["decision"] == "accept"]
    assert len(decisions) == 3 and accepted
    assert all(r["provenance"]["seed"] == 0 and "model_sha256" in r["provenance"]
               for r in accepted)

    # nnU-Net: the accepted synthetic cases train, the real ones also validate
    dataset = out / "nnunet" / "Dataset042_Tiny"
    meta = json.loads((dataset / "dataset.json").read_text())
    synthetic = set(meta["synthgen"]["synthetic_cases"])
    assert len(synthetic) == len(accepted) and meta["numTraining"] == len(accepted) + 6
    images = sorted((dataset / "imagesTr").iterdir())
    labels = sorted((dataset / "labelsTr").iterdir())
    assert len(images) == len(labels) == meta["numTraining"]
    label = io.read_array(labels[0])
    assert set(np.unique(label).tolist()) <= {0, 1, 2}
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert splits and all(not synthetic & set(fold["val"]) and fold["val"] for fold in splits)
    assert all(synthetic <= set(fold["train"]) for fold in splits)


def test_headless_pipeline_refuses_a_used_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    proc = _run("headless_pipeline.py", str(tmp_path), "--n", "1", "--size", "32", "32")
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_synthesize_and_curate(tmp_path: Path) -> None:
    proc = _run("synthesize_and_curate.py", "demo", str(tmp_path / "export"), "--n", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "syn_000001" in proc.stdout and "syn_000002" in proc.stdout
    records = [json.loads(line) for line in (tmp_path / "export" / "manifest.jsonl")
               .read_text().splitlines() if line.strip()]
    decided = [r for r in records if r.get("decision") in ("accept", "reject")]
    assert len(decided) == 2 and all(r["provenance"]["model"] == "demo" for r in decided)


def test_utility_check_example(tmp_path: Path, isbi_dir: Path) -> None:
    import shutil

    folders = {"real": (0, 1), "synthetic": (2, 3), "test": (4,)}  # split by image
    for name, slices in folders.items():
        for sub in ("images", "masks"):
            (tmp_path / name / sub).mkdir(parents=True)
            for i in slices:
                f = f"isbi2012_train_{i:02d}.tif"
                shutil.copy(isbi_dir / sub / f, tmp_path / name / sub / f)
    out = tmp_path / "out"
    proc = _run("utility_check.py", str(tmp_path / "real"), str(tmp_path / "synthetic"),
                str(tmp_path / "test"), str(out), "--steps", "6", "--seeds", "1", "--crop", "64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| real |" in proc.stdout and "| synthetic |" in proc.stdout
    assert {p.name for p in out.iterdir()} >= {"evaluation.csv", "evaluation.md",
                                                "evaluation.png"}


def test_train_from_python_example(tmp_path: Path, isbi_small: Path) -> None:
    proc = _run("train_from_python.py", str(isbi_small), str(tmp_path / "run"), "--steps", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "step 2/2" in proc.stdout and "finished" in proc.stdout
    assert list((tmp_path / "run").glob("G_step_*.safetensors"))
