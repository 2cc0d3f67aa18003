"""Curation widget: step through candidates, see their figures, accept or reject with one key.

Candidates come from the synthesis widget (every run and variation) or from a folder that
``napari-synthgen generate`` wrote. Decisions go to an ``ExportSession`` (files, a manifest with
provenance); the export folder and format are remembered.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image, Labels
from napari.qt.threading import create_worker

from ..curation import ExportSession, export_nnunet
from ..generate import read_provenance
from ..io import find_pairs, read_image, read_mask
from ..napari_io import mask_layer_kwargs
from ..quality import basic_figures
from . import _settings
from ._bus import Candidate, bus
from ._common import call_on_destroy, report_error, show_info

if TYPE_CHECKING:
    import napari

CANDIDATE_LAYER = "candidate"
CANDIDATE_MASK_LAYER = "candidate mask"
FORMATS = ("plain (images/ + masks/)", "nnU-Net v2 raw")
KEYS = {"accept": "A", "reject": "R", "skip": "S", "undo": "U"}


@dataclass
class _Item:
    """One candidate in the queue; arrays of folder items are read when shown."""

    name: str
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    image_path: Path | None = None
    mask_path: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None
    record_id: str | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.image is None:
            self.image = read_image(self.image_path)
        if self.mask is None:
            self.mask = read_mask(self.mask_path)
        return self.image, self.mask


def _figures_html(fig: dict[str, Any]) -> str:
    multi = "yes" if fig["multi_class"] else "<b style='color:#f66'>no: one class only</b>"
    return (
        f"intensity mean {fig['mean']:.1f} · std {fig['std']:.1f} · range {fig['min']:.0f}–"
        f"{fig['max']:.0f} · {fig['levels']} levels<br>"
        f"background {fig['frac_background']:.1%} · interior {fig['frac_interior']:.1%} · "
        f"boundary {fig['frac_boundary']:.1%} · more than one class: {multi}"
    )


class CurateWidget(Container):
    """Dock widget: queue of candidates, quality figures, Accept [A] / Reject [R] / Skip [S] /
    Undo [U], export folder and format."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.session: ExportSession | None = None
        self.queue: list[_Item] = []
        self.pos = -1
        self._workers: list[Any] = []

        self.folder = FileEdit(mode="d", label="Export folder",
                               value=_settings.get("export_folder", ""))
        self.format = ComboBox(choices=list(FORMATS), label="Format",
                               value=_settings.get("export_format", FORMATS[0])
                               if _settings.get("export_format") in FORMATS else FORMATS[0])
        self.open_button = PushButton(text="Open export folder")
        self.source = FileEdit(mode="d", label="Generated folder")
        self.load_button = PushButton(text="Load generated folder")
        self.position = Label(value="No candidates yet: synthesize, or load a generated folder.")
        self.figures = Label(value="")
        self.buttons = {
            "previous": PushButton(text="◀ Previous"),
            "accept": PushButton(text=f"Accept [{KEYS['accept']}]"),
            "reject": PushButton(text=f"Reject [{KEYS['reject']}]"),
            "skip": PushButton(text=f"Skip [{KEYS['skip']}]"),
            "undo": PushButton(text=f"Undo [{KEYS['undo']}]"),
            "next": PushButton(text="Next ▶"),
        }
        self.real = FileEdit(mode="d", label="Real data (validation)")
        self.export_button = PushButton(text="Export")
        self.status = Label(value="")
        self.figures.native.setWordWrap(True)
        self.status.native.setWordWrap(True)
        b = self.buttons
        self.extend([
            Container(widgets=[self.folder, self.format]),
            self.open_button,
            Container(widgets=[self.source]),
            self.load_button,
            self.position,
            self.figures,
            Container(widgets=[b["previous"], b["skip"], b["next"]], layout="horizontal",
                      labels=False),
            Container(widgets=[b["accept"], b["reject"], b["undo"]], layout="horizontal",
                      labels=False),
            Container(widgets=[self.real]),
            self.export_button,
            self.status,
        ])
        self.open_button.changed.connect(self.open_session)
        self.load_button.changed.connect(lambda *_: self.load_folder(self.source.value))
        self.format.changed.connect(lambda v: _settings.put("export_format", v))
        b["accept"].changed.connect(self.accept)
        b["reject"].changed.connect(self.reject)
        b["skip"].changed.connect(self.skip)
        b["undo"].changed.connect(self.undo)
        b["previous"].changed.connect(lambda *_: self.show_candidate(self.pos - 1))
        b["next"].changed.connect(lambda *_: self.show_candidate(self.pos + 1))
        self.export_button.changed.connect(self.export)
        for action, key in KEYS.items():
            viewer.bind_key(key, lambda _v, a=action: getattr(self, a)(), overwrite=True)
        bus.candidates.connect(self.add_candidates)
        call_on_destroy(self, "teardown")
        self._update_labels()

    # ----------------------------------------------------------------- session
    def close_session(self) -> None:
        """Release the export folder (its lock)."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def teardown(self) -> None:
        """The widget was closed: stop taking candidates and release the export folder."""
        bus.candidates.disconnect(self.add_candidates, missing_ok=True)
        for key in KEYS.values():
            with contextlib.suppress(Exception):  # the viewer may be gone already
                self.viewer.bind_key(key, None)
        self.close_session()

    def open_session(self, *_: object) -> ExportSession | None:
        """Open (or create) the export folder; a reopened folder resumes where it stopped."""
        try:
            folder = Path(self.folder.value)
            if str(folder) in ("", "."):
                raise ValueError("choose an export folder first.")
            self.close_session()
            self.session = ExportSession(folder)
            _settings.put("export_folder", str(folder))
            for warning in self.session.warnings:
                show_info(f"Export folder: {warning}")
            self.status.value = self.session.summary()
        except Exception as exc:
            report_error(exc, "Opening the export folder")
        self._update_labels()
        return self.session

    def _require_session(self) -> ExportSession:
        if self.session is None:
            session = self.open_session() if str(self.folder.value) not in ("", ".") else None
            if session is None:
                raise ValueError("choose an export folder and press Open export folder first.")
        return self.session

    # ----------------------------------------------------------------- queue
    def add_candidates(self, candidates: list[Candidate]) -> None:
        """Queue candidates (from the synthesis widget); the first new one is shown if idle."""
        first_new = len(self.queue)
        self.queue += [_Item(c.name or f"candidate {first_new + i + 1}", c.image, c.mask,
                             provenance=dict(c.provenance)) for i, c in enumerate(candidates)]
        if self.pos < 0 or self.queue[self.pos].decision is not None:
            self.show_candidate(first_new)
        else:
            self._update_labels()

    def load_folder(self, folder: str | Path) -> int:
        """Queue every image/mask pair of a generated folder (with its generate.jsonl)."""
        try:
            root = Path(folder)
            pairs = find_pairs(root)
            prov = read_provenance(root)
            items = []
            for pair in pairs:
                rel = f"images/{pair.image.name}"
                p = dict(prov.get(rel, {}))
                p.setdefault("source_mask", str(pair.mask))
                p.pop("image", None)
                p.pop("mask", None)
                p["generated_file"] = str(pair.image)
                items.append(_Item(pair.stem, image_path=pair.image, mask_path=pair.mask,
                                   provenance=p))
        except Exception as exc:
            report_error(exc, "Loading the generated folder")
            return 0
        first_new = len(self.queue)
        self.queue += items
        self.show_candidate(first_new)
        return len(items)

    def current(self) -> _Item | None:
        return self.queue[self.pos] if 0 <= self.pos < len(self.queue) else None

    def show_candidate(self, index: int) -> None:
        """Show candidate ``index``: the image, its mask as an overlay, its figures."""
        if not self.queue:
            self._update_labels()
            return
        self.pos = max(0, min(index, len(self.queue) - 1))
        item = self.queue[self.pos]
        try:
            image, mask = item.arrays()
            fig = basic_figures(image, mask)
        except Exception as exc:
            report_error(exc, f"Showing {item.name}")
            return
        self._set_layer(CANDIDATE_LAYER, image, Image, contrast_limits=(0, 255))
        overlay = {**mask_layer_kwargs(CANDIDATE_MASK_LAYER), "opacity": 0.35}
        overlay.pop("name")
        self._set_layer(CANDIDATE_MASK_LAYER, mask, Labels, **overlay)
        self.figures.value = _figures_html(fig)
        self._update_labels()

    def _set_layer(self, name: str, data: np.ndarray, kind: type, **kwargs: Any) -> None:
        layer = next((lyr for lyr in self.viewer.layers if lyr.name == name), None)
        if isinstance(layer, kind) and layer.data.shape == data.shape:
            layer.data = data
            return
        if layer is not None:
            self.viewer.layers.remove(layer)
        add = self.viewer.add_image if kind is Image else self.viewer.add_labels
        add(data, name=name, **kwargs)

    def _update_labels(self) -> None:
        counts = self.session.counts() if self.session else {"accepted": 0, "rejected": 0}
        where = (f"{self.pos + 1} / {len(self.queue)}" if self.queue else "0 / 0")
        item = self.current()
        state = f" · this one: {item.decision} ({item.record_id})" if item and item.decision else ""
        name = f" · {item.name}" if item else ""
        folder = self.session.folder if self.session else "no export folder open"
        self.position.value = (f"candidate {where}{name}{state}<br>accepted {counts['accepted']}"
                               f" · rejected {counts['rejected']} · {folder}")

    # ----------------------------------------------------------------- decisions
    def _advance(self) -> None:
        nxt = next((i for i in range(self.pos + 1, len(self.queue))
                    if self.queue[i].decision is None), None)
        if nxt is not None:
            self.show_candidate(nxt)
        else:
            self._update_labels()
            self.status.value = "End of the queue."

    def accept(self, *_: object) -> dict[str, Any] | None:
        """Accept the shown candidate into the export folder and go to the next one."""
        return self._decide("accept")

    def reject(self, *_: object) -> dict[str, Any] | None:
        """Reject the shown candidate (recorded, no files) and go to the next one."""
        return self._decide("reject")

    def _decide(self, decision: str) -> dict[str, Any] | None:
        item = self.current()
        try:
            if item is None:
                raise ValueError("there is no candidate to decide on.")
            if item.decision is not None:
                raise ValueError(f"{item.name} was already {item.decision}ed "
                                 f"({item.record_id}); Undo [U] first to change it.")
            session = self._require_session()
            image, mask = item.arrays()
            fn = session.accept if decision == "accept" else session.reject
            record = fn(image, mask, **item.provenance)
        except Exception as exc:
            report_error(exc, decision.capitalize())
            return None
        item.decision, item.record_id = decision, record["id"]
        self.status.value = f"{decision}ed {item.name} as {record['id']}"
        self._advance()
        return record

    def skip(self, *_: object) -> None:
        """Leave the shown candidate undecided and go to the next one."""
        if self.queue:
            self.show_candidate(self.pos + 1)

    def undo(self, *_: object) -> dict[str, Any] | None:
        """Undo the newest decision (an accepted sample's files go to the trash folder)."""
        try:
            record = self._require_session().undo()
        except Exception as exc:
            report_error(exc, "Undo")
            return None
        if record is None:
            self.status.value = "Nothing to undo."
            return None
        for i, item in enumerate(self.queue):
            if item.record_id == record["target"]:
                item.decision = item.record_id = None
                self.show_candidate(i)
                break
        self.status.value = f"undid {record['target_decision']} of {record['target']}"
        self._update_labels()
        return record

    # ----------------------------------------------------------------- export
    def export(self, *_: object) -> Any:
        """Plain: the export folder is the dataset. nnU-Net v2: write the raw dataset layout."""
        try:
            session = self._require_session()
        except Exception as exc:
            report_error(exc, "Export")
            return None
        if self.format.value == FORMATS[0]:
            self.status.value = (f"The export folder is the plain dataset: {session.folder}/"
                                 f"images and masks ({session.n_accepted} samples).")
            return None
        real = Path(self.real.value) if str(self.real.value) not in ("", ".") else None
        out = session.folder / "nnUNet_raw"
        worker = create_worker(export_nnunet, session.folder, out, real=real, overwrite=True,
                               _ignore_errors=True)  # errors go to report_error below
        def done(path: Path) -> None:
            if self.session is not None:  # still open
                self.status.value = f"nnU-Net v2 dataset written: {path}"

        worker.returned.connect(done)
        worker.errored.connect(lambda exc: report_error(exc, "nnU-Net export"))
        self._workers.append(worker)
        worker.finished.connect(lambda: self._workers.remove(worker))
        worker.start()
        return worker
