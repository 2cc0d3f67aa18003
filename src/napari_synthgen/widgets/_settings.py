"""Settings the widgets remember between sessions (recent models, export folder and format).

Stored as JSON in the user's config folder (``NAPARI_SYNTHGEN_CONFIG_DIR`` overrides it, which
the tests use); a missing or damaged file just means defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..io import atomic_path

MAX_RECENT = 8


def settings_path() -> Path:
    """Where the settings file lives."""
    override = os.environ.get("NAPARI_SYNTHGEN_CONFIG_DIR")
    if override:
        return Path(override) / "settings.json"
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-synthgen")) / "settings.json"


def load() -> dict[str, Any]:
    """All settings (an empty dict when there are none or the file is damaged)."""
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def get(key: str, default: Any = None) -> Any:
    return load().get(key, default)


def put(key: str, value: Any) -> None:
    """Set one setting; failures to write are ignored (settings are a convenience)."""
    data = load()
    data[key] = value
    try:
        with atomic_path(settings_path()) as tmp:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    except OSError:
        pass


def remember_model(path: str) -> list[str]:
    """Put ``path`` first in the recent-model list; returns the list."""
    recent = [p for p in get("recent_models", []) if p != path and Path(p).exists()]
    recent = [path, *recent][:MAX_RECENT]
    put("recent_models", recent)
    return recent
