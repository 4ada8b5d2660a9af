# Sourced by the durable load scripts (load-store.sh, edge-load.sh) after
# they set $work, SECRET, BODIES, SENDERS, CONNS and DURATION: writes
# $work/bodies.txt — BODIES signed WhatsApp deliveries, every one a new
# message (unique wamid) from one of SENDERS customers — and the wrk script
# that sends each once; defines `free_port`, `start CMD…` / `stop` (one
# background process) and `run NAME URL` (wrk, then requests/s, p50, p99).

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# One signed body per line: "<hex signature> <json>", each a new message.
python3 - "$SECRET" "$BODIES" "$SENDERS" > "$work/bodies.txt" <<'PY'
import hashlib, hmac, json, sys, time
secret, n, senders = sys.argv[1].encode(), int(sys.argv[2]), int(sys.argv[3])
now = str(int(time.time()))
for i in range(n):
    wa = "1650555%04d" % (i % senders)
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Load %d" % (i % senders)}, "wa_id": wa}],
        "messages": [{"from": wa, "id": "wamid.LOAD%09d" % i, "timestamp": now, "type": "text", "text": {"body": "order status? #%d" % i}}]}}]}]},
        separators=(",", ":"))
    print(hmac.new(secret, body.encode(), hashlib.sha256).hexdigest(), body)
PY
cat > "$work/unique.lua" <<'LUA'
local sigs, bodies, i = {}, {}, 0
function init(args)
  for line in io.lines(args[1]) do
    local sp = line:find(" ")
    sigs[#sigs + 1] = line:sub(1, sp - 1)
    bodies[#bodies + 1] = line:sub(sp + 1)
  end
end
function request()
  i = i + 1
  if i > #bodies then
    io.stderr:write("out of unique bodies: raise BODIES\n")
    i = 1
  end
  return wrk.format("POST", "/webhooks/whatsapp",
    {["content-type"] = "application/json", ["x-hub-signature-256"] = "sha256=" .. sigs[i]}, bodies[i])
end
LUA

start() { "$@" > "$work/out" 2>&1 & PID=$!; sleep 1.5; }
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; }
run() {
  local name=$1 url=$2
  echo "== $name"
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$work/unique.lua" "$url" -- "$work/bodies.txt" 2>&1 \
    | grep -E "Requests/sec|^ +50%|^ +99%|Non-2xx|Socket errors|out of unique" | sort -u || true
}
