"""Helpers shared by the benchmarks: process supervision, run notes, worker and simulator configs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository


class BenchError(RuntimeError):
    """A failure with a message meant for the user."""
