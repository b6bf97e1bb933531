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
opt=(-Oz --strip-producers --symbolmap=build/index_bg.symbols
  --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int
  --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling)
# wasm-opt takes about 20 s. The last module's result is kept and reused when the same module
# comes again: `wrangler dev` always builds twice at start (once more when its watcher is
# ready), and `make test` builds again for the deploy check.
cache=target/wasm-opt-last
key="$( (cat build/index_bg.wasm; echo "${opt[*]}"; wasm-opt --version) | sha256sum | cut -c1-64)"
if [ "$(cat "$cache/key" 2>/dev/null)" = "$key" ]; then
  cp "$cache/index_bg.wasm" "$cache/index_bg.symbols" build/
else
  wasm-opt build/index_bg.wasm -o build/index_bg.wasm "${opt[@]}"
  mkdir -p "$cache"
  cp build/index_bg.wasm build/index_bg.symbols "$cache/"
  echo "$key" > "$cache/key"
fi
