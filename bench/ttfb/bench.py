#!/usr/bin/env python3
"""Issue 4's benchmark: the time a streamed answer takes to start and to finish through the
gateway, against the simulator called directly and a minimal JS pass-through Worker.

Started by bench/ttfb/run.sh, which builds the simulator and the gateway bundle
(`wrangler deploy --dry-run --outdir`) and passes --bundle. This script starts the simulator
and one bare `workerd serve` holding both Workers (on 127.0.0.1, ephemeral ports), measures
rounds in alternating target order with a closed-loop asyncio + httpx client (raw latencies,
no coordinated-omission correction), prints a markdown report and writes it to
bench/ttfb/RESULTS.md. Everything it starts runs in its own process group and is stopped on
every exit path (bench/common/procs.py).

Per request, from just before the request is sent:
- TTFB: the first byte of the body;
- first token: the body chunk holding the first non-empty `"content"` delta;
- last byte: the end of the body (stream terminated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import ROOT, notes
from bench.common.procs import Stopped, stop_all, stop_on
from bench.common.sim import start_sim
from bench.common.stats import med, pct
from bench.common.workerd import add_run_args, find_workerd, sim_gateway, start_workerd, write_config

HERE = Path(__file__).resolve().parent
CONTENT = re.compile(rb'"content":"[^"]')
TARGETS = ("direct", "js", "gateway")
LABEL = {
    "direct": "simulator direct",
    "js": "JS pass-through (workerd)",
    "gateway": "gateway (workerd)",
}
PROMPT = [{"role": "user", "content": "Hello"}]


def log(msg: str) -> None:
    print(f"[ttfb {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- servers

def sim_config(chunk_delay_ms: int, tokens: int) -> dict:
    return {
        "time_scale": 1.0,
        "accounts": {"acct-a": {"keys": ["sk-a1"], "state": "ok", "limits": {}}},
        "models": ["qwen-turbo"],
        "completion_tokens": tokens,
        "stream_chunk_delay_ms": chunk_delay_ms,
    }


# ---------------------------------------------------------------- load client

@dataclass
class Target:
    name: str
    url: str
    key: str


@dataclass
class Sample:
    ttfb: float
    ttft: float
    ttlb: float


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    seconds: float = 0.0


def body(stream: bool, include_usage: bool = True) -> bytes:
    req = {"model": "qwen-turbo", "stream": stream, "messages": PROMPT}
    if stream and include_usage:
        # The gateway always asks its upstream for the usage chunk (to count tokens); asking for
        # it here too makes the three targets relay the same upstream stream.
        req["stream_options"] = {"include_usage": True}
    return json.dumps(req).encode()


async def one(client: httpx.AsyncClient, t: Target, payload: bytes, stream: bool) -> Sample:
    headers = {"authorization": f"Bearer {t.key}", "content-type": "application/json"}
    ns = time.perf_counter_ns
    t0 = ns()
    first = token = None
    seen = b""
    tail = b""
    async with client.stream("POST", t.url, headers=headers, content=payload) as r:
        async for chunk in r.aiter_raw():
            if not chunk:
                continue
            now = ns()
            if first is None:
                first = now
            if token is None:
                seen += chunk
                if CONTENT.search(seen):
                    token = now
            tail = (tail + chunk)[-256:]
        end = ns()
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(seen or tail)[:300]!r}")
    if first is None or token is None:
        raise RuntimeError(f"no content in the answer: {tail[-200:]!r}")
    if stream and not tail.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError(f"stream did not end with [DONE]: {tail[-200:]!r}")
    if not stream and b'"usage"' not in tail:
        raise RuntimeError(f"JSON answer without usage: {tail[-200:]!r}")
    return Sample((first - t0) / 1e6, (token - t0) / 1e6, (end - t0) / 1e6)


async def load(t: Target, n: int, conc: int, stream: bool, timeout_s: float,
               include_usage: bool = True) -> Load:
    """n requests on conc keep-alive connections, closed loop (each worker sends its next
    request when the previous answer has fully arrived)."""
    out = Load()
    payload = body(stream, include_usage)
    left = n
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s, trust_env=False) as client:
        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                try:
                    out.samples.append(await one(client, t, payload, stream))
                except (httpx.HTTPError, RuntimeError) as e:
                    out.errors += 1
                    out.first_error = out.first_error or f"{type(e).__name__}: {e}"

        start_s = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(conc)))
        out.seconds = time.monotonic() - start_s
    return out


# ---------------------------------------------------------------- statistics

METRICS = ("ttfb", "ttft", "ttlb")
METRIC_LABEL = {"ttfb": "TTFB", "ttft": "first token", "ttlb": "last byte"}


def summarize(ld: Load) -> dict:
    s = {"n": len(ld.samples), "errors": ld.errors, "rps": len(ld.samples) / ld.seconds if ld.seconds else 0}
    for m in METRICS:
        vals = [getattr(x, m) for x in ld.samples]
        s[m] = {"p50": pct(vals, 50), "p99": pct(vals, 99)}
    return s


# ---------------------------------------------------------------- report

def ms(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.1f}"


def signed(x: float) -> str:
    return "n/a" if x != x else ("+" if x >= 0 else "−") + ms(abs(x))


def ratio(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}x"


def report(scenarios, rounds: list[dict], meta: dict) -> str:
    lines = []
    add = lines.append
    add("# Streaming overhead (issue 4): time to first byte and to last byte")
    add("")
    add(f"{meta['date']} · {meta['machine']}, {os.getloadavg()[0]:.2f} at the end · gateway at `{meta['commit']}` · "
        f"workerd {meta['workerd']} · bundle {meta['upload']}")
    add("")
    add(f"Reproduce: `{meta['command']}` (from the repo root; about {meta['minutes']:.0f} min here).")
    add("")
    usage = ("ask for `stream_options.include_usage`, so all three targets relay the same "
             "upstream stream (the gateway always asks its upstream for usage)"
             if meta["include_usage"] else
             "do not ask for usage; the gateway still asks its upstream for it, so its upstream "
             f"stream is one event ({meta['delay']} ms here) longer and it drops that event")
    add(f"- Simulator (DashScope compatible mode, no limits): `stream_chunk_delay_ms` {meta['delay']}, "
        f"`completion_tokens` {meta['tokens']}: the role chunk at once, then {meta['tokens']} content "
        f"chunks, the finish chunk, the usage chunk and `[DONE]`, {meta['delay']} ms apart. "
        f"Streamed requests {usage}.")
    add("- Targets on 127.0.0.1: the simulator direct; a minimal JS pass-through Worker "
        "(`bench/common/passthrough.js`) and the gateway, both in one bare `workerd serve` (not "
        "`wrangler dev`) on the `wrangler deploy --dry-run` bundle, the Durable Objects' storage in "
        "memory where the machine has `/dev/shm` (bench/common/workerd.py `storage_root`). The gateway's "
        "DashScope upstream has slow start off: on (its default), a quiet bucket ramps its send rate up "
        "over seconds and every round starts quiet, so the figures would be its pacing, not its overhead. "
        "No admission credits (a `dashscope` upstream's buckets never grant them): every request asks "
        "its bucket's Durable Object.")
    add("- Client: closed-loop Python asyncio + httpx on keep-alive connections, on the same 2 cores "
        "as the servers (its own overhead is in every figure, equally). TTFB = first body byte; "
        "first token = the chunk carrying the first non-empty `content`; last byte = end of the body.")
    add(f"- Figures: medians over {len(rounds)} rounds (target order alternating) of each round's raw "
        "p50/p99 (nearest rank, no coordinated-omission correction), in ms.")
    add("")
    add("| answer | c | target | n/round | TTFB p50 | TTFB p99 | first token p50 | first token p99 | last byte p50 | last byte p99 | req/s | errors |")
    add("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sc in scenarios:
        for t in TARGETS:
            per = [r[sc["key"]][t] for r in rounds]
            row = [sc["answer"], str(sc["conc"]), LABEL[t], str(sc["n"])]
            for m in METRICS:
                for q in ("p50", "p99"):
                    row.append(ms(med([p[m][q] for p in per])))
            row.append(f"{med([p['rps'] for p in per]):.0f}")
            row.append(str(sum(p["errors"] for p in per)))
            add("| " + " | ".join(row) + " |")
    add("")
    add("The gateway sends nothing before the first content token (by design: a failure before it "
        "is retried invisibly), so its TTFB is its first token, and its TTFB minus direct's is mostly "
        f"the upstream's gap between the role chunk and the first content chunk ({meta['delay']} ms "
        "here). Its added latency is the first-token and last-byte rows.")
    add("")
    add("Gateway minus the other target, per round, median over rounds (ms; ratio gateway / other in brackets):")
    add("")
    add("| answer | c | metric | vs direct p50 | vs direct p99 | vs JS floor p50 | vs JS floor p99 |")
    add("|---|---:|---|---:|---:|---:|---:|")
    for sc in scenarios:
        metrics = METRICS if sc["stream"] else ("ttlb",)
        for m in metrics:
            row = [sc["answer"], str(sc["conc"]), METRIC_LABEL[m] if sc["stream"] else "whole answer"]
            for other in ("direct", "js"):
                for q in ("p50", "p99"):
                    d = med([r[sc["key"]]["gateway"][m][q] - r[sc["key"]][other][m][q] for r in rounds])
                    k = med([r[sc["key"]]["gateway"][m][q] / r[sc["key"]][other][m][q] for r in rounds])
                    row.append(f"{signed(d)} ({ratio(k)})")
            add("| " + " | ".join(row) + " |")
    add("")
    add("Per round (order; stream c=1 TTFB p50 direct / JS / gateway, ms):")
    add("")
    for i, r in enumerate(rounds, 1):
        s = r[scenarios[0]["key"]]
        add(f"- round {i} ({' → '.join(r['order'])}): "
            + " / ".join(ms(s[t]["ttfb"]["p50"]) for t in TARGETS))
    errs = [f"{sc['key']} {t}: {r[sc['key']][t]['first_error']}"
            for r in rounds for sc in scenarios for t in TARGETS if r[sc["key"]][t]["first_error"]]
    if errs:
        add("")
        add("First errors seen: " + "; ".join(errs[:6]))
    add("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def machine() -> str:
    return (f"{notes.system()}, {notes.cores()} cores ({notes.cpu_model() or 'unknown CPU'}), "
            f"load {os.getloadavg()[0]:.2f} at start")


def commit() -> str:
    return notes.git_head() + (" + uncommitted src changes" if notes.worker_source_changed() else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200, help="per target per round, streamed and JSON at c=1")
    ap.add_argument("--requests-c8", type=int, default=400, help="per target per round, streamed at c=8 (0: skip)")
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--chunk-delay-ms", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--no-include-usage", action="store_true",
                    help="streamed requests without stream_options.include_usage (the gateway still asks "
                         "its upstream for usage, so its upstream stream is one event longer)")
    ap.add_argument("--timeout", type=float, default=15.0, help="per request, seconds")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--command", default="bash bench/ttfb/run.sh")
    args = ap.parse_args()
    if not (1 <= args.rounds <= 20 and 1 <= args.requests <= 20000 and 0 <= args.requests_c8 <= 20000):
        ap.error("rounds 1..20, requests 1..20000")

    workerd = args.workerd or find_workerd()
    if workerd is None or not workerd.is_file():
        ap.error("workerd not found in node_modules: run `make bootstrap`")
    if not args.sim_bin.is_file():
        ap.error(f"{args.sim_bin} is missing: cargo build -p upstream-sim --release")

    stop_on(signal.SIGTERM, signal.SIGINT)
    started = time.monotonic()
    work = args.work.resolve()
    try:
        sim, sim_url = start_sim(sim_config(args.chunk_delay_ms, args.tokens), work, binary=args.sim_bin)
        log(f"upstream-sim pid {sim.pid} on {sim_url.removeprefix('http://')}")
        # Slow start off (on by default for a DashScope upstream): with it, each round's quiet
        # bucket would ramp its send rate up over seconds and refuse what exceeds the ramp
        # within the allowed wait, which is pacing, not the stream's overhead measured here.
        capnp = write_config(work, args.bundle.resolve(), sim_url, sim_gateway(sim_url, slow_start=False))
        wd, ports = start_workerd(workerd, work, capnp)
        log(f"workerd pid {wd.pid}: gateway 127.0.0.1:{ports['gateway']}, JS pass-through 127.0.0.1:{ports['passthrough']}")
        path = "/compatible-mode/v1/chat/completions"
        targets = {
            "direct": Target("direct", f"{sim_url}{path}", "sk-a1"),
            "js": Target("js", f"http://127.0.0.1:{ports['passthrough']}{path}", "sk-a1"),
            "gateway": Target("gateway", f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions", "bench-key"),
        }
        scenarios = [
            {"key": "stream-c1", "answer": "stream", "stream": True, "conc": 1, "n": args.requests},
        ]
        if args.requests_c8:
            scenarios.append({"key": "stream-c8", "answer": "stream", "stream": True, "conc": 8, "n": args.requests_c8})
        scenarios.append({"key": "json-c1", "answer": "JSON (not streamed)", "stream": False, "conc": 1, "n": args.requests})

        # Warm-up (discarded): connections, the Workers' isolates, the bucket's Durable Object.
        for t in TARGETS:
            for stream in (True, False):
                w = asyncio.run(load(targets[t], args.warmup, 2, stream, args.timeout,
                                     not args.no_include_usage))
                if w.errors:
                    raise RuntimeError(f"warm-up against {t} (stream={stream}) failed: {w.first_error}\n"
                                       f"workerd log: {wd.log_tail(2000)}")
        log("warm-up done; every target answers")

        rounds = []
        for i in range(args.rounds):
            order = list(TARGETS[i % 3:] + TARGETS[:i % 3])
            if i % 2:
                order.reverse()
            res: dict = {"order": order}
            for sc in scenarios:
                res[sc["key"]] = {}
                for t in order:
                    ld = asyncio.run(load(targets[t], sc["n"], sc["conc"], sc["stream"], args.timeout,
                                          not args.no_include_usage))
                    s = summarize(ld)
                    s["first_error"] = ld.first_error
                    res[sc["key"]][t] = s
                    log(f"round {i + 1}/{args.rounds} {sc['key']:9} {t:7}: n={s['n']} err={s['errors']} "
                        f"TTFB p50 {ms(s['ttfb']['p50'])} p99 {ms(s['ttfb']['p99'])}, "
                        f"last byte p50 {ms(s['ttlb']['p50'])} p99 {ms(s['ttlb']['p99'])} ms")
            rounds.append(res)

        meta = {
            "date": notes.utc(),
            "machine": machine(),
            "commit": commit(),
            "workerd": notes.workerd_version(workerd),
            "upload": args.upload,
            "command": args.command,
            "minutes": (time.monotonic() - started) / 60 + 0.5,
            "delay": args.chunk_delay_ms,
            "tokens": args.tokens,
            "include_usage": not args.no_include_usage,
        }
        text = report(scenarios, rounds, meta)
        print(text)
        if not args.no_write:
            args.out.write_text(text)
            log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
        (work / "rounds.json").write_text(json.dumps(rounds, indent=1))
        return 0
    except Stopped as e:
        log(f"stopped by signal {e.signum}")
        return 130
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
