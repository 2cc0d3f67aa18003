"""Pack a trained diffusion checkpoint as the bundled diffusion demo model (float16 weights).

    python scripts/pack_diffusion_demo.py RUN_DIR_OR_FILE [--name isbi2012_diffusion_small]
        [--guidance W]

Writes ``src/napari_synthgen/resources/demo_diffusion/<name>.safetensors`` from the newest
model file in RUN_DIR (its EMA weights) with the run's metadata, and prints its SHA-256 and
size. ``--guidance`` records the classifier-free guidance the model samples with by default
(``default_guidance``; for a model that learned the null condition, measured with
``scripts/fast_vs_teacher.py --fast-guidance``). ``--model demo-diffusion`` opens it;
``MODEL_CARD.md`` beside it says how it was trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from napari_synthgen.families.diffusion.files import load_diffusion, save_diffusion
from napari_synthgen.io import sha256_file
from napari_synthgen.masks import N_CLASSES, class_record, unlabelled_counts
from napari_synthgen.registry import load_model

DEST = (Path(__file__).resolve().parents[1] / "src" / "napari_synthgen" / "resources"
        / "demo_diffusion")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="training run folder or model file")
    parser.add_argument("--name", default="isbi2012_diffusion_small")
    parser.add_argument("--guidance", type=float, default=None,
                        help="default classifier-free guidance recorded in the file")
    args = parser.parse_args()
    source = Path(load_model(args.run).info.path)  # the newest model file of a run folder
    model = load_diffusion(source)
    meta = dict(model.info.metadata)
    # the run's configuration records it (runs before 3 December: the diffusion_config)
    unlabel = float(meta.get("config", {}).get("unlabel_fraction")
                    or meta.get("diffusion_config", {}).get("unlabel_fraction") or 0.0)
    classes = meta.get("classes")
    if unlabel > 0 and isinstance(classes, dict) and float(classes.get("0", 0.0)) == 0.0:
        # runs made before training recorded it: with --unlabel-fraction the model saw that
        # share of the cells as background (the engine now records the expected fractions)
        f = [float(classes.get(str(c), 0.0)) for c in range(N_CLASSES)]
        meta["classes"] = class_record(unlabelled_counts(f, unlabel))
    if args.guidance is not None:
        from napari_synthgen.families.diffusion.sampling import check_guidance

        meta["default_guidance"] = check_guidance(args.guidance, model)
    meta["packed_from"] = {"file": source.name, "sha256": sha256_file(source),
                           "weights": "float16 copy of the float32 EMA weights"}
    DEST.mkdir(parents=True, exist_ok=True)
    for old in DEST.glob("*.safetensors"):
        old.unlink()
    out = save_diffusion(DEST / f"{args.name}.safetensors", model.network, model.spec, meta,
                         dtype=torch.float16)
    print(f"{out} {out.stat().st_size / 2**20:.1f} MB sha256 {sha256_file(out)}")


if __name__ == "__main__":
    main()
