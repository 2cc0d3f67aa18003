"""The package's layers: no import circle (imports inside functions count), and the shared
layers reach a model family only through the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_synthgen

PKG = Path(napari_synthgen.__file__).parent
ROOT = "napari_synthgen"
FAMILY_FOLDERS = ("napari_synthgen.families.pix2pix", "napari_synthgen.families.diffusion")


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = [ROOT, *f.relative_to(PKG).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its text (a package's parents,
    which Python imports first anyway, are left out)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_package = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_package else m.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not m.startswith(t + "."):
                    edges[m].add(t)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_anywhere_in_the_package() -> None:
    assert _cycles(_edges(_modules())) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_only_the_registry_reaches_into_a_family_folder() -> None:
    edges = _edges(_modules())
    reached = {m: sorted(t for t in targets if t.startswith(FAMILY_FOLDERS))
               for m, targets in edges.items()}
    outside = {m: t for m, t in reached.items()
               if t and m != f"{ROOT}.registry" and not m.startswith(FAMILY_FOLDERS)}
    assert outside == {}, "shared layers must ask napari_synthgen.registry for a family"
    # and a family folder reaches no other family's
    for m, targets in reached.items():
        own = next((f for f in FAMILY_FOLDERS if m == f or m.startswith(f + ".")), None)
        if own:
            assert all(t == own or t.startswith(own + ".") for t in targets), (m, targets)


def test_the_types_below_the_families_never_ask_the_registry() -> None:
    edges = _edges(_modules())
    below = [f"{ROOT}.families.base", f"{ROOT}.training.config", f"{ROOT}.synthesis",
             f"{ROOT}.models.checkpoints.info", f"{ROOT}.tiling"]
    for m in below:
        assert f"{ROOT}.registry" not in edges[m], m
