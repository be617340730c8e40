use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while collecting. Only [`Error::ProcRoot`] stops a collection;
/// the others end up as warnings and error counts in the [`crate::Snapshot`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proc root cannot be listed: nothing can be collected.
    #[error("cannot read proc root {path}: {source}")]
    ProcRoot { path: PathBuf, source: io::Error },

    /// A file of one process could not be read for a reason other than the process exiting.
    #[error("pid {pid}: cannot read {file}: {source}")]
    ProcRead {
        pid: i32,
        file: &'static str,
        source: io::Error,
    },

    /// A file of one process is truncated or malformed.
    #[error("pid {pid}: malformed {file}: {reason}")]
    ProcParse {
        pid: i32,
        file: &'static str,
        reason: String,
    },

    /// A cgroup limit file could not be read.
    #[error("cgroup file {path}: {source}")]
    CgroupRead { path: PathBuf, source: io::Error },

    /// A cgroup limit file holds something that is not a limit.
    #[error("cgroup file {path}: unexpected value {value:?}")]
    CgroupValue { path: PathBuf, value: String },

    /// The process's cgroup file has no line for a controller whose limit is wanted.
    #[error("pid {pid}: no {controller} cgroup in /proc/{pid}/cgroup")]
    CgroupMissing { pid: i32, controller: &'static str },

    /// A layer directory of a container's overlay root could not be searched.
    #[error("layer {path}: {source}")]
    Layer { path: PathBuf, source: io::Error },
}
