#!/usr/bin/env bash
# Benchmark: what `nodeguard run` costs on a busy node.
#
# Sets up N runc containers (default 40) from two images — busybox-static and a few dynamically
# linked Debian binaries — under kubepods cgroup paths like containerd's, half of them with
# memory/CPU/pids limits. Each container runs its init, one process started with runc exec, and
# a shell that starts EXTRA_PER_CONTAINER (default 22) more `sleep`s: with the node's own
# processes, about 1,000 processes for every scan. Then it starts the release build of
# `nodeguard run --interval 10s --kube off` on a loopback port and measures:
#
#   - CPU: utime+stime of the agent from /proc/PID/stat over a WINDOW-second (default 60)
#     window after warm-up (the cold first scan and the first filesystem scan are outside it),
#     as a percentage of one core;
#   - memory: peak RSS (VmHWM, cold scan included) and steady RSS (VmRSS sampled every second
#     in the window, median);
#   - warm process scan: each scan's duration_ms from the agent's log ("scan complete") in the
#     window, and the mean from nodeguard_scan_duration_seconds sum/count deltas;
#   - /metrics latency under 32 concurrent scrapers: ROUNDS (default 40) bursts of 32
#     simultaneous requests (the API's per-peer connection cap is 32, and every curl here
#     comes from one address: with more, the surplus is refused by design and counted failed) (one `curl --parallel`, Prometheus's Accept header, a fresh
#     connection each), half a second apart; p50/p99/max of curl's time_total.
#
# Targets (issue 12, warm reconciliation): <= 0.5 % of one core, steady RSS <= 25 MiB (peak
# <= 40 MiB), warm process scan <= 20 ms; /metrics p99 < 10 ms. Each figure is printed with its
# ratio to the old one: BASELINE=/path/to/an/older/nodeguard runs that binary beside the one
# under test, on the same containers and over the same window (the fair comparison on a
# machine with other load); the 1-minute load average over the window is printed with them;
# without it, the figures README recorded for full re-reads.
# This is a measurement, not a test: it reports MISS and exits 0 unless STRICT=1.
# Everything it starts is torn down at exit. Loopback only.
#
# Usage (root, from anywhere):
#   bench/daemon_bench.sh
#   CONTAINERS=60 WINDOW=120 NODEGUARD=/path/to/nodeguard bench/daemon_bench.sh
#   BASELINE=/tmp/nodeguard-main NODEGUARD=target/release/nodeguard bench/daemon_bench.sh
#   # One binary, a feature off beside it on (image verification, issue 22):
#   BASELINE=target/release/nodeguard BASELINE_ARGS=--image-verify=false \
#     NODEGUARD=target/release/nodeguard bench/daemon_bench.sh
# BASELINE_ARGS and AGENT_ARGS (space-separated) are added to the baseline's and the agent's
# command lines.
set -euo pipefail

CONTAINERS=${CONTAINERS:-40}
EXTRA_PER_CONTAINER=${EXTRA_PER_CONTAINER:-22}
WINDOW=${WINDOW:-60}
INTERVAL=${INTERVAL:-10s}
SCRAPERS=${SCRAPERS:-32}
ROUNDS=${ROUNDS:-40}
STRICT=${STRICT:-0}
BASELINE=${BASELINE:-}
BASELINE_ARGS=${BASELINE_ARGS:-}
AGENT_ARGS=${AGENT_ARGS:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts runc containers)"
for tool in runc busybox jq curl mount umount ss; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install runc busybox-static jq curl iproute2)"
done
curl --help all 2>/dev/null | grep -q -- '--parallel-max' || die "curl lacks --parallel (need curl >= 7.66)"

need_nodeguard

bench_workdir nodeguard-daemon-bench
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Images and containers (bench/lib.sh)

make_base_images
IMAGES=("$BUSYBOX_IMG" "$DEBIAN_IMG")
image_processes() { base_image_processes "$@"; }

echo "starting $CONTAINERS containers from ${#IMAGES[@]} images, $((EXTRA_PER_CONTAINER + 3)) processes each"
t0=$(date +%s%N)
for ((n = 0; n < CONTAINERS; n++)); do
  start_loaded_container "$n" "${IMAGES[$((n % ${#IMAGES[@]}))]}"
done
sleep 2 # let the shells start their sleeps
echo "started in $(( ($(date +%s%N) - t0) / 1000000 )) ms; $(ls /proc | grep -c '^[0-9]') processes on the node"

# ---------------------------------------------------------------------------------------------
# The agent

hist_sum='nodeguard_scan_duration_seconds_sum{scan_type="processes"}'
hist_count='nodeguard_scan_duration_seconds_count{scan_type="processes"}'

# Agents by label ("agent", and "baseline" with BASELINE): pid, URL, log.
declare -A A_PID A_URL A_LOG
use_agent() { AGENT_PID=${A_PID[$1]}; URL=${A_URL[$1]}; AGENT_LOG=${A_LOG[$1]}; }
# bench_cleanup (lib.sh) stops the current agent; this stops the others.
bench_cleanup_hook() {
  local label
  for label in "${!A_PID[@]}"; do use_agent "$label"; stop_agent; done
}

# start_measured BINARY LABEL: starts BINARY as an agent (its own port and state dir) and waits
# out its cold scan and first filesystem scan; prints the cold scan.
start_measured() {
  local bin=$1 label=$2 cold ours seen
  pick_port
  rm -rf "$WORK/state-$label" && mkdir -p "$WORK/state-$label"
  local args=(run --listen "127.0.0.1:$PORT" --interval "$INTERVAL" --kube off --log-format json
    --state-dir "$WORK/state-$label")
  # Where pid 1's root cannot be read (a root session with fewer capabilities than pid 1), host
  # paths are reached through this mount namespace, as the integration tests do.
  readlink /proc/1/root >/dev/null 2>&1 || args+=(--host-root /)
  local extra
  if [[ $label == baseline ]]; then extra=$BASELINE_ARGS; else extra=$AGENT_ARGS; fi
  # shellcheck disable=SC2206 # split on spaces: several flags
  [[ -n $extra ]] && args+=($extra)
  AGENT_LOG=$WORK/agent-$label.log
  echo "agent ($label): $bin ${args[*]}"
  "$bin" "${args[@]}" 2>"$AGENT_LOG" >/dev/null &
  AGENT_PID=$!
  A_PID[$label]=$AGENT_PID A_URL[$label]=$URL A_LOG[$label]=$AGENT_LOG
  # Warm-up: the cold first scan (hashes every executable once) and the first filesystem scan.
  for _ in $(seq 600); do
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$AGENT_LOG" >&2; die "the agent exited"; }
    (($(scans_done) >= 3)) && break
    sleep 0.5
  done
  (($(scans_done) >= 3)) || { tail -20 "$AGENT_LOG" >&2; die "no 3 scans within 300 s"; }
  cold=$(grep '"message":"scan complete"' "$AGENT_LOG" | head -1)
  echo "cold first scan ($label): $(jq -r '"\(.duration_ms) ms, \(.processes) processes, \(.containers) containers"' <<<"$cold")"
  ours=$(awk '{print $1}' "$WORK/containers" | jq -R . | jq -s .)
  seen=$(curl -sf "$URL/v1/containers" | jq --argjson ours "$ours" '[.containers[] | select(.id as $i | $ours | index($i))] | length')
  echo "the agent ($label) reports $seen of the $CONTAINERS benchmark containers"
}

# measure_window LABEL...: the steady state of those agents over the same WINDOW seconds (the
# same node, the same other load): for each, into <what>_<label> variables, cpu_pct, hwm_mib,
# rss_mib, warm_median, warm_max, warm_n, warm_procs, hist_mean_ms, cold_ms, load.
measure_window() {
  local label s t0 t1 load_start load_end
  declare -A lines sum0 count0 ticks0
  load_start=$(cut -d' ' -f1 /proc/loadavg)
  echo "measuring $* for ${WINDOW} s (scan interval $INTERVAL); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for label in "$@"; do
    use_agent "$label"
    lines[$label]=$(wc -l <"$AGENT_LOG")
    sum0[$label]=$(metric "$hist_sum"); count0[$label]=$(metric "$hist_count")
    ticks0[$label]=$(cpu_ticks)
    : >"$WORK/rss-$label"
  done
  t0=$(date +%s%N)
  for ((s = 0; s < WINDOW; s++)); do
    sleep 1
    for label in "$@"; do use_agent "$label"; status_kib VmRSS >>"$WORK/rss-$label"; done
  done
  t1=$(date +%s%N)
  load_end=$(cut -d' ' -f1 /proc/loadavg)
  for label in "$@"; do
    use_agent "$label"
    local ticks1 sum1 count1 hwm_kib
    ticks1=$(cpu_ticks)
    sum1=$(metric "$hist_sum"); count1=$(metric "$hist_count")
    hwm_kib=$(status_kib VmHWM)
    printf -v "load_$label" '%s' "$load_start-$load_end"
    printf -v "cpu_pct_$label" '%s' "$(awk -v a="${ticks0[$label]}" -v b="$ticks1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
      'BEGIN { printf "%.2f", 100 * (b - a) / hz / ((t1 - t0) / 1e9) }')"
    printf -v "rss_mib_$label" '%s' "$(sort -n "$WORK/rss-$label" | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] / 1024 }')"
    printf -v "hwm_mib_$label" '%s' "$(awk -v k="$hwm_kib" 'BEGIN { printf "%.1f", k / 1024 }')"
    # The daemon logs the scope in snake_case ("processes"); "Processes" is what older builds
    # wrote. Either is a process-only scan.
    tail -n +"$((lines[$label] + 1))" "$AGENT_LOG" |
      grep '"message":"scan complete"' | grep -i '"scope":"processes"' >"$WORK/window-scans" || true
    local n
    n=$(wc -l <"$WORK/window-scans")
    ((n > 0)) || die "no process scan of the $label agent completed in the window"
    printf -v "warm_n_$label" '%s' "$n"
    jq -r '.duration_ms' "$WORK/window-scans" | sort -n >"$WORK/warm-ms"
    printf -v "warm_median_$label" '%s' "$(awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }' "$WORK/warm-ms")"
    printf -v "warm_max_$label" '%s' "$(tail -1 "$WORK/warm-ms")"
    # The agent's CPU time during each scan (logged as cpu_ms since the warm path work; n/a for
    # builds before): what the scan costs, whatever else competes for the cores.
    printf -v "warm_cpu_$label" '%s' "$(jq -r '.cpu_ms // empty' "$WORK/window-scans" | sort -n |
      awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }')"
    printf -v "warm_procs_$label" '%s' "$(jq -r '.processes' "$WORK/window-scans" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
    printf -v "hist_mean_ms_$label" '%s' "$(awk -v s0="${sum0[$label]}" -v s1="$sum1" -v c0="${count0[$label]}" -v c1="$count1" \
      'BEGIN { if (c1 > c0) printf "%.1f", 1000 * (s1 - s0) / (c1 - c0); else print "n/a" }')"
    printf -v "cold_ms_$label" '%s' "$(grep '"message":"scan complete"' "$AGENT_LOG" | head -1 | jq -r .duration_ms)"
  done
}

# With BASELINE, both agents run at once and are measured over the same window: on a machine
# shared with other work, windows taken one after the other see different load (other
# people's execs, each read and hashed by the agent, dominate a quiet agent's CPU), and the
# comparison would say more about them than about the agents.
if [[ -n $BASELINE ]]; then
  [[ -x $BASELINE ]] || die "BASELINE=$BASELINE is not an executable"
  start_measured "$BASELINE" baseline
  start_measured "$NODEGUARD" agent
  measure_window baseline agent
  base_cpu=$cpu_pct_baseline base_hwm=$hwm_mib_baseline base_rss=$rss_mib_baseline
  base_warm=$warm_median_baseline base_warm_max=$warm_max_baseline base_cold=$cold_ms_baseline
  base_load=$load_baseline base_warm_cpu=$warm_cpu_baseline
  echo "baseline: CPU $base_cpu %, warm scan $base_warm ms median ($base_warm_max max), RSS $base_rss MiB steady, $base_hwm MiB peak"
  use_agent baseline
  stop_agent
else
  start_measured "$NODEGUARD" agent
  measure_window agent
fi
use_agent agent
cpu_pct=$cpu_pct_agent hwm_mib=$hwm_mib_agent rss_mib=$rss_mib_agent warm_median=$warm_median_agent
warm_max=$warm_max_agent warm_n=$warm_n_agent warm_procs=$warm_procs_agent warm_cpu=$warm_cpu_agent
hist_mean_ms=$hist_mean_ms_agent cold_ms=$cold_ms_agent load_start=${load_agent%-*} load_end=${load_agent#*-}

# ---------------------------------------------------------------------------------------------
# /metrics under SCRAPERS concurrent scrapers

ACCEPT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
metrics_bytes=$(curl -sf -H "Accept: $ACCEPT" "$URL/metrics" | wc -c)
metrics_series=$(curl -sf -H "Accept: $ACCEPT" "$URL/metrics" | grep -vc '^#' || true)
echo "scraping /metrics ($metrics_bytes bytes, $metrics_series samples): $ROUNDS bursts of $SCRAPERS simultaneous requests"
targets=() # "-o /dev/null URL" per scraper: curl's -o applies to one URL only
for ((i = 0; i < SCRAPERS; i++)); do targets+=(-o /dev/null "$URL/metrics"); done
: >"$WORK/latency"
for ((r = 0; r < ROUNDS; r++)); do
  # One transfer per scraper, all at once, each on its own connection; one line per transfer.
  curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$SCRAPERS" \
    --max-time 10 -H "Accept: $ACCEPT" -w '%{http_code} %{time_total} %{time_connect}\n' "${targets[@]}" \
    >>"$WORK/latency" 2>>"$WORK/curl.err" || true
  sleep 0.5
done
failed=$(awk '$1 != 200' "$WORK/latency" | wc -l)
awk '$1 == 200 { print $2 * 1000 }' "$WORK/latency" | sort -n >"$WORK/latency-ms"
connect_max=$(awk '$1 == 200 && $3 > m { m = $3 } END { printf "%.2f", m * 1000 }' "$WORK/latency")
lat_n=$(wc -l <"$WORK/latency-ms")
((lat_n > 0)) || die "no successful scrape"
pct() { awk -v p="$1" '{ v[NR] = $1 } END { i = int(NR * p); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.2f", v[i] }' "$WORK/latency-ms"; }
p50=$(pct 0.50); p99=$(pct 0.99); pmax=$(tail -1 "$WORK/latency-ms")
kill -0 "$AGENT_PID" 2>/dev/null || die "the agent died during the scrapes"
hwm_after_kib=$(status_kib VmHWM)
rss_after_kib=$(status_kib VmRSS)

# ---------------------------------------------------------------------------------------------
# Report

verdict() { if [[ $1 == 1 ]]; then echo "ok"; else echo "MISS"; fi; }
# "old" is the baseline measured above when BASELINE was given; else the figures README
# recorded for full re-reads of every process on every scan (2026-11-22).
if [[ -n $BASELINE ]]; then
  old_what="baseline $BASELINE, this run"
else
  base_cpu=1.08 base_warm=76 base_rss=26 base_hwm="" base_cold=""
  old_what="full re-reads, README 2026-11-22"
fi
ratio() { awk -v o="$1" -v n="$2" 'BEGIN { if (o == "" || n + 0 == 0) print "n/a"; else printf "%.1fx less", o / n }'; }
misses=0
cpu_ok=$(awk -v v="$cpu_pct" 'BEGIN { print (v <= 0.5) ? 1 : 0 }')
rss_ok=$(awk -v v="$rss_mib" 'BEGIN { print (v <= 25) ? 1 : 0 }')
hwm_ok=$(awk -v v="$hwm_mib" 'BEGIN { print (v <= 40) ? 1 : 0 }')
scan_ok=$(awk -v v="$warm_median" 'BEGIN { print (v <= 20) ? 1 : 0 }')
lat_ok=$(awk -v v="$p99" 'BEGIN { print (v < 10) ? 1 : 0 }')
for ok in "$cpu_ok" "$rss_ok" "$hwm_ok" "$scan_ok" "$lat_ok"; do ((ok)) || misses=$((misses + 1)); done

echo
echo "==== nodeguard run: $CONTAINERS containers, ~$warm_procs processes per scan, interval $INTERVAL ===="
echo "  (old: $old_what)"
echo "  1-minute load average over the window: $load_start-$load_end (old: ${base_load:-n/a}) on $(nproc) cores"
printf '  CPU (%ss window)        %8s %% of one core   (target <= 0.5 %%)  %s   old %s %%: %s\n' "$WINDOW" "$cpu_pct" "$(verdict "$cpu_ok")" "$base_cpu" "$(ratio "$base_cpu" "$cpu_pct")"
printf '  RSS steady (median)     %8s MiB              (target <= 25 MiB) %s   old %s MiB: %s\n' "$rss_mib" "$(verdict "$rss_ok")" "$base_rss" "$(ratio "$base_rss" "$rss_mib")"
printf '  RSS peak (VmHWM)        %8s MiB              (target <= 40 MiB) %s   old %s MiB\n' "$hwm_mib" "$(verdict "$hwm_ok")" "${base_hwm:-n/a}"
printf '  warm process scan       %8s ms median, %s ms max over %s scans; histogram mean %s ms  (target <= 20 ms) %s   old %s ms: %s\n' \
  "$warm_median" "$warm_max" "$warm_n" "$hist_mean_ms" "$(verdict "$scan_ok")" "$base_warm" "$(ratio "$base_warm" "$warm_median")"
printf '  warm scan CPU time      %8s ms median (the agent'"'"'s user+system time during a scan)   old %s ms\n' "$warm_cpu" "${base_warm_cpu:-n/a}"
printf '  cold first scan         %8s ms   old %s ms\n' "$cold_ms" "${base_cold:-n/a}"
printf '  /metrics x%s concurrent  p50 %s ms, p99 %s ms, max %s ms over %s scrapes, %s failed  (target p99 < 10 ms) %s\n' \
  "$SCRAPERS" "$p50" "$p99" "$pmax" "$lat_n" "$failed" "$(verdict "$lat_ok")"
printf '  after the scrapes       %8s MiB peak RSS, %s MiB RSS; slowest TCP connect %s ms\n' \
  "$(awk -v k="$hwm_after_kib" 'BEGIN { printf "%.1f", k / 1024 }')" \
  "$(awk -v k="$rss_after_kib" 'BEGIN { printf "%.1f", k / 1024 }')" "$connect_max"
echo "  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (other load skews the figures);"
echo "  a scrape's latency is curl's time_total: connect, wait for a worker, render, transfer"

if [[ $STRICT == 1 && $misses -gt 0 ]]; then
  exit 1
fi
