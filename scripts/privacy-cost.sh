#!/usr/bin/env bash
# Export and erasure of one customer with 10,000 timeline entries, on the
# embedded store and on Redis (docs/benchmarks.md, issue 12), each beside
# the plain timeline read of the same customer (the baseline: the same
# records read and opened, nothing else). Needs redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-10000}
LISTEN_PORT=18099
REDIS_PORT=18098
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
run() { # label store-section
  rm -rf "$work/data"; redis-cli -p "$REDIS_PORT" FLUSHALL > /dev/null
  config "$2" > "$work/gateway.toml"
  GATEWAY_LOG=warn "$CURRENT_BIN" serve --config "$work/gateway.toml" > "$work/out" 2> "$work/err" &
  local pid=$!
  sleep 1.5
  echo "== $1"
  python3 - "$WIDGET" "$TOKEN" "$ENTRIES" "$LISTEN_PORT" <<'PY'
import base64, hashlib, hmac, http.client, json, statistics, sys, threading, time
secret, token, n, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=")
h, p = b({"alg": "HS256", "typ": "JWT"}), b({"sub": "bench-user", "exp": int(time.time()) + 3600,
    "email": "bench@example.com", "email_verified": True})
s = base64.urlsafe_b64encode(hmac.new(secret.encode(), h + b"." + p, hashlib.sha256).digest()).rstrip(b"=")
jwt = (h + b"." + p + b"." + s).decode()
admin = {"authorization": "Bearer " + token}
def call(method, path, body=None, headers=admin, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, data
st, _ = call("POST", "/widget/v1/messages", json.dumps({"text": "hi", "client_id": "1"}),
             {"authorization": "Bearer " + jwt, "content-type": "application/json"})
assert st == 202, st
st, body = call("GET", "/admin/v1/customers?identifier=email:bench@example.com")
cid = json.loads(body)["id"]
def post_events(k, total):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for i in range(k, total, 8):
        ev = json.dumps({"identifier": {"kind": "email", "value": "bench@example.com"},
                         "type": "page_view", "properties": {"page": "/chairs/%d" % i}})
        # Eight writers on one customer contend on Redis: a 503 (with
        # Retry-After) is tried again, as a client would.
        for attempt in range(100):
            st, _ = call("POST", "/v1/events", ev, dict(admin, **{"content-type": "application/json"}), c)
            if st != 503:
                break
            retries[0] += 1
            time.sleep(0.05)
        assert st == 202, st
retries = [0]
t0 = time.perf_counter()
threads = [threading.Thread(target=post_events, args=(k, n)) for k in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print("  %d events stored in %.1f s by 8 writers (%d answers 503, tried again)" % (n, time.perf_counter() - t0, retries[0]))
def timed(method, path, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        st, body = call(method, path)
        out.append(time.perf_counter() - t)
        assert st == 200, (path, st, body[:200])
    return statistics.median(out), len(body)
base, size = timed("GET", "/admin/v1/customers/%s/timeline" % cid, 5)
entries = len(json.loads(call("GET", "/admin/v1/customers/%s/timeline" % cid)[1])["entries"])
print("  timeline read (baseline): %d entries, %.0f ms, %d bytes" % (entries, base * 1000, size))
for fmt in ("json", "csv"):
    t, size = timed("GET", "/admin/v1/customers/%s/export?format=%s" % (cid, fmt), 5)
    print("  export %s: %.0f ms (%.2fx the timeline read), %d bytes" % (fmt, t * 1000, t / base, size))
t = time.perf_counter()
st, body = call("DELETE", "/admin/v1/customers/%s" % cid)
e = time.perf_counter() - t
assert st == 200, (st, body)
removed = json.loads(body)["removed"]
print("  erasure: %.0f ms (%.2fx the timeline read), removed %d events, %d messages" % (
    e * 1000, e / base, removed["events"], removed["messages"]))
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run "embedded" "path = \"$work/data\""
run "redis" "kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\""
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
