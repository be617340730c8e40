#!/usr/bin/env bash
# Brings up a real node on this machine, everything private to one directory:
#   etcd 3.4 + kube-apiserver v1.20.2 (TLS, RBAC + Node authorization, static tokens),
#   containerd 1.6 (own root/state/socket, CRI, loopback-only CNI, locally imported images),
#   kubelet v1.20.2 (cgroupfs driver, cgroupRoot /<prefix>, in a private mount namespace so the
#   host's sysctls stay untouched), podman 4.3 (runc, cgroupfs, own storage).
# Then (unless --no-workload) the standard workload: pods of every QoS class, a privileged one,
# one with added capabilities, one with two containers; two podman containers.
#
# Usage: tests/realnode/up.sh [--no-kubelet] [--no-workload] DIR
#   DIR must not exist or be empty. Writes DIR/env (KEY=VALUE lines, shell-sourceable) naming
#   the API server URL, tokens, kubeconfigs, the kubelet's cgroup prefix, the sockets.
#   Tear down with tests/realnode/down.sh DIR (also after a failed up).
# Binaries come from tests/realnode/build.sh (run it first; cached after the first run).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
K8S_VERSION=v1.20.2
CACHE=${NODEGUARD_REALNODE_CACHE:-/var/cache/nodeguard-realnode}
BIN=$CACHE/$K8S_VERSION/bin

KUBELET=1 WORKLOAD=1
while [[ $# -gt 1 ]]; do
  case $1 in
    --no-kubelet) KUBELET=0 WORKLOAD=0 ;;
    --no-workload) WORKLOAD=0 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $# -eq 1 ]] || { sed -n '2,16p' "$0" >&2; exit 2; }
D=$1
exec 3>&2
log() { echo "realnode up: $*" >&3; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
need_bins=(kube-apiserver kubectl) need_cmds=(etcd openssl python3 curl)
if [[ $KUBELET -eq 1 ]]; then
  need_bins+=(kubelet pause)
  need_cmds+=(containerd containerd-shim-runc-v2 ctr runc podman conmon busybox unshare)
  [[ -x /usr/lib/cni/loopback ]] || die "/usr/lib/cni/loopback missing (containernetworking-plugins)"
fi
for b in "${need_bins[@]}"; do
  [[ -x $BIN/$b ]] || die "$BIN/$b missing: run tests/realnode/build.sh first"
done
for b in "${need_cmds[@]}"; do
  command -v "$b" >/dev/null || die "$b missing: run tests/realnode/build.sh first"
done

mkdir -p "$D"
[[ -z $(ls -A "$D") ]] || die "$D is not empty"
D=$(cd "$D" && pwd)
# The prefix names everything this bed makes outside DIR (cgroups, the node, images).
ID=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
PREFIX=ngrn-$ID
NODE=$PREFIX
echo "$PREFIX" >"$D/prefix"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.5 s; dies naming WHAT and the log.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$what not ready after ${secs}s"
    fi
    sleep 0.5
  done
}
# start NAME COMMAND...: runs COMMAND in the background, its pid in DIR/NAME.pid, log DIR/NAME.log.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$D/$name.log" 2>&1 3>&- &
  echo $! >"$D/$name.pid"
}

ETCD_PORT=$(free_port)
ETCD_PEER=$(free_port)
API_PORT=$(free_port)
KUBELET_PORT=$(free_port)
KUBELET_HEALTHZ=$(free_port)
API=https://127.0.0.1:$API_PORT

# --- PKI: a CA, the API server's serving cert for 127.0.0.1, the service-account key.
P=$D/pki
mkdir -p "$P"
(
  cd "$P"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$PREFIX-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key \
    -out apiserver.csr 2>/dev/null
  {
    echo 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default'
    echo 'basicConstraints=CA:FALSE'
    echo 'keyUsage=critical,digitalSignature,keyEncipherment'
    echo 'extendedKeyUsage=serverAuth'
  } >san.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

tok() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
ADMIN_TOKEN=$(tok)
AGENT_TOKEN=$(tok)
STRANGER_TOKEN=$(tok)
NODE_TOKEN=$(tok)
AGENT_USER=nodeguard-agent
cat >"$P/tokens.csv" <<EOF
$ADMIN_TOKEN,admin,uid-admin,"system:masters"
$AGENT_TOKEN,$AGENT_USER,uid-agent
$STRANGER_TOKEN,stranger,uid-stranger
$NODE_TOKEN,system:node:$NODE,uid-node,"system:nodes"
EOF

kubeconfig() { # FILE USER TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: realnode
  cluster:
    server: $API
    certificate-authority: $P/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: realnode
  context: {cluster: realnode, user: $2}
current-context: realnode
EOF
}
kubeconfig "$D/admin.kubeconfig" admin "$ADMIN_TOKEN"
kubeconfig "$D/agent.kubeconfig" "$AGENT_USER" "$AGENT_TOKEN"
kubeconfig "$D/stranger.kubeconfig" stranger "$STRANGER_TOKEN"
kubeconfig "$D/kubelet.kubeconfig" "system:node:$NODE" "$NODE_TOKEN"

CTRD_SOCK=$D/containerd/containerd.sock
PODMAN_CONF=$D/podman
# podman refuses a runroot longer than 50 characters.
PODMAN_RUN=/run/$PREFIX-podman
cat >"$D/env" <<EOF
REALNODE_DIR=$D
REALNODE_PREFIX=$PREFIX
REALNODE_NODE=$NODE
REALNODE_APISERVER=$API
REALNODE_CA=$P/ca.crt
REALNODE_ADMIN_TOKEN=$ADMIN_TOKEN
REALNODE_AGENT_TOKEN=$AGENT_TOKEN
REALNODE_AGENT_USER=$AGENT_USER
REALNODE_STRANGER_TOKEN=$STRANGER_TOKEN
REALNODE_ADMIN_KUBECONFIG=$D/admin.kubeconfig
REALNODE_AGENT_KUBECONFIG=$D/agent.kubeconfig
REALNODE_STRANGER_KUBECONFIG=$D/stranger.kubeconfig
REALNODE_KUBECTL=$BIN/kubectl
REALNODE_KUBELET=$KUBELET
REALNODE_CGROUP_PREFIX=/$PREFIX
REALNODE_CONTAINERD_SOCK=$CTRD_SOCK
REALNODE_CONTAINERD_NAMESPACE=k8s.io
REALNODE_PODMAN_ARGS='--root $PODMAN_CONF/root --runroot $PODMAN_RUN --runtime runc --cgroup-manager cgroupfs --events-backend file --tmpdir $PODMAN_CONF/tmp'
REALNODE_PODMAN_CONTAINERS_CONF=$PODMAN_CONF/containers.conf
REALNODE_PODMAN_STORAGE_CONF=$PODMAN_CONF/storage.conf
REALNODE_PODMAN_CGROUP_PARENT=/$PREFIX-podman
REALNODE_PODMAN_RUNROOT=$PODMAN_RUN
EOF

# --- etcd
log "etcd on 127.0.0.1:$ETCD_PORT"
start etcd etcd --name "$PREFIX" --data-dir "$D/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "$PREFIX=http://127.0.0.1:$ETCD_PEER" \
  --log-level warn --logger zap
wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver
log "kube-apiserver on $API"
start apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" --etcd-prefix "/$PREFIX" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --insecure-port 0 --cert-dir "$P" \
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --token-auth-file "$P/tokens.csv" --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction --disable-admission-plugins ServiceAccount \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-account-issuer "https://kubernetes.default.svc" \
  --service-cluster-ip-range 10.254.0.0/24 --allow-privileged=true \
  --profiling=false --v=1
KUBECTL=("$BIN/kubectl" --kubeconfig "$D/admin.kubeconfig")
wait_for 90 kube-apiserver "${KUBECTL[@]}" get --raw /readyz

# --- RBAC: the agent user gets exactly the project's ClusterRole, the stranger nothing.
"${KUBECTL[@]}" apply -f "$REPO/manifests/clusterrole.yaml" >/dev/null
ROLE=$("${KUBECTL[@]}" create --dry-run=client -o jsonpath='{.metadata.name}' \
  -f "$REPO/manifests/clusterrole.yaml")
"${KUBECTL[@]}" create clusterrolebinding "$PREFIX-agent" --clusterrole "$ROLE" \
  --user "$AGENT_USER" >/dev/null
echo "REALNODE_AGENT_CLUSTERROLE=$ROLE" >>"$D/env"
# --- The agents' namespace with the heartbeat Lease's Role as shipped
# (manifests/role-lease.yaml), bound to the agent user as manifests/rolebinding-lease.yaml
# binds it to the DaemonSet's ServiceAccount: agents given POD_NAMESPACE keep their Lease here.
AGENT_NAMESPACE=$("${KUBECTL[@]}" create --dry-run=client -o jsonpath='{.metadata.namespace}' \
  -f "$REPO/manifests/role-lease.yaml")
LEASE_ROLE=$("${KUBECTL[@]}" create --dry-run=client -o jsonpath='{.metadata.name}' \
  -f "$REPO/manifests/role-lease.yaml")
LEASE_BINDING=$("${KUBECTL[@]}" create --dry-run=client -o jsonpath='{.metadata.name}' \
  -f "$REPO/manifests/rolebinding-lease.yaml")
"${KUBECTL[@]}" create namespace "$AGENT_NAMESPACE" >/dev/null
"${KUBECTL[@]}" apply -f "$REPO/manifests/role-lease.yaml" >/dev/null
"${KUBECTL[@]}" -n "$AGENT_NAMESPACE" create rolebinding "$LEASE_BINDING" --role "$LEASE_ROLE" \
  --user "$AGENT_USER" >/dev/null
echo "REALNODE_AGENT_NAMESPACE=$AGENT_NAMESPACE" >>"$D/env"
# --- The PolicyReport CRDs the agent writes to (not built into Kubernetes).
"${KUBECTL[@]}" apply -f "$REPO/manifests/crds/policyreports.yaml" \
  -f "$REPO/manifests/crds/clusterpolicyreports.yaml" >/dev/null
"${KUBECTL[@]}" wait --for condition=established --timeout=60s \
  crd/policyreports.wgpolicyk8s.io crd/clusterpolicyreports.wgpolicyk8s.io >/dev/null
wait_for 30 "default namespace" "${KUBECTL[@]}" get namespace default
log "API server ready: $API (env in $D/env)"

if [[ $KUBELET -eq 0 ]]; then
  exit 0
fi

# --- images: busybox-static as a one-file image, pause from pause.c
IMG=$D/images
mkdir -p "$IMG/busybox/bin" "$IMG/busybox/etc" "$IMG/busybox/tmp" "$IMG/pause"
cp "$(command -v busybox)" "$IMG/busybox/bin/busybox"
for a in $("$IMG/busybox/bin/busybox" --list); do
  [[ -e $IMG/busybox/bin/$a ]] || ln -s busybox "$IMG/busybox/bin/$a"
done
mkdir -p "$IMG/busybox/proc" "$IMG/busybox/sys" "$IMG/busybox/dev" "$IMG/busybox/root"
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n' >"$IMG/busybox/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\n' >"$IMG/busybox/etc/group"
chmod 1777 "$IMG/busybox/tmp"
cp "$BIN/pause" "$IMG/pause/pause"
BUSYBOX_IMAGE=localhost/$PREFIX/busybox:1
PAUSE_IMAGE=localhost/$PREFIX/pause:1
python3 "$HERE/oci-image.py" "$IMG/busybox" "$BUSYBOX_IMAGE" "$IMG/busybox.tar"
python3 "$HERE/oci-image.py" "$IMG/pause" "$PAUSE_IMAGE" "$IMG/pause.tar" /pause
tar -C "$IMG/busybox" -cf "$IMG/busybox-rootfs.tar" .
cat >>"$D/env" <<EOF
REALNODE_BUSYBOX_IMAGE=$BUSYBOX_IMAGE
REALNODE_PAUSE_IMAGE=$PAUSE_IMAGE
REALNODE_PODMAN_IMAGE=localhost/$PREFIX-busybox:1
EOF

# --- containerd, with CRI
C=$D/containerd
mkdir -p "$C/root" "$C/state" "$C/cni" "$C/opt"
cat >"$C/cni/10-loopback.conflist" <<'EOF'
{"cniVersion": "0.4.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]}
EOF
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni"
EOF
log "containerd on $CTRD_SOCK"
start containerd containerd --config "$C/config.toml"
CTR=(ctr --address "$CTRD_SOCK" -n k8s.io)
wait_for 30 containerd "${CTR[@]}" version
"${CTR[@]}" images import --snapshotter overlayfs "$IMG/pause.tar" >/dev/null
"${CTR[@]}" images import --snapshotter overlayfs "$IMG/busybox.tar" >/dev/null
# List once, then search the text: `ctr … | grep -q` under pipefail fails at random, because
# grep exits at its first match and ctr, still writing, dies of SIGPIPE (CI saw exactly that).
images="$("${CTR[@]}" images ls -q)"
grep -qx "$PAUSE_IMAGE" <<<"$images" || die "pause image not imported"
grep -qx "$BUSYBOX_IMAGE" <<<"$images" || die "busybox image not imported"

# --- kubelet
K=$D/kubelet
mkdir -p "$K/root" "$K/sysctl"
cat >"$K/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /$PREFIX
cgroupsPerQOS: true
failSwapOn: false
makeIPTablesUtilChains: false
oomScoreAdj: 0
protectKernelDefaults: true
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
enableControllerAttachDetach: false
serializeImagePulls: false
EOF
# kubelet wants these sysctls; with protectKernelDefaults it only checks them. In its own mount
# namespace, files holding the wanted values are bound over them, so the host keeps its own.
cat >"$K/run.sh" <<EOF
#!/bin/sh
set -e
mount --make-rprivate /
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \\
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  f=\${kv%%=*}; v=\${kv#*=}
  if [ "\$(cat /proc/sys/\$f)" != "\$v" ]; then
    echo "\$v" > "$K/sysctl/\$(echo \$f | tr / _)"
    mount --bind "$K/sysctl/\$(echo \$f | tr / _)" "/proc/sys/\$f"
  fi
done
exec "$BIN/kubelet" --config "$K/config.yaml" --kubeconfig "$D/kubelet.kubeconfig" \\
  --root-dir "$K/root" --cert-dir "$K/pki" --hostname-override "$NODE" \\
  --container-runtime remote --container-runtime-endpoint "unix://$CTRD_SOCK" \\
  --runtime-request-timeout 2m --v 1
EOF
chmod +x "$K/run.sh"
# kubelet wants its cgroup root to exist in every hierarchy.
for h in /sys/fs/cgroup/*/; do
  [[ -f $h/cgroup.procs ]] || continue
  mkdir -p "$h$PREFIX"
  if [[ -f $h/cpuset.cpus ]]; then
    cat "$h/cpuset.cpus" >"$h$PREFIX/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h$PREFIX/cpuset.mems"
  fi
done
log "kubelet $NODE, cgroup root /$PREFIX"
start kubelet unshare --mount "$K/run.sh"
node_ready() {
  kill -0 "$(cat "$D/kubelet.pid")" 2>/dev/null || die "kubelet exited: $(grep -m1 '^F' "$D/kubelet.log")"
  [[ $("${KUBECTL[@]}" get node "$NODE" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
wait_for 120 "node $NODE Ready (see $D/kubelet.log)" node_ready

# --- podman: own storage and config; runc, cgroupfs, rlimits it may set without CAP_SYS_RESOURCE
mkdir -p "$PODMAN_CONF/root" "$PODMAN_RUN" "$PODMAN_CONF/tmp"
cat >"$PODMAN_CONF/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=$(cat /proc/sys/kernel/pid_max):$(cat /proc/sys/kernel/pid_max)"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$PODMAN_CONF/events.log"
runtime = "runc"
tmp_dir = "$PODMAN_CONF/tmp"
EOF
cat >"$PODMAN_CONF/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$PODMAN_CONF/root"
runroot = "$PODMAN_RUN"
EOF
export CONTAINERS_CONF=$PODMAN_CONF/containers.conf CONTAINERS_STORAGE_CONF=$PODMAN_CONF/storage.conf
PODMAN=(podman --root "$PODMAN_CONF/root" --runroot "$PODMAN_RUN" --runtime runc
  --cgroup-manager cgroupfs --events-backend file --tmpdir "$PODMAN_CONF/tmp")
"${PODMAN[@]}" import "$IMG/busybox-rootfs.tar" "localhost/$PREFIX-busybox:1" >/dev/null

if [[ $WORKLOAD -eq 1 ]]; then
  "$HERE/workload.sh" "$D"
fi
log "up: $API, node $NODE, cgroups under /$PREFIX; source $D/env"
