//! Container roots by mount namespace, kept between exec reads.
//!
//! An exec'd process in a container needs its container's root filesystem (the overlay
//! layers its executable is looked up in). Reading and parsing `/proc/PID/mountinfo` for
//! every exec costs as much as the container has mounts; the processes of one container
//! share one mount namespace, whose table changes rarely. So the root found for a namespace
//! is kept, with the `mountinfo` file it was read from left open: the kernel marks such a
//! file with `POLLPRI` when a mount or unmount happens in its namespace (`proc(5)`, "this
//! file is pollable"), and the open file holds the namespace, so its inode number cannot
//! name another namespace while kept. A kept root is used while a zero-timeout `poll` on
//! its file shows no change; after a change the file is read again (it yields the table as
//! it is now) and parsed once more.

use crate::bounded_read::read_into;
use crate::mountinfo::{container_root, ContainerRoot};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

/// Namespaces kept at most; past it the cache starts over (each namespace is read again
/// once). About one per container.
pub(crate) const KEPT_MAX: usize = 1024;

/// Roots by mount namespace inode, with the `mountinfo` file each was read from.
#[derive(Debug, Default)]
pub(crate) struct MountRoots {
    kept: HashMap<u64, Kept>,
    /// `mountinfo` tables parsed so far (a cache miss or a namespace whose mounts changed).
    parses: u64,
}

#[derive(Debug)]
struct Kept {
    file: File,
    root: Option<ContainerRoot>,
    /// Looked up since the last [`MountRoots::forget_unused`].
    used: bool,
}

impl MountRoots {
    /// The root kept for the namespace `ns`, when its mount table has not changed since it
    /// was read. A table that changed is read again through the kept file (bounded by
    /// `limit`) and parsed; when that fails the entry is dropped and `None` returned, and the
    /// caller reads the process's own file.
    pub(crate) fn get(
        &mut self,
        ns: u64,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> Option<Option<ContainerRoot>> {
        let kept = self.kept.get_mut(&ns)?;
        kept.used = true;
        if !changed(&kept.file) {
            return Some(kept.root.clone());
        }
        let reread = kept.file.seek(SeekFrom::Start(0)).and_then(|_| {
            let file = &mut kept.file;
            read_into(buf, limit, false, |chunk, _| file.read(chunk))
        });
        if reread.is_err() {
            self.kept.remove(&ns);
            return None;
        }
        self.parses += 1;
        kept.root = container_root(buf);
        Some(kept.root.clone())
    }

    /// Parses `mountinfo` (read from a process in the namespace `ns`) and keeps the root
    /// with `file`, that process's `mountinfo` opened before it was read (so a change in
    /// between shows at the next [`MountRoots::get`]). Without `file` nothing is kept.
    pub(crate) fn parse_and_keep(
        &mut self,
        ns: Option<u64>,
        file: Option<File>,
        mountinfo: &[u8],
    ) -> Option<ContainerRoot> {
        self.parses += 1;
        let root = container_root(mountinfo);
        if let (Some(ns), Some(file)) = (ns, file) {
            if self.kept.len() >= KEPT_MAX {
                self.kept.clear();
            }
            self.kept.insert(
                ns,
                Kept {
                    file,
                    root: root.clone(),
                    used: true,
                },
            );
        }
        root
    }

    /// Drops the namespaces not looked up since the last call (their containers are gone or
    /// idle): called once per full pass, so what is kept follows what runs.
    pub(crate) fn forget_unused(&mut self) {
        self.kept.retain(|_, k| std::mem::take(&mut k.used));
    }

    pub(crate) fn parses(&self) -> u64 {
        self.parses
    }
}

/// The mount namespaces whose roots exec reads keep, shared with the exec holder
/// ([`crate::held::Holder::kept_mount_namespaces_slot`]): a held process in one of them
/// needs no copy of its `mountinfo` (the kept file reads the namespace's table even after
/// the process exited), which saves reading a container's whole mount table per exec.
#[derive(Debug, Clone, Default)]
pub struct KeptMountNamespaces(pub(crate) Arc<Mutex<MountRoots>>);

impl KeptMountNamespaces {
    /// Whether the namespace with inode `ns` is kept; `false` while the collector holds the
    /// lock (the caller then copies the table: never waits on the collector).
    pub fn contains(&self, ns: u64) -> bool {
        self.0
            .try_lock()
            .is_ok_and(|roots| roots.kept.contains_key(&ns))
    }
}

/// Whether the namespace's mount table changed since `file` was opened, read or last polled
/// (`POLLPRI`/`POLLERR` from procfs). A poll that fails counts as a change: read again.
fn changed(file: &File) -> bool {
    let mut fds = [libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    }];
    // SAFETY: one pollfd, of a descriptor `file` keeps open, its length given; timeout 0.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    ready != 0 && (ready < 0 || fds[0].revents & (libc::POLLPRI | libc::POLLERR) != 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A process in a mount namespace of its own (`unshare -m` needs root). Without root or
    /// `unshare` the test says why it skips; with CI=true it fails instead.
    pub(crate) fn own_mount_namespace() -> Option<Child> {
        let why = if !nix::unistd::Uid::effective().is_root() {
            "not root"
        } else {
            match Command::new("unshare")
                .args(["-m", "--propagation", "private", "sleep", "60"])
                .stdin(Stdio::null())
                .spawn()
            {
                Ok(child) => return Some(child),
                Err(_) => "no unshare(1)",
            }
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "a mount namespace needs root and unshare(1): {why}"
        );
        eprintln!("skipped: a mount namespace needs root and unshare(1): {why}");
        None
    }

    #[test]
    fn a_mount_in_the_namespace_and_only_that_reads_its_table_again() {
        let Some(mut child) = own_mount_namespace() else {
            return;
        };
        let proc = format!("/proc/{}", child.id());
        let own = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
        let deadline = Instant::now() + Duration::from_secs(10);
        let ns = loop {
            // `unshare` execs `sleep` once the namespace is its own.
            let ns = std::fs::metadata(format!("{proc}/ns/mnt")).unwrap().ino();
            if ns != own {
                break ns;
            }
            assert!(Instant::now() < deadline, "unshare -m did not take effect");
            std::thread::sleep(Duration::from_millis(10));
        };
        let file = File::open(format!("{proc}/mountinfo")).unwrap();
        let table = std::fs::read(format!("{proc}/mountinfo")).unwrap();
        let mut roots = MountRoots::default();
        let root = roots.parse_and_keep(Some(ns), Some(file), &table);
        let mut buf = Vec::new();
        for _ in 0..10 {
            assert_eq!(roots.get(ns, &mut buf, 4 << 20), Some(root.clone()));
        }
        assert_eq!(roots.parses(), 1, "an unchanged table was parsed again");

        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("nsenter")
            .args([
                "-t",
                &child.id().to_string(),
                "-m",
                "mount",
                "-t",
                "tmpfs",
                "ng-test",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success());
        let after = roots.get(ns, &mut buf, 4 << 20).unwrap().unwrap();
        assert_eq!(
            roots.parses(),
            2,
            "a mount did not make the table be read again"
        );
        let point = dir.path().as_os_str().as_encoded_bytes();
        assert!(
            after
                .writable_mounts
                .iter()
                .any(|m| m.mount_point == point && m.fstype == "tmpfs"),
            "{:?}",
            after.writable_mounts
        );
        assert_eq!(roots.get(ns, &mut buf, 4 << 20), Some(Some(after)));
        assert_eq!(roots.parses(), 2);
        let _ = child.kill();
        let _ = child.wait();
    }
}
