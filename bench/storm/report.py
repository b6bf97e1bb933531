"""The report: the median and per-run tables, and the section of BENCHMARKS.md they make."""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

from bench.common import ROOT
from bench.storm.scenario import (
    CHAIN, DEADLINE_MS, MAX_WAIT_MS, MINUTE_S, TIME_SCALE, WINDOW_MARGIN_MS,
    primary_capacity_per_s,
)

SECTION = "Storm: gateway vs direct SDK (issue 3)"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def median_row(rows: list[dict]) -> dict:
    """Per-metric medians over runs (each figure is its own median)."""
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    served = {m: statistics.median(r["served"].get(m, 0) for r in rows) for m in CHAIN}
    out = {k: med(k) for k in (
        "sent", "ok", "answered", "primary_share", "upstream_calls", "upstream_429",
        "upstream_429_share", "primary_ok", "primary_capacity", "primary_used", "p50_ms",
        "p99_ms", "elapsed_min", "client_http_responses",
    )}
    out.update(client=rows[0]["client"], level=rows[0]["level"], served=served, runs=len(rows))
    return out


def fmt_num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def table(rows: list[dict]) -> str:
    head = (
        "| offered load | client | answered (2xx) | served by qwen3-max | upstream 429s / calls "
        "| qwen3-max capacity used | p50 | p99 | counts |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        served = ", ".join(
            f"{m} {fmt_num(r['served'].get(m, 0))}" for m in CHAIN if r["served"].get(m, 0)
        ) or "none"
        counts = (
            f"sent {fmt_num(r['sent'])}, 2xx {fmt_num(r['ok'])} ({served}); "
            f"SDK HTTP attempts {fmt_num(r['client_http_responses'])}; "
            f"upstream calls {fmt_num(r['upstream_calls'])}, 429s {fmt_num(r['upstream_429'])}; "
            f"qwen3-max ok {fmt_num(r['primary_ok'])} of {r['primary_capacity']:.0f} "
            f"in {r['elapsed_min']:.1f} min"
        )
        lines.append(
            f"| {100 * r['level']:.0f}% ({r['level'] * primary_capacity_per_s():.1f} req/s) "
            f"| {r['client']} | {pct(r['answered'])} | {pct(r['primary_share'])} "
            f"| {pct(r['upstream_429_share'])} | {pct(r['primary_used'])} "
            f"| {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {counts} |"
        )
    return head + "\n".join(lines) + "\n"


def per_run_table(runs: list[list[dict]]) -> str:
    head = (
        "| run | offered load | client | answered | by qwen3-max | upstream 429s / calls "
        "| capacity used | p50 | p99 | failures (final status: count) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for i, cells in enumerate(runs, 1):
        for r in cells:
            fails = ", ".join(f"{k}: {v}" for k, v in sorted(r["failures"].items())) or "-"
            lines.append(
                f"| {i} | {100 * r['level']:.0f}% | {r['client']} | {pct(r['answered'])} "
                f"| {pct(r['primary_share'])} | {r['upstream_429']}/{r['upstream_calls']} "
                f"| {pct(r['primary_used'])} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {fails} |"
            )
    return head + "\n".join(lines) + "\n"


def findings(median_rows: list[dict]) -> str:
    """One line per load level comparing the two clients, from the medians."""
    lines = []
    for level in sorted({r["level"] for r in median_rows}):
        by = {r["client"]: r for r in median_rows if r["level"] == level}
        parts = []
        g, d = by.get("gateway"), by.get("direct")
        if g:
            others = ", ".join(
                f"{m} {fmt_num(g['served'][m])}" for m in CHAIN[1:] if g["served"].get(m)
            )
            parts.append(
                f"the gateway answered {pct(g['answered'])} ({pct(g['primary_share'])} by "
                f"qwen3-max{'; ' + others if others else ''}) with {fmt_num(g['upstream_429'])} "
                f"upstream 429s, p50 {g['p50_ms']:.0f} ms"
            )
        if d:
            parts.append(
                f"the direct SDK answered {pct(d['answered'])}, and "
                f"{pct(d['upstream_429_share'])} of its {fmt_num(d['upstream_calls'])} upstream "
                f"calls ({d['upstream_calls'] / d['sent']:.1f} per request) were 429s, "
                f"p50 {d['p50_ms']:.0f} ms"
            )
        lines.append(f"- At {100 * level:.0f}% offered load " + "; ".join(parts) + ".")
    return "\n".join(lines)


def section_text(meta: dict, median_rows: list[dict], runs: list[list[dict]]) -> str:
    n_runs = len(runs)
    runs_note = (
        f"Each figure is the median of {n_runs} runs (every run is listed at the end)."
        if n_runs > 1
        else f"One run only ({meta['one_run_reason']})."
    )
    cap = primary_capacity_per_s()
    levels = " and ".join(
        f"{100 * lv:.0f}% ({lv * cap:.1f} req/s)" for lv in meta.get("levels", [0.9, 1.5])
    )
    return f"""## {SECTION}

What an app sees in a rate-limit storm, with and without the gateway.

**Setup.** Upstream: the simulator (`sim/`), three accounts (acct-a with keys sk-a1 and sk-a2,
acct-b, acct-c), each allowed qwen3-max 6 rpm, qwen-plus 12 rpm and qwen-turbo 30 rpm (TPM far
above this load, no RPS limit), time compressed {TIME_SCALE:.0f}x: a minute lasts {MINUTE_S:.0f} s, so
qwen3-max's capacity is 3 x 6 = 18 requests per compressed minute, {cap:.0f} requests/s real.
Offered load: a fixed open-loop schedule (requests fire at a constant rate whatever the
answers) at {levels} of that capacity, for {meta['minutes']:g} compressed minutes
({meta['minutes'] * MINUTE_S:.0f} s) per cell. Both clients are the official OpenAI Python SDK with its
default retries (max_retries=2; backoff about 0.5 s then 1 s, or Retry-After when sent):

- **gateway**: the SDK at the built Worker under `wrangler dev` (local workerd and Durable
  Objects), model qwen3-max, chain qwen3-max -> qwen-plus -> qwen-turbo, `max_wait_ms`
  {MAX_WAIT_MS}, `deadline_ms` {DEADLINE_MS}, `window_margin_ms` {WINDOW_MARGIN_MS}; a fresh gateway with fresh state per cell.
- **direct**: the SDK straight at the simulator's `/compatible-mode/v1`, round-robin over the
  four keys (so acct-a, holding two of them, gets half the load), model qwen3-max, no
  fallback: an app without the gateway.

The simulator is reset before every cell. {runs_note}

{table(median_rows)}
{findings(median_rows)}

The gateway's latency above capacity is its admission wait: a request waits for a qwen3-max
slot up to `max_wait_ms` ({MAX_WAIT_MS} ms) before the next model in the chain takes it, so a smaller
`max_wait_ms` trades primary share for latency. The direct client's tail is the SDK's retry
backoff, after which the request fails with the upstream's 429.

**Columns.**
- *answered (2xx)*: client requests that finally got a 2xx (SDK retries included), of those sent.
- *served by qwen3-max*: client requests answered by the primary model, of those sent.
- *upstream 429s / calls*: the simulator's `limit_requests` + `insufficient_quota` +
  `limit_burst_rate` errors over all chat calls it received (`/_sim/stats`).
- *qwen3-max capacity used*: qwen3-max requests the simulator served, over 18 per compressed
  minute of the cell's elapsed time (first send to last answer).
- *p50 / p99*: send to final answer of every client request, failures included; raw, not
  corrected for coordinated omission.

**Run.**
- Started {meta['started']}; machine: {meta['machine']}, shared by the simulator,
  workerd and the clients (1-minute load average {meta['load']}).
- Worker: `build/index_bg.wasm` sha256 {meta['wasm_sha']}, built {meta['build_time']} ({meta['git']} when
  the run started); {meta['tools']}.
- The open-loop schedule held: no request left more than {meta['max_lag_ms']:.0f} ms behind its slot.
- Reproduce, from the repository root after `make build` (about 10 minutes; `--help` for options):

```sh
{meta['command']}
```

**Caveats.** Time compression makes every window {TIME_SCALE:.0f}x shorter, so scheduling jitter of
a few tens of ms weighs more than at real speed; the gateway widens each window by
`window_margin_ms` (3.3 s instead of 3 s) to stay clear of it, which caps what it takes from
an account at about {100 * 3000 / (3000 + WINDOW_MARGIN_MS):.0f}% of the nominal rate in steady state. Capacity used
can pass 100% slightly over short runs: a sliding window starts empty, so the first minute
admits a full window at once. `wrangler dev` (one local workerd, local Durable Objects) caps
near 200 req/s locally, some 20x this load: these figures measure admission, rotation and
downgrade, not throughput. The simulator answers at once, so latencies are
gateway overhead and waits, not model time.

<details><summary>Every run</summary>

{per_run_table(runs)}
</details>
"""


def write_benchmarks(text: str) -> Path:
    path = ROOT / "BENCHMARKS.md"
    if path.exists():
        old = path.read_text()
    else:
        old = "# Benchmarks\n\nMeasured figures, with how to reproduce them.\n"
    heading = f"## {SECTION}"
    if heading in old:
        start = old.index(heading)
        nxt = re.search(r"^## ", old[start + len(heading):], flags=re.M)
        end = start + len(heading) + nxt.start() if nxt else len(old)
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + old[end:] if nxt else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    path.write_text(new)
    return path


def report(saved: dict, write: bool) -> None:
    """Prints the median table and (if write) the BENCHMARKS.md section, from saved results."""
    runs = saved["runs"]
    # Same row order in every run: by level, gateway before direct.
    key = lambda r: (r["level"], 0 if r["client"] == "gateway" else 1)  # noqa: E731
    runs = [sorted(cells, key=key) for cells in runs]
    medians = [median_row([cells[i] for cells in runs]) for i in range(len(runs[0]))]
    print()
    print(table(medians))
    if write:
        path = write_benchmarks(section_text(saved["meta"], medians, runs))
        print(f"storm: wrote the section '{SECTION}' of {path}", file=sys.stderr)
