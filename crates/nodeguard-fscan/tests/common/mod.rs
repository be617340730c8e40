//! Helpers for tests that build real trees (setuid copies, file capabilities, FIFOs, overlay
//! and bind mounts) at test time. Most need root; they say so loudly and skip otherwise.
#![allow(dead_code)]

use nodeguard_fscan::{ContainerRoot, FsScanOutput, FsScanner, RootSpec, WalkBudget};
use nodeguard_model::OverlayLayers;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips the test (loudly) unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!(
                "SKIPPED {}: needs root (setcap, chmod u+s of root files, mknod, mount)",
                module_path!()
            );
            return;
        }
    };
}

/// A temp dir that other users can traverse (tests drop privileges in child processes).
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("fscan-test-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    chmod(dir.path(), 0o755);
    dir
}

/// Runs a command; panics with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn sh(script: &str) -> Vec<u8> {
    run(Command::new("sh").arg("-ec").arg(script))
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir -p");
    }
    std::fs::write(path, data).expect("write");
}

/// Copies with mode and owner (`cp -a`).
pub fn copy(from: &str, to: &Path) {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).expect("mkdir -p");
    }
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

pub fn setcap(caps: &str, path: &Path) {
    run(Command::new("setcap").arg(caps).arg(path));
}

/// Writes a raw `security.capability` value.
pub fn set_raw_caps(path: &Path, hex: &str) {
    run(Command::new("setfattr")
        .arg("-n")
        .arg("security.capability")
        .arg("-v")
        .arg(format!("0x{hex}"))
        .arg(path));
}

/// `find ROOT/. -xdev -perm /6000 -type f`, as paths inside the root (`/usr/bin/su`). find
/// exits 1 after reporting a directory loop; that is accepted.
pub fn find_special(root: &Path) -> Vec<String> {
    let mut cmd = Command::new("find");
    cmd.arg(root.join("."))
        .args(["-xdev", "-perm", "/6000", "-type", "f", "-print0"]);
    let out = cmd.output().expect("run find");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.lines().all(|l| l.contains("File system loop")),
        "{cmd:?} failed: {stderr}"
    );
    let out = out.stdout;
    let prefix = root.join(".");
    let mut paths: Vec<String> = out
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| inside(&prefix, p))
        .collect();
    paths.sort();
    paths
}

/// `find ROOT/. -xdev -type f -print0 | xargs -0 getcap -n`: path inside the root → the text
/// getcap prints after the name.
pub fn getcap_all(root: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("sh").arg("-ec").arg(format!(
        "find '{}/.' -xdev -type f -print0 | xargs -0 -r getcap -n",
        root.display()
    )));
    let prefix = root.join(".");
    let mut caps = BTreeMap::new();
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let space = line
            .iter()
            .position(|b| *b == b' ')
            .expect("getcap line: PATH CAPS");
        caps.insert(
            inside(&prefix, &line[..space]),
            String::from_utf8_lossy(&line[space + 1..]).into_owned(),
        );
    }
    caps
}

fn inside(prefix: &Path, path: &[u8]) -> String {
    let path = Path::new(OsStr::from_bytes(path));
    let rel = path
        .strip_prefix(prefix)
        .expect("find prints under the root");
    nodeguard_model::escape_path(Path::new("/").join(rel).as_os_str().as_bytes())
}

pub fn sha256sum(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

pub fn budget() -> WalkBudget {
    WalkBudget::default()
}

pub fn merged(id: &str, root: &Path) -> ContainerRoot {
    ContainerRoot {
        container_id: id.to_string(),
        spec: RootSpec::Merged {
            root: root.to_path_buf(),
        },
    }
}

pub fn overlay(id: &str, lowers: &[&Path], upper: Option<&Path>) -> ContainerRoot {
    ContainerRoot {
        container_id: id.to_string(),
        spec: RootSpec::Overlay(OverlayLayers {
            lower_dirs: lowers.iter().map(|p| p.to_path_buf()).collect(),
            upper_dir: upper.map(Path::to_path_buf),
        }),
    }
}

pub fn scan_merged(root: &Path, threads: usize) -> FsScanOutput {
    FsScanner::new(budget(), threads).scan(&[merged("c1", root)])
}

pub fn paths(out: &FsScanOutput) -> Vec<String> {
    let mut p: Vec<String> = out.files.iter().map(|f| f.path.clone()).collect();
    p.sort();
    p
}

/// Entries in /proc/self/fd.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A mount that is detached when dropped, even when the test fails.
pub struct Mounted {
    pub target: PathBuf,
}

impl Mounted {
    pub fn overlay(lowers: &[&Path], upper: &Path, work: &Path, target: &Path) -> Mounted {
        let lower = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        std::fs::create_dir_all(target).expect("mkdir target");
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={lower},upperdir={},workdir={}",
                upper.display(),
                work.display()
            ))
            .arg(target));
        Mounted {
            target: target.to_path_buf(),
        }
    }

    pub fn bind(source: &Path, target: &Path) -> Mounted {
        run(Command::new("mount").arg("--bind").arg(source).arg(target));
        Mounted {
            target: target.to_path_buf(),
        }
    }

    pub fn tmpfs(target: &Path) -> Mounted {
        std::fs::create_dir_all(target).expect("mkdir target");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(target));
        Mounted {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.target).status();
    }
}

/// Watches files for any open or read (inotify); `events()` says whether one happened.
pub struct OpenWatch {
    fd: std::os::fd::OwnedFd,
}

impl OpenWatch {
    pub fn new(paths: &[&Path]) -> OpenWatch {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        // SAFETY: fresh fd.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        for p in paths {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            let mask = libc::IN_OPEN | libc::IN_ACCESS | libc::IN_DONT_FOLLOW;
            // SAFETY: valid fd and NUL-terminated path.
            let wd = unsafe {
                libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), c.as_ptr(), mask)
            };
            assert!(wd >= 0, "inotify_add_watch {}", p.display());
        }
        OpenWatch { fd }
    }

    /// Number of bytes of pending events (0 when nothing opened or read the files).
    pub fn events(&self) -> isize {
        let mut buf = [0u8; 4096];
        // SAFETY: buf is writable for its length.
        unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
        .max(0)
    }
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs` (a hang).
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("did not finish within {secs} s (hang?)"))
}
