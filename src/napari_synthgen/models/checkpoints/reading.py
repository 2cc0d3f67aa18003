"""Safe reading of model files: sniff the kind, open pickles with ``weights_only=True`` only,
read safetensors, and unwrap the generator's state dict from common checkpoint layouts."""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .common import (
    _LIST_LIMIT,
    CONTAINER_KEYS,
    GENERATOR_PREFIXES,
    REFERENCE_NAME,
    WRAPPER_PREFIXES,
    CheckpointError,
)


@dataclass
class _Raw:
    """Tensors read from a file, after unwrapping, plus the safetensors header if any."""

    tensors: dict[str, torch.Tensor]
    header: dict[str, str]
    kind: str
    notes: list[str]


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
    # safetensors before pickle: a header length whose first byte is 0x80 (one file in 256)
    # starts like a pickle, but a pickle never has "{" as its ninth byte and a fitting length
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head.startswith(b"\x80"):
        return "pickle"
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
        if isinstance(obj, Mapping) and all(k in obj for k in TRAINING_STATE_KEYS):
            raise _training_state_given(path)
    try:
        tensors = _normalise(obj, notes)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return _Raw(tensors, header, kind, notes)


def _training_state_given(path: Path) -> CheckpointError:
    """A training-state file was given where a model is expected: point at its model file."""
    stem = path.name.removesuffix(".state.pt")
    model = path.parent.parent / f"G_{stem}.safetensors"
    hint = (f"open {model} instead" if model.is_file() else
            "open the run's G_step_*.safetensors file instead")
    return CheckpointError(
        f"{path}: this is a training state (for resuming training), not a model; it has no "
        f"mask encoding or tile, which the model file beside it carries: {hint}."
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth/.pt/.ckpt`` or ``.safetensors`` file, unwrapped and unprefixed.

    Pickles are opened with ``weights_only=True``: files that need to run code are refused.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file.")
    return _read(p).tensors


#: Entries of a training-state file (``checkpoints/step_*.state.pt``) that resuming needs.
TRAINING_STATE_KEYS: tuple[str, ...] = ("model", "step", "rng", "config")


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training-state file (``step_*.state.pt``) as a dict, checked for what resuming needs.

    Opened with ``weights_only=True`` like any pickle; a file that is not a training state
    (a model file, a foreign checkpoint, one without its config) gives a CheckpointError.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file.")
    kind = _sniff(p)
    where = ("choose a run folder written by napari-synthgen training, or a "
             "checkpoints/step_*.state.pt file in one")
    if kind == "safetensors":
        raise CheckpointError(
            f"{p}: this is a model file (.safetensors), which holds the generator only, not a "
            f"training state (optimisers, step, config); {where}."
        )
    state = _torch_load(p, kind)
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{p}: holds a {type(state).__name__}, not a napari-synthgen training state; {where}."
        )
    missing = [k for k in TRAINING_STATE_KEYS if k not in state]
    if missing:
        held = ", ".join(repr(k) for k in list(state)[:_LIST_LIMIT]) or "nothing"
        raise CheckpointError(
            f"{p}: not a napari-synthgen training state: it has no {', '.join(missing)} "
            f"entr{'y' if len(missing) == 1 else 'ies'} (it holds {held}); {where}."
        )
    if not isinstance(state["config"], Mapping) or not isinstance(state["model"], Mapping):
        raise CheckpointError(
            f"{p}: its 'config' or 'model' entry is not a dictionary; the file is damaged or "
            f"not a napari-synthgen training state; {where}."
        )
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{p}: its step {step!r} is not a whole number; {where}.")
    return dict(state)
