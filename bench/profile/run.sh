#!/usr/bin/env bash
#! Where the gateway's isolate spends its time: a V8 CPU profile of one bare workerd (as
#! bench/overhead runs it) under `hey` load, summarised with wasm functions named. Not a benchmark.
#! Run from anywhere: `bash bench/profile/run.sh [--target gateway|client|passthrough] [-c N]
#! [--seconds S] [--top K]`; the .cpuprofile is kept in bench/.runs/ (opens in Chrome DevTools).
set -euo pipefail
# shellcheck source=../common/run-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/run-lib.sh"

bench_venv
bench_need_hey profile
bench_build profile
mkdir -p bench/.runs
out="bench/.runs/profile-$(date -u +%Y%m%dT%H%M%SZ).cpuprofile"
bench_run "$venv/bin/python" -m bench.profile.profile --bundle "$work/bundle" --work "$work" \
  --out "$out" "$@"
