"""The load: an open-loop schedule of SDK requests, and one cell's counts from them and the simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import Counter

import openai

from bench.storm.scenario import ACCOUNTS, LIMITS, MINUTE_S, PRIMARY

LIMIT_429 = ("limit_requests", "insufficient_quota", "limit_burst_rate")
MESSAGES = [{"role": "user", "content": "Say hello"}]


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
