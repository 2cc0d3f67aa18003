"""The training configuration: common settings plus the model family's, read from YAML/JSON
and overridden by the CLI.

:class:`TrainConfig` holds what every family shares (data, output, steps, tiles, batch size,
flips, learning rate, seed, device, precision, checkpoint cadence...) as dataclass fields, and
the family's own settings (a dataclass the family registry supplies, e.g. pix2pix's netG, ngf,
netD...) as ``cfg.settings``. Both read and write flat: ``TrainConfig(netG="unet_128")``,
``cfg.netG`` and config.yaml files look as they did before families existed, so old files and
CLI flags keep working; a key of another family is refused by name. A TrainConfig is built
from the family's entry; to build one from a family *name* (or a file), ask
:mod:`napari_synthgen.registry` (``make_config``, ``load_config``), which sits above the
families, so that this type never looks a family up.

pix2pix defaults follow the reference: U-Net 256 generator with batch norm and dropout,
PatchGAN (``basic``) discriminator, Adam lr 2e-4 and beta1 0.5, L1 weight 100, a constant rate
then a linear decay to zero over the second half, no flips.

``unlabel_fraction`` (both families) turns that share of the cells of each training mask into
background, image kept, so that a model learns to paint unlabelled tissue there.

``unlabeled`` (folders or files of raw images without masks) joins them to training:
``unlabeled_share`` of each batch's tiles come from them, with the null condition (no mask,
:data:`~napari_synthgen.masks.NO_LABEL`); ``cond_dropout`` drops the mask of that share of the
labelled tiles too. Labelled masks teach the layout; every image teaches the tissue. What a
family does with a tile without a mask is its own (diffusion: classifier-free guidance).

``object_share`` places that share of the random crops over an object (a pixel of the interior
or boundary class), as nnU-Net oversamples foreground: with sparse organelles most plain crops
hold none, and a generator sees too few objects to learn their texture.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A training configuration that cannot run, with what to change."""


@dataclass(init=False)
class TrainConfig:
    """Everything a training run needs; saved beside its checkpoints.

    Construct it flat from a family entry: ``TrainConfig(PIX2PIX, data=[...],
    netG="unet_128", ...)`` (by name: ``registry.make_config("pix2pix", ...)``); the family's
    keys go to ``settings``, and the family may change common defaults (its ``defaults``,
    e.g. another encoding).
    """

    data: list[str] = field(default_factory=list)
    out: str = "runs/run"
    #: the family's name (set from the entry the configuration is built from)
    family: str = ""
    val: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    steps: int | None = None
    epochs: int | None = None
    tile: int = 256
    stride: int | None = None
    batch_size: int = 1
    flips: bool = False
    rot90: bool = False
    encoding: str = "rgb"
    lr: float = 2e-4
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    checkpoint_every: int = 500
    sample_every: int = 100
    log_every: int = 1
    keep_checkpoints: int = 3
    n_preview: int = 4
    #: share of cells turned into background in each training mask, image kept (0: off)
    unlabel_fraction: float = 0.0
    #: folders (or files) of raw images without masks that join training (null condition)
    unlabeled: list[str] = field(default_factory=list)
    #: share of each batch's tiles drawn from ``unlabeled`` (used only when it is given)
    unlabeled_share: float = 0.5
    #: share of the labelled tiles whose mask is dropped (null condition) for guidance
    cond_dropout: float = 0.0
    #: share of the random crops placed over an object (interior or boundary pixel)
    object_share: float = 0.0
    #: how the mask files of ``data`` and ``val`` are read (:func:`masks.coerce_mask`'s
    #: ``source``: e.g. ``binary`` for 0/255 organelle masks) and the boundary it draws
    read_as: str = "auto"
    boundary_width: int = 2
    #: the family's own settings (its ``settings`` dataclass)
    settings: Any = None

    def __init__(self, family: Any, *, owners: Mapping[str, list[str]] | None = None,
                 **values: Any) -> None:
        """``family``: the family's entry (a ``families.base.Family``); ``owners``: for keys
        of other families, their names (the registry says, for a clearer refusal)."""
        fam = family
        common = {f.name: f for f in dataclasses.fields(self) if f.name != "settings"}
        own = fam.setting_names()
        unknown = sorted(k for k in values if k not in common and k not in own)
        if unknown:
            raise ConfigError(_unknown_message(unknown, fam, tuple(common), owners or {}))
        object.__setattr__(self, "family", fam.name)
        object.__setattr__(self, "_entry", fam)
        for name, f in common.items():
            if name == "family":
                continue
            if name in values:
                value = values[name]
            elif name in fam.defaults:
                value = fam.defaults[name]
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(self, name, value)
        clash = sorted(set(own) & set(common))
        if clash:
            raise ConfigError(f"family {fam.name!r} declares settings that every family shares "
                              f"({', '.join(clash)}); its settings dataclass must leave them "
                              "to TrainConfig (set different defaults in Family.defaults).")
        try:
            settings = fam.make_settings({k: v for k, v in values.items() if k in own})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{fam.name} settings: {exc}") from None
        object.__setattr__(self, "settings", settings)

    # ----------------------------------------------------------------- flat access
    def __getattr__(self, name: str) -> Any:
        # only called for names that are not common fields: the family's settings
        settings = self.__dict__.get("settings")
        if settings is not None and not name.startswith("__") and hasattr(settings, name):
            return getattr(settings, name)
        raise AttributeError(
            f"the {self.__dict__.get('family', '?')} training configuration has no setting "
            f"{name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "family" and value != self.__dict__.get("family"):
            raise AttributeError("the family of a TrainConfig is fixed; build a new one "
                                 "(TrainConfig.from_dict({**cfg.to_dict(), 'family': ...})).")
        settings = self.__dict__.get("settings")
        if name not in self.__dataclass_fields__ and settings is not None \
                and name in {f.name for f in dataclasses.fields(settings)}:
            setattr(settings, name, value)
            return
        if name not in self.__dataclass_fields__:
            raise AttributeError(
                f"the {self.__dict__.get('family', '?')} training configuration has no setting "
                f"{name!r}")
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def family_entry(self) -> Any:
        """The entry of this configuration's family (a ``families.base.Family``)."""
        return self.__dict__["_entry"]

    # ----------------------------------------------------------------- checks
    def validate(self) -> TrainConfig:
        """Check values and combinations; raise :class:`ConfigError` saying what to change."""
        from ..encoding import ENCODINGS, NULL_ENCODINGS
        from ..masks import MASK_SOURCES

        fam = self.family_entry
        problems = []
        if not self.data:
            problems.append("no training data: give at least one folder (--data DIR).")
        if (self.steps is None) == (self.epochs is None):
            problems.append("give exactly one of steps or epochs (--steps N or --epochs N).")
        for name in ("steps", "epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name} must be at least 1; got {v}.")
        if not isinstance(self.settings, fam.settings):
            problems.append(f"the settings are not {self.family} settings; build the "
                            "configuration again.")
        else:
            problems.extend(fam.validate(self))
        if self.encoding not in ENCODINGS:
            problems.append(f"encoding {self.encoding!r} unknown; use one of {ENCODINGS}.")
        if self.read_as not in MASK_SOURCES:
            problems.append(f"read_as {self.read_as!r} unknown; use one of "
                            f"{', '.join(MASK_SOURCES)}.")
        for name in ("batch_size", "tile", "checkpoint_every", "sample_every", "log_every",
                     "keep_checkpoints", "boundary_width"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.lr <= 0:
            problems.append(f"lr must be positive; got {self.lr}.")
        if not 0.0 <= self.unlabel_fraction <= 1.0:
            problems.append(f"unlabel_fraction is a share of cells in [0, 1]; got "
                            f"{self.unlabel_fraction}.")
        for name in ("unlabeled_share", "cond_dropout", "object_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} is a share of tiles in [0, 1]; got {value}.")
        if self.object_share > 0 and self.stride:
            problems.append("object_share places random crops over objects, and a stride "
                            "cuts a grid of tiles instead; drop --stride or --object-share.")
        if self.unlabeled and self.unlabeled_share == 0.0:
            problems.append("unlabeled folders are given but unlabeled_share is 0, so no "
                            "unlabelled tile would be drawn; raise it (e.g. 0.5) or drop them.")
        if (self.unlabeled or self.cond_dropout > 0) and not fam.learns_unlabeled:
            problems.append(f"the {self.family} family does not learn from images without "
                            "masks; drop --unlabeled / cond_dropout or use a family that does "
                            "(diffusion).")
        elif ((self.unlabeled or self.cond_dropout > 0) and fam.learns_null_condition
              and self.encoding not in NULL_ENCODINGS):
            problems.append(f"unlabelled images and cond_dropout need a mask encoding with a "
                            f"null condition ({' or '.join(NULL_ENCODINGS)}); encoding "
                            f"{self.encoding!r} codes 'no mask' like the interior.")
        if problems:
            raise ConfigError(
                "the training configuration has problems:\n  " + "\n  ".join(problems))
        return self

    # ----------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        """The flat configuration: common keys and the family's (as config.yaml holds it)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "settings"}
        values.update(dataclasses.asdict(self.settings))
        order = self.family_entry.config_order
        if order:
            values = {**{k: values[k] for k in order if k in values}, **values}
        return {k: _plain(copy.deepcopy(v)) for k, v in values.items()}

    def save(self, path: str | Path) -> Path:
        """Write the effective configuration as YAML (atomically)."""
        from ..io import atomic_path

        dest = Path(path)
        with atomic_path(dest) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return dest


def common_keys() -> tuple[str, ...]:
    """The keys every family's configuration has."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "settings")


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML or JSON configuration file holds (no family is looked up here)."""
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc}).") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a configuration file holds a mapping of keys to values.")
    return values


def _plain(value: Any) -> Any:
    """Lists for tuples, so that YAML stays plain."""
    return list(value) if isinstance(value, tuple) else value


def _unknown_message(unknown: list[str], fam: Any, common: tuple[str, ...],
                     owners: Mapping[str, list[str]]) -> str:
    """Unknown keys, saying which family a key belongs to when it is another family's."""
    others = [f"{key} is a {' / '.join(owners[key])} setting" for key in unknown
              if owners.get(key)]
    where = f" ({'; '.join(others)}; this configuration is {fam.name})" if others else ""
    known = sorted(common + fam.setting_names())
    return (f"unknown configuration keys: {', '.join(unknown)}{where}; known keys are "
            f"{', '.join(known)}.")


__all__ = ["ConfigError", "TrainConfig", "common_keys", "read_config_file"]
