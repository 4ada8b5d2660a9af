# Sourced by the benchmark scripts (audit-cost.sh, privacy-cost.sh) after
# they set LISTEN_PORT and REDIS_PORT: builds the release gateway
# ($CURRENT_BIN), makes a scratch directory ($work, removed on exit with
# every background job), starts a Redis of its own on REDIS_PORT, and
# defines `config STORE-SECTION`: a gateway.toml on LISTEN_PORT with an
# admin token ($TOKEN) and a widget secret ($WIDGET).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}"
cargo build --release --bin gateway -q
CURRENT_BIN="$CARGO_TARGET_DIR/release/gateway"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
TOKEN=bench-admin-token
SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
WIDGET=bench-widget-secret-0123456789abcdef
redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize no > "$work/redis.log" 2>&1 &
sleep 0.5
config() { # store-section
  cat <<TOML
version = 1
[server]
listen = "127.0.0.1:$LISTEN_PORT"
[store]
$1
[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
[widget]
algorithms = ["HS256"]
secret = "$WIDGET"
[[admin.tokens]]
name = "bench"
token_sha256 = "$SHA"
role = "admin"
TOML
}
