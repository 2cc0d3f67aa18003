"""What a loaded model is: the network and a description of it, for every family."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ...io import sha256_file
from ...masks import known_classes


@dataclass
class ModelInfo:
    """What a model file holds and how it was recognised; backs ``napari-synthgen inspect``.

    Fields are those every family has; what only one family knows (pix2pix's generator, width,
    norm and dropout; diffusion's schedule...) is in ``details``.
    """

    family: str
    input_nc: int
    output_nc: int
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
    #: the family's own description: ``architecture`` (a few words) and whatever else
    #: ``inspect`` shows (pix2pix: netG, ngf, norm, dropout; diffusion: schedule, EMA...)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (classes None when unknown, as for reference files)."""
        return asdict(self)

    @property
    def architecture(self) -> str:
        """The network in a few words ('unet_256', 'small U-Net'), else the family name."""
        return str(self.details.get("architecture") or self.family)

    def short(self) -> str:
        """The family's short label for log lines ('unet_256 ngf 16', 'diffusion small U-Net')."""
        return str(self.details.get("short") or f"{self.family} {self.architecture}")


@dataclass
class LoadedModel:
    """A network ready for inference (CPU, float32, eval mode) with what is known about it.

    ``spec`` is the family's description of the architecture; ``parts`` holds whatever else
    a family needs to synthesize (e.g. a scheduler config).
    """

    network: nn.Module
    info: ModelInfo
    spec: Any
    parts: dict[str, Any] = field(default_factory=dict)


def model_info(family: str, file: Path, network: nn.Module, *, input_nc: int, output_nc: int,
               encoding: str, encoding_source: str, tile: int | None, format: str,
               notes: list[str], metadata: dict[str, Any],
               details: dict[str, Any] | None = None) -> ModelInfo:
    """A ModelInfo with what every family shares filled in: parameters, path, SHA-256 and the
    class record of ``metadata`` (for families' ``load``)."""
    return ModelInfo(
        family=family, input_nc=input_nc, output_nc=output_nc, encoding=encoding,
        encoding_source=encoding_source, tile=tile,
        params=sum(p.numel() for p in network.parameters()), format=format,
        path=str(file), sha256=sha256_file(file),
        classes=known_classes(metadata.get("classes")), notes=notes, metadata=metadata,
        details=dict(details or {}),
    )
