#!/usr/bin/env bash
# Benchmark: agent CPU per exec event (issue 20), the binary under test beside an older one, in
# one run, at two node sizes, plus the whole node's steady cost.
#
# For each node size — CONTAINERS_LIST (default "0 40": the node as it is, about 100-200
# processes, then 40 loaded runc containers as in bench/daemon_bench.sh, about 1,000) — and each
# binary (BASELINE, then NODEGUARD), a shell runs `true` about RATE (100) times a second (on the
# host without containers, else in the first container, as its own image's busybox) while the
# agent runs `--kube off --interval 1h` (no scan in the window), twice:
#
#   --exec-events off   the agent's CPU over WINDOW (default 30) s: what it costs anyway;
#   --exec-events auto  the agent's CPU over the same window, and the exec events meanwhile
#                       (the kernel's sched_process_exec count, through perf stat);
#
#   µs per exec event = (CPU auto - CPU off) / exec events.
#
# CPU is the agent's cgroup's cpuacct.usage (nanoseconds, every thread, exited ones included):
# the agent is started in a cgroup of its own under the cpuacct hierarchy. On a machine without
# that hierarchy, utime+stime from /proc/PID/stat (10 ms ticks: the figure is coarse).
#
# Then the whole node (the largest size): `--exec-events auto --interval 10s` with the same
# exec loop, over STEADY_WINDOW (default 60) s after two scans: % of a core, RSS median and peak.
#
# Targets (issue 20): <= 25 µs per exec event at both sizes; whole node <= 0.7 % of a core,
# RSS <= 25 MiB. A measurement, not a test: MISS is reported, exit 0 unless STRICT=1.
# Other load on the machine (other execs too: they are exec events as well) skews both binaries
# alike; the load average is printed. Everything started is torn down at exit. Loopback only.
#
# Usage (root):
#   BASELINE=/tmp/nodeguard-old bench/exec_cost.sh
#   BASELINE=/tmp/nodeguard-old NODEGUARD=target/release/nodeguard WINDOW=60 bench/exec_cost.sh
set -euo pipefail

CONTAINERS_LIST=${CONTAINERS_LIST:-"0 40"}
EXTRA_PER_CONTAINER=${EXTRA_PER_CONTAINER:-22}
WINDOW=${WINDOW:-30}
STEADY_WINDOW=${STEADY_WINDOW:-60}
RATE=${RATE:-100}
STRICT=${STRICT:-0}
BASELINE=${BASELINE:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts runc containers and cgroups)"
for tool in runc busybox jq curl mount umount ss perf; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install runc busybox-static jq curl iproute2 linux-perf)"
done
[[ -n $BASELINE ]] || die "BASELINE=/path/to/an/older/nodeguard is needed (the old way, run beside)"
[[ -x $BASELINE ]] || die "no binary at BASELINE=$BASELINE"
need_nodeguard

bench_workdir nodeguard-exec-cost
CPU_CG=""
if [[ -w /sys/fs/cgroup/cpuacct/cgroup.procs ]]; then
  CPU_CG=/sys/fs/cgroup/cpuacct/nodeguard-exec-cost-$$
  mkdir "$CPU_CG"
fi
LOOP_PID=""
bench_cleanup_hook() {
  [[ -n $LOOP_PID ]] && kill "$LOOP_PID" 2>/dev/null
  stop_agent
  [[ -n $CPU_CG ]] && rmdir "$CPU_CG" 2>/dev/null
  return 0
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

make_base_images
ln "$BUSYBOX_IMG/bin/busybox" "$BUSYBOX_IMG/bin/true"
IMAGES=("$BUSYBOX_IMG" "$DEBIAN_IMG")
image_processes() { base_image_processes "$@"; }
POLICY=$WORK/policy.yaml
printf 'version: 1\n' >"$POLICY"

# ---------------------------------------------------------------------------------------------

cpu_ns() { # the agent's CPU so far, in nanoseconds
  if [[ -n $CPU_CG ]]; then cat "$CPU_CG/cpuacct.usage"; else echo $(($(cpu_ticks) * 1000000000 / CLK_TCK)); fi
}

start_agent() { # start_agent BINARY LABEL ARGS...: sets URL, AGENT_LOG, AGENT_PID; waits for 2 scans
  local binary=$1 label=$2
  shift 2
  pick_port
  AGENT_LOG=$WORK/agent-$label.log
  local args=(run --listen "127.0.0.1:$PORT" --kube off --log-format json --config "$POLICY" "$@")
  readlink /proc/1/root >/dev/null 2>&1 || args+=(--host-root /)
  if [[ -n $CPU_CG ]]; then
    # The shell joins the cgroup, then becomes the agent: every thread it starts is counted.
    sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' sh "$CPU_CG" "$binary" "${args[@]}" \
      2>"$AGENT_LOG" >/dev/null &
  else
    "$binary" "${args[@]}" 2>"$AGENT_LOG" >/dev/null &
  fi
  AGENT_PID=$!
  for _ in $(seq 600); do
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$AGENT_LOG" >&2; die "the agent exited"; }
    (($(scans_done) >= 2)) && return 0
    sleep 0.5
  done
  die "no 2 scans within 300 s"
}

# The exec loop: RATE execs of `true` a second, in batches of ten (nine `true`, one `sleep`).
LOOP_SCRIPT="while :; do \$TRUE; \$TRUE; \$TRUE; \$TRUE; \$TRUE; \$TRUE; \$TRUE; \$TRUE; \$TRUE; sleep $(awk -v r="$RATE" 'BEGIN { printf "%.3f", 10 / r }'); done"
start_loop() { # start_loop CONTAINER_ID-or-empty
  if [[ -z $1 ]]; then
    TRUE=/bin/true setsid sh -c "$LOOP_SCRIPT" </dev/null >/dev/null 2>&1 &
    LOOP_PID=$!
  else
    runc --root "$RUNC_ROOT" exec -d --pid-file "$WORK/loop.pid" "$1" /bin/sh -c "TRUE=/bin/true; $LOOP_SCRIPT" \
      </dev/null >/dev/null 2>&1 || die "the exec loop did not start in the container"
    LOOP_PID=$(cat "$WORK/loop.pid")
  fi
}
stop_loop() { kill "$LOOP_PID" 2>/dev/null || true; LOOP_PID=""; }

# Exec events in the window: the kernel's own count of execs on the node (the
# sched_process_exec tracepoint, through perf), which is what the exec event source receives.
# The agent's nodeguard_exec_events_total is not used: the published state, and with it the
# metric, is refreshed by scans and merges only, and with --interval 1h and execs that raise
# nothing new there are none in the window.
exec_window() { # exec_window SECONDS: sleeps that long, echoes the execs on the node meanwhile
  perf stat -e sched:sched_process_exec -a -x, -o "$WORK/perf-stat" -- sleep "$1" >/dev/null 2>&1 ||
    die "perf stat -e sched:sched_process_exec failed (apt-get install linux-perf; needs root)"
  awk -F, '$3 == "sched:sched_process_exec" { print $1 }' "$WORK/perf-stat"
}

measure() { # measure BINARY LABEL MODE: echoes "cpu_ns events" over WINDOW
  local c0 c1 events
  start_agent "$1" "$2-$3" --exec-events "$3" --interval 1h --fs-interval 1h
  sleep 2
  c0=$(cpu_ns)
  events=$(exec_window "$WINDOW")
  c1=$(cpu_ns)
  stop_agent
  echo "$((c1 - c0)) ${events:-0}"
}

per_exec() { # per_exec BINARY LABEL: echoes "us_per_exec events cpu_off_ms cpu_auto_ms"
  local off auto
  read -r off _ <<<"$(measure "$1" "$2" off)"
  read -r auto events <<<"$(measure "$1" "$2" auto)"
  awk -v off="$off" -v auto="$auto" -v n="$events" \
    'BEGIN { if (n > 0) printf "%.1f", (auto - off) / n / 1000; else printf "n/a"; printf " %d %.0f %.0f\n", n, off / 1e6, auto / 1e6 }'
}

steady() { # steady BINARY LABEL: echoes "cpu_pct rss_median_mib hwm_mib"
  local c0 c1 t0 t1
  start_agent "$1" "$2-steady" --exec-events auto --interval 10s
  sleep 12
  : >"$WORK/rss"
  c0=$(cpu_ns); t0=$(date +%s%N)
  for ((s = 0; s < STEADY_WINDOW; s++)); do sleep 1; status_kib VmRSS >>"$WORK/rss"; done
  c1=$(cpu_ns); t1=$(date +%s%N)
  echo "$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f", 100 * (b - a) / (t1 - t0) }') \
$(sort -n "$WORK/rss" | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] / 1024 }') \
$(mib "$(status_kib VmHWM)")"
  stop_agent
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------------------------

declare -a ROWS
started=0
for size in $CONTAINERS_LIST; do
  echo "starting containers up to $size ($((EXTRA_PER_CONTAINER + 3)) processes each)"
  for ((n = started; n < size; n++)); do
    start_loaded_container "$n" "${IMAGES[$((n % 2))]}"
    [[ $n -eq 0 ]] && FIRST_CID=$CONTAINER_ID
  done
  ((size > started)) && started=$size
  sleep 2
  procs=$(ls /proc | grep -c '^[0-9]')
  where=host; ((started > 0)) && where="container"
  echo "== $procs processes, $started containers; exec loop on the $where =="
  if ((started > 0)); then start_loop "$FIRST_CID"; else start_loop ""; fi
  load0=$(cut -d' ' -f1 /proc/loadavg)
  old=$(per_exec "$BASELINE" "old-$size")
  new=$(per_exec "$NODEGUARD" "new-$size")
  stop_loop
  ROWS+=("$procs|$started|$old|$new|$load0-$(cut -d' ' -f1 /proc/loadavg)")
done

echo "== whole node: $(ls /proc | grep -c '^[0-9]') processes, $started containers, interval 10s =="
if ((started > 0)); then start_loop "$FIRST_CID"; else start_loop ""; fi
old_steady=$(steady "$BASELINE" old)
new_steady=$(steady "$NODEGUARD" new)
stop_loop

misses=0
check() { if awk "BEGIN { exit !($1) }"; then echo ok; else misses=$((misses + 1)); echo MISS; fi; }

echo
echo "==== agent CPU per exec event: old ($BASELINE) beside new ($NODEGUARD) ===="
echo "CPU: $([[ -n $CPU_CG ]] && echo "cpuacct.usage of the agent's own cgroup" || echo "utime+stime ticks (coarse)"); window ${WINDOW}s each, interval 1h"
printf '%-24s %-30s %-30s %s\n' "node" "old µs/exec (events; off/auto ms)" "new µs/exec (events; off/auto ms)" "target <= 25 µs"
for row in "${ROWS[@]}"; do
  IFS='|' read -r procs ctrs old new load <<<"$row"
  read -r o_us o_n o_off o_auto <<<"$old"
  read -r n_us n_n n_off n_auto <<<"$new"
  if [[ $n_us == n/a ]]; then verdict=MISS; misses=$((misses + 1)); else verdict=$(check "$n_us <= 25"); fi
  printf '%-24s %-30s %-30s %s\n' "$procs procs, $ctrs ctrs" "$o_us ($o_n; $o_off/$o_auto)" \
    "$n_us ($n_n; $n_off/$n_auto)" "$verdict (load $load)"
done
read -r o_cpu o_rss o_hwm <<<"$old_steady"
read -r n_cpu n_rss n_hwm <<<"$new_steady"
echo "whole node, exec loop running, interval 10s, ${STEADY_WINDOW}s:"
printf '%-24s %-30s %-30s %s\n' "  % of a core" "$o_cpu" "$n_cpu" "<= 0.7 $(check "$n_cpu <= 0.7")"
printf '%-24s %-30s %-30s %s\n' "  RSS median / peak MiB" "$o_rss / $o_hwm" "$n_rss / $n_hwm" "<= 25 $(check "$n_rss <= 25")"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
if [[ $STRICT == 1 && $misses -gt 0 ]]; then exit 1; fi
