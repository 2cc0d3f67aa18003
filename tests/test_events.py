"""Typed training events: JSON round trips, the dict view old callers use, unknown kinds."""

from __future__ import annotations

import json

import pytest

from napari_synthgen.training import events as ev

EXAMPLES = [
    ev.Started(step=0, total=10, resumed_from=None, device="cpu", precision="fp32",
               precision_note="explicit", world_size=1, n_train_images=5, n_val_images=1,
               tiles_per_epoch=20, steps_per_epoch=20, out="runs/x",
               config={"family": "pix2pix", "netG": "unet_128"}, intensity={"mean": 0.5}),
    ev.Progress(step=3, total=10, losses={"mse": 0.25, "anything": 1.0}, lr=1e-4,
                tiles_per_s=3.5, seconds_per_step=0.2, eta_s=1.4, elapsed_s=0.6, epoch=0.15,
                steps_this_run=3),
    ev.Sample(step=4, path="s.png", split="validation"),
    ev.Validation(step=4, split="train", l1=3.0, ssim=0.5, mean_generated=120.0,
                  mean_real=118.0),
    ev.Checkpoint(step=5, path="G.safetensors", state="c/step.state.pt"),
    ev.Finished(step=10, reason="completed", checkpoint="G.safetensors", total=10),
    ev.Failed(step=2, reason="non-finite loss", message="NaN", checkpoint=None,
              losses={"G_L1": float("nan")}),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind)
def test_events_round_trip_through_json_lines(event: ev.Event) -> None:
    line = event.dumps()
    assert "\n" not in line
    back = ev.from_json(line)
    assert type(back) is type(event)
    assert json.loads(back.dumps()) == json.loads(line)
    assert back.to_json()["event"] == event.kind and back["step"] == event.step


def test_events_read_like_the_dicts_the_engine_used_to_yield() -> None:
    progress = EXAMPLES[1]
    assert progress["event"] == "progress" and progress["losses"]["mse"] == 0.25
    assert progress.get("missing") is None and "eta_s" in progress
    assert {**progress}["lr"] == 1e-4
    assert progress == progress.to_json() and dict(progress) == progress.to_json()
    assert list(progress)[:3] == ["event", "step", "time"]
    # a reader attaches what it computed (the train widget's preview image)
    sample = ev.Sample(step=1, path="p.png", split="train")
    sample["image"] = [[0]]
    assert sample["image"] == [[0]] and sample.extra == {"image": [[0]]}
    with pytest.raises(KeyError):
        sample["event"] = "other"


def test_failed_event_keys_are_the_ones_readers_know() -> None:
    plain = ev.Failed(step=0, reason="ConfigError", message="bad")
    assert set(plain) == {"event", "step", "time", "reason", "message", "checkpoint"}
    with_tb = ev.Failed(step=0, reason="ValueError", message="x", traceback="Traceback ...")
    assert with_tb["traceback"] == "Traceback ..." and "losses" not in with_tb


def test_unknown_keys_and_kinds_are_kept_not_dropped() -> None:
    newer = ev.from_json('{"event": "progress", "step": 2, "time": 1.0, "losses": {}, '
                         '"gpu_memory": 3}')
    assert isinstance(newer, ev.Progress) and newer["gpu_memory"] == 3
    assert json.loads(newer.dumps())["gpu_memory"] == 3
    other = ev.from_json({"event": "resharded", "step": 7, "world": 4})
    assert isinstance(other, ev.Other) and other["event"] == "resharded"
    assert other["world"] == 4 and other.to_json()["step"] == 7
    for bad in ('[1, 2]', '{"step": 1}', '{"event": 3}'):
        with pytest.raises(ValueError, match="not a training event"):
            ev.from_json(bad)
