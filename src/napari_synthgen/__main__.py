"""``python -m napari_synthgen`` runs the command line."""

from .cli import main

raise SystemExit(main())
