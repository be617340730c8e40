#!/usr/bin/env bash
# Benchmark: exec-time detection (the kernel's process-events connector) beside today's polling
# mode, in one run, on a busy node.
#
# Sets up N runc containers (default 40) from two images like bench/daemon_bench.sh (busybox
# and Debian binaries, kubepods cgroup paths, half with limits, each with a shell and
# EXTRA_PER_CONTAINER sleeps: about 1,000 processes). The busybox image also holds
# /bin/busybox-evil (busybox with a tag appended), whose SHA-256 the policy denies. Then, for
# each mode, the release build of `nodeguard run --kube off` on a loopback port:
#
#   netlink  `--exec-events auto --interval 1h` (no scan helps), then `--interval 10s` for CPU;
#   polling  `--exec-events off --interval 10s` (today's mode).
#
# and measures:
#   - exec -> finding: TRIALS (default 10) times, `runc exec -d` of busybox-evil in a container
#     of its own, timed from just before `runc exec` (runc's own start-up included) to the
#     first /v1/findings answer (polled every 20 ms) that shows `denied_binary` for it;
#     worst and p50. Each process is killed after it was seen.
#   - short processes: SHORT (default 10) runs of `busybox-evil sleep 0.2` (each in a
#     container of its own, 0.5 s apart), then 2 s (netlink) or the next completed scan
#     (polling); caught = containers with the finding.
#   - 50 execs/s: RATE_CONTAINERS (10) shells each start busybox-evil (living 0.2 s) 5 times a
#     second for RATE_SECONDS (10); caught = processes of busybox-evil per container in
#     /v1/processes?sha256=<evil> after a scan brought forward by SIGHUP (exec reads that
#     raise no new finding are published with the next scan; exited ones stay reported for
#     the retention window).
#   - steady CPU and RSS over WINDOW (default 60) seconds at a 10 s interval (the node's own
#     execs, from whatever else runs here, included: that is the exec mode's real cost).
#   - an exec storm: STORM_LOOPS (default 8) shells running `/bin/busybox-evil true` in a
#     tight loop, STORM_RATE (2000) x STORM_SECONDS (10) execs in all; achieved execs/s, peak RSS before and after, lost
#     events (nodeguard_exec_events_lost_total), and the first full scan after the storm:
#     its duration and process count beside `ls /proc` (the reconciliation is complete when
#     it ran and saw the node), and how many of the `busybox-evil sleep 600` each loop starts
#     early in the storm and leaves running /v1/processes lists. Run once more with
#     `--exec-buffer STORM_BUFFER` (default 4096 bytes, the smallest the agent takes): there the
#     kernel drops events, and the losses, the scans they bring forward and the sleepers listed
#     after them are what is measured.
#
# Targets (issue 12): worst exec -> finding <= 1 s at a 1 h interval; 10/10 200 ms processes;
# >= 99 % at 50 execs/s; CPU <= 0.5 % of a core at 10 s; RSS <= 25 MiB; storm: RSS bounded,
# losses counted, next reconciliation complete. A measurement, not a test: MISS is reported,
# exit 0 unless STRICT=1. Everything started is torn down at exit. Loopback only.
#
# Usage (root): bench/exec_bench.sh
#   CONTAINERS=40 WINDOW=60 NODEGUARD=/path/to/nodeguard bench/exec_bench.sh
set -euo pipefail

CONTAINERS=${CONTAINERS:-40}
EXTRA_PER_CONTAINER=${EXTRA_PER_CONTAINER:-22}
WINDOW=${WINDOW:-60}
TRIALS=${TRIALS:-10}
SHORT=${SHORT:-10}
RATE_CONTAINERS=${RATE_CONTAINERS:-10}
RATE_SECONDS=${RATE_SECONDS:-10}
STORM_LOOPS=${STORM_LOOPS:-8}
STORM_SECONDS=${STORM_SECONDS:-10}
STORM_RATE=${STORM_RATE:-2000}
STORM_BUFFER=${STORM_BUFFER:-4096}
STRICT=${STRICT:-0}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts runc containers)"
for tool in runc busybox jq curl mount umount ss; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install runc busybox-static jq curl iproute2)"
done
# Phases use disjoint containers: latency, short processes, rate, storm. Files the containers
# write are named by mode, and only read from the overlay's upper dir (changing a mounted
# overlay's upper dir from outside is undefined).
((CONTAINERS >= TRIALS + SHORT + RATE_CONTAINERS + STORM_LOOPS)) ||
  die "CONTAINERS must be at least TRIALS + SHORT + RATE_CONTAINERS + STORM_LOOPS"

need_nodeguard

bench_workdir nodeguard-exec-bench
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Images and containers

make_base_images
EVIL=/bin/busybox-evil
cp "$BUSYBOX_IMG/bin/busybox" "$BUSYBOX_IMG$EVIL"
printf 'nodeguard exec bench %s' "$RANDOM$RANDOM" >>"$BUSYBOX_IMG$EVIL"
EVIL_SHA=$(sha256sum "$BUSYBOX_IMG$EVIL" | cut -d' ' -f1)
POLICY=$WORK/policy.yaml
printf 'version: 1\ndenied_binaries:\n  - sha256: %s\n    reason: exec bench\n' "$EVIL_SHA" >"$POLICY"

IMAGES=("$BUSYBOX_IMG" "$DEBIAN_IMG")
image_processes() { base_image_processes "$@"; }

# Every container is from the busybox image when the phases need busybox-evil in it: the
# phase containers come first, the Debian ones fill up the rest.
PHASE_CONTAINERS=$((TRIALS + SHORT + RATE_CONTAINERS + STORM_LOOPS))
declare -a CID CDIR
echo "starting $CONTAINERS containers, $((EXTRA_PER_CONTAINER + 3)) processes each"
for ((n = 0; n < CONTAINERS; n++)); do
  if ((n < PHASE_CONTAINERS)); then img=$BUSYBOX_IMG; else img=${IMAGES[$((n % 2))]}; fi
  start_loaded_container "$n" "$img"
  CID[n]=$CONTAINER_ID
  CDIR[n]=$CONTAINER_DIR
done
sleep 2
echo "$(ls /proc | grep -c '^[0-9]') processes on the node"

# ---------------------------------------------------------------------------------------------
# Helpers

now_ns() { date +%s%N; }

start_agent() { # start_agent LABEL ARGS...: sets URL, AGENT_LOG, AGENT_PID; waits for 2 scans
  local label=$1
  shift
  pick_port
  AGENT_LOG=$WORK/agent-$label.log
  local args=(run --listen "127.0.0.1:$PORT" --kube off --log-format json --config "$POLICY" "$@")
  readlink /proc/1/root >/dev/null 2>&1 || args+=(--host-root /)
  echo "agent ($label): $NODEGUARD ${args[*]}"
  "$NODEGUARD" "${args[@]}" 2>"$AGENT_LOG" >/dev/null &
  AGENT_PID=$!
  for _ in $(seq 600); do
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$AGENT_LOG" >&2; die "the agent exited"; }
    (($(scans_done) >= 2)) && return 0
    sleep 0.5
  done
  die "no 2 scans within 300 s"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
denied_in() { # denied_in CONTAINER_ID: number of denied_binary findings of that container
  curl -sf --max-time 5 "$URL/v1/findings?kind=denied_binary&container=$1" | jq '.count'
}
wait_next_scan() { # waits for one more completed scan than now (at most 60 s)
  local before
  before=$(scans_done)
  for _ in $(seq 600); do (($(scans_done) > before)) && return 0; sleep 0.1; done
}
pct() { # pct FILE P: the P-quantile of the sorted numbers in FILE
  awk -v p="$2" '{ v[NR] = $1 } END { i = int(NR * p + 0.999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }' "$1"
}

# exec -> finding, TRIALS containers from FIRST; LIMIT_S: give up on one trial after that.
latency_phase() { # latency_phase FIRST LIMIT_S OUTFILE
  local first=$1 limit=$2 out=$3 i n t0 pid found
  : >"$out"
  for ((i = 0; i < TRIALS; i++)); do
    n=$((first + i))
    t0=$(now_ns)
    runc --root "$RUNC_ROOT" exec -d --pid-file "$WORK/lat-$n.pid" "${CID[n]}" "$EVIL" sleep 600 \
      </dev/null >>"${CDIR[n]}/log" 2>&1 || die "runc exec in container $n failed"
    found=""
    while (($(now_ns) - t0 < limit * 1000000000)); do
      if (($(denied_in "${CID[n]}") > 0)); then found=$(( ($(now_ns) - t0) / 1000000 )); break; fi
      sleep 0.02
    done
    echo "${found:-timeout}" >>"$out"
    pid=$(cat "$WORK/lat-$n.pid")
    kill -KILL "$pid" 2>/dev/null || true
  done
}

short_phase() { # short_phase FIRST MODE: echoes caught/SHORT
  local first=$1 mode=$2 i n caught=0
  for ((i = 0; i < SHORT; i++)); do
    n=$((first + i))
    runc --root "$RUNC_ROOT" exec "${CID[n]}" "$EVIL" sleep 0.2 </dev/null >>"${CDIR[n]}/log" 2>&1 || true
    sleep 0.3
  done
  if [[ $mode == netlink ]]; then sleep 2; else wait_next_scan; fi
  for ((i = 0; i < SHORT; i++)); do
    n=$((first + i))
    (($(denied_in "${CID[n]}") > 0)) && caught=$((caught + 1))
  done
  echo "$caught/$SHORT"
}

rate_phase() { # rate_phase FIRST MODE: echoes "caught started rate"
  local first=$1 mode=$2 i n per=$((RATE_SECONDS * 5)) t0 t1
  t0=$(now_ns)
  for ((i = 0; i < RATE_CONTAINERS; i++)); do
    n=$((first + i))
    runc --root "$RUNC_ROOT" exec -d "${CID[n]}" /bin/sh -c \
      "i=0; while [ \$i -lt $per ]; do $EVIL sleep 0.2 & echo \$! >>/tmp/pids-$mode; i=\$((i + 1)); sleep 0.2; done; wait" \
      </dev/null >>"${CDIR[n]}/log" 2>&1 || die "runc exec in container $n failed"
  done
  sleep "$RATE_SECONDS"
  # Until every loop wrote all its pids (a loop runs a little slower than 5/s).
  for _ in $(seq 100); do
    local done_loops=0
    for ((i = 0; i < RATE_CONTAINERS; i++)); do
      n=$((first + i))
      [[ $(wc -l <"${CDIR[n]}/upper/tmp/pids-$mode" 2>/dev/null || echo 0) -ge $per ]] && done_loops=$((done_loops + 1))
    done
    ((done_loops == RATE_CONTAINERS)) && break
    sleep 0.1
  done
  t1=$(now_ns)
  # Reads that raise no new finding (the container's denied_binary is already open) are
  # published with the next scan: bring one forward (SIGHUP reloads the policy and scans) so
  # that /v1/processes lists every process the agent read, in both modes alike.
  sleep 1
  kill -HUP "$AGENT_PID"
  wait_next_scan
  local seen started caught
  curl -sf "$URL/v1/processes?sha256=$EVIL_SHA" | jq -r '.processes[] | "\(.container_id) \(.pid)"' | sort -u >"$WORK/rate-seen"
  : >"$WORK/rate-started"
  for ((i = 0; i < RATE_CONTAINERS; i++)); do
    n=$((first + i))
    # Pids as the container's shell printed them are in its pid namespace: map each to the host
    # pid through the container's processes is not possible after they exit, so compare counts
    # per container: processes of busybox-evil the agent holds for that container.
    awk -v c="${CID[n]}" 'END { print c, NR }' "${CDIR[n]}/upper/tmp/pids-$mode" >>"$WORK/rate-started"
  done
  started=$(awk '{ s += $2 } END { print s }' "$WORK/rate-started")
  caught=0
  while read -r c count; do
    seen=$(awk -v c="$c" '$1 == c' "$WORK/rate-seen" | wc -l)
    ((seen > count)) && seen=$count
    caught=$((caught + seen))
  done <"$WORK/rate-started"
  echo "$caught $started $(awk -v n="$started" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / ((b - a) / 1e9) }')"
}

storm_phase() { # storm_phase FIRST MODE: echoes "execs rate hwm_before hwm_after rss_max lost scan_ms scan_procs proc_count scans sleepers listed"
  local first=$1 i n hwm0 lost0 scans0 t0 t1
  # STORM_RATE execs/s for STORM_SECONDS if the machine can: the achieved rate is printed.
  local per_loop=$((STORM_RATE * STORM_SECONDS / STORM_LOOPS))
  hwm0=$(status_kib VmHWM)
  lost0=$(metric nodeguard_exec_events_lost_total); lost0=${lost0:-0}
  scans0=$(scans_done)
  t0=$(now_ns)
  for ((i = 0; i < STORM_LOOPS; i++)); do
    n=$((first + i))
    runc --root "$RUNC_ROOT" exec -d "${CID[n]}" /bin/sh -c \
      "c=0; while [ \$c -lt $per_loop ]; do $EVIL true; $EVIL true; $EVIL true; $EVIL true; c=\$((c + 4)); if [ \$c -eq 400 ]; then $EVIL sleep 600 & fi; done; echo \$c >/tmp/storm-$2" \
      </dev/null >>"${CDIR[n]}/log" 2>&1 || die "runc exec in container $n failed"
  done
  local rss_max=0 r
  for ((s = 0; s < 240; s++)); do
    r=$(status_kib VmRSS); ((r > rss_max)) && rss_max=$r
    local finished=0
    for ((i = 0; i < STORM_LOOPS; i++)); do [[ -s ${CDIR[$((first + i))]}/upper/tmp/storm-$2 ]] && finished=$((finished + 1)); done
    ((finished == STORM_LOOPS)) && break
    sleep 0.25
  done
  t1=$(now_ns)
  local execs=0
  for ((i = 0; i < STORM_LOOPS; i++)); do
    execs=$((execs + $(cat "${CDIR[$((first + i))]}/upper/tmp/storm-$2" 2>/dev/null || echo 0)))
  done
  # The reconciliation: the first full scan that starts after the storm ended (with the
  # connector and a 1 h interval there is one only when events were lost).
  local lost1 last procs
  lost1=$(metric nodeguard_exec_events_lost_total); lost1=${lost1:-0}
  if [[ $2 == polling || ${lost1%.*} -gt ${lost0%.*} ]]; then
    wait_next_scan
    wait_next_scan
  fi
  lost1=$(metric nodeguard_exec_events_lost_total); lost1=${lost1:-0}
  procs=$(ls /proc | grep -c '^[0-9]')
  last=$(grep '"message":"scan complete"' "$AGENT_LOG" | tail -1)
  # What the storm left running (one `busybox-evil sleep 600` per loop, started early in it),
  # by runc and /proc, beside what /v1/processes lists with the denied digest. No scan is
  # brought forward here: what lists them is an exec read or a scan the agent ran itself.
  : >"$WORK/storm-sleepers"
  for ((i = 0; i < STORM_LOOPS; i++)); do
    for pid in $(runc --root "$RUNC_ROOT" ps --format json "${CID[$((first + i))]}" | jq -r '.[]'); do
      # The last NUL becomes a trailing space ($(...) drops newlines only).
      if [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "$EVIL sleep 600 " ]]; then
        echo "$pid" >>"$WORK/storm-sleepers"
      fi
    done
  done
  local sleepers listed
  sleepers=$(wc -l <"$WORK/storm-sleepers")
  listed=$(curl -sf "$URL/v1/processes?sha256=$EVIL_SHA" | jq -r '.processes[].pid' |
    grep -cxF -f "$WORK/storm-sleepers" || true)
  xargs -r kill -KILL <"$WORK/storm-sleepers" 2>/dev/null || true
  echo "$execs $(awk -v n="$execs" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / ((b - a) / 1e9) }') \
$(mib "$hwm0") $(mib "$(status_kib VmHWM)") $(mib "$rss_max") $((${lost1%.*} - ${lost0%.*})) \
$(jq -r .duration_ms <<<"$last") $(jq -r .processes <<<"$last") $procs $(( $(scans_done) - scans0 )) \
$sleepers $listed"
}

steady_phase() { # steady_phase: echoes "cpu_pct rss_median_mib hwm_mib warm_scan_median_ms load_start-load_end warm_scan_cpu_ms"
  local ticks0 ticks1 t0 t1 lines load0
  load0=$(cut -d' ' -f1 /proc/loadavg)
  lines=$(wc -l <"$AGENT_LOG")
  ticks0=$(cpu_ticks); t0=$(now_ns)
  : >"$WORK/rss"
  for ((s = 0; s < WINDOW; s++)); do sleep 1; status_kib VmRSS >>"$WORK/rss"; done
  ticks1=$(cpu_ticks); t1=$(now_ns)
  tail -n +"$((lines + 1))" "$AGENT_LOG" | grep '"message":"scan complete"' | grep '"scope":"processes"' \
    >"$WORK/warm-scans" || true
  jq -r .duration_ms "$WORK/warm-scans" | sort -n >"$WORK/warm"
  jq -r '.cpu_ms // empty' "$WORK/warm-scans" | sort -n >"$WORK/warm-cpu"
  echo "$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.2f", 100 * (b - a) / hz / ((t1 - t0) / 1e9) }') \
$(sort -n "$WORK/rss" | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] / 1024 }') \
$(mib "$(status_kib VmHWM)") $( [[ -s $WORK/warm ]] && pct "$WORK/warm" 0.5 || echo n/a) \
$load0-$(cut -d' ' -f1 /proc/loadavg) $( [[ -s $WORK/warm-cpu ]] && pct "$WORK/warm-cpu" 0.5 || echo n/a)"
}

summarize_latency() { # summarize_latency FILE: "worst p50 caught/TRIALS"
  local ok
  grep -v timeout "$1" | sort -n >"$1.ok" || true
  ok=$(wc -l <"$1.ok")
  if ((ok == 0)); then echo "timeout timeout 0/$TRIALS"; return; fi
  local worst
  if ((ok < TRIALS)); then worst=">limit"; else worst=$(tail -1 "$1.ok"); fi
  echo "$worst $(pct "$1.ok" 0.5) $ok/$TRIALS"
}

# ---------------------------------------------------------------------------------------------
# Runs. Phase containers: latency 0.., short TRIALS.., rate .., storm ..

L0=0; S0=$TRIALS; R0=$((TRIALS + SHORT)); T0=$((TRIALS + SHORT + RATE_CONTAINERS))

echo; echo "== netlink mode, interval 1h =="
start_agent netlink-1h --exec-events auto --interval 1h --fs-interval 1h
[[ $(metric 'nodeguard_exec_events_source{source="netlink"}') == 1 ]] ||
  die "the connector is not in use (nodeguard_exec_events_source): $(grep -m1 'exec events' "$AGENT_LOG")"
latency_phase "$L0" 5 "$WORK/lat-netlink"; N_LAT=$(summarize_latency "$WORK/lat-netlink")
N_SHORT=$(short_phase "$S0" netlink)
N_RATE=$(rate_phase "$R0" netlink)
N_STORM=$(storm_phase "$T0" netlink)
N_EVENTS=$(metric nodeguard_exec_events_total); N_UNREAD=$(metric nodeguard_exec_processes_unread_total)
stop_agent

# The same storm against a socket buffer too small for it: the lost path (counted, a full scan
# brought forward, the scan after a loss re-checking every process).
echo "== netlink mode, interval 1h, --exec-buffer $STORM_BUFFER (storm only) =="
start_agent netlink-small --exec-events auto --interval 1h --fs-interval 1h --exec-buffer "$STORM_BUFFER"
B_STORM=$(storm_phase "$T0" netlink-small)
stop_agent

echo "== netlink mode, interval 10s (steady cost) =="
start_agent netlink-10s --exec-events auto --interval 10s
sleep 12
N_STEADY=$(steady_phase)
stop_agent

# The phases' processes are gone (killed or exited): polling starts from the same node.
echo "== polling mode (--exec-events off), interval 10s =="
start_agent polling-10s --exec-events off --interval 10s
latency_phase "$L0" 15 "$WORK/lat-polling"; P_LAT=$(summarize_latency "$WORK/lat-polling")
P_SHORT=$(short_phase "$S0" polling)
P_RATE=$(rate_phase "$R0" polling)
P_STORM=$(storm_phase "$T0" polling)
sleep 5
P_STEADY=$(steady_phase)
stop_agent

# ---------------------------------------------------------------------------------------------
# Report

read -r n_worst n_p50 n_lat_ok <<<"$N_LAT"; read -r p_worst p_p50 p_lat_ok <<<"$P_LAT"
read -r n_rc n_rs n_rr <<<"$N_RATE"; read -r p_rc p_rs p_rr <<<"$P_RATE"
read -r n_sx n_srate n_sh0 n_sh1 n_srss n_slost n_sms n_sprocs n_sproc n_sscans n_sleep n_listed <<<"$N_STORM"
read -r b_sx b_srate b_sh0 b_sh1 b_srss b_slost b_sms b_sprocs b_sproc b_sscans b_sleep b_listed <<<"$B_STORM"
read -r p_sx p_srate p_sh0 p_sh1 p_srss p_slost p_sms p_sprocs p_sproc p_sscans p_sleep p_listed <<<"$P_STORM"
read -r n_cpu n_rss n_hwm n_warm n_load n_wcpu <<<"$N_STEADY"; read -r p_cpu p_rss p_hwm p_warm p_load p_wcpu <<<"$P_STEADY"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "n/a" }'; }
verdict() { if [[ $1 == 1 ]]; then echo "ok"; else echo "MISS"; fi; }
misses=0
check() { local ok; ok=$(awk "BEGIN { print ($1) ? 1 : 0 }"); ((ok)) || misses=$((misses + 1)); verdict "$ok"; }

echo
echo "==== exec-time detection: $CONTAINERS containers, ~$n_sproc processes; netlink beside polling ===="
printf '%-34s %-26s %-26s %s\n' "" "netlink (interval 1h)" "polling (interval 10s)" "target"
if [[ $n_worst =~ ^[0-9]+$ ]]; then lat_cond="$n_worst <= 1000"; else lat_cond=0; fi
printf '%-34s %-26s %-26s %s %s\n' "exec -> finding worst / p50" "$n_worst / $n_p50 ms ($n_lat_ok)" \
  "$p_worst / $p_p50 ms ($p_lat_ok)" "<= 1000 ms" "$(check "$lat_cond")"
if [[ $N_SHORT == "$SHORT/$SHORT" ]]; then short_cond=1; else short_cond=0; fi
printf '%-34s %-26s %-26s %s %s\n' "200 ms processes caught" "$N_SHORT" "$P_SHORT" "10/10" \
  "$(check "$short_cond")"
printf '%-34s %-26s %-26s %s %s\n' "caught at ~50 execs/s (achieved)" "$n_rc/$n_rs $(ratio "$n_rc" "$n_rs") % (${n_rr}/s)" \
  "$p_rc/$p_rs $(ratio "$p_rc" "$p_rs") % (${p_rr}/s)" ">= 99 %" "$(check "$n_rs > 0 && $n_rc / $n_rs >= 0.99")"
printf '%-34s %-26s %-26s %s %s\n' "steady CPU at 10 s (% of a core)" "$n_cpu" "$p_cpu" "<= 0.5" "$(check "$n_cpu <= 0.5")"
printf '%-34s %-26s %-26s\n' "  load average over that window" "$n_load" "$p_load"
printf '%-34s %-26s %-26s %s %s\n' "RSS median / peak (MiB)" "$n_rss / $n_hwm" "$p_rss / $p_hwm" "<= 25" "$(check "$n_hwm <= 25")"
printf '%-34s %-26s %-26s %s\n' "warm process scan p50 (ms)" "$n_warm" "$p_warm" "<= 20"
printf '%-34s %-26s %-26s\n' "  its CPU time p50 (ms)" "$n_wcpu" "$p_wcpu"
printf '%-34s %-26s %-26s\n' "storm: execs (per s)" "$n_sx ($n_srate/s)" "$p_sx ($p_srate/s)"
printf '%-34s %-26s %-26s %s %s\n' "storm: peak RSS before -> after" "$n_sh0 -> $n_sh1 MiB" "$p_sh0 -> $p_sh1 MiB" "bounded" \
  "$(check "$n_sh1 <= 64")"
printf '%-34s %-26s %-26s %s\n' "storm: exec events lost (counted)" "$n_slost" "n/a" "counted"
printf '%-34s %-26s %-26s %s\n' "storm: last scan after (ms, procs)" "$n_sms ms, $n_sprocs of $n_sproc" \
  "$p_sms ms, $p_sprocs of $p_sproc" "complete"
printf '%-34s %-26s\n' "storm: full scans during + after" "$n_sscans (reconciliations; 1 h interval)"
printf '%-34s %-26s %-26s %s\n' "storm: still running, listed" "$n_listed of $n_sleep" "$p_listed of $p_sleep" \
  "(netlink: exec reads raising nothing new wait for a scan)"
echo "storm with --exec-buffer $STORM_BUFFER (netlink, interval 1h):"
printf '%-34s %-26s\n' "  execs (per s)" "$b_sx ($b_srate/s)"
printf '%-34s %-26s %s %s\n' "  exec events lost (counted)" "$b_slost" "> 0" "$(check "$b_slost > 0")"
printf '%-34s %-26s %s %s\n' "  full scans during + after" "$b_sscans" ">= 1" "$(check "$b_sscans >= 1")"
printf '%-34s %-26s %s %s\n' "  still running, listed" "$b_listed of $b_sleep" "all" \
  "$(check "${b_sleep:-0} > 0 && ${b_listed:-0} == ${b_sleep:-0}")"
printf '%-34s %-26s %s %s\n' "  peak RSS before -> after" "$b_sh0 -> $b_sh1 MiB" "bounded" "$(check "$b_sh1 <= 64")"
printf '%-34s %-26s\n' "  last scan after (ms, procs)" "$b_sms ms, $b_sprocs of $b_sproc"
echo "  netlink run: $N_EVENTS exec events, $N_UNREAD exec'd processes gone before they could be read"
echo "  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (other load skews the figures)"
if [[ $STRICT == 1 && $misses -gt 0 ]]; then exit 1; fi
