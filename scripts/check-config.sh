#!/usr/bin/env bash
#! Checks the GATEWAY configs of wrangler.toml (or $1), at the top and in every [env.*], as the
#! Worker will (src/bin/check-config.rs, which reads the file), before a build: a config the Worker would refuse
#! fails the build, and so `wrangler deploy`, naming the field. Skipped when neither the file
#! nor the config code changed since the last check passed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
file="${1:-wrangler.toml}"
stamp=target/check-config.stamp
sum="$(cat "$file" src/config.rs src/config/*.rs | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
  exit 0
fi
cargo build -q --locked --features check-config --bin check-config
target/debug/check-config "$file"
mkdir -p target
echo "$sum" > "$stamp"
