"""The widgets' worker helper: context bound at start, real messages, cancel, late results."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from napari_synthgen.widgets._worker import Progress, Workers

pytestmark = pytest.mark.gui


def _records(start: int) -> list[tuple[str, str]]:
    from napari.utils.notifications import notification_manager

    return [(str(r.severity).lower(), str(r.message))
            for r in notification_manager.records[start:]]


def _n() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def test_context_errors_and_warnings_reach_the_user(qtbot) -> None:
    jobs = Workers()
    got: list = []
    context = {"layer": "m", "settings": {"tile": 64}}
    jobs.start(lambda x: x * 2, 21, doing="Doubling", context=context,
               on_result=lambda value, ctx: got.append((value, ctx)),
               on_finish=lambda ctx: got.append(("finished", ctx)))

    def bad() -> None:
        warnings.warn("a warning from the thread", UserWarning, stacklevel=1)
        raise ValueError("the mask has value 5 at row 1, column 2")

    start = _n()
    jobs.start(bad, doing="Synthesize")
    jobs.wait_idle(10)
    assert got == [(42, context), ("finished", context)]  # the context bound at start
    qtbot.waitUntil(lambda: len(_records(start)) >= 2, timeout=5000)
    records = _records(start)
    assert ("warning", "Synthesize: a warning from the thread") in [
        (s.split(".")[-1], m) for s, m in records]
    errors = [m for s, m in records if s.endswith("error")]
    assert errors == ["Synthesize failed: the mask has value 5 at row 1, column 2"]


def test_cancel_stops_at_the_next_yield_and_releases_its_lock(qtbot) -> None:
    jobs = Workers()
    lock = threading.Lock()
    results: list = []
    finished: list = []

    def long_work():
        with lock:
            for i in range(1000):
                time.sleep(0.005)
                yield Progress(i, 1000)
        return "done"

    job = jobs.start(long_work, doing="Long work", progress="Long work",
                     on_result=lambda value, _ctx: results.append(value),
                     on_finish=lambda _ctx: finished.append(True))
    qtbot.waitUntil(lambda: job.pbar.n > 3, timeout=5000)
    job.cancel()
    jobs.wait_idle(10)
    assert finished == [True] and results == []  # no result from cancelled work
    assert lock.acquire(timeout=1), "the cancelled generator still holds its lock"
    lock.release()


def test_results_after_close_are_dropped_but_finish_runs(qtbot) -> None:
    jobs = Workers()
    release = threading.Event()
    seen: list = []
    start = _n()

    def waits() -> str:
        release.wait(5)
        raise OSError("disk gone")

    jobs.start(waits, doing="Export", on_error=lambda exc, _ctx: seen.append(exc),
               on_finish=lambda _ctx: seen.append("finished"))
    jobs.close()  # the widget closed while the work ran
    release.set()
    jobs.wait_idle(10)
    qtbot.wait(50)
    assert seen == ["finished"]
    assert not [m for s, m in _records(start) if s.endswith("error")]
