#!/usr/bin/env bash
# Benchmark: nodeguard-fscan against find/getcap on overlay containers.
#
# Builds (once, cached under $CACHE) three images and mounts $CONTAINERS overlays from them,
# the way containerd does (image layers as lowerdir, a fresh upper per container):
#   minbase  debootstrap --variant=minbase bookworm (one layer)
#   extra    minbase + a layer of ~5,000 extra files, setuid and file-capability tools
#   hostusr  a hard-link copy of this host's /usr (one big layer)
# Every fifth container gets a setuid and a file-capability file planted in its upper layer.
#
# Then, with a warm page cache, per run:
#   find      `find M/. -xdev -perm /6000 -type f` for every container
#   getcap    `find M/. -xdev -type f -print0 | xargs -0 getcap` for every container
#   fscan     one scan of all containers in overlay mode (each image layer walked once),
#             first scan (empty cache) and a second scan in the same process (layer cache hit);
#             and one scan of all merged roots (merged mode: no layer sharing)
# and for one container alone: `find -perm` against fscan (merged and overlay mode).
# It checks fscan's result equals find+getcap for every container, and prints wall-time
# ratios (median of $REPS runs) and fscan's peak RSS (/usr/bin/time -v).
#
# Targets: >= 10x faster than find+getcap for 40 containers, no slower than `find -perm`
# alone on one root, peak RSS <= 40 MiB. A measurement: prints MISS, exits 0 unless STRICT=1.
#
# Usage (root): bench/fscan_vs_find.sh        CONTAINERS=80 REPS=5 bench/fscan_vs_find.sh
set -euo pipefail

CONTAINERS=${CONTAINERS:-40}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
STRICT=${STRICT:-0}
CACHE=${CACHE:-/var/tmp/nodeguard-bench}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "fscan_vs_find: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (mounts overlays, setcap)"
for tool in find getcap setcap xargs jq debootstrap mount umount; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"

if [[ -z ${FSCAN:-} ]]; then
  echo "building: cargo build --release -p nodeguard-fscan --example fscan"
  (cd "$REPO" && cargo build --release -q -p nodeguard-fscan --example fscan)
  FSCAN=$REPO/target/release/examples/fscan
fi
[[ -x $FSCAN ]] || die "no fscan example binary at $FSCAN"

# ---- images (cached) -------------------------------------------------------------------
mkdir -p "$CACHE"
if [[ ! -d $CACHE/minbase ]]; then
  echo "debootstrap --variant=minbase bookworm (once, ~30 s)"
  rm -rf "$CACHE/minbase.tmp"
  debootstrap --variant=minbase bookworm "$CACHE/minbase.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || die "debootstrap failed, see $CACHE/debootstrap.log"
  mv "$CACHE/minbase.tmp" "$CACHE/minbase"
fi
if [[ ! -d $CACHE/extra ]]; then
  echo "building the 'extra' layer"
  rm -rf "$CACHE/extra.tmp"
  mkdir -p "$CACHE/extra.tmp/usr/share/extra" "$CACHE/extra.tmp/usr/local/bin"
  for d in $(seq 0 49); do
    mkdir -p "$CACHE/extra.tmp/usr/share/extra/d$d"
    for f in $(seq 0 99); do echo "$d $f" >"$CACHE/extra.tmp/usr/share/extra/d$d/f$f"; done
  done
  cp /bin/true "$CACHE/extra.tmp/usr/local/bin/suid-tool" && chmod 4755 "$CACHE/extra.tmp/usr/local/bin/suid-tool"
  cp /bin/true "$CACHE/extra.tmp/usr/local/bin/sgid-tool" && chmod 2755 "$CACHE/extra.tmp/usr/local/bin/sgid-tool"
  cp /bin/true "$CACHE/extra.tmp/usr/local/bin/ping" && setcap cap_net_raw+ep "$CACHE/extra.tmp/usr/local/bin/ping"
  mv "$CACHE/extra.tmp" "$CACHE/extra"
fi
if [[ ! -d $CACHE/hostusr ]]; then
  echo "hard-link copy of /usr (once)"
  rm -rf "$CACHE/hostusr.tmp"
  mkdir -p "$CACHE/hostusr.tmp"
  cp -al /usr "$CACHE/hostusr.tmp/usr"
  # Hard links to the host's setuid/setgid/capability binaries would keep old vulnerable
  # versions alive after an upgrade: give those files their own copies.
  { find "$CACHE/hostusr.tmp" -xdev -type f -perm /6000 -print0
    find "$CACHE/hostusr.tmp" -xdev -type f -print0 | xargs -0 -r getcap | cut -d' ' -f1 | tr '\n' '\0'
  } | while IFS= read -r -d '' f; do cp -a "$f" "$f.copy" && mv -f "$f.copy" "$f"; done
  mv "$CACHE/hostusr.tmp" "$CACHE/hostusr"
fi
image_lowers() { # image index -> lowerdir list (top first, ':'-separated)
  case $1 in
    0) echo "$CACHE/minbase" ;;
    1) echo "$CACHE/extra:$CACHE/minbase" ;;
    2) echo "$CACHE/hostusr" ;;
  esac
}

# ---- containers --------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/fscan-bench.XXXXXX)
: >"$WORK/mounts"
cleanup() {
  while read -r m; do umount -l "$m" 2>/dev/null || true; done <"$WORK/mounts"
  rm -rf "$WORK"
}
trap cleanup EXIT

OVERLAY_SPECS=()
MERGED_SPECS=()
MERGED=()
for i in $(seq 0 $((CONTAINERS - 1))); do
  c=$WORK/c$i
  mkdir -p "$c/upper" "$c/work" "$c/merged"
  lowers=$(image_lowers $((i % 3)))
  mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$c/upper,workdir=$c/work" "$c/merged"
  echo "$c/merged" >>"$WORK/mounts"
  if ((i % 5 == 0)); then
    mkdir -p "$c/merged/tmp/.x"
    cp /bin/true "$c/merged/tmp/.x/rootshell" && chmod 4755 "$c/merged/tmp/.x/rootshell"
    cp /bin/true "$c/merged/tmp/.x/capper" && setcap cap_sys_admin+ep "$c/merged/tmp/.x/capper"
  fi
  OVERLAY_SPECS+=("overlay:c$i=${lowers//:/,}+$c/upper")
  MERGED_SPECS+=("merged:c$i=$c/merged")
  MERGED+=("$c/merged")
done
echo "$CONTAINERS overlay containers from 3 images under $WORK"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b > 0 ? a / b : 0)}'; }

find_perm_all() { for m in "${MERGED[@]}"; do find "$m/." -xdev -perm /6000 -type f >/dev/null; done; }
getcap_all() { for m in "${MERGED[@]}"; do find "$m/." -xdev -type f -print0 | xargs -0 -r getcap >/dev/null; done; }

# Warm the page cache and dentries for everyone.
find_perm_all; getcap_all; "$FSCAN" --quiet --threads "$THREADS" "${MERGED_SPECS[@]}" >/dev/null

# ---- correctness: fscan (overlay mode) == find + getcap, per container -------------------
"$FSCAN" --threads "$THREADS" "${OVERLAY_SPECS[@]}" >"$WORK/overlay.json"
mismatch=0
for i in $(seq 0 $((CONTAINERS - 1))); do
  m=$WORK/c$i/merged
  { find "$m/." -xdev -perm /6000 -type f; find "$m/." -xdev -type f -print0 | xargs -0 -r getcap | cut -d' ' -f1; } \
    | sed "s|^$m/\.||" | sort -u >"$WORK/want"
  jq -r --arg id "c$i" '.files[] | select(.container_id == $id) | .path' "$WORK/overlay.json" | sort -u >"$WORK/got"
  if ! diff -q "$WORK/want" "$WORK/got" >/dev/null; then
    mismatch=$((mismatch + 1))
    echo "MISMATCH c$i:"; diff "$WORK/want" "$WORK/got" | head -5
  fi
done
echo "correctness: $((CONTAINERS - mismatch))/$CONTAINERS containers identical to find+getcap" \
  "($(jq '.file_count' "$WORK/overlay.json") files)"

# ---- timings -----------------------------------------------------------------------------
for r in $(seq 1 "$REPS"); do
  t0=$(now); find_perm_all; t1=$(now); getcap_all; t2=$(now)
  echo "$t1 - $t0" | bc >>"$WORK/t_find"
  echo "$t2 - $t1" | bc >>"$WORK/t_getcap"
  /usr/bin/time -v -o "$WORK/time_overlay" "$FSCAN" --quiet --repeat 2 --threads "$THREADS" \
    "${OVERLAY_SPECS[@]}" >"$WORK/ov.json"
  jq '.runs[0].elapsed_ms / 1000' "$WORK/ov.json" >>"$WORK/t_ov_first"
  jq '.runs[1].elapsed_ms / 1000' "$WORK/ov.json" >>"$WORK/t_ov_cached"
  awk '/Maximum resident/ {print $NF}' "$WORK/time_overlay" >>"$WORK/rss_overlay"
  /usr/bin/time -v -o "$WORK/time_merged" "$FSCAN" --quiet --threads "$THREADS" \
    "${MERGED_SPECS[@]}" >"$WORK/mg.json"
  jq '.runs[0].elapsed_ms / 1000' "$WORK/mg.json" >>"$WORK/t_merged"
  awk '/Maximum resident/ {print $NF}' "$WORK/time_merged" >>"$WORK/rss_merged"
  # One root: the host /usr container (the biggest) and a minbase one.
  # Wall time and CPU time (user+sys) of each process, from /usr/bin/time.
  for k in 0 2; do
    m=${MERGED[$k]}
    /usr/bin/time -f "%e %U %S" -o "$WORK/tm" find "$m/." -xdev -perm /6000 -type f >/dev/null
    awk '{print $1}' "$WORK/tm" >>"$WORK/t_one_find_$k"; awk '{print $2 + $3}' "$WORK/tm" >>"$WORK/c_one_find_$k"
    /usr/bin/time -f "%e %U %S" -o "$WORK/tm" "$FSCAN" --quiet --threads "$THREADS" "${MERGED_SPECS[$k]}" >/dev/null
    awk '{print $1}' "$WORK/tm" >>"$WORK/t_one_merged_$k"; awk '{print $2 + $3}' "$WORK/tm" >>"$WORK/c_one_merged_$k"
    /usr/bin/time -f "%e %U %S" -o "$WORK/tm" "$FSCAN" --quiet --threads "$THREADS" "${OVERLAY_SPECS[$k]}" >/dev/null
    awk '{print $1}' "$WORK/tm" >>"$WORK/t_one_overlay_$k"; awk '{print $2 + $3}' "$WORK/tm" >>"$WORK/c_one_overlay_$k"
  done
done

F=$(median <"$WORK/t_find"); G=$(median <"$WORK/t_getcap")
BASE=$(echo "$F + $G" | bc)
OV=$(median <"$WORK/t_ov_first"); OVC=$(median <"$WORK/t_ov_cached"); MG=$(median <"$WORK/t_merged")
RSS_OV=$(sort -n "$WORK/rss_overlay" | tail -1); RSS_MG=$(sort -n "$WORK/rss_merged" | tail -1)
walked=$(jq '.runs[0].stats.files_walked' "$WORK/ov.json")
walked_mg=$(jq '.runs[0].stats.files_walked' "$WORK/mg.json")

printf '\n%d containers, %d threads, median of %d runs, warm page cache, %d CPUs, load average now %s\n' \
  "$CONTAINERS" "$THREADS" "$REPS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '  find -perm /6000, each container      %8.3f s\n' "$F"
printf '  find | xargs getcap, each container   %8.3f s\n' "$G"
printf '  together (the shell baseline)         %8.3f s\n' "$BASE"
printf '  fscan overlay mode, first scan        %8.3f s   %sx faster  (%s entries walked)\n' "$OV" "$(ratio "$BASE" "$OV")" "$walked"
printf '  fscan overlay mode, layers cached     %8.3f s   %sx faster\n' "$OVC" "$(ratio "$BASE" "$OVC")"
printf '  fscan merged mode (every root walked) %8.3f s   %sx faster  (%s entries walked)\n' "$MG" "$(ratio "$BASE" "$MG")" "$walked_mg"
printf '  fscan peak RSS: overlay %d KiB, merged %d KiB\n' "$RSS_OV" "$RSS_MG"
for k in 0 2; do
  OF=$(median <"$WORK/t_one_find_$k"); OM=$(median <"$WORK/t_one_merged_$k"); OO=$(median <"$WORK/t_one_overlay_$k")
  CF=$(median <"$WORK/c_one_find_$k"); CM=$(median <"$WORK/c_one_merged_$k"); CO=$(median <"$WORK/c_one_overlay_$k")
  name=$([[ $k == 0 ]] && echo minbase || echo "host /usr")
  printf '  one %-9s root, wall (cpu): find -perm %.2f s (%.2f), fscan merged %.2f s (%.2f) %sx, fscan overlay %.2f s (%.2f) %sx\n' \
    "$name" "$OF" "$CF" "$OM" "$CM" "$(ratio "$OF" "$OM")" "$OO" "$CO" "$(ratio "$OF" "$OO")"
done

miss=0
check() { if awk "BEGIN {exit !($2)}"; then echo "  OK    $1"; else echo "  MISS  $1"; miss=1; fi; }
echo
check "fscan (first scan) >= 10x faster than find+getcap" "$BASE / $OV >= 10"
check "fscan merged on one root no slower than find -perm" "$(median <"$WORK/t_one_merged_2") <= $(median <"$WORK/t_one_find_2")"
check "peak RSS <= 40 MiB" "$RSS_OV <= 40960 && $RSS_MG <= 40960"
check "results identical to find+getcap" "$mismatch == 0"
[[ $STRICT == 1 && $miss == 1 ]] && exit 1
exit 0
