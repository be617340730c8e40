#!/usr/bin/env bash
# Benchmark: heartbeat Lease writes (issue 23: "at most one per agent per interval, none when
# nothing changed but the renew time"), counted two ways against a real kube-apiserver, beside
# what a writer fed by every state change would have written, in one run.
#
# Starts AGENTS (default 3) `nodeguard run` agents (distinct node names and loopback ports,
# `--interval INTERVAL` (2s), exec events on) in a fresh namespace with the shipped
# manifests/role-lease.yaml bound to the bed's agent identity, while a shell execs
# `/bin/true` EXEC_RATE (50) times a second, so states (one per scan and one per exec pass)
# arrive far more often than intervals. Over WINDOW (30) seconds it counts per agent:
#   - API server: MODIFIED/ADDED watch events of the agent's Lease (`kubectl get lease
#     --watch-only`: each is a write the API server stored);
#   - agent: nodeguard_lease_writes_total{result=created|renewed} and {result=failed};
#   - the old way: states the daemon published (scans + exec passes): what a writer that
#     wrote on every state change would have sent. (Exec reads that raise nothing new are
#     not published on their own, so with `/bin/true` this stays near one per interval too;
#     an exec load that raises findings would make it grow, the Lease writes would not.)
# and prints writes per interval (target <= 1). A measurement, not a test: exit 0 unless
# STRICT=1 and a target is missed.
#
# The bed: REALNODE_ENV (the env file of tests/realnode/up.sh DIR), else one brought up here
# with `tests/realnode/up.sh --no-kubelet` and taken down at exit.
#
# Usage (root): bench/lease_writes.sh
#   AGENTS=3 WINDOW=30 INTERVAL=2 NODEGUARD=target/debug/nodeguard bench/lease_writes.sh
set -euo pipefail

AGENTS=${AGENTS:-3}
WINDOW=${WINDOW:-30}
INTERVAL=${INTERVAL:-2}
EXEC_RATE=${EXEC_RATE:-50}
STRICT=${STRICT:-0}
REPO=$(cd "$(dirname "$0")/.." && pwd)
NODEGUARD=${NODEGUARD:-$REPO/target/debug/nodeguard}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "lease_writes: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (the exec events connector)"
[[ -x $NODEGUARD ]] || die "no nodeguard binary at $NODEGUARD (cargo build -p nodeguard)"
for tool in curl bc python3; do command -v "$tool" >/dev/null || die "$tool not found"; done

WORK=$(mktemp -d /tmp/nodeguard-lease-bench.XXXXXX)
OWN_BED=""
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [[ -n ${NS:-} ]]; then "${KUBECTL[@]}" delete namespace "$NS" --wait=false >/dev/null 2>&1; fi
  if [[ -n $OWN_BED ]]; then "$REPO/tests/realnode/down.sh" "$OWN_BED" >/dev/null 2>&1; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n ${REALNODE_ENV:-} ]]; then
  ENV_FILE=$REALNODE_ENV
else
  OWN_BED=$WORK/bed
  echo "bringing up an API-server-only bed in $OWN_BED"
  "$REPO/tests/realnode/up.sh" --no-kubelet "$OWN_BED" >/dev/null
  ENV_FILE=$OWN_BED/env
fi
# shellcheck disable=SC1090
source "$ENV_FILE"
KUBECTL=("$REALNODE_KUBECTL" --kubeconfig "$REALNODE_ADMIN_KUBECONFIG")

NS=nglease-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
"${KUBECTL[@]}" create namespace "$NS" >/dev/null
sed "s/namespace: nodeguard$/namespace: $NS/" "$REPO/manifests/role-lease.yaml" |
  "${KUBECTL[@]}" apply -f - >/dev/null
"${KUBECTL[@]}" -n "$NS" create rolebinding nodeguard-lease --role nodeguard-lease \
  --user "$REALNODE_AGENT_USER" >/dev/null

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
metric() { # PORT SERIES -> value (0 when absent)
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v s="$2" '$1 == s { print $2; found=1 } END { if (!found) print 0 }'
}
states() { # PORT -> scans + exec passes published
  local scans passes
  scans=$(metric "$1" 'nodeguard_scans_total{scan_type="processes",result="success"}')
  passes=$(metric "$1" 'nodeguard_exec_passes_total')
  echo "$scans + $passes" | bc
}

PORTS=()
for i in $(seq 1 "$AGENTS"); do
  port=$(free_port)
  PORTS+=("$port")
  KUBECONFIG=$REALNODE_AGENT_KUBECONFIG RUST_LOG=warn "$NODEGUARD" run --kube on --auth off \
    --listen "127.0.0.1:$port" --node-name "$NS-node-$i" --lease-namespace "$NS" \
    --interval "${INTERVAL}s" --fs-interval 1h --no-events --policy-reports=false \
    --log-format json >"$WORK/agent-$i.log" 2>&1 &
  PIDS+=($!)
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 1 240); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || die "agent on $port never ready (logs in $WORK)"
done
# Every Lease created before the window starts.
for i in $(seq 1 "$AGENTS"); do
  for _ in $(seq 1 60); do
    "${KUBECTL[@]}" -n "$NS" get lease "nodeguard-$NS-node-$i" >/dev/null 2>&1 && break
    sleep 0.5
  done
done

# The exec load and the API server's own count of writes.
(while :; do /bin/true; sleep "$(echo "scale=4; 1 / $EXEC_RATE" | bc)"; done) &
PIDS+=($!)
"${KUBECTL[@]}" -n "$NS" get leases --watch-only --no-headers \
  -o custom-columns=NAME:.metadata.name >"$WORK/watch" 2>/dev/null &
PIDS+=($!)
sleep 1

declare -A W0 S0 F0
for i in $(seq 1 "$AGENTS"); do
  p=${PORTS[$((i - 1))]}
  W0[$i]=$(echo "$(metric "$p" 'nodeguard_lease_writes_total{result="renewed"}') + $(metric "$p" 'nodeguard_lease_writes_total{result="created"}')" | bc)
  F0[$i]=$(metric "$p" 'nodeguard_lease_writes_total{result="failed"}')
  S0[$i]=$(states "$p")
done
: >"$WORK/watch"
T0=$(date +%s.%N)
sleep "$WINDOW"
T1=$(date +%s.%N)
ELAPSED=$(echo "$T1 - $T0" | bc)
INTERVALS=$(echo "scale=2; $ELAPSED / $INTERVAL" | bc)

echo
echo "lease writes over ${ELAPSED%.*} s = $INTERVALS intervals of ${INTERVAL}s, $AGENTS agents, ~$EXEC_RATE execs/s"
printf '%-28s %14s %14s %12s %18s %16s\n' agent "api-server" "agent-metric" failed "old-way(states)" "writes/interval"
MISS=0
for i in $(seq 1 "$AGENTS"); do
  p=${PORTS[$((i - 1))]}
  name="nodeguard-$NS-node-$i"
  seen=$(grep -cx "$name" "$WORK/watch" || true)
  w=$(echo "$(metric "$p" 'nodeguard_lease_writes_total{result="renewed"}') + $(metric "$p" 'nodeguard_lease_writes_total{result="created"}') - ${W0[$i]}" | bc)
  f=$(echo "$(metric "$p" 'nodeguard_lease_writes_total{result="failed"}') - ${F0[$i]}" | bc)
  s=$(echo "$(states "$p") - ${S0[$i]}" | bc)
  per=$(echo "scale=2; $seen / $INTERVALS" | bc)
  printf '%-28s %14s %14s %12s %18s %16s\n' "$NS-node-$i" "$seen" "$w" "$f" "$s" "$per"
  if (($(echo "$seen > $INTERVALS + 1" | bc))); then MISS=1; fi
done
echo "target: writes/interval <= 1 (api-server column: writes the API server stored, from its watch)"
if [[ $MISS -eq 1 ]]; then
  echo "MISS: some agent wrote more than once per interval"
  [[ $STRICT -eq 1 ]] && exit 1
fi
exit 0
