#!/usr/bin/env bash
# Benchmark: what the opt-in writable-layer event source (`--fs-events fanotify`,
# docs/writable-layers.md) costs, beside `--fs-events off`, in one run (issue 20).
#
# One runc container (busybox-static, overlay rootfs) whose writable layer gets FILES (default
# 20,000) plain files in DIRS (default 400) directories. For each mode the release build of
# `nodeguard run --interval 1s --fs-interval 600s --kube off --exec-events off --fs-events MODE
# --fs-events-paths UPPER` (UPPER's filesystem is the node's root filesystem here, so the mark
# sees every attribute change on it, the other engineers' builds included) runs alone and the
# script prints:
#   - idle: the agent's CPU per second over IDLE seconds (default 30) with nothing changing in
#     the layer, and the events read meanwhile (host activity on the marked filesystem);
#   - per event: CHMODS (default 20,000) `chmod` calls on existing files of the layer (each
#     file once, so each its own event; the DIRS directories named, many times each), then 5 s
#     for the scans to take them: the agent's CPU over that window minus the idle rate, per
#     chmod;
#   - detection: a `chmod u+s` on one existing file deep in the layer, the time until it is in
#     /v1/report (fanotify: the next process scan; off: the re-check, 600 s away, so "not seen
#     in 10 s").
# Agent CPU from /proc/PID/stat (10 ms ticks). A measurement, never a pass/fail.
#
# Usage (root): bench/fs_events_bench.sh
#   FILES=20000 DIRS=400 IDLE=30 CHMODS=20000 NODEGUARD=target/release/nodeguard bench/fs_events_bench.sh
set -euo pipefail

FILES=${FILES:-20000}
DIRS=${DIRS:-400}
IDLE=${IDLE:-30}
CHMODS=${CHMODS:-20000}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts a runc container)"
for tool in runc busybox jq curl mount umount ss xargs; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
need_nodeguard
bench_workdir nodeguard-fsevents-bench
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

make_base_images
image_processes() { base_image_processes "$@"; }
start_container 1 "$BUSYBOX_IMG"
ROOTFS=$CONTAINER_DIR/bundle/rootfs
UPPER=$CONTAINER_DIR/upper
HOST_ARGS=()
readlink /proc/1/root >/dev/null 2>&1 || HOST_ARGS+=(--host-root /)

per_dir=$((FILES / DIRS))
echo "==== writable layer: $((per_dir * DIRS)) files in $DIRS directories ===="
(cd "$ROOTFS" &&
  awk -v n="$DIRS" 'BEGIN { for (d = 0; d < n; d++) printf "data/a%d/b%d/c%d\n", d % 10, d % 7, d }' |
  xargs mkdir -p &&
  awk -v n="$DIRS" -v m="$per_dir" 'BEGIN { for (d = 0; d < n; d++) for (f = 1; f <= m; f++)
    printf "data/a%d/b%d/c%d/f%d\n", d % 10, d % 7, d, f }' | xargs touch)
(cd "$ROOTFS" && find data -type f | head -n "$CHMODS") >"$WORK/chmod-list"
echo "  $(wc -l <"$WORK/chmod-list") files to chmod; CLK_TCK $CLK_TCK"
CLK_MS=$((1000 / CLK_TCK))

run_agent() { # MODE
  pick_port
  AGENT_LOG=$WORK/agent-$1.log
  RUST_LOG=info "$NODEGUARD" run --listen "127.0.0.1:$PORT" --interval 1s --fs-interval 600s \
    --kube off --exec-events off --fs-events "$1" --fs-events-paths "$UPPER" \
    --log-format json "${HOST_ARGS[@]}" >"$AGENT_LOG" 2>&1 &
  AGENT_PID=$!
}

wait_scans() {
  for _ in $(seq 1200); do
    kill -0 "$AGENT_PID" 2>/dev/null || { tail -20 "$AGENT_LOG" >&2; die "the agent exited"; }
    (($(scans_done) >= $1)) && return 0
    sleep 0.1
  done
  die "no $1 scans after 120 s"
}

seen_within() { # PATH TIMEOUT_S: seconds until PATH is a setuid file of the report
  local path=$1 timeout=$2 t0 now
  t0=$(date +%s%N)
  while :; do
    if curl -sf --max-time 5 "$URL/v1/report" |
      jq -e --arg p "$path" 'any(.files[]; .path == $p and .setuid)' >/dev/null; then
      awk -v d=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.2f s", d / 1e9 }'
      return 0
    fi
    now=$(date +%s%N)
    (((now - t0) / 1000000000 >= timeout)) && { echo "not seen in ${timeout} s"; return 0; }
    sleep 0.05
  done
}

declare -A IDLE_MS PER_EVENT_US SEEN
measure_mode() {
  local mode=$1
  echo "---- --fs-events $mode ----"
  run_agent "$mode"
  wait_scans 3
  local source
  source=$(curl -sf "$URL/metrics" | awk '/^nodeguard_fs_events_source\{/ && $2 == 1 { print $1 }')
  echo "  $source"
  local t0 t1 c0 c1 e0 e1
  e0=$(metric nodeguard_fs_events_total)
  t0=$(date +%s%N); c0=$(cpu_ticks)
  sleep "$IDLE"
  t1=$(date +%s%N); c1=$(cpu_ticks)
  e1=$(metric nodeguard_fs_events_total)
  local idle_rate # ms of CPU per s
  idle_rate=$(awk -v c=$(((c1 - c0) * CLK_MS)) -v t=$((t1 - t0)) 'BEGIN { printf "%.2f", c / (t / 1e9) }')
  IDLE_MS[$mode]=$idle_rate
  printf '  idle: %s ms of CPU per second (%.1f %% of a core); %s events read in %s s (host activity)\n' \
    "$idle_rate" "$(awk -v r="$idle_rate" 'BEGIN { print r / 10 }')" "$((${e1%.*} - ${e0%.*}))" "$IDLE"
  local l0 l1 d0 d1
  l0=$(metric nodeguard_fs_events_lost_total); d0=$(metric nodeguard_fs_events_dirs_listed_total)
  t0=$(date +%s%N); c0=$(cpu_ticks); e0=$(metric nodeguard_fs_events_total)
  (cd "$ROOTFS" && xargs chmod g+w <"$WORK/chmod-list")
  sleep 5
  t1=$(date +%s%N); c1=$(cpu_ticks); e1=$(metric nodeguard_fs_events_total)
  l1=$(metric nodeguard_fs_events_lost_total); d1=$(metric nodeguard_fs_events_dirs_listed_total)
  local extra
  extra=$(awk -v c=$(((c1 - c0) * CLK_MS)) -v t=$((t1 - t0)) -v r="$idle_rate" 'BEGIN { printf "%.0f", c - r * t / 1e9 }')
  PER_EVENT_US[$mode]=$(awk -v x="$extra" -v n="$CHMODS" 'BEGIN { printf "%.1f", x * 1000 / n }')
  printf '  %s chmods: %s ms of CPU beyond idle = %s us per chmod; events read %s, lost %s, directories listed %s\n' \
    "$CHMODS" "$extra" "${PER_EVENT_US[$mode]}" "$((${e1%.*} - ${e0%.*}))" \
    "$((${l1%.*} - ${l0%.*}))" "$((${d1%.*} - ${d0%.*}))"
  (cd "$ROOTFS" && xargs chmod g-w <"$WORK/chmod-list")
  sleep 3
  local existing
  existing=/$(sed -n "$((CHMODS / 2))p" "$WORK/chmod-list")
  chmod u+s "$ROOTFS$existing"
  SEEN[$mode]=$(seen_within "$existing" 10)
  printf '  chmod u+s on an existing file: in /v1/report after %s\n' "${SEEN[$mode]}"
  chmod u-s "$ROOTFS$existing"
  printf '  RSS %s KiB\n' "$(status_kib VmRSS)"
  stop_agent
}

measure_mode off
measure_mode fanotify
echo "---- summary (same run) ----"
printf '  idle CPU: off %s ms/s, fanotify %s ms/s\n' "${IDLE_MS[off]}" "${IDLE_MS[fanotify]}"
printf '  CPU per chmod in the layer: off %s us, fanotify %s us\n' "${PER_EVENT_US[off]}" "${PER_EVENT_US[fanotify]}"
printf '  chmod u+s seen: off %s, fanotify %s\n' "${SEEN[off]}" "${SEEN[fanotify]}"
