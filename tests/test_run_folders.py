"""A fresh training run never deletes or overwrites another run's files: the engine and the
``train`` CLI refuse a folder that holds a run unless resuming, and say what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_synthgen.registry import make_config
from napari_synthgen.training.runs import free_run_folder, next_run_folder, run_step


def _used_run(out: Path, step: int = 40) -> dict[Path, bytes]:
    """A folder holding a run's files (as a finished run leaves them); returns their bytes."""
    files = {
        out / f"G_step_{step:07d}.safetensors": b"generator",
        out / "checkpoints" / f"step_{step:07d}.state.pt": b"state",
        out / "config.yaml": b"steps: 40\n",
        out / "samples" / "step_0000040.png": b"png",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _untouched(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        assert path.read_bytes() == data, f"{path} was changed"
    out = next(iter(files)).parent
    assert sorted(p.name for p in out.iterdir()) == ["G_step_0000040.safetensors", "checkpoints",
                                                    "config.yaml", "samples"]


def test_engine_refuses_a_folder_holding_a_run(tmp_path: Path, isbi_small: Path) -> None:
    from napari_synthgen.training.engine import train

    out = tmp_path / "run"
    files = _used_run(out)
    cfg = make_config(data=[str(isbi_small)], out=str(out), steps=3, netG="unet_128", ngf=4,
                      ndf=4, tile=128)
    events = list(train(cfg))
    assert [e["event"] for e in events] == ["failed"]
    assert events[0]["message"] == (f"{out} already holds a run (step 40); pass --resume to "
                                    "continue it or choose a new --out.")
    _untouched(files)


def test_train_cli_refuses_a_folder_holding_a_run(tmp_path: Path, isbi_small: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from napari_synthgen.cli import main

    out = tmp_path / "run"
    files = _used_run(out)
    code = main(["train", "--data", str(isbi_small), "--out", str(out), "--steps", "3",
                 "--netG", "unet_128", "--ngf", "4", "--ndf", "4", "--tile", "128"])
    assert code == 1
    err = capsys.readouterr()
    assert "already holds a run (step 40); pass --resume" in err.out + err.err
    _untouched(files)


def test_run_step_and_the_next_free_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert run_step(runs / "pix2pix-001") is None
    assert free_run_folder(runs / "pix2pix-001") == runs / "pix2pix-001"
    _used_run(runs / "pix2pix-001")
    assert run_step(runs / "pix2pix-001") == 40
    assert free_run_folder(runs / "pix2pix-001") == runs / "pix2pix-002"
    (runs / "pix2pix-002").mkdir()
    (runs / "pix2pix-002" / "train.log").write_text("x")  # not empty: taken
    (runs / "pix2pix-003").mkdir()  # empty: free
    assert next_run_folder(runs / "pix2pix-001") == runs / "pix2pix-003"
    assert next_run_folder(runs / "mine") == runs / "mine-001"
    # a generator without its state still marks a run (an interrupted checkpoint)
    os.remove(runs / "pix2pix-001" / "checkpoints" / "step_0000040.state.pt")
    assert run_step(runs / "pix2pix-001") == 40
