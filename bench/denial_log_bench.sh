#!/usr/bin/env bash
# Benchmark: how much log does a flood of refused API requests write? (issue 19, item 3)
#
# Starts `nodeguard run --kube on --auth on --tls on` on loopback against the real-node bed's
# kube-apiserver (REALNODE_ENV, or an API-server-only bed brought up and down here with
# tests/realnode/up.sh --no-kubelet), then floods its API port for SECONDS (default 60) from
# CONNS (default 8) pipelined TLS connections with made-up bearer tokens
# (tests/flood/flood.py denials), and prints the requests refused and the log bytes and lines
# the agent wrote meanwhile, scaled to a minute. With OLD_NODEGUARD=/path/to/an/older/build it
# runs that build the same way and prints its figures beside (the build before issue 19 logged
# every refusal at info).
#
# Goal: <= 100 KiB of log per minute under the flood, so kubelet's rotation (10 Mi x 5) keeps
# hours of findings. A measurement, not a test: it exits 0. Everything it starts is killed at
# exit. Loopback only; run as root.
#
# Usage: bench/denial_log_bench.sh   (NODEGUARD=/path/to/nodeguard to pick a build)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
NODEGUARD=${NODEGUARD:-$REPO/target/release/nodeguard}
[[ -x $NODEGUARD ]] || NODEGUARD=$REPO/target/debug/nodeguard
SECONDS_=${SECONDS_FLOOD:-60}
CONNS=${CONNS:-8}
WORK=$(mktemp -d /tmp/denial-log-bench.XXXXXX)
AGENT=
OWN_BED=

cleanup() {
  set +e
  [[ -n $AGENT ]] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null
  [[ -n $OWN_BED ]] && "$REPO/tests/realnode/down.sh" "$OWN_BED" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${REALNODE_ENV:-} ]]; then
  OWN_BED=$WORK/bed
  "$REPO/tests/realnode/up.sh" --no-kubelet "$OWN_BED" >/dev/null
  REALNODE_ENV=$OWN_BED/env
fi
# shellcheck disable=SC1090
source "$REALNODE_ENV"
sed "s/^  name: nodeguard\$/  name: $REALNODE_AGENT_CLUSTERROLE/" "$REPO/manifests/clusterrole.yaml" |
  "$REALNODE_KUBECTL" --kubeconfig "$REALNODE_ADMIN_KUBECONFIG" apply -f - >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# measure BIN LABEL: prints "LABEL requests bytes/min lines/min".
measure() {
  local bin=$1 label=$2 port probes log
  port=$(free_port); probes=$(free_port); log=$WORK/$label.log
  KUBECONFIG=$REALNODE_AGENT_KUBECONFIG NODE_NAME=$REALNODE_NODE "$bin" run --kube on --auth on \
    --no-events --tls on --listen "127.0.0.1:$port" --probe-listen "127.0.0.1:$probes" \
    --interval 30s --fs-interval 10m --log-format json >"$log" 2>&1 &
  AGENT=$!
  for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$probes/readyz" >/dev/null && break; sleep 0.5; done
  local before after lines_before lines_after result requests
  before=$(stat -c %s "$log"); lines_before=$(wc -l <"$log")
  result=$(python3 "$REPO/tests/flood/flood.py" denials 127.0.0.1 "$port" --tls \
    --conns "$CONNS" --seconds "$SECONDS_")
  after=$(stat -c %s "$log"); lines_after=$(wc -l <"$log")
  kill "$AGENT"; wait "$AGENT" 2>/dev/null || true; AGENT=
  requests=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["requests"])' "$result")
  python3 - "$label" "$requests" "$((after - before))" "$((lines_after - lines_before))" "$SECONDS_" <<'PY'
import sys
label, requests, size, lines, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
per_min = 60.0 / secs
print(f"{label:>6}: {requests} requests refused in {secs:.0f} s ({requests * per_min:.0f}/min); "
      f"log {size * per_min / 1024:.1f} KiB/min, {lines * per_min:.0f} lines/min "
      f"(goal <= 100 KiB/min)")
PY
}

echo "flooding ${SECONDS_}s from $CONNS pipelined TLS connections with made-up tokens"
measure "$NODEGUARD" new
if [[ -n ${OLD_NODEGUARD:-} ]]; then
  measure "$OLD_NODEGUARD" old
fi
