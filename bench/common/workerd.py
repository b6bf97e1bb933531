"""Bare `workerd serve` for the benchmarks: the gateway bundle and the JS pass-through floor in one
process (workerd.capnp.in), on 127.0.0.1 ephemeral ports read back through --control-fd."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from bench.common import ROOT, BenchError
from bench.common.procs import Proc
from bench.common.worker import compat

HERE = Path(__file__).resolve().parent
SOCKETS = ("gateway", "passthrough")


def add_run_args(ap) -> None:
    """The arguments every bare-workerd benchmark's run.sh passes (and the binaries to use)."""
    from bench.common.sim import SIM_BIN
    ap.add_argument("--bundle", type=Path, required=True, help="WORK/bundle from `wrangler deploy --dry-run --outdir`")
    ap.add_argument("--work", type=Path, required=True, help="a temp dir for configs and logs")
    ap.add_argument("--sim-bin", type=Path, default=SIM_BIN)
    ap.add_argument("--workerd", type=Path, default=None)
    ap.add_argument("--upload", default="?", help="wrangler's `Total Upload` figure")


def find_workerd() -> Path | None:
    """The workerd binary npm installed (node_modules), or None."""
    for cand in ("node_modules/@cloudflare/workerd-linux-64/bin/workerd", "node_modules/workerd/bin/workerd"):
        if (ROOT / cand).is_file():
            return ROOT / cand
    return None


# The simulator's dialects: its path prefix and the gateway profile that speaks it.
SIM_DIALECTS = {
    "dashscope": ("/compatible-mode/v1", "dashscope"),
    "openai-compatible": ("/v1", "openai-compatible"),
}


def sim_gateway(sim_url: str, limits: dict | None = None, slow_start: bool | None = None,
                dialect: str = "dashscope") -> dict:
    """A GATEWAY config with one upstream (the simulator, DashScope compatible mode by default, or
    dialect="openai-compatible": its /v1, profile openai-compatible), one account (key SIM_KEY_A1 =
    sk-a1) and one model, qwen-turbo, with these limits (none by default).
    The gateway never grants admission credits to a dashscope upstream's buckets."""
    prefix, profile = SIM_DIALECTS[dialect]
    upstream: dict = {"base_url": f"{sim_url}{prefix}", "profile": profile}
    if slow_start is not None:
        upstream["slow_start"] = slow_start
    return {
        "upstreams": {"sim": upstream},
        "accounts": {"acct-a": {"upstream": "sim", "keys": ["SIM_KEY_A1"],
                                "limits": {"qwen-turbo": limits or {}}}},
        "models": {"qwen-turbo": {"fallback": ["qwen-turbo"]}},
    }


_STORAGE: Path | None = None  # storage_root's directory, once chosen


def storage_root(work: Path) -> Path:
    """Where the Durable Objects' SQLite files go: a new directory in memory (/dev/shm, removed
    at exit) where the machine has one, else WORK. On one bare workerd the objects run on the
    requests' own thread, and each SQLite commit's fsync to a disk would stall every request
    meanwhile, which never happens in production (an object's storage is written on its own
    machine, not on the thread of the isolate that calls it)."""
    global _STORAGE
    if _STORAGE is None:
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            _STORAGE = Path(tempfile.mkdtemp(prefix="edge-gateway-bench-do-", dir=shm))
            atexit.register(shutil.rmtree, _STORAGE, ignore_errors=True)
        else:
            _STORAGE = work
    return _STORAGE


def write_config(work: Path, bundle: Path, upstream_url: str, gateway: dict,
                 name: str = "config.capnp", do_name: str = "do") -> Path:
    """WORK/NAME: the template filled in. The bundle must be WORK/bundle (the config embeds
    bundle/...); the pass-through forwards to upstream_url; Durable Objects live in the
    directory DO_NAME of `storage_root` (a new name starts with no state)."""
    if (work / "bundle").resolve() != bundle.resolve():
        raise BenchError("the bundle must be WORK/bundle (the workerd config embeds bundle/...)")
    wasm = sorted(p.name for p in bundle.glob("*.wasm"))
    if len(wasm) != 1:
        raise BenchError(f"expected one .wasm in {bundle}, found {wasm}")
    imports = re.findall(r'from\s+"\./([^"]+\.wasm)"', (bundle / "index.js").read_text())
    if imports != wasm:
        raise BenchError(f"index.js imports {imports}, the bundle has {wasm}")
    do_dir = storage_root(work) / do_name
    do_dir.mkdir(exist_ok=True)
    (work / "passthrough.js").write_text((HERE / "passthrough.js").read_text())
    return fill("workerd.capnp.in", work / name, {
        "@WASM_NAME@": wasm[0],
        # A capnp text literal takes JSON's string escapes.
        "@GATEWAY_JSON@": json.dumps(json.dumps(gateway)),
        "@UPSTREAM@": upstream_url,
        "@DO_DIR@": str(do_dir),
    })


def fill(template: str, path: Path, fields: dict[str, str]) -> Path:
    """PATH: bench/common/TEMPLATE with FIELDS and the repository's compatibility date and
    flags filled in; every @...@ field must be filled."""
    date, flags = compat()
    text = (HERE / template).read_text()
    fields = fields | {"@COMPAT_DATE@": date, "@COMPAT_FLAGS@": ", ".join(json.dumps(f) for f in flags)}
    for key, value in fields.items():
        text = text.replace(key, value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError(f"{template} has unfilled fields {left}")
    path.write_text(text)
    return path


def write_rust_floor_config(work: Path, floor: Path, upstream_url: str) -> Path:
    """WORK/rust-floor.capnp: the Rust pass-through Worker (bench/common/wasm-passthrough, built
    into FLOOR = WORK/rust-floor by run-lib.sh) alone in a workerd, socket "rust", forwarding to
    upstream_url, with the gateway's compatibility date and flags."""
    if floor.resolve() != (work / "rust-floor").resolve():
        raise BenchError("the Rust floor must be WORK/rust-floor (the workerd config embeds rust-floor/...)")
    return fill("rust-floor.capnp.in", work / "rust-floor.capnp", {"@UPSTREAM@": upstream_url})


def launch_workerd(workerd: Path, work: Path, capnp: Path, tag: str = "workerd",
                   extra_args: Sequence[str] = (), sockets: Sequence[str] = SOCKETS
                   ) -> tuple[Proc, Callable[[], dict | None]]:
    """Starts `workerd serve CAPNP [EXTRA_ARGS]` (log WORK/TAG.log); returns it and a function
    giving {socket: port} once all its sockets listen (None before)."""
    control = work / f"{tag}.control"
    fd = os.open(control, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        proc = Proc(
            tag,
            [str(workerd), "serve", capnp.name, f"--control-fd={fd}",
             *(f"--socket-addr={s}=127.0.0.1:0" for s in sockets), *extra_args],
            work, work / f"{tag}.log", pass_fds=(fd,),
        )
    finally:
        os.close(fd)

    def ports() -> dict | None:
        found = {}
        for line in control.read_text().splitlines():
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if msg.get("event") == "listen":
                found[msg["socket"]] = int(msg["port"])
        return found if set(sockets) <= found.keys() else None

    return proc, ports


def start_workerd(workerd: Path, work: Path, capnp: Path, tag: str = "workerd",
                  timeout_s: float = 20, extra_args: Sequence[str] = (),
                  sockets: Sequence[str] = SOCKETS) -> tuple[Proc, dict]:
    """launch_workerd, then waits until its sockets listen; returns it and {socket: port}."""
    proc, ports = launch_workerd(workerd, work, capnp, tag, extra_args, sockets)
    return proc, proc.wait_ready(ports, timeout_s)
