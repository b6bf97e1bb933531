#!/usr/bin/env python3
"""The prompt-cache benchmark: agent conversations over three upstream accounts, sent three
ways in one run, and what each way costs.

An upstream's prompt cache is per account and model (DashScope's implicit cache: prefixes of
256+ tokens, hits billed at 20 % of the input price). Agents resend their whole conversation
every turn, so most of their input is a prefix the upstream has seen, if the turn reaches the
account that saw it. The three ways:

- **one key**: every call straight to the simulator with one account's key (the cache's best
  case, and one account's limits for everything);
- **round-robin**: straight to the simulator, rotating over the three accounts' keys call by
  call (the seed's remedy 3, done in the client);
- **gateway**: through the gateway (bare workerd) holding the three accounts.

Started by bench/cache/run.sh (builds the simulator and the bundle, passes --bundle). The
simulator (sim/) answers at once and keeps its implicit cache per account and model; it is
reset between the ways. Each agent runs its turns one after the other, the agents
concurrently. Reported per way: the share of the input read from the cache, the input's
cost at qwen3-max's first tier ($1.20 per 1M, cached at 20 %), and how the calls spread over
the accounts. Deterministic but for the gateway's shuffle of concurrent identical openings
(none here): one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import urllib.request
from pathlib import Path

import httpx

from bench.common import notes
from bench.common.procs import Stopped, stop_all, stop_on
from bench.common.sim import start_sim
from bench.common.workerd import add_run_args, find_workerd, start_workerd, write_config

HERE = Path(__file__).resolve().parent
ACCOUNTS = {"acct-a": "sk-a1", "acct-b": "sk-b1", "acct-c": "sk-c1"}
SECRET = {"acct-a": "SIM_KEY_A1", "acct-b": "SIM_KEY_B1", "acct-c": "SIM_KEY_C1"}
MODEL = "qwen3-max"
INPUT_USD_PER_M = 1.2
OUTPUT_USD_PER_M = 6.0
CACHE_HIT_SHARE = 0.2
WAYS = ("one key", "round-robin", "gateway")


def log(msg: str) -> None:
    print(f"[cache {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sim_config() -> dict:
    return {
        "time_scale": 1.0,
        "accounts": {a: {"keys": [k], "state": "ok", "limits": {}} for a, k in ACCOUNTS.items()},
        "models": [MODEL],
        "completion_tokens": 64,
    }


def gateway_config(sim_url: str) -> dict:
    """The three accounts, no limits (this is about where calls go, not how fast), qwen3-max
    priced with DashScope's cache shares."""
    return {
        "upstreams": {"sim": {"base_url": f"{sim_url}/compatible-mode/v1", "profile": "dashscope",
                              "slow_start": False}},
        "accounts": {a: {"upstream": "sim", "keys": [SECRET[a]], "limits": {MODEL: {}}}
                     for a in ACCOUNTS},
        "models": {MODEL: {"fallback": [MODEL]}},
        "prices": {MODEL: {"tiers": [{"input": INPUT_USD_PER_M, "output": OUTPUT_USD_PER_M}],
                           "cache": {"hit": CACHE_HIT_SHARE}}},
    }


def sim_call(method: str, url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else {}


def system_prompt(tokens: int) -> str:
    # The simulator counts a token per 4 characters.
    return ("You are a build agent. Follow the repository's rules. " * (tokens * 4 // 54 + 1))[: tokens * 4]


class Sender:
    """Where each way's calls go: (url, key) for the next call."""

    def __init__(self, way: str, sim_url: str, gateway_url: str):
        self.way, self.n = way, 0
        self.sim = f"{sim_url}/compatible-mode/v1/chat/completions"
        self.gateway = f"{gateway_url}/v1/chat/completions"

    def next(self) -> tuple[str, str]:
        if self.way == "gateway":
            return self.gateway, "bench-key"
        if self.way == "one key":
            return self.sim, ACCOUNTS["acct-a"]
        key = list(ACCOUNTS.values())[self.n % len(ACCOUNTS)]
        self.n += 1
        return self.sim, key


async def agent(client: httpx.AsyncClient, sender: Sender, i: int, args, system: str,
                totals: dict) -> None:
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": f"Task {i}: the build fails in module {i}; fix it."}]
    tool_output = "ok " * (args.tool_tokens * 4 // 3)
    for turn in range(args.turns):
        url, key = sender.next()
        r = await client.post(url, json={"model": MODEL, "messages": messages, "max_tokens": 64},
                              headers={"authorization": f"Bearer {key}"})
        r.raise_for_status()
        body = r.json()
        usage = body["usage"]
        totals["prompt"] += usage["prompt_tokens"]
        totals["cached"] += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        totals["calls"] += 1
        totals["completion"] += usage["completion_tokens"]
        cost = r.headers.get("x-gateway-cost-usd")
        if cost is not None:
            totals["gateway_usd"] += float(cost)
        messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
        # A tool's output, as an agent sends back.
        messages.append({"role": "user", "content": f"Tool output of step {turn}: {tool_output}"})


async def run_way(way: str, args, sim_url: str, gateway_url: str) -> dict:
    sim_call("POST", f"{sim_url}/_sim/reset")
    totals = {"prompt": 0, "cached": 0, "completion": 0, "calls": 0, "gateway_usd": 0.0}
    sender = Sender(way, sim_url, gateway_url)
    system = system_prompt(args.system_tokens)
    limits = httpx.Limits(max_connections=args.agents * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(agent(client, sender, i, args, system, totals)
                               for i in range(args.agents)))
    stats = sim_call("GET", f"{sim_url}/_sim/stats")
    per_account = {a: stats["accounts"][a]["models"].get(MODEL, {}).get("calls", 0) for a in ACCOUNTS}
    uncached = totals["prompt"] - totals["cached"]
    totals["input_usd"] = (uncached + totals["cached"] * CACHE_HIT_SHARE) * INPUT_USD_PER_M / 1e6
    totals["full_usd"] = totals["prompt"] * INPUT_USD_PER_M / 1e6
    totals["per_account"] = per_account
    return totals


def report(results: dict, args, meta: dict) -> str:
    base = results["round-robin"]["input_usd"]
    lines = [
        "| way | calls | input tokens | read from the cache | input cost | vs round-robin | calls per account (a / b / c) |",
        "|---|---|---|---|---|---|---|",
    ]
    for way in WAYS:
        r = results[way]
        share = r["cached"] / r["prompt"] if r["prompt"] else 0.0
        spread = " / ".join(str(r["per_account"][a]) for a in ACCOUNTS)
        lines.append(f"| {way} | {r['calls']} | {r['prompt']:,} | {share:.1%} | "
                     f"${r['input_usd']:.4f} | {r['input_usd'] / base:.2f}x | {spread} |")
    g = results["gateway"]
    output_usd = g["completion"] * OUTPUT_USD_PER_M / 1e6
    lines += [
        "",
        f"{args.agents} agents x {args.turns} turns, a {args.system_tokens}-token system prompt, "
        f"each turn adding its answer and a {args.tool_tokens}-token tool output; input priced at "
        f"${INPUT_USD_PER_M}/1M, cached input at {CACHE_HIT_SHARE:.0%} of it (without the cache: "
        f"${g['full_usd']:.4f} a way). The gateway's own `x-gateway-cost-usd` headers sum to "
        f"${g['gateway_usd']:.4f}: its input cost above plus its output's ${output_usd:.4f}.",
        "",
        f"{meta['when']}, gateway at `{meta['commit']}`, {meta['cores']} cores. Reproduce: "
        f"`{args.command}`.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap)
    ap.add_argument("--agents", type=int, default=12)
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--system-tokens", type=int, default=2000)
    ap.add_argument("--tool-tokens", type=int, default=1000, help="each turn's tool output")
    ap.add_argument("--command", default="bash bench/cache/run.sh")
    args = ap.parse_args()
    workerd = args.workerd or find_workerd()
    if workerd is None:
        ap.error("no workerd binary: run `make bootstrap`")
    if not args.sim_bin.is_file():
        ap.error(f"{args.sim_bin} is missing: cargo build -p upstream-sim --release")
    stop_on(signal.SIGTERM, signal.SIGINT)
    work, bundle = Path(args.work), Path(args.bundle)
    try:
        _, sim_url = start_sim(sim_config(), work, binary=args.sim_bin)
        capnp = write_config(work, bundle, sim_url, gateway_config(sim_url))
        _, ports = start_workerd(workerd, work, capnp)
        gateway_url = f"http://127.0.0.1:{ports['gateway']}"
        results = {}
        for way in WAYS:
            log(f"{way}: {args.agents} agents x {args.turns} turns")
            results[way] = asyncio.run(run_way(way, args, sim_url, gateway_url))
        meta = {"when": notes.utc(), "commit": notes.git_head(), "cores": notes.cores()}
        text = report(results, args, meta)
        print(text)
        (HERE / "RESULTS.md").write_text("# Prompt cache: agents over three accounts\n\n" + text + "\n")
        return 0
    except Stopped:
        return 130
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
