//! The crate's one error type.

use std::path::PathBuf;

/// Why a store, an image or a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a sha256 digest: {0:?}")]
    BadDigest(String),
    #[error("not an image reference with a digest: {0:?}")]
    BadImageRef(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The layer stream broke a bound or is not a tar stream.
    #[error("{0}")]
    Refused(String),
    /// The store's metadata (manifest, config, layers.json, tar-split) is malformed.
    #[error("{0}")]
    Metadata(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
