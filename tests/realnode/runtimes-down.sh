#!/usr/bin/env bash
# Undoes tests/realnode/runtimes-up.sh DIR: removes the containers, stops dockerd (and the
# containerd it started), unmounts what is mounted under DIR and its /run directory, removes
# the cgroups under /<prefix> (dockerd's) and /<prefix>-podman, then DIR. Safe on a half-made DIR
# and twice. Usage: tests/realnode/runtimes-down.sh [--keep] DIR
set -uo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
KEEP=0
[[ ${1:-} == --keep ]] && { KEEP=1; shift; }
D=${1:?usage: runtimes-down.sh [--keep] DIR}
[[ -f $D/env ]] || { rm -rf "$D"; exit 0; }
# shellcheck disable=SC1091
source "$D/env"

if [[ -d $D/podman/root ]]; then
  export CONTAINERS_CONF=$RT_PODMAN_CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$RT_PODMAN_STORAGE_CONF
  read -r -a PODMAN_ARGS <<<"$RT_PODMAN_ARGS"
  timeout 60 podman "${PODMAN_ARGS[@]}" rm -f -t 0 -a >/dev/null 2>&1
fi

if [[ -S $RT_RUN/docker.sock ]]; then
  DOCKER=(docker -H "$RT_DOCKER_HOST")
  ids=$(timeout 30 "${DOCKER[@]}" ps -aq 2>/dev/null)
  [[ -n $ids ]] && timeout 60 "${DOCKER[@]}" rm -f $ids >/dev/null 2>&1
fi
for pidfile in "$D/docker.pid" "$D/dockerd.launcher.pid"; do
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  [[ -n $pid ]] || continue
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null
done
# The containerd dockerd started, and any shim left, by their pid files under the exec-root.
for pidfile in $(find "$RT_RUN" -name '*.pid' 2>/dev/null); do
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  [[ $pid =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null
done

# Mounts under DIR and RUN, innermost (last mounted) first.
for _ in 1 2 3; do
  mapfile -t mounts < <(awk -v d="$D" -v r="$RT_RUN" \
    '{ p = $5; if (index(p, d "/") == 1 || p == d || index(p, r "/") == 1 || p == r) print p }' \
    /proc/self/mountinfo | tac)
  [[ ${#mounts[@]} -eq 0 ]] && break
  for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null; done
done

for top in /sys/fs/cgroup/*/"$RT_PREFIX" /sys/fs/cgroup/*/"$RT_PREFIX"-podman \
  /sys/fs/cgroup/"$RT_PREFIX" /sys/fs/cgroup/"$RT_PREFIX"-podman; do
  [[ -d $top ]] || continue
  find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null
done

rm -rf "$RT_RUN"
[[ $KEEP -eq 1 ]] || rm -rf "$D"
exit 0
