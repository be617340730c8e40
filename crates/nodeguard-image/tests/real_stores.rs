//! The real runtimes write the stores: `podman import` (containers/storage with its own
//! tar-split) and `ctr images import` into a private containerd. What podman and ctr say (image
//! inspect, image mount, content get) is the ground truth.
//!
//! Needs root, podman and containerd/ctr (`scripts/test-deps.sh` installs them). Without them the
//! tests say why they skip; with `CI` set they fail instead.

mod common;

use common::*;
use nodeguard_image::{
    ImageIndex, ImageRef, ImageStatus, Indexer, IndexerOptions, Stores, Unverifiable,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn can_run(test: &str, tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set, so {test} must run, but it needs root");
        }
        eprintln!("\n!!! SKIPPED {test}: needs root (real podman/containerd stores)\n");
        return false;
    }
    tools.iter().all(|t| require(t, test))
}

fn settle(indexer: &Indexer, image: &ImageRef) -> Result<Arc<ImageIndex>, Unverifiable> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match indexer.status(image, SystemTime::UNIX_EPOCH) {
            ImageStatus::Ready(i) => return Ok(i),
            ImageStatus::Unverifiable(why) => return Err(why),
            ImageStatus::Pending => {
                assert!(
                    Instant::now() < deadline,
                    "pending: {:?}",
                    indexer.progress()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn indexer(stores: Stores) -> Indexer {
    Indexer::start(IndexerOptions {
        stores,
        cpu_budget: 1.0,
        ..IndexerOptions::default()
    })
}

/// A root with busybox (static) and a setuid copy, tarred by GNU tar.
fn rootfs_tar(dir: &Path) -> PathBuf {
    sh(&format!(
        "set -e; cd '{d}'; mkdir -p rootfs/bin rootfs/usr/bin rootfs/etc
         cp \"$(command -v busybox)\" rootfs/bin/busybox; chmod 755 rootfs/bin/busybox
         ln -s busybox rootfs/bin/sh
         cp rootfs/bin/busybox rootfs/usr/bin/su-like; chmod 4755 rootfs/usr/bin/su-like
         echo 'root:x:0:0::/:/bin/sh' > rootfs/etc/passwd
         tar -cf rootfs.tar -C rootfs .",
        d = dir.display()
    ));
    dir.join("rootfs.tar")
}

fn random_suffix() -> String {
    format!(
        "{:08x}",
        std::process::id()
            ^ (SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos())
    )
}

struct Podman {
    root: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    fn new(dir: &Path) -> Podman {
        let root = dir.join("storage");
        // podman refuses a runroot longer than 50 characters.
        let runroot = PathBuf::from(format!("/run/ngimg-{}", random_suffix()));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&runroot).unwrap();
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.display(),
                runroot.display()
            ),
        )
        .unwrap();
        Podman { root, runroot }
    }

    fn run(&self, args: &str) -> String {
        let conf = self.root.parent().unwrap().join("storage.conf");
        sh(&format!(
            "CONTAINERS_STORAGE_CONF='{}' podman --root '{}' --runroot '{}' --storage-driver overlay {args}",
            conf.display(),
            self.root.display(),
            self.runroot.display()
        ))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ =
            std::panic::catch_unwind(|| self.run("image unmount --all >/dev/null 2>&1 || true"));
        let _ = self.run("rmi --all --force >/dev/null 2>&1 || true");
        let _ = fs::remove_dir_all(&self.runroot);
    }
}

#[test]
fn podman_imported_image_verifies_and_an_edit_of_its_unpacked_layer_is_caught() {
    if !can_run("podman_imported_image…", &["podman", "busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tar = rootfs_tar(tmp.path());
    let podman = Podman::new(tmp.path());
    let image_id = podman
        .run(&format!(
            "import -q '{}' localhost/ngimg-test:1",
            tar.display()
        ))
        .trim()
        .trim_start_matches("sha256:")
        .to_string();
    let layers: Vec<String> = serde_json::from_str(&podman.run(&format!(
        "image inspect --format '{{{{json .RootFS.Layers}}}}' {image_id}"
    )))
    .unwrap();
    let mount = PathBuf::from(podman.run(&format!("image mount {image_id}")).trim());
    let busybox_want = sha256sum(&mount.join("bin/busybox"));
    let su_want = sha256sum(&mount.join("usr/bin/su-like"));
    podman.run(&format!("image unmount {image_id}"));

    let stores = Stores {
        containers_storage: vec![podman.root.clone()],
        ..Stores::default()
    };
    let image = ImageRef::ContainersStorage {
        image_id: image_id.clone(),
    };
    let index = settle(&indexer(stores.clone()), &image).unwrap();
    assert_eq!(index.layers, layers, "diff ids as podman inspects them");
    assert_eq!(index.config_digest, format!("sha256:{image_id}"));
    match index.expect(b"/bin/busybox") {
        nodeguard_image::Expectation::InLayer {
            sha256, diff_id, ..
        } => {
            assert_eq!(hex(&sha256), busybox_want);
            assert_eq!(diff_id, layers[0]);
        }
        other => panic!("{other:?}"),
    }
    let specials: Vec<_> = index.special_files().collect();
    assert_eq!(specials.len(), 1);
    let nodeguard_image::Expectation::InLayer { sha256, mode, .. } = specials[0].1 else {
        panic!()
    };
    assert_eq!((hex(sha256), *mode), (su_want, 0o4755));

    // Rewrite the binary in the unpacked layer (same size), as an attacker on the node would.
    // podman does not print its layer ids: layers.json maps the diff digest to one.
    let layers_json: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(podman.root.join("overlay-layers/layers.json")).unwrap())
            .unwrap();
    let layer_id = layers_json
        .iter()
        .find(|l| l["diff-digest"] == layers[0].as_str())
        .and_then(|l| l["id"].as_str())
        .expect("the image's layer is in layers.json")
        .to_string();
    let file = podman
        .root
        .join(format!("overlay/{}/diff/bin/busybox", layer_id.trim()));
    let mut bytes = fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    fs::write(&file, bytes).unwrap();
    let why = settle(&indexer(stores.clone()), &image).unwrap_err();
    assert_eq!(
        why,
        Unverifiable::DiffIdMismatch {
            layer: layers[0].clone()
        }
    );

    // Its tar-split gone: nothing left to prove the layer with.
    fs::remove_file(
        podman
            .root
            .join(format!("overlay-layers/{}.tar-split.gz", layer_id.trim())),
    )
    .unwrap();
    let why = settle(&indexer(stores), &image).unwrap_err();
    assert_eq!(why.code(), "blobs_discarded", "{why}");
}

/// A containerd of our own: root, state and socket in a temp dir, no CRI.
struct Containerd {
    child: Child,
    root: PathBuf,
    sock: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        let root = dir.join("ctrd-root");
        let sock = dir.join("ctrd.sock");
        let config = dir.join("ctrd.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{r}\"\nstate = \"{s}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \
                 \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \
                 \"io.containerd.snapshotter.v1.aufs\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n\
                 [plugins.\"io.containerd.gc.v1.scheduler\"]\n  deletion_threshold = 1\n",
                r = root.display(),
                s = dir.join("ctrd-state").display(),
                sock = sock.display(),
                d = dir.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let c = Containerd { child, root, sock };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Command::new("ctr")
            .arg("--address")
            .arg(&c.sock)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: see {}",
                dir.join("containerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn ctr(&self, args: &str) -> String {
        sh(&format!(
            "ctr --address '{}' -n k8s.io {args}",
            self.sock.display()
        ))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Importing unpacks into snapshot directories; nothing is mounted until a container runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_imported_image_verifies_by_manifest_and_config_digest_and_a_removed_blob_is_unverifiable() {
    if !can_run(
        "ctr_imported_image…",
        &["containerd", "ctr", "busybox", "python3"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs_dir = {
        rootfs_tar(tmp.path());
        tmp.path().join("rootfs")
    };
    let oci = tmp.path().join("oci.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/realnode/oci-image.py");
    sh(&format!(
        "python3 '{}' '{}' localhost/ngimg-test:1 '{}' /bin/sh",
        script.display(),
        rootfs_dir.display(),
        oci.display()
    ));
    let containerd = Containerd::start(tmp.path());
    containerd.ctr(&format!(
        "images import --snapshotter overlayfs '{}'",
        oci.display()
    ));
    // `ctr images ls`: REF TYPE DIGEST SIZE PLATFORMS LABELS.
    let listing = containerd.ctr("images ls");
    let line = listing
        .lines()
        .find(|l| l.starts_with("localhost/ngimg-test:1"))
        .unwrap_or_else(|| panic!("not imported:\n{listing}"));
    let manifest = line.split_whitespace().nth(2).unwrap().to_string();
    let manifest_json: serde_json::Value =
        serde_json::from_str(&containerd.ctr(&format!("content get {manifest}"))).unwrap();
    let config = manifest_json["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layer_blob = manifest_json["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let want = sh(&format!(
        "ctr --address '{}' -n k8s.io content get {layer_blob} | tar -xO ./bin/busybox | sha256sum",
        containerd.sock.display()
    ));
    let want = want.split_whitespace().next().unwrap();

    let stores = Stores {
        containerd: vec![containerd.root.clone()],
        ..Stores::default()
    };
    let ix = indexer(stores.clone());
    // After a pull the pod's imageID names the manifest; for an imported image, the config.
    for reference in [format!("localhost/ngimg-test@{manifest}"), config.clone()] {
        let index = settle(&ix, &ImageRef::parse(&reference).unwrap())
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(index.config_digest, config);
        let nodeguard_image::Expectation::InLayer { sha256, .. } = index.expect(b"/bin/busybox")
        else {
            panic!("{reference}: {:?}", index.expect(b"/bin/busybox"))
        };
        assert_eq!(hex(&sha256), want, "{reference}");
    }
    drop(ix);

    containerd.ctr(&format!("content rm {layer_blob}"));
    let blob = containerd
        .root
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(layer_blob.trim_start_matches("sha256:"));
    // The blob file goes at containerd's next garbage collection (one per deletion here).
    let deadline = Instant::now() + Duration::from_secs(20);
    while blob.exists() {
        assert!(
            Instant::now() < deadline,
            "containerd's GC left {}",
            blob.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let why = settle(&indexer(stores), &ImageRef::Digest(manifest.clone())).unwrap_err();
    assert_eq!(why.code(), "blobs_discarded", "{why}");
}
