//! Thin, safe wrappers over the few system calls the walk needs. Everything below a walk root
//! is reached relative to a directory fd with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`; no path
//! string below the root is ever resolved again.

use std::ffi::{CStr, CString};
use std::io;
#[cfg(test)]
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

/// The parts of `struct stat` the scan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stat {
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }

    pub fn is_reg(&self) -> bool {
        self.file_type() == libc::S_IFREG
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// A syscall's byte count, or the `errno` it set when it returned a negative value.
fn ssize<N: TryInto<usize>>(n: N) -> io::Result<usize> {
    n.try_into().map_err(|_| io::Error::last_os_error())
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens a walk root. The root path itself is trusted (it comes from the agent's
/// configuration or the container's mountinfo, e.g. `/proc/PID/root`) and may be a link.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = path_cstring(path)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = retry(|| cvt(unsafe { libc::open(c.as_ptr(), flags) }))?;
    // SAFETY: `fd` was just returned by open(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` in `dir`, refusing symlinks and anything that is not a directory.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid dir fd and NUL-terminated name; the returned fd is owned by us.
    let fd = retry(|| cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) }))?;
    // SAFETY: fresh fd from openat(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a regular file for reading without following a link, without blocking on a FIFO
/// and without acquiring a controlling terminal. The caller re-checks `fstat`.
pub(crate) fn open_file_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: valid dir fd and NUL-terminated name; the returned fd is owned by us.
    let fd = retry(|| cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) }))?;
    // SAFETY: fresh fd from openat(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one `struct stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so the struct is initialised.
    Ok(Stat::from_raw(unsafe { &st.assume_init() }))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never a link's target.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd, NUL-terminated name, valid out-pointer.
    retry(|| {
        cvt(unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    })?;
    // SAFETY: fstatat succeeded.
    Ok(Stat::from_raw(unsafe { &st.assume_init() }))
}

/// `d_type` values from `getdents64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryType {
    Dir,
    Regular,
    Unknown,
    /// Symlinks, FIFOs, sockets, devices: never opened, never followed.
    Other,
}

/// Reads directory entries with `getdents64` into one reused buffer (no `opendir`, no
/// allocation per directory).
#[derive(Default)]
pub(crate) struct DirReader {
    buf: Vec<u8>,
}

impl DirReader {
    /// Calls `f` for every entry of `dir` except `.` and `..`. `f` returning `false` stops.
    pub fn for_each(
        &mut self,
        dir: BorrowedFd<'_>,
        mut f: impl FnMut(&CStr, EntryType) -> bool,
    ) -> io::Result<()> {
        if self.buf.is_empty() {
            self.buf.resize(64 * 1024, 0);
        }
        loop {
            let n = retry(|| {
                // SAFETY: the buffer is valid for `len` bytes; getdents64 writes at most that.
                let n = unsafe {
                    libc::syscall(
                        libc::SYS_getdents64,
                        dir.as_raw_fd(),
                        self.buf.as_mut_ptr(),
                        self.buf.len(),
                    )
                };
                ssize(n)
            })?;
            if n == 0 {
                return Ok(());
            }
            let mut off = 0usize;
            while off + 19 < n {
                let rec = &self.buf[off..n];
                let reclen = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
                if reclen < 20 || reclen > rec.len() {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                let d_type = rec[18];
                let name = match CStr::from_bytes_until_nul(&rec[19..reclen]) {
                    Ok(name) => name,
                    Err(_) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                };
                off += reclen;
                let bytes = name.to_bytes();
                if bytes == b"." || bytes == b".." || bytes.is_empty() {
                    continue;
                }
                let kind = match d_type {
                    libc::DT_DIR => EntryType::Dir,
                    libc::DT_REG => EntryType::Regular,
                    libc::DT_UNKNOWN => EntryType::Unknown,
                    _ => EntryType::Other,
                };
                if !f(name, kind) {
                    return Ok(());
                }
            }
        }
    }
}

/// `getxattrat(2)` (Linux 6.13) support: 0 unknown, 1 present, 2 absent.
static GETXATTRAT: AtomicU8 = AtomicU8::new(0);
const SYS_GETXATTRAT: libc::c_long = 464;

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Reads extended attribute `attr` of the entry `name` in `dir` without following a link.
/// Returns `Ok(None)` when the entry has no such attribute or the filesystem has no xattrs;
/// `ERANGE` when the value is larger than `buf`.
pub(crate) fn get_xattr_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    if GETXATTRAT.load(Ordering::Relaxed) != 2 {
        let mut args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            flags: 0,
        };
        let res = retry(|| {
            // SAFETY: valid fd, NUL-terminated strings, `args` points at a writable buffer
            // of `args.size` bytes and lives across the call.
            let n = unsafe {
                libc::syscall(
                    SYS_GETXATTRAT,
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    attr.as_ptr(),
                    &mut args as *mut XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            };
            ssize(n)
        });
        match res {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                GETXATTRAT.store(2, Ordering::Relaxed);
            }
            other => {
                GETXATTRAT.store(1, Ordering::Relaxed);
                return xattr_result(other);
            }
        }
    }
    // Older kernels: lgetxattr on the entry reached through our own open directory fd, so the
    // directory is the one we hold (no re-resolution from the root) and the entry itself is
    // not followed.
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    let path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let res = retry(|| {
        // SAFETY: NUL-terminated path and attr; `buf` is writable for its length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        ssize(n)
    });
    xattr_result(res)
}

/// Reads extended attribute `attr` of an open file or directory.
pub(crate) fn fget_xattr(
    fd: BorrowedFd<'_>,
    attr: &CStr,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    let res = retry(|| {
        // SAFETY: valid fd, NUL-terminated attr, `buf` writable for its length.
        let n = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        ssize(n)
    });
    xattr_result(res)
}

fn xattr_result(res: io::Result<usize>) -> io::Result<Option<usize>> {
    match res {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) fn force_xattr_fallback(on: bool) {
    GETXATTRAT.store(if on { 2 } else { 0 }, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn xattr_fallback_reads_what_getxattrat_reads_and_never_follows_links() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED xattr fallback test: needs root for setcap");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let ok = Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(&file)
            .status()
            .unwrap();
        assert!(ok.success());
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        let fd = open_root(dir.path()).unwrap();
        let cap = c"security.capability";
        let mut direct = [0u8; 64];
        let n = get_xattr_at(fd.as_fd(), c"f", cap, &mut direct).unwrap();
        assert_eq!(n, Some(20));
        assert_eq!(
            get_xattr_at(fd.as_fd(), c"link", cap, &mut direct).unwrap(),
            None
        );
        force_xattr_fallback(true);
        let mut fallback = [0u8; 64];
        let m = get_xattr_at(fd.as_fd(), c"f", cap, &mut fallback);
        let link = get_xattr_at(fd.as_fd(), c"link", cap, &mut [0u8; 64]);
        let missing = get_xattr_at(fd.as_fd(), c"nope", cap, &mut [0u8; 64]);
        force_xattr_fallback(false);
        assert_eq!(m.unwrap(), Some(20));
        assert_eq!(direct[..20], fallback[..20]);
        assert_eq!(link.unwrap(), None);
        assert_eq!(
            missing.unwrap_err().raw_os_error(),
            Some(libc::ENOENT),
            "a vanished entry is ENOENT, counted as vanished by the walk"
        );
        // Too small a buffer is ERANGE (the walk reports it as an invalid value).
        let err = get_xattr_at(fd.as_fd(), c"f", cap, &mut [0u8; 4]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ERANGE));
    }

    #[test]
    fn open_dir_at_refuses_links_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("d", dir.path().join("l")).unwrap();
        let fd = open_root(dir.path()).unwrap();
        assert!(open_dir_at(fd.as_fd(), c"d").is_ok());
        // The kernel answers ENOTDIR (O_DIRECTORY wins) or ELOOP: never the link's target.
        let link = open_dir_at(fd.as_fd(), c"l").unwrap_err();
        assert!(matches!(
            link.raw_os_error(),
            Some(libc::ELOOP) | Some(libc::ENOTDIR)
        ));
        let file = open_dir_at(fd.as_fd(), c"f").unwrap_err();
        assert_eq!(file.raw_os_error(), Some(libc::ENOTDIR));
        assert!(open_file_at(fd.as_fd(), c"l").is_err());
        let st = stat_at(fd.as_fd(), c"l").unwrap();
        assert_eq!(st.file_type(), libc::S_IFLNK);
    }
}
