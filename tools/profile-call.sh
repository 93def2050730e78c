#!/usr/bin/env bash
# Repeatable per-call costs of the bridge (#12), for steering on a busy
# machine where timed figures are noisy. Both run build-release/tools/mcp-bridge-cpu
# (c10, equal offered load) with the bridge wrapped:
#
#   tools/profile-call.sh instructions [BRIDGE]   valgrind --tool=callgrind: two runs
#       (3 s and 6 s windows at 100 calls/s); instructions per warm call = the
#       difference of the totals / the difference of the calls (start-up,
#       warm-up and pool filling cancel out). Prints the top functions per call.
#   tools/profile-call.sh syscalls [BRIDGE] [RATE]   strace -f -c attached to the
#       bridge for 3 s in the middle of its cell (default 1000 calls/s):
#       syscalls per call by name, with the failed ones (EAGAIN).
#   tools/profile-call.sh wakeups [BRIDGE] [RATE]   the bridge's context switches
#       (all threads, /proc) per call over 3 s of its cell (default 4000 calls/s):
#       how often it blocks and is woken, without strace slowing it down.
#   tools/profile-call.sh syscount [BRIDGE] [RATE]   kernel tracepoints counted by
#       `perf stat` (no ptrace: the process runs at full speed, unlike strace,
#       whose slowdown changes which reads find data) for 3 s of nginx's cell
#       and 3 s of the bridge's (default 4000 calls/s): syscalls per call of
#       each, by name, with the reads that returned EAGAIN and the epoll_waits
#       that returned nothing.
#   tools/profile-call.sh kernel [BRIDGE] [RATE]   `perf record -e cpu-clock`
#       (timer sampling: this VM has no hardware counters) of nginx's worker
#       and of the bridge for 3 s of their cells (default 4000 calls/s): where
#       each one's CPU goes, as shares of its samples: user space; the kernel's
#       interrupt-enable points (finish_task_switch, spin_unlock_irqrestore:
#       samples taken while interrupts were off land there, so this is the
#       cost of context switches and wake-ups); the TCP/IP stack; syscall
#       entry, epoll and file lookup; the rest of the kernel. Sampling slows
#       both, so read shares, not absolute times.
#
# BRIDGE defaults to build-release/mcp-sse-bridge. Output files stay in a temp
# dir (printed). Needs valgrind / strace / perf; every child is bounded by timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-}
bridge=$(realpath "${2:-build-release/mcp-sse-bridge}")
cpu=$root/build-release/tools/mcp-bridge-cpu
[ -x "$cpu" ] || { echo "profile-call: build $cpu first (tools/bench-core.sh builds it)" >&2; exit 2; }
out=$(mktemp -d /tmp/msb-profile.XXXXXX)
# find_pid PATTERN [GATE]: the newest process matching PATTERN, once the
# cell's output matches GATE (when given); polled for up to 30 s.
find_pid() {
  local p
  for _ in $(seq 1 300); do
    if [ -z "${2:-}" ] || grep -Eq "$2" "$out/cell.txt" 2>/dev/null; then
      p=$(pgrep -n -f "$1") && { echo "$p"; return 0; }
    fi
    sleep 0.1
  done
  return 1
}
# each_proxy FN: runs one c10 cell (nginx's first, then the bridge's) at
# $rate and calls `FN nginx PID` and `FN bridge PID` 2.5 s into each.
each_proxy() {
  local fn=$1 pid tool
  timeout 120 "$cpu" --bridge "$bridge" --rounds 1 --concurrency 10 --rate "$rate" --warmup-ms 1000 \
    --window-ms 6000 >"$out/cell.txt" 2>&1 &
  tool=$!
  # nginx's cell comes first: its worker; then the bridge, once nginx's row is out
  pid=$(find_pid "nginx: worker") || { echo "profile-call: nginx did not start" >&2; wait $tool; exit 1; }
  sleep 2.5
  "$fn" nginx "$pid"
  pid=$(find_pid "^$bridge --upstream" "^1 +10 +nginx") ||
    { echo "profile-call: the bridge did not start" >&2; wait $tool; exit 1; }
  sleep 2.5
  "$fn" bridge "$pid"
  wait $tool
}
case "$mode" in
  instructions)
    cat >"$out/wrap.sh" <<W
#!/bin/sh
exec valgrind --tool=callgrind --log-file=$out/vg.%p.log --callgrind-out-file=$out/\${CG_TAG}.%p.out "$bridge" "\$@"
W
    chmod +x "$out/wrap.sh"
    for w in 3000 6000; do
      CG_TAG=w$w timeout 180 "$cpu" --bridge "$out/wrap.sh" --rounds 1 --concurrency 10 --rate 100 \
        --warmup-ms 1500 --window-ms $w >"$out/w$w.txt" 2>&1
    done
    python3 - "$out" <<'PY'
import glob, re, subprocess, sys
out = sys.argv[1]
def totals(w):
    f = glob.glob(f"{out}/w{w}.*.out")[0]
    ir = next(int(l.split()[1]) for l in open(f) if l.startswith(("summary:", "totals:")))
    # a cell's row ends with: calls errors reconn moves
    calls = next(int(l.split()[-4]) for l in open(f"{out}/w{w}.txt") if len(l.split()) > 7 and l.split()[2] == "bridge")
    prof = {}
    for line in subprocess.run(["callgrind_annotate", "--threshold=100", f], capture_output=True, text=True).stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            k = re.sub(r"\[.*\]$", "", m.group(2)).strip()
            prof[k] = prof.get(k, 0) + int(m.group(1).replace(",", ""))
    return ir, calls, prof
a, ca, pa = totals(3000)
b, cb, pb = totals(6000)
n = cb - ca
print(f"instructions per warm call: {(b - a) / n:.0f}  (totals {a} / {b}, window calls {ca} / {cb})")
print("top functions (self), instructions per call:")
for v, k in sorted((((pb.get(k, 0) - pa.get(k, 0)) / n, k) for k in set(pa) | set(pb)), reverse=True)[:25]:
    print(f"  {v:8.0f}  {k[:140]}")
PY
    ;;
  syscalls|wakeups)
    rate=${3:-1000}
    [ "$mode" = wakeups ] && rate=${3:-4000}
    timeout 120 "$cpu" --bridge "$bridge" --rounds 1 --concurrency 10 --rate "$rate" --warmup-ms 1000 \
      --window-ms 6000 >"$out/cell.txt" 2>&1 &
    tool=$!
    pid=""
    for _ in $(seq 1 300); do  # the bridge cell starts after nginx's row is printed
      if grep -q "nginx" "$out/cell.txt" 2>/dev/null && grep -Eq "^1 +10 +nginx" "$out/cell.txt"; then
        pid=$(pgrep -n -f "^$bridge --upstream") && break
      fi
      sleep 0.1
    done
    [ -n "$pid" ] || { echo "profile-call: the bridge did not start" >&2; wait $tool; exit 1; }
    sleep 2.5
    if [ "$mode" = wakeups ]; then
      ctx() { cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v, n}'; }
      read -r v0 n0 <<<"$(ctx)"
      sleep 3
      read -r v1 n1 <<<"$(ctx)"
      wait $tool
      r=$(awk '$3=="bridge"{print $4}' "$out/cell.txt")
      python3 -c "n=$r*3; print(f'context switches per warm call ($r calls/s, ~{n:.0f} calls in 3 s): voluntary {($v1-$v0)/n:.2f}, involuntary {($n1-$n0)/n:.2f}')"
      echo "(files in $out)"
      exit 0
    fi
    timeout -s INT 3 strace -f -c -p "$pid" -o "$out/strace.txt" >/dev/null 2>&1
    wait $tool
    r=$(awk '$3=="bridge"{print $4}' "$out/cell.txt")
    n=$(python3 -c "print($r*3)")
    echo "syscalls per warm call ($r calls/s, ~$n calls in the 3 s traced):"
    awk -v n="$n" 'NR>2 && $NF!="total" && $4 ~ /^[0-9]+$/ {e=($5 ~ /^[0-9]+$/ ? $5 : 0); printf "  %-16s %6.2f (%.2f failed)\n", $NF, $4/n, e/n}' \
      "$out/strace.txt" | sort -k2 -nr
    awk -v n="$n" '$NF=="total"{printf "  total            %6.2f\n", $4/n}' "$out/strace.txt"
    ;;
  syscount)
    rate=${3:-4000}
    events=(-e syscalls:sys_enter_recvfrom -e syscalls:sys_enter_recvmsg -e syscalls:sys_enter_sendto
      -e syscalls:sys_enter_writev -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_epoll_ctl
      -e syscalls:sys_enter_getsockopt -e syscalls:sys_enter_setsockopt
      -e syscalls:sys_exit_recvfrom --filter 'ret == -11' -e syscalls:sys_exit_recvmsg --filter 'ret == -11'
      -e syscalls:sys_exit_epoll_wait --filter 'ret == 0' -e raw_syscalls:sys_enter)
    count() {  # name pid
      timeout 10 perf stat -x, "${events[@]}" -p "$2" -o "$out/$1.perf" -- sleep 3 >/dev/null 2>&1
    }
    each_proxy count
    python3 - "$out" <<'PY'
import sys
out = sys.argv[1]
rates = {}
for line in open(f"{out}/cell.txt"):
    f = line.split()
    if len(f) > 3 and f[0] == "1" and f[2] in ("nginx", "bridge"):
        rates[f[2]] = float(f[3])
names = {"syscalls:sys_exit_recvfrom": "recvfrom EAGAIN", "syscalls:sys_exit_recvmsg": "recvmsg EAGAIN",
         "syscalls:sys_exit_epoll_wait": "epoll_wait empty",
         "raw_syscalls:sys_enter": "total"}
for who in ("nginx", "bridge"):
    n = rates.get(who, 0) * 3
    if not n:
        print(f"{who}: no calls counted"); continue
    print(f"{who}: syscalls per call ({rates[who]:.0f} calls/s, ~{n:.0f} calls in the 3 s counted)")
    for line in open(f"{out}/{who}.perf"):
        f = line.strip().split(",")
        if len(f) < 3 or not f[0].replace(".", "").isdigit():
            continue
        ev = f[2]
        label = names.get(ev, ev.replace("syscalls:sys_enter_", ""))
        v = float(f[0]) / n
        if v >= 0.005 or label == "total":
            print(f"  {label:18s} {v:6.2f}")
PY
    ;;
  kernel)
    rate=${3:-4000}
    sample() {  # name pid
      timeout 15 perf record -q -F 10000 -e cpu-clock -p "$2" -o "$out/$1.data" -- sleep 3 >/dev/null 2>&1
      perf report -i "$out/$1.data" --no-children --sort sym --stdio 2>/dev/null >"$out/$1.txt"
    }
    each_proxy sample
    python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def category(kind, sym):
    if kind == ".":
        return "user space"
    if re.match(r"(finish_task_switch|_raw_spin_unlock_irq|__schedule|schedule|psi_)", sym):
        return "kernel: interrupt-enable points (switches, wake-ups)"
    if re.match(r"(tcp|__tcp|ip_|__ip|inet|__inet|sk_|__sk|skb|__skb|kfree_skb|net_|__net|__dev_|dev_|"
                r"loopback|bbr|sock_|__sock|lock_sock|release_sock|__release_sock|validate_xmit|"
                r"process_backlog|handle_softirqs|__local_bh|do_softirq|raw_local_deliver|ipv4_|nf_|"
                r"__napi|napi_|__copy_skb|copy_|_copy_|simple_copy|__check_object|check_heap)", sym):
        return "kernel: TCP/IP stack and copies"
    if re.match(r"(do_syscall|entry_|syscall|__x64_sys|__sys_|fdget|__fget|fput|ep_|do_epoll|__do_sys|"
                r"__fdget|sockfd_lookup|__secure_computing|syscall_exit|exit_to_user)", sym):
        return "kernel: syscall entry, epoll, fd lookup"
    return "kernel: other"
for who in ("nginx", "bridge"):
    cats, total = {}, 0.0
    try:
        lines = open(f"{out}/{who}.txt").read().splitlines()
    except OSError:
        print(f"{who}: no profile"); continue
    for line in lines:
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
        if m:
            v = float(m.group(1)); total += v
            c = category(m.group(2), m.group(3))
            cats[c] = cats.get(c, 0) + v
    print(f"{who}: share of its CPU samples")
    for c, v in sorted(cats.items(), key=lambda x: -x[1]):
        print(f"  {v:5.1f} %  {c}")
PY
    ;;
  *) sed -n '2,33p' "$0"; exit 2 ;;
esac
echo "(files in $out)"
