#!/usr/bin/env python3
"""Issue 9's benchmark: what the gateway costs per request against a minimal JS pass-through
Worker (the floor) and the upstream called directly, and whether that cost grows with traffic.

Started by bench/overhead/run.sh, which installs `hey` if missing, builds the simulator and the
gateway bundle (`wrangler deploy --dry-run --outdir`) and passes --bundle. This script starts the
simulator (no latency, its OpenAI-compatible /v1 dialect) and one bare `workerd serve` holding the
gateway and the floor (bench/common/workerd.py, on 127.0.0.1 ephemeral ports), plus a second one
whose gateway has admission credits off (`admission_credits: 0`: every request asks the bucket's
Durable Object), then measures c=1 with its own client (one keep-alive connection, each
request timed to the microsecond: bench/overhead/serial.py) and c=16 with `hey` (raw latencies
from its CSV; bench/overhead/hey.py):

1. cold starts: new workerd processes, launch to the first 200 answer (gateway, and floor);
2. rounds "before", target order alternating: c=1 (p50/p99) and c=16 (req/s) for the
   simulator direct, the floor, the gateway (credits on, the default), the gateway with
   credits off, the gateway called by a client with limits, and a Rust Worker that only
   forwards (bench/common/wasm-passthrough, built by run.sh, in a third workerd): what being a
   Rust Worker costs before the gateway does anything; and the floor and that Rust Worker in
   their I/O mode (`?io`: the body read and parsed, sent again under a deadline, the answer read,
   parsed and answered anew): what a gateway that counts tokens cannot skip, in JS and in Rust;
3. a push of 50,000 gateway requests (credits on) at c=16 into the same bucket;
4. the same rounds again, "after";
5. one more round once the bucket's minute window has emptied ("drained": idle about a minute).

It prints a markdown report (bench/overhead/report.py) and writes it to
bench/overhead/RESULTS.md. Everything it starts is stopped on every exit path
(bench/common/procs.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, BenchError, notes
from bench.common.procs import Stopped, stop_all, stop_on
from bench.common.sim import start_sim
from bench.common.workerd import (add_run_args, find_workerd, launch_workerd, sim_gateway, start_workerd,
                                   storage_root, write_config, write_rust_floor_config)
from bench.overhead import hey, serial
from bench.overhead.report import TARGETS, report

HERE = Path(__file__).resolve().parent
# The simulator's OpenAI-compatible dialect, the gateway's upstream here (bench/common/workerd.py
# sim_gateway): a dashscope upstream's buckets never grant admission credits.
SIM_DIALECT = "openai-compatible"
SIM_PATH = "/v1/chat/completions"
GATEWAY_PATH = "/v1/chat/completions"
BODY = {"model": "qwen-turbo", "messages": [{"role": "user", "content": "Hello"}]}
# Far above any load this machine can make, so the gateway never waits for its bucket.
LIMITS = {"rpm": 10_000_000}


def log(msg: str) -> None:
    print(f"[overhead {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sim_config() -> dict:
    """No limits, no latency (answers are not streamed)."""
    return {
        "time_scale": 1.0,
        "accounts": {"acct-a": {"keys": ["sk-a1"], "state": "ok", "limits": {}}},
        "models": ["qwen-turbo"],
        "completion_tokens": 8,
    }


def gateway_config(sim_url: str, credits: int | None = None) -> dict:
    """Slow start off (with it a quiet bucket ramps its send rate up over seconds, and grants no
    credits). Admission credits: the gateway's default (on, 32) unless CREDITS is given (0: off,
    every request asks the bucket)."""
    config = sim_gateway(sim_url, LIMITS, slow_start=False, dialect=SIM_DIALECT)
    if credits is not None:
        config["admission_credits"] = credits
    # A client with limits of its own (far above the load): its requests are also admitted and
    # settled by its meter's Durable Object (the "gateway, client with limits" target).
    config["clients"] = {"bench-app": {"key_secret": "BENCH_APP_KEY", "rpm": 100_000_000}}
    return config


# ---------------------------------------------------------------- cold start

def post(port: int, path: str, key: str, body: bytes, timeout_s: float = 10) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", path, body, {"authorization": f"Bearer {key}",
                                          "content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def cold_start(workerd: Path, work: Path, bundle: Path, sim_url: str, i: int, target: str) -> float:
    """A new workerd on a new config and empty Durable Object storage: ms from launching it to
    the first 200 answer from TARGET (gateway or js), polled every 2 ms."""
    tag = f"cold-{i}-{target}"
    capnp = write_config(work, bundle, sim_url, gateway_config(sim_url), name=f"{tag}.capnp",
                         do_name=f"do-{tag}")
    socket, path, key = (("gateway", GATEWAY_PATH, "bench-key") if target == "gateway"
                         else ("passthrough", SIM_PATH, "sk-a1"))
    body = json.dumps(BODY).encode()
    t0 = time.perf_counter()
    proc, ports = launch_workerd(workerd, work, capnp, tag)
    try:
        port = None
        last = ""
        while time.perf_counter() - t0 < 60:
            if port is None:
                found = ports()
                if not found:
                    if proc.popen.poll() is not None:
                        raise BenchError(f"workerd exited: {proc.log_tail()}")
                    time.sleep(0.001)
                    continue
                port = found[socket]
            try:
                status = post(port, path, key, body)
                if status == 200:
                    return (time.perf_counter() - t0) * 1000
                last = f"HTTP {status}"
            except OSError as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.002)
        raise BenchError(f"cold start {tag}: no 200 in 60 s (last: {last}); {proc.log_tail()}")
    finally:
        proc.stop()


# ---------------------------------------------------------------- rounds

def bucket_view(port: int) -> dict:
    """The bucket's admin view: requests in its minute window, admitted so far and of those the
    ones handed out in admission credits (spent without asking the bucket, or given back)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/admin/buckets/acct-a/qwen-turbo",
                     headers={"authorization": "Bearer bench-admin-token"})
        r = conn.getresponse()
        data = json.loads(r.read())
        state = data["state"]
        return {"minute": state["used_minute"]["requests"], "admitted": state["counters"]["admitted"],
                "credited": state["counters"]["credited"]}
    except (OSError, ValueError, KeyError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) process PID has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarize(r: hey.Run, cpu_s: float = float("nan")) -> dict:
    """The run's figures, with the p50 of its first and last tenths (does the cost drift within it?),
    and the CPU its server process used per answer (CPU_S over the run; the load tool's not counted)."""
    return {"n": len(r.lat_ms), "errors": r.errors, "statuses": status_counts(r),
            "p50": r.p(50), "p99": r.p(99), "rps": r.rps,
            "cpu_us": cpu_s * 1e6 / r.ok if r.ok else float("nan"),
            "seconds": r.seconds, "p50_first": r.slice(0, 0.1).p(50), "p50_last": r.slice(0.9, 1.0001).p(50)}


def status_counts(r) -> str:
    """Non-200 answers by status, and requests with no answer, e.g. "503: 2, none: 1"."""
    counts: dict = {}
    for s in r.status:
        if s != 200:
            counts[s] = counts.get(s, 0) + 1
    if r.missing:
        counts["none"] = r.missing
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def rounds(phase: str, count: int, targets: dict, body: Path, args, admin_port: int,
           admin_port_off: int, pids: dict) -> list[dict]:
    """COUNT rounds of every target at c=1 and c=16; PIDS: each target's server process (the
    Workers of one workerd are measured one at a time, so its CPU over a run is that target's)."""
    out = []
    n = len(TARGETS)
    for i in range(count):
        order = list(TARGETS[i % n:] + TARGETS[:i % n])
        if i % 2:
            order.reverse()
        res: dict = {"order": order, "bucket": bucket_view(admin_port),
                     "bucket_off": bucket_view(admin_port_off), "load": notes.load()}
        for cell, conc in (("c1", 1), ("c16", 16)):
            res[cell] = {}
            for t in order:
                url, key = targets[t]
                cpu0 = cpu_seconds(pids[t])
                if cell == "c1":
                    r = serial.run(url, key, body, n=args.requests_c1)
                else:
                    r = hey.run(url, key, body, conc, seconds=args.seconds_c16)
                s = res[cell][t] = summarize(r, cpu_seconds(pids[t]) - cpu0)
                log(f"{phase} round {i + 1}/{count} {cell:3} {t:11}: n={s['n']} err={s['errors']} "
                    f"p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms, {s['rps']:.0f} req/s, {s['cpu_us']:.0f} us CPU/answer"
                    + (f" (non-200: {s['statuses']})" if s["statuses"] else ""))
        out.append(res)
    return out


def drain(admin_port: int, timeout_s: float = 90) -> float:
    """Waits (idle) until the bucket's minute window holds no request; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if bucket_view(admin_port).get("minute") == 0:
            break
        time.sleep(2)
    return time.monotonic() - t0


def push(url: str, key: str, body: Path, n: int) -> dict:
    """N gateway requests at c=16 into the bucket; with the rate and p50 of the first and last tenths."""
    r = hey.run(url, key, body, 16, n=n, timeout_s=30)
    s = summarize(r)
    for name, lo, hi in (("first", 0.0, 0.1), ("last", 0.9, 1.0001)):
        part = r.slice(lo, hi)
        s[name] = {"rps": part.ok / (r.seconds * (min(hi, 1.0) - lo)) if r.seconds else 0.0,
                   "p50": part.p(50), "p99": part.p(99)}
    return s


# ---------------------------------------------------------------- sizes

def wasm_sizes(bundle: Path) -> dict:
    wasm = next(bundle.glob("*.wasm"))
    gz = subprocess.run(f"gzip -9 -c '{wasm}' | wc -c", shell=True, capture_output=True, text=True,
                        check=True).stdout.strip()
    return {"wasm_bytes": wasm.stat().st_size, "wasm_gzip_bytes": int(gz),
            "js_bytes": (bundle / "index.js").stat().st_size}


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--rust-floor", type=Path, required=True,
                    help="WORK/rust-floor: the Rust pass-through's index.js and index_bg.wasm (run.sh builds it)")
    ap.add_argument("--rounds", type=int, default=3, help="before the push, and again after it")
    ap.add_argument("--requests-c1", type=int, default=2000, help="per target per round at c=1")
    ap.add_argument("--seconds-c16", type=float, default=5, help="per target per round at c=16")
    ap.add_argument("--push", type=int, default=50_000, help="gateway requests at c=16 between the phases")
    ap.add_argument("--no-drained", dest="drained", action="store_false",
                    help="skip the last round, run once the bucket's minute window has emptied after the push")
    ap.add_argument("--warmup", type=int, default=200, help="per target, at c=4, discarded")
    ap.add_argument("--cold-starts", type=int, default=5, help="new workerd processes per Worker (0: skip)")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--command", default="bash bench/overhead/run.sh")
    args = ap.parse_args()
    if not (1 <= args.rounds <= 20 and 16 <= args.requests_c1 <= 100_000 and 0.5 <= args.seconds_c16 <= 120
            and 0 <= args.push <= 1_000_000 and 0 <= args.cold_starts <= 50 and args.warmup >= 4):
        ap.error("rounds 1..20, requests-c1 16..100000, seconds-c16 0.5..120, push 0..1000000, "
                 "cold-starts 0..50, warmup >= 4")
    workerd = args.workerd or find_workerd()
    if workerd is None or not workerd.is_file():
        ap.error("workerd not found in node_modules: run `make bootstrap`")
    if not args.sim_bin.is_file():
        ap.error(f"{args.sim_bin} is missing: cargo build -p upstream-sim --release")
    hey.hey_binary()

    stop_on(signal.SIGTERM, signal.SIGINT)
    started = time.monotonic()
    work = args.work.resolve()
    bundle = args.bundle.resolve()
    meta = {"machine": f"{notes.system()}, {notes.cores()} cores ({notes.cpu_model() or 'unknown CPU'})",
            "load_start": notes.load(), "date": notes.utc(), "commit": commit(),
            "workerd": notes.workerd_version(workerd), "hey": hey_version(), "upload": args.upload,
            "command": args.command, "args": vars(args) | {"bundle": None, "work": None, "out": None}}
    try:
        sim, sim_url = start_sim(sim_config(), work, binary=args.sim_bin)
        log(f"upstream-sim pid {sim.pid} on {sim_url.removeprefix('http://')}")
        body = work / "body.json"
        body.write_text(json.dumps(BODY))

        cold: dict = {"gateway": [], "js": []}
        for i in range(args.cold_starts):
            for t in ("gateway", "js") if i % 2 == 0 else ("js", "gateway"):
                cold[t].append(cold_start(workerd, work, bundle, sim_url, i, t))
            log(f"cold start {i + 1}/{args.cold_starts}: gateway {cold['gateway'][-1]:.0f} ms, "
                f"floor {cold['js'][-1]:.0f} ms")

        capnp = write_config(work, bundle, sim_url, gateway_config(sim_url))
        wd, ports = start_workerd(workerd, work, capnp)
        log(f"workerd pid {wd.pid}: gateway 127.0.0.1:{ports['gateway']}, floor 127.0.0.1:{ports['passthrough']}")
        # The same gateway with admission credits off, in its own workerd (its own bucket Durable
        # Object; its floor socket stays idle), measured in the same rounds.
        capnp_off = write_config(work, bundle, sim_url, gateway_config(sim_url, credits=0),
                                 name="config-credits-off.capnp", do_name="do-credits-off")
        wd_off, ports_off = start_workerd(workerd, work, capnp_off, tag="workerd-credits-off")
        log(f"workerd pid {wd_off.pid}: gateway with credits off 127.0.0.1:{ports_off['gateway']}")
        capnp_rust = write_rust_floor_config(work, args.rust_floor.resolve(), sim_url)
        wd_rust, ports_rust = start_workerd(workerd, work, capnp_rust, tag="workerd-rust-floor",
                                            sockets=("rust",))
        log(f"workerd pid {wd_rust.pid}: Rust pass-through 127.0.0.1:{ports_rust['rust']}")
        targets = {
            "direct": (f"{sim_url}{SIM_PATH}", "sk-a1"),
            "js": (f"http://127.0.0.1:{ports['passthrough']}{SIM_PATH}", "sk-a1"),
            "gateway": (f"http://127.0.0.1:{ports['gateway']}{GATEWAY_PATH}", "bench-key"),
            "gateway_off": (f"http://127.0.0.1:{ports_off['gateway']}{GATEWAY_PATH}", "bench-key"),
            "gateway_client": (f"http://127.0.0.1:{ports['gateway']}{GATEWAY_PATH}", "bench-app-key"),
            "rust": (f"http://127.0.0.1:{ports_rust['rust']}{SIM_PATH}", "sk-a1"),
            # The same two Workers in their I/O mode (`?io`): what a gateway that counts tokens
            # cannot skip, in JS and in Rust, with no decision.
            "js_io": (f"http://127.0.0.1:{ports['passthrough']}{SIM_PATH}?io", "sk-a1"),
            # The JS I/O floor with the gateway's per-request runtime work (watchdog, deadline,
            # request id, headers, log line) and still no decision.
            "js_features": (f"http://127.0.0.1:{ports['passthrough']}{SIM_PATH}?features", "sk-a1"),
            "rust_io": (f"http://127.0.0.1:{ports_rust['rust']}{SIM_PATH}?io", "sk-a1"),
        }
        pids = {"direct": sim.pid, "js": wd.pid, "js_io": wd.pid, "js_features": wd.pid, "gateway": wd.pid,
                "gateway_client": wd.pid, "gateway_off": wd_off.pid, "rust": wd_rust.pid, "rust_io": wd_rust.pid}
        for t in TARGETS:
            w = hey.run(*targets[t], body, 4, n=args.warmup)
            if w.errors:
                log_tail = {"gateway_off": wd_off, "rust": wd_rust, "rust_io": wd_rust}.get(t, wd).log_tail(2000)
                raise BenchError(f"warm-up against {t}: {w.errors} errors of {args.warmup} "
                                 f"(statuses {sorted(set(w.status))}); workerd log: {log_tail}")
        warm = {"on": bucket_view(ports["gateway"]), "off": bucket_view(ports_off["gateway"])}
        log(f"warm-up done; every target answers 200; buckets: credits on {warm['on']}, off {warm['off']}")
        if not warm["on"].get("credited"):
            log("WARNING: the credits-on gateway's bucket has handed out no credits in the warm-up")
        if warm["off"].get("credited"):
            log("WARNING: the credits-off gateway's bucket has handed out credits")
        admin = (ports["gateway"], ports_off["gateway"])

        before = rounds("before", args.rounds, targets, body, args, *admin, pids)
        pushed = None
        if args.push:
            view = bucket_view(ports["gateway"])
            log(f"push: {args.push} gateway requests at c=16 (bucket: {view})")
            pushed = push(*targets["gateway"], body, args.push)
            pushed["bucket_before"] = view
            pushed["bucket_after"] = bucket_view(ports["gateway"])
            log(f"push done: {pushed['n']} answers, {pushed['errors']} errors in {pushed['seconds']:.0f} s "
                f"({pushed['rps']:.0f} req/s; first tenth {pushed['first']['rps']:.0f}, "
                f"last tenth {pushed['last']['rps']:.0f} req/s); bucket: {pushed['bucket_after']}")
        after = rounds("after", args.rounds, targets, body, args, *admin, pids) if args.push else []
        drained = []
        if args.push and args.drained:
            # Does the cost follow the total traffic, or only the last minute's (the bucket's
            # minute window)? One more round once the window has emptied.
            waited = drain(ports["gateway"])
            log(f"minute window drained in {waited:.0f} s: {bucket_view(ports['gateway'])}")
            drained = rounds("drained", 1, targets, body, args, *admin, pids)
        final = {"on": bucket_view(ports["gateway"]), "off": bucket_view(ports_off["gateway"])}
        log(f"buckets at the end: credits on {final['on']}, off {final['off']}")

        meta |= {"load_end": notes.load(), "minutes": (time.monotonic() - started) / 60,
                 "sizes": wasm_sizes(bundle), "cold": cold, "push": pushed, "warm_bucket": warm,
                 "do_storage": "memory" if storage_root(work) != work else "disk",
                 "final_bucket": final}
        text = report(before, after, drained, meta)
        print(text)
        if not args.no_write:
            args.out.write_text(text)
            log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
        (work / "rounds.json").write_text(json.dumps({"before": before, "after": after, "drained": drained, "meta": meta},
                                                     indent=1, default=str))
        return 0
    except Stopped as e:
        log(f"stopped by signal {e.signum}")
        return 130
    finally:
        stop_all()


def commit() -> str:
    return notes.git_head() + (" + uncommitted src changes" if notes.worker_source_changed() else "")


def hey_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench/overhead: {e}", file=sys.stderr)
        sys.exit(1)
