//! Images: directories used as the lower layer of a container's overlay root, as containerd's
//! snapshotter does with an unpacked image layer.

use super::oracle;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Applets linked into the busybox image. Hard links, like the official busybox image, so every
/// one of them is the same file (same inode) as `/bin/busybox`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "cat", "cp", "ls", "id", "echo", "true", "env", "grep", "ps", "tail",
    "mkdir", "chmod", "wc", "head", "top",
];

/// An image: a read-only directory that containers get as their overlay lower layer.
#[derive(Debug)]
pub struct Image {
    pub name: String,
    /// The layer directory (the overlay `lowerdir=`).
    pub dir: PathBuf,
    /// Set when this value owns the directory and removes it on drop.
    owned: Option<tempfile::TempDir>,
}

/// Where the host's busybox lives (`busybox-static` installs `/bin/busybox`).
pub fn busybox_binary() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    // ELF64 little-endian only (x86_64, aarch64): e_phoff at 0x20, e_phentsize 0x36, e_phnum 0x38.
    if bytes.len() < 0x40 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (entsize, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * entsize;
        // PT_INTERP = 3
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

impl Image {
    /// The busybox image shared by every test (containers never write to a lower layer).
    ///
    /// Built once per test process — and in fact once per machine: it is cached under
    /// `target/tmp`, named by the busybox digest, because a static shared by running tests can
    /// never be removed safely before the process exits, and a cache that is reused does not
    /// pile up in `/tmp`. It is built in a temporary directory and renamed into place, so
    /// concurrent runs never see half an image.
    pub fn busybox() -> &'static Image {
        static BUSYBOX: OnceLock<Image> = OnceLock::new();
        BUSYBOX.get_or_init(|| {
            let busybox =
                busybox_binary().expect("busybox present (checked by require_containers)");
            let digest = oracle::sha256sum(&busybox);
            let parent = super::artifacts_dir().join("images");
            fs::create_dir_all(&parent).unwrap();
            let dir = parent.join(format!("busybox-{}", &digest[..16]));
            let usable = |dir: &Path| {
                dir.join("bin/busybox").is_file()
                    && oracle::sha256sum(&dir.join("bin/busybox")) == digest
            };
            if !usable(&dir) {
                let tmp = tempfile::Builder::new()
                    .prefix(".busybox-")
                    .tempdir_in(&parent)
                    .unwrap();
                let staged = tmp.path().join("layer");
                build_busybox_layer(&staged);
                if fs::rename(&staged, &dir).is_err() && !usable(&dir) {
                    // Someone else's rename won, or a broken leftover is in the way.
                    let _ = fs::remove_dir_all(&dir);
                    fs::rename(&staged, &dir).expect("install busybox image");
                }
            }
            Image {
                name: "busybox".into(),
                dir,
                owned: None,
            }
        })
    }

    /// A fresh busybox image this value owns: removed on drop, so drop it only after its
    /// containers.
    pub fn busybox_owned(name: &str) -> Image {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("nodeguard-image-{name}-"))
            .tempdir()
            .expect("create image tempdir");
        let dir = tmp.path().join("layer");
        build_busybox_layer(&dir);
        Image {
            name: name.to_string(),
            dir,
            owned: Some(tmp),
        }
    }

    /// Path of a file of the image, given its path inside the container.
    pub fn path(&self, in_container: &str) -> PathBuf {
        self.dir.join(in_container.trim_start_matches('/'))
    }

    /// SHA-256 of a file of the image, by `sha256sum`.
    pub fn sha256(&self, in_container: &str) -> String {
        oracle::sha256sum(&self.path(in_container))
    }

    /// Adds a file to the image (before any container uses it) with the given mode, e.g.
    /// `0o4755` for a setuid copy of busybox.
    pub fn add_file(&self, in_container: &str, contents: &[u8], mode: u32) {
        assert!(
            self.owned.is_some(),
            "add files only to an image the test owns (Image::busybox_owned), not the shared one"
        );
        let path = self.path(in_container);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn build_busybox_layer(dir: &Path) {
    let busybox = busybox_binary().expect("busybox present (checked by require_containers)");
    for sub in [
        "bin", "dev", "proc", "sys", "etc", "tmp", "root", "run", "var", "usr/bin",
    ] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let bin = dir.join("bin/busybox");
    fs::copy(&busybox, &bin).unwrap_or_else(|e| panic!("copy {}: {e}", busybox.display()));
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    for applet in BUSYBOX_APPLETS {
        fs::hard_link(&bin, dir.join("bin").join(applet)).unwrap();
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
}
