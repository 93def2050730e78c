#!/usr/bin/env bash
# run.sh FUZZER SEEDS_DIR SECONDS: runs a libFuzzer target for a bounded time
# on the committed seeds, writing new inputs to a temporary corpus (the seeds
# stay untouched). A crash fails the test and prints the input, to be kept in
# SEEDS_DIR as a regression input once fixed.
set -uo pipefail
fuzzer=$1 seeds=$2 secs=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
"$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "$seeds"
rc=$?
if [ $rc -ne 0 ]; then
  for f in "$work"/crash-* "$work"/timeout-* "$work"/leak-* "$work"/oom-*; do
    [ -e "$f" ] || continue
    echo "finding: $(basename "$f") (base64 follows)"
    base64 "$f"
  done
fi
exit $rc
