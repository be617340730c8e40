#!/usr/bin/env python3
"""Writes an OCI image-layout tarball from a root directory, for `ctr images import`.

One uncompressed tar layer, a config, a manifest and index.json, each blob named by its sha256;
the index's `org.opencontainers.image.ref.name` annotation names the image. No registry needed.

Usage: oci-image.py ROOTFS_DIR NAME:TAG OUT.tar [ENTRYPOINT...]
"""
import hashlib
import io
import json
import sys
import tarfile


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def main():
    rootfs, ref, out = sys.argv[1], sys.argv[2], sys.argv[3]
    entrypoint = sys.argv[4:]
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        layer.add(rootfs, arcname=".", recursive=True)
    layer_bytes = layer_buf.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], "Entrypoint": entrypoint or None},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    with tarfile.open(out, mode="w") as tar:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        ldigest, lsize = blob(tar, layer_bytes)
        cdigest, csize = blob(tar, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cdigest,
                "size": csize,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": ldigest,
                    "size": lsize,
                }
            ],
        }
        mdigest, msize = blob(tar, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": mdigest,
                    "size": msize,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref,
                    },
                }
            ],
        }
        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
