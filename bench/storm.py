#!/usr/bin/env python3
"""The storm benchmark (issue 3): the gateway vs the official OpenAI SDK straight at the upstream.

Offered load at 90% and 150% of qwen3-max's total capacity across three simulated accounts,
time-compressed 20x (a minute lasts 3 s), sent on a fixed open-loop schedule (requests fire at a
constant rate whatever the answers). Two clients, one after the other, on the same simulator:

* gateway: the OpenAI SDK (default retries) at the built Worker under `wrangler dev`, model
  qwen3-max; the gateway rotates accounts, schedules admission and downgrades along
  qwen3-max -> qwen-plus -> qwen-turbo.
* direct:  the OpenAI SDK (default retries) straight at the simulator's DashScope endpoint,
  round-robin over the four account keys, model qwen3-max, no fallback.

Run through bench/storm.sh (it builds the simulator and the venv). Prints a markdown table and,
unless --no-write, writes the section "Storm: gateway vs direct SDK (issue 3)" of BENCHMARKS.md.
Everything it starts (simulator, wrangler and workerd) runs in its own process group on
127.0.0.1 ephemeral ports and is stopped on exit, error or signal.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SECTION = "Storm: gateway vs direct SDK (issue 3)"

TIME_SCALE = 20.0
MINUTE_S = 60.0 / TIME_SCALE  # one compressed minute in real seconds
PRIMARY = "qwen3-max"
CHAIN = ["qwen3-max", "qwen-plus", "qwen-turbo"]
LIMITS = {
    "qwen3-max": {"rpm": 6, "tpm": 20000},
    "qwen-plus": {"rpm": 12, "tpm": 40000},
    "qwen-turbo": {"rpm": 30, "tpm": 100000},
}
ACCOUNTS = {"acct-a": ["sk-a1", "sk-a2"], "acct-b": ["sk-b1"], "acct-c": ["sk-c1"]}
DIRECT_KEYS = [k for keys in ACCOUNTS.values() for k in keys]  # round-robin order
CLIENT_KEY = "gw-bench-client-key"
ADMIN_TOKEN = "gw-bench-admin-token"
WINDOW_MARGIN_MS = 300
MAX_WAIT_MS = 1000
DEADLINE_MS = 20000
LIMIT_429 = ("limit_requests", "insufficient_quota", "limit_burst_rate")
MESSAGES = [{"role": "user", "content": "Say hello"}]


def secret_name(key: str) -> str:
    return "SIM_KEY_" + key.removeprefix("sk-").upper()


def primary_capacity_per_s() -> float:
    """Requests per real second qwen3-max admits across all accounts (3 x 6 rpm / 3 s = 6)."""
    return len(ACCOUNTS) * LIMITS[PRIMARY]["rpm"] / MINUTE_S


def sim_config() -> dict:
    return {
        "time_scale": TIME_SCALE,
        "accounts": {
            a: {"keys": keys, "state": "ok", "limits": LIMITS} for a, keys in ACCOUNTS.items()
        },
        "models": CHAIN,
        "completion_tokens": 8,
        "stream_chunk_delay_ms": 0,
    }


def gateway_config(sim_url: str) -> dict:
    return {
        "time_scale": TIME_SCALE,
        "window_margin_ms": WINDOW_MARGIN_MS,
        "upstreams": {
            "sim": {"base_url": f"{sim_url}/compatible-mode/v1", "profile": "dashscope"}
        },
        "accounts": {
            a: {"upstream": "sim", "keys": [secret_name(k) for k in keys], "limits": LIMITS}
            for a, keys in ACCOUNTS.items()
        },
        "models": {
            PRIMARY: {"fallback": CHAIN, "max_wait_ms": MAX_WAIT_MS, "deadline_ms": DEADLINE_MS}
        },
    }


def gateway_secrets() -> dict[str, str]:
    secrets = {secret_name(k): k for k in DIRECT_KEYS}
    secrets["GATEWAY_KEYS"] = CLIENT_KEY
    secrets["ADMIN_TOKEN"] = ADMIN_TOKEN
    return secrets


# ---------------------------------------------------------------- processes


class BenchError(Exception):
    """A failure with a message meant for the user."""


class Proc:
    """A child in its own process group; output goes to a log; a regex on it yields the URL."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict, log: Path, ready: str):
        self.name = name
        self.log_path = log
        self.url: str | None = None
        self._ready = re.compile(ready)
        self._event = threading.Event()
        self._log = open(log, "a", encoding="utf-8")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() ends wrangler and workerd together
        )
        self.pgid = self.proc.pid
        RUNNING.append(self)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            try:
                self._log.write(line)
                self._log.flush()
            except ValueError:  # log closed by stop()
                pass
            if self.url is None:
                m = self._ready.search(line)
                if m:
                    self.url = m.group(1)
                    self._event.set()

    def wait_ready(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._event.wait(0.1):
                return self.url or ""
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited early (status {self.proc.returncode}); see {self.log_path}"
                )
        raise BenchError(f"{self.name} not ready in {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        if self.proc.poll() is None:
            _signal_group(self.pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (workerd children), and the leader if it hung.
        _signal_group(self.pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


RUNNING: list[Proc] = []


def stop_all() -> None:
    for p in list(reversed(RUNNING)):
        p.stop()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def http_json(method: str, url: str, token: str | None = None, timeout: float = 10) -> dict:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else {}


class Simulator:
    def __init__(self, run_dir: Path):
        binary = ROOT / "target/release/upstream-sim"
        if not binary.exists():
            raise BenchError(
                f"{binary} is missing: run `cargo build -p upstream-sim --release` (bench/storm.sh does)"
            )
        config = run_dir / "sim-config.json"
        config.write_text(json.dumps(sim_config(), indent=2))
        self.proc = Proc(
            "upstream-sim",
            [str(binary), "--port", "0", "--config", str(config), "--time-scale", str(TIME_SCALE)],
            ROOT,
            dict(os.environ),
            run_dir / "sim.log",
            r"listening on (http://127\.0\.0\.1:\d+)",
        )
        self.url = self.proc.wait_ready(30)

    def reset(self) -> None:
        http_json("POST", f"{self.url}/_sim/reset")

    def stats(self) -> dict:
        return http_json("GET", f"{self.url}/_sim/stats")


class Gateway:
    """The built Worker (a snapshot of build/) under `wrangler dev`, fresh state per start."""

    def __init__(self, build: Path, cell_dir: Path, sim_url: str):
        cell_dir.mkdir(parents=True, exist_ok=True)
        toml = (
            'name = "edge-gateway-bench"\n'
            f"main = {json.dumps(str(build / 'index.js'))}\n"
            'compatibility_date = "2026-04-01"\n'
            "[durable_objects]\n"
            'bindings = [{ name = "BUCKET", class_name = "BucketDo" }]\n'
            "[[migrations]]\n"
            'tag = "v1"\n'
            'new_sqlite_classes = ["BucketDo"]\n'
            "[vars]\n"
            f"GATEWAY = {json.dumps(json.dumps(gateway_config(sim_url)))}\n"
        )
        (cell_dir / "wrangler.toml").write_text(toml)
        # Secrets beside the config, where wrangler dev reads them (and hides them in logs).
        (cell_dir / ".dev.vars").write_text(
            "".join(f"{k}={v}\n" for k, v in gateway_secrets().items())
        )
        env = dict(os.environ)
        env.update(CI="1", WRANGLER_SEND_METRICS="false", CLOUDFLARE_CF_FETCH_ENABLED="false")
        started = time.monotonic()
        self.proc = Proc(
            "wrangler dev",
            [
                str(ROOT / "node_modules/.bin/wrangler"), "dev",
                "-c", str(cell_dir / "wrangler.toml"),
                "--ip", "127.0.0.1", "--port", "0", "--inspector-port", "0",
                "--show-interactive-dev-session=false",
                "--persist-to", str(cell_dir / "state"),
            ],
            cell_dir,
            env,
            cell_dir / "wrangler.log",
            r"Ready on (http://[0-9.:]+)",
        )
        self.url = self.proc.wait_ready(90)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except Exception:
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.url}/healthz never answered; see {self.proc.log_path}")
                time.sleep(0.2)
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        self.proc.stop()


# ---------------------------------------------------------------- load


@dataclasses.dataclass
class Outcome:
    lag_s: float  # actual send minus scheduled send
    latency_s: float  # send to final answer, SDK retries included
    status: int | str  # HTTP status of the final answer, or "timeout" / "connection" / "cap"
    served: str | None  # the model that answered (2xx only)


async def one_request(client: openai.AsyncOpenAI, at: float, cap_s: float) -> Outcome:
    loop = asyncio.get_running_loop()
    start = loop.time()
    served = None
    try:
        raw = await asyncio.wait_for(
            client.chat.completions.with_raw_response.create(model=PRIMARY, messages=MESSAGES),
            cap_s,
        )
        completion = raw.parse()
        status: int | str = raw.status_code
        served = raw.headers.get("x-gateway-served-model") or completion.model
    except openai.APIStatusError as e:
        status = e.status_code
    except openai.APITimeoutError:
        status = "timeout"
    except openai.APIConnectionError:
        status = "connection"
    except asyncio.TimeoutError:
        status = "cap"
    return Outcome(start - at, loop.time() - start, status, served)


async def offer_load(base_url: str, keys: list[str], rate: float, n: int, args) -> dict:
    """Fires n requests at `rate` per second, open loop; waits for all (bounded); returns raw data."""
    responses: Counter = Counter()

    async def count(resp) -> None:  # every HTTP answer the SDK got, retries included
        responses[resp.status_code] += 1

    clients = [
        openai.AsyncOpenAI(
            base_url=base_url,
            api_key=k,
            timeout=args.attempt_timeout,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"response": [count]}),
        )
        for k in keys
    ]
    loop = asyncio.get_running_loop()
    try:
        t0 = loop.time() + 0.05
        tasks = []
        for i in range(n):
            at = t0 + i / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(one_request(clients[i % len(clients)], at, args.request_cap))
            )
        outcomes = await asyncio.gather(*tasks)
        t_end = loop.time()
    finally:
        for c in clients:
            await c.close()
    return {"t0": t0, "t_end": t_end, "outcomes": outcomes, "responses": dict(responses)}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(kind: str, level: float, n: int, raw: dict, stats: dict) -> dict:
    outcomes: list[Outcome] = raw["outcomes"]
    ok = [o for o in outcomes if isinstance(o.status, int) and 200 <= o.status < 300]
    served = Counter(o.served for o in ok)
    failures = Counter(str(o.status) for o in outcomes if o not in ok)
    calls = errors_429 = primary_ok = over_limit = 0
    for account in ACCOUNTS:
        for model, m in stats["accounts"][account]["models"].items():
            calls += m["calls"]
            errors_429 += sum(m["errors"].get(k, 0) for k in LIMIT_429)
            over_limit += m.get("over_limit", 0)
            if model == PRIMARY:
                primary_ok += m["ok"]
    elapsed_s = raw["t_end"] - raw["t0"]
    elapsed_min = elapsed_s / MINUTE_S
    capacity = len(ACCOUNTS) * LIMITS[PRIMARY]["rpm"] * elapsed_min
    latencies = sorted(o.latency_s for o in outcomes)
    lags = sorted(o.lag_s for o in outcomes)
    return {
        "client": kind,
        "level": level,
        "sent": n,
        "ok": len(ok),
        "answered": len(ok) / n,
        "served": dict(served),
        "primary_share": served.get(PRIMARY, 0) / n,
        "failures": dict(failures),
        "client_http_responses": sum(raw["responses"].values()),
        "client_http_by_status": {str(k): v for k, v in sorted(raw["responses"].items())},
        "upstream_calls": calls,
        "upstream_429": errors_429,
        "upstream_429_share": errors_429 / calls if calls else 0.0,
        "over_limit": over_limit,
        "unauthorized": stats.get("unauthorized", 0),
        "primary_ok": primary_ok,
        "elapsed_s": elapsed_s,
        "elapsed_min": elapsed_min,
        "primary_capacity": capacity,
        "primary_used": primary_ok / capacity if capacity else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_send_lag_ms": (lags[-1] if lags else 0.0) * 1000,
    }


# ---------------------------------------------------------------- reporting


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


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores{f' ({model})' if model else ''}, {platform.system()} {platform.machine()}"


def git_desc() -> str:
    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except Exception:
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    return f"HEAD {head}{' with uncommitted changes in src/' if dirty else ''}"


def tool_versions() -> str:
    try:
        wrangler = json.loads((ROOT / "node_modules/wrangler/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        wrangler = "?"
    return f"wrangler {wrangler}, openai-python {openai.__version__}, Python {platform.python_version()}"


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


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        description="Storm benchmark: gateway vs direct OpenAI SDK on the upstream simulator."
    )
    p.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported (3)")
    p.add_argument("--minutes", type=float, default=15,
                   help="compressed minutes of offered load per cell, 3 s each (15)")
    p.add_argument("--levels", default="0.9,1.5",
                   help="offered loads as fractions of qwen3-max capacity (0.9,1.5)")
    p.add_argument("--clients", default="gateway,direct", help="which clients (gateway,direct)")
    p.add_argument("--attempt-timeout", type=float, default=60, help="SDK timeout per HTTP attempt, s")
    p.add_argument("--request-cap", type=float, default=90,
                   help="hard cap per client request including retries, s (counted as failed)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs, state)")
    p.add_argument("--render", metavar="JSON",
                   help="run nothing: print (and write) the report of a saved bench/.runs/storm-*.json")
    args = p.parse_args(argv)
    args.levels = [float(x) for x in args.levels.split(",") if x.strip()]
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not set(args.clients) <= {"gateway", "direct"} or not args.clients:
        p.error("--clients: gateway and/or direct")
    if args.runs < 1 or args.minutes <= 0 or not args.levels or min(args.levels) <= 0:
        p.error("--runs >= 1, --minutes > 0, levels > 0")
    return args


def snapshot_build(run_dir: Path) -> tuple[Path, str, str]:
    """Copies build/ so a rebuild during the benchmark cannot hot-reload the gateway under it."""
    src = ROOT / "build"
    if not (src / "index.js").exists() or not (src / "index_bg.wasm").exists():
        raise BenchError(f"{src / 'index.js'} is missing: run `make build` first")
    dst = run_dir / "build"
    shutil.copytree(src, dst)
    sha = hashlib.sha256((dst / "index_bg.wasm").read_bytes()).hexdigest()[:12]
    built = dt.datetime.fromtimestamp((src / "index_bg.wasm").stat().st_mtime, dt.timezone.utc)
    return dst, sha, built.strftime("%Y-%m-%d %H:%M UTC")


async def run_cell(kind: str, level: float, args, sim: Simulator, build: Path, cell_dir: Path):
    rate = level * primary_capacity_per_s()
    n = int(round(rate * args.minutes * MINUTE_S))
    gateway = None
    try:
        if kind == "gateway":
            gateway = Gateway(build, cell_dir, sim.url)
            base_url, keys = f"{gateway.url}/v1", [CLIENT_KEY]
        else:
            base_url, keys = f"{sim.url}/compatible-mode/v1", DIRECT_KEYS
        sim.reset()
        raw = await offer_load(base_url, keys, rate, n, args)
        stats = sim.stats()
    finally:
        if gateway is not None:
            gateway.stop()
    row = summarize(kind, level, n, raw, stats)
    if gateway is not None:
        row["gateway_startup_s"] = gateway.startup_s
    return row


async def main_async(args, run_dir: Path, build: Path) -> list[list[dict]]:
    sim = Simulator(run_dir)
    print(f"storm: simulator at {sim.url}; run directory {run_dir}", file=sys.stderr)
    runs: list[list[dict]] = []
    for run in range(args.runs):
        cells = []
        # Alternate the client order between runs, so drift of the machine favours neither.
        order = args.clients if run % 2 == 0 else list(reversed(args.clients))
        for level in args.levels:
            for kind in order:
                cell_dir = run_dir / f"run{run + 1}-{kind}-{int(round(level * 100))}"
                cell_dir.mkdir(parents=True, exist_ok=True)
                t = time.monotonic()
                row = await run_cell(kind, level, args, sim, build, cell_dir)
                (cell_dir / "result.json").write_text(json.dumps(row, indent=2))
                cells.append(row)
                print(
                    f"storm: run {run + 1}/{args.runs} {100 * level:.0f}% {kind:7s} "
                    f"answered {pct(row['answered'])}, qwen3-max {pct(row['primary_share'])}, "
                    f"upstream 429 {row['upstream_429']}/{row['upstream_calls']}, "
                    f"capacity used {pct(row['primary_used'])}, p50 {row['p50_ms']:.0f} ms, "
                    f"p99 {row['p99_ms']:.0f} ms, max send lag {row['max_send_lag_ms']:.0f} ms "
                    f"({time.monotonic() - t:.0f} s)",
                    file=sys.stderr,
                )
                if row["unauthorized"]:
                    raise BenchError(f"the simulator saw {row['unauthorized']} unauthorized calls")
        runs.append(cells)
    return runs


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


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        report(json.loads(Path(args.render).read_text()), not args.no_write)
        return 0
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = BENCH / ".runs" / f"storm-{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cells = args.runs * len(args.levels) * len(args.clients)
    print(
        f"storm: {args.runs} run(s) x {len(args.levels)} level(s) x {len(args.clients)} client(s), "
        f"{args.minutes:g} compressed min ({args.minutes * MINUTE_S:.0f} s) each: "
        f"about {cells * (args.minutes * MINUTE_S + 4) / 60:.0f} min",
        file=sys.stderr,
    )
    extra = " ".join(a for a in argv if a not in ("--no-write", "--keep"))
    meta = {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "git": git_desc(),
        "tools": tool_versions(),
        "command": f"bench/storm.sh {extra}".strip(),
        "minutes": args.minutes,
        "levels": args.levels,
        "one_run_reason": "--runs 1 was asked for",
    }
    load_before = os.getloadavg()[0]
    ok = False
    try:
        build, meta["wasm_sha"], meta["build_time"] = snapshot_build(run_dir)
        runs = asyncio.run(main_async(args, run_dir, build))
        ok = True
    except BenchError as e:
        print(f"storm: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        if ok and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif not ok:
            print(f"storm: kept {run_dir} for inspection", file=sys.stderr)

    meta["load"] = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    meta["max_lag_ms"] = max(c["max_send_lag_ms"] for cells in runs for c in cells)
    saved = {"args": {k: v for k, v in vars(args).items()}, "meta": meta, "runs": runs}
    results = run_dir.parent / f"storm-{stamp}.json"
    results.write_text(json.dumps(saved, indent=2))
    print(f"storm: results in {results} (re-render with --render)", file=sys.stderr)
    report(saved, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
