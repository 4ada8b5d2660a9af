#!/usr/bin/env bash
# What the audit log costs an admin read (docs/benchmarks.md, issue 12):
# `GET /admin/v1/customers/{id}` under wrk, on the embedded store and on
# Redis, with this tree's gateway (every read audited before it is
# answered) beside BASELINE_BIN, a build without the audit log (say,
# 62f5104 built in a worktree). Needs wrk and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
: "${BASELINE_BIN:?set BASELINE_BIN to a gateway built without the audit log}"
LISTEN_PORT=18096
REDIS_PORT=18097
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
jwt=$(python3 - "$WIDGET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=")
h, p = b({"alg": "HS256", "typ": "JWT"}), b({"sub": "bench-user", "exp": int(time.time()) + 3600})
s = base64.urlsafe_b64encode(hmac.new(sys.argv[1].encode(), h + b"." + p, hashlib.sha256).digest()).rstrip(b"=")
print((h + b"." + p + b"." + s).decode())
PY
)
run() { # label binary store-section
  local label=$1 bin=$2
  rm -rf "$work/data"; redis-cli -p "$REDIS_PORT" FLUSHALL > /dev/null
  config "$3" > "$work/gateway.toml"
  GATEWAY_LOG=warn "$bin" serve --config "$work/gateway.toml" > "$work/out" 2> "$work/err" &
  local pid=$!
  sleep 1.5
  curl -sf -XPOST localhost:$LISTEN_PORT/widget/v1/messages -H "authorization: Bearer $jwt" -d '{"text":"hi","client_id":"1"}' > /dev/null
  local id
  id=$(curl -sf "localhost:$LISTEN_PORT/admin/v1/customers?identifier=widget:bench-user" -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  printf 'wrk.headers["authorization"] = "Bearer %s"\n' "$TOKEN" > "$work/get.lua"
  echo "== $label"
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$work/get.lua" "http://127.0.0.1:$LISTEN_PORT/admin/v1/customers/$id" | grep -E "Requests/sec|50%|99%|Non-2xx" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
EMBEDDED="path = \"$work/data\""
REDIS="kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\""
run "embedded, no audit log (baseline)" "$BASELINE_BIN" "$EMBEDDED"
run "embedded, audited" "$CURRENT_BIN" "$EMBEDDED"
run "redis, no audit log (baseline)" "$BASELINE_BIN" "$REDIS"
run "redis, audited" "$CURRENT_BIN" "$REDIS"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
