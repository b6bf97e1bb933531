"""Process supervision: children in their own process groups, logged, awaited and always stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import BenchError

RUNNING: list[Proc] = []  # started and not yet stopped, oldest first


class Proc:
    """A command in its own process group (stop() ends it with its children), output to a log."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path, **popen):
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, **popen,
            )
        self.pid = self.popen.pid  # also the process group's id
        RUNNING.append(self)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, check: Callable[[], Any], timeout_s: float) -> Any:
        """Polls check() until it returns something true, and returns that."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited (status {self.popen.returncode}); "
                                 f"the end of {self.log}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise BenchError(f"{self.name} not ready in {timeout_s:.0f} s; "
                         f"the end of {self.log}:\n{self.log_tail()}")

    def wait_for_log(self, pattern: str, timeout_s: float) -> str:
        """Waits for a line of the log matching pattern; returns its first group."""
        def found():
            m = re.search(pattern, self.log_tail(1 << 20))
            return m and m.group(1)
        return self.wait_ready(found, timeout_s)

    def stop(self) -> None:
        """TERM to the group, then KILL to whatever is left of it (children, or a hung leader)."""
        if self not in RUNNING:
            return
        if self.popen.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self in RUNNING:  # a signal's stop_all() may have stopped it meanwhile
            RUNNING.remove(self)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    for p in reversed(RUNNING[:]):
        p.stop()


class Stopped(SystemExit):
    """A signal asked us to stop: exits with 128 + its number unless caught."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def stop_on(*signums: int) -> None:
    """On any of these signals: ignore them from then on, stop everything started, raise Stopped."""
    def handler(signum, _frame):
        for s in signums:
            signal.signal(s, signal.SIG_IGN)
        stop_all()
        raise Stopped(signum)
    for s in signums:
        signal.signal(s, handler)
