#!/usr/bin/env bash
# Durable-store load run, in one run (docs/benchmarks.md): verified WhatsApp
# deliveries, every one a new message (unique wamid) from one of SENDERS
# customers, each answered 200 only once stored — on the embedded store and
# on Redis — beside a bare hyper 200 on the same machine. The built-in
# agent answers every message and its replies go to a local stand-in for
# the WhatsApp API, so the queue and deliveries run as in production.
# Needs wrk and redis-server. Bounded: DURATION seconds per target.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
SENDERS=${SENDERS:-1000}
BODIES=${BODIES:-150000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}"
# BIN=<dir holding gateway and examples/bench_server> runs binaries built
# elsewhere (scripts/analytics-cost.sh: a build before and after a change).
if [ -z "${BIN:-}" ]; then
  cargo build --release --example bench_server --bin gateway -q
  BIN="$CARGO_TARGET_DIR/release"
fi
SECRET=load-test-app-secret
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source scripts/whatsapp-load.sh

# Replies the agent got out during the run (the queue keeps working after).
replies() {
  local sent
  sent=$(curl -s "http://127.0.0.1:$1/metrics" | awk '/^gateway_outbound_total\{channel="whatsapp",outcome="sent"\}/ {print $2}')
  echo "replies sent during the run: ${sent:-0} ($(( ${sent:-0} / DURATION ))/s)"
}

# A stand-in for the WhatsApp Cloud API (answers 200 to the replies).
API_PORT=$(free_port)
"$BIN/examples/bench_server" bare "$API_PORT" "$SECRET" > /dev/null 2>&1 &

config() {
  cat <<TOML
version = 1
[server]
listen = "127.0.0.1:$2"
[store]
$1
[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
[channels.whatsapp]
plugin = "builtin:whatsapp"
api_base = "http://127.0.0.1:$API_PORT/v21.0"
[channels.whatsapp.secrets]
app_secret = "$SECRET"
verify_token = "x"
access_token = "x"
TOML
}

BARE_PORT=$(free_port)
start "$BIN/examples/bench_server" bare "$BARE_PORT" "$SECRET"; run bare_hyper "http://127.0.0.1:$BARE_PORT/" | grep -v "out of unique"; stop

EMB_PORT=$(free_port)
config "kind = \"embedded\"
path = \"$work/data\"" "$EMB_PORT" > "$work/embedded.toml"
GATEWAY_LOG=warn start "$BIN/gateway" serve --config "$work/embedded.toml"
run gateway_embedded "http://127.0.0.1:$EMB_PORT/webhooks/whatsapp"; replies "$EMB_PORT"; stop

REDIS_PORT=$(free_port)
mkdir -p "$work/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$work/redis" --save "" \
  --appendonly yes --appendfsync everysec > /dev/null 2>&1 &
sleep 0.5
RED_PORT=$(free_port)
config "kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\"" "$RED_PORT" > "$work/redis.toml"
GATEWAY_LOG=warn start "$BIN/gateway" serve --config "$work/redis.toml"
run gateway_redis "http://127.0.0.1:$RED_PORT/webhooks/whatsapp"; replies "$RED_PORT"; stop

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
