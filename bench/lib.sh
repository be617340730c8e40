# Shared by the bench scripts (sourced, not run): the release binary, runc containers under
# kubepods cgroup paths like containerd's, and their teardown; for the agent benches
# (daemon_bench.sh, exec_bench.sh) also the loaded containers, the agent's start on a free
# loopback port, its metrics and its stop.
#
# The caller sets `set -euo pipefail`, calls bench_workdir, installs a cleanup trap that calls
# teardown_containers (bench_cleanup does that and stop_agent), builds its images, defines
# image_processes IMAGE (echoing "INIT|EXEC" or "INIT|EXEC|SHELL": JSON argv lists, and a shell
# path the caller may use itself; base_image_processes serves make_base_images' images) and
# calls start_container N IMAGE (or start_loaded_container) for each container.

die() { echo "$(basename "$0" .sh): $*" >&2; exit 1; }

# Sets NODEGUARD to the release build unless the caller named a binary.
need_nodeguard() {
  if [[ -z ${NODEGUARD:-} ]]; then
    echo "building: cargo build --release -p nodeguard"
    (cd "$REPO" && cargo build --release -p nodeguard)
    NODEGUARD=$REPO/target/release/nodeguard
  fi
  [[ -x $NODEGUARD ]] || die "no nodeguard binary at $NODEGUARD"
}

cgroup_mounts() {
  awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i + 1) ~ /^cgroup2?$/) print $5; break } }' \
    /proc/self/mountinfo
}

# bench_workdir PREFIX: WORK (a new /tmp/PREFIX.XXXXXX), RUNC_ROOT, the lists teardown reads,
# and NEW_PARENTS (kubepods parents that did not exist before: removed at exit if still empty).
bench_workdir() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  RUNC_ROOT=$WORK/runc-root
  mkdir -p "$RUNC_ROOT" "$WORK/images" "$WORK/ctr"
  : >"$WORK/containers"   # "<id> <pod uid>" per started container
  : >"$WORK/mounts"       # overlay and bind mount points
  NEW_PARENTS=()
  local mnt parent
  for mnt in $(cgroup_mounts); do
    for parent in "$mnt/kubepods/burstable" "$mnt/kubepods"; do
      [[ -d $parent ]] || NEW_PARENTS+=("$parent")
    done
  done
}

# Kills and deletes the containers, unmounts what was mounted, removes the cgroups and WORK.
# Run from the caller's EXIT trap, with `set +e`.
teardown_containers() {
  echo "tearing down $(wc -l <"$WORK/containers") containers"
  local id pod mnt m
  while read -r id pod; do
    runc --root "$RUNC_ROOT" kill "$id" KILL >/dev/null 2>&1
  done <"$WORK/containers"
  local deleted
  while read -r id pod; do
    deleted=0
    for _ in 1 2 3 4 5; do
      if runc --root "$RUNC_ROOT" delete -f "$id" >/dev/null 2>&1; then deleted=1; break; fi
      sleep 0.2
    done
    ((deleted)) || echo "warning: runc delete -f $id failed" >&2
  done <"$WORK/containers"
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || echo "warning: cannot unmount $m" >&2
  done <"$WORK/mounts"
  while read -r id pod; do
    for mnt in $(cgroup_mounts); do
      rmdir "$mnt/kubepods/burstable/pod$pod/cri-containerd-$id" 2>/dev/null
      rmdir "$mnt/kubepods/burstable/pod$pod" 2>/dev/null
    done
  done <"$WORK/containers"
  for m in "${NEW_PARENTS[@]}"; do rmdir "$m" 2>/dev/null; done
  if grep -q " $WORK" /proc/self/mountinfo; then
    echo "warning: mounts remain under $WORK; not removing it" >&2
  else
    rm -rf "$WORK"
  fi
}

# ---------------------------------------------------------------------------------------------
# Images

# copy_with_libs IMAGE BINARY...: copies binaries and the shared libraries ldd names.
copy_with_libs() {
  local img=$1 bin lib
  shift
  for bin in "$@"; do
    mkdir -p "$img$(dirname "$bin")"
    cp -L "$bin" "$img$bin"
    for lib in $(ldd "$bin" | grep -oE '/[^ ]+\.so[^ ]*'); do
      [[ -e $img$lib ]] && continue
      mkdir -p "$img$(dirname "$lib")"
      cp -L "$lib" "$img$lib"
    done
  done
}

merged_usr_skeleton() {
  local img=$1
  mkdir -p "$img"/{usr/bin,usr/lib,usr/lib64,dev,proc,sys,etc,tmp,root}
  ln -s usr/bin "$img/bin"
  ln -s usr/lib "$img/lib"
  ln -s usr/lib64 "$img/lib64"
  chmod 1777 "$img/tmp"
}

# BUSYBOX_IMG (busybox-static with sh, sleep, tail, cat) and DEBIAN_IMG (dynamically linked
# sleep, tail and dash with their libraries), under WORK/images.
make_base_images() {
  BUSYBOX_IMG=$WORK/images/busybox
  mkdir -p "$BUSYBOX_IMG"/{bin,dev,proc,sys,etc,tmp,root}
  cp "$(command -v busybox)" "$BUSYBOX_IMG/bin/busybox"
  local applet
  for applet in sh sleep tail cat; do ln "$BUSYBOX_IMG/bin/busybox" "$BUSYBOX_IMG/bin/$applet"; done

  DEBIAN_IMG=$WORK/images/debian-tools
  merged_usr_skeleton "$DEBIAN_IMG"
  copy_with_libs "$DEBIAN_IMG" /usr/bin/sleep /usr/bin/tail /usr/bin/dash
}

# ---------------------------------------------------------------------------------------------
# Containers

DEFAULT_CAPS='["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW",
"CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT",
"CAP_KILL","CAP_AUDIT_WRITE"]'

# start_container N IMAGE: an overlay rootfs on IMAGE, runc run of image_processes' init (even
# N: memory/CPU/pids limits), then runc exec of its second process. Sets CONTAINER_ID and
# CONTAINER_DIR (its log is CONTAINER_DIR/log). CONTAINER_CAPS (a JSON list) replaces the
# default capabilities.
start_container() {
  local n=$1 img=$2
  local id pod dir init exec_args resources
  id=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
  pod=$(cat /proc/sys/kernel/random/uuid)
  dir=$WORK/ctr/$n
  mkdir -p "$dir"/{bundle/rootfs,upper,work}
  mount -t overlay overlay \
    -o "lowerdir=$img,upperdir=$dir/upper,workdir=$dir/work" "$dir/bundle/rootfs"
  echo "$dir/bundle/rootfs" >>"$WORK/mounts"
  runc spec --bundle "$dir/bundle"
  IFS='|' read -r init exec_args _ <<<"$(image_processes "$img")"
  if ((n % 2 == 0)); then
    resources='{"memory":{"limit":67108864},"cpu":{"quota":50000,"period":100000},"pids":{"limit":64}}'
  else
    resources='{}'
  fi
  jq --argjson args "$init" --argjson caps "${CONTAINER_CAPS:-$DEFAULT_CAPS}" --argjson res "$resources" \
    --arg cg "/kubepods/burstable/pod$pod/cri-containerd-$id" '
      .process.terminal = false | .process.args = $args | .process.noNewPrivileges = false
      | .process.capabilities = {bounding: $caps, effective: $caps, permitted: $caps,
                                 inheritable: [], ambient: []}
      | .root = {path: "rootfs", readonly: false}
      | .linux.cgroupsPath = $cg | .linux.resources += $res' \
    "$dir/bundle/config.json" >"$dir/config.json"
  mv "$dir/config.json" "$dir/bundle/config.json"
  echo "$id $pod" >>"$WORK/containers"
  if ! runc --root "$RUNC_ROOT" run -d --bundle "$dir/bundle" "$id" </dev/null >"$dir/log" 2>&1; then
    cat "$dir/log" >&2
    die "container $n did not start"
  fi
  local -a argv
  mapfile -t argv < <(jq -r '.[]' <<<"$exec_args")
  runc --root "$RUNC_ROOT" exec -d "$id" "${argv[@]}" </dev/null >>"$dir/log" 2>&1 ||
    { cat "$dir/log" >&2; die "exec in container $n failed"; }
  CONTAINER_ID=$id
  CONTAINER_DIR=$dir
}

# base_image_processes IMAGE: image_processes for make_base_images' two images.
base_image_processes() {
  case $1 in
    "$BUSYBOX_IMG") echo '["/bin/sleep","3600"]|["/bin/tail","-f","/dev/null"]|/bin/sh' ;;
    *) echo '["/usr/bin/sleep","3600"]|["/usr/bin/tail","-f","/dev/null"]|/usr/bin/dash' ;;
  esac
}

# start_loaded_container N IMAGE: start_container, plus a shell (image_processes' third field)
# that starts EXTRA_PER_CONTAINER sleeps and waits for them.
start_loaded_container() {
  local n=$1 img=$2 shell
  start_container "$n" "$img"
  IFS='|' read -r _ _ shell <<<"$(image_processes "$img")"
  runc --root "$RUNC_ROOT" exec -d "$CONTAINER_ID" "$shell" -c \
    "i=0; while [ \$i -lt $EXTRA_PER_CONTAINER ]; do sleep 3600 & i=\$((i + 1)); done; wait" \
    </dev/null >>"$CONTAINER_DIR/log" 2>&1 ||
    { cat "$CONTAINER_DIR/log" >&2; die "exec of the sleeps in container $n failed"; }
}

# ---------------------------------------------------------------------------------------------
# The agent (AGENT_PID, AGENT_LOG, URL)

AGENT_PID=""
CLK_TCK=$(getconf CLK_TCK)

port_free() { [[ -z $(ss -Hltn "sport = :$1") ]]; }

# pick_port: PORT, a free loopback port, and URL.
pick_port() {
  local candidate
  PORT=""
  for _ in $(seq 50); do
    candidate=$((20000 + RANDOM % 20000))
    if port_free "$candidate"; then PORT=$candidate; break; fi
  done
  [[ -n $PORT ]] || die "no free loopback port found"
  URL=http://127.0.0.1:$PORT
}

metric() { # metric SERIES: its value in /metrics (0.0.4 text), empty when absent
  # awk reads to the end: exiting early would fail curl's write (23) and, under pipefail, this.
  curl -sf --max-time 10 "$URL/metrics" | awk -v s="$1" '$1 == s && !found { print $2; found = 1 }'
}
scans_done() { grep -c '"message":"scan complete"' "$AGENT_LOG" || true; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$AGENT_PID/stat"; }
status_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$AGENT_PID/status"; }

stop_agent() {
  [[ -n $AGENT_PID ]] || return 0
  if kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -TERM "$AGENT_PID"
    for _ in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$AGENT_PID" 2>/dev/null && { echo "warning: agent ignored SIGTERM; killing it" >&2; kill -KILL "$AGENT_PID"; }
    wait "$AGENT_PID" 2>/dev/null || true
  fi
  AGENT_PID=""
}

# The EXIT trap of an agent bench: `trap bench_cleanup EXIT`.
# A caller with several agents defines bench_cleanup_hook to stop the others.
bench_cleanup() {
  local status=$?
  set +e
  echo
  if declare -F bench_cleanup_hook >/dev/null; then bench_cleanup_hook; fi
  stop_agent
  teardown_containers
  exit "$status"
}
