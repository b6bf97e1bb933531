"""Load from `hey` (Debian's package): one closed-loop run against a URL, its raw per-request
latencies read from `hey -o csv` and summarized here (nearest-rank p50/p99, req/s)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError
from bench.common.stats import pct


@dataclass
class Run:
    """One hey run: latencies (ms) of the answers that came back, their status codes, when each
    request was sent (s from hey's start), and how many of the asked-for requests are missing
    (transport errors: hey's CSV has a row only for requests that got an answer)."""
    lat_ms: list[float]
    status: list[int]
    offset_s: list[float]
    missing: int

    @property
    def ok(self) -> int:
        return sum(1 for s in self.status if s == 200)

    @property
    def errors(self) -> int:
        return len(self.status) - self.ok + self.missing

    @property
    def seconds(self) -> float:
        """From the first send to the last answer."""
        if not self.lat_ms:
            return 0.0
        return max(o + lat / 1000 for o, lat in zip(self.offset_s, self.lat_ms)) - min(self.offset_s)

    @property
    def rps(self) -> float:
        """200 answers per second over the run."""
        return self.ok / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        """Nearest-rank percentile of the latencies of every answer (ms)."""
        return pct(self.lat_ms, q)

    def slice(self, lo: float, hi: float) -> Run:
        """The requests sent in [lo, hi) of the run's span (fractions), for rates over time."""
        if not self.offset_s:
            return self
        t0, span = min(self.offset_s), self.seconds
        keep = [i for i, o in enumerate(self.offset_s) if lo * span <= o - t0 < hi * span]
        return Run([self.lat_ms[i] for i in keep], [self.status[i] for i in keep],
                   [self.offset_s[i] for i in keep], 0)


def hey_binary() -> str:
    path = shutil.which("hey")
    if not path:
        raise BenchError("`hey` is not on PATH: bench/overhead/run.sh installs it (apt-get install hey)")
    return path


def run(url: str, key: str, body: Path, conc: int, n: int = 0, seconds: float = 0,
        timeout_s: int = 20) -> Run:
    """hey -c CONC and either -n N (rounded down to a multiple of CONC, as hey does) or -z SECONDS,
    POST BODY (JSON) with `Authorization: Bearer KEY`."""
    argv = [hey_binary(), "-c", str(conc), "-m", "POST", "-T", "application/json",
            "-H", f"Authorization: Bearer {key}", "-D", str(body), "-t", str(timeout_s),
            "-o", "csv"]
    argv += ["-z", f"{seconds:g}s"] if seconds else ["-n", str(n)]
    out = subprocess.run([*argv, url], capture_output=True, text=True,
                         timeout=(seconds or 0) + 600)
    if out.returncode != 0:
        raise BenchError(f"hey failed ({out.returncode}): {out.stderr[-500:]}")
    lat, status, offset = [], [], []
    for row in csv.DictReader(io.StringIO(out.stdout)):
        # Seconds with 4 decimals: 0.1 ms resolution.
        lat.append(float(row["response-time"]) * 1000)
        status.append(int(row["status-code"]))
        offset.append(float(row["offset"]))
    # hey gives each of its CONC workers N // CONC requests.
    return Run(lat, status, offset, max(0, n // conc * conc - len(lat)) if n else 0)
