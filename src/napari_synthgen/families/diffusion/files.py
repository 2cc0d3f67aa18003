"""Our file format for diffusion models: one ``.safetensors`` with the EMA weights and a header.

The header key ``napari_synthgen`` holds JSON: ``format_version``, ``family: "diffusion"``, the
``UNet2DModel`` config (``unet``), the noise ``scheduler`` config, the ``spec``, ``encoding``,
``tile`` and free metadata (training config, steps, classes...), as the pix2pix format
(``models/checkpoints/ours.py``) does, so that ``load_model`` can dispatch on ``family``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...io import atomic_path
from ...models.checkpoints.common import METADATA_KEY, CheckpointError
from ...models.checkpoints.ours import _json_default
from .networks import (
    FAMILY,
    DiffusionSpec,
    DiffusionSpecError,
    build_unet,
    scheduler_config,
    unet_config,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ...models.checkpoints.info import LoadedModel

FORMAT_VERSION = 1
#: the sampler a distilled model was trained for (its ``distilled.steps`` are DDIM steps)
DISTILL_SAMPLER = "ddim"
_RESERVED = ("format_version", "family", "unet", "scheduler", "spec", "encoding", "tile")
_RESAVE = "the file is incomplete or was altered; save the model again"


def _tensors(network: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in network.state_dict().items():
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
        value = value.detach().cpu()
        out[key] = (value.to(dtype) if value.is_floating_point() else value).contiguous()
    return out


def save_diffusion(
    path: str | os.PathLike,
    unet: nn.Module,
    spec: DiffusionSpec,
    metadata: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``unet`` (the EMA weights, when training) and its spec to one file, atomically."""
    from safetensors.torch import save_file

    dest = Path(path)
    if dest.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{dest}: napari-synthgen models are saved as .safetensors files.")
    extra = dict(metadata or {})
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        raise CheckpointError(f"metadata may not set {', '.join(clash)}: save_diffusion writes "
                              "these itself.")
    doc = {"format_version": FORMAT_VERSION, "family": FAMILY, "unet": unet_config(spec),
           "scheduler": scheduler_config(spec), "spec": spec.to_dict(),
           "encoding": spec.encoding, "tile": spec.tile, **extra}
    try:
        header = json.dumps(doc, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata cannot be stored as JSON: {exc}.") from None
    tensors = _tensors(unet, dtype)
    expected = build_unet(spec).state_dict()
    if set(tensors) != set(expected) or any(
            tensors[k].shape != expected[k].shape for k in expected):
        raise CheckpointError(f"cannot save {dest.name}: the network does not match its spec "
                              f"({spec.config}, widths {list(spec.block_out_channels)}).")
    with atomic_path(dest) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: header})
    return dest


def load_named_diffusion(source: str, option: str, error: type[Exception]) -> Any:
    """The diffusion model (a LoadedModel) that setting ``option`` names: a model file, run
    folder or bundled name; a model of another family or an unreadable one raises ``error``
    saying why."""
    from ...models.checkpoints.locate import model_family

    family = model_family(source)
    if family is not None and family != "diffusion":
        raise error(f"{option} {source!r} is a {family} model; it must be a diffusion model "
                    "trained with napari-synthgen (e.g. demo-diffusion).")
    try:
        return load_diffusion(source)
    except (CheckpointError, FileNotFoundError) as exc:
        raise error(f"{option} {source!r} cannot be read: {exc}") from None


def agreement_problems(spec: DiffusionSpec, cfg: Any, who: str) -> list[str]:
    """What a run built on another diffusion model (fine-tuned from it, distilled from it) must
    share with it: the mask encoding, and a tile its U-Net can halve down to the bottom."""
    problems = []
    if cfg.encoding != spec.encoding:
        problems.append(f"{who} was trained on {spec.encoding!r} masks; set encoding to "
                        f"{spec.encoding} (--encoding {spec.encoding}).")
    if cfg.tile % spec.divisor:
        problems.append(f"tile {cfg.tile} must be a multiple of {spec.divisor} for the U-Net "
                        f"of {who}.")
    return problems


def _spec_of(doc: Mapping[str, Any], path: Path) -> DiffusionSpec:
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: its header has no valid format_version "
                              f"(found {version!r}); {_RESAVE}.")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer napari-synthgen (diffusion format "
                              f"{version}; this version reads up to {FORMAT_VERSION}). Update "
                              "napari-synthgen to load it.")
    family = doc.get("family")
    if family != FAMILY:
        raise CheckpointError(f"{path}: it holds a {family!r} model, not a diffusion model; "
                              "load it with napari_synthgen.registry.load_model.")
    spec_doc = doc.get("spec")
    if not isinstance(spec_doc, Mapping):
        raise CheckpointError(f"{path}: its header has no diffusion spec; {_RESAVE}.")
    try:
        spec = DiffusionSpec.from_dict(dict(spec_doc))
    except (DiffusionSpecError, ValueError) as exc:
        raise CheckpointError(f"{path}: {str(exc).rstrip('.')}; {_RESAVE}.") from None
    stored = doc.get("unet")
    if stored is not None and stored != unet_config(spec):
        raise CheckpointError(f"{path}: its U-Net config does not agree with its spec; "
                              f"{_RESAVE}.")
    return spec


def build_from(doc: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], path: Path
               ) -> tuple[nn.Module, DiffusionSpec, dict[str, Any]]:
    """The network (float32, CPU, eval mode), spec and metadata of a diffusion header ``doc``
    whose weights are ``tensors`` (the diffusion family's ``load`` and :func:`load_diffusion`)."""
    spec = _spec_of(doc, path)
    net = build_unet(spec)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"{path}: its weights do not fit its spec ({' '.join(first)}); "
                              f"{_RESAVE}.") from None
    net.eval()
    return net, spec, {k: v for k, v in doc.items() if k not in _RESERVED}


def steps_trained(metadata: Mapping[str, Any]) -> int | None:
    """The optimisation steps a model file says it was trained for (None: it does not say)."""
    steps = metadata.get("steps_trained", metadata.get("step"))
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def load_diffusion(path: str | os.PathLike) -> LoadedModel:
    """Load a diffusion model saved by :func:`save_diffusion` (float32, CPU, eval mode), or a
    bundled one by name; a file that is not a diffusion model is refused by name."""
    from ...models.checkpoints.locate import read_model_file
    from . import DIFFUSION

    found = read_model_file(path)
    if found.doc is None:
        raise CheckpointError(f"{found.file}: it has no napari-synthgen header, so it is not a "
                              "diffusion model saved by napari-synthgen.")
    _spec_of(found.doc, found.file)  # another family, a newer format or a damaged spec
    try:
        return DIFFUSION.load(found.tensors, found.doc, file=found.file, kind=found.kind,
                              notes=found.notes, encoding=None, dropout=None)
    except CheckpointError as exc:
        raise CheckpointError(f"{found.file}: {exc}") from None


def describe_spec(spec: DiffusionSpec) -> str:
    """One line on a diffusion model's architecture (for notes and ``inspect``)."""
    return (f"napari-synthgen diffusion model: {spec.config}, widths "
            f"{list(spec.block_out_channels)}, {spec.prediction_type}")


#: the largest classifier-free guidance weight accepted (beyond it images saturate)
MAX_GUIDANCE = 20.0


def model_guidance(metadata: Mapping[str, Any]) -> float | None:
    """The classifier-free guidance a model's file says it samples best with
    (``default_guidance``, measured and written by whoever packed it, e.g. the bundled demo's
    1); None when the file does not say or the value is not a usable weight."""
    value = metadata.get("default_guidance")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0.0 <= value <= MAX_GUIDANCE else None


def model_sampling(metadata: Mapping[str, Any]) -> tuple[int, str] | None:
    """(steps, sampler) a distilled model was made for, from its metadata's ``distilled``
    record (written by ``distill.DistillTrainer``); None for a model that was not distilled."""
    rec = metadata.get("distilled")
    if not isinstance(rec, Mapping):
        return None
    steps, sampler = rec.get("steps"), rec.get("sampler", DISTILL_SAMPLER)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return None
    return steps, str(sampler)
