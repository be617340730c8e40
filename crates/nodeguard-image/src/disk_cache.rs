//! Layer indexes kept on disk under `<state_dir>/image-index/<diff_id hex>.idx`, so a restart (or
//! another image sharing the layer) reads no layer again.
//!
//! Compact binary, written atomically (temporary file, fsync, rename). The state directory is
//! ours, but a file is still checked on read: magic, a SHA-256 trailer over the content, the
//! diff_id it claims, sorted paths, every length bounded. A bad file is deleted and the layer
//! indexed again. The total is bounded: least recently used files (by mtime, touched on each
//! read) are evicted.
//!
//! Layout (integers little-endian): `NGLAYER1`, flags (u8: 1 = SHA-512 present), diff_id (32),
//! stream bytes (u64), named count (u32), named entries sorted by path, shadow count (u32),
//! shadows sorted, SHA-256 of everything before it (32). A named entry: kind (u8: 1 hashed,
//! 4 whiteout, 5 opaque), path length (u16), path, and for a hashed file mode (u32),
//! capability (u8), SHA-256 (32) and SHA-512 (64, when flagged). A shadow: path key (u64),
//! kind and mode (u32).

use crate::entry::{Entry, EntryKind};
use crate::layer::{LayerIndex, Shadow};
use crate::{Digest, Limits};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const MAGIC: &[u8; 8] = b"NGLAYER1";
const SUFFIX: &str = ".idx";

/// The on-disk cache: file sizes and last use known in memory (one entry per cached layer).
pub(crate) struct DiskCache {
    dir: PathBuf,
    budget: u64,
    files: HashMap<Digest, (u64, SystemTime)>,
    total: u64,
}

impl DiskCache {
    /// Opens (creating) `<state_dir>/image-index` and lists what it holds.
    pub(crate) fn open(state_dir: &Path, budget: u64) -> std::io::Result<DiskCache> {
        let dir = state_dir.join("image-index");
        fs::create_dir_all(&dir)?;
        let mut cache = DiskCache {
            dir,
            budget,
            files: HashMap::new(),
            total: 0,
        };
        for entry in fs::read_dir(&cache.dir)?.take(1_000_000).flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = fs::remove_file(entry.path()); // a write cut short by a crash
                continue;
            }
            let Some(digest) = name.strip_suffix(SUFFIX).and_then(Digest::from_hex) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            cache.total += meta.len();
            cache.files.insert(digest, (meta.len(), used));
        }
        cache.evict(None);
        Ok(cache)
    }

    fn path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", diff_id.hex()))
    }

    /// Bytes of all cached files.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The cached index of a layer, if present, valid, and holding SHA-512 when `sha512`.
    pub(crate) fn load(
        &mut self,
        diff_id: &Digest,
        sha512: bool,
        limits: &Limits,
    ) -> Option<LayerIndex> {
        let &(size, _) = self.files.get(diff_id)?;
        let path = self.path(diff_id);
        let decoded = crate::safe_open::read_small(&path, size.max(1) + 4096)
            .ok()
            .and_then(|bytes| decode(&bytes, limits));
        match decoded {
            Some(index) if index.diff_id == *diff_id && (index.sha512 || !sha512) => {
                let now = SystemTime::now();
                if let Ok(f) = File::options().append(true).open(&path) {
                    let _ = f.set_modified(now);
                }
                self.files.insert(*diff_id, (size, now));
                Some(index)
            }
            Some(_) => None,
            None => {
                tracing::warn!(path = %path.display(), "image index file unreadable or invalid: indexing the layer again");
                self.remove(diff_id);
                None
            }
        }
    }

    /// Writes a layer's index, then evicts least recently used files past the budget.
    pub(crate) fn store(&mut self, index: &LayerIndex) -> std::io::Result<()> {
        let bytes = encode(index);
        if bytes.len() as u64 > self.budget {
            return Ok(()); // alone larger than the whole budget: kept in memory only
        }
        let path = self.path(&index.diff_id);
        let tmp = self.dir.join(format!(
            ".{}.tmp.{}",
            index.diff_id.hex(),
            std::process::id()
        ));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        if let Some((old, _)) = self
            .files
            .insert(index.diff_id, (bytes.len() as u64, SystemTime::now()))
        {
            self.total -= old;
        }
        self.total += bytes.len() as u64;
        self.evict(Some(index.diff_id));
        Ok(())
    }

    fn remove(&mut self, diff_id: &Digest) {
        if let Some((size, _)) = self.files.remove(diff_id) {
            self.total -= size;
        }
        let _ = fs::remove_file(self.path(diff_id));
    }

    fn evict(&mut self, keep: Option<Digest>) {
        while self.total > self.budget {
            let oldest = self
                .files
                .iter()
                .filter(|(d, _)| Some(**d) != keep)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| *d);
            let Some(digest) = oldest else { break };
            self.remove(&digest);
        }
    }
}

pub(crate) fn encode(index: &LayerIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + index.named.len() * 48 + index.shadows.len() * 12);
    out.extend_from_slice(MAGIC);
    out.push(u8::from(index.sha512));
    out.extend_from_slice(&index.diff_id.0);
    out.extend_from_slice(&index.bytes.to_le_bytes());
    out.extend_from_slice(&(index.named.len() as u32).to_le_bytes());
    for entry in &index.named {
        let (kind, path) = (&entry.kind, &entry.path);
        out.push(match kind {
            EntryKind::Hashed { .. } => KIND_HASHED,
            EntryKind::Whiteout => KIND_WHITEOUT,
            EntryKind::Opaque => KIND_OPAQUE,
            // Kept as shadows, never named (LayerIndex::from_entries).
            EntryKind::Unhashed { .. } | EntryKind::Other => KIND_WHITEOUT,
        });
        out.extend_from_slice(&(path.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&path[..path.len().min(usize::from(u16::MAX))]);
        if let EntryKind::Hashed {
            mode,
            sha256,
            sha512,
            capability,
        } = kind
        {
            out.extend_from_slice(&mode.to_le_bytes());
            out.push(u8::from(*capability));
            out.extend_from_slice(sha256);
            if index.sha512 {
                out.extend_from_slice(sha512.as_deref().unwrap_or(&[0u8; 64]));
            }
        }
    }
    out.extend_from_slice(&(index.shadows.len() as u32).to_le_bytes());
    for shadow in &index.shadows {
        out.extend_from_slice(&shadow.key.to_le_bytes());
        out.extend_from_slice(&shadow.meta.to_le_bytes());
    }
    let trailer = nodeguard_hash::sha256_of(&[&out]);
    out.extend_from_slice(&trailer);
    out
}

const KIND_HASHED: u8 = 1;
const KIND_WHITEOUT: u8 = 4;
const KIND_OPAQUE: u8 = 5;

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Option<LayerIndex> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, trailer) = bytes.split_at(body_len);
    if nodeguard_hash::sha256_of(&[body]) != trailer {
        return None;
    }
    let mut c = Cursor { bytes: body };
    if c.take(8)? != MAGIC {
        return None;
    }
    let flags = c.u8()?;
    if flags > 1 {
        return None;
    }
    let sha512 = flags == 1;
    let diff_id = Digest(c.array::<32>()?);
    let stream_bytes = c.u64()?;
    let count = c.u32()? as usize;
    if count > limits.max_members {
        return None;
    }
    // Each entry takes at least 3 bytes: a count beyond that is a lie, not an allocation.
    let mut named: Vec<Entry> = Vec::with_capacity(count.min(c.bytes.len() / 3));
    for _ in 0..count {
        let kind_byte = c.u8()?;
        let len = usize::from(c.u16()?);
        if len > limits.max_name_bytes {
            return None;
        }
        let path: Box<[u8]> = c.take(len)?.into();
        if named.last().is_some_and(|last| last.path >= path) {
            return None; // lookups binary-search: order is part of validity
        }
        let kind = match kind_byte {
            KIND_HASHED => {
                let mode = c.u32()?;
                let capability = c.u8()? != 0;
                let sha256 = c.array::<32>()?;
                let sha512 = if sha512 {
                    Some(Box::new(c.array::<64>()?))
                } else {
                    None
                };
                EntryKind::Hashed {
                    mode: mode & 0o7777,
                    sha256,
                    sha512,
                    capability,
                }
            }
            KIND_WHITEOUT => EntryKind::Whiteout,
            KIND_OPAQUE => EntryKind::Opaque,
            _ => return None,
        };
        named.push(Entry { path, kind });
    }
    let count = c.u32()? as usize;
    if count > limits.max_members || count.checked_mul(12)? != c.bytes.len() {
        return None;
    }
    let mut shadows: Vec<Shadow> = Vec::with_capacity(count);
    for _ in 0..count {
        let shadow = Shadow {
            key: c.u64()?,
            meta: c.u32()?,
        };
        if !Shadow::valid_meta(shadow.meta) || shadows.last().is_some_and(|last| *last > shadow) {
            return None;
        }
        shadows.push(shadow);
    }
    Some(LayerIndex {
        diff_id,
        bytes: stream_bytes,
        sha512,
        named,
        shadows,
    })
}
