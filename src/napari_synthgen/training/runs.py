"""Run folders without torch: the checkpoints a folder holds, whether it holds a run, and the
next free folder name beside it.

The engine, the ``train`` CLI and the Train widget share these, so a fresh run never writes
into a folder that holds another run's checkpoints (the widget checks on the GUI thread: no
torch import here).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

STATE_SUFFIX = ".state.pt"
_STATE_RE = re.compile(r"step_(\d+)" + re.escape(STATE_SUFFIX) + "$")
_G_RE = re.compile(r"G_step_(\d+)\.safetensors$")
_NUMBERED_RE = re.compile(r"^(.*?)-(\d+)$")


def state_steps(out: Path) -> list[tuple[int, Path]]:
    """Training-state files of a run folder with their step numbers, oldest first (files whose
    names do not parse are ignored, never misread)."""
    found = []
    for path in (Path(out) / "checkpoints").glob(f"step_*{STATE_SUFFIX}"):
        m = _STATE_RE.fullmatch(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def checkpoint_paths(out: Path, step: int) -> tuple[Path, Path]:
    """The generator file (for synthesis) and the training-state file of a step."""
    out = Path(out)
    state = out / "checkpoints" / f"step_{step:07d}{STATE_SUFFIX}"
    return out / f"G_step_{step:07d}.safetensors", state


def latest_checkpoint(out: Path) -> tuple[int, Path, Path] | None:
    """The newest step with both files present: (step, generator path, state path)."""
    out = Path(out)
    pointer = out / "latest.json"
    if pointer.is_file():
        with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
            info = json.loads(pointer.read_text(encoding="utf-8"))
            g, s = out / info["generator"], out / info["state"]
            if g.is_file() and s.is_file():
                return int(info["step"]), g, s
    for step, state in reversed(state_steps(out)):
        g, _ = checkpoint_paths(out, step)
        if g.is_file():
            return step, g, state
    return None


def run_step(out: Path) -> int | None:
    """The step of the run ``out`` holds (its newest checkpoint, complete or not), or None when
    it holds no checkpoint: a folder that does is another run's, and a fresh run must not
    write into it."""
    out = Path(out)
    if not out.is_dir():
        return None
    found = latest_checkpoint(out)
    if found is not None:
        return found[0]
    steps = [s for s, _ in state_steps(out)]
    steps += [int(m.group(1)) for p in out.glob("G_step_*.safetensors")
              if (m := _G_RE.fullmatch(p.name))]
    return max(steps) if steps else None


def used_folder_message(out: Path, step: int) -> str:
    """What a fresh ``train`` into a folder holding a run says (and what to do)."""
    return (f"{out} already holds a run (step {step}); pass --resume to continue it or choose "
            "a new --out.")


def next_run_folder(out: Path) -> Path:
    """The first free folder beside ``out`` numbered like it: ``runs/pix2pix-001`` gives
    ``runs/pix2pix-002`` (or the next name not taken); an unnumbered ``runs/x`` gives
    ``runs/x-001``. A folder is free when it does not exist or is empty."""
    out = Path(out)
    m = _NUMBERED_RE.match(out.name)
    stem, width, n = (m.group(1), len(m.group(2)), int(m.group(2))) if m else (out.name, 3, 0)
    while True:
        n += 1
        candidate = out.with_name(f"{stem}-{n:0{width}d}")
        if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
            return candidate


def free_run_folder(out: Path) -> Path:
    """``out`` itself when no run is in it, else :func:`next_run_folder` of it."""
    out = Path(out)
    return out if run_step(out) is None else next_run_folder(out)
