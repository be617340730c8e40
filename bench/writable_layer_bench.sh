#!/usr/bin/env bash
# Benchmark: what a large writable layer costs each process scan, the old way (walked in full,
# `--fs-incremental off`) beside the new (directories kept between scans, only changed ones
# listed: docs/writable-layers.md) — issue 20.
#
# One runc container (busybox-static, overlay rootfs, kubepods cgroup path like containerd's)
# whose writable layer gets FILES (default 200,000) plain files in DIRS (default 2,000)
# directories, three levels deep. For each mode the release build of
# `nodeguard run --interval 1s --fs-interval FS_INTERVAL --kube off --exec-events off` runs
# alone and the script prints, over SCANS (default 20) warm process scans with nothing
# changing (first, the walk alone: the fscan example's `--writable` runs, i.e. what a process
# scan does to this container's layers, CPU time by getrusage, old and new way; then the agent):
#   - CPU per process scan: the agent's `cpu_ms` of each "scan complete" line (the whole
#     agent's CPU during the scan, its walker threads included), median and mean;
#   - the agent's CPU over the same window from /proc/PID/stat, per scan;
#   - the writable-layer walk of each scan (`filesystems_us` of the debug "scan phases" line).
# Then, with the new way only: the time from creating a setuid file deep in the layer to its
# appearance in /v1/report (target: within one process interval), and from a `chmod u+s` on an
# existing file (only its ctime changes) to its appearance (target: within the filesystem
# interval; `nodeguard_fs_recheck_age_seconds` printed beside).
#
# Target (issue 20): <= 10 ms of CPU per process scan for the 200,000-file container when
# nothing changed (the old way: ~755 ms). A measurement: prints MISS and exits 0 unless
# STRICT=1. Everything it starts is torn down at exit. Loopback only.
#
# Measured (2026-12-07, 2 cores at load average ~16; the walk alone, fscan example built
# release, 200,000 files in 2,082 directories, 10 passes): old way 1,128 ms of CPU per pass,
# new way 7.2 ms. Whole run, FILES=20000 DIRS=400 SCANS=5 FS_INTERVAL=20, debug agent:
# walk alone 131 ms -> 2.1 ms CPU per pass; agent cpu_ms per process scan 186 -> 64 ms (the
# rest is the debug build's process scan of a node with other engineers' containers:
# the target compares the container's share, so use a release agent on a quiet node);
# new setuid file seen after 0.93 s (interval 1 s), chmod u+s after 12.4 s (fs interval 20 s).
#
# Usage (root): bench/writable_layer_bench.sh
#   FILES=20000 DIRS=400 SCANS=10 bench/writable_layer_bench.sh
#   NODEGUARD=target/debug/nodeguard FSCAN=target/release/examples/fscan bench/writable_layer_bench.sh
set -euo pipefail

FILES=${FILES:-200000}
DIRS=${DIRS:-2000}
SCANS=${SCANS:-20}
FS_INTERVAL=${FS_INTERVAL:-45}
STRICT=${STRICT:-0}
TARGET_MS=10
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts a runc container)"
for tool in runc busybox jq curl mount umount ss xargs; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
((SCANS * 1 + 10 < FS_INTERVAL)) || die "FS_INTERVAL ($FS_INTERVAL s) must leave SCANS ($SCANS) process scans without a filesystem scan"

need_nodeguard
if [[ -z ${FSCAN:-} ]]; then
  echo "building: cargo build --release -p nodeguard-fscan --example fscan"
  (cd "$REPO" && cargo build --release -q -p nodeguard-fscan --example fscan)
  FSCAN=$REPO/target/release/examples/fscan
fi
bench_workdir nodeguard-writable-bench
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
echo "==== writable layer: $((per_dir * DIRS)) files in $DIRS directories (through the container's overlay) ===="
t0=$(date +%s%N)
# Paths made by awk, created by a few xargs runs (a fork per directory is slow on a busy node).
(cd "$ROOTFS" &&
  awk -v n="$DIRS" 'BEGIN { for (d = 0; d < n; d++) printf "data/a%d/b%d/c%d\n", d % 10, d % 7, d }' |
  xargs mkdir -p &&
  awk -v n="$DIRS" -v m="$per_dir" 'BEGIN { for (d = 0; d < n; d++) for (f = 1; f <= m; f++)
    printf "data/a%d/b%d/c%d/f%d\n", d % 10, d % 7, d, f }' | xargs touch)
echo "  created in $((($(date +%s%N) - t0) / 1000000)) ms; upper holds $(find "$UPPER" -xdev | wc -l) entries, $(find "$UPPER" -xdev -type d | wc -l) directories"
CLK_MS=$((1000 / CLK_TCK))

stats() { # reads numbers, prints "median M, mean A"
  sort -n | awk '{ v[NR] = $1; s += $1 } END { if (NR == 0) { print "none"; exit }
    printf "median %.2f, mean %.2f (n=%d)", v[int((NR + 1) / 2)], s / NR, NR }'
}

echo "---- the walk alone (fscan example, $SCANS process-scan passes after a full scan) ----"
for mode in off on; do
  "$FSCAN" --writable --incremental "$mode" --repeat $((SCANS + 1)) --quiet --threads 2 \
    "overlay:c=$BUSYBOX_IMG+$UPPER" >"$WORK/fscan-$mode.json"
  printf '  --fs-incremental %-3s: CPU per pass %s ms; wall %s ms; directories listed per pass %s\n' "$mode" \
    "$(jq -r '.runs[1:][].cpu_ms' "$WORK/fscan-$mode.json" | stats)" \
    "$(jq -r '.runs[1:][].elapsed_ms' "$WORK/fscan-$mode.json" | stats)" \
    "$(jq -r '.runs[1:][].stats.dirs_walked' "$WORK/fscan-$mode.json" | stats)"
done

# run_agent MODE: starts the agent with --fs-incremental MODE (AGENT_PID, AGENT_LOG, URL).
run_agent() {
  pick_port
  AGENT_LOG=$WORK/agent-$1.log
  RUST_LOG=info,nodeguard_scan=debug "$NODEGUARD" run --listen "127.0.0.1:$PORT" --interval 1s \
    --fs-interval "${FS_INTERVAL}s" --kube off --exec-events off --fs-incremental "$1" \
    --log-format json "${HOST_ARGS[@]}" >"$AGENT_LOG" 2>&1 &
  AGENT_PID=$!
}

# wait_scans N: until N scans completed.
wait_scans() {
  for _ in $(seq 1200); do
    kill -0 "$AGENT_PID" 2>/dev/null || { tail -20 "$AGENT_LOG" >&2; die "the agent exited"; }
    (($(scans_done) >= $1)) && return 0
    sleep 0.1
  done
  die "no $1 scans after 120 s"
}

# process_scan_lines FROM: the "scan complete" lines of process scans after the FROM-th scan.
process_scan_lines() {
  grep '"message":"scan complete"' "$AGENT_LOG" | tail -n +"$(($1 + 1))" |
    jq -c 'select(.scope == "processes")'
}

declare -A MEDIAN_CPU
measure_mode() {
  local mode=$1
  echo "---- --fs-incremental $mode ----"
  run_agent "$mode"
  # Warm-up: the first scan (processes and filesystems, cold caches) and two process scans.
  wait_scans 3
  local from ticks0 ticks1 done_from
  from=$(scans_done)
  ticks0=$(cpu_ticks)
  wait_scans $((from + SCANS))
  ticks1=$(cpu_ticks)
  done_from=$(($(scans_done) - from))
  local lines cpu walk
  lines=$(process_scan_lines "$from")
  cpu=$(jq -r '.cpu_ms // empty' <<<"$lines" | stats)
  walk=$(grep '"message":"scan phases"' "$AGENT_LOG" | tail -n "$done_from" |
    jq -r '.filesystems_us // empty' | awk '{ print $1 / 1000 }' | stats)
  MEDIAN_CPU[$mode]=$(jq -r '.cpu_ms // empty' <<<"$lines" | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : -1) }')
  printf '  CPU per process scan (cpu_ms): %s ms\n' "$cpu"
  printf '  agent CPU over the window: %d ms for %d scans = %.1f ms per scan\n' \
    $(((ticks1 - ticks0) * CLK_MS)) "$done_from" "$(awk -v t=$(((ticks1 - ticks0) * CLK_MS)) -v n="$done_from" 'BEGIN { print t / n }')"
  printf '  writable-layer walk per scan (filesystems_us): %s ms\n' "$walk"
  if [[ $mode == on ]]; then
    detect_times
  fi
  stop_agent
}

# The time from a change to the report showing it, polled every 50 ms.
seen_within() { # PATH TIMEOUT_S: prints the seconds until PATH is a setuid file of the report
  local path=$1 timeout=$2 t0 now
  t0=$(date +%s%N)
  while :; do
    if curl -sf --max-time 5 "$URL/v1/report" |
      jq -e --arg id "$CONTAINER_ID" --arg p "$path" \
        'any(.files[]; .container_id == $id and .path == $p and .setuid)' >/dev/null; then
      awk -v d=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.2f", d / 1e9 }'
      return 0
    fi
    now=$(date +%s%N)
    (((now - t0) / 1000000000 > timeout)) && { echo "not seen in ${timeout}s"; return 0; }
    sleep 0.05
  done
}

detect_times() {
  local d1=$((DIRS - 7)) d2=$((DIRS / 2 + 5))
  local new=/data/a$((d1 % 10))/b$((d1 % 7))/c$d1/planted-suid
  local existing=/data/a$((d2 % 10))/b$((d2 % 7))/c$d2/f7
  printf '#!/bin/sh\nid\n' >"$ROOTFS$new"
  chmod 4755 "$ROOTFS$new"
  printf '  new setuid file deep in the layer: in /v1/report after %s s (process interval 1 s)\n' \
    "$(seen_within "$new" 30)"
  [[ -f $ROOTFS$existing ]] || existing=$(cd "$ROOTFS" && find data -type f -name f7 | head -1 | sed 's|^|/|')
  chmod u+s "$ROOTFS$existing"
  printf '  chmod u+s on an existing file: in /v1/report after %s s (filesystem interval %s s)\n' \
    "$(seen_within "$existing" $((FS_INTERVAL * 3)))" "$FS_INTERVAL"
  printf '  nodeguard_fs_recheck_age_seconds %s\n' "$(metric nodeguard_fs_recheck_age_seconds)"
  rm -f "$ROOTFS$new"
  chmod u-s "$ROOTFS$existing"
}

measure_mode off
measure_mode on
echo "---- summary ----"
printf '  median CPU per process scan: old way %s ms, new way %s ms (target <= %s ms)\n' \
  "${MEDIAN_CPU[off]}" "${MEDIAN_CPU[on]}" "$TARGET_MS"
verdict=$(awk -v v="${MEDIAN_CPU[on]}" -v t="$TARGET_MS" 'BEGIN { print (v >= 0 && v <= t) ? "ok" : "MISS" }')
echo "  target: $verdict"
[[ $STRICT == 1 && $verdict != ok ]] && exit 1
exit 0
