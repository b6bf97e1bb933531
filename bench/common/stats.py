"""Statistics of raw samples for the reports: nearest-rank percentiles and medians."""

from __future__ import annotations

import statistics


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of raw samples (no interpolation, no correction)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-q * len(s) // 100) - 1))
    return s[int(k)]


def med(xs: list[float]) -> float:
    """The median of the numbers that are not NaN (NaN if none)."""
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")
