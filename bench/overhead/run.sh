#!/usr/bin/env bash
#! Issue 9's benchmark: the gateway's cost per request against a minimal JS pass-through Worker
#! and the upstream direct (p50/p99 at c=1, req/s at c=16), before and after 50,000 requests into
#! one bucket, plus bundle size and cold start, on bare workerd with `hey` as the load.
#! Run from anywhere: `bash bench/overhead/run.sh [bench.py options]` (`--help` lists them).
#! Installs `hey` if missing (Debian: apt-get install hey), builds the simulator and the gateway
#! bundle (`wrangler deploy --dry-run`, which runs the Worker build), sets up the project venv,
#! runs bench.py in a temp dir, prints the report and writes bench/overhead/RESULTS.md.
set -euo pipefail
# shellcheck source=../common/run-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/run-lib.sh"

bench_venv

bench_help overhead "$@"

# --- the load tool, idempotent: Debian's hey (raw latencies in its CSV output)
bench_need_hey overhead

# --- builds (sets $work, $upload)
bench_build overhead
bench_build_rust_floor overhead

# --- the run
bench_run "$venv/bin/python" -m bench.overhead.bench --bundle "$work/bundle" --work "$work" \
  --rust-floor "$work/rust-floor" --upload "$upload" --command "bash bench/overhead/run.sh${*:+ $*}" "$@"
