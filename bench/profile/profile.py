"""Where the gateway's isolate spends its time: a V8 CPU profile of one bare `workerd serve`
(the gateway bundle, the JS pass-through floor, Durable Objects stored in memory, the simulator as
upstream, as bench/overhead runs them) taken over workerd's inspector while `hey` loads one
target, then summarised: self and inclusive time per function, wasm functions named from the
build's symbol map (build/index_bg.symbols), wasm-bindgen's JS glue by its import name.

The inspector makes every call into JS (console.log above all) dearer than in a benchmark run:
compare profiles with each other, and take figures from bench/overhead."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import BenchError
from bench.common.procs import Proc, stop_all
from bench.common.sim import start_sim
from bench.common.workerd import find_workerd, start_workerd, write_config
from bench.overhead import hey
from bench.overhead.bench import BODY, GATEWAY_PATH, SIM_PATH, gateway_config, sim_config

HERE = Path(__file__).resolve().parent
# target -> (socket and inspector service, path, key)
TARGETS = {
    "gateway": ("gateway", GATEWAY_PATH, "bench-key"),
    "client": ("gateway", GATEWAY_PATH, "bench-app-key"),
    "passthrough": ("passthrough", SIM_PATH, "sk-a1"),
}
WASM_FRAME = re.compile(r"wasm-function\[(\d+)\]")
RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")
GLUE_NAME = re.compile(r"(__wbg_\w+?|__wbindgen_\w+?)(?:_[0-9a-f]{16})?: ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Namer:
    """Readable names for a profile's call frames."""

    def __init__(self, symbols: Path, bundle_js: Path):
        self.wasm = {}
        if symbols.is_file():
            for line in symbols.read_text().splitlines():
                index, _, name = line.partition(":")
                self.wasm[index] = RUST_HASH.sub("", name)
        self.js = bundle_js.read_text().splitlines() if bundle_js.is_file() else []

    def __call__(self, frame: dict) -> str:
        name = frame.get("functionName") or ""
        m = WASM_FRAME.search(name)
        if m:
            full = self.wasm.get(m.group(1), name)
            return "wasm " + (full if len(full) <= 110 else "…" + full[-109:])
        url = frame.get("url") or ""
        if url.endswith(".js") and 0 <= frame.get("lineNumber", -1) < len(self.js):
            # wasm-bindgen's imports are object-literal functions: the key before the column.
            line = self.js[frame["lineNumber"]][: frame.get("columnNumber", 0) + 1]
            glue = GLUE_NAME.findall(line)
            if glue:
                return "glue " + glue[-1]
            return f"js {name or '(anonymous)'} {Path(url).name}:{frame['lineNumber'] + 1}"
        return name or "(anonymous)"


def summarise(profile: dict, namer: Namer, top: int) -> str:
    """Self and inclusive time per name, as text. A sample weighs the time since the one before
    it, at most 4 sampling intervals (the median interval): on a busy machine the sampler is
    sometimes descheduled, and one sample after such a gap would otherwise weigh hundreds of ms
    (seen: a six-line function at 474 ms from two samples)."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {c: n["id"] for n in profile["nodes"] for c in n.get("children", [])}
    names = {i: namer(n["callFrame"]) for i, n in nodes.items()}
    self_t: Counter = Counter()
    incl_t: Counter = Counter()
    total = 0
    deltas = sorted(d for d in profile["timeDeltas"] if d > 0)
    cap = 4 * deltas[len(deltas) // 2] if deltas else 0
    for sample, dt in zip(profile["samples"], profile["timeDeltas"]):
        dt = min(max(dt, 0), cap)
        total += dt
        self_t[names[sample]] += dt
        seen = set()
        node = sample
        while node is not None:
            if names[node] not in seen:
                seen.add(names[node])
                incl_t[names[node]] += dt
            node = parent.get(node)
    idle = self_t["(idle)"]
    busy = max(total - idle, 1)
    out = [f"{total / 1e6:.2f} s sampled, {100 * idle / max(total, 1):.1f} % idle; "
           f"shares below are of the busy time ({busy / 1e6:.2f} s)"]
    for title, table in (("self time", self_t), ("inclusive time", incl_t)):
        out += ["", f"{title}:", "   ms      %  function"]
        skip = {"(idle)", "(root)"}
        rows = [(k, v) for k, v in table.most_common() if k not in skip][:top]
        out += [f"{v / 1000:6.0f} {100 * v / busy:6.1f}  {k}" for k, v in rows]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="the wrangler --dry-run bundle (WORK/bundle)")
    ap.add_argument("--work", type=Path, required=True, help="a temp dir for configs, logs and state")
    ap.add_argument("--symbols", type=Path, default=Path("build/index_bg.symbols"))
    ap.add_argument("--target", choices=sorted(TARGETS), default="gateway",
                    help="gateway (GATEWAY_KEYS key), client (a client with limits: its meter too), passthrough (the floor)")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--credits", type=int,
                    help="the gateway's admission_credits (0: every request asks its bucket, as on a "
                         "dashscope upstream); default: the gateway's own")
    ap.add_argument("--out", type=Path, help="where to keep the .cpuprofile (opens in Chrome DevTools)")
    args = ap.parse_args()

    service, path, key = TARGETS[args.target]
    work = args.work
    try:
        _, sim_url = start_sim(sim_config(), work)
        capnp = write_config(work, args.bundle, sim_url, gateway_config(sim_url, credits=args.credits))
        inspector = free_port()
        _, ports = start_workerd(find_workerd(), work, capnp,
                                 extra_args=[f"--inspector-addr=127.0.0.1:{inspector}"])
        url = f"http://127.0.0.1:{ports[service]}{path}"
        body = work / "body.json"
        body.write_text(json.dumps(BODY))
        warm = hey.run(url, key, body, 4, n=2000)
        if warm.ok == 0:
            raise BenchError(f"warm-up: no 200 answer from {url}; see {work}/workerd.log")
        profile_path = args.out or work / "profile.cpuprofile"
        node = subprocess.Popen(
            ["node", "--experimental-websocket", str(HERE / "cdp.mjs"), str(inspector), service,
             f"{args.seconds + 0.5:g}", str(profile_path)],
            stdout=subprocess.PIPE, text=True)
        if node.stdout is None or node.stdout.readline().strip() != "profiling":
            raise BenchError("cdp.mjs did not start profiling (its message above)")
        run = hey.run(url, key, body, args.concurrency, seconds=args.seconds)
        if node.wait(timeout=60) != 0:
            raise BenchError("cdp.mjs failed (its message above)")
    finally:
        stop_all()
    namer = Namer(args.symbols, args.bundle / "index.js")
    print(f"profile of `{args.target}` at c={args.concurrency} for {args.seconds:g} s: "
          f"{run.rps:,.0f} req/s, p50 {run.p(50):.2f} ms, p99 {run.p(99):.2f} ms, "
          f"{run.errors} errors (with the inspector attached)")
    print(summarise(json.loads(profile_path.read_text()), namer, args.top))
    print(f"\nprofile: {profile_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench/profile: {e}", file=sys.stderr)
        sys.exit(1)
