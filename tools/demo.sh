#!/usr/bin/env bash
# Demo: installs what is missing, builds, then runs the bundled example legacy
# SSE server on 127.0.0.1:3001 and the bridge in front of it on
# 127.0.0.1:8080/mcp. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build mcp-sse-bridge examples/example-legacy-server >/dev/null

UPSTREAM_PORT=${UPSTREAM_PORT:-3001}
BRIDGE_LISTEN=${BRIDGE_LISTEN:-127.0.0.1:8080}
./build/examples/example-legacy-server --listen "127.0.0.1:$UPSTREAM_PORT" &
upstream=$!
trap 'kill $upstream 2>/dev/null; wait $upstream 2>/dev/null' EXIT
sleep 0.3
cat >&2 <<MSG
Bridge: http://$BRIDGE_LISTEN/mcp  ->  http://127.0.0.1:$UPSTREAM_PORT/sse
Try:    claude mcp add --transport http legacy-demo http://$BRIDGE_LISTEN/mcp
MSG
./build/mcp-sse-bridge --upstream "http://127.0.0.1:$UPSTREAM_PORT/sse" --listen "$BRIDGE_LISTEN" "$@"
