#!/usr/bin/env bash
#! Builds a Worker bundle offline: the gateway's (build/) by default, as wrangler's [build]
#! command and `make build` call it; or `build-worker.sh DIR` for another worker-build crate
#! (DIR/build/; bench/overhead's Rust pass-through floor), built the same way.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ $# -eq 0 ]; then
  bash "$root/scripts/check-config.sh"
fi
cd "${1:-$root}"
worker-build --release
# wasm-bindgen (0.2.130) names the helpers.js snippet in the wasm's imports object once per
# function imported from it, and esbuild warns of each repeated key ("Duplicate key ... in
# object literal"), in worker-build's bundling above and again in every `wrangler dev` and
# `wrangler deploy`. The repeats (same key, same value: a no-op) are dropped here, so
# wrangler's bundling of the result is clean.
perl -0pi -e 's/("\.\/snippets\/[^"]+":[\w\$]+)(?:,\1)+/$1/g' build/index.js
# worker-build's own wasm-opt pass is off (Cargo.toml) because it always keeps the function
# names section, a sixth of the upload. Optimise for size here instead and move the names to
# build/index_bg.symbols (index:name, one a line; not uploaded) to read a trap's
# `wasm-function[N]` frames. The features are worker-build's list: what workerd supports.
wasm-opt build/index_bg.wasm -o build/index_bg.wasm -Oz --strip-producers \
  --symbolmap=build/index_bg.symbols \
  --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling
