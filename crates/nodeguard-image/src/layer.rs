//! One layer's index: what each path in the layer is, and the digests of its executables.

use crate::entry::{Entry, EntryKind};
use crate::tar_stream::{self, StreamOptions};
use crate::{Digest, Error, Limits, Unverifiable};
use std::borrow::Cow;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A path the layer holds but whose name need not be kept: a regular file not hashed, or a
/// symlink/device. Only what it hides matters, so it is kept as 8 bytes of the path's SHA-256
/// and 4 bytes of kind and mode (a layer of 100,000 such files costs 1.6 MB, not 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Shadow {
    pub key: u64,
    pub meta: u32,
}

const SHADOW_OTHER: u32 = 1 << 31;
const SHADOW_SPARSE: u32 = 1 << 30;

impl Shadow {
    /// The shadow of an entry kept by key only, `None` for kinds kept by name.
    fn of(path: &[u8], kind: &EntryKind) -> Option<Shadow> {
        let meta = match kind {
            EntryKind::Unhashed { mode, sparse } => {
                (mode & 0o7777) | if *sparse { SHADOW_SPARSE } else { 0 }
            }
            EntryKind::Other => SHADOW_OTHER,
            _ => return None,
        };
        Some(Shadow {
            key: path_key(path),
            meta,
        })
    }

    fn kind(self) -> EntryKind {
        if self.meta & SHADOW_OTHER != 0 {
            EntryKind::Other
        } else {
            EntryKind::Unhashed {
                mode: self.meta & 0o7777,
                sparse: self.meta & SHADOW_SPARSE != 0,
            }
        }
    }

    /// Whether `meta` holds only bits a shadow can have.
    pub(crate) fn valid_meta(meta: u32) -> bool {
        meta & !(SHADOW_OTHER | SHADOW_SPARSE | 0o7777) == 0
    }
}

/// The first 8 bytes of the path's SHA-256, as a little-endian integer.
pub(crate) fn path_key(path: &[u8]) -> u64 {
    let digest = nodeguard_hash::sha256_of(&[path]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// One layer, indexed. Shared by every image that holds the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerIndex {
    /// The layer's diff_id (SHA-256 of its uncompressed tar stream), checked when indexed.
    pub diff_id: Digest,
    /// Bytes of the uncompressed stream.
    pub bytes: u64,
    /// Whether SHA-512 digests were recorded.
    pub sha512: bool,
    /// Hashed files, whiteouts and opaque directories, by path (sorted).
    pub(crate) named: Vec<Entry>,
    /// Everything else, by path key (sorted).
    pub(crate) shadows: Vec<Shadow>,
}

impl LayerIndex {
    pub(crate) fn from_entries(
        diff_id: Digest,
        bytes: u64,
        sha512: bool,
        entries: Vec<Entry>,
    ) -> LayerIndex {
        let mut named = Vec::new();
        let mut shadows = Vec::new();
        for entry in entries {
            match Shadow::of(&entry.path, &entry.kind) {
                Some(shadow) => shadows.push(shadow),
                None => named.push(entry),
            }
        }
        named.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        shadows.sort_unstable();
        LayerIndex {
            diff_id,
            bytes,
            sha512,
            named,
            shadows,
        }
    }

    pub(crate) fn lookup(&self, path: &[u8]) -> Option<Cow<'_, EntryKind>> {
        if let Ok(i) = self.named.binary_search_by(|e| (*e.path).cmp(path)) {
            return Some(Cow::Borrowed(&self.named[i].kind));
        }
        let key = path_key(path);
        let i = self.shadows.partition_point(|s| s.key < key);
        self.shadows
            .get(i)
            .filter(|s| s.key == key)
            .map(|s| Cow::Owned(s.kind()))
    }

    /// Whether this layer hides everything at and below `path` in lower layers: an ancestor is
    /// whited out, opaque, or a non-directory here.
    pub(crate) fn hides_lower(&self, path: &[u8]) -> bool {
        ancestors(path).any(|dir| self.lookup(dir).is_some())
    }

    /// Number of entries (paths) recorded.
    pub fn len(&self) -> usize {
        self.named.len() + self.shadows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashed files: executables, setuid/setgid and file-capability files.
    pub fn hashed_files(&self) -> usize {
        self.named
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Hashed { .. }))
            .count()
    }

    /// Hashed files, whiteouts and opaque directories, sorted by path.
    pub(crate) fn named(&self) -> &[Entry] {
        &self.named
    }

    /// Indexes a tar stream (plain, or gzip/zstd recognised by their first bytes) and checks it
    /// hashes to `diff_id`. `pace` is called about every MiB with the bytes read so far (it may
    /// sleep; `false` stops the read).
    pub fn from_reader(
        diff_id: Digest,
        input: impl Read,
        limits: &Limits,
        sha512: bool,
        pace: &mut dyn FnMut(u64) -> bool,
    ) -> Result<LayerIndex, LayerError> {
        let compressed = Arc::new(AtomicU64::new(0));
        let counted = Counting {
            inner: input,
            count: compressed.clone(),
        };
        let mut reader = BufReader::with_capacity(128 * 1024, counted);
        let magic = peek(&mut reader).map_err(|e| LayerError::Refused(e.to_string()))?;
        let mut decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(reader))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(crate::zstd::ZstdFrames::new(
                reader,
                limits.max_zstd_window_bytes,
            ))
        } else {
            Box::new(reader)
        };
        let is_compressed =
            magic.starts_with(&[0x1f, 0x8b]) || magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        let indexed = tar_stream::index_tar(
            &mut decoded,
            StreamOptions {
                limits,
                sha512,
                compressed: is_compressed.then_some(compressed),
                pace,
            },
        )
        .map_err(|e| LayerError::Refused(e.to_string()))?;
        if indexed.digest != diff_id {
            return Err(LayerError::DiffIdMismatch {
                actual: indexed.digest,
            });
        }
        Ok(LayerIndex::from_entries(
            diff_id,
            indexed.bytes,
            sha512,
            indexed.entries,
        ))
    }
}

/// Why a layer could not be indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerError {
    /// The data is gone (a discarded blob, a missing tar-split or diff directory).
    Missing(String),
    /// A bound was broken or the stream is not a tar.
    Refused(String),
    /// The stream is a fine tar but hashes to something else than the diff_id.
    DiffIdMismatch { actual: Digest },
}

impl LayerError {
    pub(crate) fn into_unverifiable(self, layer: &Digest) -> Unverifiable {
        let layer = layer.to_string();
        match self {
            LayerError::Missing(_) => Unverifiable::BlobsDiscarded { layer },
            LayerError::Refused(why) => Unverifiable::LayerRefused { layer, why },
            LayerError::DiffIdMismatch { .. } => Unverifiable::DiffIdMismatch { layer },
        }
    }
}

impl From<Error> for LayerError {
    fn from(e: Error) -> LayerError {
        match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                LayerError::Missing(source.to_string())
            }
            other => LayerError::Refused(other.to_string()),
        }
    }
}

/// Where one layer's tar stream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSource {
    /// A blob in containerd's content store (gzip, zstd or plain tar).
    Blob(PathBuf),
    /// An unpacked layer: a tar-split file (gzip'd JSON lines) and the directory holding the
    /// layer's files (containers/storage `overlay/<id>/diff`, Docker `overlay2/<id>/diff`).
    TarSplit {
        tar_split: PathBuf,
        diff_dir: PathBuf,
    },
}

impl LayerSource {
    /// Reads and indexes the layer, checking it against `diff_id`.
    pub fn index(
        &self,
        diff_id: Digest,
        limits: &Limits,
        sha512: bool,
        pace: &mut dyn FnMut(u64) -> bool,
    ) -> Result<LayerIndex, LayerError> {
        match self {
            LayerSource::Blob(path) => {
                let file = crate::safe_open::open_file(path).map_err(|e| match e {
                    Error::Io { ref source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        LayerError::Missing(e.to_string())
                    }
                    other => LayerError::Refused(other.to_string()),
                })?;
                LayerIndex::from_reader(diff_id, file, limits, sha512, pace)
            }
            LayerSource::TarSplit {
                tar_split,
                diff_dir,
            } => {
                let rebuilt = crate::tar_split::Rebuild::open(tar_split, diff_dir, limits)?;
                LayerIndex::from_reader(diff_id, rebuilt, limits, sha512, pace)
            }
        }
    }
}

fn peek(reader: &mut BufReader<impl Read>) -> std::io::Result<Vec<u8>> {
    use std::io::BufRead;
    let buf = reader.fill_buf()?;
    Ok(buf[..buf.len().min(8)].to_vec())
}

struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// `a/b/c` → `a`, `a/b` (proper ancestors, shortest first).
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}
