#!/usr/bin/env bash
# Profile: where the agent's CPU per exec goes (issue 20), for one binary or several in turn.
#
# For each binary: `nodeguard run --kube off --exec-events auto --interval 1h` (no scan in the
# window) while a shell on the host runs `/bin/true` nine times, then `sleep $PAUSE`, over and
# over (about 150-250 execs a second here). Over WINDOW (default 20) s:
#   - per thread of the agent: CPU (schedstat) and voluntary / involuntary context switches,
#     per exec event (the kernel's sched_process_exec count over the node, through perf stat);
#   - `perf record -g`: the top symbols (self time);
# then over 10 s `strace -c -f`: system calls per exec (strace slows the agent down: its
# own figures are not the CPU cost). Output kept in $OUT/LABEL/ (perf.data, strace-c, ...).
#
# A measurement for finding what to cut, not the cost itself: perf and strace add their own.
# bench/exec_cost.sh measures the cost (old beside new). Root only; loopback only.
#
# Usage: bench/exec_profile.sh BINARY [BINARY...]
#   WINDOW=20 PAUSE=0.05 OUT=/tmp/exec-profile bench/exec_profile.sh /tmp/old target/release/nodeguard
set -euo pipefail
WINDOW=${WINDOW:-20}
PAUSE=${PAUSE:-0.05}
OUT=${OUT:-/tmp/exec-profile}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
die() { echo "exec_profile: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (perf, strace on the agent, the exec connector)"
for tool in perf strace curl; do command -v "$tool" >/dev/null || die "$tool not found"; done
(($# > 0)) || die "usage: bench/exec_profile.sh BINARY [BINARY...]"
mkdir -p "$OUT"

AGENT="" LOOP=""
cleanup() {
  [[ -n $LOOP ]] && kill "$LOOP" 2>/dev/null
  [[ -n $AGENT ]] && kill -INT "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

threads() { # tid comm cpu_ns voluntary involuntary, one line per thread of the agent
  local t
  for t in /proc/"$AGENT"/task/*; do
    echo "$(basename "$t") $(tr ' ' _ <"$t/comm") $(cut -d' ' -f1 "$t/schedstat")" \
      "$(awk '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { print v, n }' "$t/status")"
  done | sort
}
execs_over() { # execs_over SECONDS FILE: sleeps, echoes the node's execs meanwhile
  perf stat -e sched:sched_process_exec -a -x, -o "$2" -- sleep "$1" >/dev/null 2>&1
  awk -F, '$3 == "sched:sched_process_exec" { print $1 }' "$2"
}

printf 'version: 1\n' >"$OUT/policy.yaml"
setsid sh -c "while :; do /bin/true; /bin/true; /bin/true; /bin/true; /bin/true; /bin/true; /bin/true; /bin/true; /bin/true; sleep $PAUSE; done" \
  </dev/null >/dev/null 2>&1 &
LOOP=$!
n=0
for binary in "$@"; do
  n=$((n + 1))
  dir=$OUT/$n-$(basename "$binary")
  rm -rf "$dir" && mkdir -p "$dir"
  port=$((20000 + RANDOM % 10000))
  args=(run --listen "127.0.0.1:$port" --kube off --log-format json --config "$OUT/policy.yaml"
    --exec-events auto --interval 1h --fs-interval 1h)
  readlink /proc/1/root >/dev/null 2>&1 || args+=(--host-root /)
  "$binary" "${args[@]}" 2>"$dir/agent.log" >/dev/null &
  AGENT=$!
  for _ in $(seq 240); do
    (($(grep -c '"scan complete"' "$dir/agent.log" || true) >= 1)) && break
    sleep 0.5
  done
  sleep 2
  threads >"$dir/threads-0"
  perf record -g -o "$dir/perf.data" -p "$AGENT" -- sleep "$WINDOW" >/dev/null 2>"$dir/perf-record.err" &
  perf_pid=$!
  execs=$(execs_over "$WINDOW" "$dir/perf-stat")
  wait "$perf_pid" || true
  threads >"$dir/threads-1"
  strace_execs=$(execs_over 10 "$dir/perf-stat-strace" &
    timeout -s INT 10 strace -c -f -p "$AGENT" -o "$dir/strace-c" >/dev/null 2>&1
    wait)
  kill -INT "$AGENT" 2>/dev/null
  wait "$AGENT" 2>/dev/null || true
  AGENT=""

  echo "==== $binary: $execs execs in ${WINDOW}s (perf record running) ===="
  join "$dir/threads-0" "$dir/threads-1" |
    awk -v n="$execs" '{ printf "  thread %-8s %-16s %7.1f ms  %6.1f µs/exec  voluntary %5.2f/exec  involuntary %5.2f/exec\n",
      $1, $2, ($7 - $3) / 1e6, ($7 - $3) / 1e3 / n, ($8 - $4) / n, ($9 - $5) / n }'
  echo "  top symbols (self):"
  perf report -i "$dir/perf.data" --no-children -g none --sort symbol --stdio 2>/dev/null |
    awk '/^ +[0-9.]+%/ && k < 12 { printf "    %7s %s\n", $1, $3; k++ }'
  echo "  system calls per exec (strace -c over 10 s, $strace_execs execs):"
  awk -v n="$strace_execs" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
      calls = $4; errors = (NF == 6) ? $5 : 0; name = $NF
      total += calls
      if (calls / n >= 0.05) printf "    %-14s %6.2f  (errors %5.2f)\n", name, calls / n, errors / n
    } END { printf "    %-14s %6.2f\n", "total", total / n }' "$dir/strace-c"
done
