#!/usr/bin/env bash
#! Builds the Worker bundle (build/) offline: wrangler's [build] command and `make build` call this.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
worker-build --release
# worker-build's own wasm-opt pass is off (Cargo.toml) because it always keeps the function
# names section, a sixth of the upload. Optimise for size here instead and move the names to
# build/index_bg.symbols (index:name, one a line; not uploaded) to read a trap's
# `wasm-function[N]` frames. The features are worker-build's list: what workerd supports.
wasm-opt build/index_bg.wasm -o build/index_bg.wasm -Oz --strip-producers \
  --symbolmap=build/index_bg.symbols \
  --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling
