//! Stores laid out as containerd and containers/storage lay them out, holding layers made by
//! GNU tar; the background indexer resolves and indexes them, reuses its on-disk index after a
//! restart, and says why when it cannot.

mod common;

use common::*;
use nodeguard_image::{
    Digest, Expectation, ImageIndex, ImageRef, ImageStatus, Indexer, IndexerOptions, Stores,
    Unverifiable,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Waits (bounded) for the indexer to settle on `image`.
fn settle(indexer: &Indexer, image: &ImageRef) -> Result<Arc<ImageIndex>, Unverifiable> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match indexer.status(image, SystemTime::UNIX_EPOCH) {
            ImageStatus::Ready(index) => return Ok(index),
            ImageStatus::Unverifiable(why) => return Err(why),
            ImageStatus::Pending => {
                assert!(
                    Instant::now() < deadline,
                    "still pending after 60 s: {:?}",
                    indexer.progress()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn options(stores: Stores, state: Option<&Path>) -> IndexerOptions {
    IndexerOptions {
        stores,
        state_dir: state.map(Path::to_path_buf),
        cpu_budget: 1.0,
        ..IndexerOptions::default()
    }
}

/// Two layers by GNU tar: a base with binaries, and an upper that replaces one.
fn make_layers(dir: &Path) -> Vec<PathBuf> {
    sh(&format!(
        "set -e; cd '{d}'; mkdir -p base/bin base/usr/bin upper/bin
         printf 'busybox' > base/bin/sh; chmod 755 base/bin/sh
         head -c 100000 /dev/urandom > base/usr/bin/app; chmod 755 base/usr/bin/app
         printf 'suid' > base/usr/bin/su; chmod 4755 base/usr/bin/su
         printf 'newer shell' > upper/bin/sh; chmod 755 upper/bin/sh
         tar --format=pax -cf base.tar -C base . ; tar -cf upper.tar -C upper .",
        d = dir.display()
    ));
    vec![dir.join("base.tar"), dir.join("upper.tar")]
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> String {
    let hex = hex(&sha256(bytes));
    fs::write(blobs.join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

struct ContainerdStore {
    root: PathBuf,
    index: String,
    manifest: String,
    config: String,
    layer_blobs: Vec<String>,
    tars: Vec<PathBuf>,
}

/// A content store as `ctr images pull` leaves it: gzip layer blobs, config, manifest, and an
/// index with an arm64 manifest first and this node's (amd64) second.
fn containerd_store(dir: &Path) -> ContainerdStore {
    let tars = make_layers(dir);
    let root = dir.join("containerd");
    let blobs = root.join("io.containerd.content.v1.content/blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut diff_ids = Vec::new();
    let mut layer_blobs = Vec::new();
    for tar in &tars {
        diff_ids.push(format!("sha256:{}", sha256sum(tar)));
        sh(&format!("gzip -k -n '{}'", tar.display()));
        let gz = fs::read(tar.with_extension("tar.gz")).unwrap();
        layer_blobs.push(write_blob(&blobs, &gz));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = write_blob(&blobs, config.to_string().as_bytes());
    let layers: Vec<_> = layer_blobs
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": layers,
    });
    let manifest = write_blob(&blobs, manifest.to_string().as_bytes());
    let other = write_blob(&blobs, b"{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"},\"layers\":[]}");
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": other, "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
            {"digest": manifest, "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    });
    let index = write_blob(&blobs, index.to_string().as_bytes());
    ContainerdStore {
        root,
        index,
        manifest,
        config,
        layer_blobs,
        tars,
    }
}

#[test]
fn a_containerd_image_by_index_manifest_or_config_digest_resolves_to_its_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = containerd_store(tmp.path());
    let indexer = Indexer::start(options(
        Stores {
            containerd: vec![store.root.clone()],
            ..Stores::default()
        },
        None,
    ));
    for reference in [
        format!("docker.io/library/app@{}", store.index),
        store.manifest.clone(),
        store.config.clone(),
    ] {
        let image = ImageRef::parse(&reference).unwrap();
        let index = settle(&indexer, &image).unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(index.config_digest, store.config);
        assert_eq!(index.layers.len(), 2);
        let upper = format!("sha256:{}", sha256sum(&store.tars[1]));
        match index.expect(b"/bin/sh") {
            Expectation::InLayer {
                sha256, diff_id, ..
            } => {
                assert_eq!(hex(&sha256), member_sha256(&store.tars[1], "./bin/sh"));
                assert_eq!(diff_id, upper);
            }
            other => panic!("{other:?}"),
        }
        let Expectation::InLayer { sha256, .. } = index.expect(b"/usr/bin/app") else {
            panic!()
        };
        assert_eq!(hex(&sha256), member_sha256(&store.tars[0], "./usr/bin/app"));
        assert_eq!(index.special_files().count(), 1);
    }
    let p = indexer.progress();
    assert_eq!(
        p.layers_indexed, 2,
        "each layer read once for three references: {p:?}"
    );
    assert_eq!(p.images_ready, 3);
}

#[test]
fn after_a_restart_the_on_disk_index_is_reused_and_no_layer_is_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let store = containerd_store(tmp.path());
    let state = tmp.path().join("state");
    let stores = Stores {
        containerd: vec![store.root.clone()],
        ..Stores::default()
    };
    let image = ImageRef::Digest(store.index.clone());
    let first = {
        let indexer = Indexer::start(options(stores.clone(), Some(&state)));
        let index = settle(&indexer, &image).unwrap();
        assert_eq!(indexer.progress().layers_indexed, 2);
        index.expect(b"/usr/bin/app")
    };
    let files = fs::read_dir(state.join("image-index")).unwrap().count();
    assert_eq!(files, 2, "one index file per layer");
    let indexer = Indexer::start(options(stores, Some(&state)));
    let index = settle(&indexer, &image).unwrap();
    let p = indexer.progress();
    assert_eq!(
        (p.layers_indexed, p.layers_from_disk, p.bytes_read),
        (0, 2, 0),
        "{p:?}"
    );
    assert_eq!(index.expect(b"/usr/bin/app"), first);
    // On disk the index is a small fraction of the layers.
    let layers: u64 = store
        .tars
        .iter()
        .map(|t| fs::metadata(t).unwrap().len())
        .sum();
    assert!(
        p.disk_bytes * 50 < layers,
        "{} bytes on disk for {layers} of layers",
        p.disk_bytes
    );
}

#[test]
fn a_corrupt_on_disk_index_is_discarded_and_the_layer_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let store = containerd_store(tmp.path());
    let state = tmp.path().join("state");
    let stores = Stores {
        containerd: vec![store.root.clone()],
        ..Stores::default()
    };
    let image = ImageRef::Digest(store.manifest.clone());
    drop(
        settle(
            &Indexer::start(options(stores.clone(), Some(&state))),
            &image,
        )
        .unwrap(),
    );
    for entry in fs::read_dir(state.join("image-index")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&path, bytes).unwrap();
    }
    let indexer = Indexer::start(options(stores, Some(&state)));
    let index = settle(&indexer, &image).unwrap();
    assert_eq!(indexer.progress().layers_indexed, 2);
    let Expectation::InLayer { sha256, .. } = index.expect(b"/bin/sh") else {
        panic!()
    };
    assert_eq!(hex(&sha256), member_sha256(&store.tars[1], "./bin/sh"));
}

#[test]
fn a_deleted_layer_blob_makes_the_image_unverifiable_naming_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = containerd_store(tmp.path());
    let blob = Digest::parse(&store.layer_blobs[0]).unwrap();
    fs::remove_file(
        store
            .root
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(blob.hex()),
    )
    .unwrap();
    let indexer = Indexer::start(options(
        Stores {
            containerd: vec![store.root.clone()],
            ..Stores::default()
        },
        None,
    ));
    let why = settle(&indexer, &ImageRef::Digest(store.index.clone())).unwrap_err();
    let base = format!("sha256:{}", sha256sum(&store.tars[0]));
    assert_eq!(
        why,
        Unverifiable::BlobsDiscarded {
            layer: base.clone()
        }
    );
    assert!(why.to_string().contains(&base));
}

#[test]
fn an_altered_layer_blob_makes_the_image_unverifiable_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = containerd_store(tmp.path());
    // Replace the upper layer's blob content with another tar (blob name unchanged).
    let blobs = store
        .root
        .join("io.containerd.content.v1.content/blobs/sha256");
    let blob = Digest::parse(&store.layer_blobs[1]).unwrap();
    fs::copy(
        store.tars[0].with_extension("tar.gz"),
        blobs.join(blob.hex()),
    )
    .unwrap();
    let indexer = Indexer::start(options(
        Stores {
            containerd: vec![store.root.clone()],
            ..Stores::default()
        },
        None,
    ));
    let why = settle(&indexer, &ImageRef::Digest(store.index.clone())).unwrap_err();
    assert_eq!(why.code(), "diff_id_mismatch", "{why}");
}

#[test]
fn missing_stores_and_unknown_images_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let image = ImageRef::Digest(format!("sha256:{}", "ab".repeat(32)));
    let none = Indexer::start(IndexerOptions::default());
    assert!(matches!(
        none.status(&image, SystemTime::now()),
        ImageStatus::Unverifiable(Unverifiable::StoreNotMounted)
    ));
    let absent = Indexer::start(options(
        Stores {
            containerd: vec![tmp.path().join("not-mounted")],
            ..Stores::default()
        },
        None,
    ));
    assert_eq!(
        settle(&absent, &image).unwrap_err(),
        Unverifiable::StoreNotMounted
    );
    let store = containerd_store(tmp.path());
    let present = Indexer::start(options(
        Stores {
            containerd: vec![store.root],
            ..Stores::default()
        },
        None,
    ));
    assert_eq!(
        settle(&present, &image).unwrap_err(),
        Unverifiable::ImageUnknown
    );
}

/// tar-split JSON lines for a tar, cut where the `tar` crate (an independent reader) says each
/// member's data starts: segments for everything else, file entries for the data.
fn tar_split_of(tar: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let bytes = fs::read(tar).unwrap();
    let mut archive = tar::Archive::new(fs::File::open(tar).unwrap());
    let mut lines = String::new();
    let mut cursor = 0usize;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let start = entry.raw_file_position() as usize;
        let size = entry.size() as usize;
        let name = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        lines += &format!(
            "{{\"type\":2,\"payload\":\"{}\"}}\n",
            b64(&bytes[cursor..start])
        );
        lines += &format!(
            "{{\"type\":1,\"name\":{},\"size\":{size},\"payload\":\"AAAAAAAAAAA=\"}}\n",
            serde_json::to_string(&name).unwrap()
        );
        cursor = start + size;
    }
    lines += &format!("{{\"type\":2,\"payload\":\"{}\"}}\n", b64(&bytes[cursor..]));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, lines.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// A containers/storage graph root as podman leaves it: layers unpacked by GNU tar, tar-split,
/// layers.json, images.json and the config as the image's big data.
fn containers_storage(dir: &Path) -> (PathBuf, String, Vec<PathBuf>, Vec<String>) {
    use base64::Engine as _;
    let tars = make_layers(dir);
    let root = dir.join("storage");
    fs::create_dir_all(root.join("overlay-layers")).unwrap();
    fs::create_dir_all(root.join("overlay-images")).unwrap();
    let mut layers = Vec::new();
    let mut ids = Vec::new();
    let mut parent: Option<String> = None;
    let mut diff_ids = Vec::new();
    for (i, tar) in tars.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        let diff = root.join(format!("overlay/{id}/diff"));
        fs::create_dir_all(&diff).unwrap();
        sh(&format!(
            "tar -xpf '{}' -C '{}'",
            tar.display(),
            diff.display()
        ));
        fs::write(
            root.join(format!("overlay-layers/{id}.tar-split.gz")),
            tar_split_of(tar),
        )
        .unwrap();
        let diff_id = format!("sha256:{}", sha256sum(tar));
        layers.push(serde_json::json!({"id": id, "parent": parent, "diff-digest": diff_id}));
        diff_ids.push(diff_id);
        parent = Some(id.clone());
        ids.push(id);
    }
    fs::write(
        root.join("overlay-layers/layers.json"),
        serde_json::to_string(&layers).unwrap(),
    )
    .unwrap();
    let config =
        serde_json::json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let image_id = hex(&sha256(config.as_bytes()));
    let key = base64::engine::general_purpose::STANDARD.encode(format!("sha256:{image_id}"));
    fs::create_dir_all(root.join(format!("overlay-images/{image_id}"))).unwrap();
    fs::write(
        root.join(format!("overlay-images/{image_id}/={key}")),
        &config,
    )
    .unwrap();
    let images =
        serde_json::json!([{"id": image_id, "names": ["localhost/app:latest"], "layer": parent}]);
    fs::write(root.join("overlay-images/images.json"), images.to_string()).unwrap();
    (root, image_id, tars, ids)
}

#[test]
fn containers_storage_layers_rebuilt_from_tar_split_match_their_diff_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, image_id, tars, _) = containers_storage(tmp.path());
    let indexer = Indexer::start(options(
        Stores {
            containers_storage: vec![root],
            ..Stores::default()
        },
        None,
    ));
    let image = ImageRef::ContainersStorage {
        image_id: image_id.clone(),
    };
    let index = settle(&indexer, &image).unwrap();
    assert_eq!(index.config_digest, format!("sha256:{image_id}"));
    let Expectation::InLayer { sha256, .. } = index.expect(b"/usr/bin/app") else {
        panic!()
    };
    assert_eq!(hex(&sha256), member_sha256(&tars[0], "./usr/bin/app"));
    // A pod's imageID on CRI-O is the same id.
    assert!(settle(
        &indexer,
        &ImageRef::parse(&format!("sha256:{image_id}")).unwrap()
    )
    .is_ok());
}

#[test]
fn a_file_altered_in_an_unpacked_layer_breaks_the_rebuilt_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, image_id, tars, ids) = containers_storage(tmp.path());
    let app = root.join(format!("overlay/{}/diff/usr/bin/app", ids[0]));
    // Same size, other bytes: only the digest can tell.
    let mut bytes = fs::read(&app).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&app, bytes).unwrap();
    let indexer = Indexer::start(options(
        Stores {
            containers_storage: vec![root.clone()],
            ..Stores::default()
        },
        None,
    ));
    let image = ImageRef::ContainersStorage { image_id };
    let why = settle(&indexer, &image).unwrap_err();
    let base = format!("sha256:{}", sha256sum(&tars[0]));
    assert_eq!(why, Unverifiable::DiffIdMismatch { layer: base });
}

#[test]
fn a_symlink_planted_in_an_unpacked_layer_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, image_id, _, ids) = containers_storage(tmp.path());
    let app = root.join(format!("overlay/{}/diff/usr/bin/app", ids[0]));
    // A symlink to a copy of the right bytes outside the layer must not make it verify.
    let outside = tmp.path().join("outside-app");
    fs::copy(&app, &outside).unwrap();
    fs::remove_file(&app).unwrap();
    std::os::unix::fs::symlink(&outside, &app).unwrap();
    let indexer = Indexer::start(options(
        Stores {
            containers_storage: vec![root],
            ..Stores::default()
        },
        None,
    ));
    let why = settle(&indexer, &ImageRef::ContainersStorage { image_id }).unwrap_err();
    assert_eq!(why.code(), "diff_id_mismatch", "{why}");
}

#[test]
fn a_hostile_layer_is_refused_with_its_reason_and_the_indexer_serves_the_next_image() {
    let tmp = tempfile::tempdir().unwrap();
    let store = containerd_store(tmp.path());
    let blobs = store
        .root
        .join("io.containerd.content.v1.content/blobs/sha256");
    // An image whose only layer climbs out of its root, its diff_id honest about its bytes.
    let mut evil = Vec::new();
    member(
        &mut evil,
        header(b"../../etc/cron.d/evil", b'0', 2, 0o755),
        b"x\n",
    );
    end(&mut evil);
    let diff_id = format!("sha256:{}", hex(&sha256(&evil)));
    let layer = write_blob(&blobs, &evil);
    let config = write_blob(
        &blobs,
        serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [diff_id]}})
            .to_string()
            .as_bytes(),
    );
    let manifest = write_blob(
        &blobs,
        serde_json::json!({"schemaVersion": 2, "config": {"digest": config}, "layers": [{"digest": layer}]})
            .to_string()
            .as_bytes(),
    );
    let indexer = Indexer::start(options(
        Stores {
            containerd: vec![store.root.clone()],
            ..Stores::default()
        },
        None,
    ));
    let why = settle(&indexer, &ImageRef::Digest(manifest)).unwrap_err();
    assert_eq!(why.code(), "layer_refused", "{why}");
    assert!(why.to_string().contains("climbs out"), "{why}");
    assert_eq!(indexer.progress().layers_refused, 1);
    assert!(settle(&indexer, &ImageRef::Digest(store.index.clone())).is_ok());
}
