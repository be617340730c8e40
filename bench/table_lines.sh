#!/usr/bin/env bash
# Measurement: how many lines `nodeguard scan`'s table prints on a node of 44 containers, and
# whether anything critical or high is left out of it.
#
# The node is setuid_noise.sh's (44 runc containers from three Debian-based images, half of
# them without limits, a setuid file planted in the writable layer of every fourth) plus one
# container whose process holds the 14 capabilities of the default dangerous list (not every
# capability: not privileged, so each is its own dangerous_capability finding). It prints the
# line count of the table (default: medium and up listed, low counted, one process's
# capabilities folded per severity), of `--show-low`, and of BEFORE (another nodeguard binary,
# e.g. one built from an earlier commit) when given, and checks that every critical and high
# finding of the benchmark's containers in the JSON report is on a listed line of the default
# table.
#
# Goal: the default table <= 250 lines with nothing critical or high left out. A measurement:
# prints MISS and exits 0 unless STRICT=1.
#
# Usage (root): bench/table_lines.sh     BEFORE=/tmp/nodeguard-old NODEGUARD=target/debug/nodeguard bench/table_lines.sh
set -euo pipefail

CONTAINERS=${CONTAINERS:-44}
STRICT=${STRICT:-0}
BEFORE=${BEFORE:-}
CACHE=${CACHE:-/var/tmp/nodeguard-bench}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts runc containers)"
for tool in runc jq debootstrap mount umount; do
  command -v "$tool" >/dev/null || die "$tool not found (bash scripts/test-deps.sh)"
done
need_nodeguard

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
IMAGES=("$CACHE/minbase" "$CACHE/debian-tools" "$CACHE/app-layer:$CACHE/minbase")

image_processes() {
  echo '["/usr/bin/sleep","3600"]|["/usr/bin/dash","-c","exec /usr/bin/tail -f /dev/null"]'
}

bench_workdir nodeguard-table
cleanup() {
  local status=$?
  set +e
  echo
  teardown_containers
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "starting $CONTAINERS containers from ${#IMAGES[@]} Debian-based images, and one with dangerous capabilities"
for ((n = 0; n < CONTAINERS; n++)); do
  start_container "$n" "${IMAGES[$((n % ${#IMAGES[@]}))]}"
  if ((n % 4 == 0)); then
    mkdir -p "$CONTAINER_DIR/bundle/rootfs/tmp/.x"
    cp /usr/bin/true "$CONTAINER_DIR/bundle/rootfs/tmp/.x/rootshell"
    chmod 4755 "$CONTAINER_DIR/bundle/rootfs/tmp/.x/rootshell"
  fi
done
CONTAINER_CAPS=$(jq -c '. + ["CAP_SYS_ADMIN","CAP_SYS_PTRACE","CAP_SYS_MODULE","CAP_SYS_RAWIO",
  "CAP_NET_ADMIN","CAP_DAC_READ_SEARCH","CAP_BPF","CAP_PERFMON","CAP_SYS_BOOT","CAP_MAC_ADMIN",
  "CAP_MAC_OVERRIDE","CAP_SYS_TIME","CAP_SYSLOG","CAP_LINUX_IMMUTABLE"]' <<<"$DEFAULT_CAPS")
start_container "$CONTAINERS" "${IMAGES[0]}"
unset CONTAINER_CAPS
sleep 1

# A proc root holding only pid 1 and the benchmark's containers' processes (the machine runs
# other containers, whose findings come and go): symlinks to /proc for everything else.
mkdir -p "$WORK/proc"
for entry in /proc/*; do
  name=${entry#/proc/}
  [[ $name =~ ^[0-9]+$ ]] && continue
  ln -s "$entry" "$WORK/proc/$name"
done
ln -s /proc/1 "$WORK/proc/1"
while read -r id _; do
  for pid in $(runc --root "$RUNC_ROOT" ps --format json "$id" | jq -r '.[]'); do
    ln -sfn "/proc/$pid" "$WORK/proc/$pid"
  done
done <"$WORK/containers"
SCAN=(scan --proc-root "$WORK/proc")
readlink /proc/1/root >/dev/null 2>&1 || SCAN+=(--host-root /)
export COLUMNS=120
run_scan() { # BINARY OUT [FLAGS]
  local bin=$1 out=$2
  shift 2
  "$bin" "${SCAN[@]}" "$@" >"$out" 2>"$out.err" || [[ $? -eq 3 ]] || { cat "$out.err" >&2; die "$bin scan failed"; }
}
run_scan "$NODEGUARD" "$WORK/report.json" -o json
run_scan "$NODEGUARD" "$WORK/default.txt"
run_scan "$NODEGUARD" "$WORK/show-low.txt" --show-low
[[ -n $BEFORE ]] && run_scan "$BEFORE" "$WORK/before.txt"

# Every critical or high finding of the benchmark's containers has its subject on a listed line
# (indented, severity first).
ours=$(awk '{print $1}' "$WORK/containers" | jq -R . | jq -s .)
hidden=0
while IFS=$'\t' read -r sev subject; do
  grep -E "^  ${sev^^} " "$WORK/default.txt" | grep -qF -- "$subject" ||
    { echo "hidden: $sev $subject"; hidden=$((hidden + 1)); }
done < <(jq -r --argjson ours "$ours" '.findings[]
                | select(.container_id as $i | $ours | index($i))
                | select(.severity == "critical" or .severity == "high")
                | [.severity, .subject] | @tsv' "$WORK/report.json")

count() { jq --arg s "$1" '[.findings[] | select(.severity == $s)] | length' "$WORK/report.json"; }
lines() { wc -l <"$1"; }
echo
echo "node: $((CONTAINERS + 1)) containers; findings: critical $(count critical), high $(count high), medium $(count medium), low $(count low)"
[[ -n $BEFORE ]] && printf '%-44s %6s\n' "table lines, before ($BEFORE)" "$(lines "$WORK/before.txt")"
printf '%-44s %6s\n' "table lines, now (default)" "$(lines "$WORK/default.txt")"
printf '%-44s %6s\n' "table lines, now --show-low" "$(lines "$WORK/show-low.txt")"
echo "footer: $(grep '^not listed:' "$WORK/default.txt" || echo '(none)')"
echo "capability lines of the capable container: $(grep -c '^  [A-Z]* *dangerous_capability' "$WORK/default.txt" || true)"
echo "critical/high findings left out of the default table: $hidden"
verdict=ok
{ (($(lines "$WORK/default.txt") <= 250)) && ((hidden == 0)); } || verdict=MISS
echo "goal: <= 250 lines, nothing critical or high left out: $verdict"
[[ $verdict == ok || $STRICT != 1 ]]
