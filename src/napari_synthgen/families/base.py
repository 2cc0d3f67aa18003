"""What a model family supplies, and what the shared machinery expects of its parts.

A :class:`Family` is listed once in :mod:`napari_synthgen.registry` and then asked by the
training engine, the train CLI, checkpoint loading, ``inspect`` and the synthesizer factory.
Importing a family's entry must stay light (no torch): heavy parts are imported inside its
methods.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from ..models.checkpoints.info import LoadedModel
    from ..training.config import TrainConfig


@dataclass
class StepResult:
    """Losses of one training step (name -> float, any names) and whether all are finite."""

    losses: dict[str, float]
    finite: bool


class Trainer(Protocol):
    """The training side of a family, as the engine drives it (``Family.build_trainer``)."""

    def step(self, masks: torch.Tensor, images: torch.Tensor) -> StepResult:
        """One optimisation step on a batch: masks (B, H, W) uint8 class ids, images
        (B, 1, H, W) float in [-1, 1]; schedulers advance by one."""

    def generate(self, masks: torch.Tensor) -> torch.Tensor:
        """Deterministic previews for masks (B, H, W): a (B, H, W) CPU float tensor in [-1, 1]."""

    def state_dict(self) -> dict[str, Any]:
        """Everything that resumes the run exactly (weights, optimisers, schedulers...)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def set_base_lr(self, lr: float) -> None:
        """Change the base learning rate of a resumed run."""

    @property
    def lr(self) -> float:
        """The current learning rate (for progress events)."""

    def save_model(self, path: str | os.PathLike, metadata: Mapping[str, Any]) -> Path:
        """Write the model file synthesis loads (ours: ``.safetensors`` whose header names
        the family), with ``metadata`` (intensity, classes, config, step, provenance...)."""


@dataclass(frozen=True)
class CliOption:
    """A ``napari-synthgen train`` option for a family setting.

    ``value`` set: a flag storing that value (``--no-dropout`` stores False); else an option
    taking a value of type ``type``.
    """

    flag: str
    key: str
    type: Any = str
    help: str = ""
    value: Any = None

    @property
    def is_flag(self) -> bool:
        return self.value is not None


class Family:
    """A model family. Subclass it, set the class attributes, implement the methods.

    ``settings`` is a dataclass of the family's own training settings (every field with a
    default); :class:`~napari_synthgen.training.config.TrainConfig` carries them beside the
    common ones, flat (``cfg.netG``), and saves them flat in ``config.yaml``.
    """

    #: registry name, also the ``family`` entry of our checkpoint headers
    name: ClassVar[str] = ""
    #: dataclass type of the family's training settings
    settings: ClassVar[type] = object
    #: settings a resumed run must keep (besides family, encoding and tile)
    arch_keys: ClassVar[tuple[str, ...]] = ()
    #: names of the losses its trainer reports (the engine and widgets accept any names)
    loss_names: ClassVar[tuple[str, ...]] = ()
    #: defaults of common settings that differ for this family (e.g. encoding, lr, out)
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: train CLI options for its settings
    cli_options: ClassVar[tuple[CliOption, ...]] = ()
    #: training memory per pixel of a batch, bytes (the up-front memory check; None: the
    #: largest known, see napari_synthgen.limits)
    train_bytes_per_px: ClassVar[int | None] = None
    #: ``train --config NAME`` presets: NAME -> the settings it stands for
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: order of keys in a saved configuration (None: common keys, then the family's)
    config_order: ClassVar[tuple[str, ...] | None] = None
    #: whether its trainer learns from tiles without a mask (``NO_LABEL``: ``--unlabeled``,
    #: ``cond_dropout``); a family that does not is refused them by name
    learns_unlabeled: ClassVar[bool] = False
    #: whether its model learns the null condition from those tiles (then its file records
    #: ``null_condition`` and sampling can be guided; the mask encoding must have a null code)
    learns_null_condition: ClassVar[bool] = False

    # ----------------------------------------------------------------- settings
    def setting_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.settings))

    def make_settings(self, values: Mapping[str, Any]) -> Any:
        """The settings dataclass from ``values`` (only its own keys)."""
        return self.settings(**values)

    def validate(self, cfg: TrainConfig) -> list[str]:
        """Problems with the family's settings in ``cfg`` (empty: fine)."""
        return []

    def summary(self, config: Mapping[str, Any]) -> str:
        """A few words on the architecture of a configuration (for the CLI's first line)."""
        return self.name

    def advice(self, config: Mapping[str, Any], n_labelled: int) -> list[str]:
        """Notes for a run starting with ``config`` on ``n_labelled`` labelled images: what
        the measurements say a user would want to change (printed, not enforced)."""
        return []

    # ----------------------------------------------------------------- training
    def build_trainer(self, cfg: TrainConfig, device: torch.device, precision: str,
                      total_steps: int, ddp: bool) -> Trainer:
        raise NotImplementedError(f"family {self.name!r} cannot train")

    # ----------------------------------------------------------------- files and synthesis
    def load(self, tensors: dict[str, torch.Tensor], doc: Mapping[str, Any] | None, *,
             file: Path, kind: str, notes: list[str], encoding: str | None,
             dropout: bool | None) -> LoadedModel:
        """Build the model of a file: ``doc`` is our header (None for a foreign file, which
        only pix2pix reads), ``tensors`` its weights, ``kind`` 'safetensors', 'zip' or
        'pickle'. Raise CheckpointError saying what is wrong; ``notes`` are what reading
        found so far (the returned ModelInfo carries them and yours); build the info with
        :func:`~napari_synthgen.models.checkpoints.info.model_info`. ``dropout`` is pix2pix's."""
        raise NotImplementedError(f"family {self.name!r} cannot load models")

    def synthesizer_class(self) -> type:
        """The :class:`~napari_synthgen.synthesis.Synthesizer` subclass for its models."""
        raise NotImplementedError(f"family {self.name!r} cannot synthesize")

    def __repr__(self) -> str:
        return f"<model family {self.name!r}>"
