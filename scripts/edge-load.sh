#!/usr/bin/env bash
# The Spin edge under load, in one run (docs/benchmarks.md): verified
# WhatsApp deliveries, every one a new message (unique wamid), sent to the
# native gateway on Redis and to the Spin edge on the same Redis (with a
# native `gateway worker` sending the built-in agent's replies to a local
# stand-in for the WhatsApp API), beside a bare hyper 200. The edge runs
# twice: with Spin's default instance reuse (128 requests per instance)
# and with a fresh instance per request (`--max-instance-reuse-count 1`),
# which is the cost of a fresh instance: its state (configuration, keys,
# the Redis connection) is rebuilt for every request.
# Needs wrk, redis-server and Spin 4 (`spin` on PATH, or SPIN=path).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
SENDERS=${SENDERS:-1000}
BODIES=${BODIES:-150000}
SPIN=${SPIN:-$(command -v spin || echo ../shared/tools/spin/spin)}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}"
cargo build --release --example bench_server --bin gateway -q
(unset CARGO_TARGET_DIR; "$SPIN" build -f spin.toml > /dev/null)
BIN="$CARGO_TARGET_DIR/release"
SECRET=load-test-app-secret
DATA_KEY="AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
INDEX_KEY="AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source scripts/whatsapp-load.sh

API_PORT=$(free_port)
"$BIN/examples/bench_server" bare "$API_PORT" "$SECRET" > /dev/null 2>&1 &
REDIS_PORT=$(free_port)
mkdir -p "$work/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$work/redis" --save "" \
  --appendonly yes --appendfsync everysec > /dev/null 2>&1 &
sleep 0.5

# The shared configuration; each target gets a key prefix of its own, so
# that no run sees another's messages as redeliveries.
shared() { # prefix listen-port
  cat <<TOML
version = 1
[server]
listen = "127.0.0.1:$2"
[store]
kind = "redis"
url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "$1"
[channels.whatsapp]
plugin = "builtin:whatsapp"
api_base = "http://127.0.0.1:$API_PORT/v21.0"
TOML
}
native() { # prefix listen-port
  shared "$1" "$2"
  cat <<TOML
[channels.whatsapp.secrets]
app_secret = "$SECRET"
verify_token = "x"
access_token = "x"
[security]
data_key = "$DATA_KEY"
index_key = "$INDEX_KEY"
TOML
}

BARE_PORT=$(free_port)
start "$BIN/examples/bench_server" bare "$BARE_PORT" "$SECRET"; run bare_hyper "http://127.0.0.1:$BARE_PORT/" | grep -v "out of unique"; stop
start "$BIN/examples/bench_server" native "$BARE_PORT" "$SECRET"; run verify_parse "http://127.0.0.1:$BARE_PORT/webhooks/whatsapp" | grep -v "out of unique"; stop

NAT_PORT=$(free_port)
native "n:" "$NAT_PORT" > "$work/native.toml"
GATEWAY_LOG=warn start "$BIN/gateway" serve --config "$work/native.toml"
run native_redis "http://127.0.0.1:$NAT_PORT/webhooks/whatsapp"; stop

for reuse in 128 1; do
  prefix="e$reuse:"
  EDGE_PORT=$(free_port)
  native "$prefix" "$(free_port)" > "$work/worker.toml"
  GATEWAY_LOG=warn "$BIN/gateway" worker --config "$work/worker.toml" > "$work/worker.out" 2>&1 &
  WORKER=$!
  SPIN_VARIABLE_GATEWAY_TOML="$(shared "$prefix" 0)" \
  SPIN_VARIABLE_REDIS_HOST="127.0.0.1:$REDIS_PORT" \
  SPIN_VARIABLE_STORE_URL="redis://127.0.0.1:$REDIS_PORT" \
  SPIN_VARIABLE_SECURITY_DATA_KEY="$DATA_KEY" \
  SPIN_VARIABLE_SECURITY_INDEX_KEY="$INDEX_KEY" \
  SPIN_VARIABLE_CHANNELS_WHATSAPP_APP_SECRET="$SECRET" \
  SPIN_VARIABLE_CHANNELS_WHATSAPP_VERIFY_TOKEN=x \
  SPIN_VARIABLE_CHANNELS_TELEGRAM_SECRET_TOKEN=x \
  SPIN_VARIABLE_CHANNELS_DISCORD_PUBLIC_KEY="$(printf '0%.0s' $(seq 64))" \
    setsid "$SPIN" up -f spin.toml --listen "127.0.0.1:$EDGE_PORT" --log-dir "$work/spin-logs" \
    --max-instance-reuse-count "$reuse" > "$work/spin.out" 2>&1 &
  EDGE=$!
  for _ in $(seq 1 180); do
    grep -qs "^Serving" "$work/spin.out" && break
    kill -0 "$EDGE" 2>/dev/null || { cat "$work/spin.out"; exit 1; }
    sleep 1
  done
  # One request first, so that compiling the component is not measured.
  curl -s -o /dev/null "http://127.0.0.1:$EDGE_PORT/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1" || true
  run "spin_edge_reuse_$reuse" "http://127.0.0.1:$EDGE_PORT/webhooks/whatsapp"
  # `spin up` runs its trigger as a child: stop the whole group.
  kill -- "-$EDGE" || true; kill "$WORKER" || true; wait "$EDGE" "$WORKER" 2>/dev/null || true
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
