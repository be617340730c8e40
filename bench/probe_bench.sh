#!/usr/bin/env bash
# Benchmark: can an attacker starve the agent's probes? (issue 9, item 2)
#
# Starts `nodeguard run --kube off` on loopback with the API on one port and the probes on
# their own (--probe-listen), then, for each phase, asks /healthz on the probe port ROUNDS
# times (default 20, a fresh connection each) and prints p50/max of curl's time_total:
#
#   1. idle: nothing else going on;
#   2. flood: IDLE (default 600) idle TCP connections held open to the API port, plus
#      CLIENTS (default 32) clients looping on /v1/findings with ~56 KB queries of 10,000
#      distinct unknown parameter names;
#   3. the same /healthz on the API port during the flood: it shares that port's limits, and
#      everything here comes from 127.0.0.1, so the per-peer bound (32) closes it too, which
#      is why the kubelet must use the probe port.
#
# Also prints the CPU the agent spent answering 200 such queries. A measurement, not a test:
# it exits 0. Everything it starts is killed at exit. Loopback only; run as root (the agent
# scans /proc).
#
# Usage: bench/probe_bench.sh   (NODEGUARD=/path/to/nodeguard to pick a build)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
NODEGUARD=${NODEGUARD:-$REPO/target/release/nodeguard}
[[ -x $NODEGUARD ]] || NODEGUARD=$REPO/target/debug/nodeguard
ROUNDS=${ROUNDS:-20}
IDLE=${IDLE:-600}
CLIENTS=${CLIENTS:-32}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port)
PROBES=$(free_port)
"$NODEGUARD" run --kube off --listen "127.0.0.1:$API" --probe-listen "127.0.0.1:$PROBES" \
  --interval 10s --log-format json 2>"$WORK/agent.log" >/dev/null &
AGENT=$!
PIDS+=("$AGENT")
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PROBES/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done

latencies() { # latencies URL: p50 and max of ROUNDS sequential GETs, in ms, and failures
  for _ in $(seq "$ROUNDS"); do
    if ! curl -sf -o /dev/null --max-time 30 -w '%{time_total}\n' "$1"; then echo FAIL; fi
  done | sort -n | awk '$1 == "FAIL" { f++; next } { v[++n] = $1 * 1000 }
    END { printf "p50 %.1f ms  max %.1f ms  answered %d, failed %d\n", v[int((n + 1) / 2)], v[n], n, f }'
}

cpu_ms() { awk '{ print ($14 + $15) * 1000 / 100 }' "/proc/$AGENT/stat"; }

echo "idle:                  /healthz on the probe port: $(latencies "http://127.0.0.1:$PROBES/healthz")"

QUERY=$(python3 -c 'print("&".join("z%x" % i for i in range(10000)))')
before=$(cpu_ms)
for _ in $(seq 200); do
  curl -s -o /dev/null "http://127.0.0.1:$API/v1/findings?$QUERY"
done
after=$(cpu_ms)
echo "200 queries of 10,000 unknown names: agent CPU $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.0f", a - b }') ms"

python3 - "$API" "$IDLE" <<'EOF' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(n):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except OSError:
        pass
time.sleep(3600)
EOF
PIDS+=("$!")
for _ in $(seq "$CLIENTS"); do
  (while true; do curl -s -o /dev/null --max-time 10 "http://127.0.0.1:$API/v1/findings?$QUERY"; done) &
  PIDS+=("$!")
done
sleep 2
echo "flood ($IDLE idle + $CLIENTS query clients):"
echo "  /healthz on the probe port: $(latencies "http://127.0.0.1:$PROBES/healthz")"
echo "  /healthz on the API port:   $(latencies "http://127.0.0.1:$API/healthz")"
