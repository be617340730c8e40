//! Holding a process the moment it execs, so that one living a millisecond is still read.
//!
//! An exec event names a pid; by the time a batch of them is read through `/proc/PID`, a
//! short-lived process is gone. [`Holder::hold`], called on the event source's reader thread
//! as each exec arrives, takes what disappears at exit while it is still there:
//!
//! - a handle on `/proc/PID` (`O_PATH` directory: later reads through it reach this process
//!   or fail, never a process that reused the pid);
//! - a read descriptor of its executable (`/proc/PID/exe` opened `O_RDONLY`): it stays valid
//!   after the process exited, also for a deleted file or a memfd, so the digest is taken
//!   from exactly the file that ran;
//! - the small files the collector parses and that are gone once the process is reaped:
//!   `stat`, `status`, `cmdline`, `cgroup`, the `exe` and `ns/*` links, the `cwd` link
//!   only where the collector reads it (an interpreter running a script by a relative
//!   path, [`crate::process::reads_cwd`]), and
//!   `mountinfo` when the process has a mount namespace other than the host's (a
//!   container's root and writable mounts, for the executable's layer) and not one the
//!   collector already keeps the root of ([`Holder::kept_mount_namespaces_slot`]): the
//!   processes of a container share its namespace, so its table is copied for the first
//!   exec in it, not for each (the kept file reads the table after the process exited).
//!
//! The collector then reads the process from what was held ([`crate::collect_held`]) as it
//! reads any other, and the scan hashes the held executable.
//!
//! Cost: one hold is about twenty syscalls on small procfs files, bounded per exec (files
//! are read up to the same limits as a scan's reads). At most `budget` holds exist at once
//! (two descriptors and a few KiB each); beyond it an exec is counted
//! ([`Unheld::Budget`]) and read the old way, by pid. Every exec that could not be held is
//! counted by reason in [`HoldStats`], never dropped silently.
//!
//! A pid reused between the exec and the hold is told apart by start time: a process that
//! started after the exec event is not the one that exec'd ([`Unheld::Reused`]). The
//! kernel gives start times in clock ticks (10 ms), so a reuse within one tick is not seen;
//! a pid cycling through `pid_max` that fast is not a real node's case.

use crate::layer::identity_of;
use crate::mount_roots::KeptMountNamespaces;
use crate::process::{parse_stat, read_into, reads_cwd, Captured, PidDir, CMDLINE_MAX};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::NixPath;
use nodeguard_model::UnheldExecs;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Processes held at once by default: two descriptors each.
pub const HOLD_BUDGET_DEFAULT: usize = 256;

/// Limits of the captured files: the collector's own read limits.
const STAT_MAX: usize = 4096;
const STATUS_MAX: usize = 64 * 1024;
const CGROUP_MAX: usize = 64 * 1024;
/// A container's mount table is a few KiB; this bounds a hostile one.
const MOUNTINFO_MAX: usize = 256 * 1024;

/// The `ns/*` links the collector reads.
const NS_LINKS: [&str; 7] = [
    "ns/pid",
    "ns/net",
    "ns/ipc",
    "ns/uts",
    "ns/mnt",
    "ns/user",
    "ns/cgroup",
];

/// Why an exec's process could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unheld {
    /// It had exited (and was reaped, or was a zombie without an executable) before the hold.
    Exited,
    /// The agent may not open it (EACCES, EPERM).
    Denied,
    /// [`Holder`]'s budget of processes held at once was used up (or descriptors ran out).
    Budget,
    /// Its pid belongs to a process that started after the exec.
    Reused,
    /// Any other error.
    Error,
}

/// Holds and failures to hold, since the holder was made; read any time.
#[derive(Debug, Default)]
pub struct HoldStats {
    held: AtomicU64,
    exited: AtomicU64,
    denied: AtomicU64,
    budget: AtomicU64,
    reused: AtomicU64,
    error: AtomicU64,
}

impl HoldStats {
    /// Exec'd processes held.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Exec'd processes that could not be held, by reason.
    pub fn unheld(&self) -> UnheldExecs {
        UnheldExecs {
            exited: self.exited.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            budget: self.budget.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            error: self.error.load(Ordering::Relaxed),
        }
    }

    fn count(&self, reason: Unheld) {
        let counter = match reason {
            Unheld::Exited => &self.exited,
            Unheld::Denied => &self.denied,
            Unheld::Budget => &self.budget,
            Unheld::Reused => &self.reused,
            Unheld::Error => &self.error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Takes hold of exec'd processes under one proc root.
#[derive(Debug)]
pub struct Holder {
    proc_fd: OwnedFd,
    in_use: Arc<AtomicUsize>,
    budget: usize,
    stats: Arc<HoldStats>,
    /// The `ns/mnt` link of pid 1: a process showing it has the host's mount table, which is
    /// not captured (the collector falls back to reading it, as for any host process).
    host_mnt: Option<Vec<u8>>,
    /// The namespaces the collector keeps roots for, once the daemon has a collector.
    kept: Arc<OnceLock<KeptMountNamespaces>>,
    tick_ns: u64,
}

/// One held process: see the module's documentation. Dropping it closes its descriptors
/// and frees its place in the budget.
#[derive(Debug)]
pub struct HeldProcess {
    pub pid: i32,
    dir: OwnedFd,
    exe: Option<File>,
    captured: Captured,
}

fn reason(e: Errno) -> Unheld {
    match e {
        Errno::ENOENT | Errno::ESRCH => Unheld::Exited,
        Errno::EACCES | Errno::EPERM => Unheld::Denied,
        Errno::EMFILE | Errno::ENFILE => Unheld::Budget,
        _ => Unheld::Error,
    }
}

/// `clock` now, in nanoseconds (0 if it cannot be read).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return 0;
    }
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// `CLOCK_BOOTTIME` minus `CLOCK_MONOTONIC` now, in nanoseconds (time spent suspended).
fn suspended_ns() -> u64 {
    let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
    let boottime = clock_ns(libc::CLOCK_BOOTTIME);
    boottime.saturating_sub(monotonic)
}

/// Microseconds from an exec (`CLOCK_MONOTONIC` ns) to now: how late a hold came.
fn late_us(exec_ns: u64) -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(exec_ns) / 1000
}

impl Holder {
    /// A holder for processes under `proc_root` (the host's `/proc`), holding at most
    /// `budget` at once.
    pub fn new(proc_root: &Path, budget: usize) -> std::io::Result<Holder> {
        let proc_fd = nix::fcntl::open(
            proc_root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // Where pid 1 is hidden from the agent (a sandbox), its own namespace stands in: at
        // worst a namespace's table is copied per exec, as for a container.
        let host_mnt = readlinkat(proc_fd.as_fd(), "1/ns/mnt")
            .or_else(|_| readlinkat(proc_fd.as_fd(), "self/ns/mnt"))
            .ok()
            .map(|t| t.as_bytes().to_vec());
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let tick_ns = u64::try_from(ticks)
            .ok()
            .filter(|t| *t > 0)
            .map_or(10_000_000, |t| 1_000_000_000 / t);
        Ok(Holder {
            proc_fd,
            in_use: Arc::new(AtomicUsize::new(0)),
            budget,
            stats: Arc::new(HoldStats::default()),
            host_mnt,
            kept: Arc::default(),
            tick_ns,
        })
    }

    /// Where to put the collector's [`KeptMountNamespaces`] once it exists (the holder runs
    /// from before): from then on a process in a namespace the collector keeps the root of
    /// is held without a copy of its `mountinfo`.
    pub fn kept_mount_namespaces_slot(&self) -> Arc<OnceLock<KeptMountNamespaces>> {
        Arc::clone(&self.kept)
    }

    /// The counters, shared with whoever reports them.
    pub fn stats(&self) -> Arc<HoldStats> {
        Arc::clone(&self.stats)
    }

    /// Processes held now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Takes hold of `pid`, which exec'd at `exec_ns` (`CLOCK_MONOTONIC`): [`Holder::grab`]
    /// then [`Holder::finish`]. What could not be held is counted in [`HoldStats`] and
    /// returned as the reason.
    pub fn hold(&self, pid: i32, exec_ns: u64) -> Result<HeldProcess, Unheld> {
        let grip = self.grab(pid, exec_ns)?;
        self.finish(grip)
    }

    /// The first step of a hold, what disappears soonest: the `/proc/PID` handle and the
    /// executable (three system calls). A reader thread with several execs waiting grabs
    /// each of them before it [`Holder::finish`]es any, so a process exec'd right behind
    /// another is not kept waiting by the other's small files. A failure is counted.
    pub fn grab(&self, pid: i32, exec_ns: u64) -> Result<Grip, Unheld> {
        self.try_grab(pid, exec_ns)
            .inspect_err(|(reason, step)| {
                self.count_unheld(pid, exec_ns, *reason, step, "exec'd process not held")
            })
            .map_err(|(reason, _)| reason)
    }

    /// The second step: the small files of a grabbed process, and the check that it is the
    /// process that exec'd. Counts the hold or its failure.
    pub fn finish(&self, grip: Grip) -> Result<HeldProcess, Unheld> {
        let (pid, exec_ns) = (grip.pid, grip.exec_ns);
        match self.try_finish(grip) {
            Ok(held) => {
                self.stats.held.fetch_add(1, Ordering::Relaxed);
                Ok(held)
            }
            Err((reason, step)) => {
                self.count_unheld(
                    pid,
                    exec_ns,
                    reason,
                    step,
                    "exec'd process grabbed, not held",
                );
                Err(reason)
            }
        }
    }

    /// `comm` of `pid` if it can still be read (a zombie's can), for the debug log of a
    /// failed hold only.
    /// Counts a hold that failed at `step` and says so in the debug log, with how late after
    /// the exec it came and the process's name while it can still be read.
    fn count_unheld(&self, pid: i32, exec_ns: u64, reason: Unheld, step: &str, what: &str) {
        self.stats.count(reason);
        tracing::debug!(
            pid,
            ?reason,
            step,
            late_us = late_us(exec_ns),
            comm = %self.comm(pid).unwrap_or_default(),
            "{what}"
        );
    }

    fn comm(&self, pid: i32) -> Option<String> {
        let fd = openat(
            self.proc_fd.as_fd(),
            format!("{pid}/comm").as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .ok()?;
        let mut buf = [0u8; 64];
        let n = nix::unistd::read(&fd, &mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
    }

    fn try_grab(&self, pid: i32, exec_ns: u64) -> Result<Grip, (Unheld, &'static str)> {
        if pid <= 0 {
            return Err((Unheld::Error, "pid"));
        }
        if self.in_use.fetch_add(1, Ordering::Relaxed) >= self.budget {
            self.in_use.fetch_sub(1, Ordering::Relaxed);
            return Err((Unheld::Budget, "budget"));
        }
        // From here on the place is given back when the capture is dropped.
        let captured = Captured {
            files: Vec::new(),
            links: Vec::new(),
            exe_identity: None,
            counted_in: Some(Arc::clone(&self.in_use)),
        };
        let at = |step: &'static str| move |e: Errno| (reason(e), step);
        let dir = openat(
            self.proc_fd.as_fd(),
            pid.to_string().as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(at("dir"))?;
        // The executable first: it is what is gone soonest (at exit, before the reaping).
        // Non-blocking and checked to be a regular file, like every file the agent hashes.
        let exe = openat(
            dir.as_fd(),
            "exe",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(at("exe"))?;
        let exe_stat = fstat(exe.as_fd()).map_err(at("exe"))?;
        let regular = SFlag::from_bits_truncate(exe_stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        let mut captured = captured;
        captured.exe_identity = Some(identity_of(&exe_stat));
        Ok(Grip {
            pid,
            exec_ns,
            dir,
            exe: regular.then(|| File::from(exe)),
            captured,
        })
    }

    fn try_finish(&self, grip: Grip) -> Result<HeldProcess, (Unheld, &'static str)> {
        let Grip {
            pid,
            exec_ns,
            dir,
            exe,
            mut captured,
        } = grip;
        let mut files: Vec<(&'static str, Vec<u8>)> = Vec::with_capacity(5);
        // `whole`: a file procfs generates whole (a short read ends it).
        let read = |name: &'static str,
                    limit: usize,
                    whole: bool,
                    files: &mut Vec<(&'static str, Vec<u8>)>| {
            let file = openat(
                dir.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
                Mode::empty(),
            )
            .map_err(|e| (reason(e), name))?;
            let bytes = read_small(&mut File::from(file), limit, whole).map_err(|e| {
                let why = e
                    .raw_os_error()
                    .map_or(Unheld::Error, |n| reason(Errno::from_raw(n)));
                (why, name)
            })?;
            files.push((name, bytes));
            Ok::<(), (Unheld, &'static str)>(())
        };
        read("stat", STAT_MAX, true, &mut files)?;
        let start_ticks = files
            .first()
            .and_then(|(_, stat)| parse_stat(stat).ok())
            .and_then(|s| s.start_ticks);
        if let Some(start_ticks) = start_ticks {
            // Start times are truncated to ticks: the process that exec'd started at or
            // before the exec, so its tick is never after the exec's.
            let started_ns = start_ticks.saturating_mul(self.tick_ns);
            if started_ns > exec_ns.saturating_add(suspended_ns()) {
                return Err((Unheld::Reused, "stat"));
            }
        }
        read("cgroup", CGROUP_MAX, true, &mut files)?;
        read("status", STATUS_MAX, true, &mut files)?;
        // As the collector reads it: a short read ends it (procfs hands out the whole
        // argument area, up to what was asked, in one read).
        read("cmdline", CMDLINE_MAX, true, &mut files)?;
        let mut links = Vec::with_capacity(NS_LINKS.len() + 2);
        let link = |name: &'static str, links: &mut Vec<(&'static str, Vec<u8>)>| {
            if let Some(target) = read_link(&dir, name) {
                links.push((name, target));
            }
        };
        link("exe", &mut links);
        // `cwd` only where the collector will ask for it (an interpreter running a script
        // by a relative path): for any other process it is never read.
        let cmdline = files.last().map_or(&[][..], |(_, c)| c.as_slice());
        let exe_link = links.iter().find(|(n, _)| *n == "exe");
        if exe_link.is_some_and(|(_, exe)| reads_cwd(exe, cmdline)) {
            link("cwd", &mut links);
        }
        for name in NS_LINKS {
            link(name, &mut links);
        }
        let mnt = links.iter().find(|(n, _)| *n == "ns/mnt").map(|(_, t)| t);
        let kept = mnt
            .and_then(|t| ns_inode(t))
            .zip(self.kept.get())
            .is_some_and(|(ns, kept)| kept.contains(ns));
        if !kept && (mnt.is_none() || mnt != self.host_mnt.as_ref()) {
            // Best effort: without it the collector reads the mount table itself.
            let _ = read("mountinfo", MOUNTINFO_MAX, false, &mut files);
        }
        captured.files = files;
        captured.links = links;
        Ok(HeldProcess {
            pid,
            dir,
            exe,
            captured,
        })
    }
}

/// The inode of a namespace link's target (`mnt:[4026531840]`).
fn ns_inode(target: &[u8]) -> Option<u64> {
    let open = target.iter().position(|b| *b == b'[')?;
    let inner = target.get(open + 1..target.len().checked_sub(1)?)?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// The target of the link `name` under `dir`, read into a buffer on the stack and kept at
/// its size: one allocation per link (`nix`'s `readlinkat` allocates `PATH_MAX`, shrinks,
/// and the capture copied that again; a hold reads eight links per exec). `None` when it
/// cannot be read.
fn read_link(dir: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    let n = name
        .with_nix_path(|path| {
            // SAFETY: `path` is a NUL-terminated string and `buf` is writable for its length;
            // readlinkat writes at most that many bytes and returns how many it wrote.
            unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    path.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            }
        })
        .ok()?;
    let n = usize::try_from(n).ok()?;
    if n < buf.len() {
        return buf.get(..n).map(<[u8]>::to_vec);
    }
    // As long as the buffer: maybe cut; the allocating read says how long it is.
    readlinkat(dir.as_fd(), name)
        .ok()
        .map(|t| t.as_bytes().to_vec())
}

/// At most `limit` bytes of a small procfs file, as [`read_into`] reads them, the first
/// `read` into a page on the stack: what is kept is exactly what the file held (a capture
/// does not keep an 8 KiB buffer per file for a 300-byte `stat`) and nothing is zeroed per
/// read.
fn read_small(file: &mut File, limit: usize, whole: bool) -> std::io::Result<Vec<u8>> {
    let mut page = [0u8; 4096];
    let want = page.len().min(limit);
    let n = loop {
        match file.read(&mut page[..want]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            read => break read?,
        }
    };
    let mut bytes = page[..n].to_vec();
    if n == 0 || (whole && n < want) || n >= limit {
        return Ok(bytes);
    }
    let mut rest = Vec::new();
    read_into(&mut rest, limit - n, whole, |chunk, _| file.read(chunk))?;
    bytes.extend_from_slice(&rest);
    Ok(bytes)
}

/// A process grabbed ([`Holder::grab`]) and not yet [`Holder::finish`]ed: its `/proc/PID`
/// handle and executable. Dropping it frees its place in the budget.
#[derive(Debug)]
pub struct Grip {
    pub pid: i32,
    exec_ns: u64,
    dir: OwnedFd,
    exe: Option<File>,
    captured: Captured,
}

impl HeldProcess {
    /// The executable, open for reading (a regular file; `None` otherwise).
    pub fn exe(&self) -> Option<&File> {
        self.exe.as_ref()
    }

    /// The handle the collector reads the process through (serving what was captured), and
    /// the executable to hash.
    pub fn into_parts(self) -> (PidDir, Option<File>) {
        (
            PidDir::with_captured(self.pid, self.dir, self.captured),
            self.exe,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectOptions;
    use std::process::{Command, Stdio};

    /// `CLOCK_MONOTONIC` now: an exec event's timestamp for a process started before it.
    fn monotonic_ns() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `t`.
        assert_eq!(
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) },
            0
        );
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    fn sleep_binary() -> std::path::PathBuf {
        ["/usr/bin/sleep", "/bin/sleep"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
            .expect("sleep (coreutils)")
    }

    /// `command` started, once its new image's arguments are in place. `spawn` returns when
    /// the child's exec has replaced its memory (a vfork-style spawn resumes the parent
    /// there), which is before the kernel sets the new image's argument area: a read of
    /// `cmdline` at once can find it empty. The exec event the agent holds on is sent after
    /// that, so the tests wait for what the agent would see.
    fn started(command: &mut Command) -> std::process::Child {
        let child = command.spawn().unwrap();
        wait_arguments(child.id());
        child
    }

    /// Waits until `/proc/PID/cmdline` is no longer empty (see [`started`]).
    fn wait_arguments(pid: u32) {
        let cmdline = format!("/proc/{pid}/cmdline");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read(&cmdline).map_or(true, |c| c.is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{cmdline} stayed empty"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn holder(budget: usize) -> Holder {
        Holder::new(Path::new("/proc"), budget).unwrap()
    }

    /// A child held once it has exec'd, then reaped: the collector still reads it (its
    /// executable, command line) from what was held, the held executable still reads as the
    /// file on disk, and the same pid read the old way is gone.
    #[test]
    fn a_held_process_is_read_with_its_executable_after_it_was_reaped() {
        let program = sleep_binary();
        // Long enough to be held before it exits even on a loaded machine (a zombie's
        // command line is empty: 0.5 s was not enough once 76 tests shared CI's two cores).
        let mut child = started(Command::new(&program).arg("3").stdin(Stdio::null()));
        let pid = child.id() as i32;
        let holder = holder(4);
        let held = holder
            .hold(pid, monotonic_ns())
            .expect("a running child is held");
        assert_eq!(holder.in_use(), 1);
        assert!(child.wait().unwrap().success());

        let opts = CollectOptions::default();
        let bare = crate::collect_pids(&opts, &[pid]).unwrap();
        assert!(
            bare.processes.iter().all(|p| p.process.pid != pid),
            "pid {pid} was reaped: a read by pid cannot find it"
        );
        let (dir, exe) = held.into_parts();
        let snapshot = crate::collect_held(&opts, &[], vec![dir]).unwrap();
        assert_eq!(holder.in_use(), 0, "the collector closed what was held");
        let read = snapshot
            .processes
            .iter()
            .find(|p| p.process.pid == pid)
            .unwrap_or_else(|| panic!("pid {pid} not read from its hold: {snapshot:?}"));
        let want = std::fs::canonicalize(&program).unwrap();
        assert_eq!(read.process.exe.as_deref(), want.to_str());
        assert!(
            read.process.cmdline.ends_with(" 3"),
            "{}",
            read.process.cmdline
        );
        assert!(!read.process.exe_deleted);
        let mut exe = exe.expect("the executable was held");
        let mut bytes = Vec::new();
        exe.read_to_end(&mut bytes).unwrap();
        assert!(
            bytes == std::fs::read(&want).unwrap(),
            "the held executable reads as {}",
            want.display()
        );
        assert_eq!(holder.stats().held(), 1);
    }

    /// A process in a container's mount namespace is held with a copy of its mount table
    /// until the collector keeps that namespace's root; from then on its execs are held
    /// without one (the table is not read per exec), and the inode is what decides.
    #[test]
    fn a_mount_table_the_collector_keeps_is_not_copied_again_at_each_hold() {
        use std::os::unix::fs::MetadataExt;
        let Some(mut child) = crate::mount_roots::tests::own_mount_namespace() else {
            return;
        };
        let pid = child.id() as i32;
        let proc = format!("/proc/{pid}");
        let own = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let ns = loop {
            let ns = std::fs::metadata(format!("{proc}/ns/mnt")).unwrap().ino();
            if ns != own {
                break ns;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "unshare -m did not take effect"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let copied =
            |held: &HeldProcess| held.captured.files.iter().any(|(n, _)| *n == "mountinfo");
        let holder = holder(4);
        let held = holder.hold(pid, monotonic_ns()).expect("held");
        assert!(
            copied(&held),
            "a namespace nobody keeps: its table is copied"
        );
        drop(held);

        let kept = KeptMountNamespaces::default();
        assert!(holder
            .kept_mount_namespaces_slot()
            .set(kept.clone())
            .is_ok());
        let held = holder.hold(pid, monotonic_ns()).expect("held");
        assert!(copied(&held), "set, but this namespace is not kept yet");
        drop(held);

        let file = File::open(format!("{proc}/mountinfo")).unwrap();
        let table = std::fs::read(format!("{proc}/mountinfo")).unwrap();
        kept.0
            .lock()
            .unwrap()
            .parse_and_keep(Some(ns), Some(file), &table);
        assert!(kept.contains(ns));
        let held = holder.hold(pid, monotonic_ns()).expect("held");
        assert!(!copied(&held), "a kept namespace's table was copied again");
        assert!(
            held.captured.files.iter().any(|(n, _)| *n == "status"),
            "the rest is still held"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A shell running a script by a relative path is held with its working directory, so
    /// the script is resolved after the shell exited; a program that is no interpreter (or
    /// a script named absolutely) is held without it: its `cwd` link is not read per exec.
    #[test]
    fn the_working_directory_is_held_only_for_a_script_named_relatively() {
        let dir = std::env::temp_dir().join(format!("held-cwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s.sh");
        std::fs::write(&script, "sleep 3\n").unwrap();
        let holder = holder(4);
        let held_cwd = |program: &Path, arg: &std::ffi::OsStr| {
            let mut child = Command::new(program)
                .arg(arg)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            // The exec has happened once the link names the program (a fork shows the
            // test binary until then).
            let link = format!("/proc/{}/exe", child.id());
            let want = std::fs::canonicalize(program).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::fs::read_link(&link).ok() != Some(want.clone()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{program:?} did not exec"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // Whether `cwd` is read depends on the command line: wait until it is there.
            wait_arguments(child.id());
            let held = holder
                .hold(child.id() as i32, monotonic_ns())
                .expect("a running child is held");
            let _ = child.kill();
            let _ = child.wait();
            let cwd = held
                .captured
                .links
                .iter()
                .find(|(n, _)| *n == "cwd")
                .map(|(_, t)| t.clone());
            (held, cwd)
        };
        let shell = Path::new("/bin/sh");
        let (held, cwd) = held_cwd(shell, "s.sh".as_ref());
        assert_eq!(
            cwd.as_deref(),
            Some(std::fs::canonicalize(&dir).unwrap().as_os_str().as_bytes())
        );
        let (pid_dir, _) = held.into_parts();
        let raw = crate::process::read_process(
            &pid_dir,
            &mut Vec::new(),
            &mut None,
            &mut crate::process::CgroupMemo::default(),
            &mut crate::process::ExeLinks::default(),
            None,
            false,
        )
        .expect("read from what was held, after the shell exited");
        let want = std::fs::canonicalize(&script).unwrap();
        assert_eq!(raw.script.as_deref(), Some(want.as_os_str().as_bytes()));

        let (_, cwd) = held_cwd(shell, script.as_os_str());
        assert_eq!(cwd, None, "an absolute script needs no working directory");
        let (_, cwd) = held_cwd(&sleep_binary(), "3".as_ref());
        assert_eq!(cwd, None, "sleep is no interpreter");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_namespace_link_names_its_inode() {
        assert_eq!(ns_inode(b"mnt:[4026531840]"), Some(4026531840));
        assert_eq!(ns_inode(b"mnt:[]"), None);
        assert_eq!(ns_inode(b"mnt:"), None);
        assert_eq!(ns_inode(b"["), None);
        assert_eq!(ns_inode(b""), None);
    }

    #[test]
    fn holds_beyond_the_budget_are_refused_and_counted_until_one_is_dropped() {
        let mut child = started(Command::new(sleep_binary()).arg("5"));
        let pid = child.id() as i32;
        let holder = holder(1);
        let now = monotonic_ns();
        let first = holder.hold(pid, now).expect("held");
        assert_eq!(holder.hold(pid, now).unwrap_err(), Unheld::Budget);
        drop(first);
        let again = holder.hold(pid, now).expect("the place was given back");
        assert_eq!(holder.stats().unheld().budget, 1);
        assert_eq!(holder.stats().held(), 2);
        drop(again);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A process grabbed (its executable open) and reaped before its finish is counted as
    /// exited, not held, and gives its place back; what was grabbed still reads as the file
    /// that ran until then.
    #[test]
    fn a_process_reaped_between_its_grab_and_its_finish_is_counted_exited() {
        let program = sleep_binary();
        let mut child = started(Command::new(&program).arg("5"));
        let pid = child.id() as i32;
        let holder = holder(4);
        let grip = holder
            .grab(pid, monotonic_ns())
            .expect("a running child is grabbed");
        assert_eq!(grip.pid, pid);
        assert_eq!(holder.in_use(), 1);
        let mut exe = grip.exe.as_ref().expect("the executable was grabbed");
        let mut bytes = Vec::new();
        let _ = child.kill();
        let _ = child.wait();
        exe.read_to_end(&mut bytes).unwrap();
        let want = std::fs::canonicalize(&program).unwrap();
        assert!(bytes == std::fs::read(&want).unwrap());
        assert_eq!(holder.finish(grip).unwrap_err(), Unheld::Exited);
        assert_eq!(holder.stats().unheld().exited, 1);
        assert_eq!(holder.stats().held(), 0);
        assert_eq!(holder.in_use(), 0);
    }

    /// A process that started after the exec event cannot be the one that exec'd; one that
    /// is gone is counted as exited.
    #[test]
    fn a_pid_newer_than_its_exec_event_is_reused_and_a_reaped_one_exited() {
        let mut child = started(Command::new(sleep_binary()).arg("5"));
        let pid = child.id() as i32;
        let holder = holder(4);
        assert_eq!(holder.hold(pid, 0).unwrap_err(), Unheld::Reused);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            holder.hold(pid, monotonic_ns()).unwrap_err(),
            Unheld::Exited
        );
        let unheld = holder.stats().unheld();
        assert_eq!((unheld.reused, unheld.exited), (1, 1));
        assert_eq!(holder.in_use(), 0);
    }
}
