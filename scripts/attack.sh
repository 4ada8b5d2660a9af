#!/usr/bin/env bash
# /healthz latency while the gateway is attacked (docs/benchmarks.md,
# issue 10): the release gateway under `ulimit -n 256`, measured quiet, then
# under a flood of silent connections (300 kept open, reopened as they are
# closed), then under stalled unsigned bodies (100 kept announcing 1 MiB and
# sending half). Prints the /healthz latency percentiles of each phase, the
# answers it got, and the gateway's peak RSS. Bounded: PHASE seconds a phase.
# GATEWAY_BIN runs another build (say, an older commit's) instead of this
# tree's; SERVER adds lines to the [server] table (a smaller body budget).
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=${PHASE:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}"
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --bin gateway -q
  GATEWAY_BIN="$CARGO_TARGET_DIR/release/gateway"
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/gateway.toml" <<TOML
version = 1
[server]
listen = "127.0.0.1:18090"
${SERVER:-}
[store]
path = "$work/data"
[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
[channels.whatsapp]
plugin = "builtin:whatsapp"
[channels.whatsapp.secrets]
app_secret = "attack-app-secret"
verify_token = "x"
access_token = "x"
TOML
(ulimit -n 256 && GATEWAY_LOG=warn exec "$GATEWAY_BIN" serve --config "$work/gateway.toml" > "$work/out" 2> "$work/err") &
GW=$!
sleep 1.5
python3 - "$GW" "$PHASE" <<'PY'
import socket, sys, threading, time

pid, phase = int(sys.argv[1]), float(sys.argv[2])
addr = ("127.0.0.1", 18090)
stop = threading.Event()

def rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def healthz():
    t = time.perf_counter()
    try:
        s = socket.create_connection(addr, timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        status = s.recv(64).split(b" ")[1].decode()
        s.close()
    except Exception as e:
        status = type(e).__name__
    return (time.perf_counter() - t) * 1000, status

def silent_flood():
    socks = []
    while not stop.is_set():
        try:
            socks.append(socket.create_connection(addr, timeout=1))
        except OSError:
            time.sleep(0.01)
        if len(socks) >= 300:
            # Replace those the gateway closed.
            alive = []
            for s in socks:
                s.setblocking(False)
                try:
                    gone = s.recv(1) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                (s.close() if gone else alive.append(s))
            socks = alive
            time.sleep(0.05)
    for s in socks:
        s.close()

def stalled_bodies():
    socks = []
    half = b"x" * (512 * 1024)
    while not stop.is_set():
        if len(socks) < 100:
            try:
                s = socket.create_connection(addr, timeout=1)
                s.sendall(b"POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n")
                s.settimeout(0.2)
                try:
                    s.sendall(half)
                except OSError:
                    pass
                s.setblocking(False)
                socks.append(s)
            except OSError:
                time.sleep(0.01)
        else:
            alive = []
            for s in socks:
                try:
                    gone = s.recv(4096) is not None  # any answer or EOF: done
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                (s.close() if gone else alive.append(s))
            socks = alive
            time.sleep(0.02)
    for s in socks:
        s.close()

def measure(name, attack):
    global stop
    stop = threading.Event()
    t = threading.Thread(target=attack, daemon=True) if attack else None
    if t:
        t.start()
        time.sleep(1)
    lat, answers, peak = [], {}, rss_mib()
    end = time.time() + phase
    while time.time() < end:
        ms, status = healthz()
        lat.append(ms)
        answers[status] = answers.get(status, 0) + 1
        peak = max(peak, rss_mib())
        time.sleep(0.02)
    stop.set()
    if t:
        t.join()
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
    print(f"{name:16} n={len(lat):4}  p50 {pct(50):7.2f} ms  p99 {pct(99):7.2f} ms  max {lat[-1]:7.2f} ms  answers {answers}  peak RSS {peak:.0f} MiB")
    time.sleep(1)

measure("quiet", None)
measure("silent_flood", silent_flood)
measure("stalled_bodies", stalled_bodies)
PY
echo "accept failures logged: $(grep -c 'accept failed' "$work/err" || true)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
