//! Opt-in event source for writable layers: fanotify marks on the filesystems that hold them,
//! so a `chmod u+s` or a new `security.capability` on a file that already exists (which
//! changes only that file's ctime, not its directory's times) is seen by the next process
//! scan instead of the filesystem scan's re-check.
//!
//! Shape: [`mark`] creates the fanotify group (`FAN_CLASS_NOTIF`, `FAN_REPORT_DFID_NAME`,
//! non-blocking) and marks each given path's whole filesystem (`FAN_MARK_FILESYSTEM`) for
//! `FAN_ATTRIB`; both need `CAP_SYS_ADMIN`, which the caller can drop right after. [`Marks::start`]
//! then reads events on a thread of its own. Each event names the directory of the changed
//! inode by its file handle (`DFID`); the thread keeps the distinct handles, at most
//! [`DEFAULT_PENDING_DIRS`] unless told otherwise, and [`FsEvents::take`] hands them to the next scan, resolved to
//! `(dev, ino)` with `open_by_handle_at` (`CAP_DAC_READ_SEARCH`) once per distinct directory,
//! not once per event. The incremental walk then lists those directories again even though
//! their times did not change.
//!
//! Only `FAN_ATTRIB` is asked for: creating, removing or renaming an entry already shows in
//! its directory's mtime and ctime, which the walk compares on every pass, so those events
//! would only add cost (a marked filesystem is usually the node's root filesystem, where
//! builds and logs create and delete files all the time).
//!
//! Nothing is lost silently: a kernel queue overflow (`FAN_Q_OVERFLOW`), more distinct
//! directories than the bound between two scans, a read error or a malformed event
//! mark the batch as lost; the scanner then starts a new re-check round at once (what the
//! filesystem scan does) and counts it.
//!
//! The event buffer is parsed by hand with a bounds check on every length the kernel gives;
//! a record that does not fit is counted as malformed, never trusted. Names in the records
//! are bytes a container chose: they are not used (the whole directory is listed again).

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Distinct directories kept between two scans by default; past it the batch counts as lost
/// (a storm then costs one re-check, not unbounded memory). About 40 bytes each.
pub const DEFAULT_PENDING_DIRS: usize = 16_384;
/// Bytes read from the fanotify fd at once.
const READ_BUFFER: usize = 64 * 1024;
/// How long the reader sleeps in `poll` before it looks whether it should stop.
const POLL_MS: i32 = 500;
/// `MAX_HANDLE_SZ` of the kernel: a longer handle is malformed.
const MAX_HANDLE_BYTES: usize = 128;
/// The events asked for (see the module doc for why only these).
const MASK: u64 = libc::FAN_ATTRIB;

/// Why marking failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(
        "fanotify needs CAP_SYS_ADMIN (FAN_REPORT_DFID_NAME, FAN_MARK_FILESYSTEM), which this process does not hold: {0}"
    )]
    NotPermitted(io::Error),
    #[error("cannot create the fanotify group: {0}")]
    Init(io::Error),
    #[error("no filesystem could be marked: {0}")]
    NothingMarked(String),
}

/// A filesystem marked: its fsid (as events carry it) and an fd on it for `open_by_handle_at`.
struct Marked {
    fsid: [i32; 2],
    mount: OwnedFd,
}

/// The fanotify group with its marks, before its reader runs.
pub struct Marks {
    fd: OwnedFd,
    marked: Vec<Marked>,
    /// Paths whose filesystem could not be marked, and why.
    pub unmarked: Vec<(PathBuf, io::Error)>,
    /// Paths whose filesystem was marked.
    pub marked_paths: Vec<PathBuf>,
}

/// Creates the group and marks the filesystem of each path in `paths` (each filesystem once).
/// `EPERM` anywhere is [`EventsError::NotPermitted`]; a path that cannot be marked for another
/// reason (missing, a filesystem without file handles) is listed in [`Marks::unmarked`].
pub fn mark(paths: &[PathBuf]) -> Result<Marks, EventsError> {
    let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe {
        libc::fanotify_init(
            flags | libc::FAN_REPORT_DFID_NAME,
            (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => EventsError::NotPermitted(e),
            _ => EventsError::Init(e),
        });
    }
    // SAFETY: fanotify_init returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut marks = Marks {
        fd,
        marked: Vec::new(),
        unmarked: Vec::new(),
        marked_paths: Vec::new(),
    };
    for path in paths {
        match marks.mark_one(path) {
            Ok(()) => marks.marked_paths.push(path.clone()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(EventsError::NotPermitted(e))
            }
            Err(e) => marks.unmarked.push((path.clone(), e)),
        }
    }
    if marks.marked.is_empty() {
        let why: Vec<String> = marks
            .unmarked
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        return Err(EventsError::NothingMarked(if why.is_empty() {
            "no path given".into()
        } else {
            why.join("; ")
        }));
    }
    Ok(marks)
}

impl Marks {
    fn mark_one(&mut self, path: &Path) -> io::Result<()> {
        let mount = open_dir(path)?;
        let fsid = fsid_of(mount.as_fd())?;
        if self.marked.iter().any(|m| m.fsid == fsid) {
            return Ok(());
        }
        let c = c_path(path)?;
        // SAFETY: an open fanotify fd and a valid C string; with FAN_MARK_FILESYSTEM the mark
        // is on the filesystem holding `path`.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                MASK,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.marked.push(Marked { fsid, mount });
        Ok(())
    }

    /// Starts the reader thread (call it after dropping `CAP_SYS_ADMIN`: the thread inherits
    /// the caller's capabilities); it keeps at most `max_dirs` distinct directories between
    /// two [`FsEvents::take`]s (at least 1), past which the batch is lost.
    pub fn start(self, max_dirs: usize) -> io::Result<FsEvents> {
        let shared = Arc::new(Shared {
            max_dirs: max_dirs.max(1),
            ..Shared::default()
        });
        let reader = Arc::clone(&shared);
        let fd = self.fd;
        let thread = std::thread::Builder::new()
            .name("nodeguard-fsevents".into())
            .spawn(move || read_loop(fd, &reader))?;
        Ok(FsEvents {
            shared,
            marked: self.marked,
            thread: Some(thread),
        })
    }
}

/// A directory named by an event: its filesystem and its file handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DirKey {
    pub fsid: [i32; 2],
    pub handle_type: i32,
    pub handle: Box<[u8]>,
}

#[derive(Default)]
struct Pending {
    dirs: HashSet<DirKey>,
    lost: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Events read.
    events: AtomicU64,
    /// Batches lost (overflow, bound, read error, malformed record).
    lost: AtomicU64,
    stop: AtomicBool,
    /// Distinct directories kept between two takes.
    max_dirs: usize,
}

/// Counters since the source started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTotals {
    /// Events read from the kernel.
    pub events: u64,
    /// Times events were lost (each brings a re-check round forward).
    pub lost: u64,
}

/// What changed since the last [`FsEvents::take`].
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Directories (dev, ino) holding an inode whose attributes changed.
    pub dirs: HashSet<(u64, u64)>,
    /// Events were lost: every layer must be looked at again.
    pub lost: bool,
}

/// The running event source; stops its reader when dropped.
pub struct FsEvents {
    shared: Arc<Shared>,
    marked: Vec<Marked>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FsEvents {
    pub fn totals(&self) -> EventTotals {
        EventTotals {
            events: self.shared.events.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
        }
    }

    /// Whether `path` is on a marked filesystem.
    pub fn covers(&self, path: &Path) -> bool {
        let fsid = open_dir(path).and_then(|fd| fsid_of(fd.as_fd()));
        fsid.is_ok_and(|fsid| self.marked.iter().any(|m| m.fsid == fsid))
    }

    /// The directories named since the last call, resolved (one `open_by_handle_at` and one
    /// `fstat` per distinct directory; a directory gone since is skipped).
    pub(crate) fn take(&self) -> Changes {
        let pending = {
            let mut p = lock(&self.shared.pending);
            std::mem::take(&mut *p)
        };
        let mut changes = Changes {
            dirs: HashSet::with_capacity(pending.dirs.len()),
            lost: pending.lost,
        };
        for key in &pending.dirs {
            let Some(m) = self.marked.iter().find(|m| m.fsid == key.fsid) else {
                continue;
            };
            if let Ok(id) = resolve(m.mount.as_fd(), key) {
                changes.dirs.insert(id);
            }
        }
        changes
    }
}

impl Drop for FsEvents {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_loop(fd: OwnedFd, shared: &Shared) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut batch: Vec<Event> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if rc <= 0 {
            continue;
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                continue;
            }
            lose(shared);
            std::thread::sleep(Duration::from_millis(POLL_MS as u64));
            continue;
        }
        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
        batch.clear();
        parse(&buf[..n], &mut |e| batch.push(e));
        let events = batch.iter().filter(|e| matches!(e, Event::Dir(_))).count();
        shared.events.fetch_add(events as u64, Ordering::Relaxed);
        let mut p = lock(&shared.pending);
        let mut lost = false;
        for e in batch.drain(..) {
            match e {
                Event::Dir(key) => {
                    if p.lost {
                        continue;
                    }
                    if p.dirs.len() >= shared.max_dirs && !p.dirs.contains(&key) {
                        p.dirs = HashSet::new();
                        p.lost = true;
                        lost = true;
                    } else {
                        p.dirs.insert(key);
                    }
                }
                Event::Overflow | Event::Malformed => {
                    p.dirs = HashSet::new();
                    p.lost = true;
                    lost = true;
                }
                Event::StrayFd(fd) => {
                    // SAFETY: the kernel gave this fd to this process and nothing owns it.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                Event::Other => {}
            }
        }
        // Counted under the lock: a take that sees this loss also sees it counted.
        if lost {
            shared.lost.fetch_add(1, Ordering::Relaxed);
        }
        drop(p);
    }
}

fn lose(shared: &Shared) {
    let mut p = lock(&shared.pending);
    p.dirs = HashSet::new();
    p.lost = true;
    shared.lost.fetch_add(1, Ordering::Relaxed);
    drop(p);
}

/// One event of a read, as the scanner needs it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// An inode in this directory changed.
    Dir(DirKey),
    /// The kernel's queue overflowed: events were dropped.
    Overflow,
    /// A record did not fit or made no sense: treated as a loss.
    Malformed,
    /// An event without a directory record (ignored).
    Other,
    /// An event carried an open fd (not in FID mode): the reader closes it.
    StrayFd(i32),
}

/// `struct fanotify_event_metadata`: event_len u32, vers u8, reserved u8, metadata_len u16,
/// mask u64, fd i32, pid i32.
const METADATA_LEN: usize = 24;
/// `struct fanotify_event_info_header` (info_type u8, pad u8, len u16) + fsid (2 × i32) +
/// `struct file_handle` head (handle_bytes u32, handle_type i32).
const FID_HEAD: usize = 4 + 8 + 8;

/// Parses one `read` of a fanotify fd in `FAN_REPORT_DFID_NAME` mode. Every length is
/// checked against what is left; an event that does not fit ends the buffer as malformed.
pub(crate) fn parse(buf: &[u8], out: &mut dyn FnMut(Event)) {
    let mut at = 0usize;
    while at < buf.len() {
        let Some(head) = buf.get(at..at + METADATA_LEN) else {
            out(Event::Malformed);
            return;
        };
        let event_len = u32_at(head, 0) as usize;
        let vers = head[4];
        let metadata_len = usize::from(u16::from_ne_bytes([head[6], head[7]]));
        let mask = u64::from_ne_bytes([
            head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
        ]);
        let fd = i32::from_ne_bytes([head[16], head[17], head[18], head[19]]);
        if vers != libc::FANOTIFY_METADATA_VERSION
            || metadata_len < METADATA_LEN
            || event_len < metadata_len
            || event_len > buf.len() - at
        {
            out(Event::Malformed);
            return;
        }
        if fd >= 0 {
            // Not given in FID mode; the reader closes one if it comes.
            out(Event::StrayFd(fd));
        }
        let event = &buf[at..at + event_len];
        at += event_len;
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            out(Event::Overflow);
            continue;
        }
        out(dir_record(&event[metadata_len..]));
    }
}

/// The first directory record among an event's info records.
fn dir_record(mut info: &[u8]) -> Event {
    while !info.is_empty() {
        if info.len() < 4 {
            return Event::Malformed;
        }
        let kind = info[0];
        let len = usize::from(u16::from_ne_bytes([info[2], info[3]]));
        if len < 4 || len > info.len() {
            return Event::Malformed;
        }
        let record = &info[..len];
        info = &info[len..];
        if kind != libc::FAN_EVENT_INFO_TYPE_DFID_NAME && kind != libc::FAN_EVENT_INFO_TYPE_DFID {
            continue;
        }
        if record.len() < FID_HEAD {
            return Event::Malformed;
        }
        let fsid = [
            i32::from_ne_bytes([record[4], record[5], record[6], record[7]]),
            i32::from_ne_bytes([record[8], record[9], record[10], record[11]]),
        ];
        let handle_bytes = u32_at(record, 12) as usize;
        let handle_type = i32::from_ne_bytes([record[16], record[17], record[18], record[19]]);
        if handle_bytes == 0 || handle_bytes > MAX_HANDLE_BYTES {
            return Event::Malformed;
        }
        let Some(handle) = record.get(FID_HEAD..FID_HEAD + handle_bytes) else {
            return Event::Malformed;
        };
        return Event::Dir(DirKey {
            fsid,
            handle_type,
            handle: handle.into(),
        });
    }
    Event::Other
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `path` (trusted: a configured path or a layer path from mountinfo) as a directory
/// fd (not `O_PATH`: `open_by_handle_at` refuses those as its mount fd).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fsid_of(fd: BorrowedFd<'_>) -> io::Result<[i32; 2]> {
    // SAFETY: statfs is plain data; fstatfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a writable statfs.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `fsid_t` keeps its two words private; it is two i32s in the kernel's layout.
    // SAFETY: fsid_t is 8 bytes of plain data.
    let words: [i32; 2] = unsafe { std::mem::transmute(st.f_fsid) };
    Ok(words)
}

/// `(dev, ino)` of the directory `key` names, through `open_by_handle_at`.
fn resolve(mount: BorrowedFd<'_>, key: &DirKey) -> io::Result<(u64, u64)> {
    // struct file_handle: handle_bytes u32, handle_type i32, f_handle[]; u32 words keep it
    // aligned.
    let mut words = vec![0u32; 2 + key.handle.len().div_ceil(4)];
    words[0] = key.handle.len() as u32;
    words[1] = key.handle_type as u32;
    // SAFETY: `words` has room for the head and the handle bytes after it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            key.handle.as_ptr(),
            words.as_mut_ptr().add(2).cast::<u8>(),
            key.handle.len(),
        );
    }
    // SAFETY: `words` is a valid struct file_handle of the length it says.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            words.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = crate::sys::fstat(fd.as_fd())?;
    Ok((st.dev, st.ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u64, info: &[u8]) -> Vec<u8> {
        let len = (METADATA_LEN + info.len()) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_ne_bytes());
        b.push(libc::FANOTIFY_METADATA_VERSION);
        b.push(0);
        b.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&(-1i32).to_ne_bytes());
        b.extend_from_slice(&42i32.to_ne_bytes());
        b.extend_from_slice(info);
        b
    }

    fn dfid_name(fsid: [i32; 2], handle: &[u8], name: &[u8]) -> Vec<u8> {
        let len = FID_HEAD + handle.len() + name.len() + 1;
        let mut b = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0];
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b.extend_from_slice(&fsid[0].to_ne_bytes());
        b.extend_from_slice(&fsid[1].to_ne_bytes());
        b.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        b.extend_from_slice(&1i32.to_ne_bytes());
        b.extend_from_slice(handle);
        b.extend_from_slice(name);
        b.push(0);
        b
    }

    fn all(buf: &[u8]) -> Vec<Event> {
        let mut v = Vec::new();
        parse(buf, &mut |e| v.push(e));
        v
    }

    #[test]
    fn events_name_their_directory_by_filesystem_and_handle() {
        let mut buf = event(
            libc::FAN_ATTRIB,
            &dfid_name([7, 9], &[1, 2, 3, 4, 5, 6, 7, 8], b"f\n\xff"),
        );
        buf.extend(event(libc::FAN_Q_OVERFLOW, &[]));
        assert_eq!(
            all(&buf),
            [
                Event::Dir(DirKey {
                    fsid: [7, 9],
                    handle_type: 1,
                    handle: vec![1, 2, 3, 4, 5, 6, 7, 8].into(),
                }),
                Event::Overflow
            ]
        );
    }

    #[test]
    fn lengths_that_do_not_fit_are_malformed_not_trusted() {
        let good = event(libc::FAN_ATTRIB, &dfid_name([1, 1], &[9; 8], b"x"));
        // Event length past the buffer.
        let mut long = good.clone();
        long[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(all(&long), [Event::Malformed]);
        // Handle length past its record.
        let mut handle = good.clone();
        handle[METADATA_LEN + 12..METADATA_LEN + 16].copy_from_slice(&100u32.to_ne_bytes());
        assert_eq!(all(&handle), [Event::Malformed]);
        // A cut-off buffer.
        assert_eq!(all(&good[..30]), [Event::Malformed]);
        // An info record of length 0 would loop forever if trusted.
        let mut zero = good.clone();
        zero[METADATA_LEN + 2..METADATA_LEN + 4].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(all(&zero), [Event::Malformed]);
        // Another version of the ABI.
        let mut vers = good;
        vers[4] = 2;
        assert_eq!(all(&vers), [Event::Malformed]);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let b = bytes;
            let mut n = 0;
            parse(&b, &mut |_| n += 1);
            proptest::prop_assert!(n <= 2 * (b.len() / METADATA_LEN) + 1);
        }
    }
}
