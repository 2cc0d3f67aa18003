"""Same inputs and seed, same bytes: on a quiet CPU and on one loaded by other programs.

``auto`` precision is decided by a written rule (device, CPU flags, kind of work, batch size),
never by a timing, so another program keeping the cores busy cannot change a result.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_synthgen import devices
from napari_synthgen.devices import TRAIN_BF16_MIN_BATCH, auto_precision
from napari_synthgen.layouts import make_layout
from napari_synthgen.registry import (
    load_model,
    make_config,
)
from napari_synthgen.training.engine import train

CPU = torch.device("cpu")
AMX = frozenset({"amx_bf16", "avx512_bf16"})
EPYC = frozenset({"avx512_bf16"})


@contextlib.contextmanager
def busy_cpu(n: int = 2) -> Iterator[None]:
    """``n`` other processes spinning on the cores while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(("flags", "work", "batch", "expected"), [
    (AMX, "inference", 1, "bf16"),
    (EPYC, "inference", 1, "bf16"),
    (frozenset(), "inference", 4, "fp32"),
    (None, "inference", 4, "fp32"),  # flags unreadable (macOS, Windows): the safe choice
    (AMX, "training", 1, "fp32"),
    (AMX, "training", TRAIN_BF16_MIN_BATCH - 1, "fp32"),
    (AMX, "training", TRAIN_BF16_MIN_BATCH, "bf16"),
    (EPYC, "training", 8, "bf16"),
    (frozenset(), "training", 8, "fp32"),
])
def test_cpu_rule(flags: frozenset[str] | None, work: str, batch: int, expected: str) -> None:
    choice, note = auto_precision(CPU, work, batch_size=batch, flags=flags)  # type: ignore[arg-type]
    assert choice == expected
    assert note.startswith(f"auto: {expected} (")  # the rule is written into provenance


def test_rule_reads_this_cpu_without_timing_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def no_clock() -> float:
        raise AssertionError("auto precision must not time anything")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    choice, _ = auto_precision(CPU, "inference")
    flags = devices.cpu_bf16_flags()
    assert choice == ("bf16" if flags else "fp32")
    with pytest.raises(ValueError, match="work must be"):
        auto_precision(CPU, "painting")  # type: ignore[arg-type]


def test_training_records_the_rule(tmp_path: Path, isbi_small: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: EPYC)
    cfg = make_config(data=[str(isbi_small)], out=str(tmp_path / "run"), steps=1,
                      netG="unet_128", ngf=4, ndf=4, tile=128, batch_size=1,
                      checkpoint_every=100, sample_every=100)
    events = list(train(cfg))
    assert events[0]["precision"] == "fp32"
    assert "training batch 1 < 4" in events[0]["precision_note"]
    meta = load_model(tmp_path / "run").info.metadata
    assert meta["precision"] == "fp32" and meta["precision_rule"] == events[0]["precision_note"]
    assert meta["classes"]["0"] == 0.0 and meta["classes"]["1"] > 0.5  # ISBI: no background
    from napari_synthgen.quality import reference_from_metadata

    assert reference_from_metadata(meta) is not None  # curation compares samples with it


# --------------------------------------------------------------------------- under load


def _generate(model: Path, masks: Path, out: Path) -> dict[str, bytes]:
    proc = subprocess.run(
        [sys.executable, "-m", "napari_synthgen", "generate", "--model", str(model),
         "--masks", str(masks), "--out", str(out), "--seed", "7", "--variations", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(line) for line in (out / "generate.jsonl").read_text().splitlines()]
    rules = {r["params"]["precision_note"] for r in log if "params" in r}
    assert len(rules) == 1 and rules.pop().startswith("auto: ")  # the rule is in provenance
    return {p.name: p.read_bytes() for p in sorted((out / "images").iterdir())}


def test_generate_gives_the_same_bytes_on_a_busy_machine(tmp_path: Path, tiny_unet: Path
                                                          ) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(2):
        tifffile.imwrite(masks / f"m{i}.tif", make_layout("dense", (192, 160), seed=i))
    quiet = _generate(tiny_unet, masks, tmp_path / "quiet")
    with busy_cpu():
        busy = _generate(tiny_unet, masks, tmp_path / "busy")
    assert len(quiet) == 4 and quiet.keys() == busy.keys()
    for name in quiet:
        assert quiet[name] == busy[name], f"{name} differs under load"


def test_training_gives_the_same_weights_on_a_busy_machine(tmp_path: Path, isbi_small: Path
                                                           ) -> None:
    # batch 4: where the CPU has bf16 the rule trains in bf16, so both paths are covered
    def run(out: Path) -> tuple[str, dict[str, torch.Tensor]]:
        cfg = make_config(data=[str(isbi_small)], out=str(out), steps=3, netG="unet_128",
                          ngf=4, ndf=4, tile=128, batch_size=4, flips=True,
                          checkpoint_every=100, sample_every=100, seed=5)
        events = list(train(cfg))
        assert events[-1]["event"] == "finished", events[-1]
        return events[0]["precision"], load_model(out).network.state_dict()

    p_quiet, quiet = run(tmp_path / "quiet")
    with busy_cpu():
        p_busy, busy = run(tmp_path / "busy")
    assert p_quiet == p_busy == auto_precision(CPU, "training", batch_size=4)[0]
    for key in quiet:
        assert torch.equal(quiet[key], busy[key]), f"{key} differs under load"
    assert np.isfinite(sum(float(v.float().sum()) for v in quiet.values()))
