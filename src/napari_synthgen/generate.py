"""Batch generation: many masks, several seeded variations each, into a paired output folder.

``out/images/<mask stem>_s<seed>.tif`` holds each synthesized image and
``out/masks/<mask stem>_s<seed>.tif`` its mask, so the output is itself a paired folder that
curation and training read directly; ``out/generate.jsonl`` records where each came from.
A bad mask is reported and skipped; the others are still written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .io import read_mask, sha256_array, sha256_file, write_image, write_mask
from .masks import MaskError, MaskSource
from .synthesis import Synthesizer, output_name


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
    overwrite: bool = False
    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    encoding: str | None = None


@dataclass
class GenerateEvent:
    """Progress of a generate run: setup, written, skipped, failed, done."""

    kind: str
    message: str = ""
    count: int = 1
    path: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)


def run_generate(job: GenerateJob) -> Iterator[GenerateEvent]:
    """Generate every (mask, seed); yields an event per output and a final ``done``."""
    synth = Synthesizer(
        job.model, device=job.device, precision=job.precision, tile=job.tile,
        overlap=job.overlap, batch_size=job.batch_size, encoding=job.encoding,
        stochastic=job.stochastic,
    )
    info = synth.describe()
    model_path = Path(synth.info.path)
    yield GenerateEvent(
        "setup",
        f"model {synth.info.netG} ngf {synth.info.ngf} ({synth.info.format}), encoding "
        f"{synth.encoding}, device {info['device']}, precision {synth.precision} "
        f"[{synth.precision_note or 'explicit'}], tile {synth.tile} overlap {synth.overlap}",
        data=info,
    )
    if job.variations > 1 and not synth.stochastic:
        yield GenerateEvent("setup", "variations without --stochastic are identical images.")
    model_sha = synth.info.sha256 or sha256_file(model_path)
    (job.out / "images").mkdir(parents=True, exist_ok=True)
    (job.out / "masks").mkdir(parents=True, exist_ok=True)
    seeds = [job.seed + i for i in range(job.variations)]
    failed = written = skipped = 0
    with open(job.out / "generate.jsonl", "a", encoding="utf-8") as log:
        for mask_path in job.masks:
            try:
                mask = read_mask(mask_path, job.read_as, boundary_width=job.boundary_width)
            except (MaskError, ValueError, OSError) as exc:
                failed += len(seeds)
                yield GenerateEvent("failed", str(exc), count=len(seeds), path=mask_path)
                continue
            mask_sha = sha256_array(mask)
            for seed in seeds:
                name = output_name(mask_path, seed)
                image_path = job.out / "images" / name
                if image_path.exists() and not job.overwrite:
                    skipped += 1
                    yield GenerateEvent("skipped", f"{image_path} exists (use --overwrite)",
                                        path=image_path)
                    continue
                try:
                    t0 = time.perf_counter()
                    image = synth(mask, seed=seed)
                    write_image(image_path, image)
                    write_mask(job.out / "masks" / name, mask)
                except (ValueError, OSError, RuntimeError) as exc:
                    failed += 1
                    yield GenerateEvent("failed", f"{mask_path.name} seed {seed}: {exc}",
                                        path=mask_path)
                    continue
                record = {
                    "image": f"images/{name}", "mask": f"masks/{name}",
                    "source_mask": os.fspath(mask_path), "source_mask_sha256": mask_sha,
                    "model": os.fspath(model_path), "model_sha256": model_sha,
                    "family": synth.info.family, "architecture": synth.info.netG,
                    "seed": seed, "params": {k: info[k] for k in (
                        "device", "precision", "tile", "overlap", "batch_size", "encoding",
                        "stochastic")},
                    "seconds": round(time.perf_counter() - t0, 3),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "plugin_version": __version__,
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                written += 1
                yield GenerateEvent("written", name, path=image_path, data=record)
    synth.close()
    parts = [f"wrote {written} image{'s' if written != 1 else ''}"]
    if skipped:
        parts.append(f"skipped {skipped} existing")
    if failed:
        parts.append(f"{failed} failed")
    yield GenerateEvent("done", ", ".join(parts), count=failed)


def read_provenance(folder: Path) -> dict[str, dict[str, Any]]:
    """The newest ``generate.jsonl`` record per image path (relative), for curation."""
    records: dict[str, dict[str, Any]] = {}
    log = Path(folder) / "generate.jsonl"
    if not log.is_file():
        return records
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "image" in rec:
            records[rec["image"]] = rec
    return records
