#!/usr/bin/env bash
# Starts the standard workload on a bed brought up by up.sh, and waits until it runs:
#   namespace `realnode`, hostNetwork pods bound to the node (no scheduler):
#     besteffort  (no requests or limits)        burstable  (memory limit only)
#     guaranteed  (requests == limits)           privileged (securityContext.privileged)
#     netadmin    (capabilities add NET_ADMIN, SYS_TIME)
#     two         (containers `app` and `sidecar`)
#   podman containers (runc, cgroupfs, --cgroup-parent /<prefix>-podman):
#     <prefix>-pm-limits  --memory 64m --pids-limit 64 --cpus 0.5 --cap-add NET_ADMIN
#     <prefix>-pm-user    --user 1000:1000 --memory 32m --pids-limit 32
#
# Usage: tests/realnode/workload.sh DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(cd "$1" && pwd)
# shellcheck disable=SC1091
source "$D/env"
log() { echo "realnode workload: $*" >&2; }
KUBECTL=("$REALNODE_KUBECTL" --kubeconfig "$REALNODE_ADMIN_KUBECONFIG")

pod() { # NAME QOS-RESOURCES(JSON) SECURITY(JSON) [CONTAINERS]
  local name=$1 resources=$2 security=$3 names=${4:-main}
  local containers="" c
  for c in $names; do
    containers+="${containers:+,}{\"name\":\"$c\",\"image\":\"$REALNODE_BUSYBOX_IMAGE\",\"imagePullPolicy\":\"Never\",\"command\":[\"sleep\",\"86400\"],\"resources\":$resources,\"securityContext\":$security}"
  done
  cat <<EOF
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"$name","namespace":"realnode","labels":{"app":"realnode"}},
 "spec":{"nodeName":"$REALNODE_NODE","hostNetwork":true,"terminationGracePeriodSeconds":1,
         "automountServiceAccountToken":false,"containers":[$containers]}}
EOF
}

"${KUBECTL[@]}" get namespace realnode >/dev/null 2>&1 ||
  "${KUBECTL[@]}" create namespace realnode >/dev/null
{
  pod besteffort '{}' '{}'
  pod burstable '{"requests":{"memory":"16Mi","cpu":"10m"},"limits":{"memory":"64Mi"}}' '{}'
  pod guaranteed '{"requests":{"memory":"48Mi","cpu":"100m"},"limits":{"memory":"48Mi","cpu":"100m"}}' '{}'
  pod privileged '{"limits":{"memory":"32Mi","cpu":"50m"}}' '{"privileged":true}'
  pod netadmin '{"limits":{"memory":"32Mi","cpu":"50m"}}' '{"capabilities":{"add":["NET_ADMIN","SYS_TIME"]}}'
  pod two '{"limits":{"memory":"32Mi","cpu":"50m"}}' '{}' "app sidecar"
} | "${KUBECTL[@]}" apply -f - >/dev/null

PODMAN_ARGS=($REALNODE_PODMAN_ARGS)
export CONTAINERS_CONF=$REALNODE_PODMAN_CONTAINERS_CONF
export CONTAINERS_STORAGE_CONF=$REALNODE_PODMAN_STORAGE_CONF
pm() { podman "${PODMAN_ARGS[@]}" "$@"; }
common=(--network host --cgroup-parent "$REALNODE_PODMAN_CGROUP_PARENT" -d)
pm container exists "$REALNODE_PREFIX-pm-limits" ||
  pm run "${common[@]}" --name "$REALNODE_PREFIX-pm-limits" --memory 64m --pids-limit 64 \
    --cpus 0.5 --cap-add NET_ADMIN "$REALNODE_PODMAN_IMAGE" sleep 86400 >/dev/null
pm container exists "$REALNODE_PREFIX-pm-user" ||
  pm run "${common[@]}" --name "$REALNODE_PREFIX-pm-user" --user 1000:1000 --memory 32m \
    --pids-limit 32 "$REALNODE_PODMAN_IMAGE" sleep 86400 >/dev/null

deadline=$((SECONDS + 120))
until "${KUBECTL[@]}" wait -n realnode --for=condition=Ready pod --all --timeout=5s >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    "${KUBECTL[@]}" get pods -n realnode -o wide >&2
    log "pods not Ready after 120s (see $D/kubelet.log)"
    exit 1
  fi
done
log "6 pods Ready, 2 podman containers running"
