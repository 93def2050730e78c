#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with -Werror, runs
# unit, integration and real-peer interop tests (meson test), and ends with
# one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh --interop || { echo "install-deps failed"; echo "0 passed, 1 failed"; exit 1; }

BUILD=${BUILD_DIR:-build}
if [ -d "$BUILD" ]; then
  meson setup --reconfigure "$BUILD" -Dwerror=true >/dev/null || exit 1
else
  meson setup "$BUILD" -Dwerror=true >/dev/null || exit 1
fi
if ! ninja -C "$BUILD"; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

log=$(mktemp)
meson test -C "$BUILD" --print-errorlogs "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
count() { grep -E "^$1:" "$log" | tail -n1 | awk '{print $NF}'; }
ok=$(count "Ok"); xfail=$(count "Expected Fail"); fail=$(count "Fail")
xpass=$(count "Unexpected Pass"); timeout=$(count "Timeout")
passed=$(( ${ok:-0} + ${xfail:-0} ))
failed=$(( ${fail:-0} + ${xpass:-0} + ${timeout:-0} ))
rm -f "$log"
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed passed, $failed failed"
exit "$rc"
