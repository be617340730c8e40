#!/usr/bin/env bash
# Benchmark: `nodeguard scan` against the shell procedure a user would write today.
#
# Sets up N runc containers (default 40) from three shared images — busybox-static, a few
# dynamically linked Debian binaries, python3 — each running two processes, half of them with
# memory/CPU/pids limits, under kubepods cgroup paths like containerd's. Then, on the same node:
#
#   (a) shell: for each container cgroup, read memory.limit_in_bytes, cpu.cfs_quota_us,
#       cpu.cfs_period_us, pids.max; for each of its processes `sha256sum /proc/PID/exe` and the
#       Cap* lines of /proc/PID/status;
#   (b) nodeguard scan --output json --no-fs (release build);
#
# several repetitions each (hyperfine when installed), and prints the wall-time ratio,
# nodeguard's peak RSS (/usr/bin/time -v) and SHA-256 throughput of `nodeguard hash` against
# `openssl dgst -sha256` on a 1 GiB file. Everything it sets up is torn down at exit.
#
# Targets: >= 10x faster than the shell, peak RSS <= 25 MiB, hashing within 15% of openssl.
# This is a measurement, not a test: it reports MISS and exits 0 unless STRICT=1.
#
# Usage (root, from anywhere):
#   bench/scan_vs_shell.sh
#   CONTAINERS=80 REPS=10 NODEGUARD=/path/to/nodeguard bench/scan_vs_shell.sh
set -euo pipefail

CONTAINERS=${CONTAINERS:-40}
REPS=${REPS:-5}
HASH_MIB=${HASH_MIB:-1024}
STRICT=${STRICT:-0}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts runc containers)"
for tool in runc busybox jq sha256sum openssl mount umount; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install runc busybox-static jq openssl)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"

need_nodeguard

bench_workdir nodeguard-bench

cleanup() {
  local status=$?
  set +e
  echo
  teardown_containers
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Images

make_base_images

IMAGES=("$BUSYBOX_IMG" "$DEBIAN_IMG")
PYTHON=/usr/bin/python3.11
if [[ -x $PYTHON && -d /usr/lib/python3.11 ]]; then
  PYTHON_IMG=$WORK/images/python
  merged_usr_skeleton "$PYTHON_IMG"
  copy_with_libs "$PYTHON_IMG" "$PYTHON" /usr/bin/sleep
  # The standard library: hard links when possible (same filesystem), else a copy.
  cp -al /usr/lib/python3.11 "$PYTHON_IMG/usr/lib/" 2>/dev/null ||
    cp -a /usr/lib/python3.11 "$PYTHON_IMG/usr/lib/"
  IMAGES+=("$PYTHON_IMG")
fi

# The two processes of a container of each image, as JSON argv lists separated by "|": init,
# and one started with runc exec.
image_processes() {
  case $1 in
    "$BUSYBOX_IMG") echo '["/bin/sleep","3600"]|["/bin/tail","-f","/dev/null"]' ;;
    "$DEBIAN_IMG") echo '["/usr/bin/sleep","3600"]|["/usr/bin/dash","-c","exec /usr/bin/tail -f /dev/null"]' ;;
    *) echo "[\"$PYTHON\",\"-c\",\"import time; time.sleep(3600)\"]|[\"/usr/bin/sleep\",\"3600\"]" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Containers

echo "starting $CONTAINERS containers from ${#IMAGES[@]} images"
t0=$(date +%s%N)
for ((n = 0; n < CONTAINERS; n++)); do
  start_container "$n" "${IMAGES[$((n % ${#IMAGES[@]}))]}"
done
sleep 1 # let the exec'd shells exec their final programs
echo "started in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

# ---------------------------------------------------------------------------------------------
# (a) the shell procedure, as a script file so hyperfine runs it as one command

SHELL_SCAN=$WORK/shell-scan.sh
cat >"$SHELL_SCAN" <<'EOF'
#!/bin/bash
# For each pod container: its limits, and for each process its executable digest and caps.
for cg in /sys/fs/cgroup/memory/kubepods/pod*/*/ /sys/fs/cgroup/memory/kubepods/*/pod*/*/; do
  [ -d "$cg" ] || continue
  rel=${cg#/sys/fs/cgroup/memory}
  echo "container $rel"
  cat "${cg}memory.limit_in_bytes"
  cat "/sys/fs/cgroup/cpu${rel}cpu.cfs_quota_us" "/sys/fs/cgroup/cpu${rel}cpu.cfs_period_us"
  cat "/sys/fs/cgroup/pids${rel}pids.max"
  for pid in $(cat "${cg}cgroup.procs"); do
    sha256sum "/proc/$pid/exe"
    grep '^Cap' "/proc/$pid/status"
  done
done
exit 0
EOF
chmod +x "$SHELL_SCAN"
[[ -d /sys/fs/cgroup/memory ]] ||
  echo "note: no cgroup v1 memory hierarchy; the shell procedure is written for v1 and will find nothing"

NG_SCAN=("$NODEGUARD" scan --output json --no-fs)
# Where root cannot look into pid 1 (a session with a smaller capability bounding set than
# pid 1, as on this project's test VM), host paths are reached directly: we are in the host's
# mount namespace.
if ! readlink /proc/1/root >/dev/null 2>&1; then
  NG_SCAN+=(--host-root /)
fi

# Sanity: both see our containers.
shell_containers=$(bash "$SHELL_SCAN" 2>/dev/null | grep -c '^container ' || true)
shell_processes=$(bash "$SHELL_SCAN" 2>/dev/null | grep -c '/exe$' || true)
"${NG_SCAN[@]}" >"$WORK/report.json"
ours=$(awk '{print $1}' "$WORK/containers" | jq -R . | jq -s .)
found=$(jq --argjson ours "$ours" '[.containers[] | select(.id as $i | $ours | index($i))] | length' \
  "$WORK/report.json")
echo "shell sees $shell_containers containers / $shell_processes processes;" \
  "nodeguard reports $(jq '.containers | length' "$WORK/report.json") containers," \
  "$(jq '.processes | length' "$WORK/report.json") processes, $found/$CONTAINERS of ours"
# What each side reads: the shell hashes every container process's executable; nodeguard hashes
# every distinct executable on the node once (host processes included, which on a busy machine
# can dominate: compilers, language servers).
shell_bytes=0
for cg in /sys/fs/cgroup/memory/kubepods/pod*/*/ /sys/fs/cgroup/memory/kubepods/*/pod*/*/; do
  [[ -f ${cg}cgroup.procs ]] || continue
  for pid in $(cat "${cg}cgroup.procs"); do
    shell_bytes=$((shell_bytes + $(stat -Lc %s "/proc/$pid/exe" 2>/dev/null || echo 0)))
  done
done
ng_bytes=$(jq '.stats.bytes_hashed // 0' "$WORK/report.json")
echo "nodeguard stats: $(jq -c '.stats | {files_hashed, hash_cache_hits, bytes_hashed}' "$WORK/report.json")"
[[ $found -eq $CONTAINERS ]] || echo "WARNING: nodeguard did not report all benchmark containers"


# mean_seconds CMD...: mean wall time of REPS runs (after one warm-up), output discarded.
mean_seconds() {
  if command -v hyperfine >/dev/null; then
    if ! hyperfine -N --warmup 1 --runs "$REPS" --export-json "$WORK/hf.json" \
      -- "$(printf '%q ' "$@")" >"$WORK/hf.log" 2>&1; then
      cat "$WORK/hf.log" >&2
      die "hyperfine failed for: $*"
    fi
    jq '.results[0].mean' "$WORK/hf.json"
  else
    "$@" >/dev/null 2>&1
    local start end
    start=$(date +%s%N)
    for ((r = 0; r < REPS; r++)); do "$@" >/dev/null 2>&1; done
    end=$(date +%s%N)
    awk -v a="$start" -v b="$end" -v n="$REPS" 'BEGIN { printf "%.6f", (b - a) / 1e9 / n }'
  fi
}

# (c) like for like: nodeguard on a proc root that holds only the containers' processes (bind
# mounts of /proc/PID) plus pid 1, so it hashes what the shell hashes and no host binaries.
FAKE_PROC=$WORK/proc
mkdir "$FAKE_PROC"
fake_bind() {
  mkdir "$FAKE_PROC/$1"
  mount --bind "/proc/$2" "$FAKE_PROC/$1"
  echo "$FAKE_PROC/$1" >>"$WORK/mounts"
}
if readlink /proc/1/root >/dev/null 2>&1; then fake_bind 1 1; else fake_bind 1 $$; fi
for cg in /sys/fs/cgroup/memory/kubepods/pod*/*/ /sys/fs/cgroup/memory/kubepods/*/pod*/*/; do
  [[ -f ${cg}cgroup.procs ]] || continue
  for pid in $(cat "${cg}cgroup.procs"); do fake_bind "$pid" "$pid"; done
done
for entry in /proc/*; do
  name=${entry#/proc/}
  [[ $name =~ ^[0-9]+$ ]] || ln -s "$entry" "$FAKE_PROC/$name"
done
NG_SCAN_OURS=("$NODEGUARD" scan --output json --no-fs --proc-root "$FAKE_PROC")

echo
echo "timing $REPS runs each ($(command -v hyperfine >/dev/null && echo hyperfine || echo 'date loop'))"
shell_s=$(mean_seconds bash "$SHELL_SCAN")
ng_s=$(mean_seconds "${NG_SCAN[@]}")
ng_ours_s=$(mean_seconds "${NG_SCAN_OURS[@]}")

# Peak RSS: the largest of three runs.
rss_kib=0
for _ in 1 2 3; do
  r=$(/usr/bin/time -v "${NG_SCAN[@]}" 2>&1 >/dev/null | awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }')
  ((r > rss_kib)) && rss_kib=$r
done

# ---------------------------------------------------------------------------------------------
# Hashing throughput on a file in the page cache

HASH_FILE=$WORK/hash-input.bin
head -c "$((HASH_MIB * 1024 * 1024))" /dev/urandom >"$HASH_FILE"
cat "$HASH_FILE" >/dev/null
openssl_digest=$(openssl dgst -sha256 -r "$HASH_FILE" | cut -c1-64)
ng_digest=$("$NODEGUARD" hash "$HASH_FILE" 2>/dev/null | grep -oE '\b[0-9a-f]{64}\b' | head -1 || true)
openssl_s=$(mean_seconds openssl dgst -sha256 "$HASH_FILE")
if [[ -n $ng_digest ]]; then
  ng_hash_s=$(mean_seconds "$NODEGUARD" hash "$HASH_FILE")
else
  ng_hash_s=""
fi

# ---------------------------------------------------------------------------------------------
# Report

verdict() { if [[ $1 == 1 ]]; then echo "ok"; else echo "MISS"; fi; }
misses=0
ratio=$(awk -v a="$shell_s" -v b="$ng_s" 'BEGIN { printf "%.1f", a / b }')
ratio_ok=$(awk -v r="$ratio" 'BEGIN { print (r >= 10) ? 1 : 0 }')
rss_mib=$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')
rss_ok=$(awk -v k="$rss_kib" 'BEGIN { print (k <= 25 * 1024) ? 1 : 0 }')
openssl_mbs=$(awk -v s="$openssl_s" -v m="$HASH_MIB" 'BEGIN { printf "%.0f", m / s }')
((ratio_ok)) || misses=$((misses + 1))
((rss_ok)) || misses=$((misses + 1))

echo
echo "==== nodeguard scan vs shell: $CONTAINERS containers, $shell_processes container processes ===="
printf '  shell procedure        %8.3f s\n' "$shell_s"
printf '  nodeguard scan --no-fs %8.3f s\n' "$ng_s"
printf '  speed-up               %8s x    (target >= 10x)   %s\n' "$ratio" "$(verdict "$ratio_ok")"
ratio_ours=$(awk -v a="$shell_s" -v b="$ng_ours_s" 'BEGIN { printf "%.1f", a / b }')
printf '  nodeguard, container processes only (--proc-root) %.3f s: %s x\n' "$ng_ours_s" "$ratio_ours"
printf '  bytes hashed per run   shell %s MiB, nodeguard %s MiB (whole node, each file once)\n' \
  "$((shell_bytes / 1048576))" "$((ng_bytes / 1048576))"
printf '  nodeguard peak RSS     %8s MiB  (target <= 25)    %s\n' "$rss_mib" "$(verdict "$rss_ok")"
printf '  openssl dgst -sha256   %8s MiB/s\n' "$openssl_mbs"
if [[ -n $ng_hash_s ]]; then
  ng_mbs=$(awk -v s="$ng_hash_s" -v m="$HASH_MIB" 'BEGIN { printf "%.0f", m / s }')
  hash_ok=$(awk -v a="$ng_mbs" -v b="$openssl_mbs" 'BEGIN { print (a >= 0.85 * b) ? 1 : 0 }')
  [[ $ng_digest == "$openssl_digest" ]] || { hash_ok=0; echo "  DIGEST MISMATCH: nodeguard $ng_digest, openssl $openssl_digest"; }
  ((hash_ok)) || misses=$((misses + 1))
  printf '  nodeguard hash         %8s MiB/s (target >= 85%% of openssl) %s\n' "$ng_mbs" "$(verdict "$hash_ok")"
else
  echo "  nodeguard hash         skipped: \`$NODEGUARD hash FILE\` printed no digest"
fi
echo "  (2 shared cores; other load on the machine skews both sides)"

if [[ $STRICT == 1 && $misses -gt 0 ]]; then
  exit 1
fi
