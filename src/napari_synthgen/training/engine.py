"""The training loop, once for every model family: events, checkpoints, resume, stop, multi-GPU.

``train(config)`` is a generator of events (:mod:`.events`: ``started``, ``progress``,
``sample``, ``validation``, ``checkpoint``, ``finished`` and ``failed``; each also reads like
the dict of its JSON). The CLI prints them (or writes them as JSON lines for a supervising
program such as the napari train widget); a notebook can iterate over them. The model family
(from the registry) supplies the trainer: its step, previews, state and model file. Under
``torchrun`` (``WORLD_SIZE`` > 1) the same loop trains data-parallel with torch DDP; only rank
0 writes files and yields events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._triton_guard import keep_triton_out
from ..devices import (
    DeviceError,
    Precision,
    auto_precision,
    check_precision,
    resolve_device,
)
from ..encoding import unit_to_uint8
from ..io import DiskFullError, atomic_path, write_array
from ..masks import to_palette
from . import events as ev
from .config import ConfigError, TrainConfig
from .data import (
    DataError,
    TileSampler,
    check_unlabeled,
    class_stats,
    fixed_tiles,
    intensity_stats,
    load_samples,
    load_unlabeled,
    split_validation,
)
from .runs import (
    checkpoint_paths,
    latest_checkpoint,
    run_step,
    state_steps,
    used_folder_message,
)
from .unlabel import unlabel_batch

Event = ev.Event


class TrainingError(RuntimeError):
    """A run that cannot start or continue, with what to do."""


# --------------------------------------------------------------------------- distributed
class _Dist:
    """Rank, world size and collective helpers; a no-op when not under torchrun."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        self._own_group = False

    def init(self, device_type: str) -> None:
        if not self.active:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
            self._own_group = True

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank."""
        if not self.active:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (choices every rank must share, e.g. precision)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def finish(self) -> None:
        """Wait until every rank is done before the group is torn down: a rank that destroys
        its gloo group while another still writes its last checkpoint can abort at exit."""
        if self.active and self._own_group:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self._own_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    @property
    def main(self) -> bool:
        return self.rank == 0


# --------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def arch_keys(cfg: TrainConfig) -> tuple[str, ...]:
    """The settings a resume of ``cfg`` must keep: family, encoding and tile for every family,
    and the family's own ``arch_keys``."""
    return ("family", *cfg.family_entry.arch_keys, "encoding", "tile")


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    # a checkpoint of a pix2pix run written before families existed always says its family
    keys = ("family",) if saved.get("family") != cfg.family else arch_keys(cfg)
    # a setting added after the checkpoint was written had its default then
    own = cfg.family_entry.settings
    defaults = ({f.name: f.default for f in dataclasses.fields(own)}
                if dataclasses.is_dataclass(own) else {})
    was = {k: saved[k] if k in saved else defaults.get(k) for k in keys}
    diff = [f"{k}: checkpoint {was[k]!r}, now {getattr(cfg, k)!r}" for k in keys
            if was[k] != getattr(cfg, k)]
    if diff:
        raise TrainingError("cannot resume: the checkpoint was trained with another architecture "
                            "(" + "; ".join(diff) + "). Use the same settings or a new --out.")


# --------------------------------------------------------------------------- the loop
def resolve_training_precision(cfg: TrainConfig, device: torch.device) -> tuple[Precision, str]:
    """The precision a run uses, and why: an explicit one checked, ``auto`` by the written rule
    of :func:`~napari_synthgen.devices.auto_precision` (device, CPU flags, batch size)."""
    if cfg.precision != "auto":
        return check_precision(cfg.precision, device), "explicit"
    return auto_precision(device, "training", batch_size=cfg.batch_size)


def _check_limits(cfg: TrainConfig, device: str) -> None:
    """Seed and validation share in range, and a batch that fits in memory, checked before
    any data is read (a :class:`ConfigError` naming the setting and what fits)."""
    from ..limits import LimitError, check_range, check_seed, check_training_memory

    try:
        check_seed("seed", cfg.seed)
        check_range("val_fraction", cfg.val_fraction, 0, 1, high_open=True)
        if cfg.stride is not None:
            check_range("stride", cfg.stride, 1)
        check_training_memory(cfg.tile, cfg.batch_size, device,
                              per_px=cfg.family_entry.train_bytes_per_px)
    except LimitError as exc:
        raise ConfigError(str(exc)) from None


class _Run:
    """State of one run; :func:`train` drives it."""

    def __init__(self, cfg: TrainConfig, resume: str | Path | None,
                 stop: Callable[[], bool] | None) -> None:
        self.cfg = cfg.validate()
        self.dist = _Dist()
        self.stop = stop or (lambda: False)
        self.out = Path(cfg.out)
        self.resume = resume
        self.device = resolve_device(cfg.device)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        _check_limits(self.cfg, str(self.device))
        self.precision: Precision = "fp32"
        self.precision_note = ""
        self.last_checkpoint: tuple[int, str] | None = None
        self.history: list[dict[str, Any]] = []  # resumes, with the settings they changed

    def setup(self) -> Event:
        cfg = self.cfg
        self._refuse_used_folder()
        self.dist.init(self.device.type)
        read = {"read_as": cfg.read_as, "boundary_width": cfg.boundary_width}
        samples = load_samples(cfg.data, **read)
        if cfg.val:
            train_s, val_s = samples, load_samples(cfg.val, **read)
        else:
            train_s, val_s = split_validation(samples, cfg.val_fraction)
        self.train_samples, self.val_samples = train_s, val_s
        self.unlabeled = load_unlabeled(cfg.unlabeled) if cfg.unlabeled else []
        check_unlabeled(train_s, self.unlabeled, cfg.tile)
        self.sampler = TileSampler(train_s, tile=cfg.tile, stride=cfg.stride,
                                   batch_size=cfg.batch_size, seed=cfg.seed, flips=cfg.flips,
                                   rot90=cfg.rot90, rank=self.dist.rank, world=self.dist.world,
                                   unlabeled=self.unlabeled,
                                   unlabeled_share=cfg.unlabeled_share,
                                   cond_dropout=cfg.cond_dropout,
                                   object_share=cfg.object_share)
        if val_s:
            TileSampler(val_s, tile=cfg.tile, stride=None, batch_size=1, seed=0)  # size check
        self.total = cfg.steps or cfg.epochs * self.sampler.steps_per_epoch()
        self.stats = intensity_stats(train_s)
        self.classes = class_stats(train_s, cfg.unlabel_fraction)
        from ..quality import reference_record

        # what the curation figures compare synthetic samples with, stored in the model files
        # that only rank 0 writes
        self.reference = (reference_record((s.image, s.mask) for s in train_s)
                          if self.dist.main else None)
        saved = self._peek_resume()  # a state that cannot be resumed leaves the folder alone
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "checkpoints").mkdir(exist_ok=True)
            (self.out / "samples").mkdir(exist_ok=True)
            probe = self.out / f".write-probe-{os.getpid()}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise TrainingError(f"cannot write into {self.out} ({exc}); choose another "
                                    "--out folder.") from exc
            cfg.save(self.out / "config.yaml")
        if saved is not None and cfg.precision == "auto" and saved.get("precision"):
            # keep the numerics of the run being resumed (an auto choice could differ today)
            self.precision, self.precision_note = saved["precision"], "resumed run's precision"
        elif self.dist.main:
            self.precision, self.precision_note = resolve_training_precision(cfg, self.device)
        # every rank must train in the same precision: rank 0 decides (a resumed run keeps its own)
        self.precision, self.precision_note = self.dist.broadcast(
            (self.precision, self.precision_note))
        torch.manual_seed(cfg.seed)
        # every family's optimiser imports torch._dynamo, which imports triton: that crashes
        # a process whose OpenGL driver loaded its LLVM (training in-process beside a viewer)
        keep_triton_out()
        self.model = cfg.family_entry.build_trainer(cfg, self.device, self.precision,
                                                    self.total, self.dist.active)
        self.step = 0
        resumed = None
        if saved is not None:
            resumed = self._load_resume(saved)
        preview_from = val_s or train_s
        self.preview_masks, self.preview_images = fixed_tiles(preview_from, cfg.tile,
                                                              cfg.n_preview)
        self.preview_split = "validation" if val_s else "train"
        return ev.Started(
            step=self.step, total=self.total, resumed_from=resumed,
            device=str(self.device), precision=self.precision,
            precision_note=self.precision_note, world_size=self.dist.world,
            n_train_images=len(train_s), n_val_images=len(val_s),
            n_unlabeled_images=len(self.unlabeled),
            tiles_per_epoch=self.sampler.tiles_per_epoch,
            steps_per_epoch=self.sampler.steps_per_epoch(), out=str(self.out),
            config=cfg.to_dict(), intensity=self.stats,
        )

    def _refuse_used_folder(self) -> None:
        """A fresh run never writes into a folder holding another run's checkpoints (it would
        overwrite its config, samples and, step by step, its checkpoints)."""
        if self.resume is not None:
            return
        step = run_step(self.out)
        if step is not None:
            raise TrainingError(used_folder_message(self.out, step))

    def _peek_resume(self) -> dict[str, Any] | None:
        """Read the training state to resume from (None when not resuming)."""
        if self.resume is None:
            return None
        path = Path(self.resume)
        if path.is_dir():
            found = latest_checkpoint(path)
            if found is None:
                raise TrainingError(f"nothing to resume in {path}: no checkpoint found.")
            path = found[2]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file
            raise TrainingError(f"{path}: cannot be read as a training state ({exc}).") from exc
        missing = [k for k in ("config", "step", "model", "rng")
                   if not isinstance(state, dict) or k not in state]
        if missing or not isinstance(state.get("config"), dict):
            raise TrainingError(
                f"{path}: not a napari-synthgen training state (it has no "
                f"{', '.join(missing) or 'valid config'}). Resume from a run folder written by "
                "'napari-synthgen train' or its checkpoints/step_*.state.pt, or start a new run.")
        _check_resumable(state["config"], self.cfg)
        history = list(state.get("history", []))
        changed = {k: [v, getattr(self.cfg, k)] for k, v in state["config"].items()
                   if k not in ("out", "steps", "epochs") and getattr(self.cfg, k, v) != v}
        history.append({"resumed_from": str(path), "step": int(state["step"]),
                        "changed": changed})
        self.history = history
        return state

    def _load_resume(self, state: dict[str, Any]) -> int:
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
        _set_rng_state(state["rng"])
        if state["config"].get("lr") != self.cfg.lr:
            self.model.set_base_lr(self.cfg.lr)
        g_path, _ = checkpoint_paths(self.out, self.step)
        if g_path.is_file():
            self.last_checkpoint = (self.step, str(g_path))
        if self.step >= self.total:
            raise TrainingError(f"the checkpoint is at step {self.step}, which is not before the "
                                f"end of this run ({self.total} steps); raise --steps to go on.")
        return self.step

    @functools.cached_property
    def seen_sha256(self) -> dict[str, str]:
        """Name -> SHA-256 of the pixels of every image the model trains on (labelled and
        unlabelled), computed once."""
        from ..io import sha256_array

        return {**{s.name: sha256_array(s.image) for s in self.train_samples},
                **{r.name: sha256_array(r.image) for r in self.unlabeled}}

    @property
    def learned_null(self) -> bool:
        """Whether the model saw tiles without a mask, so that it knows the null condition
        (classifier-free guidance needs it)."""
        if not self.cfg.family_entry.learns_null_condition:
            return False
        return bool(self.unlabeled and self.cfg.unlabeled_share > 0) or self.cfg.cond_dropout > 0

    # ----------------------------------------------------------------- saving
    def save_checkpoint(self) -> Event:
        """Write the model file + state atomically, point latest.json at them, prune old ones."""
        step = self.step
        g_path, s_path = checkpoint_paths(self.out, step)
        state = {"model": self.model.state_dict(), "step": step, "rng": _rng_state(),
                 "precision": self.precision, "history": self.history,
                 "config": self.cfg.to_dict(), "world_size": self.dist.world,
                 "plugin_version": __version__}
        with atomic_path(s_path) as tmp:
            torch.save(state, tmp)
        meta = {
            "intensity": self.stats, "classes": self.classes,
            "null_condition": self.learned_null,
            "reference_stats": self.reference, "config": self.cfg.to_dict(),
            "step": step, "precision": self.precision, "precision_rule": self.precision_note,
            "provenance": {
                "plugin_version": __version__, "torch_version": torch.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": socket.gethostname(), "data": list(self.cfg.data),
                "n_train_images": len(self.train_samples),
                "train_images": [s.name for s in self.train_samples],
                "val_images": [s.name for s in self.val_samples],
                "unlabeled": list(self.cfg.unlabeled),
                "unlabeled_images": [r.name for r in self.unlabeled],
                # the pixel content the model learned from, so that `evaluate` can refuse a
                # test image the generator saw (labelled or not)
                "seen_sha256": self.seen_sha256,
                "history": self.history,
            },
        }
        self.model.save_model(g_path, meta)
        with atomic_path(self.out / "latest.json") as tmp:
            tmp.write_text(json.dumps({"step": step, "generator": g_path.name,
                                       "state": f"checkpoints/{s_path.name}"}), encoding="utf-8")
        self.last_checkpoint = (step, str(g_path))
        self._prune()
        return ev.Checkpoint(step=step, path=str(g_path), state=str(s_path))

    def _prune(self) -> None:
        for step, old in state_steps(self.out)[: -self.cfg.keep_checkpoints]:
            g, _ = checkpoint_paths(self.out, step)
            with contextlib.suppress(OSError):
                old.unlink()
                g.unlink()

    def preview(self) -> list[Event]:
        """Generate the fixed preview tiles, save a mosaic PNG, and score them against the real."""
        fake = self.model.generate(self.preview_masks).numpy()
        real = self.preview_images[:, 0].numpy()
        fake8, real8 = unit_to_uint8(fake), unit_to_uint8(real)
        rows = []
        for m, f, r in zip(self.preview_masks.numpy(), fake8, real8, strict=True):
            grey = [np.repeat(x[..., None], 3, axis=-1) for x in (f, r)]
            rows.append(np.concatenate([to_palette(m), *grey], axis=1))
        mosaic = np.concatenate(rows, axis=0)
        path = write_array(self.out / "samples" / f"step_{self.step:07d}.png", mosaic)
        from skimage.metrics import structural_similarity

        l1 = float(np.abs(fake8.astype(np.float32) - real8).mean())
        ssim = float(np.mean([structural_similarity(f, r, data_range=255)
                              for f, r in zip(fake8, real8, strict=True)]))
        return [
            ev.Sample(step=self.step, path=str(path), layout="mask | generated | real",
                      split=self.preview_split),
            ev.Validation(step=self.step, split=self.preview_split, l1=l1, ssim=ssim,
                          mean_generated=float(fake8.mean()), mean_real=float(real8.mean())),
        ]

    # ----------------------------------------------------------------- loop
    def loop(self) -> Iterator[Event]:
        cfg, main = self.cfg, self.dist.main
        started = time.perf_counter()
        first_step, ema = self.step, None
        while self.step < self.total:
            if self.dist.any(self.stop()):
                if main:
                    yield self.save_checkpoint()
                    yield ev.Finished(step=self.step, reason="stopped",
                                      checkpoint=self.last_checkpoint[1], total=self.total)
                return
            t0 = time.perf_counter()
            masks, images = self.sampler.batch(self.step)
            if cfg.unlabel_fraction > 0:
                masks = unlabel_batch(masks, cfg.unlabel_fraction, cfg.seed, self.step,
                                      self.dist.rank)
            result = self.model.step(masks, images)
            if self.dist.any(not result.finite):
                if not main:
                    return
                last = self.last_checkpoint
                yield ev.Failed(
                    step=self.step + 1, reason="non-finite loss", losses=result.losses,
                    checkpoint=last[1] if last else None,
                    message=(f"the loss became NaN or infinite at step {self.step + 1} "
                             f"({_fmt(result.losses)}); training stopped. "
                             + (f"The last good checkpoint is step {last[0]}: {last[1]}. "
                                if last else "No checkpoint was written yet. ")
                             + "Try a lower learning rate, precision fp32, or check the data."),
                )
                return
            self.step += 1
            dt = time.perf_counter() - t0
            ema = dt if ema is None else 0.9 * ema + 0.1 * dt
            if main and (self.step % cfg.log_every == 0 or self.step == self.total):
                elapsed = time.perf_counter() - started
                yield ev.Progress(
                    step=self.step, total=self.total, losses=result.losses, lr=self.model.lr,
                    tiles_per_s=self.sampler.global_batch / max(ema, 1e-9),
                    seconds_per_step=ema, eta_s=ema * (self.total - self.step),
                    elapsed_s=elapsed, epoch=self.step / self.sampler.steps_per_epoch(),
                    steps_this_run=self.step - first_step,
                )
            if main and (self.step % cfg.sample_every == 0 or self.step == self.total):
                yield from self.preview()
            if self.step % cfg.checkpoint_every == 0 and self.step != self.total and main:
                yield self.save_checkpoint()
        if main:
            yield self.save_checkpoint()
            yield ev.Finished(step=self.step, reason="completed",
                              checkpoint=self.last_checkpoint[1], total=self.total)


def _fmt(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in losses.items())


def train(config: TrainConfig, *, resume: str | Path | None = None,
          stop: Callable[[], bool] | None = None) -> Iterator[Event]:
    """Run training, yielding events; ``stop()`` returning True saves a checkpoint and ends.

    Problems (bad data, bad settings, a full disk, a failing step) end the run with a
    ``failed`` event whose ``message`` says what happened and where the last good checkpoint is;
    they are not raised.
    """
    run: _Run | None = None
    failure: ev.Failed | None = None
    try:
        run = _Run(config, resume, stop)
        event = run.setup()
        if run.dist.main:
            yield event
        yield from run.loop()
        run.dist.finish()
    except (DataError, ConfigError, TrainingError, DeviceError) as exc:
        failure = _failed(run, type(exc).__name__, str(exc))
    except DiskFullError as exc:
        failure = _failed(run, "disk full", f"{exc.strerror} {_last_note(run)}")
    except OSError as exc:
        failure = _failed(run, "OSError", f"{exc}. {_last_note(run)}")
    except Exception as exc:  # a bug: report it with the traceback, never hang a supervisor
        failure = _failed(run, type(exc).__name__, f"unexpected error: {exc}. {_last_note(run)}",
                          traceback=traceback.format_exc())
    finally:
        if run is not None:
            run.dist.close()
    if failure is not None:
        rank = run.dist.rank if run is not None else int(os.environ.get("RANK", "0"))
        if rank == 0:
            yield failure
        else:  # only rank 0 reports; the others leave a line on stderr for the cluster log
            print(f"rank {rank}: {failure['message']}", file=sys.stderr, flush=True)


def _failed(run: _Run | None, reason: str, message: str, traceback: str | None = None
            ) -> ev.Failed:
    """The ``failed`` event: what happened, and the last good checkpoint if there is one."""
    step = getattr(run, "step", 0) if run is not None else 0
    last = run.last_checkpoint[1] if run and run.last_checkpoint else None
    return ev.Failed(step=step, reason=reason, message=message, checkpoint=last,
                     traceback=traceback)


def _last_note(run: _Run | None) -> str:
    if run and run.last_checkpoint:
        step, path = run.last_checkpoint
        return f"The last good checkpoint is step {step}: {path}."
    return "No checkpoint was written in this run."


__all__ = ["Event", "TrainConfig", "TrainingError", "arch_keys", "latest_checkpoint", "train"]
