#!/usr/bin/env bash
#! Issue 4's benchmark: added time to first byte and to last byte of a streamed answer, gateway
#! vs the simulator direct vs a minimal JS pass-through Worker, in one run on bare workerd.
#! Run from anywhere: `bash bench/ttfb/run.sh [bench.py options]` (`--help` lists them).
#! Builds the simulator and the gateway bundle (`wrangler deploy --dry-run`, which runs the
#! Worker build), sets up the project venv (scripts/python-env.sh), runs bench.py in a temp dir,
#! prints the report and writes bench/ttfb/RESULTS.md. About 6 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# --- the project's venv (official SDK for the tests, httpx for this client), idempotent
bash "$root/scripts/python-env.sh"
venv="$root/.venv"

for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    echo "usage: bash bench/ttfb/run.sh [options]; run.sh passes --bundle, --work, --upload and --command itself."
    "$venv/bin/python" -m bench.ttfb.bench --bundle x --work x --help
    exit 0
  fi
done

if [[ ! -x node_modules/.bin/wrangler ]] ||
   [[ ! -x node_modules/@cloudflare/workerd-linux-64/bin/workerd && ! -x node_modules/workerd/bin/workerd ]]; then
  echo "bench/ttfb: wrangler/workerd missing from node_modules: run \`make bootstrap\` first." >&2
  exit 1
fi

# --- builds
echo "bench/ttfb: cargo build -p upstream-sim --release" >&2
cargo build -q -p upstream-sim --release

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-ttfb.XXXXXX")"
child=""
cleanup() {
  if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "bench/ttfb: wrangler deploy --dry-run --outdir (runs the Worker build)" >&2
# shellcheck source=../../scripts/env.sh
source scripts/env.sh
if ! CI=1 wrangler deploy --dry-run --outdir "$work/bundle" >"$work/deploy.log" 2>&1; then
  tail -n 40 "$work/deploy.log" >&2
  echo "bench/ttfb: the bundle failed to build (log above)" >&2
  exit 1
fi
upload="$(grep -o 'Total Upload: .*' "$work/deploy.log" | sed 's/Total Upload: //' | tail -n 1)"

# --- the run (in the background so a signal reaches it and the servers are stopped)
"$venv/bin/python" -m bench.ttfb.bench --bundle "$work/bundle" --work "$work" \
  --upload "${upload:-?}" --command "bash bench/ttfb/run.sh${*:+ $*}" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
rc=0
wait "$child" || rc=$?
if kill -0 "$child" 2>/dev/null; then wait "$child" || rc=$?; fi
child=""
exit "$rc"
