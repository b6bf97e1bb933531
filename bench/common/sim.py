"""Starting the upstream simulator (sim/) with a given config on a 127.0.0.1 ephemeral port."""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import ROOT, BenchError
from bench.common.procs import Proc

SIM_BIN = ROOT / "target/release/upstream-sim"


def start_sim(config: dict, work: Path, *args: str, binary: Path = SIM_BIN) -> tuple[Proc, str]:
    """Starts the simulator (logging to WORK/sim.log); returns it and its URL once it listens."""
    if not binary.is_file():
        raise BenchError(f"{binary} is missing: run `cargo build -p upstream-sim --release`")
    path = work / "sim-config.json"
    path.write_text(json.dumps(config, indent=2))
    proc = Proc("upstream-sim", [str(binary), "--port", "0", "--host", "127.0.0.1",
                                 "--config", str(path), *args], work, work / "sim.log")
    return proc, proc.wait_for_log(r"listening on (http://127\.0\.0\.1:\d+)", 30)
