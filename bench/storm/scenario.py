"""The scenarios: accounts, limits and models as data, and the simulator and gateway that serve one."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.request
from pathlib import Path

from bench.common import ROOT
from bench.common.procs import Proc
from bench.common.sim import start_sim
from bench.common.worker import ENTRY, wrangler_toml

PRIMARY = "qwen3-max"
CHAIN = ["qwen3-max", "qwen-plus", "qwen-turbo"]
CLIENT_KEY = "gw-bench-client-key"
# The batch client: it would rather queue for qwen3-max than be downgraded or refused.
BATCH_HEADERS = {"x-gateway-fallback": "none", "x-gateway-max-wait-ms": "60000"}
ADMIN_TOKEN = "gw-bench-admin-token"
MAX_WAIT_MS = 1000
DEADLINE_MS = 20000


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One storm: what the simulator enforces, what the gateway is told, and the load's shape."""

    name: str
    section: str  # its section of BENCHMARKS.md
    time_scale: float  # the simulator's and the gateway's; 1 is real time
    accounts: dict[str, list[str]]  # account -> its keys
    limits: dict[str, dict]  # model -> limits, the same for every account, known to the gateway
    seconds: float  # default real seconds of offered load per cell
    clients: tuple[str, ...]  # default clients
    states: dict[str, str] = dataclasses.field(default_factory=dict)  # accounts not "ok"
    surge: dict | None = None  # the simulator's surge protection on every limit (not told)
    window_margin_ms: int | None = None  # None: the gateway's default
    stream_tenths: int = 0  # requests whose index % 10 is below this are streamed
    of_offered: bool = False  # capacity used counts against min(offered rate, capacity)

    @property
    def minute_s(self) -> float:
        """One minute of the scenario's time in real seconds."""
        return 60.0 / self.time_scale

    def good_accounts(self) -> list[str]:
        return [a for a in self.accounts if self.states.get(a, "ok") == "ok"]

    def capacity_per_s(self) -> float:
        """Requests per real second qwen3-max admits across the good accounts."""
        lim = self.limits[PRIMARY]
        per_min = min(lim["rpm"], 60 * lim.get("rps", lim["rpm"]))
        return len(self.good_accounts()) * per_min / self.minute_s

    def direct_keys(self) -> list[str]:
        """Every account's keys, in the direct client's round-robin order."""
        return [k for keys in self.accounts.values() for k in keys]


COMPRESSED = Scenario(
    name="compressed",
    section="Storm: gateway vs direct SDK (issue 3)",
    time_scale=20.0,
    accounts={"acct-a": ["sk-a1", "sk-a2"], "acct-b": ["sk-b1"], "acct-c": ["sk-c1"]},
    limits={
        "qwen3-max": {"rpm": 6, "tpm": 20000},
        "qwen-plus": {"rpm": 12, "tpm": 40000},
        "qwen-turbo": {"rpm": 30, "tpm": 100000},
    },
    seconds=45.0,
    clients=("gateway", "direct"),
    window_margin_ms=300,
)

DASHSCOPE_QWEN3_MAX = {"rpm": 600, "rps": 10, "tpm": 1000000}  # published, per account
REALTIME = Scenario(
    name="realtime",
    section="Real-time storm at DashScope's limits (issue 8)",
    time_scale=1.0,
    accounts={"acct-a": ["sk-a1"], "acct-b": ["sk-b1"], "acct-c": ["sk-c1"]},
    limits={m: DASHSCOPE_QWEN3_MAX for m in CHAIN},
    seconds=90.0,
    clients=("gateway",),
    states={"acct-c": "free_quota_exhausted"},
    surge={"floor": 3, "growth": 2.0},
    stream_tenths=3,
    of_offered=True,
)

SCENARIOS = {s.name: s for s in (COMPRESSED, REALTIME)}


def secret_name(key: str) -> str:
    return "SIM_KEY_" + key.removeprefix("sk-").upper()


def sim_config(sc: Scenario) -> dict:
    surge = {"surge": sc.surge} if sc.surge else {}
    limits = {m: {**lim, **surge} for m, lim in sc.limits.items()}
    return {
        "time_scale": sc.time_scale,
        "accounts": {
            a: {"keys": keys, "state": sc.states.get(a, "ok"), "limits": limits}
            for a, keys in sc.accounts.items()
        },
        "models": CHAIN,
        "completion_tokens": 8,
        "stream_chunk_delay_ms": 0,
    }


def gateway_config(sc: Scenario, sim_url: str) -> dict:
    tuning = {"time_scale": sc.time_scale} if sc.time_scale != 1 else {}
    if sc.window_margin_ms is not None:
        tuning["window_margin_ms"] = sc.window_margin_ms
    return {
        **tuning,
        "upstreams": {
            "sim": {"base_url": f"{sim_url}/compatible-mode/v1", "profile": "dashscope"}
        },
        "accounts": {
            a: {"upstream": "sim", "keys": [secret_name(k) for k in keys], "limits": sc.limits}
            for a, keys in sc.accounts.items()
        },
        "models": {
            PRIMARY: {"fallback": CHAIN, "max_wait_ms": MAX_WAIT_MS, "deadline_ms": DEADLINE_MS}
        },
    }


def gateway_secrets(sc: Scenario) -> dict[str, str]:
    secrets = {secret_name(k): k for k in sc.direct_keys()}
    secrets["GATEWAY_KEYS"] = CLIENT_KEY
    secrets["ADMIN_TOKEN"] = ADMIN_TOKEN
    return secrets


# ---------------------------------------------------------------- the servers


def start_simulator(sc: Scenario, run_dir: Path) -> str:
    """Starts the simulator for the whole benchmark (stopped with everything else); its URL."""
    return start_sim(sim_config(sc), run_dir, "--time-scale", str(sc.time_scale))[1]


def sim_call(method: str, url: str) -> dict:
    """POST /_sim/reset or GET /_sim/stats."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else {}


def widenings(gateway_url: str, sc: Scenario) -> dict[str, int]:
    """How much each good account's primary bucket widens its windows now (ms; the admin view's
    `lag_margin_ms`: measured lateness spread plus learned margin), -1 where it cannot be read."""
    out = {}
    for account in sc.good_accounts():
        req = urllib.request.Request(f"{gateway_url}/admin/buckets/{account}/{PRIMARY}",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                state = json.loads(resp.read()).get("state") or {}
                out[account] = int(state.get("lag_margin_ms", -1))
        except Exception:
            out[account] = -1
    return out


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except Exception:
        return False


class Gateway:
    """The built Worker (a snapshot of build/) under `wrangler dev`, fresh state per start."""

    def __init__(self, sc: Scenario, build: Path, cell_dir: Path, sim_url: str):
        cell_dir.mkdir(parents=True, exist_ok=True)
        config = cell_dir / "wrangler.toml"
        config.write_text(wrangler_toml("edge-gateway-bench", str(build.parent / ENTRY),
                                        {"GATEWAY": json.dumps(gateway_config(sc, sim_url))}))
        # Secrets beside the config, where wrangler dev reads them (and hides them in logs).
        (cell_dir / ".dev.vars").write_text(
            "".join(f"{k}={v}\n" for k, v in gateway_secrets(sc).items())
        )
        env = dict(os.environ)
        env.update(CI="1", WRANGLER_SEND_METRICS="false", CLOUDFLARE_CF_FETCH_ENABLED="false")
        started = time.monotonic()
        self.proc = Proc(
            "wrangler dev",
            [
                str(ROOT / "node_modules/.bin/wrangler"), "dev", "-c", str(config),
                "--ip", "127.0.0.1", "--port", "0", "--inspector-port", "0",
                "--show-interactive-dev-session=false", "--persist-to", str(cell_dir / "state"),
            ],
            cell_dir,
            cell_dir / "wrangler.log",
            env=env,
        )
        self.url = self.proc.wait_for_log(r"Ready on (http://[0-9.:]+)", 90)
        self.proc.wait_ready(lambda: _healthy(f"{self.url}/healthz"), 60)
        self.startup_s = time.monotonic() - started
