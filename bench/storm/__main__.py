"""The runs: options, every cell of every run, the saved results, then the report (bench/storm.sh)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

import openai

from bench.common import ROOT, BenchError, notes
from bench.common.worker import ENTRY
from bench.common.procs import stop_all, stop_on
from bench.storm.load import offer_load, summarize
from bench.storm.report import pct, peaks_above, report, widened_text
from bench.storm.scenario import (BATCH_HEADERS, CLIENT_KEY, SCENARIOS, Gateway, sim_call,
                                  start_simulator, widenings)


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        prog="bench/storm.sh",
        description="Storm benchmark: gateway vs direct OpenAI SDK on the upstream simulator. "
                    "Scenario compressed (issue 3): three accounts at 6/12/30 rpm, time compressed "
                    "20x, gateway and direct. Scenario realtime (issue 8): DashScope's qwen3-max "
                    "limits (600 rpm, 10 rps, surge protection) at real speed, acct-c's free quota "
                    "exhausted, 30% of requests streamed, gateway only.",
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="compressed",
                   help="which storm (compressed); each writes its own section of BENCHMARKS.md")
    p.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported (3)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float,
                        help="minutes of offered load per cell in the scenario's time: compressed "
                             "minutes of 3 s (default 15), or real minutes for realtime (1.5)")
    length.add_argument("--seconds", type=float,
                        help="real seconds of offered load per cell (compressed 45, realtime 90)")
    p.add_argument("--levels", default="0.9,1.5",
                   help="offered loads as fractions of qwen3-max capacity (0.9,1.5): compressed "
                        "6 req/s, realtime 20 req/s")
    p.add_argument("--clients",
                   help="which clients, of gateway, batch (the gateway, asking with "
                        "x-gateway-fallback: none and x-gateway-max-wait-ms: 60000 to queue for "
                        "qwen3-max) and direct (compressed: gateway,direct; realtime: gateway)")
    p.add_argument("--attempt-timeout", type=float, default=60, help="SDK timeout per HTTP attempt, s")
    p.add_argument("--request-cap", type=float, default=90,
                   help="hard cap per client request including retries, s (counted as failed)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs, state)")
    p.add_argument("--render", metavar="JSON",
                   help="run nothing: print (and write) the report of a saved bench/.runs/storm-*.json")
    args = p.parse_args(argv)
    sc = SCENARIOS[args.scenario]
    if args.minutes is not None:
        args.seconds = args.minutes * sc.minute_s
    args.seconds = sc.seconds if args.seconds is None else args.seconds
    args.minutes = args.seconds / sc.minute_s
    args.levels = [float(x) for x in args.levels.split(",") if x.strip()]
    args.clients = [c.strip() for c in (args.clients or ",".join(sc.clients)).split(",")
                    if c.strip()]
    if not set(args.clients) <= {"gateway", "batch", "direct"} or not args.clients:
        p.error("--clients: of gateway, batch and direct")
    if args.runs < 1 or args.seconds <= 0 or not args.levels or min(args.levels) <= 0:
        p.error("--runs >= 1, --minutes or --seconds > 0, levels > 0")
    return args


def snapshot_build(run_dir: Path) -> tuple[Path, str, str]:
    """Copies build/ (and the entry module beside it, as in the repository) so a rebuild during
    the benchmark cannot hot-reload the gateway under it."""
    src = ROOT / "build"
    if not (src / "index.js").exists() or not (src / "index_bg.wasm").exists():
        raise BenchError(f"{src / 'index.js'} is missing: run `make build` first")
    dst = run_dir / "build"
    shutil.copytree(src, dst)
    (run_dir / ENTRY).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ENTRY, run_dir / ENTRY)
    sha = hashlib.sha256((dst / "index_bg.wasm").read_bytes()).hexdigest()[:12]
    return dst, sha, notes.utc((src / "index_bg.wasm").stat().st_mtime)


def run_notes() -> dict:
    model, head = notes.cpu_model(), notes.git_head()
    changed = " with uncommitted changes in src/" if notes.worker_source_changed() else ""
    return {
        "machine": f"{notes.cores()} cores{f' ({model})' if model else ''}, {notes.system()}",
        "git": f"HEAD {head}{changed}",
        "tools": f"wrangler {notes.wrangler_version()}, openai-python {openai.__version__}, "
                 f"Python {platform.python_version()}",
    }


async def run_cell(kind: str, level: float, args, sim_url: str, build: Path, cell_dir: Path):
    sc = SCENARIOS[args.scenario]
    rate = level * sc.capacity_per_s()
    n = int(round(rate * args.seconds))
    gateway = None
    try:
        headers = {}
        if kind in ("gateway", "batch"):
            gateway = Gateway(sc, build, cell_dir, sim_url)
            base_url, keys = f"{gateway.url}/v1", [CLIENT_KEY]
            if kind == "batch":
                headers = BATCH_HEADERS
        else:
            base_url, keys = f"{sim_url}/compatible-mode/v1", sc.direct_keys()
        sim_call("POST", f"{sim_url}/_sim/reset")
        raw = await offer_load(base_url, keys, rate, n, args, sc.stream_tenths, headers)
        stats = sim_call("GET", f"{sim_url}/_sim/stats")
        widened = widenings(gateway.url, sc) if gateway is not None else {}
    finally:
        if gateway is not None:
            gateway.proc.stop()
    row = summarize(sc, kind, level, n, raw, stats)
    if gateway is not None:
        row["gateway_startup_s"] = gateway.startup_s
        row["widened_ms"] = widened
    return row


async def main_async(args, run_dir: Path, build: Path) -> list[list[dict]]:
    sim_url = start_simulator(SCENARIOS[args.scenario], run_dir)
    print(f"storm: simulator at {sim_url}; run directory {run_dir}", file=sys.stderr)
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
                row = await run_cell(kind, level, args, sim_url, build, cell_dir)
                (cell_dir / "result.json").write_text(json.dumps(row, indent=2))
                cells.append(row)
                print(
                    f"storm: run {run + 1}/{args.runs} {100 * level:.0f}% {kind:7s} "
                    f"answered {pct(row['answered'])}, qwen3-max {pct(row['primary_share'])}, "
                    f"upstream 429 {row['upstream_429']}/{row['upstream_calls']}, "
                    f"capacity used {pct(row['primary_used'])}, p50 {row['p50_ms']:.0f} ms, "
                    f"p99 {row['p99_ms']:.0f} ms, max send lag {row['max_send_lag_ms']:.0f} ms, "
                    f"all upstream errors {row['upstream_errors']} "
                    f"({', '.join(f'{k} {v}' for k, v in row['errors'].items() if v) or 'none'}), "
                    f"over limit {row['over_limit']}, "
                    f"windows widened {widened_text(row)}, "
                    f"peaks above limit: {'; '.join(peaks_above(row)) or 'none'} "
                    f"({time.monotonic() - t:.0f} s)",
                    file=sys.stderr,
                )
                if row["unauthorized"]:
                    raise BenchError(f"the simulator saw {row['unauthorized']} unauthorized calls")
        runs.append(cells)
    return runs


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        report(json.loads(Path(args.render).read_text()), not args.no_write)
        return 0
    stop_on(signal.SIGTERM, signal.SIGHUP)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = ROOT / "bench" / ".runs" / f"storm-{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cells = args.runs * len(args.levels) * len(args.clients)
    estimate_min = cells * (args.seconds + 4) / 60
    print(
        f"storm: scenario {args.scenario}: {args.runs} run(s) x {len(args.levels)} level(s) x "
        f"{len(args.clients)} client(s), {args.seconds:g} s each: about {estimate_min:.0f} min",
        file=sys.stderr,
    )
    extra = " ".join(a for a in argv if a not in ("--no-write", "--keep"))
    meta = {
        "started": notes.utc(),
        **run_notes(),
        "command": f"bench/storm.sh {extra}".strip(),
        "scenario": args.scenario,
        "minutes": args.minutes,
        "seconds": args.seconds,
        "estimate_min": estimate_min,
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
