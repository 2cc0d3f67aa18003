"""Training: real pix2pix runs on ISBI data through the CLI and the engine, resume, stop, DDP."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_synthgen import io
from napari_synthgen.masks import to_palette
from napari_synthgen.registry import (
    config_from_dict,
    load_config,
    load_model,
    make_config,
    make_synthesizer,
)
from napari_synthgen.training.config import ConfigError, TrainConfig
from napari_synthgen.training.data import DataError, TileSampler, load_samples
from napari_synthgen.training.engine import latest_checkpoint, train

TINY = ["--netG", "unet_128", "--ngf", "4", "--ndf", "4", "--tile", "128"]


def run_cli(*args: str, timeout: float = 240, env: dict | None = None
            ) -> tuple[int, list[dict], str]:
    """Run ``napari-synthgen`` in a child process; returns (exit code, JSON events, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "napari_synthgen", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def test_cli_trains_on_isbi_and_generate_uses_the_checkpoint(tmp_path: Path, isbi_dir: Path
                                                             ) -> None:
    out = tmp_path / "run"
    code, events, err = run_cli(
        "train", "--data", str(isbi_dir), "--out", str(out), "--steps", "36",
        "--netG", "unet_256", "--ngf", "8", "--ndf", "8", "--tile", "256", "--batch-size", "2",
        "--sample-every", "12", "--checkpoint-every", "12", "--events", "jsonl")
    assert code == 0, err
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert events[0]["n_train_images"] == 27 and events[0]["n_val_images"] == 3
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == list(range(1, 37))
    assert all(np.isfinite(list(e["losses"].values())).all() for e in progress)
    assert all(e["eta_s"] >= 0 and e["tiles_per_s"] > 0 for e in progress)
    samples = [e for e in events if e["event"] == "sample"]
    assert len(samples) == 3 and all(Path(e["path"]).is_file() for e in samples)
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [12, 24, 36]
    assert (out / "config.yaml").is_file()
    # the checkpoint loads in the synthesizer with its metadata
    model = load_model(out)
    assert model.info.tile == 256 and model.info.metadata["step"] == 36
    assert model.info.metadata["intensity"]["mean"] > 50
    image = make_synthesizer(model, device="cpu")(io.read_mask(isbi_dir / "masks" /
                                                          "isbi2012_train_29.tif"))
    assert image.shape == (512, 512) and image.std() > 1
    # and `generate` uses it
    code, _, err = run_cli("generate", "--model", str(out), "--masks",
                           str(isbi_dir / "masks" / "isbi2012_train_29.tif"),
                           "--out", str(tmp_path / "gen"), "--variations", "2")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "gen" / "images").iterdir())
    assert names == ["isbi2012_train_29_s0.tif", "isbi2012_train_29_s1.tif"]
    log = [json.loads(x) for x in (tmp_path / "gen" / "generate.jsonl").read_text().splitlines()]
    assert log[0]["model_sha256"] == model.info.sha256 and log[1]["seed"] == 1


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).network.state_dict()


def test_stop_and_resume_ends_with_the_same_weights(tmp_path: Path, isbi_small: Path) -> None:
    def cfg(out: Path) -> TrainConfig:
        return make_config(data=[str(isbi_small)], out=str(out), steps=12, netG="unet_128",
                           ngf=4, ndf=4, tile=128, batch_size=2, flips=True, rot90=True,
                           checkpoint_every=100, sample_every=100, seed=3)

    full = list(train(cfg(tmp_path / "full")))
    assert full[-1]["event"] == "finished" and full[-1]["step"] == 12

    steps_seen: list[int] = []

    def stop() -> bool:
        return bool(steps_seen) and steps_seen[-1] >= 5

    first = []
    for event in train(cfg(tmp_path / "split"), stop=stop):
        first.append(event)
        if event["event"] == "progress":
            steps_seen.append(event["step"])
    assert first[-1] == {**first[-1], "event": "finished", "reason": "stopped", "step": 5}
    assert latest_checkpoint(tmp_path / "split")[0] == 5
    second = list(train(cfg(tmp_path / "split"), resume=tmp_path / "split"))
    assert second[0]["resumed_from"] == 5 and second[-1]["step"] == 12
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"


def test_unlabel_fraction_shows_pix2pix_background_where_the_data_has_none(
        tmp_path: Path, isbi_small: Path) -> None:
    def run(name: str, fraction: float) -> Path:
        cfg = make_config(data=[str(isbi_small)], out=str(tmp_path / name), steps=3,
                          netG="unet_128", ngf=4, ndf=4, tile=128, batch_size=2, seed=3,
                          precision="fp32", checkpoint_every=100, sample_every=100,
                          unlabel_fraction=fraction)
        assert list(train(cfg))[-1]["event"] == "finished"
        return tmp_path / name

    plain, a, b = run("plain", 0.0), run("a", 0.5), run("b", 0.5)
    assert load_model(plain).info.classes[0] == 0  # ISBI masks have no background
    info = load_model(a).info
    assert info.classes[0] == pytest.approx(0.5, abs=1e-6)  # the expected share, recorded
    assert info.metadata["config"]["unlabel_fraction"] == 0.5
    wa, wb, wp = _weights(a), _weights(b), _weights(plain)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "the unlabelled cells are seeded"
    assert any(not torch.equal(wa[k], wp[k]) for k in wa), "the generator saw other masks"
    with pytest.raises(ConfigError, match="unlabel_fraction is a share of cells"):
        make_config(data=["x"], steps=1, unlabel_fraction=1.5).validate()


def test_nan_stops_with_a_clear_event_and_keeps_last_checkpoint(tmp_path: Path,
                                                                isbi_small: Path) -> None:
    base = ["train", "--data", str(isbi_small), "--out", str(tmp_path), *TINY, "--norm", "none",
            "--precision", "fp32", "--events", "jsonl"]
    code, events, err = run_cli(*base, "--steps", "4")
    assert code == 0, err
    good = latest_checkpoint(tmp_path)
    # resume with a learning rate that blows the loss up
    code, events, _ = run_cli(*base, "--steps", "40", "--lr", "1000", "--resume")
    assert code == 1
    failed = events[-1]
    assert failed["event"] == "failed" and failed["reason"] == "non-finite loss"
    assert "NaN or infinite" in failed["message"] and "last good checkpoint is step 4" in \
        failed["message"]
    assert latest_checkpoint(tmp_path) == good  # nothing written after the NaN
    load_model(good[1])


def test_resume_by_the_run_folder_alone_continues_the_run_as_it_was_set_up(
        tmp_path: Path, isbi_small: Path) -> None:
    """``train --resume RUN --steps N``: the run's saved configuration (data, network,
    settings) is the base, so no option needs repeating; the checkpoints go on in RUN."""
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", str(isbi_small), "--out", str(run), *TINY,
                           "--precision", "fp32", "--lambda-l1", "20", "--steps", "3",
                           "--checkpoint-every", "3", "--events", "jsonl")
    assert code == 0, err
    code, events, err = run_cli("train", "--resume", str(run), "--steps", "5",
                                "--checkpoint-every", "5", "--events", "jsonl")
    assert code == 0, err
    started = next(e for e in events if e["event"] == "started")
    assert started["resumed_from"] == 3 and events[-1]["step"] == 5
    assert latest_checkpoint(run)[0] == 5
    cfg = load_model(run).info.metadata["config"]
    assert cfg["data"] == [str(isbi_small)] and cfg["lambda_l1"] == 20 and cfg["ngf"] == 4
    assert cfg["steps"] == 5 and cfg["out"] == str(run)


def test_two_processes_train_data_parallel(tmp_path: Path, isbi_small: Path) -> None:
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "napari_synthgen", "train", "--data", str(isbi_small), "--out", str(out), *TINY,
         "--steps", "6", "--checkpoint-every", "3", "--sample-every", "3", "--events", "jsonl"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    started = [e for e in events if e["event"] == "started"]
    assert len(started) == 1 and started[0]["world_size"] == 2  # only rank 0 reports
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [3, 6]
    assert sorted(p.name for p in out.glob("G_step_*")) == ["G_step_0000003.safetensors",
                                                            "G_step_0000006.safetensors"]
    assert load_model(out).info.metadata["config"]["batch_size"] == 1


def test_only_rank_0_reports_a_failure(tmp_path: Path, isbi_small: Path) -> None:
    bad = tmp_path / "data"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "napari_synthgen", "train", "--data", str(bad), "--out", str(tmp_path / "o"),
         *TINY, "--steps", "2", "--events", "jsonl"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode != 0
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [e["event"] for e in events] == ["failed"], proc.stdout
    assert "rank 1:" in proc.stderr  # the other rank leaves its line in the log


def test_resume_from_a_state_without_config_is_a_clear_failure(tmp_path: Path,
                                                                isbi_small: Path) -> None:
    state = tmp_path / "old.state.pt"
    torch.save({"model": {}, "step": 3}, state)
    cfg = make_config(data=[str(isbi_small)], out=str(tmp_path / "run"), steps=4,
                      netG="unet_128", ngf=4, ndf=4, tile=128)
    events = list(train(cfg, resume=state))
    assert events[-1]["event"] == "failed" and events[-1]["reason"] == "TrainingError"
    assert "not a napari-synthgen training state" in events[-1]["message"]
    assert "config" in events[-1]["message"] and "unexpected" not in events[-1]["message"]


def test_checkpoint_steps_are_parsed_from_the_name_not_a_slice(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    for step in (9, 12345678):  # the second is longer than the usual 7 digits
        (ckpt / f"step_{step:07d}.state.pt").write_bytes(b"x")
        (tmp_path / f"G_step_{step:07d}.safetensors").write_bytes(b"x")
    (ckpt / "step_backup.state.pt").write_bytes(b"x")  # not a step: ignored, not misread
    assert latest_checkpoint(tmp_path)[0] == 12345678


def test_ranks_draw_disjoint_shards_of_the_global_batch(isbi_small: Path) -> None:
    samples = load_samples([isbi_small])
    kw = {"tile": 128, "stride": 128, "seed": 1}
    single = TileSampler(samples, batch_size=4, **kw)
    ranks = [TileSampler(samples, batch_size=2, rank=r, world=2, **kw) for r in (0, 1)]
    for step in range(5):
        m_all, _ = single.batch(step)
        m0, _ = ranks[0].batch(step)
        m1, _ = ranks[1].batch(step)
        assert torch.equal(torch.cat([m0, m1]), m_all)


def test_grid_tiles_cover_each_epoch_once(isbi_small: Path) -> None:
    samples = load_samples([isbi_small])
    sampler = TileSampler(samples, tile=256, stride=256, batch_size=4, seed=0)
    assert sampler.tiles_per_epoch == 6 * 4 and sampler.steps_per_epoch() == 6
    seen = {sampler._grid_index(k) for k in range(24)}
    assert len(seen) == 24


def test_flips_transform_mask_and_image_together(isbi_small: Path) -> None:
    samples = load_samples([isbi_small])
    plain = TileSampler(samples, tile=128, stride=None, batch_size=8, seed=4)
    aug = TileSampler(samples, tile=128, stride=None, batch_size=8, seed=4, flips=True,
                      rot90=True)
    m0, i0 = plain.batch(0)
    m1, i1 = aug.batch(0)
    changed = 0
    for a_m, a_i, b_m, b_i in zip(m0, i0, m1, i1, strict=True):
        # find the transform that maps the plain mask to the augmented one; it maps the image too
        for k in range(4):
            for flip in (False, True):
                t_m = torch.rot90(a_m.flip(-1) if flip else a_m, k, (-2, -1))
                if torch.equal(t_m, b_m):
                    t_i = torch.rot90(a_i.flip(-1) if flip else a_i, k, (-2, -1))
                    assert torch.equal(t_i, b_i)
                    changed += (k, flip) != (0, False)
                    break
            else:
                continue
            break
        else:
            pytest.fail("augmented tile is not a flip/turn of the plain one")
    assert changed > 0


def test_bad_data_is_reported_by_name_before_training(tmp_path: Path, isbi_small: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="neither images/ \\+ masks/ nor aligned"):
        load_samples([empty])
    unpaired = tmp_path / "unpaired"
    shutil.copytree(isbi_small, unpaired)
    (unpaired / "masks" / "isbi2012_train_01.tif").unlink()
    io.write_mask(unpaired / "masks" / "stray.tif", np.ones((512, 512), np.uint8))
    io.write_mask(unpaired / "masks" / "isbi2012_train_02.tif", np.ones((100, 100), np.uint8))
    io.write_array(unpaired / "masks" / "isbi2012_train_03.tif", np.full((512, 512), 7, np.uint8))
    with pytest.raises(DataError) as err:
        load_samples([unpaired])
    msg = str(err.value)
    assert "images/isbi2012_train_01.tif has no mask" in msg and "masks/stray.tif" in msg
    del unpaired  # the pairing problems are listed first; now fix pairing to see the rest
    mixed = tmp_path / "mixed"
    shutil.copytree(isbi_small, mixed)
    io.write_mask(mixed / "masks" / "isbi2012_train_02.tif", np.ones((100, 100), np.uint8))
    io.write_array(mixed / "masks" / "isbi2012_train_03.tif", np.full((512, 512), 7, np.uint8))
    with pytest.raises(DataError) as err:
        load_samples([mixed])
    msg = str(err.value)
    assert "isbi2012_train_02: image (512, 512) and mask (100, 100) differ" in msg
    assert "isbi2012_train_03" in msg and "value 7" in msg


def test_cli_reports_bad_input_clearly(tmp_path: Path, isbi_small: Path) -> None:
    code, events, _ = run_cli("train", "--data", str(tmp_path / "nowhere"), "--out",
                              str(tmp_path / "o"), "--steps", "2", "--events", "jsonl")
    assert code == 1 and "not a folder" in events[-1]["message"]
    code, events, _ = run_cli("train", "--data", str(isbi_small), "--out", str(tmp_path / "o"),
                              "--steps", "2", "--tile", "1024", "--events", "jsonl")
    assert code == 1 and "tile 1024 is larger than" in events[-1]["message"]
    assert "--tile 512 or smaller" in events[-1]["message"]
    code, _, err = run_cli("train", "--data", str(isbi_small), "--out", str(tmp_path / "o"))
    assert code == 1 and "exactly one of steps or epochs" in err


def test_full_disk_keeps_the_last_checkpoint(tmp_path: Path, isbi_small: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_synthgen.training import engine

    real_save = torch.save
    calls = {"n": 0}

    def filling_disk(obj: object, f: object, *a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] >= 2:  # the second checkpoint finds the disk full
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(engine.torch, "save", filling_disk)
    cfg = make_config(data=[str(isbi_small)], out=str(tmp_path), steps=8, netG="unet_128",
                      ngf=4, ndf=4, tile=128, checkpoint_every=3, sample_every=100)
    events = list(train(cfg))
    failed = events[-1]
    assert failed["event"] == "failed" and failed["reason"] == "disk full"
    assert "last good checkpoint is step 3" in failed["message"]
    step, g, state = latest_checkpoint(tmp_path)
    assert step == 3 and load_model(g).info.metadata["step"] == 3
    assert torch.load(state, weights_only=True)["step"] == 3
    assert not list(tmp_path.rglob("*.tmp")), "no partial file is left behind"


def test_config_file_and_overrides(tmp_path: Path, isbi_small: Path) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"data: [{isbi_small}]\nsteps: 2\nngf: 4\nndf: 4\nnetG: unet_128\n"
                        f"tile: 128\nlr: 0.001\n")
    out = tmp_path / "run"
    code, _events, err = run_cli("train", "--config", str(cfg_file), "--out", str(out),
                                "--lr", "0.0005", "--events", "jsonl")
    assert code == 0, err
    saved = load_config(out / "config.yaml")
    assert saved.lr == 0.0005 and saved.ngf == 4 and saved.steps == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\nsteps: 1\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match="unknown configuration keys: learning_rate"):
        load_config(bad)


def test_reference_aligned_layout(tmp_path: Path, isbi_dir: Path) -> None:
    """The reference implementation's 'aligned' A|B images train too (JPEG noise tolerated)."""
    train_dir = tmp_path / "facades_like" / "train"
    train_dir.mkdir(parents=True)
    import imageio.v3 as iio

    for i in range(3):
        mask = io.read_mask(isbi_dir / "masks" / f"isbi2012_train_{i:02d}.tif")
        image = io.read_image(isbi_dir / "images" / f"isbi2012_train_{i:02d}.tif")
        ab = np.concatenate([to_palette(mask), np.repeat(image[..., None], 3, -1)], axis=1)
        iio.imwrite(train_dir / f"{i}.jpg", ab, quality=90)
    samples = load_samples([tmp_path / "facades_like"])
    assert len(samples) == 3 and samples[0].mask.shape == (512, 512)
    truth = io.read_mask(isbi_dir / "masks" / "isbi2012_train_00.tif")
    assert (samples[0].mask == truth).mean() > 0.97


def test_trainer_saves_and_exits_when_its_supervisor_goes_away(tmp_path: Path,
                                                               isbi_small: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_synthgen", "train", "--data", str(isbi_small), "--out",
         str(tmp_path), *TINY, "--steps", "100000", "--events", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if json.loads(line)["event"] == "progress":
            break
    proc.stdout.close()  # the supervisor (e.g. napari) is gone
    assert proc.wait(timeout=60) == 0
    step, g, _ = latest_checkpoint(tmp_path)
    assert 0 < step < 100000 and load_model(g).info.metadata["step"] == step


@pytest.mark.parametrize(("key", "value", "message"), [
    ("n_layers_D", 0, r"n_layers_D must be at least 1; got 0"),
    ("lambda_l1", -1.0, r"lambda_l1 must be >= 0; got -1.0"),
    ("beta1", 2.0, r"beta1 must be in \[0, 1\); got 2.0"),
])
def test_settings_that_would_fail_late_are_refused_up_front(key: str, value: float,
                                                            message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": ["x"], "steps": 1, key: value}).validate()


def test_a_seed_past_32_bits_ends_the_run_before_any_work(tmp_path: Path,
                                                          isbi_small: Path) -> None:
    """The Train widget's path (the engine): a failed event naming the seed, nothing made."""
    from napari_synthgen.training.engine import train

    cfg = make_config(data=[str(isbi_small)], steps=1, seed=2**32, out=str(tmp_path / "run"))
    events = list(train(cfg))
    assert [e["event"] for e in events] == ["failed"]
    assert "seed must be in [0, 4294967295]" in events[0]["message"]
    assert not (tmp_path / "run").exists()
