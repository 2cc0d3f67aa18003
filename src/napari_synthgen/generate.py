"""Batch generation: many masks, several seeded variations each, into a paired output folder.

``out/images/<mask stem>_s<seed>.tif`` holds each synthesized image and
``out/masks/<mask stem>_s<seed>.tif`` its mask, so the output is itself a paired folder that
curation and training read directly; ``out/generate.jsonl`` records where each came from
(and any warning, e.g. a mask class the model never saw). A bad or damaged mask is reported,
recorded in the log and skipped; the others are still written.

A pair is the unit: image and mask are encoded to temporary files, then the mask and then the
image are renamed into place, then the log records the pair. A rerun skips a pair only when
both files decode and the log records it; anything else (a killed run's half pair, stale
temporaries, an unlogged pair) is written again, with the same bytes for the same settings.
Masks whose names differ only by extension (``a.tif``, ``a.png``) are refused up front.

Under ``torchrun`` every process takes every ``world``-th mask and writes its records to
``generate.part<rank>.jsonl``; after all are done (a gloo all-gather, which is also the
barrier) rank 0 merges the parts into ``generate.jsonl`` in the order one process would have
written them. Images depend only on (mask, seed), so the files equal a one-process run.

Each image's starting noise comes from the seed and, by default (``noise="mask"``), the mask's
content: a set of masks generated with one seed gets a different tissue under every mask (with
one shared noise, a diffusion model paints the same background texture under all of them, and a
segmenter trained on the set sees one tissue many times). ``noise="seed"`` keeps the seed alone,
so masks that differ by a stroke give images that differ only there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import __version__
from .io import (
    pair_complete,
    read_mask,
    read_spacing,
    remove_stale_temporaries,
    sha256_array,
    sha256_file,
    write_pair,
)
from .masks import (
    MaskError,
    MaskSource,
    known_classes,
    unseen_class_message,
    unseen_classes,
)
from .registry import make_synthesizer, synthesizer_class
from .synthesis import output_name


@dataclass
class GenerateJob:
    """What to generate: masks, seeds and synthesis settings."""

    model: Path
    masks: list[Path]
    out: Path
    seed: int = 0
    variations: int = 1
    stochastic: bool = False
    read_as: MaskSource = "auto"
    boundary_width: int = 2
    allow_float: bool = False
    overwrite: bool = False
    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    encoding: str | None = None
    #: what picks each image's starting noise: "mask" (the seed and the mask's content) or
    #: "seed" (the seed alone); see the module docstring
    noise: str = "mask"
    #: settings of the model's family, passed on to its synthesizer (e.g. diffusion
    #: ``{"steps": 20, "sampler": "dpm"}``); recorded in each output's params
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerateEvent:
    """Progress of a generate run: setup, note, warning, written, skipped, failed, done.

    ``note`` and ``warning`` events are produced once per run (on rank 0 under torchrun);
    ``done`` carries the totals of all processes in ``data``.
    """

    kind: str
    message: str = ""
    count: int = 1
    path: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcessShare:
    """This process's place in a run: rank, world size and local rank (1 process: 0, 1, 0)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 reports and merges the provenance log."""
        return self.rank == 0

    def indices(self, n: int) -> list[int]:
        """The mask indices this process generates: every ``world``-th from ``rank``."""
        return list(range(self.rank, n, self.world))


def process_share() -> ProcessShare:
    """Rank and world size from torchrun's environment variables (one process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"RANK {rank} and WORLD_SIZE {world} do not fit together.")
    return ProcessShare(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))))


class _Group:
    """The gloo process group generate uses to coordinate (no tensors cross devices)."""

    def __init__(self, share: ProcessShare) -> None:
        self.share = share
        self._own = False
        if share.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                # a rank that finishes its share early waits for the others: no short timeout
                dist.init_process_group("gloo", timeout=timedelta(hours=24))
                self._own = True

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` on every process (also a barrier)."""
        if self.share.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.share.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self._own:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._own = False


def _device_for(device: str, share: ProcessShare) -> str:
    """Under torchrun each process takes the GPU of its local rank ("auto" or "cuda")."""
    if share.world == 1 or device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{share.local_rank % torch.cuda.device_count()}"
    return "cpu" if device == "auto" else device


# ----------------------------------------------------------------------------- classes


def model_classes(info: Any) -> dict[int, float] | None:
    """Class id -> training fraction a model records; None when unknown (reference files)."""
    if hasattr(info, "classes"):
        return info.classes
    return known_classes(getattr(info, "metadata", {}).get("classes"))


def model_label(info: Any) -> str:
    """How messages name a model: "the demo model" or its file name."""
    from .sample_data import demo_model_path

    demo = demo_model_path()
    path = Path(info.path)
    if demo is not None and path.resolve() == demo.resolve():
        return "the demo model"
    return path.name


def unknown_classes_message(label: str, model_format: str = "") -> str:
    """The one sentence said when a model carries no record of the classes it was trained on."""
    why = ("reference pix2pix checkpoints carry no such record" if "reference" in model_format
           else "the checkpoint carries no record of them")
    return (
        f"which classes {label} was trained on is unknown ({why}); a mask class it never saw "
        "comes out as a guessed, often repeating texture."
    )


# ----------------------------------------------------------------------------- logs

LOG_NAME = "generate.jsonl"

#: the ways a generate run picks each image's starting noise (GenerateJob.noise)
NOISE_MODES: tuple[str, ...] = ("mask", "seed")


def noise_seed(seed: int, mask_sha256: str) -> int:
    """The 32-bit noise seed of an image under ``noise="mask"``: the seed and the mask's
    content hash, so every mask gets its own noise and the same mask and seed the same image."""
    digest = hashlib.sha256(f"{mask_sha256}:{seed}".encode()).hexdigest()
    return int(digest[:8], 16)


def _part_name(rank: int) -> str:
    return f"generate.part{rank}.jsonl"


def _merge_parts(out: Path, world: int) -> None:
    """Append every rank's part log to ``generate.jsonl`` in single-process order, then delete
    the parts; an unseen-class warning is kept only at its first occurrence."""
    records: list[dict[str, Any]] = []
    parts = [out / _part_name(r) for r in range(world)]
    for part in parts:
        if part.is_file():
            records += [json.loads(line) for line in part.read_text("utf-8").splitlines() if line]
    records.sort(key=lambda r: tuple(r["_order"]))
    warned: set[int] = set()
    with open(out / LOG_NAME, "a", encoding="utf-8") as log:
        for rec in records:
            rec.pop("_order")
            if rec.get("warning") == "unseen_classes":
                new = [c for c in rec["classes"] if c not in warned]
                if not new:
                    continue
                warned.update(new)
            log.write(json.dumps(rec) + "\n")
        log.flush()
        os.fsync(log.fileno())
    for part in parts:
        part.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the run


def run_generate(job: GenerateJob) -> Iterator[GenerateEvent]:
    """Generate every (mask, seed); yields an event per output and a final ``done``.

    Under torchrun (``WORLD_SIZE`` > 1) each process takes every ``world``-th mask, all write
    into ``job.out``, and rank 0 merges the per-process logs into one ``generate.jsonl``.
    """
    share = process_share()
    group = _Group(share)
    try:
        yield from _run(job, share, group)
    finally:
        group.close()


def _check_options(job: GenerateJob) -> None:
    """Refuse family settings the model's synthesizer does not take (e.g. diffusion ``steps``
    for a pix2pix model), naming them, rather than fail deep inside with a TypeError."""
    import inspect

    if not job.options:
        return
    cls = synthesizer_class(job.model)
    params = inspect.signature(cls.__init__).parameters
    unknown = [k for k in job.options if k not in params]
    if unknown:
        family = getattr(cls, "family", "") or cls.__name__
        raise ValueError(f"the synthesis options {', '.join(unknown)} do not apply to "
                         f"{family} models ({job.model}); leave them out.")


def check_output_names(masks: list[Path]) -> None:
    """Refuse masks whose output names would collide (``a.tif`` and ``a.png`` both give
    ``a_s<seed>.tif``), naming every clash, before anything is computed or written."""
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        by_stem.setdefault(Path(mask).stem, []).append(Path(mask))
    clashes = [files for files in by_stem.values() if len(files) > 1]
    if clashes:
        lines = [" and ".join(str(f) for f in files) for files in clashes[:20]]
        raise ValueError(
            "these masks differ only by extension or folder, so their images would be written "
            "to the same file names (<mask name>_s<seed>.tif):\n  " + "\n  ".join(lines)
            + "\nRename one of each so that every mask has its own name, then run again.")


def _repair_log_tail(path: Path) -> None:
    """Cut a last line a killed run left half-written, so the next record starts a line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


def _pair_state(image_path: Path, mask_path: Path, recorded: bool) -> str:
    """``done`` (both files readable and logged), ``partial`` (some of it there) or ``new``."""
    if not image_path.exists() and not mask_path.exists():
        return "new"
    if recorded and pair_complete(image_path, mask_path):
        return "done"
    return "partial"


def check_job(job: GenerateJob) -> None:
    """Refuse numbers out of range and tiles too large for memory before anything is loaded
    or written (a :class:`~.limits.LimitError` naming the setting, its value and the range)."""
    from .limits import check_range, check_seed, check_synthesis_memory

    check_range("variations", job.variations, 1)
    check_seed("seed", job.seed, job.variations)
    if job.noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {job.noise!r}.")
    check_range("boundary_width", job.boundary_width, 1)
    if job.batch_size is not None:
        check_range("batch_size", job.batch_size, 1)
    if job.overlap is not None:
        check_range("overlap", job.overlap, 0)
    if job.tile is not None:
        check_range("tile", job.tile, 1)
        if job.overlap is not None:
            check_range("overlap", job.overlap, 0, job.tile, high_open=True,
                        what=f"smaller than the tile {job.tile}")
        check_synthesis_memory(job.tile, job.batch_size, job.device)


def _run(job: GenerateJob, share: ProcessShare, group: _Group) -> Iterator[GenerateEvent]:
    check_job(job)
    check_output_names(job.masks)
    _check_options(job)
    synth = make_synthesizer(
        job.model, device=_device_for(job.device, share), precision=job.precision,
        tile=job.tile, overlap=job.overlap, batch_size=job.batch_size, encoding=job.encoding,
        stochastic=job.stochastic, **job.options,
    )
    info = synth.describe()
    model_path = Path(synth.info.path)
    known = model_classes(synth.info)
    label = model_label(synth.info)
    if share.main:
        procs = f", {share.world} processes" if share.world > 1 else ""
        yield GenerateEvent(
            "setup",
            f"model {synth.info.short()} ({synth.info.format}), encoding "
            f"{synth.encoding}, device {info['device']}, precision {synth.precision} "
            f"[{synth.precision_note or 'explicit'}], tile {synth.tile} overlap {synth.overlap}"
            + "".join(f", {k} {v}" for k, v in info.get("family_settings", {}).items())
            + procs,
            data=info,
        )
        if job.variations > 1 and not synth.stochastic:
            yield GenerateEvent("setup", "variations without --stochastic are identical images.")
        if known is None:
            yield GenerateEvent("note", unknown_classes_message(label, synth.info.format))
        for note in getattr(synth, "notes", ()):  # e.g. steps other than a distilled model's
            yield GenerateEvent("note", note)
    model_sha = synth.info.sha256 or sha256_file(model_path)
    (job.out / "images").mkdir(parents=True, exist_ok=True)
    (job.out / "masks").mkdir(parents=True, exist_ok=True)
    seeds = [job.seed + i for i in range(job.variations)]
    failed = written = skipped = 0
    failed_files: list[dict[str, str]] = []
    warned: set[int] = set()
    log_path = job.out / (LOG_NAME if share.world == 1 else _part_name(share.rank))
    _repair_log_tail(log_path)
    recorded = set(read_provenance(job.out))
    with open(log_path, "a", encoding="utf-8") as log:

        def record(rec: dict[str, Any], order: tuple[int, int]) -> None:
            if share.world > 1:
                rec = {**rec, "_order": list(order)}
            log.write(json.dumps(rec) + "\n")
            log.flush()

        for index in share.indices(len(job.masks)):
            mask_path = job.masks[index]
            try:
                mask = read_mask(mask_path, job.read_as, boundary_width=job.boundary_width,
                                 allow_float=job.allow_float)
                spacing = read_spacing(mask_path)  # a stack's image keeps its voxel size
            except (MaskError, ValueError, OSError) as exc:
                failed += len(seeds)
                failed_files.append({"path": os.fspath(mask_path), "reason": str(exc)})
                record({"failed": "unreadable_mask", "source_mask": os.fspath(mask_path),
                        "message": str(exc)}, (index, -2))
                yield GenerateEvent("failed", str(exc), count=len(seeds), path=mask_path)
                continue
            new = [c for c in unseen_classes(mask, known) if c not in warned]
            if new and known is not None:
                warned.update(new)
                message = unseen_class_message(new, known, label)
                record({"warning": "unseen_classes", "classes": new, "message": message,
                        "source_mask": os.fspath(mask_path), "model": os.fspath(model_path)},
                       (index, -1))
                if share.main:
                    yield GenerateEvent("warning", message, path=mask_path,
                                        data={"classes": new})
            mask_sha = sha256_array(mask)
            for k, seed in enumerate(seeds):
                name = output_name(mask_path, seed)
                image_path, mask_out = job.out / "images" / name, job.out / "masks" / name
                for dest in (image_path, mask_out):  # what a killed run left behind
                    remove_stale_temporaries(dest)
                state = _pair_state(image_path, mask_out, f"images/{name}" in recorded)
                if state == "done" and not job.overwrite:
                    skipped += 1
                    yield GenerateEvent("skipped", f"{image_path} exists (use --overwrite)",
                                        path=image_path)
                    continue
                draw = noise_seed(seed, mask_sha) if job.noise == "mask" else seed
                try:
                    t0 = time.perf_counter()
                    image = synth(mask, seed=draw)
                    write_pair(image_path, image, mask_out, mask, spacing=spacing)
                except (ValueError, OSError, RuntimeError) as exc:
                    failed += 1
                    failed_files.append({"path": os.fspath(mask_path),
                                         "reason": f"seed {seed}: {exc}"})
                    record({"failed": "not_written", "source_mask": os.fspath(mask_path),
                            "seed": seed, "message": str(exc)}, (index, k))
                    yield GenerateEvent("failed", f"{mask_path.name} seed {seed}: {exc}",
                                        path=mask_path)
                    continue
                rec = {
                    "image": f"images/{name}", "mask": f"masks/{name}",
                    "source_mask": os.fspath(mask_path), "source_mask_sha256": mask_sha,
                    "model": os.fspath(model_path), "model_sha256": model_sha,
                    "family": synth.info.family, "architecture": synth.info.architecture,
                    "model_classes": None if known is None else {
                        str(c): f for c, f in sorted(known.items())},
                    "seed": seed, "noise": job.noise, "noise_seed": draw,
                    "params": {key: info[key] for key in (
                        "device", "precision", "precision_note", "tile", "overlap",
                        "batch_size", "encoding", "stochastic")}
                        | dict(info.get("family_settings", {})),
                    "seconds": round(time.perf_counter() - t0, 3),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "plugin_version": __version__,
                }
                if share.world > 1:
                    rec["rank"] = share.rank
                if state == "partial":
                    rec["redone"] = "an earlier run stopped before this pair was complete"
                record(rec, (index, k))
                written += 1
                yield GenerateEvent("written", name, path=image_path, data=rec)
    synth.close()
    totals = group.gather({"written": written, "skipped": skipped, "failed": failed,
                           "unseen": sorted(warned), "failed_files": failed_files})
    if share.world > 1 and share.main:
        _merge_parts(job.out, share.world)
        late = sorted({c for t in totals for c in t["unseen"]} - warned)
        if late and known is not None:
            yield GenerateEvent("warning", unseen_class_message(late, known, label),
                                data={"classes": late})
    written, skipped, failed = (sum(t[key] for t in totals)
                                for key in ("written", "skipped", "failed"))
    parts = [f"wrote {written} image{'s' if written != 1 else ''}"]
    if skipped:
        parts.append(f"skipped {skipped} existing")
    if failed:
        parts.append(f"{failed} failed")
    yield GenerateEvent("done", ", ".join(parts), count=failed,
                        data={"written": written, "skipped": skipped, "failed": failed,
                              "processes": share.world,
                              "failed_files": [f for t in totals for f in t["failed_files"]]})


def read_provenance(folder: Path) -> dict[str, dict[str, Any]]:
    """The newest ``generate.jsonl`` record per image path (relative), for curation.

    Part logs a multi-process run left behind (it stopped before rank 0 merged them) are read
    too, after the merged log.
    """
    records: dict[str, dict[str, Any]] = {}
    root = Path(folder)
    logs = [root / LOG_NAME, *sorted(root.glob("generate.part*.jsonl"))]
    for log in logs:
        if not log.is_file():
            continue
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "image" in rec:
                rec.pop("_order", None)
                records[rec["image"]] = rec
    return records
