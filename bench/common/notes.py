"""Run notes for the reports: the machine, the repository's commit, the tools' versions, UTC times."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

from bench.common import ROOT


def cores() -> int:
    return os.cpu_count() or 0


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "" where it says none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def system() -> str:
    return f"{platform.system()} {platform.machine()}"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_head() -> str:
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def worker_source_changed() -> bool:
    """Whether the Worker's source (src/, Cargo.toml, Cargo.lock) differs from HEAD."""
    return bool(_git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"))


def wrangler_version() -> str:
    try:
        return json.loads((ROOT / "node_modules/wrangler/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def workerd_version(workerd: Path) -> str:
    out = subprocess.run([str(workerd), "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().removeprefix("workerd ")


def utc(timestamp: float | None = None) -> str:
    """A time (now by default) as 2026-01-31 12:00 UTC."""
    t = dt.datetime.now(dt.timezone.utc) if timestamp is None else \
        dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def load() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]
