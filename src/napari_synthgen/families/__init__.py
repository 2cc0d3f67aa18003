"""Model families (pix2pix, and any other registered): one registry everything else asks.

``register(family)`` adds a :class:`Family`; ``get(name)`` finds one (a clear error lists the
known ones); ``names()`` lists them. The built-in families register themselves when first
asked for, so importing this package stays light (no torch).
"""

from __future__ import annotations

from importlib import import_module

from .base import CliOption, Family, StepResult, Trainer

#: built-in families: name -> module that registers it on import
BUILTIN: dict[str, str] = {
    "pix2pix": "napari_synthgen.families.pix2pix",
    "diffusion": "napari_synthgen.families.diffusion",
}

_REGISTRY: dict[str, Family] = {}


class FamilyError(ValueError):
    """An unknown model family, or a family that cannot be registered."""


def register(family: Family, *, replace: bool = False) -> Family:
    """Add ``family`` to the registry (``replace`` an entry of the same name); returns it."""
    if not isinstance(family, Family) or not family.name:
        raise FamilyError(f"{family!r} is not a named Family instance; subclass "
                          "napari_synthgen.families.Family and set its name.")
    if family.name in _REGISTRY and not replace and _REGISTRY[family.name] is not family:
        raise FamilyError(f"a model family named {family.name!r} is already registered; "
                          "pass replace=True to replace it.")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (tests that register toy families clean up with this)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    for name, module in BUILTIN.items():
        if name not in _REGISTRY:
            import_module(module)


def names() -> tuple[str, ...]:
    """Names of the known families, built-in ones first."""
    _load_builtins()
    return tuple(_REGISTRY)


def get(name: str) -> Family:
    """The family called ``name``; a FamilyError listing the known ones if there is none."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(_REGISTRY) or "none"
        raise FamilyError(
            f"unknown model family {name!r}; known families: {known}.") from None


__all__ = [
    "BUILTIN",
    "CliOption",
    "Family",
    "FamilyError",
    "StepResult",
    "Trainer",
    "get",
    "names",
    "register",
    "unregister",
]
