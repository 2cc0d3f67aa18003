"""The npe2 manifest: valid, every contribution importable, the core free of Qt and napari."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_manifest_validates_with_imports() -> None:
    npe2 = Path(sys.executable).with_name("npe2")
    proc = subprocess.run([str(npe2), "validate", "napari-synthgen", "--imports"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_manifest_lists_every_widget() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-synthgen")
    names = {w.display_name for w in manifest.contributions.widgets}
    assert names == {"Mask editor", "Synthesize", "Curate", "Train", "Check utility"}
    assert manifest.contributions.readers and manifest.contributions.writers
    assert manifest.contributions.sample_data[0].key == "isbi2012"


CORE = ["napari_synthgen", "napari_synthgen.masks", "napari_synthgen.layouts",
        "napari_synthgen.io", "napari_synthgen.synthesis", "napari_synthgen.curation",
        "napari_synthgen.training.engine", "napari_synthgen.training.supervisor",
        "napari_synthgen.cli", "napari_synthgen.napari_io", "napari_synthgen.sample_data",
        "napari_synthgen.generate", "napari_synthgen.quality"]


def test_core_imports_no_gui() -> None:
    code = (f"import sys, {', '.join(CORE)}; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('napari', 'magicgui', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'superqt')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_package_root_does_not_import_torch() -> None:
    code = "import sys, napari_synthgen; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
