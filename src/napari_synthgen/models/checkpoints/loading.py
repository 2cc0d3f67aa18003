"""Loading any supported model file (or folder) into a ready network, and what it holds.

The file's header names its model family (a foreign checkpoint is pix2pix); the family
registry's entry builds the network (:func:`load_pix2pix` for pix2pix).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...io import sha256_file
from ...masks import known_classes
from ..pix2pix import RESNET_BLOCKS, GeneratorSpec, build_generator
from .common import (
    REFERENCE_NAME,
    CheckpointError,
    _Resolved,
    default_encoding,
    validate_encoding,
)
from .ours import _parse_pix2pix_doc, our_header
from .reading import _read
from .reference import _detect, describe_spec


@dataclass
class ModelInfo:
    """What a model file holds and how it was recognised; backs ``napari-synthgen inspect``."""

    family: str
    #: pix2pix generator, width and norm; None for other families (see ``details``)
    netG: str | None
    ngf: int | None
    norm: str | None
    input_nc: int
    output_nc: int
    #: pix2pix dropout: True, False or 'unknown'; None for other families
    dropout: bool | str | None
    encoding: str
    encoding_source: str
    tile: int | None
    params: int
    format: str
    path: str
    sha256: str
    #: class id -> pixel fraction in the training masks; None when the file does not say
    classes: dict[int, float] | None = None
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: family-specific description for ``inspect`` (e.g. diffusion: schedule, prediction,
    #: EMA, steps trained); empty for pix2pix, whose fields are above
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (dropout is True, False or the string 'unknown';
        classes None when unknown, as for reference checkpoints)."""
        return asdict(self)

    @property
    def architecture(self) -> str:
        """The network in a few words: 'unet_256' for pix2pix, else ``details['architecture']``
        or the family name."""
        return self.netG or str(self.details.get("architecture") or self.family)

    def short(self) -> str:
        """'unet_256 ngf 16' (pix2pix) or '<family> <architecture>' for log lines."""
        if self.netG is not None:
            return f"{self.netG} ngf {self.ngf}"
        arch = self.details.get("architecture")
        return f"{self.family} {arch}" if arch else self.family


@dataclass
class LoadedModel:
    """A network ready for inference (CPU, float32, eval mode) with what is known about it.

    ``spec`` is the family's description of the architecture (a GeneratorSpec for pix2pix);
    ``parts`` holds whatever else a family needs to synthesize (e.g. a scheduler config).
    """

    network: nn.Module
    info: ModelInfo
    spec: GeneratorSpec | Any
    parts: dict[str, Any] = field(default_factory=dict)


def _newest(files: list[Path]) -> Path:
    return max(files, key=lambda f: (f.stat().st_mtime_ns, f.name))


def _pick_in_folder(folder: Path) -> tuple[Path, list[str]]:
    """The model file of a folder: latest_net_G.pth, else the newest .safetensors."""
    reference = folder / REFERENCE_NAME
    if reference.is_file():
        return reference, [f"took {REFERENCE_NAME} from folder {folder.name}"]
    visible = sorted(f for f in folder.iterdir() if not f.name.startswith("."))
    files = [f for f in visible if f.is_file()]
    for group in (
        [f for f in files if f.suffix.lower() == ".safetensors"],
        [f for f in files if f.name.endswith("_net_G.pth")],
    ):
        if group:
            chosen = _newest(group)
            others = ", ".join(f.name for f in group if f != chosen)
            note = f"took {chosen.name} from folder {folder.name}"
            if others:
                note += f", the newest of {len(group)} model files (others: {others})"
            return chosen, [note]
    held = ", ".join(f.name + ("/" if f.is_dir() else "") for f in visible[:20]) or "nothing"
    raise CheckpointError(
        f"{folder}: no model found. Expected {REFERENCE_NAME} (a pix2pix checkpoint folder) "
        f"or a .safetensors model saved by napari-synthgen; the folder holds: {held}."
    )


def _resolve_file(source: str | os.PathLike) -> tuple[Path, list[str]]:
    """The model file for a path, a folder or a bundled model name such as "demo"."""
    from ...sample_data import BUNDLED_MODELS, resolve_model_source

    try:
        path = resolve_model_source(source)
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    bundled = path != Path(source).expanduser()
    notes = [f"bundled model {os.fspath(source)!r}: {path.name}"] if bundled else []
    if path.is_dir():
        found, more = _pick_in_folder(path)
        return found, notes + more
    if not path.is_file():
        names = ", ".join(repr(n) for n in BUNDLED_MODELS)
        raise CheckpointError(
            f"{path}: no such file or folder. Give a model file or folder, or the name of a "
            f"bundled model ({names})."
        )
    return path, notes


def _resolve(tensors: dict[str, torch.Tensor], doc: dict[str, Any] | None, kind: str
             ) -> _Resolved:
    if doc is not None:
        return _parse_pix2pix_doc(tensors, doc)
    found = _detect(tensors)
    if kind == "safetensors":
        found.format = "reference-safetensors"
    return found


def _apply_dropout(found: _Resolved, dropout: bool | None) -> bool | str:
    """Apply a caller's dropout choice; return what ModelInfo reports."""
    spec = found.spec
    if dropout is None:
        return spec.dropout if found.dropout_known else "unknown"
    if spec.netG in RESNET_BLOCKS and dropout != spec.dropout:
        raise CheckpointError(
            f"dropout={dropout} was asked for, but this ResNet checkpoint was saved "
            f"{'with' if spec.dropout else 'without'} dropout (its key layout shows it). "
            "Leave dropout unset."
        )
    if dropout != spec.dropout:
        found.notes.append(f"dropout set to {dropout} by the caller")
    found.spec = replace(spec, dropout=dropout)
    return dropout


def _resolve_encoding(found: _Resolved, encoding: str | None) -> tuple[str, str]:
    input_nc = found.spec.input_nc
    if encoding is not None and found.encoding not in (None, encoding):  # a silent wrong image
        raise CheckpointError(f"this model was trained on {found.encoding!r} masks (its "
                              f"metadata says so); it cannot take {encoding!r}. Leave the "
                              "encoding override out.")
    if encoding is not None:
        return validate_encoding(encoding, input_nc), "override"
    if found.encoding is not None:
        return validate_encoding(found.encoding, input_nc), "metadata"
    chosen = default_encoding(input_nc)
    if chosen == "rgb":
        found.notes.append(
            "encoding 'rgb' assumed from 3 input channels; pass encoding='onehot' if the "
            "model was trained on one-hot masks"
        )
    return chosen, "default"


def _instantiate(found: _Resolved) -> nn.Module:
    """Build the generator, load the weights strictly, and make it float32 CPU eval."""
    network = build_generator(found.spec, init_type=None)
    try:
        network.load_state_dict(found.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not load into {describe_spec(found.spec)}: "
                              f"{exc}") from None
    return network.float().cpu().eval()


def _train_mode_note(found: _Resolved, dropout: bool | str) -> str | None:
    """Warn reference users that upstream test.py results can differ from ours."""
    if not found.format.startswith("reference") or (found.spec.norm != "batch" and not dropout):
        return None
    return (
        "outputs are computed in eval mode; upstream pix2pix test.py runs in training mode "
        "unless --eval is given, so its results can differ"
    )


def load_model(
    path: str | os.PathLike, *, encoding: str | None = None, dropout: bool | None = None
) -> LoadedModel:
    """Load a reference ``.pth``, a napari-synthgen ``.safetensors``, a folder holding one, or
    a bundled model by name ("demo", see :data:`napari_synthgen.sample_data.BUNDLED_MODELS`).

    The header of our files names the model family, whose registry entry builds the network;
    foreign files are pix2pix generators, detected from their keys. The network is loaded with
    strict key matching and returned float32, on the CPU, in eval mode. ``encoding``
    overrides the mask encoding; ``dropout`` sets pix2pix U-Net dropout, which files cannot show.
    """
    from ... import families

    file, notes = _resolve_file(path)
    raw = _read(file)
    try:
        found = our_header(raw.header)
        name, doc = found if found is not None else ("pix2pix", None)
        try:
            family = families.get(name)
        except families.FamilyError:
            raise CheckpointError(
                f"it holds a {name!r} model, which this napari-synthgen does not know (known "
                f"families: {', '.join(families.names())}). Update napari-synthgen to load it."
            ) from None
        return family.load(raw.tensors, doc, file=file, kind=raw.kind,
                           notes=notes + raw.notes, encoding=encoding, dropout=dropout)
    except CheckpointError as exc:
        raise CheckpointError(f"{file}: {exc}") from None


def load_pix2pix(tensors: dict[str, torch.Tensor], doc: dict[str, Any] | None, *,
                 file: Path, kind: str, notes: list[str], encoding: str | None,
                 dropout: bool | None) -> LoadedModel:
    """The pix2pix family's loading: our header's generator spec, or detection from the keys."""
    found = _resolve(tensors, doc, kind)
    dropout_info = _apply_dropout(found, dropout)
    enc, enc_source = _resolve_encoding(found, encoding)
    network = _instantiate(found)
    notes = notes + found.notes
    extra = _train_mode_note(found, dropout_info)
    if extra:
        notes.append(extra)
    info = model_info(
        "pix2pix", file, network, netG=found.spec.netG, ngf=found.spec.ngf,
        norm=found.spec.norm, input_nc=found.spec.input_nc, output_nc=found.spec.output_nc,
        dropout=dropout_info, encoding=enc, encoding_source=enc_source, tile=found.tile,
        format=found.format, notes=notes, metadata=found.metadata,
    )
    return LoadedModel(network=network, info=info, spec=found.spec)


def model_info(family: str, file: Path, network: nn.Module, *, input_nc: int, output_nc: int,
               encoding: str, encoding_source: str, tile: int | None, format: str,
               notes: list[str], metadata: dict[str, Any], netG: str | None = None,
               ngf: int | None = None, norm: str | None = None,
               dropout: bool | str | None = None, details: dict[str, Any] | None = None
               ) -> ModelInfo:
    """A ModelInfo with what every family shares filled in: parameters, path, SHA-256 and the
    class record of ``metadata`` (for families' ``load``)."""
    return ModelInfo(
        family=family, netG=netG, ngf=ngf, norm=norm, input_nc=input_nc, output_nc=output_nc,
        dropout=dropout, encoding=encoding, encoding_source=encoding_source, tile=tile,
        params=sum(p.numel() for p in network.parameters()), format=format,
        path=str(file), sha256=sha256_file(file),
        classes=known_classes(metadata.get("classes")), notes=notes, metadata=metadata,
        details=dict(details or {}),
    )


def model_family(source: str | os.PathLike) -> str | None:
    """The family a model file names, read from its header alone (no weights): 'pix2pix'
    for foreign files, None when the source cannot be read (loading then says why)."""
    import json

    from .common import METADATA_KEY

    try:
        file, _ = _resolve_file(source)
        with open(file, "rb") as fh:
            head = fh.read(9)
            size = int.from_bytes(head[:8], "little")
            # safetensors: an 8-byte header length, then a JSON object. Anything else (a torch
            # zip or pickle) is a reference pix2pix file. Sniffing b"\x80" for a pickle would
            # misread a header whose length happens to end in 0x80.
            if len(head) < 9 or head[8:9] != b"{" or not 0 < size <= 100_000_000:
                return "pix2pix"
            header = json.loads(head[8:] + fh.read(size - 1))
        text = header.get("__metadata__", {}).get(METADATA_KEY)
        if text is None:
            return "pix2pix"
        family = json.loads(text).get("family")
        return family if isinstance(family, str) else None
    except (CheckpointError, OSError, ValueError, AttributeError):
        return None


def inspect_model(path: str | os.PathLike, *, encoding: str | None = None) -> dict[str, Any]:
    """What ``load_model`` finds in ``path``, as a JSON-serialisable dict."""
    return load_model(path, encoding=encoding).info.to_dict()
