#!/usr/bin/env bash
# The real binaries end to end: --check-config verdicts (exit 0 / 2 with a
# message), bearer auth and /metrics over HTTP (the scrape must pass
# `promtool check metrics`), --probe, and SIGTERM draining to exit 0.
# Usage: cli_test.sh BRIDGE_BIN EXAMPLE_BIN TLS_DIR
set -uo pipefail
bridge=$1 example=$2 tls=$3
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do pkill -9 -P "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
fails=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; fails=$((fails + 1)); }

# check NAME EXPECTED_RC GREP_PATTERN ARGS...: runs --check-config.
check() {
  local name=$1 want=$2 pattern=$3
  shift 3
  local out rc
  out=$(timeout 10 "$bridge" --check-config --upstream http://127.0.0.1:9/sse "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq "$want" ] && grep -qE -- "$pattern" <<<"$out"; then ok "$name"; else bad "$name (rc=$rc): $out"; fi
}

printf 'a-valid-token-0123456789\n# comment\n' > "$work/tokens"
printf 'X-Api-Key: super-secret-value\n' > "$work/headers"
printf 'short\n' > "$work/short-tokens"
check "valid config" 0 "configuration OK"
check "TLS both sides" 0 "https://" --tls-cert "$tls/server.pem" --tls-key "$tls/server.key" \
  --tls-client-ca "$tls/ca.pem" --upstream-ca "$tls/ca.pem"
check "auth on" 0 "auth on" --auth-tokens-file "$work/tokens"
check "missing TLS key" 2 "tls-key" --tls-cert "$tls/server.pem"
check "unreadable cert" 2 "cannot load certificate" --tls-cert /nonexistent.pem --tls-key "$tls/server.key"
check "key does not match cert" 2 "mismatch|does not match" --tls-cert "$tls/server.pem" --tls-key "$tls/client.key"
check "never-forwarded header" 2 "never forwarded" --forward-header Cookie
check "auth + forwarding Authorization" 2 "cannot be combined" --auth-tokens-file "$work/tokens" \
  --forward-header Authorization
check "short token" 2 "at least 16" --auth-tokens-file "$work/short-tokens"
check "bad auth-health" 2 "open or protected" --auth-health maybe
check "insecure + CA" 2 "contradict" --upstream-insecure --upstream-ca "$tls/ca.pem"
check "bad duration" 2 "invalid duration" --drain-timeout 5parsecs
check "duration above a year" 2 "invalid duration" --request-timeout 3000000h --max-request-timeout 3000000h
check "size that would wrap" 2 "invalid size" --max-body-size 17179869185GiB
check "listen without a host" 2 "a host is required" --listen :8080
out=$(MCP_BRIDGE_AUTH_TOKENS=' , ' timeout 10 "$bridge" --check-config --upstream http://127.0.0.1:9/sse 2>&1)
if [ $? -eq 2 ] && grep -q "holds no token" <<<"$out"; then ok "auth tokens variable with no token refused"; else bad "auth tokens variable: $out"; fi
out=$(MCP_BRIDGE_AUTH_TOKENS='#a-valid-token-0123456789' timeout 10 "$bridge" --check-config --upstream http://127.0.0.1:9/sse 2>&1)
if [ $? -eq 0 ] && grep -q "auth on" <<<"$out"; then ok "auth tokens variable: a token may start with #"; else bad "auth tokens variable with #: $out"; fi
out=$(MCP_BRIDGE_AUTH_TOKENS=$'first-valid-token-0123,\nsecond-valid-token-0123\n' timeout 10 "$bridge" --check-config --upstream http://127.0.0.1:9/sse 2>&1)
if [ $? -eq 0 ] && grep -q "auth on" <<<"$out"; then ok "auth tokens variable: commas and newlines separate"; else bad "auth tokens variable with newlines: $out"; fi
out=$(timeout 10 "$bridge" --check-config --upstream http://127.0.0.1:9/sse --upstream-headers-file "$work/headers" 2>&1)
if [ $? -eq 0 ] && ! grep -q super-secret <<<"$out"; then ok "headers file read, secret not printed"; else bad "headers file: $out"; fi
printf 'X-Api-Key super-secret-value\n' > "$work/bad-headers"
out=$(timeout 10 "$bridge" --check-config --upstream http://127.0.0.1:9/sse --upstream-headers-file "$work/bad-headers" 2>&1)
if [ $? -eq 2 ] && ! grep -q super-secret <<<"$out"; then ok "bad headers file refused without echoing it"; else bad "bad headers file: $out"; fi

# --help: every value label says what the value is (a label guessed from the
# flag's name once called --max-message-size a DURATION).
help=$(timeout 10 "$bridge" --help 2>&1)
labels_ok=1
for f in connect-timeout endpoint-timeout initialize-timeout request-timeout max-request-timeout \
  ping-interval ping-timeout keepalive-interval pool-max-idle-age ready-probe-interval \
  client-read-timeout client-write-timeout client-idle-timeout drain-timeout post-timeout \
  upstream-tcp-keepalive upstream-tcp-user-timeout idle-probe-after idle-probe-timeout \
  resolve-timeout resolve-cache-ttl session-idle-timeout; do
  grep -qE -- "--$f DURATION=" <<<"$help" || { labels_ok=0; bad "--help: --$f is not labelled DURATION"; }
done
for f in max-message-size max-body-size; do
  grep -qE -- "--$f SIZE=" <<<"$help" || { labels_ok=0; bad "--help: --$f is not labelled SIZE"; }
done
for f in pool-size max-revoked-sessions max-upstream-sessions; do
  grep -qE -- "--$f UINT[:=]" <<<"$help" || { labels_ok=0; bad "--help: --$f is not labelled UINT"; }
done
for f in session-secret-file upstream-headers-file upstream-ca tls-cert tls-key auth-tokens-file config; do
  grep -qE -- "--$f FILE" <<<"$help" || { labels_ok=0; bad "--help: --$f is not labelled FILE"; }
done
grep -qE -- "--serve-stale-initialize BOOLEAN=1" <<<"$help" || { labels_ok=0; bad "--help: --serve-stale-initialize"; }
[ "$labels_ok" = 1 ] && ok "--help labels every value (DURATION, SIZE, UINT, FILE, BOOLEAN)"

# wait_line FILE PATTERN: the first match of PATTERN in FILE within 10 s.
wait_line() {
  for _ in $(seq 100); do
    if grep -q -- "$2" "$1" 2>/dev/null; then grep -m1 -o -- "$2" "$1"; return 0; fi
    sleep 0.1
  done
  return 1
}

"$example" --listen 127.0.0.1:0 > /dev/null 2> "$work/example.log" &
pids+=($!)
up=$(wait_line "$work/example.log" 'http://127.0.0.1:[0-9]*/sse') || { bad "example server start"; exit 1; }
"$bridge" --upstream "$up" --listen 127.0.0.1:0 --auth-tokens-file "$work/tokens" \
  --drain-timeout 3s --log-format json > /dev/null 2> "$work/bridge.log" &
bpid=$!
pids+=($bpid)
url=$(wait_line "$work/bridge.log" 'http://127.0.0.1:[0-9]*/mcp') || { bad "bridge start"; cat "$work/bridge.log"; exit 1; }
base=${url%/mcp}
ok "bridge listening at $url"

code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST "$url" -H 'Content-Type: application/json' \
  -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}')
[ "$code" = 401 ] && ok "no token: 401" || bad "no token: $code"
wait_line "$work/bridge.log" '"msg":"request refused","status":"401"' > /dev/null \
  && ok "the refusal is logged" || bad "refusal log: $(tail -3 "$work/bridge.log")"
auth=(-H 'Authorization: Bearer a-valid-token-0123456789')
hdrs=$(curl -s -D - -o "$work/init.json" -m 10 -X POST "$url" "${auth[@]}" -H 'Content-Type: application/json' \
  -H 'Accept: application/json' \
  -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cli-test","version":"1"}}}')
sid=$(grep -i '^mcp-session-id:' <<<"$hdrs" | tr -d '\r' | awk '{print $2}')
[ -n "$sid" ] && ok "initialize with token" || bad "initialize: $hdrs $(cat "$work/init.json")"
res=$(curl -s -m 10 -X POST "$url" "${auth[@]}" -H 'Content-Type: application/json' -H 'Accept: application/json' \
  -H "Mcp-Session-Id: $sid" -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"via cli"}}}')
grep -q 'via cli' <<<"$res" && ok "tools/call" || bad "tools/call: $res"
grep -q '"request_id"' "$work/bridge.log" && grep -q '"msg":"call"' "$work/bridge.log" \
  && ok "JSON log line per call with request_id" || bad "json logs: $(tail -3 "$work/bridge.log")"

curl -s -m 5 "$base/metrics" > "$work/metrics.txt"
if promtool check metrics < "$work/metrics.txt" > "$work/promtool.out" 2>&1; then
  ok "promtool check metrics ($(grep -c '^mcp_bridge_' "$work/metrics.txt") series)"
else
  bad "promtool: $(cat "$work/promtool.out")"
fi
grep -q 'mcp_bridge_requests_total{method="tools/call",outcome="ok"} 1' "$work/metrics.txt" \
  && ok "metrics count the call" || bad "metrics: $(grep requests_total "$work/metrics.txt" | head)"
[ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$base/readyz")" = 200 ] && ok "readyz 200" || bad "readyz"
# --probe URL (the container HEALTHCHECK): exit 0 on HTTP 200, 1 otherwise.
out=$(timeout 5 "$bridge" --probe "$base/healthz" 2>&1) && grep -q 'HTTP 200' <<<"$out" \
  && ok "--probe healthz: exit 0" || bad "--probe healthz: $out"
out=$(timeout 5 "$bridge" --probe "http://127.0.0.1:9/healthz" 2>&1); rc=$?
[ "$rc" = 1 ] && grep -q 'refused' <<<"$out" && ok "--probe on a closed port: exit 1" \
  || bad "--probe on a closed port (rc=$rc): $out"

# Two bridge processes with the same session secret, no affinity: a session
# made on one is served by the other; a third with another secret refuses it.
printf 'shared-replica-secret-0123456789\n' > "$work/secret"
for r in a b c; do
  secret_file="$work/secret"; [ $r = c ] && secret_file="$work/secret2"
  [ $r = c ] && printf 'another-secret-entirely-0123456789\n' > "$work/secret2"
  "$bridge" --upstream "$up" --listen 127.0.0.1:0 --session-secret-file "$secret_file" \
    > /dev/null 2> "$work/$r.log" &
  pids+=($!)
done
ra=$(wait_line "$work/a.log" 'http://127.0.0.1:[0-9]*/mcp') && rb=$(wait_line "$work/b.log" 'http://127.0.0.1:[0-9]*/mcp') \
  && rc_=$(wait_line "$work/c.log" 'http://127.0.0.1:[0-9]*/mcp') || { bad "replicas start"; exit 1; }
hdrs=$(curl -s -D - -o /dev/null -m 10 -X POST "$ra" -H 'Content-Type: application/json' -H 'Accept: application/json' \
  -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"replicas","version":"1"}}}')
rsid=$(grep -i '^mcp-session-id:' <<<"$hdrs" | tr -d '\r' | awk '{print $2}')
served=0
for i in 1 2 3 4; do
  target=$ra; [ $((i % 2)) = 0 ] || target=$rb
  out=$(curl -s -m 10 -X POST "$target" -H 'Content-Type: application/json' -H 'Accept: application/json' \
    -H "Mcp-Session-Id: $rsid" -d "{\"jsonrpc\":\"2.0\",\"id\":$i,\"method\":\"tools/call\",\"params\":{\"name\":\"add\",\"arguments\":{\"a\":$i,\"b\":1}}}")
  grep -q "\"$((i + 1))\"" <<<"$out" && served=$((served + 1))
done
[ -n "$rsid" ] && [ "$served" = 4 ] && ok "two processes, one secret: initialize on A, 4 calls alternating B/A served" \
  || bad "replicas: sid=$rsid served=$served"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST "$rc_" -H 'Content-Type: application/json' \
  -H 'Accept: application/json' -H "Mcp-Session-Id: $rsid" -d '{"jsonrpc":"2.0","id":9,"method":"tools/list"}')
[ "$code" = 404 ] && ok "another secret: 404 (send initialize again)" || bad "other secret: $code"

# A stalled stderr (a pipe whose reader stopped reading) must not stall calls:
# log lines are queued for a writer thread and dropped past a bound.
mkfifo "$work/logpipe"
# The reader takes lines up to the "listening" one (bash reads a pipe byte by
# byte), then holds the pipe open without reading.
{ while IFS= read -r line; do printf '%s\n' "$line" >> "$work/stalled-first.log"
    case $line in *listening*) break ;; esac; done; sleep 60; } < "$work/logpipe" > /dev/null 2>&1 &
pids+=($!)
"$bridge" --upstream "$up" --listen 127.0.0.1:0 --log-level debug 2> "$work/logpipe" &
pids+=($!)
stalled=$(wait_line "$work/stalled-first.log" 'http://127.0.0.1:[0-9]*/mcp') || { bad "stalled-stderr bridge start"; }
if [ -n "$stalled" ]; then
  hdrs=$(curl -s -D - -o /dev/null -m 10 -X POST "$stalled" -H 'Content-Type: application/json' -H 'Accept: application/json' \
    -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"stalled","version":"1"}}}')
  ssid=$(grep -i '^mcp-session-id:' <<<"$hdrs" | tr -d '\r' | awk '{print $2}')
  # Far more than a pipe holds (64 KiB) of log lines (about 250 bytes a
  # call): 600 calls on one keep-alive connection (one curl, --next).
  : > "$work/calls.cfg"
  for i in $(seq 600); do
    printf '%s\n' 'next' "url = \"$stalled\"" 'request = "POST"' 'header = "Content-Type: application/json"' \
      'header = "Accept: application/json"' "header = \"Mcp-Session-Id: $ssid\"" \
      "header = \"X-Request-Id: stalled-stderr-check-$(printf '%040d' "$i")\"" \
      "data = \"{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"id\\\":$i,\\\"method\\\":\\\"tools/call\\\",\\\"params\\\":{\\\"name\\\":\\\"echo\\\",\\\"arguments\\\":{\\\"text\\\":\\\"s$i\\\"}}}\"" \
      'write-out = "\\n"' >> "$work/calls.cfg"
  done
  sed -i '1d' "$work/calls.cfg"  # no `next` before the first request
  timeout 30 curl -s -m 10 -K "$work/calls.cfg" > "$work/calls.out"
  stalled_ok=$(grep -c '"text":"s[0-9]*"' "$work/calls.out")
  [ "$stalled_ok" = 600 ] && ok "stderr stalled (pipe full): 600/600 calls still answered" \
    || bad "stalled stderr: $stalled_ok/600 calls answered"
fi

# SIGTERM with a call in flight: it finishes (drain), then exit 0.
curl -s -m 10 -X POST "$url" "${auth[@]}" -H 'Content-Type: application/json' -H 'Accept: application/json' \
  -H "Mcp-Session-Id: $sid" -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1000}}}' \
  > "$work/slow.json" &
cpid=$!
sleep 0.3
kill -TERM "$bpid"
start=$(date +%s%N)
rc=124
for _ in $(seq 100); do
  if ! kill -0 "$bpid" 2>/dev/null; then wait "$bpid"; rc=$?; break; fi
  sleep 0.1
done
wait "$cpid"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$rc" = 0 ] && ok "SIGTERM: exit 0 after ${ms} ms" || bad "SIGTERM: rc=$rc"
grep -q 'slept 1000 ms' "$work/slow.json" && ok "in-flight call finished during the drain" \
  || bad "drained call: $(cat "$work/slow.json")"

echo "cli: $fails failed"
[ "$fails" -eq 0 ]
