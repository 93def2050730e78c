#!/usr/bin/env bash
# Real-network suite (issue #11): the bridge and the example legacy server in
# two network namespaces joined by a veth pair, faults made with nftables drop
# rules on the veth ends (black hole, 3 % loss, a link flap). Nothing here
# reaches beyond the two namespaces this script creates: the /30 lives only on
# their veth ends, neither namespace has a route anywhere else.
#
#   tests/network/run.sh BRIDGE_BIN EXAMPLE_BIN
#
# Needs root, `ip netns` and nftables (Debian: iproute2, nftables); without
# them it says why and exits 77 (meson: skipped). Node 20+ and the TS SDK v1 in
# tests/interop/node_modules run the client side (network.test.mjs).
# Env: NET_PROFILES=default,tight and NET_SCENARIOS=1,2,3,4,5 select what runs;
# NET_SUITE_TIMEOUT (s, default 250) bounds the driver.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

here=$(cd "$(dirname "$0")" && pwd)
BRIDGE_BIN=${1:?usage: run.sh BRIDGE_BIN EXAMPLE_BIN}
EXAMPLE_BIN=${2:?usage: run.sh BRIDGE_BIN EXAMPLE_BIN}
BRIDGE_BIN=$(realpath "$BRIDGE_BIN")
EXAMPLE_BIN=$(realpath "$EXAMPLE_BIN")

skip() { echo "SKIP network suite: $*"; exit 77; }
fail() { echo "FAIL network suite: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, veth, nftables); running as uid $(id -u)"
command -v ip >/dev/null || skip "'ip' (iproute2) not installed"
command -v nft >/dev/null || skip "'nft' not installed (Debian package nftables)"
command -v timeout >/dev/null || fail "'timeout' (coreutils) not found"
[ -x "$BRIDGE_BIN" ] || fail "bridge binary $BRIDGE_BIN not executable"
[ -x "$EXAMPLE_BIN" ] || fail "example server $EXAMPLE_BIN not executable"
NODE=${NODE:-$(command -v node || true)}
[ -n "$NODE" ] || fail "node not found (the driver is a node:test file)"
SDK="$here/../interop/node_modules/@modelcontextprotocol/sdk/dist/esm/client/streamableHttp.js"
[ -f "$SDK" ] || fail "TS SDK v1 missing ($SDK): run tools/install-deps.sh --interop"

BR_NS=msb-br-$$
UP_NS=msb-up-$$
IFACE=msb0                  # the veth end's name in each namespace
BR_ADDR=10.77.0.1           # 10.77.0.0/30: exists only on the two veth ends
UP_ADDR=10.77.0.2
UP_PORT=3001

# Namespaces left by an earlier run that was killed with SIGKILL (a trap cannot
# run then): only ours (msb-br-PID / msb-up-PID) and only when PID is gone.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^msb-(br|up)-[0-9]+$'); do
  pid=${ns##*-}
  if ! kill -0 "$pid" 2>/dev/null; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null && echo "# removed stale namespace $ns"
  fi
done

UP_PID=
DRIVER_PID=
work=$(mktemp -d)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # Fast (meson gives 0.5 s between its SIGTERM and SIGKILL): everything that
  # runs inside our namespaces (the driver, the bridges it started, the
  # upstream) is ours and is killed outright; then the namespaces go, and the
  # veth pair with them.
  [ -n "$DRIVER_PID" ] && kill -KILL "$DRIVER_PID" 2>/dev/null
  [ -n "$UP_PID" ] && kill -KILL "$UP_PID" 2>/dev/null
  for ns in "$BR_NS" "$UP_NS"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  wait 2>/dev/null
  ip netns del "$BR_NS" 2>/dev/null
  ip netns del "$UP_NS" 2>/dev/null
  if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ -s "$work/upstream.log" ]; then
    echo "# upstream (example server) log, last lines:"
    tail -n 20 "$work/upstream.log" | sed 's/^/#   /'
  fi
  rm -rf "$work"
  if ip netns list 2>/dev/null | grep -qE "^($BR_NS|$UP_NS)( |$)"; then
    echo "# WARNING: could not remove namespace $BR_NS or $UP_NS"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' INT TERM HUP

err=$(ip netns add "$BR_NS" 2>&1) || skip "cannot create a network namespace: $err"
err=$(ip netns add "$UP_NS" 2>&1) || skip "cannot create a network namespace: $err"
err=$(ip -n "$BR_NS" link add "$IFACE" type veth peer name "$IFACE" netns "$UP_NS" 2>&1) ||
  skip "cannot create a veth pair: $err"

# One table per namespace: every packet through the veth end (in or out) is
# counted and passes chain `fault`, empty while the path is healthy. The
# driver adds `drop` (black hole) or `numgen random mod 100 < 3 counter drop`
# (loss) to it and flushes it to heal.
ruleset="table inet msb {
  chain fault { }
  chain in { type filter hook input priority 0; policy accept; iifname \"$IFACE\" counter jump fault; }
  chain out { type filter hook output priority 0; policy accept; oifname \"$IFACE\" counter jump fault; }
}"
for ns in "$BR_NS" "$UP_NS"; do
  err=$(echo "$ruleset" | ip netns exec "$ns" nft -f - 2>&1) || skip "nftables does not work here: $err"
  ip -n "$ns" link set lo up || fail "cannot bring up lo in $ns"
done
# gso_max_segs 1: TCP hands the veth wire-sized segments (no 64 KiB GSO
# super-packets), so a rule sees, and 3 % loss drops, single segments as on a
# real link.
for ns in "$BR_NS" "$UP_NS"; do
  ip -n "$ns" link set "$IFACE" gso_max_segs 1 ||
    echo "# WARNING: cannot set gso_max_segs on $ns's veth: loss hits GSO super-packets"
done
ip -n "$BR_NS" addr add "$BR_ADDR/30" dev "$IFACE" &&
  ip -n "$UP_NS" addr add "$UP_ADDR/30" dev "$IFACE" &&
  ip -n "$BR_NS" link set "$IFACE" up &&
  ip -n "$UP_NS" link set "$IFACE" up || fail "cannot configure the veth pair"
echo "# namespaces $BR_NS ($BR_ADDR) <-> $UP_NS ($UP_ADDR), veth $IFACE, nftables table inet msb"

# The upstream: the example legacy server inside its namespace.
up_log=$work/upstream.log
ip netns exec "$UP_NS" "$EXAMPLE_BIN" --listen "$UP_ADDR:$UP_PORT" >"$up_log" 2>&1 &
UP_PID=$!
for _ in $(seq 100); do
  grep -qs "SSE endpoint" "$up_log" && break
  kill -0 "$UP_PID" 2>/dev/null || break
  sleep 0.1
done
grep -qs "SSE endpoint" "$up_log" || { cat "$up_log"; fail "the example server did not start in $UP_NS"; }
# The path works end to end (the veth may take a moment to get carrier).
ip netns exec "$BR_NS" timeout 10 bash -c \
  "until (exec 3<>/dev/tcp/$UP_ADDR/$UP_PORT); do sleep 0.2; done" 2>/dev/null ||
  fail "cannot reach $UP_ADDR:$UP_PORT from $BR_NS"

# The driver runs inside the bridge's namespace: the bridges it starts listen
# on that namespace's 127.0.0.1; it changes its own side's rules with nft
# directly and the upstream side's with `ip netns exec $UP_NS nft`.
start=$(date +%s)
BRIDGE_BIN="$BRIDGE_BIN" UPSTREAM_URL="http://$UP_ADDR:$UP_PORT/sse" \
  NET_BR_NS="$BR_NS" NET_UP_NS="$UP_NS" \
  ip netns exec "$BR_NS" timeout -k 5 "${NET_SUITE_TIMEOUT:-250}" \
  "$NODE" --test --test-reporter=spec "$here/network.test.mjs" &
DRIVER_PID=$!
wait "$DRIVER_PID"
rc=$?
DRIVER_PID=
[ "$rc" = 124 ] && echo "FAIL network suite: the driver did not finish within ${NET_SUITE_TIMEOUT:-250} s"
echo "# network suite: $(( $(date +%s) - start )) s, exit $rc"
exit "$rc"
