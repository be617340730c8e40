//! A proc root that shows only chosen processes.
//!
//! `nodeguard scan --proc-root DIR` exists for agents that see the host's /proc somewhere else
//! (`/host/proc`). A directory holding bind mounts of `/proc/PID` for a few pids (pid 1 always,
//! it is the host reference for namespaces) plus symlinks to everything else of `/proc` is such a
//! proc root — one in which every counter of the scan (files hashed, cache hits) belongs to the
//! test's own processes, unaffected by whatever else runs on the machine.

use super::cmd;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct FakeProc {
    root: PathBuf,
    mounts: Vec<PathBuf>,
    tmp: Option<tempfile::TempDir>,
}

impl FakeProc {
    /// A proc root with pid 1 and `pids` only. When the host's pid 1 cannot be looked into
    /// (see [`super::host_pid1_readable`]), this test process stands in for it: it runs in the
    /// host's namespaces and sees the host's root, which is all a scan needs of pid 1.
    pub fn with_pids(pids: &[i32]) -> FakeProc {
        let tmp = tempfile::Builder::new()
            .prefix("nodeguard-proc-")
            .tempdir()
            .expect("create fake proc dir");
        let root = tmp.path().join("proc");
        fs::create_dir(&root).unwrap();
        let mut fake = FakeProc {
            root,
            mounts: Vec::new(),
            tmp: Some(tmp),
        };
        let pid1_source = if super::host_pid1_readable() {
            1
        } else {
            std::process::id() as i32
        };
        let mut wanted: Vec<(i32, i32)> = pids.iter().map(|&p| (p, p)).collect();
        wanted.push((1, pid1_source));
        wanted.sort_unstable();
        wanted.dedup();
        for (pid, source_pid) in wanted {
            let target = fake.root.join(pid.to_string());
            fs::create_dir(&target).unwrap();
            let source = format!("/proc/{source_pid}");
            cmd::run_ok("mount", &["--bind", &source, target.to_str().unwrap()]);
            fake.mounts.push(target);
        }
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.parse::<i32>().is_ok() {
                continue;
            }
            std::os::unix::fs::symlink(Path::new("/proc").join(&*name), fake.root.join(&*name))
                .unwrap();
        }
        fake
    }

    /// The directory to pass as `--proc-root`.
    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn path_str(&self) -> &str {
        self.root.to_str().unwrap()
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let mut all_unmounted = true;
        for mount in &self.mounts {
            if !cmd::run("umount", &[mount]).success()
                && !cmd::run("umount", &["-l", mount.to_str().unwrap()]).success()
            {
                eprintln!("cannot unmount {}", mount.display());
                all_unmounted = false;
            }
        }
        if let Some(tmp) = self.tmp.take() {
            if all_unmounted {
                drop(tmp);
            } else {
                eprintln!("left {} behind", tmp.keep().display());
            }
        }
    }
}
