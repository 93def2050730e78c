#!/usr/bin/env bash
# The whole test suite: installs what is missing, then builds and runs every
# test through meson, three times:
#   build/       release-style build with -Werror: unit, integration, CLI +
#                promtool, short soak, real-peer interop
#   build-asan/  the same with AddressSanitizer + UndefinedBehaviorSanitizer,
#                at -O0 (buildtype debug): UBSan at -O2 compiled our Asio/Beast
#                coroutine code 3x slower (32 of CI's 56 minutes); at -O0 the
#                build takes 8 minutes and the tests about as long as at -O2
#   build-fuzz/  clang + libFuzzer: each fuzz target for FUZZ_SECONDS (30)
# Ends with one line "N passed, N failed" (meson's counts, all builds added).
# SANITIZE=0 skips the sanitizer build, FUZZ=0 the fuzz build. Extra
# arguments go to meson test (first two builds).
set -uo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh --interop || { echo "install-deps failed"; echo "0 passed, 1 failed"; exit 1; }

total_pass=0
total_fail=0
status=0

# run_suite DIR [meson setup options...]
run_suite() {
  local dir=$1
  shift
  echo "=== $dir: configure and build"
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi || { echo "$dir: meson setup failed"; total_fail=$((total_fail + 1)); status=1; return; }
  if ! ninja -C "$dir"; then
    echo "$dir: build failed"
    total_fail=$((total_fail + 1))
    status=1
    return
  fi
  echo "=== $dir: meson test"
  local log
  log=$(mktemp)
  meson test -C "$dir" --print-errorlogs "${SUITE_ARGS[@]}" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  count() { grep -E "^$1:" "$log" | tail -n1 | awk '{print $NF}'; }
  local ok xfail fail xpass timeout
  ok=$(count "Ok"); xfail=$(count "Expected Fail"); fail=$(count "Fail")
  xpass=$(count "Unexpected Pass"); timeout=$(count "Timeout")
  local p=$(( ${ok:-0} + ${xfail:-0} ))
  local f=$(( ${fail:-0} + ${xpass:-0} + ${timeout:-0} ))
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  [ "$rc" -ne 0 ] && status=1
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  rm -f "$log"
}

SUITE_ARGS=("$@")
run_suite "${BUILD_DIR:-build}" -Dwerror=true
if [ "${SANITIZE:-1}" != 0 ]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_suite build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debug
fi
if [ "${FUZZ:-1}" != 0 ]; then
  SUITE_ARGS=()
  CXX=clang++ run_suite build-fuzz -Dfuzz=true -Dtests=false -Dfuzz_seconds="${FUZZ_SECONDS:-30}" \
    -Db_sanitize=address,undefined -Db_lundef=false
fi
echo "$total_pass passed, $total_fail failed"
exit "$status"
