#!/usr/bin/env bash
# The event-driven core's benchmarks (#12) in one go: installs what is missing,
# builds the release binaries, runs every tool, and prints a summary table of
# each target, the measured value and met/missed. About 2-3 minutes on the
# project's 2-core VM. Each tool's full output is kept in a log directory
# (printed at the end).
#
#   tools/bench-core.sh [--skip-build] [--interop-dir DIR] [--strict]
#
#   mcp-bridge-cpu     bridge CPU per warm call / nginx CPU per proxied call, c10, c50 (<= 1.5x);
#                      then, as a reference (no target), nginx-proxied/direct calls/s at c16
#   mcp-bridge-bench   bridged/direct calls/s: TS SDK upstream c10, c50 (>= 0.85),
#                      C++ upstream c16 (>= 0.8); cold session added cost (<= 300 us);
#                      the C++ rows on both C++ upstreams (--cpp-upstream ref, example)
#   burst.mjs          500 SDK clients at once: all connect (defaults); with
#                      --max-inflight 50 every refusal is 503 + Retry-After + id + log line
#   mcp-bridge-scale   10,000 idle + 2,000 streams (TS SDK legacy server upstream): all served,
#                      <= 16 threads, <= 200 MiB
#
# --interop-dir: where tests/interop's node_modules are (default tests/interop,
# also MSB_INTEROP_DIR); npm ci is run there when the SDK is missing.
# --strict: exit 1 when a target is missed (default: exit 1 only when a tool
# could not run). Every tool binds 127.0.0.1 and is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

skip_build=0 strict=0
interop=${MSB_INTEROP_DIR:-$root/tests/interop}
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) skip_build=1 ;;
    --strict) strict=1 ;;
    --interop-dir) interop=$2; shift ;;
    --interop-dir=*) interop=${1#*=} ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench-core: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
interop=$(cd "$interop" 2>/dev/null && pwd || echo "$interop")

b=build-release
if [ "$skip_build" = 0 ]; then
  tools/install-deps.sh || exit 2
  [ -d $b ] || meson setup $b --buildtype=release -Dtests=false -Dinterop=false >/dev/null || exit 2
  echo "bench-core: building ($b)" >&2
  ninja -C $b mcp-sse-bridge tools/mcp-bridge-bench tools/mcp-bridge-cpu tools/mcp-bridge-scale \
    tools/mcp-bridge-upstream >/dev/null || exit 2
fi
if ! command -v node >/dev/null; then
  echo "bench-core: node is missing (tools/install-deps.sh --interop installs it): the TS rows will not run" >&2
elif [ ! -d "$interop/node_modules/@modelcontextprotocol/sdk" ] && command -v npm >/dev/null; then
  echo "bench-core: npm ci in $interop" >&2
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error) || true
fi

# 10,000 + 2,000 connections: both ends are on this machine.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The figures are ratios against references measured in the same run, but a
# busy machine still widens their spread: say how busy it was.
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)
echo "bench-core: load average before the run: $load_start ($(nproc) cores)" >&2

logs=$(mktemp -d /tmp/msb-bench-core.XXXXXX)
status=0
start=$SECONDS
names=()
run() {  # run NAME SECONDS CMD...: output to the terminal and $logs/NAME.log
  local name=$1 secs=$2
  shift 2
  names+=("$name")
  echo
  echo "=== $name: $*"
  timeout -k 5 "$secs" "$@" 2>&1 | tee "$logs/$name.log"
  local rc=${PIPESTATUS[0]}
  if ! grep -q '^TARGET|' "$logs/$name.log"; then
    echo "TARGET|$name|$name|-|no result (exit $rc)|MISSED" >>"$logs/$name.log"
    status=1
  fi
}

run cpu 200 $b/tools/mcp-bridge-cpu --bridge $b/mcp-sse-bridge --max-seconds 180
# Not a target: what the reference proxy reaches against its own direct path
# here (closed loop, c16, the scheduler placing every thread, as the
# throughput cells run): the yardstick for the bridged/direct ratios below.
echo
echo "=== reference throughput: nginx-proxied/direct calls/s"
timeout -k 5 80 $b/tools/mcp-bridge-cpu --bridge $b/mcp-sse-bridge --rate 0 --placement free --concurrency 16 \
  --direct --rounds 3 --max-seconds 70 2>&1 | grep -v '^TARGET|' | tee "$logs/tput-ref.log"
# The C++ cells twice: on the reference legacy server (one epoll thread, like
# the SDKs' servers and like nginx's upstream in mcp-bridge-cpu) and on the
# example server (a thread per connection and per request, which costs the
# cold session a thread start of its own).
run bench-ref 60 $b/tools/mcp-bridge-bench --bridge $b/mcp-sse-bridge --cpp-upstream ref --concurrency 1,16 \
  --cell-ms 1500 --warmup-ms 300 --no-extras
run bench 200 $b/tools/mcp-bridge-bench --bridge $b/mcp-sse-bridge --cpp-upstream example --concurrency 1,16 \
  --cell-ms 1500 --warmup-ms 300 --no-extras --ts-server "$interop/legacy-ts-server.mjs" --ts-concurrency 10,50 --ts-rounds 3 \
  --ts-warmup-ms 500 --ts-cell-ms 1500
run burst-default 150 node tools/burst.mjs --bridge $b/mcp-sse-bridge --upstream $b/tools/mcp-bridge-upstream \
  --interop-dir "$interop" --clients 500 --key burst-default --max-seconds 140
run burst-cap 150 node tools/burst.mjs --bridge $b/mcp-sse-bridge --upstream $b/tools/mcp-bridge-upstream \
  --interop-dir "$interop" --clients 500 --key burst-cap --expect refusals --bridge-flag=--max-inflight=50 \
  --max-seconds 140
# The streams' upstream is the TS SDK's legacy server (one event loop): the
# example server's thread per connection (4,000 for 2,000 streams) is itself
# what saturates a 2-core machine. Without node, the example server.
scale_up=()
if command -v node >/dev/null && [ -d "$interop/node_modules/@modelcontextprotocol/sdk" ]; then
  scale_up=(--ts-server "$interop/legacy-ts-server.mjs")
fi
run scale 150 $b/tools/mcp-bridge-scale --bridge $b/mcp-sse-bridge --idle 10000 --streams 2000 --wait-ms 20000 \
  "${scale_up[@]}"

echo
echo "=== summary (#12 targets; $(nproc) cores; load average $load_start before, $(load) after;" \
  "$((SECONDS - start)) s; logs in $logs)"
for n in "${names[@]}"; do cat "$logs/$n.log"; done | grep '^TARGET|' | awk -F'|' '
  BEGIN { n = 0 }
  { n++; w[n] = $3; t[n] = $4; m[n] = $5; r[n] = $6
    if (length($3) > a) a = length($3); if (length($4) > bt) bt = length($4); if (length($5) > c) c = length($5) }
  END {
    if (a > 70) a = 70
    printf "%-" a "s  %-" bt "s  %-" c "s  %s\n", "target", "goal", "measured", ""
    for (i = 1; i <= n; i++) printf "%-" a "s  %-" bt "s  %-" c "s  %s\n", substr(w[i], 1, a), t[i], m[i], r[i]
  }'
grep -h '^REFERENCE|' "$logs/tput-ref.log" | awk -F'|' '{ printf "reference, not a target: %s = %s\n", $3, $4 }'
missed=$(for n in "${names[@]}"; do cat "$logs/$n.log"; done | grep '^TARGET|' | grep -c '|MISSED$')
echo "$missed target(s) missed"
[ "$strict" = 1 ] && [ "$missed" -gt 0 ] && status=1
exit $status
