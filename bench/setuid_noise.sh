#!/usr/bin/env bash
# Measurement: how much of `nodeguard scan`'s medium-or-worse output is the distribution's own
# setuid/setgid files (and file capabilities: Debian's ping), on a node of Debian-based runc
# containers.
#
# Images (cached under $CACHE, built with Debian's debootstrap):
#   minbase  debootstrap --variant=minbase bookworm (like debian:bookworm-slim; 11 setuid/setgid files)
#   tools    minbase + sudo, openssh-client, iputils-ping, cron (a typical "debug tools" image)
#   app      minbase as the lower layer + an application layer that bakes in one setuid helper of
#            its own (/usr/local/bin/suid-helper: not the distribution's, must stay medium)
# $CONTAINERS containers (default 44) from the three images run `sleep` and `dash -c tail`, half of
# them with limits, under kubepods cgroups like containerd's. Every fourth gets a setuid file
# planted in its writable layer after start (must be high).
#
# It scans twice with the same binary: the default policy, and `strict_setuid: true` (the old
# behaviour: every image setuid/setgid file at medium). For each it prints, over the benchmark's
# own containers, the medium-or-worse findings and the share that are the distribution's own
# files. "The distribution's own" is decided outside nodeguard: the finding's file is in an image
# layer and `dpkg -S PATH` inside that image names the package that ships it.
# It also checks that every planted file is reported high in both runs.
#
# Goal: the default share <= 10 % (it was 67 % on the field node). A measurement: prints MISS and
# exits 0 unless STRICT=1.
#
# Usage (root): bench/setuid_noise.sh     CONTAINERS=20 NODEGUARD=target/debug/nodeguard bench/setuid_noise.sh
set -euo pipefail

CONTAINERS=${CONTAINERS:-44}
STRICT=${STRICT:-0}
CACHE=${CACHE:-/var/tmp/nodeguard-bench}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts runc containers)"
for tool in runc jq debootstrap chroot mount umount; do
  command -v "$tool" >/dev/null || die "$tool not found (bash scripts/test-deps.sh)"
done

need_nodeguard

# ---- images (cached) -----------------------------------------------------------------------
mkdir -p "$CACHE"
debian_root() { # NAME [PACKAGES]
  local name=$1 include=${2:-}
  [[ -d $CACHE/$name ]] && return
  echo "debootstrap --variant=minbase ${include:+--include=$include }bookworm (once, ~30-60 s)"
  rm -rf "$CACHE/$name.tmp"
  debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$CACHE/$name.tmp" \
    "$MIRROR" >"$CACHE/$name-debootstrap.log" 2>&1 ||
    die "debootstrap failed, see $CACHE/$name-debootstrap.log"
  mv "$CACHE/$name.tmp" "$CACHE/$name"
}
debian_root minbase
debian_root debian-tools sudo,openssh-client,iputils-ping,cron
if [[ ! -d $CACHE/app-layer ]]; then
  rm -rf "$CACHE/app-layer.tmp"
  mkdir -p "$CACHE/app-layer.tmp/usr/local/bin" "$CACHE/app-layer.tmp/srv/app"
  cp /usr/bin/true "$CACHE/app-layer.tmp/usr/local/bin/suid-helper"
  chmod 4755 "$CACHE/app-layer.tmp/usr/local/bin/suid-helper"
  for i in $(seq 1 200); do echo "$i" >"$CACHE/app-layer.tmp/srv/app/static-$i.txt"; done
  mv "$CACHE/app-layer.tmp" "$CACHE/app-layer"
fi
MINBASE=$CACHE/minbase
TOOLS=$CACHE/debian-tools
APP="$CACHE/app-layer:$CACHE/minbase" # overlay lowerdir: top layer first
IMAGES=("$MINBASE" "$TOOLS" "$APP")

image_processes() {
  echo '["/usr/bin/sleep","3600"]|["/usr/bin/dash","-c","exec /usr/bin/tail -f /dev/null"]'
}

# ---- containers ---------------------------------------------------------------------------
bench_workdir nodeguard-setuid
cleanup() {
  local status=$?
  set +e
  echo
  teardown_containers
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "starting $CONTAINERS containers from ${#IMAGES[@]} Debian-based images"
: >"$WORK/planted"
for ((n = 0; n < CONTAINERS; n++)); do
  start_container "$n" "${IMAGES[$((n % ${#IMAGES[@]}))]}"
  if ((n % 4 == 0)); then
    mkdir -p "$CONTAINER_DIR/bundle/rootfs/tmp/.x"
    cp /usr/bin/true "$CONTAINER_DIR/bundle/rootfs/tmp/.x/rootshell"
    chmod 4755 "$CONTAINER_DIR/bundle/rootfs/tmp/.x/rootshell"
    echo "$CONTAINER_ID /tmp/.x/rootshell" >>"$WORK/planted"
  fi
done
sleep 1

# The image each container runs (for dpkg -S), by container id.
: >"$WORK/image-of"
n=0
while read -r id _; do
  echo "$id ${IMAGES[$((n % ${#IMAGES[@]}))]}" >>"$WORK/image-of"
  n=$((n + 1))
done <"$WORK/containers"

SCAN=("$NODEGUARD" scan --output json)
# Where root cannot look into pid 1 (a session with a smaller bounding set than pid 1), host
# paths are reached directly: we are in the host's mount namespace.
readlink /proc/1/root >/dev/null 2>&1 || SCAN+=(--host-root /)
printf 'strict_setuid: true\n' >"$WORK/strict.yaml"

ours=$(awk '{print $1}' "$WORK/containers" | jq -R . | jq -s .)

# is_distro ID PATH: the path is shipped by a Debian package of the container's image.
is_distro() {
  local img
  img=$(awk -v id="$1" '$1 == id {print $2}' "$WORK/image-of")
  img=${img##*:} # the app image's distribution files are in its lowest layer
  chroot "$img" dpkg -S "$2" >/dev/null 2>&1 || chroot "$img" dpkg -S "${2#/usr}" >/dev/null 2>&1
}

# measure NAME [FLAGS]: prints "medium_or_worse distro share"
measure() {
  local name=$1
  shift
  "${SCAN[@]}" "$@" >"$WORK/$name.json" 2>"$WORK/$name.err" || {
    [[ $? -eq 3 ]] || { cat "$WORK/$name.err" >&2; die "scan ($name) failed"; }
  }
  jq -r --argjson ours "$ours" '
    . as $r
    | [.findings[] | select(.container_id as $i | $ours | index($i))
       | select(.severity == "medium" or .severity == "high" or .severity == "critical")]
    | .[] | [.container_id, .kind, .severity, (.path // "-"),
             ((.container_id) as $c | (.path) as $p
              | ([$r.files[] | select(.container_id == $c and .path == $p) | .layer] | first) // "-")]
    | @tsv' "$WORK/$name.json" >"$WORK/$name.tsv"
  local total distro=0 cid kind sev path layer
  total=$(wc -l <"$WORK/$name.tsv")
  while IFS=$'\t' read -r cid kind sev path layer; do
    [[ $kind == setuid_file || $kind == setgid_file || $kind == file_capability ]] || continue
    [[ $layer == image ]] || continue
    is_distro "$cid" "$path" && distro=$((distro + 1))
  done <"$WORK/$name.tsv"
  echo "$total $distro"
}

read -r old_total old_distro <<<"$(measure strict --config "$WORK/strict.yaml")"
read -r new_total new_distro <<<"$(measure default)"
share() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b > 0 ? 100 * a / b : 0) }'; }
old_share=$(share "$old_distro" "$old_total")
new_share=$(share "$new_distro" "$new_total")

planted_ok=1
for run in strict default; do
  while read -r id path; do
    sev=$(jq -r --arg id "$id" --arg p "$path" \
      '[.findings[] | select(.container_id == $id and .path == $p and .kind == "setuid_file") | .severity] | first // "missing"' \
      "$WORK/$run.json")
    [[ $sev == high ]] || { echo "planted $path in ${id:0:12}: $sev ($run)"; planted_ok=0; }
  done <"$WORK/planted"
done
helper=$(jq -r '[.findings[] | select(.path == "/usr/local/bin/suid-helper") | .severity] | unique | join(",")' \
  "$WORK/default.json")

echo
echo "containers: $CONTAINERS (minbase, minbase+tools, minbase+app layer), planted setuid files: $(wc -l <"$WORK/planted")"
printf '%-34s %8s %10s %7s\n' "" "med+" "distro's" "share"
printf '%-34s %8s %10s %6s%%\n' "before (strict_setuid: true)" "$old_total" "$old_distro" "$old_share"
printf '%-34s %8s %10s %6s%%\n' "now (default policy)" "$new_total" "$new_distro" "$new_share"
echo "planted files high in both runs: $( ((planted_ok)) && echo yes || echo NO)"
echo "the app's own image setuid helper: ${helper:-not reported}"
echo "default medium-or-worse by kind: $(cut -f2 "$WORK/default.tsv" | sort | uniq -c | sort -rn | awk '{printf "%s %s, ", $2, $1}')"
verdict=ok
{ ((new_share <= 10)) && ((planted_ok)); } || verdict=MISS
echo "goal: share <= 10 % and planted files high: $verdict"
[[ $verdict == ok || $STRICT != 1 ]]
