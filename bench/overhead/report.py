"""The markdown report of bench/overhead: figures (medians of rounds), ratios to the JS floor,
growth after the push, sizes, cold starts, and each target of issue 9 with its verdict."""

from __future__ import annotations

import re

from bench.common.stats import med

TARGETS = ("direct", "js", "js_io", "js_features", "rust", "rust_io", "gateway", "gateway_off", "gateway_client")
LABEL = {
    "direct": "simulator direct",
    "js": "JS pass-through (floor)",
    "gateway": "gateway (credits on)",
    "gateway_off": "gateway, credits off",
    "gateway_client": "gateway, client with limits",
    "rust": "Rust pass-through (wasm floor)",
    "js_io": "JS I/O floor",
    "js_features": "JS features floor",
    "rust_io": "Rust I/O floor",
}
# Issue 9's targets.
P50_MAX, P99_MAX, RPS_MIN, GROWTH_MAX, GZIP_MAX_KB = 1.3, 1.5, 0.6, 0.10, 200


def ms(x: float) -> str:
    if x != x:
        return "n/a"
    if x == 0:
        return "<0.05"  # hey's CSV rounds to 0.1 ms
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}" if abs(x) < 100 else f"{x:.1f}"


def x(r: float) -> str:
    return "n/a" if r != r else f"{r:.2f}x"


def verdict(ok: bool) -> str:
    return "MET" if ok else "**NOT MET**"


def fig(rounds: list[dict], cell: str, t: str, key: str) -> float:
    """The median over rounds of one figure."""
    return med([r[cell][t][key] for r in rounds])


def vs_floor(rounds: list[dict], cell: str, t: str, key: str) -> float:
    """The median over rounds of each round's ratio of T's figure to the floor's."""
    return med([r[cell][t][key] / r[cell]["js"][key] for r in rounds if r[cell]["js"][key]])


def rel(rounds: list[dict], cell: str, key: str, ref: str = "rust") -> float:
    """The median over rounds of each round's ratio of the gateway's figure to REF's."""
    return med([r[cell]["gateway"][key] / r[cell][ref][key] for r in rounds if r[cell][ref][key]])


def gzip_kib(upload: str) -> float:
    m = re.search(r"gzip:\s*([\d.]+)\s*KiB", upload)
    return float(m.group(1)) if m else float("nan")


STORAGE = {
    "memory": "the Durable Objects' storage in memory (`/dev/shm`: here the objects run on the requests' "
              "own thread, and a SQLite commit's fsync to disk would stall them all, which never happens in "
              "production, where an object's storage is written on its own machine).",
    "disk": "the Durable Objects' storage on local disk (this machine has no `/dev/shm`: each SQLite commit's "
            "fsync stalls the requests' thread, which production never does).",
}


def report(before: list[dict], after: list[dict], drained: list[dict], meta: dict) -> str:
    lines: list[str] = []
    add = lines.append
    a = meta["args"]
    sizes, cold, pushed = meta["sizes"], meta["cold"], meta["push"]
    add("# Gateway overhead (issue 9): latency and throughput against a JS pass-through floor")
    add("")
    add(f"{meta['date']} · {meta['machine']}, load {meta['load_start']:.2f} at start, {meta['load_end']:.2f} "
        f"at the end · gateway at `{meta['commit']}` · workerd {meta['workerd']} · hey {meta['hey']} · "
        f"bundle {meta['upload']}")
    add("")
    add(f"Reproduce: `{meta['command']}` (from the repo root; about {meta['minutes'] + 1:.0f} min here, "
        "builds included).")
    add("")
    add("- Upstream: the simulator (`sim/`, its OpenAI-compatible dialect `/v1`, no limits, no latency), "
        "answering a non-streamed chat completion (8 tokens). The gateway's upstream has `\"profile\": "
        "\"openai-compatible\"`: a `dashscope` upstream's buckets never grant admission credits.")
    add("- Targets on 127.0.0.1: the simulator direct; a minimal JS pass-through Worker "
        "(`bench/common/passthrough.js`, the floor) and the gateway, both in one bare `workerd serve` "
        f"(not `wrangler dev`) on the `wrangler deploy --dry-run` bundle, {STORAGE[meta.get('do_storage', 'disk')]} "
        "The gateway has one account and one model (one bucket) limited to 10,000,000 rpm, no rps, "
        "slow start off: it never waits. Admission credits at the default (32): the bucket hands the "
        "isolate up to 32 admissions ahead, spent with no round trip to its Durable Object.")
    add("- \"gateway, client with limits\": the credits-on gateway called with the key of a client that has "
        "limits of its own (`clients.bench-app`, rpm 100,000,000): its client meter admits it too, from a "
        "credit its Durable Object handed the isolate (as the bucket does), else asked while the request "
        "finds its bucket; settles ride with the meter's next call. Same bucket as \"gateway\"; it gets "
        "no push.")
    add("- \"gateway, credits off\": the same gateway with `\"admission_credits\": 0` (every request asks "
        "the bucket's Durable Object), in a second `workerd serve` of the same template (its own bucket; "
        "its floor idle), measured in the same rounds. It gets no push.")
    add("- \"Rust pass-through (wasm floor)\": a Rust Worker that forwards each request unchanged "
        "(`bench/common/wasm-passthrough`: the runtime's Request in, `new Request(upstream, request)`, "
        "the runtime's fetch, its Response out; the worker crate's entry and wasm-bindgen's futures, built "
        "as the gateway is: worker-build, `wasm-opt -Oz`), alone in a third `workerd serve`: what a Worker "
        "costs for being Rust compiled to wasm, before the gateway does anything.")
    add("- \"JS I/O floor\" and \"Rust I/O floor\": the same two Workers called with `?io`, doing the I/O a "
        "gateway that counts tokens and prices answers cannot skip, and no decision: the body read whole and "
        "parsed, sent again as a new request under a deadline (`AbortSignal.timeout`), the answer read whole and "
        "parsed for its usage, answered in a new Response with a header the usage fills (no log line; the "
        "caller's key passed on). In JS as plainly as it is written; in Rust through the runtime's own types "
        "(`web_sys`, serde_json), as the gateway does it.")
    add("- \"JS features floor\": the JS floor's Worker called with `?features`: the JS I/O floor plus the "
        "runtime work the gateway does on every request, done as the gateway does it: the client watchdog "
        "(a `waitUntil` promise ended by an abort listener on `request.signal`), the deadline (a timer "
        "aborting the call's AbortController, cleared once answered), a random request id, the gateway's "
        "response headers and its one JSON log line; no decision (every value one would make is a "
        "constant). Any gateway with these features pays it, in whatever language.")
    add("- Requests: `POST` `{\"model\":\"qwen-turbo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}` "
        "with the key of each target.")
    add(f"- Load, on the same 2 cores as the servers, closed loop on keep-alive connections. Per round and target: "
        f"c=1 for {a['requests_c1']:,} requests from the benchmark's own client (`bench/overhead/serial.py`: raw "
        "HTTP/1.1 on one connection, each request timed from its first byte sent to its answer's last byte read, "
        "to the microsecond; p50/p99 nearest rank, no coordinated-omission correction) and c=16 for "
        f"{a['seconds_c16']:g} s from `hey` (req/s: 200 answers from the first send to the last answer; its "
        "latencies at 0.1 ms resolution).")
    add(f"- Rounds: {len(before)} before and {len(after)} after a push of {a['push']:,} gateway (credits on) "
        "requests at c=16 into the same bucket, target order alternating; figures are medians over rounds, ratios "
        "the median of each round's ratio." + (" Then, after the bucket's minute window has emptied "
        "(idle), one more round (\"drained\")." if drained else ""))
    add("")

    phases = ([("before", before)] + ([("after push", after)] if after else [])
              + ([("drained", drained)] if drained else []))
    add("| phase | target | c=1 p50 ms | c=1 p99 ms | c=16 req/s | c=16 p50 ms | c=16 p99 ms | "
        "CPU us/answer c=1 · c=16 | c=1 p50 / floor | c=1 p99 / floor | c=16 req/s / floor | "
        "c=16 CPU / floor | errors |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in phases:
        for t in TARGETS:
            row = [name, LABEL[t], ms(fig(rs, "c1", t, "p50")), ms(fig(rs, "c1", t, "p99")),
                   f"{fig(rs, 'c16', t, 'rps'):,.0f}", ms(fig(rs, "c16", t, "p50")),
                   ms(fig(rs, "c16", t, "p99")),
                   f"{fig(rs, 'c1', t, 'cpu_us'):,.0f} · {fig(rs, 'c16', t, 'cpu_us'):,.0f}"]
            if t == "js":
                row += ["1", "1", "1", "1"]
            else:
                row += [x(vs_floor(rs, "c1", t, "p50")), x(vs_floor(rs, "c1", t, "p99")),
                        x(vs_floor(rs, "c16", t, "rps")), x(vs_floor(rs, "c16", t, "cpu_us"))]
            row.append(str(sum(r[c][t]["errors"] for r in rs for c in ("c1", "c16"))))
            add("| " + " | ".join(row) + " |")
    add("")

    # ---- targets
    g50, g99, g16 = (vs_floor(before, "c1", "gateway", "p50"), vs_floor(before, "c1", "gateway", "p99"),
                     vs_floor(before, "c16", "gateway", "rps"))
    kib = gzip_kib(meta["upload"])
    kb = kib * 1.024
    add("**Targets** (issue 9), on the gateway with credits on (the default), figures before the push. Growth is judged on the "
        "gateway's ratio to the floor measured in the same rounds, after the push against before it (medians of each round's "
        "ratio): the machine drifts between phases (the floor's own after/before is below). The raw figures "
        "against the first round are beside it:")
    add("")
    add("| target | measured | verdict |")
    add("|---|---|---|")
    add(f"| gateway p50 at c=1 at most {P50_MAX}x the floor | {x(g50)} ({ms(fig(before, 'c1', 'gateway', 'p50'))} "
        f"vs {ms(fig(before, 'c1', 'js', 'p50'))} ms) | {verdict(g50 <= P50_MAX)} |")
    add(f"| gateway p99 at c=1 at most {P99_MAX}x the floor | {x(g99)} ({ms(fig(before, 'c1', 'gateway', 'p99'))} "
        f"vs {ms(fig(before, 'c1', 'js', 'p99'))} ms) | {verdict(g99 <= P99_MAX)} |")
    add(f"| gateway req/s at c=16 at least {RPS_MIN}x the floor's | {x(g16)} "
        f"({fig(before, 'c16', 'gateway', 'rps'):,.0f} vs {fig(before, 'c16', 'js', 'rps'):,.0f} req/s) | "
        f"{verdict(g16 >= RPS_MIN)} |")
    if after:
        for key, cell, label, worse in (("p50", "c1", "c=1 p50", lambda r: r > 1 + GROWTH_MAX),
                                        ("p99", "c1", "c=1 p99", lambda r: r > 1 + GROWTH_MAX),
                                        ("rps", "c16", "c=16 req/s", lambda r: r < 1 - GROWTH_MAX)):
            vb, va = vs_floor(before, cell, "gateway", key), vs_floor(after, cell, "gateway", key)
            r = va / vb if vb else float("nan")
            f = fig(after, cell, "gateway", key)
            first = before[0][cell]["gateway"][key]
            unit = "req/s" if key == "rps" else "ms"
            shown = (lambda v: f"{v:,.0f}") if key == "rps" else ms
            add(f"| no growth: gateway {label} after {a['push']:,} requests within {GROWTH_MAX:.0%} of before | "
                f"{x(r)} ({x(va)} of the floor after, {x(vb)} before; raw: {shown(f)} vs the first round's "
                f"{shown(first)} {unit}, {x(f / first if first else float('nan'))}) | {verdict(not worse(r))} |")
    add(f"| at most {GZIP_MAX_KB} KB gzip | wrangler's total {kib:.2f} KiB = {kb:.1f} KB "
        f"(the .wasm alone {sizes['wasm_gzip_bytes'] / 1000:.1f} KB with `gzip -9`) | "
        f"{verdict(kb <= GZIP_MAX_KB)} |")
    add("")
    r50, r99, r16 = (vs_floor(before, "c1", "rust", "p50"), vs_floor(before, "c1", "rust", "p99"),
                     vs_floor(before, "c16", "rust", "rps"))
    add(f"The wasm floor: the Rust pass-through alone is {x(r50)} the JS floor at c=1 p50, {x(r99)} at c=1 p99 "
        f"and {x(r16)} its req/s at c=16 ({ms(fig(before, 'c1', 'rust', 'p50'))} / "
        f"{ms(fig(before, 'c1', 'rust', 'p99'))} ms, {fig(before, 'c16', 'rust', 'rps'):,.0f} req/s). "
        f"The gateway against it: {x(rel(before, 'c1', 'p50'))} at c=1 p50, {x(rel(before, 'c1', 'p99'))} at "
        f"c=1 p99, {x(rel(before, 'c16', 'rps'))} its req/s at c=16 (medians of each round's ratio) — "
        "what the gateway's own work costs.")
    add("")
    j50, i50 = vs_floor(before, "c1", "js_io", "p50"), vs_floor(before, "c1", "rust_io", "p50")
    add(f"The I/O floors: what a gateway that counts tokens cannot skip costs {x(j50)} the floor at c=1 p50 "
        f"written in JS ({ms(fig(before, 'c1', 'js_io', 'p50'))} ms) and {x(i50)} in Rust "
        f"({ms(fig(before, 'c1', 'rust_io', 'p50'))} ms; {x(vs_floor(before, 'c1', 'rust_io', 'p99'))} at p99, "
        f"{x(vs_floor(before, 'c16', 'rust_io', 'rps'))} the floor's req/s at c=16), so the c=1 p50 target "
        f"({P50_MAX}x) leaves {P50_MAX - j50:+.2f}x of the floor for everything else in JS and "
        f"{P50_MAX - i50:+.2f}x in Rust. The gateway against the Rust I/O floor: {x(rel(before, 'c1', 'p50', 'rust_io'))} "
        f"at c=1 p50, {x(rel(before, 'c1', 'p99', 'rust_io'))} at p99, {x(rel(before, 'c16', 'rps', 'rust_io'))} "
        "its req/s at c=16 — what its decisions and bookkeeping cost.")
    add("")
    f50 = vs_floor(before, "c1", "js_features", "p50")
    add(f"The features floor: the JS I/O floor plus the gateway's per-request runtime work (watchdog, deadline, "
        f"request id, headers, log line) is {x(f50)} the floor at c=1 p50 ({ms(fig(before, 'c1', 'js_features', 'p50'))} "
        f"ms), {x(vs_floor(before, 'c1', 'js_features', 'p99'))} at p99 and {x(vs_floor(before, 'c16', 'js_features', 'rps'))} "
        f"the floor's req/s at c=16, with no decision and no Rust: "
        + ("on this runtime, a gateway that keeps these features misses the c=1 p50 target whatever it is "
           "written in. "
           if f50 > P50_MAX else "")
        + f"The gateway against it: {x(rel(before, 'c1', 'p50', 'js_features'))} at c=1 p50, "
        f"{x(rel(before, 'c1', 'p99', 'js_features'))} at p99, {x(rel(before, 'c16', 'rps', 'js_features'))} its "
        "req/s at c=16 — what being Rust in wasm and deciding cost on top of the features.")
    add("")
    cpu = {t: fig(before, "c16", t, "cpu_us")
           for t in ("js", "js_io", "js_features", "rust", "rust_io", "gateway", "gateway_off")}
    add(f"CPU per answer at c=16 (the server process's user + system time over the run, all its threads, by "
        f"/proc; the load tool's not counted; not at hey's 0.1 ms resolution): the floor {cpu['js']:,.0f} us, "
        f"the JS I/O floor {cpu['js_io']:,.0f}, the JS features floor {cpu['js_features']:,.0f}, the Rust pass-through {cpu['rust']:,.0f}, the Rust I/O floor "
        f"{cpu['rust_io']:,.0f}, the gateway {cpu['gateway']:,.0f} ({x(vs_floor(before, 'c16', 'gateway', 'cpu_us'))} "
        f"the floor's, {x(cpu['gateway'] / cpu['rust_io'] if cpu['rust_io'] else float('nan'))} the Rust I/O "
        f"floor's), with credits off {cpu['gateway_off']:,.0f} (its bucket's Durable Object runs in the same "
        "process).")
    add("")
    if after:
        js_growth = [fig(after, c, "js", k) / fig(before, c, "js", k)
                     for c, k in (("c1", "p50"), ("c1", "p99"), ("c16", "rps"))]
        add("The floor's own after/before (c=1 p50, c=1 p99, c=16 req/s): "
            + ", ".join(x(v) for v in js_growth)
            + " — what the machine's drift alone does between the phases.")
        add("")

    if drained:
        d50, d16 = fig(drained, "c1", "gateway", "p50"), fig(drained, "c16", "gateway", "rps")
        add(f"Drained (the bucket idle until its minute window held no request, then one round): gateway c=1 p50 "
            f"{ms(d50)} ms, c=16 {d16:,.0f} req/s, that is {x(d50 / fig(before, 'c1', 'gateway', 'p50'))} and "
            f"{x(d16 / fig(before, 'c16', 'gateway', 'rps'))} of before the push — what the bucket costs "
            "once the last minute's traffic has left its window.")
        add("")

    # ---- other figures
    add("**Other figures.**")
    add("")
    add("| figure | value |")
    add("|---|---|")
    adm_b = fig(before, "c16", "gateway_off", "rps")
    adm_a = fig(after, "c16", "gateway_off", "rps") if after else float("nan")
    add(f"| admissions/s one bucket's Durable Object sustains when every request must ask it (credits off, "
        f"`admission_credits: 0`), = that gateway's req/s at c=16 | {adm_b:,.0f} before, "
        + (f"{adm_a:,.0f} after (rounds only, no push)" if after else "no push") + " |")
    on50, off50 = fig(before, "c1", "gateway", "p50"), fig(before, "c1", "gateway_off", "p50")
    on16, off16 = fig(before, "c16", "gateway", "rps"), adm_b
    add(f"| credits on vs off, before the push: c=1 p50; c=16 req/s | {ms(on50)} vs {ms(off50)} ms "
        f"({x(on50 / off50 if off50 else float('nan'))}); {on16:,.0f} vs {off16:,.0f} req/s "
        f"({x(on16 / off16 if off16 else float('nan'))}) |")
    wb, fb = meta.get("warm_bucket") or {}, meta.get("final_bucket") or {}
    if fb.get("on") is not None:
        def adm(v: dict) -> str:
            return (f"{v.get('admitted', '?'):,} admitted, {v.get('credited', '?'):,} of them in credits"
                    if "admitted" in v else f"? ({v.get('error', '')})")
        add(f"| the buckets (admin view) at the end: credits on; credits off | {adm(fb['on'])}; {adm(fb['off'])} "
            f"(after the warm-up: {adm(wb.get('on', {}))}; {adm(wb.get('off', {}))}) |")
    if pushed:
        add(f"| the push: {a['push']:,} gateway requests at c=16 | {pushed['seconds']:.0f} s, {pushed['rps']:,.0f} req/s, "
            f"p50 {ms(pushed['p50'])} ms, p99 {ms(pushed['p99'])} ms, {pushed['errors']} errors; first tenth "
            f"{pushed['first']['rps']:,.0f} req/s (p50 {ms(pushed['first']['p50'])} ms), last tenth "
            f"{pushed['last']['rps']:,.0f} req/s (p50 {ms(pushed['last']['p50'])} ms) |")
        bb, ba = pushed["bucket_before"], pushed["bucket_after"]
        add(f"| the bucket (admin view): requests in its minute window / admitted so far | before the push "
            f"{bb.get('minute', '?'):,} / {bb.get('admitted', '?'):,}; right after it {ba.get('minute', '?'):,} / "
            f"{ba.get('admitted', '?'):,} |")
    add(f"| bundle (wrangler's `Total Upload`) | {meta['upload']} |")
    add(f"| the .wasm | {sizes['wasm_bytes'] / 1024:.1f} KiB, `gzip -9` {sizes['wasm_gzip_bytes'] / 1024:.1f} KiB "
        f"({sizes['wasm_gzip_bytes']:,} bytes); index.js {sizes['js_bytes'] / 1024:.1f} KiB |")
    for t in ("gateway", "js"):
        vals = cold[t]
        if vals:
            add(f"| cold start, {LABEL[t]}: `workerd serve` launched to its first 200 answer (new process, "
                f"empty storage; median of {len(vals)}) | {ms(med(vals))} ms (min {ms(min(vals))}, "
                f"max {ms(max(vals))}) |")
    add("")

    # ---- per round
    add("Per round (order; c=1 p50 ms / c=16 req/s of " + " · ".join(LABEL[t] for t in TARGETS) + "; the gateway's c=1 p50 over "
        "the first and the last tenth of its requests; the bucket's minute window and the machine's 1-minute "
        "load average when the round began):")
    add("")
    for name, rs in phases:
        for i, r in enumerate(rs, 1):
            cells = " · ".join(f"{ms(r['c1'][t]['p50'])} / {r['c16'][t]['rps']:,.0f}" for t in TARGETS)
            g = r["c1"]["gateway"]
            drift = f"{ms(g['p50_first'])} → {ms(g['p50_last'])} ms" if "p50_first" in g else "n/a"
            add(f"- {name} {i} ({' → '.join(r['order'])}): {cells}; gateway c=1 {drift}; "
                f"window {r['bucket'].get('minute', '?'):,}, load {r['load']:.2f}")
    add("")
    return "\n".join(lines)
