#!/usr/bin/env bash
# Measurement: `nodeguard fleet query processes` over 1,000 agents, 5 % of them blackholed or
# slow, against the real kube-apiserver of the real-node bed (tests/realnode/up.sh
# --no-kubelet) holding 1,000 Nodes and 1,000 Leases.
#
# The agents are stand-ins (agent/examples/fleet_standin.rs): one loopback address each
# (127.1.x.y), the agent's own TLS server with a certificate of its own (the Lease names its
# fingerprint), answering /v1/processes with a real agent's answer captured here from
# `nodeguard run` on this machine, padded to PROCS processes. One in 40 accepts and never
# answers, one in 40 answers after SLOW_MS.
#
# Prints, in one run: the new way (one fleet query, default concurrency 64, default per-agent
# timeout 5 s, connect timeout 2 s) — wall time, client peak RSS and CPU time
# (/usr/bin/time -v), rows, nodes answered —, the same with --connect-timeout 5s (a stuck
# agent then holds its place for the whole timeout, as before there was a connect timeout), and the
# old way (one `nodeguard query` per node, one after another, as a responder does today with a
# token and each agent's certificate) over OLD_SAMPLE nodes, with its per-node time and what
# 1,000 nodes would take.
#
# BASELINE=BINARY: an older nodeguard's fleet query too, in the same run.
#
# Targets (issue 23): wall <= 8 s and peak RSS <= 100 MiB for 1,000 x 300 processes.
# Usage (root): bench/fleet_query_bench.sh     PERF_OUT=/tmp/fleet.perf bench/fleet_query_bench.sh
#                  NODEGUARD=target/debug/nodeguard AGENTS=200 bench/fleet_query_bench.sh
set -euo pipefail

AGENTS=${AGENTS:-1000}
PROCS=${PROCS:-300}
SLOW_MS=${SLOW_MS:-3000}
OLD_SAMPLE=${OLD_SAMPLE:-40}
PORT=${PORT:-19717}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${PROFILE:-release}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "fleet_query_bench: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (the API server bed)"
[[ -x /usr/bin/time ]] || die "needs GNU time (apt-get install time)"

flag=()
[[ $PROFILE == release ]] && flag=(--release)
echo "building ($PROFILE): nodeguard and the stand-in"
(cd "$REPO" && cargo build -q "${flag[@]}" -p nodeguard --bin nodeguard --example fleet_standin)
NODEGUARD=${NODEGUARD:-$REPO/target/$PROFILE/nodeguard}
STANDIN=$REPO/target/$PROFILE/examples/fleet_standin

WORK=$(mktemp -d /tmp/ng-fleet-bench.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  "$REPO/tests/realnode/down.sh" "$WORK/bed" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "bringing up the API server bed"
"$REPO/tests/realnode/up.sh" --no-kubelet "$WORK/bed" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "bed failed"; }
# shellcheck disable=SC1091
source "$WORK/bed/env"
K=("$REALNODE_KUBECTL" --kubeconfig "$REALNODE_ADMIN_KUBECONFIG")

echo "capturing a real agent's /v1/processes"
APORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$NODEGUARD" run --kube off --listen "127.0.0.1:$APORT" --interval 5s --fs-interval 1h \
  --log-format json >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$APORT/v1/processes" -o "$WORK/real.json" && break
  sleep 0.5
done
[[ -s $WORK/real.json ]] || die "the agent never answered"
kill "${PIDS[-1]}"
python3 - "$WORK/real.json" "$PROCS" "$WORK/body.json" <<'EOF'
import json, sys
answer = json.load(open(sys.argv[1]))
real = answer["processes"]
want = int(sys.argv[2])
out = []
while len(out) < want:
    for p in real:
        if len(out) == want:
            break
        q = dict(p)
        q["pid"] = 100000 + len(out)
        out.append(q)
answer["processes"] = out
answer["count"] = len(out)
json.dump(answer, open(sys.argv[3], "w"))
print(f"  {len(real)} real processes, padded to {len(out)}: {len(json.dumps(answer))} bytes per answer")
EOF

echo "starting $AGENTS stand-in agents"
NS=nodeguard
# up.sh made the agents' namespace already (with the Lease Role for its agent user).
"${K[@]}" get namespace $NS >/dev/null 2>&1 || "${K[@]}" create namespace $NS >/dev/null
"${K[@]}" -n $NS create serviceaccount nodeguard-responder >/dev/null
"$STANDIN" --agents "$AGENTS" --port "$PORT" --body "$WORK/body.json" --namespace $NS \
  --nodes "$WORK/nodes.json" --leases "$WORK/leases.json" --slow "$SLOW_MS" >"$WORK/standin.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -q serving "$WORK/standin.log" && break; sleep 0.2; done
grep -q serving "$WORK/standin.log" || { cat "$WORK/standin.log"; die "stand-ins did not start"; }
echo "loading $AGENTS Nodes and Leases into the API server"
start=$(date +%s.%N)
"${K[@]}" create -f "$WORK/nodes.json" >/dev/null
"${K[@]}" create -f "$WORK/leases.json" >/dev/null
echo "  loaded in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"

# One fleet query: its wall time, peak RSS, CPU, rows and unanswered nodes by reason.
fleet_query() { # label, extra flags...
  local label=$1
  shift
  echo
  echo "== $label"
  # PERF_OUT=FILE: the client runs under `perf record -g` (its profile; wall and CPU then include perf).
  local profiler=()
  [[ -n ${PERF_OUT:-} ]] && profiler=(perf record -q -g -o "$PERF_OUT" --)
  local rc
  KUBECONFIG=$REALNODE_ADMIN_KUBECONFIG /usr/bin/time -v "${profiler[@]}" "${CLIENT:-$NODEGUARD}" fleet query -n $NS -o json "$@" processes \
    >"$WORK/out.jsonl" 2>"$WORK/time.txt" && rc=0 || rc=$?
  local wall rss user sys rows
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  user=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$WORK/time.txt")
  sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$WORK/time.txt")
  rows=$(grep -c '"process"' "$WORK/out.jsonl" || true)
  tail -1 "$WORK/out.jsonl"
  python3 - "$WORK/out.jsonl" <<'EOF2'
import collections, json, sys
reasons = collections.Counter()
for line in open(sys.argv[1]):
    v = json.loads(line)
    if "unanswered" in v:
        reasons[v["unanswered"]["reason"]] += 1
print("  unanswered by reason:", dict(reasons))
EOF2
  echo "  exit $rc, wall $wall, peak RSS $((rss / 1024)) MiB, $rows process rows"
  echo "  client CPU: user $user s + system $sys s (the rest of the wall is waiting: agents, the blackholed ones' timeouts, the machine's other load)"
}

fleet_query "new way: nodeguard fleet query processes (defaults: concurrency 64, timeout 5 s, connect timeout 2 s)"
if [[ -n ${BASELINE:-} ]]; then
  PERF_OUT='' CLIENT=$BASELINE fleet_query "BASELINE=$BASELINE, its defaults"
fi
PERF_OUT='' fleet_query "the same with --connect-timeout 5s (a stuck agent holds its place for the whole --timeout, as before the connect timeout)" --connect-timeout 5s

echo
echo "== old way: one nodeguard query per node, one after another ($OLD_SAMPLE nodes)"
TOKEN=$("${K[@]}" create --raw "/api/v1/namespaces/$NS/serviceaccounts/nodeguard-responder/token" -f - \
  <<<'{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["nodeguard"],"expirationSeconds":600}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')
start=$(date +%s.%N)
for i in $(seq 0 $((OLD_SAMPLE - 1))); do
  ip=127.1.$((i / 250)).$((i % 250 + 1))
  timeout 30 "$NODEGUARD" query --url "https://$ip:$PORT" --insecure-skip-tls-verify --token "$TOKEN" \
    -o json processes >/dev/null 2>&1 || true
done
old=$(python3 -c "print($(date +%s.%N) - $start)")
python3 -c "o=$old; n=$OLD_SAMPLE; print(f'  {n} nodes in {o:.1f} s: {o/n*1000:.0f} ms per node, about {o/n*$AGENTS:.0f} s for $AGENTS nodes')"
echo
echo "targets: wall <= 8 s, peak RSS <= 100 MiB (new way above)"
