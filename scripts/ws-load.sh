#!/usr/bin/env bash
# Widget live sessions under load (docs/benchmarks.md, issue 11): the
# release gateway on its embedded store, N idle authenticated sessions of N
# users plus K of one customer, then M signed WhatsApp webhooks from that
# customer: RSS per session and fan-out latency (webhook → every session).
# Raises the file-descriptor limit for both processes (N + a few hundred).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
K=${K:-10}
M=${M:-100}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}"
cargo build --release --bin gateway --example ws_load -q
BIN="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"
cat > "$work/gateway.toml" <<TOML
version = 1
[server]
listen = "127.0.0.1:18095"
[store]
path = "$work/data"
[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
[widget]
algorithms = ["HS256"]
secret = "ws-load-widget-secret-0123456789abcdef"
[channels.whatsapp]
plugin = "builtin:whatsapp"
api_base = "http://127.0.0.1:9"
[channels.whatsapp.secrets]
app_secret = "ws-load-app-secret"
verify_token = "x"
access_token = "x"
TOML
GATEWAY_LOG=warn "$BIN/gateway" serve --config "$work/gateway.toml" > "$work/out" 2> "$work/err" &
GW=$!
sleep 1.5
kill -0 "$GW" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
"$BIN/examples/ws_load" 127.0.0.1:18095 "$GW" ws-load-widget-secret-0123456789abcdef ws-load-app-secret "$N" "$K" "$M"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); fd limit $(ulimit -n)"
