"""A toy model family in a folder of its own, as a plug-in would bring one.

It proves what docs/design.md says adding a family takes: this folder (an entry, a network,
a trainer, a file format, a synthesizer) and one line, ``registry.register(TOY)`` (a built-in
family is one line in ``registry.BUILTIN`` instead). Nothing in napari_synthgen names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from napari_synthgen.families.base import CliOption, Family
from napari_synthgen.training.config import TrainConfig


@dataclass
class ToySettings:
    width: int = 4
    smooth: float = 0.0


class ToyFamily(Family):
    name = "toy"
    settings = ToySettings
    arch_keys = ("width",)
    loss_names = ("l1", "scale")
    defaults: ClassVar[dict[str, Any]] = {"encoding": "onehot", "tile": 64, "out": "runs/toy"}
    cli_options = (CliOption("--toy-width", "width", int, "toy network width"),)

    def validate(self, cfg: TrainConfig) -> list[str]:
        return [] if cfg.width >= 1 else [f"width must be at least 1; got {cfg.width}."]

    def summary(self, config: dict[str, Any]) -> str:
        return f"toy width {config['width']}"

    def build_trainer(self, cfg, device, precision, total_steps, ddp):
        from .training import ToyTrainer

        return ToyTrainer(cfg, device, total_steps)

    def load(self, tensors, doc, *, file, kind, notes, encoding, dropout):
        from .files import load

        return load(tensors, doc, file=file, notes=notes, encoding=encoding)

    def synthesizer_class(self) -> type:
        from .synthesizer import ToySynthesizer

        return ToySynthesizer


TOY = ToyFamily()
