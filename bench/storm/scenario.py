"""The scenario: accounts, limits and models, and the simulator and gateway that serve it."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from bench.common import ROOT
from bench.common.procs import Proc
from bench.common.sim import start_sim
from bench.common.worker import wrangler_toml

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


# ---------------------------------------------------------------- the servers


def start_simulator(run_dir: Path) -> str:
    """Starts the simulator for the whole benchmark (stopped with everything else); its URL."""
    return start_sim(sim_config(), run_dir, "--time-scale", str(TIME_SCALE))[1]


def sim_call(method: str, url: str) -> dict:
    """POST /_sim/reset or GET /_sim/stats."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else {}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except Exception:
        return False


class Gateway:
    """The built Worker (a snapshot of build/) under `wrangler dev`, fresh state per start."""

    def __init__(self, build: Path, cell_dir: Path, sim_url: str):
        cell_dir.mkdir(parents=True, exist_ok=True)
        config = cell_dir / "wrangler.toml"
        config.write_text(wrangler_toml("edge-gateway-bench", str(build / "index.js"),
                                        {"GATEWAY": json.dumps(gateway_config(sim_url))}))
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
