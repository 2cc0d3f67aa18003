"""The Check utility widget: does the synthetic set make a segmenter better on real test images?

A thin form over :func:`napari_synthgen.evaluation.evaluate`, the function ``napari-synthgen
evaluate`` calls: the same folders, budget, seeds and study sizes, the same result files. It
runs in a thread worker with napari's cancelable progress; a stopped check keeps its finished
runs in the results folder and the next one with the same settings starts from them.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox

from ..convergence import convergence_notes
from ..evaluation import evaluate
from ..evaluation_report import write_outputs
from ..segmenter import LOSSES
from ..study_power import power_notes
from ..synthetic_seen import seen_notes
from . import _settings
from ._common import (
    READ_AS_CHOICES,
    call_on_destroy,
    fit_scroll_width,
    read_as_wording,
    scroll_body,
    widen_path,
    wrap_label,
)
from ._worker import Workers, report_error, with_progress

if TYPE_CHECKING:
    import napari

#: The figures shown per arm in the widget's table (all are in the result files): the
#: study's (``evaluation.STUDY_METRICS``; interior Dice is the organelles' own on organelle masks).
SHOWN: tuple[tuple[str, str], ...] = (("boundary_f1", "boundary F1"),
                                      ("dice_interior", "interior Dice"),
                                      ("mean_dice", "mean Dice"),
                                      ("dice_objects", "objects Dice"))


#: the dock's "Synthetic pixels left out" choices and the evaluate options each one sets
LEAVE_OUT: dict[str, dict[str, Any]] = {
    "nothing": {},
    "class 0": {"synthetic_ignore": (0,)},
    "objects off the mask": {"synthetic_ignore_off_mask": True},
}


def _sizes(text: str) -> list[int] | None:
    """The Real sizes field: empty for all real pairs, else numbers such as ``2,5``."""
    if not text.strip():
        return None
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"Real sizes holds numbers of real pairs >= 1 separated by commas, "
                         f"e.g. 2,5 (or nothing: all real pairs); got {text!r}.")
    return sizes


def _folder(field: FileEdit, what: str) -> Path:
    """A folder field's path; an empty field or a missing folder says which to choose."""
    text = str(field.line_edit.value).strip()
    if not text or not Path(text).is_dir():
        raise ValueError(f"choose the {what} folder (a paired folder: images/ and masks/)"
                         + (f"; {text} is not a folder." if text else "."))
    return Path(text)


def check_utility(real: Path, synthetic: Path, test: Path, out: Path, *, progress: Any,
                  **options: Any) -> tuple[Any, str]:
    """:func:`~napari_synthgen.evaluation.evaluate`, then its result files (what
    ``napari-synthgen evaluate`` writes) and the dock's summary; runs in the worker thread
    (the summary's bootstrap projections take up to a second on a large study)."""
    result = evaluate(real, synthetic, test, out=out, progress=progress, **options)
    result.files = write_outputs(result, out)
    return result, summary_html(result)


def _value(mean: Any, std: Any) -> str:
    if mean is None or mean != mean:
        return "—"
    return f"{mean:.3f}" + ("" if std is None or std != std else f"&nbsp;±&nbsp;{std:.3f}")


def _verdict(diff: float, low: float, high: float) -> str:
    """A paired difference and its interval in a few words, coloured when it says something."""
    if diff != diff:  # e.g. objects Dice without class 0 in the test masks
        return "n/a"
    if low != low:
        return f"{diff:+.3f} (no interval)"
    text = f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"
    if low > 0:
        return f"<b style='color:#5ec27a'>{text} helped</b>"
    if high < 0:
        return f"<b style='color:#f66'>{text} hurt</b>"
    return f"{text} no evidence"


def summary_html(result: Any) -> str:
    """Each arm's figures (mean ± std over seeds), then what the comparison says: in a study,
    real + synthetic minus real only per size and figure with its 95 % interval; else the
    notes; then what more seeds would buy where an interval holds 0 (study_power), the sizes
    whose real-only arm was still learning (convergence) and what the real-only segmenter
    flags in the synthetic pairs (synthetic_seen).
    All of it is also in ``evaluation.md``."""
    head = "".join(f"<th align='right'>&nbsp;{label}</th>" for _, label in SHOWN)
    rows, verdicts = [], []
    for row in result.sizes or [{"arm": arm} for arm in result.summary]:
        arm, n = row["arm"], row.get("n_real")
        name = arm if not n else f"{arm} ({n} real)"
        figures = ((row.get(f"{k}_mean"), row.get(f"{k}_std")) if result.sizes
                   else result.summary[arm].get(k, (None, None)) for k, _ in SHOWN)
        cells = "".join(f"<td align='right'>&nbsp;{_value(*f)}</td>" for f in figures)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
        if f"diff_{SHOWN[0][0]}" in row:
            parts = [f"{label} " + _verdict(*(row[f"diff_{k}{end}"] for end in ("", "_low",
                                                                              "_high")))
                     for k, label in SHOWN]
            verdicts.append(f"<li>{n} real pairs, real + synthetic minus real only:<br>"
                            + "<br>".join(parts) + "</li>")
    if not result.sizes:
        verdicts = [f"<li>{html.escape(note)}</li>" for note in result.notes]
    verdicts += [f"<li>{html.escape(note)}</li>" for note in
                 [*power_notes(result.sizes, result.runs),
                  *convergence_notes(result.runs, result.settings["steps"]),
                  *seen_notes(result.runs)]]
    return (f"<small><table cellspacing='0' cellpadding='1'><tr><th align='left'>arm</th>"
            f"{head}</tr>{''.join(rows)}</table></small><ul>{''.join(verdicts)}</ul>")


class UtilityWidget(Container):
    """Dock widget: train the small segmenter on real pairs, real + synthetic and synthetic
    alone, score each on real test pairs, and show the figure and what it says."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self._jobs = Workers()
        self.result: Any = None
        self._build_fields()
        self._lay_out()
        self.run_button.changed.connect(lambda *_: self.run())
        self.stop_button.changed.connect(lambda *_: self.stop())
        call_on_destroy(self, "teardown")
        self._set_running(False)

    def _build_fields(self) -> None:
        self.real = FileEdit(mode="d", label="Real pairs",
                             value=_settings.get("utility_real", ""))
        self.real.tooltip = "Real training pairs (images/ + masks/), e.g. your labelled slices."
        self.synthetic = FileEdit(mode="d", label="Synthetic pairs",
                                  value=_settings.get("export_folder", ""))
        self.synthetic.tooltip = ("The synthetic pairs to judge: the Curate widget's export "
                                  "folder (the default) or generate's output.")
        self.test = FileEdit(mode="d", label="Test pairs",
                             value=_settings.get("utility_test", ""))
        self.test.tooltip = ("Real pairs held out for scoring: never in the real or synthetic "
                             "pairs, nor seen by the generator (refused if they were).")
        self.read_as = ComboBox(choices=list(READ_AS_CHOICES), value="auto",
                                label="Masks read as")
        self.read_as.tooltip = ("How the masks of the real and test pairs are read: auto "
                                "(classes 0-2), binary (0/255 organelles), membrane, instances.")
        self.sizes = LineEdit(value="", label="Real sizes")
        self.sizes.tooltip = ("Empty: all real pairs. Numbers such as 2,5: a study, real only "
                              "against real + synthetic on that many real pairs, with paired "
                              "differences and 95 % intervals.")
        self.steps = SpinBox(value=150, min=1, max=1_000_000, label="Steps")
        self.steps.tooltip = ("Training steps per segmenter. 150 is a first look; 1000 with 3 "
                              "seeds a result to quote (about an hour on 2 CPU cores), if the "
                              "study says real only had stopped learning (else it says how "
                              "many steps to try).")
        self.seeds = SpinBox(value=2, min=1, max=100, label="Seeds")
        self.batch = SpinBox(value=4, min=2, max=1024, label="Batch size")
        self.device = ComboBox(choices=["cpu", "auto", "cuda", "mps"], value="cpu",
                               label="Device")
        self.loss = ComboBox(choices=list(LOSSES), value="weighted_ce", label="Loss")
        self.loss.tooltip = ("The segmenter's loss: weighted_ce (cross-entropy weighted by "
                             "inverse class frequency) or dice_ce (cross-entropy plus the soft "
                             "Dice of the objects, nnU-Net's): for sparse objects such as "
                             "organelles, whose weights make weighted_ce call every dark patch "
                             "an object.")
        self.leave_out = ComboBox(choices=list(LEAVE_OUT), value="nothing",
                                  label="Synthetic pixels left out")
        self.leave_out.tooltip = (
            "What of the synthetic pairs teaches nothing in the mixed arm: nothing; class 0 "
            "(--synthetic-ignore 0: a class the generator draws badly); or objects off the "
            "mask (--synthetic-ignore-off-mask: the class-0 pixels a segmenter trained on the "
            "real pairs calls an object, which the generator painted where its masks have "
            "none). The real-only runs are the same with any of them.")
        self.out = FileEdit(mode="d", label="Results folder")
        self.out.tooltip = ("Where the result files go. Empty: beside the synthetic folder, "
                            "<name>_evaluation. A check with the same settings continues "
                            "the runs found there.")
        self.run_button = PushButton(text="Check utility")
        self.stop_button = PushButton(text="Stop")
        self.status = Label(value="")
        self.summary = Label(value="")
        for label in (self.status, self.summary):
            wrap_label(label)
        from qtpy.QtWidgets import QLabel

        self.figure = QLabel()
        self.figure.setMinimumHeight(0)
        self.curves = QLabel()  # a study's real-only validation curves, under its figure
        self.curves.setMinimumHeight(0)
        self.curves.setToolTip("The real-only arm's training loss and held-out figure per "
                               "seed: a curve still rising at the end says the budget was "
                               "too short for the comparison (evaluation_curves.png).")

    def _lay_out(self) -> None:
        for field in (self.real, self.synthetic, self.test, self.out):
            widen_path(field)
        figure_box = Container(labels=False)
        figure_box.native.layout().addWidget(self.figure)
        figure_box.native.layout().addWidget(self.curves)
        body = scroll_body(self)
        body.extend([
            Container(widgets=[self.real, self.synthetic, self.test, self.read_as, self.sizes,
                               self.steps, self.seeds, self.batch, self.device, self.loss,
                               self.leave_out, self.out]),
            Container(widgets=[self.run_button, self.stop_button], layout="horizontal",
                      labels=False),
            self.status,
            self.summary,  # the answer first, then the figure
            figure_box,
        ])
        fit_scroll_width(body)
        # the arms' table and the figure need more room than the form
        body.root_native_widget.setMinimumWidth(470)
        self._scroll = body.root_native_widget

    @property
    def busy(self) -> bool:
        """Whether a check runs."""
        return self._jobs.busy

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.stop_button.enabled = running

    def results_folder(self) -> Path:
        """The Results folder, or ``<synthetic>_evaluation`` beside the synthetic folder."""
        if str(self.out.line_edit.value).strip():
            return Path(str(self.out.value))
        syn = Path(str(self.synthetic.value))
        return syn.parent / f"{syn.name}_evaluation"

    def run(self) -> Any:
        """Start the check in a worker; returns its job (None when the form is incomplete)."""
        try:
            real = _folder(self.real, "real pairs")
            synthetic = _folder(self.synthetic, "synthetic pairs")
            test = _folder(self.test, "test pairs")
            options = {"steps": self.steps.value, "seeds": self.seeds.value,
                       "batch_size": self.batch.value, "device": self.device.value,
                       "real_sizes": _sizes(self.sizes.value), "read_as": self.read_as.value,
                       "loss": self.loss.value, **LEAVE_OUT[self.leave_out.value]}
        except ValueError as exc:
            report_error(exc, "Check utility")
            self.status.value = f"<span style='color:#f66'>{html.escape(str(exc))}</span>"
            return None
        _settings.put("utility_real", str(real))
        _settings.put("utility_test", str(test))
        out = self.results_folder()
        self.result = None
        self.summary.value = ""
        self.figure.clear()
        self.curves.clear()
        self.status.value = "Starting ..."
        self._set_running(True)
        return self._jobs.start(
            with_progress, check_utility, real, synthetic, test, out, **options,
            doing="Checking utility", progress="Checking utility", kind="check",
            context=out, on_yield=self._stage, on_result=self._show,
            on_error=self._failed, on_finish=self._finished,
            flags={"real_sizes": "Real sizes", "batch_size": "Batch size", "steps": "Steps",
                   "seeds": "Seeds", "read_as": self.read_as.label})

    def stop(self) -> None:
        """Stop the check after the current training step (finished runs are kept)."""
        if self._jobs.cancel_all("check"):
            self.status.value = ("Stopped; the finished runs are kept in the results folder "
                                 "and the next check with these settings starts from them.")

    def _stage(self, stage: str, _out: Path) -> None:
        self.status.value = html.escape(stage)

    def _show(self, done: tuple[Any, str], out: Path) -> None:
        self.result, summary = done
        result = self.result
        self.status.value = f"Done: {html.escape(str(out))}"
        self.summary.value = summary
        name = "evaluation_sizes.png" if result.sizes else "evaluation.png"
        self.show_figure(out / name)
        if result.sizes and (out / "evaluation_curves.png").is_file():
            self.show_figure(out / "evaluation_curves.png", self.curves)

    def show_figure(self, path: Path, where: Any = None) -> None:
        """A result figure, scaled to the dock's width, in ``where`` (the main figure's
        place by default)."""
        from qtpy.QtCore import Qt
        from qtpy.QtGui import QPixmap

        pixmap = QPixmap(str(path))
        width = max(self._scroll.viewport().width() - 30, 300)
        (where or self.figure).setPixmap(pixmap.scaledToWidth(
            width, Qt.TransformationMode.SmoothTransformation))

    def _failed(self, exc: BaseException, _out: Path) -> None:
        text = html.escape(read_as_wording(str(exc), self.read_as.label)).replace("\n", "<br>")
        self.status.value = f"<span style='color:#f66'>{text}</span>"

    def _finished(self, _out: Path) -> None:
        self._set_running(False)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Process Qt events until the check has ended (for tests and scripts)."""
        self._jobs.wait_idle(timeout)

    def teardown(self) -> None:
        """The dock closed: stop a running check."""
        self._jobs.close()
