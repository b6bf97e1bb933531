# shellcheck shell=bash
#! Shared by the bare-workerd benchmarks' run.sh (bench/ttfb, bench/overhead, bench/cache, bench/profile): the project venv, `hey`,
#! the simulator and gateway bundle builds into a temp dir, and the Python driver run so that a
#! signal reaches it (it then stops every server it started). With BENCH_KEEP=1 the temp dir (the
#! workerd and simulator logs, configs; not the Durable Objects' storage, in memory) is kept and named at the end.
# Sourced after `set -euo pipefail`; sets $root and makes the repository root the cwd.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

bench_child=""
work=""

# bench_venv: the project's venv (scripts/python-env.sh, idempotent); sets $venv.
bench_venv() {
  bash "$root/scripts/python-env.sh"
  venv="$root/.venv"
}

# bench_help NAME ARGS...: with -h or --help among ARGS, prints bench/NAME's usage (its run.sh
# passes --bundle, --work, --upload and --command; bench.py lists the rest) and exits.
bench_help() {
  local name="$1"
  shift
  for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
      echo "usage: bash bench/$name/run.sh [options]; run.sh passes --bundle, --work, --upload and --command itself."
      "$venv/bin/python" -m "bench.$name.bench" --bundle x --work x --help
      exit 0
    fi
  done
}

# bench_need_hey NAME: installs Debian's `hey` if it is not on PATH (idempotent).
bench_need_hey() {
  local name="$1"
  command -v hey >/dev/null 2>&1 && return 0
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench/$name: needs \`hey\` (https://github.com/rakyll/hey) on PATH; no apt-get here to install it." >&2
    exit 1
  fi
  echo "bench/$name: installing hey (apt-get install -y hey)" >&2
  $sudo apt-get install -y -q hey >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q hey >/dev/null; }
}

# bench_build NAME: builds the simulator and the gateway bundle (`wrangler deploy --dry-run
# --outdir`, which runs the Worker build) into $work/bundle, $work being a new temp dir removed on
# exit; sets $work and $upload (wrangler's `Total Upload` figure, "?" if absent).
bench_build() {
  local name="$1"
  if [[ ! -x node_modules/.bin/wrangler ]] ||
     [[ ! -x node_modules/@cloudflare/workerd-linux-64/bin/workerd && ! -x node_modules/workerd/bin/workerd ]]; then
    echo "bench/$name: wrangler/workerd missing from node_modules: run \`make bootstrap\` first." >&2
    exit 1
  fi
  echo "bench/$name: cargo build -p upstream-sim --release" >&2
  cargo build -q -p upstream-sim --release

  work="$(mktemp -d "${TMPDIR:-/tmp}/bench-$name.XXXXXX")"
  trap bench_cleanup EXIT

  echo "bench/$name: wrangler deploy --dry-run --outdir (runs the Worker build)" >&2
  # shellcheck source=../../scripts/env.sh
  source scripts/env.sh
  if ! CI=1 wrangler deploy --dry-run --outdir "$work/bundle" >"$work/deploy.log" 2>&1; then
    tail -n 40 "$work/deploy.log" >&2
    echo "bench/$name: the bundle failed to build (log above)" >&2
    exit 1
  fi
  upload="$(grep -o 'Total Upload: .*' "$work/deploy.log" | sed 's/Total Upload: //' | tail -n 1)"
  upload="${upload:-?}"
}

# bench_build_rust_floor NAME: the Rust pass-through Worker (bench/common/wasm-passthrough), built
# as the gateway is (scripts/build-worker.sh: worker-build, wasm-opt -Oz), into $work/rust-floor.
bench_build_rust_floor() {
  local name="$1" crate="$root/bench/common/wasm-passthrough"
  echo "bench/$name: building the Rust pass-through floor (bench/common/wasm-passthrough)" >&2
  if ! bash scripts/build-worker.sh "$crate" >"$work/rust-floor-build.log" 2>&1; then
    tail -n 40 "$work/rust-floor-build.log" >&2
    echo "bench/$name: the Rust pass-through failed to build (log above)" >&2
    exit 1
  fi
  mkdir -p "$work/rust-floor"
  cp "$crate/build/index.js" "$crate/build/index_bg.wasm" "$work/rust-floor/"
}

bench_cleanup() {
  if [[ -n "$bench_child" ]] && kill -0 "$bench_child" 2>/dev/null; then
    kill -TERM "$bench_child" 2>/dev/null || true
    wait "$bench_child" 2>/dev/null || true
  fi
  if [[ -n "$work" && -z "${BENCH_KEEP:-}" ]]; then rm -rf "$work"; fi
  if [[ -n "$work" && -n "${BENCH_KEEP:-}" ]]; then echo "bench: kept $work (BENCH_KEEP)" >&2; fi
}

# bench_run COMMAND...: runs the driver in the background (so INT/TERM reach it and it stops its
# servers) and exits with its status.
bench_run() {
  "$@" &
  bench_child=$!
  trap 'kill -TERM "$bench_child" 2>/dev/null || true' INT TERM
  local rc=0
  wait "$bench_child" || rc=$?
  if kill -0 "$bench_child" 2>/dev/null; then wait "$bench_child" || rc=$?; fi
  bench_child=""
  exit "$rc"
}
