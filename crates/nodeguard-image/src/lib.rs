//! What each container image promised, read from the runtime's own store on the node.
//!
//! A running binary's digest means something only beside an expectation. The image a container
//! was started from is still on the node: its config names each layer's uncompressed digest
//! (`rootfs.diff_ids`), and the layers themselves sit in the runtime's store — containerd's
//! content store (compressed blobs), containers/storage (podman, CRI-O) and Docker overlay2
//! (unpacked directories plus tar-split metadata). This crate
//!
//! 1. resolves a container's image ([`ImageRef`]) to its config and layers ([`Stores`]);
//! 2. reads each layer as a tar stream — a blob decompressed (gzip, zstd, plain), or a stream
//!    rebuilt from tar-split plus the unpacked files — hashing the whole stream and checking it
//!    against the layer's `diff_id`: when they agree, every file in the layer is proven;
//! 3. indexes, per layer, path → SHA-256 (SHA-512 when asked) and mode of each executable,
//!    setuid/setgid or file-capability file, plus whiteouts, opaque directories and the names of
//!    other files (so an upper layer that replaces a binary hides the lower one);
//! 4. keeps each layer's index on disk under `<state_dir>/image-index/`, keyed by diff_id, bounded
//!    in size (least recently used evicted), reused across restarts and across images;
//! 5. does all this on one background thread at a CPU budget, oldest container first
//!    ([`Indexer`]); [`Indexer::status`] never waits.
//!
//! Layer data is attacker-shaped input: it is streamed (nothing extracted to disk), with bounded
//! members, names, depth, sizes, extended headers and decompression ratio ([`Limits`]); links are
//! recorded as links and never followed; unpacked files are opened component by component with
//! `O_NOFOLLOW` under the layer directory. A hostile layer is refused with a reason
//! ([`Unverifiable::LayerRefused`]); it never panics the agent.
//!
//! ```no_run
//! use nodeguard_image::{Expectation, ImageRef, ImageStatus, Indexer, IndexerOptions, Stores};
//! use std::time::SystemTime;
//! let indexer = Indexer::start(IndexerOptions {
//!     stores: Stores { containerd: vec!["/host/var/lib/containerd".into()], ..Stores::default() },
//!     ..IndexerOptions::default()
//! });
//! let image = ImageRef::parse("docker.io/library/busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
//! match indexer.status(&image, SystemTime::now()) {
//!     ImageStatus::Ready(index) => match index.expect(b"/bin/busybox") {
//!         Expectation::InLayer { diff_id, sha256, .. } => { /* compare with the running binary */ }
//!         _ => { /* not from the image */ }
//!     },
//!     ImageStatus::Pending => { /* still indexing: unverifiable for now */ }
//!     ImageStatus::Unverifiable(why) => println!("{why}"),
//! }
//! ```

mod budget;
mod containerd;
mod containers_storage;
mod digest;
mod disk_cache;
mod docker;
mod entry;
mod error;
mod found;
mod image;
mod indexer;
mod layer;
mod limits;
mod resolve;
mod safe_open;
mod tar_split;
mod tar_stream;
mod zstd;

pub use digest::{Digest, ImageRef};
pub use error::Error;
pub use image::{Expectation, ImageIndex};
pub use indexer::{ImageStatus, Indexer, IndexerOptions, Progress};
pub use layer::{LayerError, LayerIndex, LayerSource};
pub use limits::Limits;

use std::fmt;
use std::path::PathBuf;

/// The runtimes' store roots as the agent sees them (the host root prefix already applied, e.g.
/// `/host/var/lib/containerd`). Each list may hold several roots; a root that does not exist is
/// "not mounted".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stores {
    /// containerd roots (`--root`, default `/var/lib/containerd`): the content store is
    /// `<root>/io.containerd.content.v1.content`.
    pub containerd: Vec<PathBuf>,
    /// containers/storage graph roots (podman, CRI-O; default `/var/lib/containers/storage`).
    pub containers_storage: Vec<PathBuf>,
    /// Docker data roots (default `/var/lib/docker`), overlay2 driver.
    pub docker: Vec<PathBuf>,
}

impl Stores {
    /// Whether any store root is configured at all.
    pub fn is_empty(&self) -> bool {
        self.containerd.is_empty() && self.containers_storage.is_empty() && self.docker.is_empty()
    }
}

/// Why a container's binaries cannot be judged against its image. [`fmt::Display`] gives a
/// one-line reason fit for a report; [`Unverifiable::code`] a stable snake_case label for
/// metrics and JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverifiable {
    /// No configured store holds this image (or the reference could not be parsed).
    ImageUnknown,
    /// No store root is configured or none of them exists (not mounted into the agent).
    StoreNotMounted,
    /// The layer's data is gone from the store (containerd's `discard_unpacked_layers`, a
    /// deleted blob, a missing tar-split).
    BlobsDiscarded { layer: String },
    /// The image is queued or being indexed.
    Indexing,
    /// The layer broke a safety bound or is not a valid tar stream.
    LayerRefused { layer: String, why: String },
    /// The layer's data does not hash to the diff_id the image config names: the store was
    /// altered (or corrupted) after the pull, so nothing in it can be trusted.
    DiffIdMismatch { layer: String },
    /// The image's manifest or config in the store is malformed or does not match its digest.
    BadMetadata { why: String },
    /// No manifest in an image index is for this node's platform.
    NoPlatform { platform: String },
}

impl Unverifiable {
    /// A stable label: `image_unknown`, `store_not_mounted`, `blobs_discarded`, `indexing`,
    /// `layer_refused`, `diff_id_mismatch`, `bad_metadata`, `no_platform`.
    pub fn code(&self) -> &'static str {
        match self {
            Unverifiable::ImageUnknown => "image_unknown",
            Unverifiable::StoreNotMounted => "store_not_mounted",
            Unverifiable::BlobsDiscarded { .. } => "blobs_discarded",
            Unverifiable::Indexing => "indexing",
            Unverifiable::LayerRefused { .. } => "layer_refused",
            Unverifiable::DiffIdMismatch { .. } => "diff_id_mismatch",
            Unverifiable::BadMetadata { .. } => "bad_metadata",
            Unverifiable::NoPlatform { .. } => "no_platform",
        }
    }
}

impl fmt::Display for Unverifiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unverifiable::ImageUnknown => write!(f, "the image is in no store on this node"),
            Unverifiable::StoreNotMounted => {
                write!(f, "no image store is mounted into the agent")
            }
            Unverifiable::BlobsDiscarded { layer } => write!(
                f,
                "layer {layer}: its data is gone from the store (discarded after unpacking?)"
            ),
            Unverifiable::Indexing => write!(f, "the image is still being indexed"),
            Unverifiable::LayerRefused { layer, why } => write!(f, "layer {layer} refused: {why}"),
            Unverifiable::DiffIdMismatch { layer } => write!(
                f,
                "layer {layer}: the store's data does not hash to the image's diff_id"
            ),
            Unverifiable::BadMetadata { why } => write!(f, "image metadata unusable: {why}"),
            Unverifiable::NoPlatform { platform } => {
                write!(f, "the image index has no manifest for {platform}")
            }
        }
    }
}
