#!/usr/bin/env bash
# Installs what nodeguard's tests run against, on Debian 12 as root. Safe to run again:
# only missing packages are installed.
#
#   runc, busybox-static        real containers with a one-file image (tests/*.rs)
#   libcap2-bin                 capsh/getcap/setcap: capability ground truth
#   prometheus                  prometheus + promtool: scrape and rule tests
#   debootstrap                 a realistic Debian root for filesystem benchmarks
#   jq, attr, time, openssl     JSON, xattrs, peak RSS, hashing baseline, TLS ground truth
#   curl, iproute2              a verifying HTTPS client; network namespaces (ip)
#   util-linux, findutils, procps, coreutils   mount/umount, find, ps, sha256sum
#   ca-certificates             cargo fetching crates over HTTPS
#   zstd                        zstd layer blobs as ground truth for the image index (nodeguard-image tests)
#   gcc, libc6-dev              static helper programs for the short-lived exec tests (tests/support/short_lived)
#   tests/realnode/build.sh     the real-node tier: containerd, podman, etcd, docker.io, crun
#                               from Debian, and kube-apiserver/kubelet/kubectl v1.20.2 built from Debian's source
#                               package (~5 min once, then cached in /var/cache/nodeguard-realnode)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(
  runc busybox-static libcap2-bin prometheus debootstrap jq attr time openssl curl iproute2
  util-linux findutils procps coreutils ca-certificates zstd gcc libc6-dev
)
if [[ $(id -u) -ne 0 ]]; then
  echo "run as root: the integration tests start real containers" >&2
  exit 1
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != *'install ok installed'* ]]; then
    missing+=("$pkg")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "test dependencies: all installed"
else
  echo "test dependencies: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's prometheus package may try to start a service; there is none to start here, and the
# tests start their own servers on loopback ports.
grep -qw overlay /proc/filesystems || modprobe overlay || true
# The real node the tests in tests/realnode.rs and tests/api_auth.rs run against, and Docker
# and crun for tests/privileged_runtimes.rs.
bash "$(dirname "$0")/../tests/realnode/build.sh"
