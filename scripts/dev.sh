#!/usr/bin/env bash
#! `make dev`: the simulator on 127.0.0.1:8788 and the gateway (wrangler dev, local DOs) on 127.0.0.1:8787.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"

sim_port=8788
gateway_port=8787
for port in $sim_port $gateway_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "dev: 127.0.0.1:$port is already in use; stop what listens there and re-run." >&2
    exit 1
  fi
done

# Demo secrets for the [env.dev] config: simulator keys, client keys, a user-token signing
# secret, an admin token, and the alert webhook (the simulator stands in for Slack).
cat > .dev.vars.dev <<'VARS'
GATEWAY_KEYS=gw-dev-key
DEMO_WEB_KEY=gw-demo-web-key
DEMO_WEB_SIGNING_KEY=dev-signing-secret-change-me
ADMIN_TOKEN=dev-admin-token
SIM_KEY_A1=sk-a1
SIM_KEY_A2=sk-a2
SIM_KEY_B1=sk-b1
SIM_KEY_C1=sk-c1
ALERT_WEBHOOK_URL=http://127.0.0.1:8788/_sim/hooks/dev
VARS

cargo build -q -p upstream-sim
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/debug/upstream-sim --port "$sim_port" &
pids+=($!)

CI=1 wrangler dev --env dev --ip 127.0.0.1 --port "$gateway_port" \
  --persist-to .wrangler/state --show-interactive-dev-session=false &
pids+=($!)

for _ in $(seq 1 600); do
  health=$(curl -sS "http://127.0.0.1:$gateway_port/healthz" 2>/dev/null || true)
  case $health in
    *'"ok"'*) break ;;
    *'"misconfigured"'*) echo "dev: the gateway is up but its config is invalid: $health" >&2; break ;;
  esac
  kill -0 "${pids[1]}" 2>/dev/null || { echo "dev: wrangler dev exited" >&2; exit 1; }
  sleep 0.5
done

cat <<MSG

Gateway ready on http://127.0.0.1:$gateway_port (simulator on http://127.0.0.1:$sim_port). Try:

curl -s http://127.0.0.1:$gateway_port/v1/chat/completions \\
  -H 'Authorization: Bearer gw-dev-key' -H 'Content-Type: application/json' \\
  -d '{"model":"qwen3-max","messages":[{"role":"user","content":"Hello!"}]}'

The Responses API, embeddings and text completion (the same key, limits and counters):

curl -s http://127.0.0.1:$gateway_port/v1/responses \\
  -H 'Authorization: Bearer gw-dev-key' -H 'Content-Type: application/json' \\
  -d '{"model":"qwen3-max","input":"Hello!"}'

curl -s http://127.0.0.1:$gateway_port/v1/embeddings \\
  -H 'Authorization: Bearer gw-dev-key' -H 'Content-Type: application/json' \\
  -d '{"model":"text-embedding-v4","input":["Hello!","Bonjour !"]}'

curl -s http://127.0.0.1:$gateway_port/v1/completions \\
  -H 'Authorization: Bearer gw-dev-key' -H 'Content-Type: application/json' \\
  -d '{"model":"qwen-coder-turbo","prompt":"<|fim_prefix|>def add(a, b):<|fim_suffix|>","max_tokens":16}'

A browser app (client demo-web, pages on http://localhost:5173) calls with a user token its
backend mints; mint one for user alice, valid 10 minutes:

TOKEN=\$(python3 scripts/mint-token.py --client demo-web --user alice --secret dev-signing-secret-change-me)
curl -s http://127.0.0.1:$gateway_port/v1/chat/completions -H "Authorization: Bearer \$TOKEN" \\
  -H 'Content-Type: application/json' -d '{"model":"qwen-turbo","messages":[{"role":"user","content":"Hi"}]}'

Dashboard:       http://127.0.0.1:$gateway_port/admin/  (any user name, password dev-admin-token)
Bucket counters: curl -s -H 'Authorization: Bearer dev-admin-token' http://127.0.0.1:$gateway_port/admin/buckets/acct-a/qwen3-max
Report (CSV):    curl -s -H 'Authorization: Bearer dev-admin-token' 'http://127.0.0.1:$gateway_port/admin/report?account=acct-a&model=qwen3-max&format=csv'
Metrics:         curl -s -H 'Authorization: Bearer dev-admin-token' http://127.0.0.1:$gateway_port/admin/metrics
Client usage:    curl -s -H 'Authorization: Bearer dev-admin-token' http://127.0.0.1:$gateway_port/admin/clients/demo-web
                 (one user: .../admin/clients/demo-web/users/alice; reset: POST .../reset)
Test alert:      curl -s -X POST -H 'Authorization: Bearer dev-admin-token' http://127.0.0.1:$gateway_port/admin/alerts/test
Alerts sent:     curl -s http://127.0.0.1:$sim_port/_sim/hooks  (an account parked or back, a key refused, a budget low or spent;
                 park one: curl -s -X POST http://127.0.0.1:$sim_port/_sim/accounts/acct-a -d '{"state":"arrears"}')
Ctrl-C stops both.
MSG
wait -n "${pids[@]}"
