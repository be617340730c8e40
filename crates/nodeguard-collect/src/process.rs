//! One process from `/proc/PID`: `stat`, `status`, `cmdline`, `exe`, `ns/*`, `cgroup`.
//!
//! The parsers are pure functions over bytes. Reading goes through a directory handle of
//! `/proc/PID` (`openat` relative to it), so every file read belongs to the same process even
//! if its pid is reused meanwhile: a process that is gone makes the reads fail, it never
//! swaps in another one.

use crate::cgroup::{
    attribute, count_malformed_lines, may_name_container, parse_cgroup_file, CgroupFile,
    ContainerRef,
};
use crate::layer::FileIdentity;
use crate::Error;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstatat, Mode};
use nodeguard_model::{escape_path, Namespaces, Process};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use crate::procfs::*;

/// Why reading a process stopped.
#[derive(Debug)]
pub enum Failure {
    /// It exited while being read (ENOENT, ESRCH).
    Vanished,
    /// The agent may not read it (EACCES, EPERM).
    Denied,
    /// Anything else: a warning.
    Error(Error),
}

fn classify(pid: i32, file: &'static str, e: io::Error) -> Failure {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT | Errno::ESRCH) => Failure::Vanished,
        Some(Errno::EACCES | Errno::EPERM) => Failure::Denied,
        _ => Failure::Error(Error::ProcRead {
            pid,
            file,
            source: e,
        }),
    }
}

pub(crate) use crate::bounded_read::read_into;

/// A handle on `/proc/PID`.
#[derive(Debug)]
pub struct PidDir {
    pub pid: i32,
    fd: OwnedFd,
    /// `status`, kept open after its first [`PidDir::read_status_kept`]: procfs regenerates
    /// it on every read from offset 0, so a warm pass reads it with one `pread` instead of
    /// `openat`, `read` and `close`. Like the directory, it stays bound to the process it
    /// was opened on: once that one is gone, reads fail with ESRCH whoever has the pid now.
    status: OnceLock<File>,
    /// What was read of the process when it was held at its exec ([`crate::held`]): served
    /// in place of the files and links it holds, which are gone once the process is.
    captured: Option<Captured>,
}

/// What was read of a process while it ran, when it was held at its exec (`crate::held`):
/// files and links by name, and the stat of its executable.
#[derive(Debug, Default)]
pub struct Captured {
    pub(crate) files: Vec<(&'static str, Vec<u8>)>,
    pub(crate) links: Vec<(&'static str, Vec<u8>)>,
    pub(crate) exe_identity: Option<FileIdentity>,
    /// A count of captures alive that this one is part of, decremented when it is dropped
    /// (the holder's budget).
    pub(crate) counted_in: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Captured {
    fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.as_slice())
    }

    fn link(&self, name: &str) -> Option<&[u8]> {
        self.links
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.as_slice())
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if let Some(count) = &self.counted_in {
            count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl PidDir {
    /// Opens `<proc root>/<pid>` relative to an open proc root.
    pub fn open(proc_root: &OwnedFd, pid: i32) -> Result<PidDir, Failure> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        openat(
            proc_root.as_fd(),
            pid.to_string().as_str(),
            flags,
            Mode::empty(),
        )
        .map(|fd| PidDir {
            pid,
            fd,
            status: OnceLock::new(),
            captured: None,
        })
        .map_err(|e| classify(pid, "", e.into()))
    }

    /// A handle on `/proc/PID` (`fd`) that serves what was `captured` of the process
    /// before anything read through `fd`.
    pub(crate) fn with_captured(pid: i32, fd: OwnedFd, captured: Captured) -> PidDir {
        PidDir {
            pid,
            fd,
            status: OnceLock::new(),
            captured: Some(captured),
        }
    }

    /// Reads at most `limit` bytes of a file into `buf` (cleared first). A short read ends
    /// the file: the per-process files generated whole (`stat`, `status`, `cgroup`; procfs's
    /// `single_open`) fill the buffer they are given unless the file has ended, so they take
    /// one `read`, not a second one that returns 0. Files of many records (`mountinfo`)
    /// are not like that: use [`Self::read_to_end`].
    pub fn read(&self, file: &'static str, buf: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
        self.read_impl(file, buf, limit, true)
    }

    /// Reads at most `limit` bytes of a record-by-record `seq_file` (`mountinfo`) into `buf`,
    /// until `read` returns 0. Such a file hands out about one page of records per `read`
    /// whatever the buffer size, so a short read is not its end: on a node with a few dozen
    /// overlay mounts, stopping there cut the host's mount table after its first page.
    pub fn read_to_end(
        &self,
        file: &'static str,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), Failure> {
        self.read_impl(file, buf, limit, false)
    }

    /// `file` of the live process, opened to be kept (a pollable `mountinfo`), even when
    /// what the process showed at its exec was captured; `None` once it is gone.
    pub(crate) fn open_live(&self, file: &'static str) -> Option<File> {
        self.open_file(file).ok()
    }

    fn open_file(&self, file: &'static str) -> Result<File, Failure> {
        openat(
            self.fd.as_fd(),
            file,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| classify(self.pid, file, e.into()))
    }

    fn read_impl(
        &self,
        file: &'static str,
        buf: &mut Vec<u8>,
        limit: usize,
        short_read_ends: bool,
    ) -> Result<(), Failure> {
        if let Some(bytes) = self.captured.as_ref().and_then(|c| c.file(file)) {
            buf.clear();
            buf.extend_from_slice(&bytes[..bytes.len().min(limit)]);
            return Ok(());
        }
        let mut handle = self.open_file(file)?;
        read_into(buf, limit, short_read_ends, |chunk, _| handle.read(chunk))
            .map_err(|e| classify(self.pid, file, e))
    }

    /// `status` (at most `limit` bytes) through the handle kept on it, opened on first use:
    /// for processes read again and again through a handle kept between passes. Read from
    /// offset 0 each time (procfs generates it afresh); generated whole (`single_open`), so a
    /// short read ends it.
    pub fn read_status_kept(&self, buf: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
        let file = match self.status.get() {
            Some(file) => file,
            None => {
                let file = self.open_file("status")?;
                self.status.get_or_init(|| file)
            }
        };
        read_into(buf, limit, true, |chunk, offset| {
            file.read_at(chunk, offset)
        })
        .map_err(|e| classify(self.pid, "status", e))
    }

    pub fn readlink(&self, file: &'static str) -> Result<Vec<u8>, Failure> {
        if let Some(target) = self.captured.as_ref().and_then(|c| c.link(file)) {
            return Ok(target.to_vec());
        }
        readlinkat(self.fd.as_fd(), file)
            .map(|t| t.as_bytes().to_vec())
            .map_err(|e| classify(self.pid, file, e.into()))
    }

    /// `stat` following the link (for `exe`: the running executable itself).
    pub fn stat(&self, file: &'static str) -> Result<FileIdentity, Failure> {
        if file == "exe" {
            if let Some(id) = self.captured.as_ref().and_then(|c| c.exe_identity) {
                return Ok(id);
            }
        }
        fstatat(self.fd.as_fd(), file, nix::fcntl::AtFlags::empty())
            .map(|st| crate::layer::identity_of(&st))
            .map_err(|e| classify(self.pid, file, e.into()))
    }

    /// Whether the process still exists (after a read gave something unparseable).
    fn still_there(&self) -> bool {
        // A held process's files were read while it ran: what they say stands.
        self.captured.is_some()
            || fstatat(self.fd.as_fd(), "stat", nix::fcntl::AtFlags::empty()).is_ok()
    }

    /// The namespace inode numbers. A zombie has none (`None` each); denial is a failure.
    pub fn namespaces(&self) -> Result<Namespaces, Failure> {
        let read = |file: &'static str| match self.readlink(file) {
            Ok(target) => Ok(parse_ns_link(&target)),
            Err(Failure::Denied) => Err(Failure::Denied),
            Err(_) => Ok(None),
        };
        Ok(Namespaces {
            pid: read("ns/pid")?,
            net: read("ns/net")?,
            ipc: read("ns/ipc")?,
            uts: read("ns/uts")?,
            mnt: read("ns/mnt")?,
            user: read("ns/user")?,
            cgroup: read("ns/cgroup")?,
            ..Namespaces::default()
        })
    }
}

/// The namespaces of `pid` under `proc_root` (see [`PidDir::namespaces`]).
pub fn read_namespaces(proc_root: &Path, pid: i32) -> Result<Namespaces, Failure> {
    let root = nix::fcntl::open(
        proc_root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| classify(pid, "", e.into()))?;
    PidDir::open(&root, pid)?.namespaces()
}

/// What tells one program run apart from the next in the same process. `execve` keeps the
/// pid and the start time (`de_thread` even gives a thread that execs its leader's start
/// time), and replaces the rest: `/proc/PID/exe` points at the new file
/// (`set_mm_exe_file`), `comm` becomes the new file name's last component
/// (`__set_task_comm(kbasename(bprm->filename))`), and the address space is new, so the
/// image addresses in `/proc/PID/stat` move (with randomisation, even when the same file is
/// executed again: a busybox shell that execs `sleep` keeps `/bin/busybox` as its exe).
/// Any difference means the process is read afresh; a false difference (a process renaming
/// itself with `PR_SET_NAME`) only costs one more full read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecIdentity {
    pub start_ticks: u64,
    pub comm: String,
    pub image_marks: [u64; 5],
    /// The `exe` link target as read, ` (deleted)` included.
    pub exe_link: Option<Vec<u8>>,
    /// Stat of `/proc/PID/exe`: the running file (through the overlay).
    pub exe_stat: Option<FileIdentity>,
}

/// What a full read of one process found that does not change while it runs the same
/// program, or changes only through rare calls that the periodic full read catches (see
/// [`read_process`]). A [`crate::Collector`] keeps one per pid between passes.
#[derive(Debug)]
pub struct Remembered {
    pub exec: ExecIdentity,
    /// As collected (before any redaction by the scan).
    pub cmdline: String,
    pub namespaces: Namespaces,
    pub cgroup: Option<Arc<CgroupFile>>,
    pub container: Option<Arc<ContainerRef>>,
    pub cgroup_malformed: usize,
    /// The root filesystem this process's `mountinfo` showed (`None` inside: none at `/`),
    /// once read.
    pub mount_root: std::sync::OnceLock<Option<crate::mountinfo::ContainerRoot>>,
    /// The `Name:` value of `status` as read then (the kernel's escaping of `comm`).
    pub status_name: Vec<u8>,
    /// A kernel thread: no executable, no command line, never exec'd. With exec events
    /// watched only its `status` is read (it says the thread is still the one remembered).
    pub kernel_thread: bool,
    /// The script an interpreter runs, absolute as the process saw it when read in full
    /// ([`crate::script::script_argument`]).
    pub script: Option<Vec<u8>>,
}

/// What the `exe` links of processes running the same file showed in one pass (see
/// [`read_watched`]): per running file, the link text last remembered and whether a process
/// with that link still shows it now.
#[derive(Debug, Default)]
pub struct ExeLinks {
    seen: std::collections::HashMap<FileIdentity, Vec<(Vec<u8>, bool)>>,
}

impl ExeLinks {
    fn get(&self, file: &FileIdentity, link: &[u8]) -> Option<bool> {
        self.seen
            .get(file)?
            .iter()
            .find(|(l, _)| l.as_slice() == link)
            .map(|(_, same)| *same)
    }

    fn insert(&mut self, file: FileIdentity, link: &[u8], same: bool) {
        self.seen
            .entry(file)
            .or_default()
            .push((link.to_vec(), same));
    }
}

/// `/proc/PID/cgroup` files parsed by one reader, by their text: the processes of a container
/// (and many host processes) have the same file, so it is parsed and kept once.
#[derive(Debug, Default)]
pub struct CgroupMemo {
    parsed: std::collections::HashMap<Vec<u8>, ParsedCgroup>,
    bytes: usize,
}

#[derive(Debug, Clone)]
struct ParsedCgroup {
    cgroup: Option<Arc<CgroupFile>>,
    container: Option<Arc<ContainerRef>>,
    malformed: usize,
}

impl CgroupMemo {
    /// Bytes of text kept; past this a text is parsed without being kept.
    const MAX_BYTES: usize = 1 << 20;

    fn parse(&mut self, bytes: &[u8]) -> ParsedCgroup {
        if let Some(hit) = self.parsed.get(bytes) {
            return hit.clone();
        }
        let text = String::from_utf8_lossy(bytes);
        let malformed = count_malformed_lines(&text);
        // Host processes (most) skip building the parsed file.
        let mut parsed = ParsedCgroup {
            cgroup: None,
            container: None,
            malformed,
        };
        if may_name_container(&text) {
            let file = parse_cgroup_file(&text);
            parsed.container = attribute(&file).map(Arc::new);
            if parsed.container.is_some() {
                parsed.cgroup = Some(Arc::new(file));
            }
        }
        if self.bytes + bytes.len() <= Self::MAX_BYTES {
            self.bytes += bytes.len();
            self.parsed.insert(bytes.to_vec(), parsed.clone());
        }
        parsed
    }
}

/// A process as read from procfs, before container-level facts (layers) are added.
#[derive(Debug)]
pub struct RawProcess {
    pub process: Process,
    /// The `exe` link target without ` (deleted)`, raw bytes.
    pub exe_path: Option<Vec<u8>>,
    /// Stat of `/proc/PID/exe` (the running file, through the overlay).
    pub exe_identity: Option<FileIdentity>,
    /// Shared with the [`Remembered`] entry: a warm read copies nothing.
    pub cgroup: Option<Arc<CgroupFile>>,
    pub container: Option<Arc<ContainerRef>>,
    /// When the process started (`starttime` of `/proc/PID/stat`, clock ticks after boot).
    pub start_ticks: Option<u64>,
    /// Things worth a warning that did not stop the read (e.g. garbage cgroup lines).
    pub notes: Vec<(&'static str, String)>,
    /// What the next pass may reuse (`None` for kernel threads and processes without a start
    /// time).
    pub remember: Option<Arc<Remembered>>,
    /// Whether this read reused the previous pass's [`Remembered`].
    pub reused: bool,
    /// Whether it was the short read of a process whose exec events are watched.
    pub watched: bool,
    /// The script an interpreter process runs (absolute, in the process's view), if any.
    pub script: Option<Vec<u8>>,
}

/// Reads one process. `buf` is a scratch buffer reused across processes; `kthread_ns` keeps
/// the namespaces of the first kernel thread read: every kernel thread is kthreadd's child
/// and lives in the initial namespaces, so the other kernel threads skip seven readlinks;
/// `cgroups` keeps the cgroup files parsed so far.
///
/// `known` is what an earlier full read remembered of this pid. It is used only while the
/// process's [`ExecIdentity`] is unchanged — the same start time (not a reused pid) and no
/// exec since — and then only `stat`, `status` (ids, capabilities, no_new_privs, seccomp)
/// and the `exe` link and its stat are read; command line, `cgroup` and namespaces come from
/// `known`. Those three can change without an exec only through calls a process makes
/// rarely (a write to another cgroup's `cgroup.procs`, `setns`/`unshare`, rewriting its own
/// `argv`), so the caller passes `None` now and then to read the process in full (see
/// [`crate::Collector`]).
pub fn read_process(
    dir: &PidDir,
    buf: &mut Vec<u8>,
    kthread_ns: &mut Option<Namespaces>,
    cgroups: &mut CgroupMemo,
    exe_links: &mut ExeLinks,
    known: Option<&Arc<Remembered>>,
    execs_watched: bool,
) -> Result<RawProcess, Failure> {
    let pid = dir.pid;
    let malformed = |file: &'static str, reason: String| {
        if dir.still_there() {
            Failure::Error(Error::ProcParse { pid, file, reason })
        } else {
            Failure::Vanished
        }
    };
    if let (Some(k), true) = (known, execs_watched) {
        if let Some(raw) = read_watched(dir, buf, exe_links, k)? {
            return Ok(raw);
        }
    }
    dir.read("stat", buf, 4096)?;
    let stat = parse_stat(buf).map_err(|r| malformed("stat", r))?;
    dir.read("status", buf, 64 * 1024)?;
    let status = parse_status(buf).map_err(|r| malformed("status", r))?;
    let kernel_thread = is_kernel_thread(pid, stat.ppid, stat.flags);
    let zombie = matches!(stat.state, 'Z' | 'X' | 'x');

    if kernel_thread {
        let namespaces = match kthread_ns {
            Some(ns) => ns.clone(),
            None => {
                let ns = dir.namespaces()?;
                if ns.pid.is_some() {
                    *kthread_ns = Some(ns.clone());
                }
                ns
            }
        };
        // Remembered only for the short read of a watched pass (`read_watched`): a kernel
        // thread never execs, so its identity is its start time and name.
        let remember = stat.start_ticks.map(|start_ticks| {
            Arc::new(Remembered {
                exec: ExecIdentity {
                    start_ticks,
                    comm: stat.comm.clone(),
                    image_marks: stat.image_marks,
                    exe_link: None,
                    exe_stat: None,
                },
                cmdline: String::new(),
                namespaces: namespaces.clone(),
                cgroup: None,
                container: None,
                cgroup_malformed: 0,
                mount_root: Default::default(),
                status_name: status_name(buf).unwrap_or_default().to_vec(),
                kernel_thread: true,
                script: None,
            })
        });
        let process = assemble(
            pid,
            stat,
            &status,
            String::new(),
            None,
            false,
            None,
            namespaces,
        );
        return Ok(RawProcess {
            process,
            exe_path: None,
            exe_identity: None,
            cgroup: None,
            container: None,
            start_ticks: None,
            notes: Vec::new(),
            remember,
            reused: false,
            watched: false,
            script: None,
        });
    }

    let mut exe_link = None;
    let mut exe_stat = None;
    match dir.readlink("exe") {
        Ok(target) => {
            exe_stat = match dir.stat("exe") {
                Ok(id) => Some(id),
                Err(Failure::Denied) => return Err(Failure::Denied),
                Err(_) => None,
            };
            exe_link = Some(target);
        }
        // A zombie has no executable any more.
        Err(Failure::Vanished) if zombie => {}
        Err(f) => return Err(f),
    }
    let (exe_path, exe_deleted) = match &exe_link {
        Some(target) => {
            let (path, deleted) = strip_deleted(target);
            (Some(path.to_vec()), deleted)
        }
        None => (None, false),
    };
    let same = known.filter(|k| {
        Some(k.exec.start_ticks) == stat.start_ticks
            && k.exec.comm == stat.comm
            && k.exec.image_marks == stat.image_marks
            && k.exec.exe_link == exe_link
            && k.exec.exe_stat == exe_stat
    });
    if let Some(k) = same {
        let exe = exe_path.map(|path| (path, exe_deleted));
        return Ok(reuse(pid, k, stat, &status, exe, exe_stat, false));
    }

    // `buf` still holds `status`.
    let name = status_name(buf).unwrap_or_default().to_vec();
    dir.read("cmdline", buf, CMDLINE_MAX)?;
    let cmdline = cmdline_text(buf);
    let script = exe_path
        .as_deref()
        .filter(|_| !exe_deleted)
        .and_then(|exe| script_of(dir, exe, buf));
    dir.read("cgroup", buf, 64 * 1024)?;
    let parsed = cgroups.parse(buf);
    let (cgroup, container, skipped) = (parsed.cgroup, parsed.container, parsed.malformed);
    let mut notes = Vec::new();
    if skipped > 0 {
        notes.push((
            "cgroup",
            format!("pid {pid}: {skipped} malformed line(s) in cgroup file skipped"),
        ));
    }
    let namespaces = dir.namespaces()?;

    let exec = stat.start_ticks.map(|start_ticks| ExecIdentity {
        start_ticks,
        comm: stat.comm.clone(),
        image_marks: stat.image_marks,
        exe_link,
        exe_stat,
    });
    let remember = exec.map(|exec| {
        Arc::new(Remembered {
            exec,
            cmdline: cmdline.clone(),
            namespaces: namespaces.clone(),
            cgroup: cgroup.clone(),
            container: container.clone(),
            cgroup_malformed: skipped,
            mount_root: Default::default(),
            status_name: name,
            kernel_thread: false,
            script: script.clone(),
        })
    });
    let container_id = container.as_ref().map(|c| c.cgroup.id.clone());
    let process = assemble(
        pid,
        stat,
        &status,
        cmdline,
        exe_path.as_deref(),
        exe_deleted,
        container_id,
        namespaces,
    );
    Ok(RawProcess {
        start_ticks: remember.as_ref().map(|r| r.exec.start_ticks),
        process,
        exe_path,
        exe_identity: exe_stat,
        cgroup,
        container,
        notes,
        remember,
        reused: false,
        watched: false,
        script,
    })
}

/// The script an interpreter process runs, from its command line (`cmdline`: NUL-separated
/// words), made absolute with its working directory when relative. Only for executables that
/// are interpreters, so other processes cost nothing more.
fn script_of(dir: &PidDir, exe: &[u8], cmdline: &[u8]) -> Option<Vec<u8>> {
    let arg = script_word(exe, cmdline)?;
    if arg.starts_with(b"/") {
        return crate::script::absolute(arg, None);
    }
    let cwd = dir.readlink("cwd").ok()?;
    crate::script::absolute(arg, Some(&cwd))
}

/// The word of `cmdline` (as read: NUL-separated) naming the script the interpreter `exe`
/// runs ([`crate::script::script_argument`]).
fn script_word<'a>(exe: &[u8], cmdline: &'a [u8]) -> Option<&'a [u8]> {
    let argv: Vec<&[u8]> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .split(|b| *b == 0)
        .collect();
    crate::script::script_argument(exe, &argv)
}

/// Whether a full read of a process with this `exe` link and `cmdline` (as read, at most
/// [`CMDLINE_MAX`] bytes) reads its `cwd` link: only for an interpreter running a script
/// named by a relative path ([`script_of`]). A hold reads the link only then.
pub(crate) fn reads_cwd(exe_link: &[u8], cmdline: &[u8]) -> bool {
    let (exe, deleted) = strip_deleted(exe_link);
    !deleted && script_word(exe, cmdline).is_some_and(|arg| !arg.starts_with(b"/"))
}

/// The read of a known process while exec events are watched and none was lost (see
/// [`read_process`]): `status`, then the `exe` link, nothing else. `Ok(None)` when what they
/// show is not what `known` remembers (a renamed or re-executed process: read it in full).
///
/// Sound only when `dir` was opened on an earlier pass and `known` describes the process
/// that pass read through it: a `/proc/PID` handle stays bound to the process it was opened
/// for (a reused pid is another process whose files the old handle does not reach: the
/// reads fail as vanished), so no start time is needed to tell a reused pid apart, and an
/// exec in between would have come as an event, which makes the caller drop `known`.
fn read_watched(
    dir: &PidDir,
    buf: &mut Vec<u8>,
    exe_links: &mut ExeLinks,
    known: &Arc<Remembered>,
) -> Result<Option<RawProcess>, Failure> {
    let pid = dir.pid;
    dir.read_status_kept(buf, 64 * 1024)?;
    let Ok(status) = parse_status(buf) else {
        return Ok(None);
    };
    // comm is rewritten by every exec; a status cut short says no name.
    let (Some(ppid), Some(name)) = (status.ppid, status_name(buf)) else {
        return Ok(None);
    };
    // A zombie keeps its name and, for a while, the link of the file it ran in its group's
    // shared read; it has no executable any more: the full read says so.
    if name != known.status_name.as_slice() || status.zombie {
        return Ok(None);
    }
    if known.kernel_thread {
        let stat = StatFields {
            pid,
            comm: known.exec.comm.clone(),
            state: 'S',
            ppid,
            flags: PF_KTHREAD,
            start_ticks: Some(known.exec.start_ticks),
            image_marks: known.exec.image_marks,
        };
        // Counted neither as reused nor as read the short way: those count processes that
        // could exec.
        let mut raw = reuse(pid, known, stat, &status, None, None, false);
        (raw.start_ticks, raw.reused) = (None, false);
        return Ok(Some(raw));
    }
    // The link, not its stat: it says whether the file was deleted since. Processes running
    // the same file under the same link share its dentry, and a deletion shows in every
    // one of their links: one of them is read per pass, the others only when its link
    // changed. (An exec is told by its event and, mostly, by the new `Name`.)
    let Some(remembered) = known.exec.exe_link.as_deref() else {
        return Ok(None);
    };
    let shared = known
        .exec
        .exe_stat
        .and_then(|file| Some((file, exe_links.get(&file, remembered)?)));
    match shared {
        Some((_, true)) => {}
        Some((_, false)) | None => {
            let same = match dir.readlink("exe") {
                Ok(target) => target == remembered,
                Err(Failure::Denied) => return Err(Failure::Denied),
                // A zombie (no exe any more), or gone: the full read sorts it out.
                Err(_) => false,
            };
            if shared.is_none() {
                if let Some(file) = known.exec.exe_stat {
                    exe_links.insert(file, remembered, same);
                }
            }
            if !same {
                return Ok(None);
            }
        }
    }
    let (path, deleted) = strip_deleted(remembered);
    let stat = StatFields {
        pid,
        comm: known.exec.comm.clone(),
        state: 'S',
        ppid,
        flags: 0,
        start_ticks: Some(known.exec.start_ticks),
        image_marks: known.exec.image_marks,
    };
    Ok(Some(reuse(
        pid,
        known,
        stat,
        &status,
        Some((path.to_vec(), deleted)),
        known.exec.exe_stat,
        true,
    )))
}

/// Process `pid` built from what `known` remembers and what this pass read: `stat` (or what
/// stands for it), `status`, the `exe` link (path, deleted) and the running file's identity.
fn reuse(
    pid: i32,
    known: &Arc<Remembered>,
    stat: StatFields,
    status: &StatusFields,
    exe: Option<(Vec<u8>, bool)>,
    exe_identity: Option<FileIdentity>,
    watched: bool,
) -> RawProcess {
    let container_id = known.container.as_ref().map(|c| c.cgroup.id.clone());
    let (exe_path, exe_deleted) = match exe {
        Some((path, deleted)) => (Some(path), deleted),
        None => (None, false),
    };
    let process = assemble(
        pid,
        stat,
        status,
        known.cmdline.clone(),
        exe_path.as_deref(),
        exe_deleted,
        container_id,
        known.namespaces.clone(),
    );
    let mut notes = Vec::new();
    if known.cgroup_malformed > 0 {
        notes.push((
            "cgroup",
            format!(
                "pid {pid}: {} malformed line(s) in cgroup file skipped",
                known.cgroup_malformed
            ),
        ));
    }
    RawProcess {
        process,
        exe_path,
        exe_identity,
        cgroup: known.cgroup.clone(),
        container: known.container.clone(),
        start_ticks: Some(known.exec.start_ticks),
        notes,
        remember: Some(Arc::clone(known)),
        reused: true,
        watched,
        script: known.script.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    pid: i32,
    stat: StatFields,
    status: &StatusFields,
    cmdline: String,
    exe_path: Option<&[u8]>,
    exe_deleted: bool,
    container_id: Option<String>,
    namespaces: Namespaces,
) -> Process {
    let (capabilities, capability_masks) = shared_capabilities(status);
    Process {
        image_verdict: None,
        pid,
        ppid: stat.ppid,
        kernel_thread: is_kernel_thread(pid, stat.ppid, stat.flags),
        exited: false,
        command: stat.comm,
        cmdline,
        container_id,
        exe: exe_path.map(escape_path),
        exe_deleted,
        exe_layer: None,
        exe_mount: None,
        script: None,
        sha256: None,
        sha512: None,
        hash_error: None,
        uid: status.uids.effective,
        gid: status.gids.effective,
        uids: status.uids,
        gids: status.gids,
        capabilities,
        capability_masks,
        no_new_privs: status.no_new_privs,
        seccomp: status.seccomp,
        namespaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{Ids, SeccompMode};

    const STATUS: &str = "Name:\tnginx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4242\nPPid:\t1\n\
Uid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nCapInh:\t0000000000000000\n\
CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n\
NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";

    #[test]
    fn status_fields() {
        let s = parse_status(STATUS.as_bytes()).unwrap();
        assert_eq!(
            s.uids,
            Ids {
                real: 1000,
                effective: 1001,
                saved: 1002,
                filesystem: 1003
            }
        );
        assert_eq!(s.gids.effective, 2001);
        assert_eq!(s.cap_eff, 0xa80425fb);
        assert_eq!(s.cap_bnd, Some(0x1ff_ffff_ffff));
        assert_eq!(s.no_new_privs, Some(true));
        assert_eq!(s.seccomp, Some(SeccompMode::Filter));
        let masks = capability_masks(&s);
        assert_eq!(&*masks.effective, "00000000a80425fb");
        assert_eq!(masks.bounding.as_deref(), Some("000001ffffffffff"));
        let caps = capabilities(&s);
        assert!(caps.effective.contains(&"CAP_NET_RAW".into()));
        assert_eq!(caps.bounding.len(), 41);
        assert!(!s.zombie);
        let zombie = STATUS.replace("State:\tS (sleeping)", "State:\tZ (zombie)");
        assert!(parse_status(zombie.as_bytes()).unwrap().zombie);
    }

    #[test]
    fn processes_with_the_same_capabilities_share_them_and_others_do_not() {
        let s = parse_status(STATUS.as_bytes()).unwrap();
        let (caps, masks) = shared_capabilities(&s);
        assert_eq!((&caps, &masks), (&capabilities(&s), &capability_masks(&s)));
        let (again, again_masks) = shared_capabilities(&s);
        assert!(Arc::ptr_eq(&caps.effective, &again.effective));
        assert!(Arc::ptr_eq(
            &masks.bounding.unwrap(),
            &again_masks.bounding.unwrap()
        ));
        // One bit of one set differs: its own sets, decoded from its own masks.
        let other = parse_status(
            STATUS
                .replace("CapEff:\t00000000a80425fb", "CapEff:\t00000000a80425fa")
                .as_bytes(),
        )
        .unwrap();
        let (theirs, their_masks) = shared_capabilities(&other);
        assert_eq!(&*their_masks.effective, "00000000a80425fa");
        assert!(!theirs.effective.contains(&"CAP_CHOWN".into()));
        assert!(caps.effective.contains(&"CAP_CHOWN".into()));
        // Past the bound it starts over, and still answers rightly.
        for bit in 0..SHARED_CAPABILITIES_MAX as u64 + 2 {
            let mut many = other.clone();
            many.cap_inh = bit;
            assert_eq!(
                shared_capabilities(&many).1.inheritable.as_ref(),
                format!("{bit:016x}")
            );
        }
    }

    #[test]
    fn truncated_or_garbled_status_is_an_error() {
        let cut = &STATUS[..STATUS.find("CapPrm").unwrap()];
        assert!(parse_status(cut.as_bytes()).unwrap_err().contains("CapPrm"));
        let half_uid = "Uid:\t1000\t1001\nGid:\t0\t0\t0\t0\n";
        assert!(parse_status(half_uid.as_bytes())
            .unwrap_err()
            .contains("Uid"));
        let garbled = STATUS.replace("CapEff:\t00000000a80425fb", "CapEff:\tzzzz");
        assert!(parse_status(garbled.as_bytes())
            .unwrap_err()
            .contains("CapEff"));
        let bad_seccomp = STATUS.replace("Seccomp:\t2", "Seccomp:\t9");
        assert!(parse_status(bad_seccomp.as_bytes()).is_err());
        assert!(parse_status(b"").is_err());
        assert!(parse_status(b"\xff\xfe\x00garbage").is_err());
        // Old kernels: no CapAmb, NoNewPrivs, Seccomp.
        let old: String = STATUS
            .lines()
            .filter(|l| {
                !l.starts_with("CapAmb")
                    && !l.starts_with("NoNewPrivs")
                    && !l.starts_with("Seccomp")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let s = parse_status(old.as_bytes()).unwrap();
        assert_eq!((s.cap_amb, s.no_new_privs, s.seccomp), (None, None, None));
    }

    #[test]
    fn stat_with_hostile_comm() {
        let s = parse_stat(b"4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0\n").unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.pid, s.state, s.ppid, s.flags), (4242, 'S', 17, 4194560));
        // Cut before field 22: no start time, and no error.
        assert_eq!(s.start_ticks, None);
        // A pod sandbox's line as read on the real node (containerd 1.6, pause, pid 3841).
        let pause = parse_stat(
            b"3841 (pause) S 3820 3841 3841 0 -1 4194560 898 0 0 0 1 \
              1 0 0 20 0 1 0 479386 1019904 136 18446744073709551615 4198400 4689969 140732487653728 \
              0 0 0 0 0 81922 1 0 0 17 0 0 0 0 \
              0 0 4858520 4883088 576811008 140732487655360 140732487655367 140732487655367 140732487655409 0\n",
        )
        .unwrap();
        assert_eq!(
            (pause.comm.as_str(), pause.start_ticks),
            ("pause", Some(479386))
        );
        let k = parse_stat(b"10 (kworker/0:0H-events_highpri) I 2 0 0 0 -1 69238880 0 0").unwrap();
        assert!(is_kernel_thread(k.pid, k.ppid, k.flags));
        assert_ne!(k.flags & PF_KTHREAD, 0);
        let nl = parse_stat(b"5 (evil\nname\x1b) R 1 5 5 0 -1 0 0 0").unwrap();
        assert_eq!(nl.comm, "evil\\x0aname\\x1b");
        assert!(!is_kernel_thread(5, 1, 0));
        for bad in [
            &b""[..],
            b"4242 (x",
            b"4242 (x) S",
            b"x (y) S 1 1 1 0 -1 0",
            b"1 (y) S one 1 1 0 -1 0",
            b"1 (y) S 1 1 1 0 -1 flags",
        ] {
            assert!(parse_stat(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn cmdline_is_joined_escaped_and_capped() {
        assert_eq!(
            cmdline_text(b"nginx\0-g\0daemon off;\0"),
            "nginx -g daemon off;"
        );
        assert_eq!(cmdline_text(b"a\0\xff\0b\nc\0\0"), "a \\xff b\\x0ac");
        assert_eq!(cmdline_text(b""), "");
        // setproctitle style: no NULs.
        assert_eq!(cmdline_text(b"postgres: writer   "), "postgres: writer   ");
        let long = "é".repeat(3000);
        let capped = cmdline_text(long.as_bytes());
        assert!(capped.len() <= CMDLINE_MAX && capped.len() >= CMDLINE_MAX - 1);
        assert!(capped.chars().all(|c| c == 'é'));
    }

    #[test]
    fn own_namespaces_match_the_links() {
        let ns = read_namespaces(Path::new("/proc"), std::process::id() as i32).unwrap();
        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_eq!(ns.net, parse_ns_link(link.as_os_str().as_bytes()));
        assert!(ns.pid.is_some() && ns.mnt.is_some() && ns.user.is_some());
        assert!(matches!(
            read_namespaces(Path::new("/proc"), i32::MAX),
            Err(Failure::Vanished)
        ));
    }

    #[test]
    fn errno_classification() {
        let f = |errno: Errno| classify(7, "status", io::Error::from_raw_os_error(errno as i32));
        assert!(matches!(f(Errno::ENOENT), Failure::Vanished));
        assert!(matches!(f(Errno::ESRCH), Failure::Vanished));
        assert!(matches!(f(Errno::EACCES), Failure::Denied));
        assert!(matches!(f(Errno::EPERM), Failure::Denied));
        match f(Errno::EIO) {
            Failure::Error(e) => assert!(e.to_string().contains("pid 7: cannot read status")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exe_and_namespace_links() {
        assert_eq!(
            strip_deleted(b"/usr/bin/x (deleted)"),
            (&b"/usr/bin/x"[..], true)
        );
        assert_eq!(
            strip_deleted(b"/memfd:payload (deleted)"),
            (&b"/memfd:payload"[..], true)
        );
        assert_eq!(strip_deleted(b"/usr/bin/x"), (&b"/usr/bin/x"[..], false));
        assert_eq!(parse_ns_link(b"net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link(b"net:[]"), None);
        assert_eq!(parse_ns_link(b"garbage"), None);
        let host = Namespaces {
            pid: Some(1),
            net: Some(2),
            mnt: Some(3),
            ..Default::default()
        };
        let ns = Namespaces {
            pid: Some(10),
            net: Some(2),
            mnt: None,
            ..Default::default()
        };
        assert_eq!(shared_with_host(&ns, &host), ["net"]);
    }
}
