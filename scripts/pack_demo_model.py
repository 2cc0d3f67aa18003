"""Pack a trained checkpoint as the bundled demo model (float16 weights, metadata kept).

    python scripts/pack_demo_model.py RUN_DIR [--name isbi2012_unet256_ngf16]

Writes ``src/napari_synthgen/resources/demo_model/<name>.safetensors`` from the newest
generator in RUN_DIR and prints its SHA-256 and the file size. The model card
(``MODEL_CARD.md`` beside it) records how RUN_DIR was trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from napari_synthgen.io import sha256_file
from napari_synthgen.models.checkpoints import load_model, save_model

DEST = Path(__file__).resolve().parents[1] / "src" / "napari_synthgen" / "resources" / "demo_model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="isbi2012_unet256_ngf16")
    args = parser.parse_args()
    model = load_model(args.run)
    meta = dict(model.info.metadata)
    meta["packed_from"] = {"file": Path(model.info.path).name, "sha256": model.info.sha256,
                           "weights": "float16 copy of the float32 checkpoint"}
    DEST.mkdir(parents=True, exist_ok=True)
    for old in DEST.glob("*.safetensors"):
        old.unlink()
    out = save_model(DEST / f"{args.name}.safetensors", model.network, model.spec,
                     encoding=model.info.encoding, tile=model.info.tile, metadata=meta,
                     dtype=torch.float16)
    print(f"{out} {out.stat().st_size / 2**20:.1f} MB sha256 {sha256_file(out)}")


if __name__ == "__main__":
    main()
