//! [`FileIdentity`]: which file holds some bytes, as `stat` tells it. The collector records
//! it for each executable, the filesystem walk for each setuid/capability file, and the
//! hasher keys its one digest cache on it.

/// The identity of the file that holds the bytes: same identity, same content.
///
/// Size, mtime and ctime are part of it so a file rewritten in place (same inode) is hashed
/// again. Two containers of one image running the same binary share it when it is taken
/// from the image layer's file (not the overlay's own `st_dev`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileIdentity {
    /// From `stat` fields: times as `(seconds, nanoseconds)`.
    pub fn new(dev: u64, ino: u64, size: u64, mtime: (i64, i64), ctime: (i64, i64)) -> Self {
        let ns = |(s, n): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileIdentity {
            dev,
            ino,
            size,
            mtime_ns: ns(mtime),
            ctime_ns: ns(ctime),
        }
    }

    /// The same file as far as metadata can tell: size, mtime and ctime agree. Overlayfs
    /// reports the real file's size and times, but its own `st_dev` and, for a file copied
    /// up from a lower layer, the lower file's inode number — so `dev` and `ino` are not
    /// compared.
    pub fn same_file_as(&self, other: &FileIdentity) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
    }
}
