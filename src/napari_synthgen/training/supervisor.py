"""Run training in a child process and read its event stream (used by the napari train widget).

A separate process guarantees what a thread cannot: the viewer never freezes, Stop always
works, and (GPU) memory is given back when training ends. Stop asks the trainer to save a
checkpoint and exit (a stop file); a trainer that does not answer in time is terminated, then
killed. If the supervisor dies, the trainer notices its closed stdout, saves and exits.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from .config import TrainConfig
from .events import Event, Failed, from_json

STOP_FILE = ".stop-request"


class TrainerProcess:
    """``napari-synthgen train --events jsonl`` as a supervised child process.

    The child runs at a lower CPU priority (``nice``) so that the viewer it shares the cores
    with stays responsive.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False,
                 python: str = sys.executable, nice: int = 5) -> None:
        config.validate()
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.config_path = config.save(self.out / "requested_config.yaml")
        self.stop_file = self.out / STOP_FILE
        with contextlib.suppress(FileNotFoundError):
            self.stop_file.unlink()
        self.log_path = self.out / "train.log"
        cmd = [python, "-m", "napari_synthgen", "train", "--config", str(self.config_path),
               "--events", "jsonl", "--stop-file", str(self.stop_file), "--nice", str(nice)]
        if resume:
            cmd.append("--resume")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1, env=env)
        self.last_event: Event | None = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> Iterator[Event]:
        """Events as the trainer writes them (typed, see :mod:`.events`); ends when it exits
        (with a ``failed`` event if it died without saying why)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                event = from_json(line)
            except ValueError:  # not an event (a library printed to stdout)
                continue
            self.last_event = event
            yield event
        code = self.proc.wait()
        self._log.close()
        if self.last_event is None or self.last_event.kind not in ("finished", "failed"):
            yield Failed(step=self.last_event.step if self.last_event else 0,
                         reason="process ended",
                         message=f"the trainer process ended with code {code} before "
                                 f"finishing; see {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def request_stop(self) -> None:
        """Ask the trainer to save a checkpoint and exit (it checks before every step)."""
        with contextlib.suppress(OSError):
            self.stop_file.touch()

    def terminate(self, grace: float = 10.0) -> int | None:
        """SIGTERM (the trainer still saves if it can), then SIGKILL after ``grace`` seconds."""
        if not self.running:
            return self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stop(self, grace: float = 60.0) -> int | None:
        """Stop and wait: a clean stop within ``grace`` seconds, else terminate."""
        self.request_stop()
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return self.terminate()
