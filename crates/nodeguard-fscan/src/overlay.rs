//! The overlayfs rules that decide whether a file found in one layer is what the container
//! sees: a file in a higher layer shadows it; a whiteout (character device 0/0) or any other
//! non-directory on its path hides it; an opaque directory (`trusted.overlay.opaque=y`) on its
//! path hides everything below it in lower layers.

use crate::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// Whether the layer rooted at `layer` (one above the layer `rel` was found in) hides `rel`
/// from the merged view. Every step is an `fstatat`/`openat` relative to the previous
/// directory fd, without following links.
pub(crate) fn hides(layer: BorrowedFd<'_>, rel: &[u8]) -> io::Result<bool> {
    let components: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
    let last = components.len().saturating_sub(1);
    let mut cur: Option<OwnedFd> = None;
    for (i, comp) in components.iter().enumerate() {
        let name = CString::new(*comp).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let dir = match &cur {
            Some(fd) => fd.as_fd(),
            None => layer,
        };
        let st = match sys::stat_at(dir, &name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
        if i == last {
            // Anything at the same path wins: a copy-up, a replacement, a whiteout, a dir.
            return Ok(true);
        }
        if !st.is_dir() {
            // A whiteout, file or symlink where the lower layer has a directory.
            return Ok(true);
        }
        let fd = sys::open_dir_at(dir, &name)?;
        if is_opaque(fd.as_fd())? {
            return Ok(true);
        }
        cur = Some(fd);
    }
    Ok(false)
}

fn is_opaque(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let mut buf = [0u8; 8];
    match sys::fget_xattr(dir, OPAQUE_XATTR, &mut buf) {
        Ok(Some(1)) => Ok(buf[0] == b'y'),
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => Ok(false),
        Err(e) => Err(e),
    }
}
