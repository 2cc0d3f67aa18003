"""Progress of long commands: a tqdm bar on a terminal, plain log lines otherwise.

A bar redrawn with carriage returns is noise in a log file (SLURM's ``--output``, ``| tee``),
and tqdm's ``disable=None`` shows nothing at all there. :func:`progress_bar` returns a bar when
stderr is a terminal and a :class:`LogLines` otherwise: one line per few seconds
("generate: 3/10 image (30%), 12 s"), and a last line when it closes.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

#: seconds between two progress lines when stderr is not a terminal
LOG_EVERY_S = 10.0


class LogLines:
    """The part of tqdm's interface the commands use, printing a line every ``every`` s."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *,
                 file: TextIO | None = None, every: float = LOG_EVERY_S) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr
        self.every = every
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_time: float | None = None
        self._last_n: int | None = None

    def update(self, k: int = 1) -> None:
        """Count ``k`` more items; print a line if the last one is ``every`` s old."""
        self.n += k
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Print the current line if it is due (or ``force``) and something changed."""
        now = time.monotonic()
        due = self._last_time is None or now - self._last_time >= self.every
        if (due or force) and self.n != self._last_n:
            self._print(now)

    def _print(self, now: float) -> None:
        share = (f" ({self.n / self.total:.0%})" if self.total else "")
        of = f"/{self.total}" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{share}, {now - self._start:.0f} s{post}",
              file=self.file, flush=True)
        self._last_time, self._last_n = now, self.n

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Losses and rates shown at the end of the line."""
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if refresh:
            self.refresh()

    def set_description(self, desc: str, refresh: bool = True) -> None:
        """A new stage: its first line is printed at once."""
        if desc != self.desc:
            self.desc, self._last_time = desc, None
        if refresh:
            self.refresh()

    def reset(self, total: int | None = None) -> None:
        """Start counting again (towards ``total``)."""
        self.n, self.total, self._last_n = 0, total, None

    @staticmethod
    def write(text: str, file: TextIO | None = None) -> None:
        """A message line (stdout unless ``file``), as ``tqdm.write``."""
        print(text, file=file if file is not None else sys.stdout, flush=True)

    def close(self) -> None:
        """Print the last count if it was not printed yet."""
        if self.n and self.n != self._last_n:
            self._print(time.monotonic())


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", *,
                 disable: bool = False, **tqdm_options: Any) -> Any:
    """A tqdm bar on stderr when it is a terminal, else :class:`LogLines`; with ``disable``
    (e.g. not rank 0 under torchrun) a bar that shows nothing."""
    from tqdm import tqdm

    if disable:
        return tqdm(total=total, disable=True)
    if not sys.stderr.isatty():
        return LogLines(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, **tqdm_options)
