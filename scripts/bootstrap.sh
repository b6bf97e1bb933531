#!/usr/bin/env bash
#! Installs every tool the build and tests need, idempotently, from the package registries only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need() { command -v "$1" >/dev/null 2>&1 || { echo "bootstrap: '$1' not found. $2" >&2; exit 1; }; }
need cargo "Install Rust with rustup (https://rustup.rs), then re-run."
need rustup "Install Rust with rustup (https://rustup.rs), then re-run."
need node "Install Node.js 20 or newer, then re-run."
need npm "Install npm (comes with Node.js), then re-run."
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "bootstrap: Node.js $node_major is too old; wrangler needs 20 or newer." >&2; exit 1; }

installed_targets=$(rustup target list --installed)
grep -qx wasm32-unknown-unknown <<<"$installed_targets" || rustup target add wasm32-unknown-unknown
for component in clippy rustfmt; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

# Pinned: worker-build's own version, and wasm-bindgen-cli at exactly the lock's wasm-bindgen.
worker_build_version=0.8.7
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock)
[ -n "$bindgen_version" ] || { echo "bootstrap: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
if [ "$("$HOME/.cargo/bin/worker-build" --version 2>/dev/null)" != "$worker_build_version" ]; then
  echo "bootstrap: installing worker-build $worker_build_version (takes a few minutes once)"
  cargo install worker-build --version "$worker_build_version" --locked
fi
if [ "$("$HOME/.cargo/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]; then
  echo "bootstrap: installing wasm-bindgen-cli $bindgen_version (takes a few minutes once)"
  # Not --locked: a dependency version in its lock is missing from the registry mirror.
  cargo install wasm-bindgen-cli --version "$bindgen_version" --force
fi

# npm ci only when node_modules does not match package-lock.json.
if ! cmp -s package-lock.json node_modules/.package-lock.json.ci 2>/dev/null; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.package-lock.json.ci
fi
for bin in wrangler workerd esbuild wasm-opt; do
  [ -x "node_modules/.bin/$bin" ] || { echo "bootstrap: node_modules/.bin/$bin missing after npm ci" >&2; exit 1; }
done
bash "$root/scripts/python-env.sh"

# Headless Chromium for the real-browser test: Debian's package (apt-get, as root or by sudo).
if ! command -v chromium >/dev/null 2>&1; then
  echo "bootstrap: installing chromium (Debian package, once)"
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium; }
  command -v chromium >/dev/null 2>&1 || { echo "bootstrap: chromium did not install" >&2; exit 1; }
fi
