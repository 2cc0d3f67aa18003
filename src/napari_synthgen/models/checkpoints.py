"""Read, recognise, load and save pix2pix generator checkpoints, without running their code.

Two formats are understood. Reference checkpoints (``latest_net_G.pth`` from
junyanz/pytorch-CycleGAN-and-pix2pix) hold a bare state dict; the generator, its width, norm
and channels are detected from the key names and shapes. napari-synthgen's own format is one
``.safetensors`` file whose header carries the generator spec, the mask encoding and training
metadata. Pickles are only opened with ``torch.load(weights_only=True)``: a file that needs
to run code to load is refused, never executed.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import atomic_path, sha256_file
from .pix2pix import (
    GENERATORS,
    NORMS,
    RESNET_BLOCKS,
    UNET_DOWNS,
    GeneratorSpec,
    NLayerDiscriminator,
    PixelDiscriminator,
    build_generator,
    norm_layer_factory,
)

FAMILY = "pix2pix"
FORMAT_VERSION = 1
METADATA_KEY = "napari_synthgen"
ENCODINGS: tuple[str, ...] = ("rgb", "onehot", "label")
#: Input channels each mask encoding feeds to the generator.
ENCODING_CHANNELS: dict[str, int] = {"rgb": 3, "onehot": 3, "label": 1}
REFERENCE_NAME = "latest_net_G.pth"
#: Dictionary entries that hold the weights in common training-checkpoint layouts.
CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model", "netG", "generator", "G", "net")
#: Key prefixes added by DataParallel/DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
#: Key prefixes under which a training module keeps its generator beside other networks.
GENERATOR_PREFIXES: tuple[str, ...] = ("netG.", "net_G.", "generator.", "G.")

_RESERVED = ("format_version", "family", "generator", "encoding", "tile")
_STATS = ("running_mean", "running_var", "num_batches_tracked")
_NBT = "num_batches_tracked"
_LIST_LIMIT = 10


class CheckpointError(ValueError):
    """A model file that cannot be used, with a message that says what is wrong and what to do."""


# --------------------------------------------------------------------------- results


@dataclass
class ModelInfo:
    """What a model file holds and how it was recognised; backs ``napari-synthgen inspect``."""

    family: str
    netG: str
    ngf: int
    norm: str
    input_nc: int
    output_nc: int
    dropout: bool | str
    encoding: str
    encoding_source: str
    tile: int | None
    params: int
    format: str
    path: str
    sha256: str
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (dropout is True, False or the string 'unknown')."""
        return asdict(self)


@dataclass
class LoadedModel:
    """A generator ready for inference (CPU, float32, eval mode) with what is known about it."""

    network: nn.Module
    info: ModelInfo
    spec: GeneratorSpec


@dataclass
class _Raw:
    """Tensors read from a file, after unwrapping, plus the safetensors header if any."""

    tensors: dict[str, torch.Tensor]
    header: dict[str, str]
    kind: str
    notes: list[str]


@dataclass
class _Resolved:
    """A state dict matched to a generator spec, ready to be loaded."""

    spec: GeneratorSpec
    dropout_known: bool
    state_dict: dict[str, torch.Tensor]
    format: str
    notes: list[str]
    encoding: str | None = None
    tile: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- encodings


def default_encoding(input_nc: int) -> str:
    """The encoding assumed for a model without metadata: 1 channel 'label', 3 'rgb'."""
    if input_nc == 1:
        return "label"
    if input_nc == 3:
        return "rgb"
    raise CheckpointError(
        f"the model takes {input_nc} input channels, but napari-synthgen feeds masks as "
        "rgb (3 channels), onehot (3) or label (1); this model cannot be used with its masks."
    )


def validate_encoding(encoding: str, input_nc: int) -> str:
    """Return ``encoding`` if it is known and feeds ``input_nc`` channels, else raise."""
    if encoding not in ENCODINGS:
        raise CheckpointError(
            f"unknown encoding {encoding!r}; choose one of: {', '.join(ENCODINGS)}."
        )
    needed = ENCODING_CHANNELS[encoding]
    if needed != input_nc:
        fits = [e for e in ENCODINGS if ENCODING_CHANNELS[e] == input_nc]
        hint = f"use {' or '.join(fits)}" if fits else "no mask encoding fits this model"
        raise CheckpointError(
            f"encoding {encoding!r} needs {needed} input channel(s), but the model takes "
            f"{input_nc}; {hint}."
        )
    return encoding


# --------------------------------------------------------------------------- reading files


def _describe_bytes(head: bytes) -> str:
    """A human name for the kind of file that starts with ``head``."""
    signatures = (
        (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
        (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"GIF8", "a GIF image"),
        (b"%PDF", "a PDF document"), (b"\x89HDF", "an HDF5 file (Keras/TensorFlow?)"),
        (b"\x1f\x8b", "a gzip archive"), (b"\x08", "an ONNX or protobuf file"),
    )
    for magic, name in signatures:
        if head.startswith(magic):
            return name
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "data of an unknown kind"
    return "a text file"


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _sniff(path: Path) -> str:
    """'zip' (torch), 'pickle' (legacy torch) or 'safetensors', from the first bytes."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{path}: the file is empty (0 bytes); it was probably not saved or copied "
            "completely. Save or copy the model again."
        )
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x80"):
        return "pickle"
    if _looks_like_safetensors(head, size):
        return "safetensors"
    raise CheckpointError(
        f"{path}: not a model file; it looks like {_describe_bytes(head)}. Choose a pix2pix "
        f"generator checkpoint ({REFERENCE_NAME}) or a .safetensors model saved by "
        "napari-synthgen."
    )


def _corrupt(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot be read ({detail}); the file is probably truncated or corrupt. "
        "Copy or save it again."
    )


def _first_global(path: Path) -> str | None:
    """The first Python name a plain pickle refers to, read from its opcodes (never run)."""
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            for count, (op, arg, _) in enumerate(pickletools.genops(fh)):
                if op.name in ("GLOBAL", "INST"):
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return ".".join(strings[-2:])
                if isinstance(arg, str):
                    strings.append(arg)
                if count > 100_000:
                    break
    except (ValueError, EOFError, OSError):
        return None
    return None


def _code_culprit(path: Path, kind: str, detail: str) -> str | None:
    """What a refused pickle wanted to import, or None if it is not a code problem."""
    found = re.search(r"GLOBAL ([\w.]+)", detail)
    if found:
        return found.group(1)
    culprit = _first_global(path) if kind == "pickle" else None
    if culprit or "Unsupported" in detail:
        return culprit or "a Python object"
    return None


def _needs_code(path: Path, culprit: str) -> CheckpointError:
    refers = f" (it refers to {culprit})" if "." in culprit else ""
    return CheckpointError(
        f"{path}: this is a pickled Python object that would need to run code to load"
        f"{refers}. napari-synthgen never executes code from model files. If you trust the "
        "file, re-save only the weights in Python: load the network, then "
        "torch.save(net.state_dict(), path), and open that file instead."
    )


def _torch_load(path: Path, kind: str) -> Any:
    """``torch.load`` with ``weights_only=True``, its failures turned into CheckpointErrors."""
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise _corrupt(path, "an incomplete zip archive")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            warnings.filterwarnings("ignore", message=".*TorchScript.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = _code_culprit(path, kind, str(exc))
        if culprit is None:
            raise _corrupt(path, "the pickled data is malformed") from None
        raise _needs_code(path, culprit) from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise CheckpointError(
                f"{path}: this is a TorchScript archive (torch.jit.save), which holds code. "
                "napari-synthgen loads weights only: re-save them with "
                "torch.save(net.state_dict(), path) and open that file instead."
            ) from None
        raise _corrupt(path, str(exc).split(".")[0].strip()) from None
    except (EOFError, KeyError, ValueError, TypeError, OSError) as exc:
        first_line = str(exc).split(".")[0].strip() or type(exc).__name__
        raise _corrupt(path, first_line) from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _corrupt(path, f"invalid safetensors data: {exc}") from None
    return tensors, header


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _holds_tensors(obj: object, depth: int = 2) -> bool:
    if not isinstance(obj, Mapping):
        return False
    return any(
        isinstance(v, torch.Tensor) or (depth > 0 and _holds_tensors(v, depth - 1))
        for v in obj.values()
    )


def _not_a_state_dict(obj: object) -> CheckpointError:
    if isinstance(obj, Mapping):
        entries = ", ".join(repr(k) for k in list(obj)[:_LIST_LIMIT]) or "nothing"
        what = f"a dictionary with entries {entries}"
    else:
        what = f"a {type(obj).__name__}"
    return CheckpointError(
        f"holds {what}, not a state dict of tensors. Save the generator with "
        "torch.save(net.state_dict(), path)."
    )


def _unwrap(obj: object, notes: list[str]) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj``: itself, or under a common container key."""
    for _ in range(3):
        if _is_tensor_dict(obj):
            return dict(obj)
        if not isinstance(obj, Mapping):
            break
        found = [k for k in CONTAINER_KEYS if _holds_tensors(obj.get(k))]
        if not found:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors or not all(isinstance(k, str) for k in tensors):
                break
            others = [str(k) for k in obj if k not in tensors]
            notes.append(f"non-tensor entries ignored: {', '.join(others[:_LIST_LIMIT])}")
            return tensors
        also = f" (also present: {', '.join(found[1:])})" if len(found) > 1 else ""
        notes.append(f"weights taken from the '{found[0]}' entry of a checkpoint dictionary{also}")
        obj = obj[found[0]]
    raise _not_a_state_dict(obj)


def _strip_prefixes(
    sd: dict[str, torch.Tensor], prefixes: tuple[str, ...], notes: list[str]
) -> dict[str, torch.Tensor]:
    """Remove any combination of ``prefixes`` shared by every key."""
    changed = True
    while changed and sd:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                notes.append(f"prefix '{prefix}' stripped")
                changed = True
    return sd


def _select_generator(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """Keep only the generator's tensors of a training module that holds several networks."""
    for prefix in GENERATOR_PREFIXES:
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            dropped = len(sd) - len(sub)
            extra = f"; {dropped} other tensors ignored" if dropped else ""
            notes.append(f"kept the {len(sub)} tensors under prefix '{prefix}'{extra}")
            return _strip_prefixes(sub, WRAPPER_PREFIXES, notes)
    return sd


def _normalise(obj: object, notes: list[str]) -> dict[str, torch.Tensor]:
    """Unwrap containers and strip wrapper prefixes, saying what was done in ``notes``."""
    sd = _strip_prefixes(_unwrap(obj, notes), WRAPPER_PREFIXES, notes)
    if not all(k.startswith("model.") for k in sd):
        sd = _select_generator(sd, notes)
    return sd


def _read(path: Path) -> _Raw:
    kind = _sniff(path)
    notes: list[str] = []
    header: dict[str, str] = {}
    if kind == "safetensors":
        obj, header = _read_safetensors(path)
    else:
        obj = _torch_load(path, kind)
    try:
        tensors = _normalise(obj, notes)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return _Raw(tensors, header, kind, notes)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth/.pt/.ckpt`` or ``.safetensors`` file, unwrapped and unprefixed.

    Pickles are opened with ``weights_only=True``: files that need to run code are refused.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file.")
    return _read(p).tensors


# --------------------------------------------------------------------------- detection


def _candidates() -> list[tuple[str, str, bool]]:
    """Every distinguishable (netG, norm, dropout); U-Net dropout leaves no keys, so True."""
    out = []
    for netG in GENERATORS:
        for norm in NORMS:
            for dropout in (True,) if netG in UNET_DOWNS else (False, True):
                out.append((netG, norm, dropout))
    return out


@functools.lru_cache(maxsize=64)
def _expected_shapes(spec: GeneratorSpec) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of ``spec``, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = build_generator(spec, init_type=None)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _template(netG: str, norm: str, dropout: bool) -> frozenset[str]:
    """Key names of a generator; they do not depend on widths or channel counts."""
    shapes = _expected_shapes(GeneratorSpec(netG, 1, 1, 1, norm, dropout))
    return frozenset(k for k in shapes if not k.endswith(_NBT))


@functools.lru_cache(maxsize=1)
def _discriminator_templates() -> dict[frozenset[str], str]:
    out = {}
    for norm in NORMS:
        layer = norm_layer_factory(norm)
        with torch.device("meta"):
            nets = {f"netD 'n_layers', n_layers {n}": NLayerDiscriminator(1, 1, n, layer)
                    for n in range(1, 7)}
            nets["netD 'basic'"] = NLayerDiscriminator(1, 1, 3, layer)
            nets["netD 'pixel'"] = PixelDiscriminator(1, 1, layer)
        for name, net in nets.items():
            out[frozenset(k for k in net.state_dict() if not k.endswith(_NBT))] = name
    return out


def _names(sd: Mapping[str, torch.Tensor]) -> frozenset[str]:
    return frozenset(k for k in sd if not k.endswith(_NBT))


def _match(names: frozenset[str], norms: tuple[str, ...] = NORMS) -> tuple[str, str, bool] | None:
    for netG, norm, dropout in _candidates():
        if norm in norms and _template(netG, norm, dropout) == names:
            return netG, norm, dropout
    return None


def _stale_instance_keys(sd: Mapping[str, torch.Tensor]) -> set[str]:
    """Keys of norm layers that hold only running statistics (old InstanceNorm files)."""
    leaves_of: dict[str, set[str]] = {}
    for key in sd:
        module, _, leaf = key.rpartition(".")
        leaves_of.setdefault(module, set()).add(leaf)
    stale: set[str] = set()
    for module, leaves in leaves_of.items():
        if "running_mean" in leaves and leaves <= set(_STATS):
            stale |= {f"{module}.{leaf}" for leaf in leaves}
    return stale


def _listing(keys: set[str] | frozenset[str]) -> str:
    shown = sorted(keys)[:_LIST_LIMIT]
    more = f", ... ({len(keys) - len(shown)} more)" if len(keys) > len(shown) else ""
    return (", ".join(shown) + more) if shown else "none"


def _closest(names: frozenset[str]) -> tuple[tuple[str, str, bool], frozenset[str]]:
    def score(c: tuple[str, str, bool]) -> tuple[int, int]:
        t = _template(*c)
        return len(names & t), -len(names ^ t)

    best = max(_candidates(), key=score)
    return best, _template(*best)


def _no_generator_error(sd: Mapping[str, torch.Tensor]) -> CheckpointError:
    """Why ``sd`` is no pix2pix generator: the closest one, missing and unexpected keys."""
    names = _names(sd)
    (netG, norm, _), template = _closest(names)
    common = len(names & template)
    lines = [f"the tensors do not form a pix2pix generator ({', '.join(GENERATORS)})."]
    disc = _discriminator_templates().get(names)
    if disc:
        lines.append(
            f"They look like a PatchGAN discriminator ({disc}). napari-synthgen needs the "
            f"generator, which pix2pix saves beside it as {REFERENCE_NAME}."
        )
    if common:
        lines.append(
            f"The closest generator is {netG} with norm '{norm}' "
            f"({common} of its {len(template)} keys are present)."
        )
    else:
        lines.append(f"No key matches any pix2pix generator (closest: {netG}).")
    lines.append(f"Missing keys: {_listing(template - names)}.")
    lines.append(f"Unexpected keys: {_listing(names - template)}.")
    return CheckpointError("\n".join(lines))


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    shape = tuple(sd[key].shape)
    if len(shape) != 4:
        raise CheckpointError(f"tensor {key} has shape {shape}; a convolution weight is 4-D.")
    return shape


def _channels_and_width(sd: Mapping[str, torch.Tensor], netG: str) -> tuple[int, int, int]:
    """(input_nc, output_nc, ngf) from the first and last convolution of ``netG``."""
    if netG in UNET_DOWNS:
        first, last = _shape(sd, "model.model.0.weight"), _shape(sd, "model.model.3.weight")
        return first[1], last[1], first[0]  # ConvTranspose2d weights are (in, out, kh, kw)
    first = _shape(sd, "model.1.weight")
    last = _shape(sd, f"model.{17 + RESNET_BLOCKS[netG]}.weight")
    return first[1], last[0], first[0]


def describe_spec(spec: GeneratorSpec) -> str:
    """A short human description such as 'unet_256, ngf 64, norm batch, 3 -> 3 channels'."""
    return (
        f"{spec.netG}, ngf {spec.ngf}, norm {spec.norm}, "
        f"{spec.input_nc} -> {spec.output_nc} channels"
    )


def _check_fit(sd: Mapping[str, torch.Tensor], spec: GeneratorSpec) -> None:
    """Raise unless ``sd`` loads into ``spec`` with strict key and shape matching."""
    expected = _expected_shapes(spec)
    missing = {k for k in expected if k not in sd and not k.endswith(_NBT)}
    unexpected = {k for k in sd if k not in expected}
    if missing or unexpected:
        raise CheckpointError(
            f"the keys do not fit {describe_spec(spec)}. Missing keys: {_listing(missing)}. "
            f"Unexpected keys: {_listing(unexpected)}."
        )
    for key, shape in expected.items():
        if key in sd and tuple(sd[key].shape) != shape:
            raise CheckpointError(
                f"tensor {key} has shape {tuple(sd[key].shape)}, but {describe_spec(spec)} "
                f"needs {shape}. The file is damaged or comes from a modified architecture."
            )


def _detection_note(spec: GeneratorSpec) -> str:
    if spec.netG in UNET_DOWNS:
        how = f"{UNET_DOWNS[spec.netG]} nested U-Net levels"
    else:
        how = f"{RESNET_BLOCKS[spec.netG]} residual blocks"
    return f"detected {describe_spec(spec)} (from {how} in the key names)"


def _dropout_note(spec: GeneratorSpec) -> str:
    if spec.netG in UNET_DOWNS:
        return (
            "dropout cannot be told from a U-Net checkpoint: it has no parameters; built with "
            "dropout (the pix2pix default), which only matters in training mode"
        )
    indices = "conv_block.1/.6" if spec.dropout else "conv_block.1/.5"
    return f"dropout {'on' if spec.dropout else 'off'} (residual keys {indices})"


def _detect(sd: dict[str, torch.Tensor]) -> _Resolved:
    """Match a bare state dict to a generator; drops stale InstanceNorm statistics."""
    notes: list[str] = []
    found = _match(_names(sd))
    if found is None:
        stale = _stale_instance_keys(sd)
        found = _match(_names(sd) - stale, norms=("instance",)) if stale else None
        if found is None:
            raise _no_generator_error(sd)
        sd = {k: v for k, v in sd.items() if k not in stale}
        notes.append(
            f"stale InstanceNorm running statistics dropped ({len(stale)} keys): old "
            "checkpoints saved them, current pix2pix normalises each image by itself"
        )
    netG, norm, dropout = found
    input_nc, output_nc, ngf = _channels_and_width(sd, netG)
    spec = GeneratorSpec(netG, input_nc, output_nc, ngf, norm, dropout)
    _check_fit(sd, spec)
    notes[:0] = [_detection_note(spec), _dropout_note(spec)]
    return _Resolved(spec, netG not in UNET_DOWNS, sd, "reference-pth", notes)


def detect_generator(state_dict: Mapping[str, torch.Tensor]) -> tuple[GeneratorSpec, list[str]]:
    """Recognise the generator of a reference state dict (already unwrapped and unprefixed).

    Returns the spec and notes on what was detected. U-Net dropout cannot be seen in the keys;
    the spec then says ``dropout=True`` (the pix2pix default) and a note says so.
    """
    found = _detect(dict(state_dict))
    return found.spec, found.notes


# --------------------------------------------------------------------------- our format


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _check_tile(tile: object) -> int | None:
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise CheckpointError(f"tile must be a positive integer or None, got {tile!r}.")
    return tile


def _header(
    spec: GeneratorSpec, encoding: str, tile: int | None, metadata: Mapping[str, Any] | None
) -> str:
    extra = dict(metadata or {})
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        raise CheckpointError(
            f"metadata may not set {', '.join(clash)}: save_model writes these itself."
        )
    doc = {
        "format_version": FORMAT_VERSION, "family": FAMILY, "generator": asdict(spec),
        "encoding": encoding, "tile": tile, **extra,
    }
    try:
        return json.dumps(doc, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"metadata cannot be stored as JSON: {exc}.") from None


def _tensors_for_saving(network: nn.Module, dtype: torch.dtype = torch.float32
                        ) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, floating point ones in ``dtype``."""
    sd = _strip_prefixes(dict(network.state_dict()), WRAPPER_PREFIXES, [])
    out = {}
    for key, value in sd.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous()
    return out


def save_model(
    path: str | os.PathLike,
    network: nn.Module,
    spec: GeneratorSpec,
    *,
    encoding: str,
    tile: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Save ``network`` as one ``.safetensors`` file with its spec and metadata, atomically.

    ``metadata`` (JSON-serialisable: intensity statistics, training config, provenance,
    step...) is stored beside the spec in the header key ``napari_synthgen``. ``dtype``
    float16 halves the file (for distribution); loading always gives float32 weights.
    """
    from safetensors.torch import save_file

    dest = Path(path)
    if dest.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{dest}: napari-synthgen models are saved as .safetensors files.")
    validate_encoding(encoding, spec.input_nc)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(f"weights are saved as float32, float16 or bfloat16; got {dtype}.")
    tensors = _tensors_for_saving(network, dtype)
    try:
        _check_fit(tensors, spec)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot save {dest.name}: the network does not match its spec; "
                              f"{exc}") from None
    header = _header(spec, encoding, _check_tile(tile), metadata)
    with atomic_path(dest) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: header})
    return dest


def _spec_from_doc(doc: Mapping[str, Any]) -> GeneratorSpec:
    version = doc.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError("its napari-synthgen header has no valid format_version.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"it was written by a newer napari-synthgen (format {version}; this version reads "
            f"up to {FORMAT_VERSION}). Update napari-synthgen to load it."
        )
    if doc.get("family") != FAMILY:
        raise CheckpointError(f"it holds a {doc.get('family')!r} model; only pix2pix is known.")
    try:
        return GeneratorSpec(**doc["generator"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"its header describes no valid generator ({exc}).") from None


def _guess(sd: dict[str, torch.Tensor]) -> str:
    try:
        return f" The tensors look like {describe_spec(_detect(sd).spec)}."
    except CheckpointError:
        return ""


def _parse_ours(raw: _Raw) -> _Resolved | None:
    """The spec, encoding and metadata of a napari-synthgen file; None for other files."""
    text = raw.header.get(METADATA_KEY)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise CheckpointError("its napari-synthgen header is not valid JSON; the file is "
                              "damaged. Save the model again.") from None
    if not isinstance(doc, dict):
        raise CheckpointError("its napari-synthgen header is not a JSON object.")
    spec = _spec_from_doc(doc)
    try:
        _check_fit(raw.tensors, spec)
    except CheckpointError as exc:
        raise CheckpointError(
            f"its metadata says {describe_spec(spec)}, but the tensors do not fit: {exc}"
            f"{_guess(raw.tensors)} The file was altered; save the model again."
        ) from None
    notes = [f"napari-synthgen model: {describe_spec(spec)}"]
    metadata = {k: v for k, v in doc.items() if k not in _RESERVED}
    return _Resolved(
        spec, True, raw.tensors, "synthgen-safetensors", notes,
        encoding=doc.get("encoding"), tile=_check_tile(doc.get("tile")), metadata=metadata,
    )


# --------------------------------------------------------------------------- loading


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


def _resolve_file(source: Path) -> tuple[Path, list[str]]:
    if source.is_dir():
        return _pick_in_folder(source)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file or folder.")
    return source, []


def _resolve(raw: _Raw) -> _Resolved:
    ours = _parse_ours(raw)
    if ours is not None:
        return ours
    found = _detect(raw.tensors)
    if raw.kind == "safetensors":
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
    """Load a reference ``.pth``, a napari-synthgen ``.safetensors``, or a folder holding one.

    The generator is detected (reference files) or read from the header (ours), loaded with
    strict key matching, and returned float32, on the CPU, in eval mode. ``encoding``
    overrides the mask encoding; ``dropout`` sets U-Net dropout, which files cannot show.
    """
    file, notes = _resolve_file(Path(path))
    raw = _read(file)
    try:
        found = _resolve(raw)
        dropout_info = _apply_dropout(found, dropout)
        enc, enc_source = _resolve_encoding(found, encoding)
        network = _instantiate(found)
    except CheckpointError as exc:
        raise CheckpointError(f"{file}: {exc}") from None
    notes += raw.notes + found.notes
    extra = _train_mode_note(found, dropout_info)
    if extra:
        notes.append(extra)
    info = ModelInfo(
        family=FAMILY, netG=found.spec.netG, ngf=found.spec.ngf, norm=found.spec.norm,
        input_nc=found.spec.input_nc, output_nc=found.spec.output_nc, dropout=dropout_info,
        encoding=enc, encoding_source=enc_source, tile=found.tile,
        params=sum(p.numel() for p in network.parameters()), format=found.format,
        path=str(file), sha256=sha256_file(file), notes=notes, metadata=found.metadata,
    )
    return LoadedModel(network=network, info=info, spec=found.spec)


def inspect_model(path: str | os.PathLike, *, encoding: str | None = None) -> dict[str, Any]:
    """What ``load_model`` finds in ``path``, as a JSON-serialisable dict."""
    return load_model(path, encoding=encoding).info.to_dict()
