#!/usr/bin/env bash
# Benchmark: indexing image layers (crates/nodeguard-image) against the plain way of checking a
# layer (`gzip -dc | sha256sum`, which proves the diff_id but indexes nothing).
#
# Builds, under a temp dir, from this host's /usr (real ELF binaries and libraries):
#   big       one layer of ~$BIG_MB MB, gzip'd, in a containerd-layout content store,
#             and the same tar imported by podman (containers/storage: unpacked + tar-split);
#   node      $IMAGES images of $PER_IMAGE distinct gzip'd layers each ($IMAGES x $PER_IMAGE
#             layers, ~$LAYER_MB MB each) in a content store.
# Then prints, each beside the old way where there is one:
#   gzip layer indexing: MB of uncompressed layer per CPU-second (target >= 150), vs gzip|sha256sum
#   tar-split rebuild + index: MB per CPU-second (target >= 150), vs cat files|sha256sum
#   the node: peak RSS while indexing every layer (target <= 40 MiB), index bytes on disk as a
#             share of the layers' uncompressed bytes (target <= 2 %), and after a restart:
#             layers read again (target 0) and wall time
#   the CPU budget: share of one core used at --budget 0.25
# A measurement: prints MISS beside a missed target, exits 0 unless STRICT=1.
#
# Usage (root, podman installed): bench/image_index_bench.sh
#   BIG_MB=300 IMAGES=60 PER_IMAGE=5 LAYER_MB=3 bench/image_index_bench.sh
set -euo pipefail

BIG_MB=${BIG_MB:-300}
IMAGES=${IMAGES:-60}
PER_IMAGE=${PER_IMAGE:-5}
LAYER_MB=${LAYER_MB:-3}
STRICT=${STRICT:-0}
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "image_index_bench: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (podman storage)"
for tool in python3 gzip sha256sum podman /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

WORK=$(mktemp -d /tmp/ngimg-bench.XXXXXX)
RUNROOT=/run/ngimg-bench-$$
MISSES=0
cleanup() {
  set +e
  podman --root "$WORK/storage" --runroot "$RUNROOT" --storage-driver overlay rmi --all --force >/dev/null 2>&1
  rm -rf "$WORK" "$RUNROOT"
}
trap cleanup EXIT

echo "building: cargo build --release -p nodeguard-image --example index_store"
(cd "$REPO" && cargo build -q --release -p nodeguard-image --example index_store)
INDEX=$REPO/target/release/examples/index_store

check() { # check NAME VALUE OP TARGET
  if python3 -c "import sys; sys.exit(0 if $2 $3 $4 else 1)"; then echo "  $1: $2 (target $3 $4) ok"
  else echo "  $1: $2 (target $3 $4) MISS"; MISSES=$((MISSES + 1)); fi
}
field() { grep -oE "(^| )$1=[^ ]*" <<<"$2" | head -1 | cut -d= -f2; }
cpu_of() { # cpu seconds of a shell pipeline
  /usr/bin/time -f '%U %S' bash -c "$1" 2>&1 >/dev/null | tail -1 | awk '{print $1 + $2}'
}

echo "== making layers from /usr under $WORK"
python3 - "$WORK" "$BIG_MB" "$IMAGES" "$PER_IMAGE" "$LAYER_MB" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
work, big_mb, images, per_image, layer_mb = sys.argv[1], *map(int, sys.argv[2:])
files = []
for top in ("/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib"):
    for d, _, names in os.walk(top):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append((p, os.path.getsize(p)))
seen = set(); files = [f for f in files if not (f[0] in seen or seen.add(f[0]))]
def tar_of(chosen):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for p, _ in chosen:
            t.add(p, arcname="." + p, recursive=False)
    return buf.getvalue()
def store(root):
    blobs = os.path.join(root, "io.containerd.content.v1.content/blobs/sha256")
    os.makedirs(blobs, exist_ok=True)
    def put(data):
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f: f.write(data)
        return "sha256:" + h
    return put
def image(put, tars):
    layers, diff_ids = [], []
    for t in tars:
        diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": put(gzip.compress(t, 6, mtime=0)), "size": 0})
    config = put(json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode())
    return put(json.dumps({"schemaVersion": 2, "config": {"digest": config, "size": 0},
                           "layers": layers}).encode())
# One big layer.
chosen, total = [], 0
for f in files:
    if total >= big_mb * 1e6: break
    chosen.append(f); total += f[1]
big = tar_of(chosen)
open(os.path.join(work, "big.tar"), "wb").write(big)
m = image(store(os.path.join(work, "big")), [big])
open(os.path.join(work, "big.ref"), "w").write(m)
# The node: distinct slices of the file list, round robin so every layer differs.
put = store(os.path.join(work, "node"))
# Files of at most a quarter layer, so each layer is about $LAYER_MB, not one huge library.
small = [f for f in files if f[1] <= layer_mb * 1e6 / 4]
refs, layer_bytes, cursor = [], 0, 0
for i in range(images):
    tars = []
    for j in range(per_image):
        chosen, total = [], 0
        while total < layer_mb * 1e6:
            f = small[cursor % len(small)]; cursor += 1
            chosen.append(f); total += f[1]
        t = tar_of(chosen); layer_bytes += len(t); tars.append(t)
    refs.append(image(put, tars))
open(os.path.join(work, "node.refs"), "w").write(" ".join(refs))
open(os.path.join(work, "node.bytes"), "w").write(str(layer_bytes))
EOF
BIG_BYTES=$(stat -c %s "$WORK/big.tar")
gzip -6 -n -c "$WORK/big.tar" >"$WORK/big.tar.gz"
echo "big layer: $((BIG_BYTES / 1000000)) MB uncompressed; node: $IMAGES images x $PER_IMAGE layers, $(( $(cat "$WORK/node.bytes") / 1000000 )) MB"

echo "== gzip layer: index (nodeguard-image) vs gzip -dc | sha256sum"
out=$("$INDEX" --containerd "$WORK/big" "$(cat "$WORK/big.ref")")
echo "  nodeguard: $out"
old_cpu=$(cpu_of "gzip -dc '$WORK/big.tar.gz' | sha256sum")
echo "  old way (gzip -dc | sha256sum, diff_id only, no index): $(python3 -c "print(round($BIG_BYTES / 1e6 / $old_cpu))") MB per CPU-second"
check "gzip indexing MB/s per core" "$(field mb_per_cpu_s "$out")" ">=" 150

echo "== tar-split rebuild (podman import) vs cat files | sha256sum"
P=(podman --root "$WORK/storage" --runroot "$RUNROOT" --storage-driver overlay)
id=$("${P[@]}" import -q "$WORK/big.tar" localhost/ngimg-bench:1 | sed 's/^sha256://')
sync; cat "$WORK/storage"/overlay/*/diff -r >/dev/null 2>&1 || true
out=$("$INDEX" --storage "$WORK/storage" "$id")
echo "  nodeguard: $out"
layer=$(basename "$(ls "$WORK"/storage/overlay-layers/*.tar-split.gz | head -1)" .tar-split.gz)  # one layer
old_cpu=$(cpu_of "find '$WORK/storage/overlay/$layer/diff' -type f -exec cat {} + | sha256sum")
echo "  old way (cat every file | sha256sum, proves nothing): $(python3 -c "print(round($BIG_BYTES / 1e6 / $old_cpu))") MB per CPU-second"
check "tar-split rebuild MB/s per core" "$(field mb_per_cpu_s "$out")" ">=" 150

echo "== the node: $IMAGES images, $((IMAGES * PER_IMAGE)) layers"
out=$("$INDEX" --containerd "$WORK/node" --state "$WORK/state" $(cat "$WORK/node.refs"))
echo "  first start: $out"
check "peak RSS MiB while indexing" "$(field peak_rss_mib "$out")" "<=" 40
share=$(python3 -c "print(round(100 * $(field index_disk_bytes "$out") / $(cat "$WORK/node.bytes"), 3))")
check "index on disk, % of layer bytes" "$share" "<=" 2
out=$("$INDEX" --containerd "$WORK/node" --state "$WORK/state" $(cat "$WORK/node.refs"))
echo "  after a restart: $out"
check "layers read again after a restart" "$(field layers_indexed "$out")" "==" 0

echo "== CPU budget 0.25 on the big layer"
out=$("$INDEX" --budget 0.25 --containerd "$WORK/big" "$(cat "$WORK/big.ref")")
echo "  nodeguard: $out"
share=$(python3 -c "print(round($(field cpu_s "$out") / $(field wall_s "$out"), 2))")
check "share of one core" "$share" "<=" 0.3

echo "misses: $MISSES"
[[ $STRICT -eq 0 || $MISSES -eq 0 ]]
