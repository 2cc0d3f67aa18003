"""Pack a distillation run's model as the bundled few-step demo, `demo-diffusion-fast`.

    python scripts/pack_diffusion_fast.py RUN_DIR_OR_FILE [--dest DIR] [--partial]

Writes ``src/napari_synthgen/resources/demo_diffusion_fast/isbi2012_diffusion_small_fast
.safetensors`` (float16 copy of the EMA weights, with the run's metadata and its ``distilled``
record), ``train_config.yaml`` (the run's configuration) and ``MODEL_CARD.md`` (filled in from
the file's metadata; the measurements section is left for ``benchmarks/diffusion.py`` and
``napari-synthgen report`` / ``evaluate``), and prints the SHA-256 and size. A run that has
not finished its rounds is refused unless ``--partial`` (e.g. to try the packing on a short
run; never commit such a model).
"""

# ruff: noqa: E501  (the model card's table rows are long Markdown lines)
from __future__ import annotations

import argparse
import shutil
from itertools import pairwise
from pathlib import Path

import torch

from napari_synthgen.families.diffusion.files import load_diffusion, save_diffusion
from napari_synthgen.io import sha256_file
from napari_synthgen.registry import load_model

NAME = "isbi2012_diffusion_small_fast"
DEST = (Path(__file__).resolve().parents[1] / "src" / "napari_synthgen" / "resources"
        / "demo_diffusion_fast")

CARD = """# Few-step demo diffusion model: `{file}`

A {steps}-step version of the bundled `demo-diffusion` model, made by progressive distillation
(Salimans & Ho 2022): {rounds} rounds, each teaching the student to do in one DDIM step what its
teacher did in two ({start} -> {steps} step{plural}{runs_note}). Same masks in, same kind of image out, about
{speed} times fewer network evaluations than the teacher's 20 DPM-Solver++ steps. It is bundled
so that the plugin has a fast diffusion model out of the box (`--model demo-diffusion-fast`,
or "demo-diffusion-fast (bundled)" in the Synthesize widget's model list); it samples with
{steps} DDIM step{plural} by default (the steps it was distilled for; `--steps` still wins, with a
note).

| | |
| --- | --- |
| Teacher | `{teacher_file}` (`demo-diffusion`), SHA-256 `{teacher_sha}`{via} |
| Architecture | the teacher's: diffusers `UNet2DModel`, configuration `small`; input: noisy image + one-hot mask in [-1, 1]; v-prediction, `squaredcos_cap_v2` betas, 1000 timesteps |
| Method | progressive distillation, {stages}; target in closed form from two teacher DDIM steps, truncated-SNR weighted x loss; the EMA student becomes the next round's teacher |
| Weights | float16 copy of the student's EMA weights (decay {ema_decay}, warm-up per round); {size_mb:.1f} MB |
| Training data | the teacher's: ISBI 2012 training slices (27 for training, 3 held out), 128-px crops, batch {batch}, flips and 90-degree turns, unlabel share {unlabel} |
| Training ({last}) | {total} steps, lr {lr} ({schedule} per round, {warmup} warm-up steps), seed {seed}, {precision} on {host} |
| Sampling | DDIM, {steps} step{plural} (`sampler {sampler}`) |
| SHA-256 | `{sha}` |

## How it was made

From the repository root, with `../shared` beside it:

```bash
{commands}
```

`train_config.yaml` beside this card is the configuration the last run saved. A stopped run
continues exactly with the same `distill_demo.sh` command.

## Measurements

Fill in from `python benchmarks/diffusion.py` (time against the 20-step DPM-Solver++ teacher at
512 x 512, one process) and from `napari-synthgen report` / `napari-synthgen evaluate` on the
same masks for this model and the teacher (score and synthetic-only boundary F1).

## Limits

The teacher's (see `../demo_diffusion/MODEL_CARD.md`): one tissue, one microscope, one pixel
size; a CPU-trained small model. Distillation copies the teacher and cannot be better than it;
with fewer steps than it was distilled for, images get blurrier.

## Data licence and citation

Trained on third-party research data (ISBI 2012 EM segmentation challenge). Cite
Arganda-Carreras et al. (2015) *Front. Neuroanat.* 9:142, doi:10.3389/fnana.2015.00142, and
Cardona et al. (2010) *PLoS Biol* 8(10): e1000502, doi:10.1371/journal.pbio.1000502.
"""


#: the configuration that makes each stage, by the steps it starts from (demo-diffusion: 32)
CONFIGS = {32: "scripts/distill_demo.yaml", 2: "scripts/distill_demo_1step.yaml"}


def chain(rec: dict) -> list[dict]:
    """The ``distilled`` records of a model and of the students it was distilled from (a run
    whose teacher was itself distilled keeps the teacher's record), first run first."""
    out = [rec]
    while isinstance(out[-1].get("teacher", {}).get("distilled"), dict):
        out.append(out[-1]["teacher"]["distilled"])
    return out[::-1]


def describe_stage(rec: dict) -> str:
    """'32 -> 2 DDIM steps in 4 rounds of 150 optimisation steps (round ends at steps 150,
    300, 450)'."""
    bounds = rec.get("round_bounds", [])
    per = (bounds[1] - bounds[0]) if len(bounds) > 1 else "?"
    ends = ", ".join(str(b) for b in bounds[1:-1])
    return (f"{rec['start_steps']} -> {rec['steps']} DDIM steps in {rec['rounds']} "
            f"round{'s' if rec['rounds'] != 1 else ''} of {per} optimisation steps"
            + (f" (round ends at steps {ends})" if ends else ""))


def pack(run: Path, dest: Path = DEST, *, partial: bool = False) -> Path:
    """Pack the newest model of ``run`` (a distilled diffusion model) into ``dest``."""
    source = Path(load_model(run).info.path)  # the newest model file of a run folder
    model = load_diffusion(source)
    meta = dict(model.info.metadata)
    rec = meta.get("distilled")
    if not isinstance(rec, dict):
        raise SystemExit(f"{source} is not a distilled model (no 'distilled' record); give "
                         "the folder of a run made with --distill-from.")
    if not rec.get("complete") and not partial:
        raise SystemExit(f"{source} is from an unfinished distillation (round {rec['round']} "
                         f"of {rec['rounds']}, {rec['steps']} steps); finish the run or pass "
                         "--partial for a trial packing.")
    meta["packed_from"] = {"file": source.name, "sha256": sha256_file(source),
                           "weights": "float16 copy of the float32 EMA weights"}
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.safetensors"):
        old.unlink()
    out = save_diffusion(dest / f"{NAME}.safetensors", model.network, model.spec, meta,
                         dtype=torch.float16)
    run_dir = run if run.is_dir() else source.parent
    if (run_dir / "config.yaml").is_file():
        shutil.copyfile(run_dir / "config.yaml", dest / "train_config.yaml")
    cfg = meta.get("config", {})
    prov = meta.get("provenance", {})
    stages = chain(rec)
    root = stages[0]["teacher"]
    commands = []
    for k, st in enumerate(stages):
        config = CONFIGS.get(st["start_steps"], "CONFIG")
        commands += [f"bash scripts/distill_demo.sh RUN{k + 1} ../shared/data/isbi2012 {config}",
                     f"python scripts/pack_diffusion_fast.py RUN{k + 1}"]
    card = CARD.format(
        file=out.name, steps=rec["steps"], plural="s" if rec["steps"] != 1 else "", rounds=sum(st["rounds"] for st in stages),
        start=stages[0]["start_steps"],
        runs_note=(f"; {len(stages)} runs, each from the previous one's packed model"
                   if len(stages) > 1 else ""),
        speed=f"{20 / rec['steps']:g}", teacher_file=root.get("file"),
        teacher_sha=root.get("sha256"),
        via="".join(f"; then its {st['steps']}-step student, SHA-256 "
                    f"`{rec_next['teacher'].get('sha256')}`"
                    for st, rec_next in pairwise(stages)),
        stages=", then ".join(describe_stage(st) + (f" (`{CONFIGS[st['start_steps']]}`)"
                                                     if st["start_steps"] in CONFIGS else "")
                              for st in stages),
        last="last run" if len(stages) > 1 else "the run",
        commands="\n".join(commands),
        ema_decay=meta.get("ema_decay"), size_mb=out.stat().st_size / 2**20,
        batch=cfg.get("batch_size"), unlabel=cfg.get("unlabel_fraction"),
        total=meta.get("steps_trained"), lr=cfg.get("lr"), schedule=cfg.get("lr_schedule"),
        warmup=cfg.get("warmup_steps"), seed=cfg.get("seed"), precision=meta.get("precision"),
        host=prov.get("host", "?"), sampler=rec["sampler"], sha=sha256_file(out))
    (dest / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(f"{out} {out.stat().st_size / 2**20:.1f} MB sha256 {sha256_file(out)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="distillation run folder or model file")
    parser.add_argument("--dest", type=Path, default=DEST,
                        help="where to write (default: the package's demo_diffusion_fast)")
    parser.add_argument("--partial", action="store_true",
                        help="pack a model of an unfinished run (trials only)")
    args = parser.parse_args()
    pack(args.run, args.dest, partial=args.partial)


if __name__ == "__main__":
    main()
