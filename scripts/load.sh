#!/usr/bin/env bash
# Loopback load comparison, in one run (docs/benchmarks.md):
#   bare hyper 200 | verified WhatsApp webhook parsed natively | parsed by the
#   plugin on fresh instances (no pipeline) | the same with reused instances
#   (trusted plugins, one sender) | the real gateway's /webhooks/whatsapp.
# Needs wrk (apt-get install wrk). Bounded: DURATION seconds per target.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}"
cargo build --release --example bench_server --bin gateway -q
BIN="$CARGO_TARGET_DIR/release"
SECRET=load-test-app-secret
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# The fixture, dated now: a message older than the dedup retention is
# refused as a possible replay, and this measures redeliveries.
BODY="$work/whatsapp_text.json"
python3 -c "import re,sys,time;print(re.sub(r'\"timestamp\": *\"[0-9]+\"', '\"timestamp\":\"%d\"' % time.time(), open(sys.argv[1]).read()), end='')" tests/fixtures/whatsapp_text.json > "$BODY"
SIG=$(python3 -c "import hmac,hashlib,sys;print(hmac.new(sys.argv[1].encode(),open(sys.argv[2],'rb').read(),hashlib.sha256).hexdigest())" "$SECRET" "$BODY")
python3 - "$BODY" "$SIG" > "$work/post.lua" <<'PY'
import json, sys
body = open(sys.argv[1]).read()
print("wrk.method = \"POST\"")
print("wrk.body = " + json.dumps(body))
print("wrk.headers[\"content-type\"] = \"application/json\"")
print("wrk.headers[\"x-hub-signature-256\"] = \"sha256=" + sys.argv[2] + "\"")
PY
cat > "$work/gateway.toml" <<TOML
version = 1
[server]
listen = "127.0.0.1:18084"
[store]
path = "$work/data"
[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
[channels.whatsapp]
plugin = "builtin:whatsapp"
[channels.whatsapp.secrets]
app_secret = "$SECRET"
verify_token = "x"
access_token = "x"
TOML
start() { "$@" > "$work/out" 2>&1 & PID=$!; sleep 1.5; }
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; }
run() {
  local name=$1 url=$2
  echo "== $name"
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$work/post.lua" "$url" | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
}
start "$BIN/examples/bench_server" bare 18081 "$SECRET"; run bare http://127.0.0.1:18081/; stop
start "$BIN/examples/bench_server" native 18082 "$SECRET"; run native_parse http://127.0.0.1:18082/; stop
start "$BIN/examples/bench_server" plugin 18083 "$SECRET"; run plugin_parse http://127.0.0.1:18083/; stop
start "$BIN/examples/bench_server" plugin-reuse 18085 "$SECRET"; run plugin_parse_reused_instances http://127.0.0.1:18085/; stop
GATEWAY_LOG=warn start "$BIN/gateway" serve --config "$work/gateway.toml"; run gateway_webhook http://127.0.0.1:18084/webhooks/whatsapp
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
