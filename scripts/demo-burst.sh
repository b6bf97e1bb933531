#!/usr/bin/env bash
#! Fires N chat requests at once at the `make dev` gateway and tallies who served them.
set -euo pipefail
n=${1:-30}
url=${GATEWAY_URL:-http://127.0.0.1:8787}
body='{"model":"qwen3-max","messages":[{"role":"user","content":"Hello!"}]}'
one() {
  curl -s -o /dev/null -D - "$url/v1/chat/completions" \
    -H 'Authorization: Bearer gw-dev-key' -H 'Content-Type: application/json' -d "$body" \
  | tr -d '\r' | awk -v i="$1" '
      /^HTTP/ {status=$2}
      tolower($1)=="x-gateway-served-model:" {model=$2}
      tolower($1)=="retry-after:" {retry=$2}
      END {printf "%s %s%s\n", status, (model ? model : "-"), (retry ? " retry-after=" retry "s" : "")}'
}
export -f one; export url body
seq "$n" | xargs -P "$n" -I{} bash -c 'one {}' | sort | uniq -c | sort -rn
