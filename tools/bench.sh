#!/usr/bin/env bash
# Benchmark: installs what is missing, builds (release), and runs
# mcp-bridge-bench: direct legacy SSE vs the bridge (cold and warm) at
# concurrency 1/16/64 in one run, then cold-session cost, stream-death time to
# error, RSS figures and a 64 MiB result. Extra arguments go to the tool
# (e.g. --cell-ms 1000 --concurrency 1,16).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release -Dtests=false -Dinterop=false >/dev/null
ninja -C build-release mcp-sse-bridge tools/mcp-bridge-bench >/dev/null
exec build-release/tools/mcp-bridge-bench --bridge build-release/mcp-sse-bridge "$@"
