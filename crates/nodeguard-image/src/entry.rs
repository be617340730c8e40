//! One member of a layer as the index keeps it, and member names made safe to keep.

use crate::{Error, Limits};

/// What a layer holds at one path (directories are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A regular file that is executable, setuid/setgid, or carries `security.capability`.
    Hashed {
        mode: u32,
        sha256: [u8; 32],
        sha512: Option<Box<[u8; 64]>>,
        capability: bool,
    },
    /// A regular file not hashed: not executable in the image, or sparse (never expanded).
    Unhashed { mode: u32, sparse: bool },
    /// A symlink, device, FIFO, or a hard link to a member not hashed.
    Other,
    /// A `.wh.NAME` whiteout: the path is deleted from lower layers.
    Whiteout,
    /// A `.wh..wh..opq` marker: this directory's lower contents are hidden.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Relative, normalised (`usr/bin/ls`).
    pub path: Box<[u8]>,
    pub kind: EntryKind,
}

/// At most 120 bytes of a hostile name, for a message.
pub(crate) fn clip_bytes(path: &[u8]) -> Vec<u8> {
    path.iter().take(120).copied().collect()
}

/// The member name as a relative path with no `.`, empty or leading `/` components. `..` is
/// refused: a layer that climbs out of its root is hostile.
pub(crate) fn normalize(name: &[u8], limits: &Limits) -> Result<Vec<u8>, Error> {
    if name.len() > limits.max_name_bytes {
        return Err(Error::Refused(format!(
            "a member name of {} bytes, more than {}",
            name.len(),
            limits.max_name_bytes
        )));
    }
    let mut out = Vec::with_capacity(name.len());
    let mut depth = 0usize;
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => {
                return Err(Error::Refused(format!(
                    "member {:?} climbs out of the layer",
                    String::from_utf8_lossy(&clip_bytes(name))
                )))
            }
            _ => {}
        }
        depth += 1;
        if depth > limits.max_depth {
            return Err(Error::Refused(format!(
                "a member path deeper than {} components",
                limits.max_depth
            )));
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    Ok(out)
}
