"""Curation widget: step through candidates, see their figures, accept or reject with one key.

Candidates come from the synthesis widget (every run and variation) or from a folder that
``napari-synthgen generate`` wrote. Each one's quality figures (``quality.sample_figures``) are
computed in a worker against a reference: a folder of real pairs, or the statistics the current
model carries from its training data. The queue can be sorted by score, candidates below a
threshold are flagged, and all candidates above (below) it can be accepted (rejected) at once,
after a confirmation; Undo [U] takes such a bulk action back as one step. Decisions go to an
``ExportSession`` (files, a manifest with provenance and the figures); the export folder and
format are remembered.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels

from ..curation import ExportSession, export_nnunet, install_splits, reword
from ..io import find_pairs
from ..napari_io import mask_layer_kwargs
from ..quality import ReferenceStats, basic_figures, reference_from_folder
from . import _common, _settings
from ._bus import Candidate, ModelAnnouncement, bus_for
from ._common import (
    call_on_destroy,
    fit_scroll_width,
    report_error,
    scroll_body,
    show_info,
    show_warning,
    widen_path,
    wrap_label,
)
from ._figures import QualityPanel, table_html
from ._queue import (
    QueueItem,
    bulk_work,
    canvas_text,
    figures_work,
    item_quality,
    model_reference,
    read_folder,
    read_reference,
)
from ._worker import Workers

if TYPE_CHECKING:
    import napari

CANDIDATE_LAYER = "candidate"
CANDIDATE_MASK_LAYER = "candidate mask"
FORMATS = ("plain (images/ + masks/)", "nnU-Net v2 raw")
KEYS = {"accept": "A", "reject": "R", "skip": "S", "undo": "U"}
#: Queue orders: as the candidates came, or by quality score (unscored ones last).
ORDERS = ("as they came", "score, lowest first", "score, highest first")
FLAG = "⚑"
PREPROCESSED_ENV = "nnUNet_preprocessed"
RAW_ENV = "nnUNet_raw"
#: How this widget names the options export messages mention (they name Python keywords).
FIELDS = {"n_folds": "Folds", "real": "Real data (validation)",
          "preprocessed_root": f"${PREPROCESSED_ENV}", "dataset_id": "Dataset id",
          "name": "Dataset name", "overwrite": "overwrite"}


def _figures_html(fig: dict[str, Any]) -> str:
    multi = "yes" if fig["multi_class"] else "<b style='color:#f66'>no: one class only</b>"
    stack = (f"stack of {fig['n_slices']} slices (slider: page through them) · score: mean "
             "over slices<br>" if "n_slices" in fig else "")
    return stack + (
        f"intensity mean {fig['mean']:.1f} · std {fig['std']:.1f} · range {fig['min']:.0f}–"
        f"{fig['max']:.0f} · {fig['levels']} levels<br>"
        f"background {fig['frac_background']:.1%} · interior {fig['frac_interior']:.1%} · "
        f"boundary {fig['frac_boundary']:.1%} · more than one class: {multi}"
    )


class CurateWidget(Container):
    """Dock widget: queue of candidates sorted and flagged by quality score, their figures beside
    the real reference, Accept [A] / Reject [R] / Skip [S] / Undo [U], bulk decisions by
    threshold, export folder and format.

    ``confirm(title, text) -> bool`` asks before a bulk decision (a message box; scripts and
    tests may replace it).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.bus = bus_for(viewer)  # this viewer's widgets only
        self._init_state()
        self._build_source_fields()
        self._build_queue_view()
        self._build_decision_buttons()
        self._build_export_fields()
        self._lay_out()
        self._connect_events()
        self._model = self.bus.current_model()
        self.choose_reference()
        self._update_labels()
        self._format_changed()

    def _init_state(self) -> None:
        """The export session, the queue and its position, Undo's history, the reference the
        figures compare with, and the timer that re-sorts the queue as figures arrive."""
        from qtpy.QtCore import QTimer

        self.session: ExportSession | None = None
        self.queue: list[QueueItem] = []
        self.pos = -1
        self._jobs = Workers()
        self.confirm: Callable[[str, str], bool] = lambda title, text: _common.ask(
            self.native, title, text, ("Yes", "No")) == "Yes"
        #: decisions of this session, newest last; a bulk action is one entry (Undo takes it
        #: back as one step)
        self._actions: list[list[str]] = []
        self._arrived = 0
        self._reference: ReferenceStats | None = None
        self._reference_source = ""
        self._ref_version = 0
        self._ref_pending = False
        self._model: ModelAnnouncement | None = None
        self._overlay_shown = False
        self._syncing = False
        self._resort_timer = QTimer()
        self._resort_timer.setSingleShot(True)
        self._resort_timer.setInterval(150)

    def _build_source_fields(self) -> None:
        """The export folder and format, a generated folder to load, the reference folder."""
        self.folder = FileEdit(mode="d", label="Export folder",
                               value=_settings.get("export_folder", ""))
        self.format = ComboBox(choices=list(FORMATS), label="Format",
                               value=_settings.get("export_format", FORMATS[0])
                               if _settings.get("export_format") in FORMATS else FORMATS[0])
        self.open_button = PushButton(text="Open export folder")
        self.source = FileEdit(mode="d", label="Generated folder")
        self.load_button = PushButton(text="Load generated folder")
        self.reference_folder = FileEdit(mode="d", label="Reference (real pairs)")
        self.reference_folder.tooltip = (
            "A paired folder of real images (images/ + masks/) the figures compare with. Leave "
            "empty to use the statistics the model carries from its training data.")
        self.reference_note = Label(value="")

    def _build_queue_view(self) -> None:
        """The queue list, its order and flag threshold, the shown candidate's figures and
        curves, and the bulk decisions by threshold."""
        from qtpy.QtWidgets import QListWidget

        self.position = Label(value="No candidates yet: synthesize, or load a generated folder.")
        self.figures = Label(value="")
        self.table = Label(value="")
        self.order = ComboBox(choices=list(ORDERS), label="Order",
                              value=_settings.get("curate_order", ORDERS[0])
                              if _settings.get("curate_order") in ORDERS else ORDERS[0])
        self.threshold = FloatSpinBox(value=float(_settings.get("curate_threshold", 0.5)),
                                      min=0.0, max=1.0, step=0.05, label=f"{FLAG} Flag below")
        self.threshold.tooltip = ("Candidates whose score is below this are flagged; the score "
                                  "sorts and flags, it never decides alone.")
        self.bulk_accept = PushButton(text="Accept all ≥ threshold")
        self.bulk_reject = PushButton(text="Reject all < threshold")
        self.queue_list = QListWidget()
        self.queue_list.setMinimumHeight(90)
        self.queue_list.setMaximumHeight(160)
        self.panel = QualityPanel(str(self.viewer.theme))

    def _build_decision_buttons(self) -> None:
        """Previous / Skip / Next and Accept / Reject / Undo (with their keys)."""
        self.buttons = {
            "previous": PushButton(text="◀ Previous"),
            "accept": PushButton(text=f"Accept [{KEYS['accept']}]"),
            "reject": PushButton(text=f"Reject [{KEYS['reject']}]"),
            "skip": PushButton(text=f"Skip [{KEYS['skip']}]"),
            "undo": PushButton(text=f"Undo [{KEYS['undo']}]"),
            "next": PushButton(text="Next ▶"),
        }

    def _build_export_fields(self) -> None:
        """The nnU-Net export: real validation data, output folder, dataset id and name,
        folds, where the splits go, Export and the status line."""
        self.real = FileEdit(mode="d", label="Real data (validation)")
        self.real_note = Label(value="")
        self.nnunet_out = FileEdit(mode="d", label="nnU-Net output",
                                   value=_settings.get("nnunet_out",
                                                       os.environ.get(RAW_ENV, "")))
        self.dataset_id = SpinBox(value=501, min=1, max=999, label="Dataset id")
        self.dataset_name = LineEdit(value="SynthEM", label="Dataset name")
        self.folds = SpinBox(value=0, min=0, max=100, label="Folds (0 = from real pairs)")
        self.put_splits = CheckBox(value=True, text="Put the splits where nnU-Net reads them")
        self.put_splits.tooltip = (f"Copy splits_final.json to ${PREPROCESSED_ENV}/<dataset>/, "
                                   "where nnU-Net looks for a dataset's folds.")
        self.splits_note = Label(value="")
        self.export_button = PushButton(text="Export")
        self.status = Label(value="")

    def _lay_out(self) -> None:
        """Everything in a scroll body: the queue, figures and export sections are taller
        than a laptop screen beside the other docks, so the window's minimum height stays
        small."""
        for label in (self.position, self.figures, self.status, self.real_note,
                      self.splits_note, self.reference_note):
            wrap_label(label)
        for path_field in (self.folder, self.source, self.real, self.nnunet_out,
                           self.reference_folder):
            widen_path(path_field)
        queue_box = Container(labels=False)
        queue_box.native.layout().addWidget(self.queue_list)
        panel_box = Container(labels=False)
        panel_box.native.layout().addWidget(self.panel.canvas)
        b = self.buttons
        body = self._body = scroll_body(self)
        body.extend([
            Container(widgets=[self.folder, self.format]),
            self.open_button,
            Container(widgets=[self.source]),
            self.load_button,
            Container(widgets=[self.reference_folder]),
            self.reference_note,
            Container(widgets=[self.order, self.threshold]),
            queue_box,
            self.position,
            self.figures,
            self.table,
            panel_box,
            Container(widgets=[b["previous"], b["skip"], b["next"]], layout="horizontal",
                      labels=False),
            Container(widgets=[b["accept"], b["reject"], b["undo"]], layout="horizontal",
                      labels=False),
            Container(widgets=[self.bulk_accept, self.bulk_reject], layout="horizontal",
                      labels=False),
            Container(widgets=[self.real]),
            self.real_note,
            Container(widgets=[self.nnunet_out, self.dataset_id, self.dataset_name,
                               self.folds]),
            self.put_splits,
            self.splits_note,
            self.export_button,
            self.status,
        ])
        fit_scroll_width(body)

    def _connect_events(self) -> None:
        """The buttons and keys, the fields that change the queue or the export, the bus
        (candidates and the model in use), napari's theme, and teardown when the dock closes."""
        b = self.buttons
        self._resort_timer.timeout.connect(self._resort)
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
        self.real.changed.connect(self._real_changed)
        self.format.changed.connect(self._format_changed)
        self.reference_folder.changed.connect(lambda *_: self.choose_reference())
        self.order.changed.connect(self._order_changed)
        self.threshold.changed.connect(self._threshold_changed)
        self.bulk_accept.changed.connect(lambda *_: self.accept_above())
        self.bulk_reject.changed.connect(lambda *_: self.reject_below())
        self.queue_list.currentRowChanged.connect(self._row_chosen)
        for action, key in KEYS.items():
            self.viewer.bind_key(key, lambda _v, a=action: getattr(self, a)(), overwrite=True)
        self.bus.candidates.connect(self.add_candidates)
        self.bus.model_changed.connect(self._model_changed)
        self.viewer.events.theme.connect(self._theme_changed)
        call_on_destroy(self, "teardown")

    # ----------------------------------------------------------------- session
    def close_session(self) -> None:
        """Release the export folder (its lock)."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Process Qt events until no work of this widget runs and the queue is sorted (for
        tests and scripts)."""
        self._jobs.wait_idle(timeout)
        if self._resort_timer.isActive():
            self._resort_timer.stop()
            self._resort()

    def teardown(self) -> None:
        """The widget was closed: stop taking candidates and release the export folder."""
        self._jobs.close()
        self._resort_timer.stop()
        self.bus.candidates.disconnect(self.add_candidates, missing_ok=True)
        self.bus.model_changed.disconnect(self._model_changed, missing_ok=True)
        with contextlib.suppress(Exception):  # the viewer may be gone already
            self.viewer.events.theme.disconnect(self._theme_changed)
        with contextlib.suppress(Exception):
            self._show_flag(None)
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
            self._actions.clear()  # Undo reaches back decision by decision in a new session
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
        items = [QueueItem(c.name or f"candidate {first_new + i + 1}", c.image, c.mask,
                       provenance=dict(c.provenance)) for i, c in enumerate(candidates)]
        self._enqueue(items)
        if self.pos < 0 or self.queue[self.pos].decision is not None:
            self.show_candidate(self.queue.index(items[0]) if items else first_new)
        else:
            self._update_labels()

    def _enqueue(self, items: list[QueueItem]) -> None:
        """Append items (numbered in arrival order) and start computing their figures."""
        for item in items:
            item.order = self._arrived
            self._arrived += 1
        self.queue += items
        self._compute(items)
        self._resort()

    def load_folder(self, folder: str | Path) -> Any:
        """Queue every image/mask pair of a generated folder (with its generate.jsonl); the
        folder is read in a worker (returned; ``wait_idle`` waits for it)."""
        job = self._jobs.start(read_folder, Path(folder), doing="Loading the generated folder",
                               progress="Loading the generated folder",
                               on_result=self._folder_read)
        return job.worker

    def _folder_read(self, items: list[QueueItem], _ctx: object = None) -> None:
        first_new = len(self.queue)
        self._enqueue(items)
        self.show_candidate(self.queue.index(items[0]) if items else first_new)

    def current(self) -> QueueItem | None:
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
            if image.ndim == 3:
                fig["n_slices"] = image.shape[0]
        except Exception as exc:
            report_error(exc, f"Showing {item.name}")
            return
        self._set_layer(CANDIDATE_LAYER, image, Image, contrast_limits=(0, 255))
        overlay = {**mask_layer_kwargs(CANDIDATE_MASK_LAYER), "opacity": 0.35}
        overlay.pop("name")
        self._set_layer(CANDIDATE_MASK_LAYER, mask, Labels, **overlay)
        if image.ndim == 3:  # a stack: the dims slider pages through it, from its worst slice
            worst = (item.figures or {}).get("worst_slice", 0)
            self.viewer.dims.set_current_step(0, max(int(worst), 0))
        self.figures.value = _figures_html(fig)
        self._show_quality(item)
        self._update_labels()

    def _show_quality(self, item: QueueItem) -> None:
        """The figures table, the curves beside the reference's and the flag of ``item``."""
        if item.figures_error:
            self.table.value = (f"<span style='color:#f66'>quality figures failed: "
                                f"{item.figures_error}</span>")
        else:
            self.table.value = table_html(item.figures, self.threshold.value)
        self.panel.show(item.curves, self._reference)
        self._show_flag(item)
        self._refresh_list()

    def _show_flag(self, item: QueueItem | None) -> None:
        """Mark a flagged candidate on the canvas (a text overlay, not a notification)."""
        overlay = canvas_text(self.viewer)
        if item is not None and item.flagged(self.threshold.value):
            overlay.text = (f"{FLAG} flagged: score {item.score:.2f} < "
                            f"{self.threshold.value:.2f}")
            overlay.color = "#ff6666"
            overlay.visible = True
            self._overlay_shown = True
        elif self._overlay_shown:
            overlay.visible = False
            overlay.text = ""
            self._overlay_shown = False

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
        if item is not None and item.flagged(self.threshold.value):
            name += f" · <b style='color:#f66'>{FLAG} flagged</b>"
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
            self._check_no_bulk()
            session = self._require_session()
            image, mask = item.arrays()
            fn = session.accept if decision == "accept" else session.reject
            record = fn(image, mask, provenance=item.provenance, quality=self._quality(item),
                        spacing=item.spacing(image))
        except Exception as exc:
            report_error(exc, decision.capitalize())
            return None
        item.decision, item.record_id = decision, record["id"]
        self._actions.append([record["id"]])
        self.status.value = f"{decision}ed {item.name} as {record['id']}"
        self._advance()
        return record

    def _quality(self, item: QueueItem) -> dict[str, Any]:
        """The figures the manifest records for ``item``, with the reference they used.

        A candidate decided before its worker finished gets them computed now (one sample:
        tens of milliseconds), so every record carries the same figures. A sample whose
        figures cannot be computed (too small for a spectrum) gets the basic ones and why."""
        image, mask = item.arrays()
        quality = item_quality(item, image, mask, self._reference, self._reference_source)
        if item.figures is None and "figures_error" not in quality:
            item.figures = {k: v for k, v in quality.items() if k != "reference"}
        return quality

    def _bulk_running(self) -> bool:
        return any(job.kind == "bulk" for job in self._jobs.jobs)

    def _check_no_bulk(self) -> None:
        if self._bulk_running():
            raise ValueError("a bulk decision is still being recorded; wait for it to finish.")

    def skip(self, *_: object) -> None:
        """Leave the shown candidate undecided and go to the next one."""
        if self.queue:
            self.show_candidate(self.pos + 1)

    def undo(self, *_: object) -> dict[str, Any] | None:
        """Undo the newest decision, or the newest bulk decision as a whole (an accepted
        sample's files go to the trash folder); returns the last undo record.

        Each undo is its own manifest record, written before the files move: if napari stops
        half-way through a bulk undo, the rest stays decided and Undo goes on from there.
        """
        undone: list[dict[str, Any]] = []
        try:
            self._check_no_bulk()
            session = self._require_session()
            batch = self._actions[-1] if self._actions else None
            if batch is None:  # decisions of an earlier session: one at a time
                record = session.undo()
                if record is not None:
                    undone.append(record)
            while batch:
                record = session.undo()
                if record is None:
                    break
                undone.append(record)
                if record["target"] not in batch:  # cannot happen: the folder is locked to us
                    raise ValueError(f"undid {record['target']}, which is not among the last "
                                     "decisions of this widget; check the manifest.")
                batch.remove(record["target"])
            if batch == []:
                self._actions.pop()
        except Exception as exc:
            report_error(exc, "Undo")
            undone += self._undone_by_session()
        finally:
            self._mark_undone(undone)
        if not undone:
            self.status.value = "Nothing to undo."
            return None
        last = undone[-1]
        what = last.get("target_decision", "decision")
        self.status.value = (f"undid {what} of {last['target']}" if len(undone) == 1 else
                             f"undid {len(undone)} {what} decisions at once")
        return last

    def _undone_by_session(self) -> list[dict[str, Any]]:
        """After a failed undo: what the manifest says is undone although the widget did not
        hear of it (an undo is recorded before its files move), as undo-like records."""
        if self.session is None or self.session.closed:
            return []
        still = set(self.session.accepted) | set(self.session.rejected)
        gone = [it.record_id for it in self.queue if it.record_id and it.record_id not in still]
        for batch in self._actions:
            batch[:] = [sid for sid in batch if sid in still]
        self._actions[:] = [b for b in self._actions if b]
        return [{"target": sid} for sid in gone]

    def _mark_undone(self, records: list[dict[str, Any]]) -> None:
        """Make the undone items undecided again and show the first of them."""
        targets = {r["target"] for r in records}
        first = None
        for i, item in enumerate(self.queue):
            if item.record_id is not None and item.record_id in targets:
                item.decision = item.record_id = None
                first = i if first is None else first
        if first is not None:
            self.show_candidate(first)
        self._refresh_list()
        self._update_labels()

    # ----------------------------------------------------------------- bulk decisions
    def accept_above(self, *_: object) -> Any:
        """Accept every undecided candidate scored at or above the threshold, after a
        confirmation; returns the worker recording them (None if nothing was done)."""
        return self._bulk("accept")

    def reject_below(self, *_: object) -> Any:
        """Reject every undecided candidate scored below the threshold, after a confirmation;
        returns the worker recording them (None if nothing was done)."""
        return self._bulk("reject")

    def _bulk(self, decision: str) -> Any:
        t = float(self.threshold.value)
        above = decision == "accept"
        try:
            self._check_no_bulk()
            session = self._require_session()
            chosen = [it for it in self.queue if it.decision is None
                      and math.isfinite(it.score) and (it.score >= t) == above]
            unscored = [it for it in self.queue if it.decision is None
                        and not math.isfinite(it.score)]
        except Exception as exc:
            report_error(exc, f"{decision.capitalize()} by threshold")
            return None
        rule = f"score {'≥' if above else '<'} {t:.2f}"
        if not chosen:
            self.status.value = f"No undecided candidate has {rule}."
            return None
        text = (f"{decision.capitalize()} {len(chosen)} undecided candidate(s) with {rule}?"
                + (f"\n{len(unscored)} candidate(s) without a score are left alone."
                   if unscored else "")
                + f"\nUndo [{KEYS['undo']}] takes this back as one step.")
        if not self.confirm(f"{decision.capitalize()} by threshold", text):
            self.status.value = f"{decision.capitalize()} by threshold: cancelled."
            return None
        entries = [(it, {**it.provenance, "bulk_decision": f"{decision} {rule}"})
                   for it in chosen]
        batch: list[str] = []
        self._actions.append(batch)
        self.status.value = f"{decision.capitalize()}ing {len(chosen)} candidate(s) ({rule}) ..."
        job = self._jobs.start(bulk_work, session, decision, entries, self._reference,
                               self._reference_source,
                               doing=f"{decision.capitalize()} by threshold", context=batch,
                               progress=f"{decision.capitalize()}ing {len(chosen)} candidates",
                               on_yield=self._bulk_one, on_finish=self._bulk_done, kind="bulk")
        return job.worker

    def _bulk_one(self, value: tuple[QueueItem, dict[str, Any]], batch: list[str]) -> None:
        item, record = value
        item.decision, item.record_id = record["decision"], record["id"]
        batch.append(record["id"])

    def _bulk_done(self, batch: list[str]) -> None:
        if self._jobs.closed:
            return
        if not batch and self._actions and self._actions[-1] is batch:
            self._actions.pop()
        if batch:
            self.status.value = (f"{len(batch)} candidate(s) decided at once "
                                 f"({batch[0]} to {batch[-1]}); Undo [{KEYS['undo']}] takes "
                                 "them all back.")
        item = self.current()
        if item is not None and item.decision is not None:
            self._advance()
        else:
            self._refresh_list()
            self._update_labels()

    # ----------------------------------------------------------------- quality figures
    def _model_changed(self, announcement: ModelAnnouncement | None) -> None:
        self._model = announcement
        if self._reference_path() is None:
            self.choose_reference()

    def _reference_path(self) -> str | None:
        """The reference folder typed or chosen; None when the field is empty."""
        text = str(self.reference_folder.line_edit.value).strip()
        return text if text not in ("", ".") else None

    def _theme_changed(self, event: object) -> None:
        if not self._jobs.closed:
            self.panel.set_theme(str(getattr(event, "value", self.viewer.theme)))

    def choose_reference(self) -> None:
        """Load the reference the figures compare with (the folder chosen, else the model's
        training statistics) in a worker, then recompute every candidate's figures."""
        self._ref_version += 1
        self._jobs.cancel_all("reference")
        self._jobs.cancel_all("figures")
        for item in self.queue:
            item.figures = item.curves = item.figures_error = None
        folder = self._reference_path()
        if folder is not None:
            source, fn, arg = f"real pairs in {folder}", reference_from_folder, folder
        elif self._model is not None:
            source, fn, arg = f"training data of {self._model.name}", model_reference, self._model
        else:
            self._set_reference(None, "", "No reference: choose a folder of real pairs (or "
                                "load a model trained by napari-synthgen) to get the score.")
            return
        self._ref_pending = True
        self.reference_note.value = f"Reading the reference ({source}) ..."
        self._jobs.start(read_reference, fn, arg, doing="Reading the reference",
                         progress="Reading the reference",
                         kind="reference", context=(self._ref_version, source),
                         on_result=self._reference_read, on_error=self._reference_failed)

    def _reference_read(self, result: tuple[ReferenceStats | None, str | None],
                        ctx: tuple[int, str]) -> None:
        version, source = ctx
        reference, error = result
        if version != self._ref_version:
            return
        if error is not None:
            self._reference_failed(error, ctx)
        elif reference is None:
            self._set_reference(None, "", f"{self._model.name if self._model else 'The model'} "
                                "carries no reference statistics (trained elsewhere or before "
                                "they were stored): choose a folder of real pairs for the score.")
        else:
            self._set_reference(reference, source, f"Reference: {source} "
                                f"({reference.n_images} image(s)).")

    def _reference_failed(self, exc: BaseException | str, ctx: tuple[int, str]) -> None:
        if ctx[0] == self._ref_version:
            self._set_reference(None, "", f"<span style='color:#f66'>No reference ({ctx[1]}): "
                                f"{exc}</span>")

    def _set_reference(self, reference: ReferenceStats | None, source: str, note: str) -> None:
        self._reference, self._reference_source = reference, source
        self._ref_pending = False
        self.reference_note.value = note
        self._compute(self.queue)
        self._resort()
        item = self.current()
        if item is not None:
            self._show_quality(item)

    def _compute(self, items: list[QueueItem]) -> None:
        """Compute the figures of ``items`` in a worker (after the reference is read)."""
        if not items or self._ref_pending:
            return
        self._jobs.start(figures_work, list(items), self._reference,
                         doing="Quality figures", kind="figures", context=self._ref_version,
                         progress="Quality figures" if len(items) > 4 else None,
                         on_yield=self._figures_arrived)

    def _figures_arrived(self, value: tuple[QueueItem, Any, Any, str | None], version: int) -> None:
        item, figures, crv, error = value
        if version != self._ref_version or item not in self.queue:
            return
        item.figures, item.curves, item.figures_error = figures, crv, error
        self._resort_timer.start()  # one re-sort for figures arriving close together
        if item is self.current():
            self._show_quality(item)
            self._update_labels()

    def _order_changed(self, value: str) -> None:
        _settings.put("curate_order", value)
        self._resort()

    def _threshold_changed(self, value: float) -> None:
        _settings.put("curate_threshold", float(value))
        item = self.current()
        if item is not None:
            self._show_quality(item)
        else:
            self._refresh_list()
        self._update_labels()

    def _resort(self) -> None:
        """Order the queue as chosen (unscored candidates last); the shown one stays shown."""
        item = self.current()
        order = self.order.value
        if order == ORDERS[0]:
            self.queue.sort(key=lambda it: it.order)
        else:
            sign = 1.0 if order == ORDERS[1] else -1.0
            self.queue.sort(key=lambda it: (0, sign * it.score, it.order)
                            if math.isfinite(it.score) else (1, 0.0, it.order))
        if item is not None:
            self.pos = self.queue.index(item)
        self._refresh_list()
        self._update_labels()

    def _refresh_list(self) -> None:
        """Rebuild the queue list: score, decision, and the flag of low-scored candidates."""
        from qtpy.QtGui import QBrush, QColor

        t = self.threshold.value
        self._syncing = True
        try:
            self.queue_list.clear()
            for item in self.queue:
                score = (f"{item.score:.2f}" if math.isfinite(item.score) else
                         "…" if item.figures is None and not item.figures_error else "—")
                flag = f"{FLAG} " if item.flagged(t) else "   "
                state = f" · {item.decision}ed" if item.decision else ""
                self.queue_list.addItem(f"{flag}{score}  {item.name}{state}")
                row = self.queue_list.item(self.queue_list.count() - 1)
                if item.flagged(t):
                    row.setForeground(QBrush(QColor("#ff6666")))
                    row.setToolTip(f"score {item.score:.3f} is below the threshold {t:.2f}")
                elif item.decision:
                    row.setForeground(QBrush(QColor("#888888")))
            if 0 <= self.pos < self.queue_list.count():
                self.queue_list.setCurrentRow(self.pos)
        finally:
            self._syncing = False

    def _row_chosen(self, row: int) -> None:
        if not self._syncing and 0 <= row < len(self.queue) and row != self.pos:
            self.show_candidate(row)

    # ----------------------------------------------------------------- export
    def _format_changed(self, *_: object) -> None:
        nnunet = self.format.value == FORMATS[1]
        for w in (self.real, self.real_note, self.nnunet_out, self.dataset_id,
                  self.dataset_name, self.folds, self.put_splits, self.splits_note):
            w.visible = nnunet
        root = os.environ.get(PREPROCESSED_ENV)
        self.put_splits.enabled = bool(root)
        self.splits_note.value = (
            f"${PREPROCESSED_ENV} is {root}" if root else
            f"${PREPROCESSED_ENV} is not set: after the export, copy splits_final.json into "
            f"${PREPROCESSED_ENV}/<dataset>/ once nnUNetv2_plan_and_preprocess has made it.")
        self._real_changed()

    def _real_changed(self, *_: object) -> None:
        """Say how many real pairs the validation folder holds (they decide the folds)."""
        real = self._real_folder()
        if real is None:
            self.real_note.value = ("No real data: nnU-Net then has no real images to validate "
                                    "on (the export says so).")
            return
        try:
            n = len(find_pairs(real))
        except Exception as exc:  # a folder being chosen may not be a paired folder (yet)
            self.real_note.value = f"<span style='color:#f66'>{exc}</span>"
            return
        self.real_note.value = (f"{n} real image/mask pair(s): folds default to that many "
                                "(at most 5); set Folds to choose.")

    def _real_folder(self) -> Path | None:
        return Path(self.real.value) if str(self.real.value) not in ("", ".") else None

    def _nnunet_out(self, session: ExportSession) -> Path:
        out = Path(self.nnunet_out.value)
        if str(self.nnunet_out.value) in ("", "."):
            raise ValueError("choose an nnU-Net output folder (for example your $nnUNet_raw).")
        folder = session.folder.resolve()
        target = out.expanduser().resolve()
        if target == folder or folder in target.parents:
            raise ValueError(f"the nnU-Net output folder {out} is inside the export folder "
                             f"{session.folder}; choose a folder outside it (the export folder "
                             "holds only curated samples and their manifest).")
        return out

    def export(self, *_: object) -> Any:
        """Plain: the export folder is the dataset. nnU-Net v2: write the raw dataset layout
        (and, if asked, its splits where nnU-Net reads them); returns the worker."""
        try:
            session = self._require_session()
            if self.format.value == FORMATS[0]:
                self.status.value = (f"The export folder is the plain dataset: {session.folder}/"
                                     f"images and masks ({session.n_accepted} samples).")
                return None
            out = self._nnunet_out(session)
            preprocessed = os.environ.get(PREPROCESSED_ENV)
            ctx = {
                "folder": session.folder, "out": out, "real": self._real_folder(),
                "dataset_id": self.dataset_id.value, "name": self.dataset_name.value.strip(),
                "n_folds": self.folds.value or None,
                "install": bool(self.put_splits.value and preprocessed),
                "preprocessed": preprocessed,
            }
            if not ctx["name"]:
                raise ValueError("give the dataset a name (letters, digits, no spaces).")
        except Exception as exc:
            report_error(exc, "Export", FIELDS)
            return None
        ctx["overwrite"] = self._may_replace(out, ctx["dataset_id"], ctx["name"])
        if ctx["overwrite"] is None:
            return None
        _settings.put("nnunet_out", str(out))
        self.status.value = f"Writing the nnU-Net dataset into {out} ..."

        def work(ctx: dict[str, Any]) -> tuple[Any, Path | None]:
            result = export_nnunet(ctx["folder"], ctx["out"], dataset_id=ctx["dataset_id"],
                                   name=ctx["name"], real=ctx["real"], n_folds=ctx["n_folds"],
                                   overwrite=ctx["overwrite"])
            installed = (install_splits(result.dataset, ctx["preprocessed"])
                         if ctx["install"] else None)
            return result, installed

        job = self._jobs.start(work, ctx, doing="nnU-Net export", context=ctx,
                               progress="nnU-Net export", on_result=self._exported,
                               flags=FIELDS)
        return job.worker

    def _may_replace(self, out: Path, dataset_id: int, name: str) -> bool | None:
        """Whether the export may replace an existing dataset: False when there is none, True
        when the user agreed to replace it, None when the user kept it (the export stops)."""
        dataset = out.expanduser().absolute() / f"Dataset{dataset_id:03d}_{name}"
        if not (dataset.is_dir() and any(dataset.iterdir())):
            return False
        answer = _common.ask(self.native, "Replace the nnU-Net dataset?",
                             f"{dataset} already holds an nnU-Net dataset. Replace it with "
                             "this export (its cases are rewritten, cases no longer exported "
                             "are removed)?", ("Cancel", "Replace"))
        if answer != "Replace":
            self.status.value = (f"Export cancelled: {dataset} is kept as it was; choose "
                                 "another Dataset id or name to export beside it.")
            return None
        return True

    def _exported(self, value: tuple[Any, Path | None], ctx: dict[str, Any]) -> None:
        """Show what was written, every warning of the export, and where the splits are."""
        result, installed = value
        for warning in result.warnings:
            show_warning(f"nnU-Net export: {reword(warning, FIELDS)}")
        where = (f"splits_final.json also put in {installed}" if installed else
                 f"copy {result.splits.name} into ${PREPROCESSED_ENV}/{result.dataset.name}/ "
                 "after nnUNetv2_plan_and_preprocess" if not ctx["install"] else "")
        self.status.value = (f"nnU-Net v2 dataset written: {result.dataset} "
                             f"({result.n_synthetic} synthetic + {result.n_real} real cases, "
                             f"{result.n_folds} fold(s)); {where}.")
        show_info(self.status.value)
