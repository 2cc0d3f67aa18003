"""Pack a trained checkpoint as the bundled demo model (float16 weights, metadata kept).

    python scripts/pack_demo_model.py RUN_DIR [--name isbi2012_unet256_ngf16] [--classes-from DATA]
    python scripts/pack_demo_model.py --classes-from DATA

The first form writes ``src/napari_synthgen/resources/demo_model/<name>.safetensors`` from the
newest generator in RUN_DIR. The second adds (or refreshes) the ``classes`` record of the
bundled model in place: the pixel fraction of each class over the training masks the model's
metadata lists (``provenance.train_images``), read from the paired folder DATA, and the
reference statistics of those pairs that the curation figures compare with; the weights are
copied byte for byte (checked). Both print the SHA-256 and the file size. The model card
(``MODEL_CARD.md`` beside it) records how RUN_DIR was trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_synthgen.families.pix2pix.files import save_model
from napari_synthgen.io import atomic_path, find_pairs, read_image, read_mask, sha256_file
from napari_synthgen.masks import N_CLASSES, class_record, unlabelled_counts
from napari_synthgen.models.checkpoints import METADATA_KEY
from napari_synthgen.quality import REFERENCE_KEY, reference_record
from napari_synthgen.registry import load_model

DEST = Path(__file__).resolve().parents[1] / "src" / "napari_synthgen" / "resources" / "demo_model"


def class_fractions(data: Path, train_images: list[str] | None,
                    unlabel_fraction: float = 0.0) -> tuple[dict, dict]:
    """The ``classes`` record over the masks of ``train_images`` (all of DATA when None), and
    where it came from. A run trained with ``--unlabel-fraction`` saw that share of the cells
    as background: its expected fractions, as training records them (unlabelled_counts)."""
    pairs = {p.stem: p for p in find_pairs(data)}
    stems = [Path(n).name for n in train_images] if train_images else sorted(pairs)
    missing = [s for s in stems if s not in pairs]
    if missing:
        raise SystemExit(f"{data}: no image/mask pair for {', '.join(missing)}.")
    counts = np.zeros(N_CLASSES, dtype=np.int64)
    for stem in stems:
        mask = read_mask(pairs[stem].mask)
        counts += np.bincount(mask.ravel(), minlength=N_CLASSES)[:N_CLASSES]
    fractions = unlabelled_counts(counts, unlabel_fraction)
    how = "pixel fraction per class over the training masks"
    if unlabel_fraction > 0:
        how += f", {unlabel_fraction:g} of the cells shown as background (--unlabel-fraction)"
    source = {"data": data.name, "masks": stems, "pixels": int(counts.sum()), "how": how}
    return class_record(fractions), source


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def refresh_classes(model_file: Path, data: Path) -> Path:
    """Rewrite ``model_file``'s header with a ``classes`` record; the tensors stay identical."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model_file), framework="pt", device="cpu") as fh:
        header = dict(fh.metadata() or {})
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    doc = json.loads(header[METADATA_KEY])
    train = doc.get("provenance", {}).get("train_images")
    unlabel = float((doc.get("config") or {}).get("unlabel_fraction") or 0.0)
    doc["classes"], doc["classes_from"] = class_fractions(data, train, unlabel)
    # the curation figures' reference: statistics of the same training pairs, as training
    # stores them in every new checkpoint
    pairs = {q.stem: q for q in find_pairs(data)}
    stems = doc["classes_from"]["masks"]
    doc[REFERENCE_KEY] = reference_record(
        (read_image(pairs[s].image), read_mask(pairs[s].mask)) for s in stems)
    header[METADATA_KEY] = json.dumps(doc)
    mode = model_file.stat().st_mode & 0o777
    with atomic_path(model_file) as tmp:
        save_file(tensors, tmp, metadata=header)
    model_file.chmod(mode)
    with safe_open(str(model_file), framework="pt", device="cpu") as fh:
        for key, value in tensors.items():
            back = fh.get_tensor(key)
            if back.dtype != value.dtype or not torch.equal(_bytes(back), _bytes(value)):
                raise SystemExit(f"{model_file}: tensor {key} changed while repacking.")
    print(f"classes {doc['classes']} and reference statistics over "
          f"{len(doc['classes_from']['masks'])} training pairs")
    return model_file


def pack(run: Path, name: str) -> Path:
    """Save the newest generator of ``run`` as the bundled model with float16 weights."""
    model = load_model(run)
    meta = dict(model.info.metadata)
    meta["packed_from"] = {"file": Path(model.info.path).name, "sha256": model.info.sha256,
                           "weights": "float16 copy of the float32 checkpoint"}
    DEST.mkdir(parents=True, exist_ok=True)
    for old in DEST.glob("*.safetensors"):
        old.unlink()
    return save_model(DEST / f"{name}.safetensors", model.network, model.spec,
                      encoding=model.info.encoding, tile=model.info.tile, metadata=meta,
                      dtype=torch.float16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, nargs="?", default=None,
                        help="training run folder to pack (omit to update the bundled model)")
    parser.add_argument("--name", default="isbi2012_unet256_ngf16")
    parser.add_argument("--classes-from", type=Path, default=None, metavar="DATA",
                        help="paired folder of the training data: add/refresh the classes "
                             "record and the reference statistics")
    args = parser.parse_args()
    if args.run is None and args.classes_from is None:
        parser.error("give RUN_DIR to pack, or --classes-from DATA to update the bundled model.")
    out = pack(args.run, args.name) if args.run is not None else DEST / f"{args.name}.safetensors"
    if args.classes_from is not None:
        refresh_classes(out, args.classes_from)
    if out.stem != "isbi2012_unet256_ngf16":
        print("note: update BUNDLED_MODELS in src/napari_synthgen/sample_data.py to this name")
    print(f"{out} {out.stat().st_size / 2**20:.1f} MB sha256 {sha256_file(out)}")


if __name__ == "__main__":
    main()
