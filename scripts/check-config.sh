#!/usr/bin/env bash
#! Checks the GATEWAY configs of wrangler.toml (or $1), at the top and in every [env.*], as the
#! Worker will (src/bin/check-config.rs), before a build: a config the Worker would refuse
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
if ! python3 -c 'import tomllib' 2>/dev/null; then
  echo "check-config: skipped: reading $file needs Python 3.11+ (the Worker still checks its config)" >&2
  exit 0
fi
cargo build -q --locked --bin check-config
python3 - "$file" <<'PY' | target/debug/check-config "$file"
import json, sys, tomllib
with open(sys.argv[1], "rb") as f:
    doc = tomllib.load(f)
places = [("vars.GATEWAY", doc.get("vars", {}))]
places += [(f"env.{name}.vars.GATEWAY", env.get("vars", {})) for name, env in doc.get("env", {}).items()]
for at, found in places:
    if "GATEWAY" in found:
        print(json.dumps({"at": at, "config": found["GATEWAY"]}))
PY
mkdir -p target
echo "$sum" > "$stamp"
