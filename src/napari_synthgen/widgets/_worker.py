"""One way for every widget to run work in a napari thread worker.

``Workers.start`` runs a function (or generator) in a thread and tracks it. Handlers run on the
GUI thread and receive the *context* bound when the work started (the synthesizer, model,
settings, layer...), never the widget's current state, so a setting changed meanwhile cannot
reach a running job. Errors and warnings become napari notifications with their real message;
after ``close()`` (the widget closed) results, progress and errors are dropped, but ``on_finish``
still runs so resources a job held are released. :func:`with_progress` runs a core function
that reports through a ``progress(stage, done, total)`` callback as such a job.

Only public API: superqt's worker classes (napari's add notification relays we do not want),
and cancellation of our own: a generator job returns at its next ``yield`` once cancelled,
closing its generator in the worker thread (its ``with``/``finally`` blocks run there, now).
A job with a progress bar shows napari's cancelable progress when it can stop at a yield.
"""

from __future__ import annotations

import contextlib
import inspect
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from napari.utils.notifications import show_error, show_warning
from superqt.utils import FunctionWorker, GeneratorWorker

from ..cli_wording import read_as_wording


class Progress(NamedTuple):
    """Yield this from a generator job to move its progress bar (``done`` of ``total``)."""

    done: int
    total: int


#: Errors whose message is written for the user (ours derive from these): shown as they are.
KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, OSError, RuntimeError, KeyError, MemoryError,
)


class _Stopped(Exception):
    """The job was cancelled: the core function stops at its next progress report."""


def with_progress(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Run ``fn(*args, progress=report, **kwargs)``, a core function that reports
    ``progress(stage, done, total)``, as a generator job: yields each new stage (a str) and
    :class:`Progress`, returns ``fn``'s result. Closing the generator (a cancel) makes ``fn``'s
    next report raise, so the work stops between two of its steps (what it saved stays)."""
    events: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stop.is_set():
            raise _Stopped
        events.put((stage, done, total))

    def run() -> None:
        try:
            outcome["result"] = fn(*args, progress=report, **kwargs)
        except BaseException as exc:  # handed to the generator, which raises it
            outcome["error"] = exc
        finally:
            events.put(None)

    name = f"napari-synthgen {getattr(fn, '__name__', 'job')}"
    threading.Thread(target=run, name=name, daemon=True).start()
    stage = None
    try:
        while (item := events.get()) is not None:
            if item[0] != stage:
                stage = item[0]
                yield stage
            yield Progress(item[1], item[2])
    finally:
        stop.set()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def report_error(exc: BaseException, doing: str,
                 flags: Mapping[str, str] | None = None) -> None:
    """Show an error as a napari notification: what failed and the message that says why.

    ``flags`` names the widget's fields for the Python options a message names (``n_folds``
    -> ``Folds``; ``read_as`` -> the field that says how masks are read, for a mask read the
    wrong way), so the user reads what to change in the form they see it.
    """
    message = str(exc) or exc.__class__.__name__
    if flags:
        from ..curation import reword

        message = reword(exc, flags) or message
        if "read_as" in flags:  # a mask read the wrong way: the field that reads it
            message = read_as_wording(message, flags["read_as"])
    if isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    if isinstance(exc, MemoryError):
        message = f"out of memory ({message}); use a smaller tile or batch size"
    if isinstance(exc, KNOWN_ERRORS) or type(exc).__module__.startswith("napari_synthgen"):
        show_error(f"{doing} failed: {message}")
    else:  # unexpected: keep the exception's type for a bug report
        show_error(f"{doing} failed ({exc.__class__.__name__}): {message}\n"
                   + "".join(traceback.format_exception_only(type(exc), exc)))


@dataclass
class Job:
    """A started piece of work: its worker and the context its handlers receive."""

    worker: Any
    doing: str
    context: Any = None
    kind: str = ""
    pbar: Any = None
    done: bool = False
    result: Any = field(default=None, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        """Whether the work was asked to stop (its results are dropped)."""
        return self.stop.is_set()

    def cancel(self) -> None:
        """Ask the work to stop; a generator stops at its next ``yield``, its result is dropped."""
        self.stop.set()


def _until_stopped(fn: Callable[..., Any], stop: threading.Event, *args: Any,
                   **kwargs: Any) -> Any:
    """Run the generator ``fn(*args, **kwargs)``, returning at the first ``yield`` after
    ``stop`` is set; the generator is closed in this (the worker's) thread either way."""
    gen = fn(*args, **kwargs)
    try:
        while not stop.is_set():
            try:
                value = next(gen)
            except StopIteration as done:
                return done.value
            yield value
        return None
    finally:
        gen.close()


def _progress_bar(desc: str, cancelable: bool, cancel: Callable[[], None]) -> Any:
    """napari's progress bar for a job; with a Cancel button when the job can stop."""
    from napari.utils import cancelable_progress, progress

    if not cancelable:
        return progress(total=0, desc=desc)

    class JobProgress(cancelable_progress):
        def cancel(self) -> None:  # the user pressed Cancel: the job stops at its next yield
            super().cancel()
            cancel()

    return JobProgress(total=0, desc=desc)


Handler = Callable[..., Any]


class Workers:
    """The thread workers of one widget: start, track, cancel, and drop late results."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.closed = False

    @property
    def busy(self) -> bool:
        """Whether any job of this widget still runs."""
        return bool(self.jobs)

    def start(self, fn: Callable[..., Any], *args: Any, doing: str, context: Any = None,
              on_result: Handler | None = None, on_yield: Handler | None = None,
              on_error: Handler | None = None, on_finish: Handler | None = None,
              progress: str | None = None, kind: str = "",
              flags: Mapping[str, str] | None = None, deliver_after_close: bool = False,
              **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` in a thread worker and return its :class:`Job`.

        ``on_result(result, context)``, ``on_yield(value, context)`` and
        ``on_error(exc, context)`` run on the GUI thread while the widget is open (or always
        with ``deliver_after_close``); values yielded before a cancel still arrive, the result
        and errors of cancelled work do not. Errors are also shown to the user as "<doing>
        failed: <message>". ``on_finish(context)`` always runs last, also after a cancel or
        an error. ``progress`` names a napari progress bar that :class:`Progress` yields
        move (with a Cancel button for a generator); ``kind`` labels the job for
        :meth:`cancel_all`; ``flags`` rewords the options messages name (see
        :func:`report_error`).
        """
        stop = threading.Event()
        generator = inspect.isgeneratorfunction(fn)
        # superqt's workers: our handlers report errors and warnings with their message
        worker = (GeneratorWorker(_until_stopped, fn, stop, *args, **kwargs) if generator
                  else FunctionWorker(fn, *args, **kwargs))
        job = Job(worker=worker, doing=doing, context=context, kind=kind, stop=stop)
        if progress is not None:
            job.pbar = _progress_bar(progress, generator, job.cancel)

        def live() -> bool:
            return (deliver_after_close or not self.closed) and not job.cancelled

        def yielded(value: Any) -> None:
            # a value yielded before a cancel still arrives (a bulk decision it reports is on
            # disk already); only the final result of cancelled work is dropped
            if self.closed and not deliver_after_close:
                return
            if isinstance(value, Progress):
                if job.pbar is not None and not job.cancelled:
                    job.pbar.total = value.total
                    job.pbar.n = value.done
                    job.pbar.refresh()
                return
            if on_yield is not None:
                on_yield(value, context)

        def returned(value: Any) -> None:
            job.result = value
            if live() and on_result is not None:
                on_result(value, context)

        def errored(exc: BaseException) -> None:
            if not self.closed and not job.cancelled:
                report_error(exc, doing, flags)
            if live() and on_error is not None:
                on_error(exc, context)

        def warned(args: tuple) -> None:
            # a library's deprecation notes (diffusers' schedulers raise one at every run)
            # are for developers: the user can do nothing about them
            if isinstance(args[0] if args else None, (DeprecationWarning,
                                                      PendingDeprecationWarning)):
                return
            if live():
                message = args[0] if args else "warning"
                show_warning(f"{doing}: {message}")

        def finished() -> None:
            job.done = True
            if job in self.jobs:
                self.jobs.remove(job)
            if job.pbar is not None:
                with contextlib.suppress(Exception):
                    job.pbar.close()
            if on_finish is not None:
                on_finish(context)

        if hasattr(worker, "yielded"):
            worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.warned.connect(warned)
        worker.finished.connect(finished)
        self.jobs.append(job)
        worker.start()
        return job

    def cancel_all(self, kind: str | None = None) -> int:
        """Ask running jobs (of ``kind``, or all) to stop at their next yield; their results are
        dropped. Returns how many were asked."""
        jobs = [j for j in self.jobs if kind is None or j.kind == kind]
        for job in jobs:
            job.cancel()
        return len(jobs)

    def close(self, keep: tuple[str, ...] = ()) -> None:
        """The widget closed: cancel everything (but jobs of the kinds in ``keep``, which end by
        themselves) and drop whatever still arrives."""
        self.closed = True
        for job in list(self.jobs):
            if job.kind not in keep:
                job.cancel()

    def wait_idle(self, timeout: float = 60.0, until: Callable[[], bool] | None = None) -> None:
        """Process Qt events until no job runs (and ``until()`` is true); for tests and scripts."""
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while (self.jobs or (until is not None and not until())) and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.005)
        if self.jobs or (until is not None and not until()):
            raise TimeoutError(f"{', '.join(j.doing for j in self.jobs) or 'work'} did not "
                               f"finish within {timeout:.0f} s")
