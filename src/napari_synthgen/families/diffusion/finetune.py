"""Fine-tuning: a diffusion run that starts from the weights of a trained model.

A user with a handful of labelled slices of their own tissue and many raw ones rarely has the
hours a model needs from random weights on a CPU; starting from a model of similar EM (the
bundled ``demo-diffusion``) gets further in the same steps. The new run takes the starting
model's architecture, encoding and noise schedule; its optimiser, learning-rate schedule and EMA
start fresh. The model file records what it started from (``init_from``: name, file, SHA-256,
steps it had trained and the SHA-256 of every image it learned from), so that ``evaluate``'s
leak check follows the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class InitError(ValueError):
    """A starting model that cannot be used, with what to change."""


def read_start(source: str) -> Any:
    """The starting model (a LoadedModel) of ``init_from``: a diffusion model file, run folder
    or bundled name; anything else is refused with an :class:`InitError` saying why."""
    from .files import load_named_diffusion

    model = load_named_diffusion(source, "init_from", InitError)
    if model.info.metadata.get("distilled"):
        raise InitError(f"init_from {source!r} is a distilled few-step model; start from its "
                        "teacher instead (a distilled model no longer predicts every noise "
                        "level).")
    return model


def check_start(source: str, cfg: Any) -> list[str]:
    """Problems with the starting model and the settings that must agree with it."""
    try:
        model = read_start(source)
    except InitError as exc:
        return [str(exc)]
    from .files import agreement_problems

    spec = model.spec
    problems = agreement_problems(spec, cfg, f"init_from {source!r}")
    if cfg.settings.prediction != spec.prediction_type:
        problems.append(f"init_from {source!r} predicts {spec.prediction_type}; set prediction "
                        f"to {spec.prediction_type} (--prediction {spec.prediction_type}).")
    return problems


def start_record(source: str, model: Any) -> dict[str, Any]:
    """What a fine-tuned model file records about the model it started from (``init_from``)."""
    from ...io import sha256_file

    meta = model.info.metadata
    prov = meta.get("provenance") or {}
    return {
        "name": source, "file": Path(str(model.info.path)).name,
        "sha256": model.info.sha256 or sha256_file(model.info.path),
        "steps_trained": meta.get("steps_trained"),
        "train_images": prov.get("train_images"),
        "seen_sha256": prov.get("seen_sha256") or {},
    }


#: labelled images up to which a generator from random weights gets :func:`start_advice`
FEW_LABELLED = 10


def start_advice(config: Mapping[str, Any], n_labelled: int) -> str | None:
    """A note for a run from random weights on at most :data:`FEW_LABELLED` labelled images:
    in docs/utility.md such a generator (ISBI, 5 labelled slices) made a segmenter worse,
    while every gain came from a fine-tuned start. None for a fine-tune or a distillation."""
    if config.get("init_from") or config.get("distill_from") or n_labelled > FEW_LABELLED:
        return None
    return (f"a diffusion generator trained from random weights on {n_labelled} labelled "
            "image(s) followed its masks too loosely to help a segmenter in docs/utility.md "
            "(ISBI 2012, 5 slices: -0.06 boundary F1); the gains there came from fine-tuning a "
            "model that already draws EM: add --init-from demo-diffusion (or a model of your "
            "own).")
