#!/usr/bin/env bash
#! The storm benchmark: gateway vs direct OpenAI SDK at 90% and 150% of qwen3-max's capacity on
#! the upstream simulator, time-compressed (issue 3, the default) or `--scenario realtime` at
#! DashScope's limits and real speed (issue 8). Run from anywhere after `make build`; options go
#! to bench/storm/ (`bench/storm.sh --help`). Writes BENCHMARKS.md unless --no-write.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/python-env.sh
for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then exec .venv/bin/python -m bench.storm --help; fi
done

if [[ ! -f build/index.js || ! -f build/index_bg.wasm ]]; then
  echo "bench/storm.sh: build/index.js is missing: run \`make build\` first (the benchmark runs the built Worker)." >&2
  exit 1
fi
if [[ ! -x node_modules/.bin/wrangler ]]; then
  echo "bench/storm.sh: node_modules/.bin/wrangler is missing: run \`make bootstrap\` first." >&2
  exit 1
fi

echo "bench/storm.sh: building the simulator (cargo build -p upstream-sim --release)" >&2
cargo build -q -p upstream-sim --release

exec .venv/bin/python -m bench.storm "$@"
