#!/usr/bin/env bash
#! The prompt-cache benchmark: agents over three accounts, straight with one key, straight with
#! client-side round-robin, and through the gateway; the share of their input the upstream read
#! from its cache and what the input cost. Run from anywhere: `bash bench/cache/run.sh [bench.py
#! options]` (`--help` lists them). Builds the simulator and the bundle, sets up the project venv,
#! prints the report and writes bench/cache/RESULTS.md. About a minute on 2 cores.
set -euo pipefail
# shellcheck source=../common/run-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/run-lib.sh"

bench_venv
bench_help cache "$@"

bench_build cache
bench_run "$venv/bin/python" -m bench.cache.bench --bundle "$work/bundle" --work "$work" \
  --upload "$upload" --command "bash bench/cache/run.sh${*:+ $*}" "$@"
