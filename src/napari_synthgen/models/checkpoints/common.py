"""What every part of checkpoint handling shares: the error, format constants, mask encodings."""

from __future__ import annotations

from ...masks import ENCODING_CHANNELS, ENCODINGS

FORMAT_VERSION = 1
METADATA_KEY = "napari_synthgen"

REFERENCE_NAME = "latest_net_G.pth"
#: Dictionary entries that hold the weights in common training-checkpoint layouts.
CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model", "netG", "generator", "G", "net")
#: Key prefixes added by DataParallel/DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
#: Key prefixes under which a training module keeps its generator beside other networks.
GENERATOR_PREFIXES: tuple[str, ...] = ("netG.", "net_G.", "generator.", "G.")

_RESERVED = ("format_version", "family", "encoding", "tile")
_STATS = ("running_mean", "running_var", "num_batches_tracked")
_NBT = "num_batches_tracked"
_LIST_LIMIT = 10


class CheckpointError(ValueError):
    """A model file that cannot be used, with a message that says what is wrong and what to do."""


# --------------------------------------------------------------------------- encodings


def default_encoding(input_nc: int) -> str:
    """The encoding assumed for a model without metadata: 1 channel 'label', 3 'rgb'."""
    if input_nc == 1:
        return "label"
    if input_nc == 3:
        return "rgb"
    raise CheckpointError(
        f"the model takes {input_nc} input channels, but napari-synthgen feeds masks as "
        "rgb (3 channels), onehot (3), sparse (2) or label (1); this model cannot be used "
        "with its masks."
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
