//! Opening files in the runtimes' stores without following symlinks, without hanging on a FIFO,
//! and never leaving a layer directory.

use crate::Error;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens a regular file (the last component not followed if it is a symlink; non-blocking, so
/// a FIFO planted in its place is refused instead of hanging).
pub(crate) fn open_file(path: &Path) -> Result<File, Error> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::io(path, io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(path, io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    regular(file).map_err(|e| Error::io(path, e))
}

fn regular(file: File) -> io::Result<File> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Reads a small regular file whole, refusing one larger than `max` bytes.
pub(crate) fn read_small(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let file = open_file(path)?;
    let mut out = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    if out.len() as u64 > max {
        return Err(Error::Metadata(format!(
            "{}: larger than {max} bytes",
            path.display()
        )));
    }
    Ok(out)
}

/// A directory held open: files under it are opened one component at a time with
/// `O_NOFOLLOW`, so no symlink (in the path or at its end) leads out of it.
pub(crate) struct Beneath {
    dir: OwnedFd,
}

impl Beneath {
    pub(crate) fn open(dir: &Path) -> Result<Beneath, Error> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| Error::io(dir, io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: valid path; descriptor owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::io(dir, io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptor we own.
        Ok(Beneath {
            dir: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Opens the regular file at `relative` (a normalised path: no `..`, no empty parts).
    pub(crate) fn open_file(&self, relative: &[u8]) -> io::Result<File> {
        let parts: Vec<&[u8]> = relative
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let mut current: Option<OwnedFd> = None;
        for part in dirs {
            if *part == b".." {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            }
            let at = current.as_ref().unwrap_or(&self.dir).as_raw_fd();
            let fd = openat(
                at,
                part,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )?;
            current = Some(fd);
        }
        if *last == b".." {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let at = current.as_ref().unwrap_or(&self.dir).as_raw_fd();
        let fd = openat(
            at,
            last,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )?;
        regular(File::from(fd))
    }
}

fn openat(dir: i32, name: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: dir is an open descriptor, c a valid NUL-terminated name.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_fifos_and_climbing_are_refused_beneath_a_layer_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("diff");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/ok"), b"ok").unwrap();
        std::fs::write(tmp.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("usr/bin/link")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("up")).unwrap();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let beneath = Beneath::open(&root).unwrap();
        let mut text = String::new();
        beneath
            .open_file(b"usr/bin/ok")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "ok");
        assert!(beneath.open_file(b"usr/bin/link").is_err());
        assert!(beneath.open_file(b"up/secret").is_err());
        assert!(beneath.open_file(b"../secret").is_err());
        assert!(
            beneath.open_file(b"fifo").is_err(),
            "a FIFO must not be opened as a file"
        );
        assert!(open_file(&root.join("fifo")).is_err());
    }
}
