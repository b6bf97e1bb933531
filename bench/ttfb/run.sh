#!/usr/bin/env bash
#! Issue 4's benchmark: added time to first byte and to last byte of a streamed answer, gateway
#! vs the simulator direct vs a minimal JS pass-through Worker, in one run on bare workerd.
#! Run from anywhere: `bash bench/ttfb/run.sh [bench.py options]` (`--help` lists them).
#! Builds the simulator and the gateway bundle (`wrangler deploy --dry-run`, which runs the
#! Worker build), sets up the project venv (scripts/python-env.sh), runs bench.py in a temp dir,
#! prints the report and writes bench/ttfb/RESULTS.md. About 6 minutes on 2 cores.
set -euo pipefail
# shellcheck source=../common/run-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/run-lib.sh"

# --- the project's venv (official SDK for the tests, httpx for this client), idempotent
bench_venv

bench_help ttfb "$@"

# --- builds (sets $work, $upload)
bench_build ttfb

# --- the run
bench_run "$venv/bin/python" -m bench.ttfb.bench --bundle "$work/bundle" --work "$work" \
  --upload "$upload" --command "bash bench/ttfb/run.sh${*:+ $*}" "$@"
