"""The load: open-loop SDK requests (some streamed), and one cell's counts from them and the simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import Counter

import openai

from bench.storm.scenario import PRIMARY, Scenario

LIMIT_429 = ("limit_requests", "insufficient_quota", "limit_burst_rate")
KINDS = ("limit_requests", "limit_burst_rate", "insufficient_quota", "free_quota")  # + "others"
MESSAGES = [{"role": "user", "content": "Say hello"}]


@dataclasses.dataclass
class Outcome:
    lag_s: float  # actual send minus scheduled send
    latency_s: float  # send to final answer (a stream's last event), SDK retries included
    status: int | str  # HTTP status of the final answer, or "timeout" / "connection" / "cap",
    # or "stream_error" (an error event inside a started stream)
    served: str | None  # the model that answered (2xx only)
    streamed: bool = False


async def ask(client: openai.AsyncOpenAI, stream: bool) -> tuple[int, str | None]:
    """One chat request (a stream is read to its end); its status and the model that served it."""
    raw = await client.chat.completions.with_raw_response.create(
        model=PRIMARY, messages=MESSAGES, **({"stream": True} if stream else {})
    )
    body = raw.parse()
    if stream:
        model = None
        async for chunk in body:
            model = model or chunk.model
    else:
        model = body.model
    return raw.status_code, raw.headers.get("x-gateway-served-model") or model


async def one_request(client: openai.AsyncOpenAI, at: float, cap_s: float, stream: bool) -> Outcome:
    loop = asyncio.get_running_loop()
    start = loop.time()
    served = None
    try:
        status, served = await asyncio.wait_for(ask(client, stream), cap_s)
    except openai.APIStatusError as e:
        status = e.status_code
    except openai.APITimeoutError:
        status = "timeout"
    except openai.APIConnectionError:
        status = "connection"
    except openai.APIError:
        status = "stream_error"
    except asyncio.TimeoutError:
        status = "cap"
    return Outcome(start - at, loop.time() - start, status, served, stream)


async def offer_load(base_url: str, keys: list[str], rate: float, n: int, args,
                     stream_tenths: int = 0, headers: dict | None = None) -> dict:
    """Fires n requests at `rate` per second, open loop, streaming those whose index % 10 is below
    stream_tenths, each with `headers`; waits for all (bounded); returns raw data."""
    responses: Counter = Counter()

    async def count(resp) -> None:  # every HTTP answer the SDK got, retries included
        responses[resp.status_code] += 1

    clients = [
        openai.AsyncOpenAI(
            base_url=base_url,
            api_key=k,
            timeout=args.attempt_timeout,
            default_headers=headers or None,
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
                asyncio.create_task(one_request(
                    clients[i % len(clients)], at, args.request_cap, i % 10 < stream_tenths
                ))
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


def upstream_counts(sc: Scenario, stats: dict) -> dict:
    """The simulator's counters summed over accounts and models, and each bucket's peaks."""
    out = {"calls": 0, "upstream_429": 0, "over_limit": 0, "primary_ok": 0,
           "errors": dict.fromkeys((*KINDS, "others"), 0), "buckets": {}}
    for account in sc.accounts:
        for model, m in stats["accounts"][account]["models"].items():
            out["calls"] += m["calls"]
            out["upstream_429"] += sum(m["errors"].get(k, 0) for k in LIMIT_429)
            out["over_limit"] += m.get("over_limit", 0)
            for k, v in m["errors"].items():
                out["errors"][k if k in KINDS else "others"] += v
            if model == PRIMARY:
                out["primary_ok"] += m["ok"]
            limits, peak = m.get("limits") or {}, m.get("peak") or {}
            out["buckets"][f"{account}/{model}"] = {
                "calls": m["calls"], "ok": m["ok"], "over_limit": m.get("over_limit", 0),
                **{f"peak_{w}": peak.get(w, 0) for w in ("rps", "rpm")},
                **{w: limits.get(w) for w in ("rps", "rpm")},
            }
    return out


def summarize(sc: Scenario, kind: str, level: float, n: int, raw: dict, stats: dict) -> dict:
    outcomes: list[Outcome] = raw["outcomes"]
    is_ok = [isinstance(o.status, int) and 200 <= o.status < 300 for o in outcomes]
    ok = [o for o, good in zip(outcomes, is_ok) if good]
    served = Counter(o.served for o in ok)
    failures = Counter(str(o.status) for o, good in zip(outcomes, is_ok) if not good)
    up = upstream_counts(sc, stats)
    calls, errors = up["calls"], sum(up["errors"].values())
    elapsed_s = raw["t_end"] - raw["t0"]
    rate = level * sc.capacity_per_s()
    if sc.of_offered:
        # What the load allows: the primary's rate, or the offered one if lower, while it is offered.
        capacity = min(rate, sc.capacity_per_s()) * (n / rate)
    else:
        capacity = sc.capacity_per_s() * elapsed_s
    latencies = sorted(o.latency_s for o in outcomes)
    lags = sorted(o.lag_s for o in outcomes)
    return {
        "client": kind,
        "level": level,
        "sent": n,
        "streamed": sum(o.streamed for o in outcomes),
        "ok": len(ok),
        "answered": len(ok) / n,
        "served": dict(served),
        "primary_served": served.get(PRIMARY, 0),
        "primary_share": served.get(PRIMARY, 0) / n,
        "failures": dict(failures),
        "client_http_responses": sum(raw["responses"].values()),
        "client_http_by_status": {str(k): v for k, v in sorted(raw["responses"].items())},
        "upstream_calls": calls,
        "upstream_429": up["upstream_429"],
        "upstream_429_share": up["upstream_429"] / calls if calls else 0.0,
        "upstream_errors": errors,
        "upstream_errors_share": errors / calls if calls else 0.0,
        "errors": up["errors"],
        "over_limit": up["over_limit"],
        "buckets": up["buckets"],
        "unauthorized": stats.get("unauthorized", 0),
        "primary_ok": up["primary_ok"],
        "elapsed_s": elapsed_s,
        "elapsed_min": elapsed_s / sc.minute_s,
        "primary_capacity": capacity,
        "primary_used": up["primary_ok"] / capacity if capacity else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_send_lag_ms": (lags[-1] if lags else 0.0) * 1000,
    }
