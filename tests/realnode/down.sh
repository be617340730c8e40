#!/usr/bin/env bash
# Tears down a bed made by up.sh (also a half-made one): pods, kubelet, containers, containerd,
# podman containers, kube-apiserver, etcd; then the mounts under DIR, the cgroups under the
# bed's prefix, and DIR itself (unless --keep). Only this bed's processes are touched: the ones
# it started (pid files in DIR) and the ones living in its cgroups. Safe to run twice.
#
# Usage: tests/realnode/down.sh [--keep] DIR
set -uo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
KEEP=0
if [[ ${1:-} == --keep ]]; then KEEP=1; shift; fi
[[ $# -eq 1 ]] || { echo "usage: $0 [--keep] DIR" >&2; exit 2; }
[[ -d $1 ]] || exit 0
D=$(cd "$1" && pwd)
log() { echo "realnode down: $*" >&2; }
PREFIX=$(cat "$D/prefix" 2>/dev/null || true)
# shellcheck disable=SC1091
[[ -f $D/env ]] && source "$D/env"

alive() { [[ -f $D/$1.pid ]] && kill -0 "$(cat "$D/$1.pid")" 2>/dev/null; }
# stop NAME [SECONDS]: TERM the process from NAME.pid, KILL it after SECONDS (default 10).
stop() {
  local name=$1 secs=${2:-10} pid i
  [[ -f $D/$name.pid ]] || return 0
  pid=$(cat "$D/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$D/$name.pid"
}

# 1. Let kubelet stop the pods it runs (bounded), then stop it.
if alive kubelet && alive apiserver && [[ -n ${REALNODE_NODE:-} ]]; then
  k=("$REALNODE_KUBECTL" --kubeconfig "$REALNODE_ADMIN_KUBECONFIG" --request-timeout 10s)
  "${k[@]}" get pods -A --field-selector "spec.nodeName=$REALNODE_NODE" \
    -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}' >>"$D/pod-uids" 2>/dev/null
  "${k[@]}" delete pods -A --field-selector "spec.nodeName=$REALNODE_NODE" --grace-period 0 \
    --force --wait=false >/dev/null 2>&1
  CTR=(ctr --address "$REALNODE_CONTAINERD_SOCK" -n k8s.io)
  for ((i = 0; i < 40; i++)); do
    [[ -z $("${CTR[@]}" tasks ls -q 2>/dev/null) ]] && break
    sleep 0.5
  done
fi
stop kubelet 15

# 2. Whatever containerd still runs: kill and delete the tasks, remove the containers.
if alive containerd; then
  CTR=(ctr --address "$REALNODE_CONTAINERD_SOCK" -n k8s.io)
  for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1
  done
  for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    timeout 20 "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1
  done
  for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do
    "${CTR[@]}" containers rm "$c" >/dev/null 2>&1
  done
fi
stop containerd 10

# 3. podman containers (conmon exits with them).
if [[ -n ${REALNODE_PODMAN_ARGS:-} && -d $D/podman/root ]]; then
  export CONTAINERS_CONF=$REALNODE_PODMAN_CONTAINERS_CONF
  export CONTAINERS_STORAGE_CONF=$REALNODE_PODMAN_STORAGE_CONF
  read -r -a PODMAN_ARGS <<<"$REALNODE_PODMAN_ARGS"
  timeout 60 podman "${PODMAN_ARGS[@]}" rm -f -t 0 -a >/dev/null 2>&1
fi

stop apiserver 10
stop etcd 10

# 4. Anything still alive in this bed's cgroups (shims, stray container processes), then the
#    cgroups themselves, deepest first.
if [[ -n $PREFIX ]]; then
  cgdirs=()
  for top in /sys/fs/cgroup/*/"$PREFIX" /sys/fs/cgroup/*/"$PREFIX"-podman /sys/fs/cgroup/"$PREFIX" \
    /sys/fs/cgroup/"$PREFIX"-podman; do
    [[ -d $top ]] && cgdirs+=("$top")
  done
  if [[ ${#cgdirs[@]} -gt 0 ]]; then
    for ((round = 0; round < 3; round++)); do
      pids=$(find "${cgdirs[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
      [[ -z $pids ]] && break
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null
      sleep 0.5
    done
    find "${cgdirs[@]}" -depth -type d -exec rmdir {} \; 2>/dev/null
    for top in "${cgdirs[@]}"; do
      [[ -d $top ]] && log "cgroup $top could not be removed"
    done
  fi
fi
# Shims are not in the bed's cgroups: they name the bed's socket on their command line.
if [[ -n ${REALNODE_CONTAINERD_SOCK:-} ]]; then
  for pid in $(pgrep -f -- "-address $REALNODE_CONTAINERD_SOCK" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null
  done
fi

# 5. Mounts under DIR (overlay rootfs, shm, podman storage), innermost first.
for ((round = 0; round < 3; round++)); do
  mapfile -t mounts < <(awk -v d="$D/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  [[ ${#mounts[@]} -eq 0 ]] && break
  for m in "${mounts[@]}"; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
done
# Logs kubelet kept for the bed's pods.
if [[ -f $D/pod-uids ]]; then
  while read -r uid; do
    [[ $uid =~ ^[0-9a-f-]{36}$ ]] || continue
    rm -rf /var/log/pods/*_"$uid"
    find /var/log/containers -maxdepth 1 -lname "*_$uid/*" -delete 2>/dev/null
  done <"$D/pod-uids"
fi
if [[ $KEEP -eq 0 ]]; then
  rm -rf "$D"
fi
log "down${PREFIX:+ ($PREFIX)}"
