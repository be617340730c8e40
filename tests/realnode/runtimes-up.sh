#!/usr/bin/env bash
# Brings up the runtimes the privileged-container tests meet besides the bed's containerd and
# podman/runc: Docker 20.10 (Debian's docker.io) run by a dockerd of its own, and podman with
# crun 1.8. Private to DIR: dockerd's data-root, exec-root, socket, pidfile and containerd are
# its own; podman's storage and config are its own; cgroups sit under /<prefix>/docker (Docker names
# a container `docker/<id>`) and /<prefix>-podman. Needs root and what tests/realnode/build.sh installs (docker.io, crun,
# podman, busybox-static, libcap2-bin, python3). `runtimes-down.sh DIR` undoes it all (also
# a half-made one). Writes DIR/env (RT_* variables). Facts behind it: FIELD-NOTES, "More real
# runtimes on this machine".
#
#   - No CAP_SYS_RESOURCE on this machine (nor in many a CI container): runc and crun fail
#     to grant a privileged container capabilities their own bounding set lacks. Both are run
#     through a wrapper that drops those from the bundle's config.json first — the same set a
#     runtime on a node, holding them all, would grant minus what no process here can hold.
#   - crun refuses a hybrid host whose v2 tree lists controllers: its wrapper runs it in a
#     mount namespace of its own with an empty file over unified/cgroup.controllers.
#   - dockerd gets no bridge, no iptables; containers run with --network none.
#
# Usage: tests/realnode/runtimes-up.sh [--no-docker] [--no-podman] DIR
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
DOCKERD=1 PODMAN=1
while [[ ${1:-} == --no-* ]]; do
  case $1 in
    --no-docker) DOCKERD=0 ;;
    --no-podman) PODMAN=0 ;;
    *) echo "runtimes-up: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
D=${1:?usage: runtimes-up.sh [--no-docker] [--no-podman] DIR}
log() { echo "runtimes-up: $*" >&2; }
die() { log "$*"; exit 1; }
need=(runc busybox capsh python3)
[[ $DOCKERD -eq 1 ]] && need+=(dockerd docker containerd containerd-shim-runc-v2)
[[ $PODMAN -eq 1 ]] && need+=(podman conmon crun unshare)
for c in "${need[@]}"; do
  command -v "$c" >/dev/null || die "$c not found (tests/realnode/build.sh installs it)"
done
mkdir -p "$D"
D=$(cd "$D" && pwd)
PREFIX=ngrt-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Unix socket paths must stay short; so must podman's runroot (50 characters).
RUN=/run/$PREFIX
mkdir -p "$RUN" "$D/bin" "$D/img/rootfs/bin"
cat >"$D/env" <<EOF
RT_PREFIX=$PREFIX
RT_RUN=$RUN
RT_DOCKER_HOST=unix://$RUN/docker.sock
RT_DOCKER_CGROUP_PARENT=/$PREFIX/docker
RT_DOCKER_PID=$D/docker.pid
RT_PODMAN_ARGS="--root $D/podman/root --runroot $RUN/podman --runtime crun --cgroup-manager cgroupfs --events-backend file --tmpdir $D/podman/tmp"
RT_PODMAN_CONTAINERS_CONF=$D/podman/containers.conf
RT_PODMAN_STORAGE_CONF=$D/podman/storage.conf
RT_PODMAN_CGROUP_PARENT=/$PREFIX-podman
RT_IMAGE=localhost/$PREFIX-busybox:1
EOF

# --- the image: busybox-static alone
cp "$(command -v busybox)" "$D/img/rootfs/bin/busybox"
for c in sh sleep cat; do ln -sf busybox "$D/img/rootfs/bin/$c"; done
tar -C "$D/img/rootfs" -cf "$D/img/rootfs.tar" .

# --- the wrappers
cat >"$D/bin/dropcaps.py" <<'EOF'
"""Drops from an OCI config.json every capability this process's bounding set lacks."""
import json, subprocess, sys
path = sys.argv[1]
bnd = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("CapBnd:"))
out = subprocess.run(["capsh", "--decode=" + bnd], capture_output=True, text=True, check=True)
have = {n.strip().upper() for n in out.stdout.strip().split("=", 1)[1].split(",") if n.strip()}
config = json.load(open(path))
caps = config.get("process", {}).get("capabilities") or {}
changed = False
for name, held in caps.items():
    kept = [c for c in held if c.upper() in have]
    changed |= kept != held
    caps[name] = kept
if changed:
    with open(path, "w") as f:
        json.dump(config, f)
EOF
cat >"$D/bin/bundle-caps" <<EOF
#!/usr/bin/env bash
# Finds --bundle in a runtime's arguments and trims its config.json to what may be granted.
bundle=""; prev=""
for a in "\$@"; do
  [[ \$prev == --bundle || \$prev == -b ]] && bundle=\$a
  [[ \$a == --bundle=* ]] && bundle=\${a#--bundle=}
  prev=\$a
done
if [[ -n \$bundle && -f \$bundle/config.json ]]; then
  python3 "$D/bin/dropcaps.py" "\$bundle/config.json"
fi
EOF
cat >"$D/bin/runc" <<EOF
#!/usr/bin/env bash
"$D/bin/bundle-caps" "\$@" || exit 1
exec $(command -v runc) "\$@"
EOF
: >"$D/bin/empty-controllers"
cat >"$D/bin/crun" <<EOF
#!/usr/bin/env bash
"$D/bin/bundle-caps" "\$@" || exit 1
controllers=/sys/fs/cgroup/unified/cgroup.controllers
if [[ -f \$controllers ]]; then
  exec unshare --mount bash -c 'mount --bind "\$0" '"\$controllers"' && exec $(command -v crun) "\$@"' \\
    "$D/bin/empty-controllers" "\$@"
fi
exec $(command -v crun) "\$@"
EOF
chmod +x "$D/bin/bundle-caps" "$D/bin/runc" "$D/bin/crun"

# --- dockerd, its own everything
if [[ $DOCKERD -eq 1 ]]; then
mkdir -p "$D/docker/data"
log "dockerd (socket $RUN/docker.sock, cgroups /$PREFIX/docker)"
setsid dockerd --data-root "$D/docker/data" --exec-root "$RUN/docker" \
  -H "unix://$RUN/docker.sock" --pidfile "$D/docker.pid" \
  --cgroup-parent "/$PREFIX/docker" --exec-opt native.cgroupdriver=cgroupfs \
  --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
  --add-runtime "ngrunc=$D/bin/runc" --default-runtime ngrunc \
  </dev/null >"$D/dockerd.log" 2>&1 &
echo $! >"$D/dockerd.launcher.pid"
DOCKER=(docker -H "unix://$RUN/docker.sock")
for _ in $(seq 1 120); do
  "${DOCKER[@]}" version >/dev/null 2>&1 && break
  kill -0 "$(cat "$D/dockerd.launcher.pid")" 2>/dev/null || die "dockerd exited: $(tail -5 "$D/dockerd.log")"
  sleep 0.5
done
"${DOCKER[@]}" version >/dev/null 2>&1 || die "dockerd did not answer in 60 s: $(tail -5 "$D/dockerd.log")"
"${DOCKER[@]}" import "$D/img/rootfs.tar" "localhost/$PREFIX-busybox:1" >/dev/null
fi

# --- podman with crun, its own storage and config
if [[ $PODMAN -eq 1 ]]; then
mkdir -p "$D/podman/root" "$D/podman/tmp" "$RUN/podman"
cat >"$D/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=$(cat /proc/sys/kernel/pid_max):$(cat /proc/sys/kernel/pid_max)"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$D/podman/events.log"
runtime = "crun"
tmp_dir = "$D/podman/tmp"
[engine.runtimes]
crun = ["$D/bin/crun"]
EOF
cat >"$D/podman/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$D/podman/root"
runroot = "$RUN/podman"
EOF
export CONTAINERS_CONF=$D/podman/containers.conf CONTAINERS_STORAGE_CONF=$D/podman/storage.conf
podman --root "$D/podman/root" --runroot "$RUN/podman" --runtime crun --cgroup-manager cgroupfs \
  --events-backend file --tmpdir "$D/podman/tmp" \
  import -q "$D/img/rootfs.tar" "localhost/$PREFIX-busybox:1" >/dev/null
fi
log "up; source $D/env"
