"""The model families by name: the one module above the families that picks one.

Each family lives in its own folder under :mod:`napari_synthgen.families` and is listed here
once (:data:`BUILTIN`). Everything that starts from a name or a file and needs a family asks
this module: training configurations (:func:`make_config`, :func:`load_config`), model files
(:func:`load_model`, :func:`inspect_model`) and synthesizers (:func:`make_synthesizer`). The
types the families build on (``families.base``, ``TrainConfig``, ``LoadedModel``,
``Synthesizer``) sit below the families and never look a family up. Importing this module
loads no torch: the family entries import their heavy parts when used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .families.base import Family
from .families.diffusion import DIFFUSION
from .families.pix2pix import PIX2PIX

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from .models.checkpoints.info import LoadedModel
    from .training.config import TrainConfig

#: the built-in families, one line each
BUILTIN: tuple[Family, ...] = (PIX2PIX, DIFFUSION)
DEFAULT_FAMILY = PIX2PIX.name

_REGISTRY: dict[str, Family] = {f.name: f for f in BUILTIN}


class FamilyError(ValueError):
    """An unknown model family, or a family that cannot be registered."""


# --------------------------------------------------------------------------- the registry


def register(family: Family, *, replace: bool = False) -> Family:
    """Add a family (a plug-in, a test's toy family); ``replace`` one of the same name."""
    if not isinstance(family, Family) or not family.name:
        raise FamilyError(f"{family!r} is not a named Family instance; subclass "
                          "napari_synthgen.families.base.Family and set its name.")
    if family.name in _REGISTRY and not replace and _REGISTRY[family.name] is not family:
        raise FamilyError(f"a model family named {family.name!r} is already registered; "
                          "pass replace=True to replace it.")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family that was registered (built-in ones stay)."""
    if name not in {f.name for f in BUILTIN}:
        _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Names of the known families, built-in ones first."""
    return tuple(_REGISTRY)


def get(name: str) -> Family:
    """The family called ``name``; a FamilyError listing the known ones if there is none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise FamilyError(
            f"unknown model family {name!r}; known families: {', '.join(_REGISTRY)}.") from None


# --------------------------------------------------------------------------- configurations


def start_advice(started: Mapping[str, Any]) -> list[str]:
    """The run family's advice (:meth:`Family.advice`) for a ``started`` training event, as
    the CLI prints it and the Train widget shows it: none for a resumed run (it was given
    when the run began) or a family this process does not know."""
    config = started.get("config") or {}
    if started.get("resumed_from") or config.get("family") not in _REGISTRY:
        return []
    return get(config["family"]).advice(config, int(started.get("n_train_images") or 0))


def make_config(family: str = DEFAULT_FAMILY, **values: Any) -> TrainConfig:
    """A training configuration of the named family from flat values
    (``make_config("pix2pix", data=[...], netG="unet_128", steps=100)``)."""
    from .training.config import ConfigError, TrainConfig

    try:
        entry = get(family)
    except FamilyError as exc:
        raise ConfigError(str(exc)) from None
    others = {k: [n for n, f in _REGISTRY.items() if n != family and k in f.setting_names()]
              for k in values}
    return TrainConfig(entry, owners={k: v for k, v in others.items() if v}, **values)


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A configuration from a flat mapping (as config.yaml holds it); its ``family`` key
    names the family (pix2pix when absent, as in files written before families existed)."""
    values = dict(values)
    family = values.pop("family", DEFAULT_FAMILY)
    for key in ("data", "val"):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    return make_config(family, **values)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML or JSON configuration file."""
    from .training.config import read_config_file

    return config_from_dict(read_config_file(Path(path)))


def known_keys(family: str = DEFAULT_FAMILY) -> tuple[str, ...]:
    """The keys a configuration of ``family`` accepts."""
    from .training.config import common_keys

    return common_keys() + get(family).setting_names()


# --------------------------------------------------------------------------- model files


def load_model(path: str | os.PathLike, *, encoding: str | None = None,
               dropout: bool | None = None) -> LoadedModel:
    """Load a reference ``.pth``, a napari-synthgen ``.safetensors``, a folder holding one, or
    a bundled model by name ("demo", see :data:`napari_synthgen.sample_data.BUNDLED_MODELS`).

    The header of our files names the model family, whose entry builds the network; foreign
    files are pix2pix generators, detected from their keys. The network is loaded with strict
    key matching and returned float32, on the CPU, in eval mode. ``encoding`` overrides the
    mask encoding; ``dropout`` sets pix2pix U-Net dropout, which files cannot show.
    """
    from .models.checkpoints.common import CheckpointError
    from .models.checkpoints.locate import read_model_file

    found = read_model_file(path)
    try:
        family = get(found.family)
    except FamilyError:
        raise CheckpointError(
            f"{found.file}: it holds a {found.family!r} model, which this napari-synthgen does "
            f"not know (known families: {', '.join(names())}). Update napari-synthgen to load "
            "it.") from None
    try:
        return family.load(found.tensors, found.doc, file=found.file, kind=found.kind,
                           notes=found.notes, encoding=encoding, dropout=dropout)
    except CheckpointError as exc:
        raise CheckpointError(f"{found.file}: {exc}") from None


def inspect_model(path: str | os.PathLike, *, encoding: str | None = None) -> dict[str, Any]:
    """What :func:`load_model` finds in ``path``, as a JSON-serialisable dict."""
    return load_model(path, encoding=encoding).info.to_dict()


# --------------------------------------------------------------------------- synthesizers


def synthesizer_class(model: Any) -> type:
    """The synthesizer class of a model's family (a LoadedModel, a path or a bundled name).

    A path is recognised from its header alone (no weights are read); a file that cannot be
    read or names an unknown family raises the error :func:`load_model` gives for it.
    """
    from .models.checkpoints.info import LoadedModel
    from .models.checkpoints.locate import model_family

    if isinstance(model, LoadedModel):
        return get(model.info.family).synthesizer_class()
    family = model_family(model)
    if family not in _REGISTRY:
        load_model(model)  # says what is wrong with the file
        raise FamilyError(f"{model}: no synthesizer for its model family {family!r}.")
    return get(family).synthesizer_class()


def make_synthesizer(model: Any, **settings: Any) -> Any:
    """The synthesizer of ``model``'s family with ``settings`` (device, precision, tile...)."""
    return synthesizer_class(model)(model, **settings)


def synthesize(mask: np.ndarray, model: Any, *, seed: int = 0, **settings: Any) -> np.ndarray:
    """One-call synthesis: ``synthesize(mask, "model.safetensors")``."""
    synth = make_synthesizer(model, **settings)
    try:
        return synth(mask, seed=seed)
    finally:
        synth.close()


__all__ = [
    "BUILTIN",
    "DEFAULT_FAMILY",
    "FamilyError",
    "config_from_dict",
    "get",
    "inspect_model",
    "known_keys",
    "load_config",
    "load_model",
    "make_config",
    "make_synthesizer",
    "names",
    "register",
    "synthesize",
    "synthesizer_class",
    "unregister",
]
