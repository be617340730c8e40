//! A bounded, streaming reader of one layer's tar stream that hashes the whole stream (for the
//! diff_id) and builds the layer's index in one pass. Nothing is extracted; links are recorded,
//! never followed; sparse members are never expanded.
//!
//! Written here rather than on the `tar` crate: that crate reads GNU long names and PAX headers
//! whole into memory with no bound, and expands sparse members; a layer is hostile input.

use crate::entry::{clip_bytes, normalize, Entry, EntryKind};
use crate::{Digest, Error, Limits};
use nodeguard_hash::{Algorithms, DigestStream};
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const BLOCK: usize = 512;
/// How many stream bytes pass between two calls of the pacing hook.
const PACE_EVERY: u64 = 1 << 20;
const CHUNK: usize = 128 * 1024;

/// What one pass over a layer stream gives.
#[derive(Debug)]
pub(crate) struct Indexed {
    /// SHA-256 of the whole (uncompressed) stream: the layer's diff_id when the data is intact.
    pub digest: Digest,
    /// Bytes of the whole stream.
    pub bytes: u64,
    /// The layer's entries (in no particular order).
    pub entries: Vec<Entry>,
}

/// Hooks and counters shared with the caller.
pub(crate) struct StreamOptions<'a> {
    pub limits: &'a Limits,
    pub sha512: bool,
    /// Compressed bytes read so far (for the decompression-ratio bound), when compressed.
    pub compressed: Option<Arc<AtomicU64>>,
    /// Called about every MiB with the bytes read so far: the CPU budget sleeps here; `false`
    /// stops the read (the indexer is shutting down).
    pub pace: &'a mut dyn FnMut(u64) -> bool,
}

/// Reads `input` to its end as a tar stream and indexes it.
pub(crate) fn index_tar(
    input: &mut dyn Read,
    options: StreamOptions<'_>,
) -> Result<Indexed, Error> {
    let sha512 = options.sha512;
    let limits = *options.limits;
    let mut stream = Stream {
        inner: input,
        hash: DigestStream::new(Algorithms::SHA256),
        total: 0,
        next_pace: PACE_EVERY,
        limits,
        compressed: options.compressed,
        pace: options.pace,
    };
    let mut builder = Builder::new(limits);
    let mut buf = vec![0u8; CHUNK];
    let mut pending = Pending::default();
    let mut members = 0usize;
    loop {
        let mut header = [0u8; BLOCK];
        if !stream.block(&mut header)? {
            break; // end of stream at a header boundary (some writers omit the end marker)
        }
        if header.iter().all(|&b| b == 0) {
            break; // end-of-archive marker; the rest (second zero block, padding) is drained
        }
        members += 1;
        if members > limits.max_members {
            return Err(refused(format!(
                "more than {} tar members",
                limits.max_members
            )));
        }
        check_checksum(&header)?;
        let typeflag = header[156];
        let header_size = parse_number(&header[124..136])
            .ok_or_else(|| refused(format!("member {members}: bad size field")))?;
        match typeflag {
            b'L' | b'K' => {
                let data = stream.extended(
                    header_size,
                    limits.max_name_bytes as u64 + 1,
                    "GNU long name",
                )?;
                let name = trim_nul(&data).to_vec();
                if typeflag == b'L' {
                    pending.long_name = Some(name);
                } else {
                    pending.long_link = Some(name);
                }
                continue;
            }
            b'x' => {
                let data =
                    stream.extended(header_size, limits.max_extended_header_bytes, "PAX header")?;
                parse_pax(&data, &limits, &mut pending)?;
                continue;
            }
            b'g' => {
                // Global PAX headers carry nothing a layer index needs; bounded and skipped.
                stream.extended(
                    header_size,
                    limits.max_extended_header_bytes,
                    "global PAX header",
                )?;
                continue;
            }
            _ => {}
        }
        let member = std::mem::take(&mut pending);
        let ustar = &header[257..262] == b"ustar" && header[262] == 0;
        let raw_name = match (&member.sparse_name, &member.path, &member.long_name) {
            (Some(n), _, _) | (None, Some(n), _) | (None, None, Some(n)) => n.clone(),
            _ => {
                let mut name = Vec::with_capacity(256);
                if ustar && header[345] != 0 {
                    name.extend_from_slice(trim_nul(&header[345..500]));
                    name.push(b'/');
                }
                name.extend_from_slice(trim_nul(&header[0..100]));
                name
            }
        };
        let size = member.size.unwrap_or(header_size);
        let mode = parse_number(&header[100..108]).unwrap_or(0) as u32 & 0o7777;
        let path = normalize(&raw_name, &limits)?;
        let mut stored = header_size;
        let mut sparse = member.sparse;
        if typeflag == b'S' {
            sparse = true;
            skip_gnu_sparse_extensions(&mut stream, &header, &limits)?;
        } else if !sparse {
            stored = size;
        }
        if stored > limits.max_member_bytes {
            return Err(refused(format!(
                "member {:?}: {stored} bytes, more than the {} allowed",
                String::from_utf8_lossy(&clip_bytes(&path)),
                limits.max_member_bytes
            )));
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' | b'S' => {
                let wants_hash =
                    !sparse && (mode & 0o111 != 0 || mode & 0o6000 != 0 || member.capability);
                if wants_hash {
                    let (sha256, sha512v) = stream.hash_data(stored, sha512, &mut buf)?;
                    EntryKind::Hashed {
                        mode,
                        sha256,
                        sha512: sha512v.map(Box::new),
                        capability: member.capability,
                    }
                } else {
                    stream.skip(stored, &mut buf)?;
                    EntryKind::Unhashed { mode, sparse }
                }
            }
            b'1' => {
                stream.skip(stored, &mut buf)?;
                let target_raw = match (&member.link_path, &member.long_link) {
                    (Some(n), _) | (None, Some(n)) => n.clone(),
                    _ => trim_nul(&header[157..257]).to_vec(),
                };
                let target = normalize(&target_raw, &limits)?;
                // A hard link names an earlier member of this same stream: its record is copied
                // (never followed on disk); one to nothing known is a mere name.
                builder.lookup(&target).cloned().unwrap_or(EntryKind::Other)
            }
            b'5' => {
                stream.skip(stored, &mut buf)?;
                if let Some(dir) = whiteout_target(&path) {
                    // A directory named like a whiteout is still a whiteout to overlayfs tools.
                    builder.insert_whiteout(dir)?;
                }
                continue;
            }
            _ => {
                stream.skip(stored, &mut buf)?;
                EntryKind::Other
            }
        };
        match whiteout_target(&path) {
            Some(WhiteoutOf::Opaque(dir)) => builder.insert(dir, EntryKind::Opaque)?,
            Some(WhiteoutOf::Entry(target)) => builder.insert(target, EntryKind::Whiteout)?,
            Some(WhiteoutOf::Meta) => {}
            None => builder.insert(path, kind)?,
        }
    }
    stream.drain(&mut buf)?;
    let digest = Digest(stream.hash.finish().sha256.unwrap_or_default());
    Ok(Indexed {
        digest,
        bytes: stream.total,
        entries: builder.finish(),
    })
}

fn refused(why: String) -> Error {
    Error::Refused(why)
}

/// Extended-header state that applies to the next real member.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    link_path: Option<Vec<u8>>,
    size: Option<u64>,
    capability: bool,
    sparse: bool,
    sparse_name: Option<Vec<u8>>,
}

fn parse_pax(data: &[u8], limits: &Limits, pending: &mut Pending) -> Result<(), Error> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .filter(|&p| p <= 20)
            .ok_or_else(|| refused("PAX header: a record without a length".into()))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > space + 1 && l <= rest.len())
            .ok_or_else(|| refused("PAX header: a bad record length".into()))?;
        let record = &rest[space + 1..len];
        rest = &rest[len..];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let Some(eq) = record.iter().position(|&b| b == b'=') else {
            return Err(refused("PAX header: a record without '='".into()));
        };
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let bounded_name = || -> Result<Vec<u8>, Error> {
            if value.len() > limits.max_name_bytes {
                return Err(refused(format!(
                    "PAX header: a name of {} bytes, more than {}",
                    value.len(),
                    limits.max_name_bytes
                )));
            }
            Ok(value.to_vec())
        };
        match key {
            b"path" => pending.path = Some(bounded_name()?),
            b"linkpath" => pending.link_path = Some(bounded_name()?),
            b"size" => {
                pending.size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| refused("PAX header: a bad size".into()))?,
                )
            }
            b"SCHILY.xattr.security.capability" | b"LIBARCHIVE.xattr.security.capability" => {
                if value.len() > limits.max_xattr_bytes {
                    return Err(refused("PAX header: an oversized capability xattr".into()));
                }
                pending.capability = !value.is_empty();
            }
            b"GNU.sparse.name" => {
                pending.sparse = true;
                pending.sparse_name = Some(bounded_name()?);
            }
            k if k.starts_with(b"GNU.sparse.") => pending.sparse = true,
            _ => {}
        }
    }
    Ok(())
}

/// Old-GNU sparse headers may be followed by extension blocks (before the data).
fn skip_gnu_sparse_extensions(
    stream: &mut Stream<'_>,
    header: &[u8; BLOCK],
    limits: &Limits,
) -> Result<(), Error> {
    let mut extended = header[482] != 0;
    let mut blocks = 0usize;
    while extended {
        blocks += 1;
        if blocks > limits.max_members {
            return Err(refused(
                "GNU sparse header: too many extension blocks".into(),
            ));
        }
        let mut ext = [0u8; BLOCK];
        if !stream.block(&mut ext)? {
            return Err(refused("GNU sparse header: truncated".into()));
        }
        extended = ext[504] != 0;
    }
    Ok(())
}

fn check_checksum(header: &[u8; BLOCK]) -> Result<(), Error> {
    let want = parse_number(&header[148..156])
        .ok_or_else(|| refused("not a tar stream: bad checksum field".into()))?;
    let unsigned: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    let signed: i64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if want == unsigned || i64::try_from(want).ok() == Some(signed) {
        Ok(())
    } else {
        Err(refused("not a tar stream: header checksum mismatch".into()))
    }
}

/// An octal (NUL/space padded) or base-256 numeric field.
fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut value: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ');
    let mut value: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

enum WhiteoutOf {
    /// `.wh..wh..opq`: the directory's lower contents are hidden.
    Opaque(Vec<u8>),
    /// `.wh.NAME`: NAME is deleted.
    Entry(Vec<u8>),
    /// `.wh..wh.*` (aufs bookkeeping): nothing.
    Meta,
}

fn whiteout_target(path: &[u8]) -> Option<WhiteoutOf> {
    let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    let name = base.strip_prefix(b".wh.")?;
    if name == b".wh..opq" {
        return Some(WhiteoutOf::Opaque(dir.to_vec()));
    }
    if name.starts_with(b".wh.") || name.is_empty() {
        return Some(WhiteoutOf::Meta);
    }
    let mut target = dir.to_vec();
    if !target.is_empty() {
        target.push(b'/');
    }
    target.extend_from_slice(name);
    Some(WhiteoutOf::Entry(target))
}

/// A layer's entries by path while it is read; the last member of a name wins, as in extraction.
struct Builder {
    limits: Limits,
    entries: HashMap<Box<[u8]>, EntryKind>,
    name_bytes: usize,
}

impl Builder {
    fn new(limits: Limits) -> Builder {
        Builder {
            limits,
            entries: HashMap::new(),
            name_bytes: 0,
        }
    }

    fn lookup(&self, path: &[u8]) -> Option<&EntryKind> {
        self.entries.get(path)
    }

    fn insert_whiteout(&mut self, target: WhiteoutOf) -> Result<(), Error> {
        match target {
            WhiteoutOf::Opaque(dir) => self.insert(dir, EntryKind::Opaque),
            WhiteoutOf::Entry(path) => self.insert(path, EntryKind::Whiteout),
            WhiteoutOf::Meta => Ok(()),
        }
    }

    fn insert(&mut self, path: Vec<u8>, kind: EntryKind) -> Result<(), Error> {
        let cost = path.len() + std::mem::size_of::<Entry>();
        if let Some(old) = self.entries.get_mut(path.as_slice()) {
            *old = kind;
            return Ok(());
        }
        self.name_bytes += cost;
        if self.name_bytes > self.limits.max_index_bytes {
            return Err(refused(format!(
                "the layer's index would pass {} bytes",
                self.limits.max_index_bytes
            )));
        }
        self.entries.insert(path.into_boxed_slice(), kind);
        Ok(())
    }

    fn finish(self) -> Vec<Entry> {
        self.entries
            .into_iter()
            .map(|(path, kind)| Entry { path, kind })
            .collect()
    }
}

/// The uncompressed stream: every byte read is hashed and counted against the bounds.
struct Stream<'a> {
    inner: &'a mut dyn Read,
    hash: DigestStream,
    total: u64,
    next_pace: u64,
    limits: Limits,
    compressed: Option<Arc<AtomicU64>>,
    pace: &'a mut dyn FnMut(u64) -> bool,
}

impl Stream<'_> {
    /// Reads some bytes; 0 only at the end of the stream.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(refused(format!("unreadable layer stream: {e}"))),
            }
        };
        self.hash.update(&buf[..n]);
        self.total += n as u64;
        if self.total > self.limits.max_layer_bytes {
            return Err(refused(format!(
                "the uncompressed layer passes {} bytes",
                self.limits.max_layer_bytes
            )));
        }
        if self.total >= self.next_pace {
            self.next_pace = self.total + PACE_EVERY;
            if let Some(compressed) = &self.compressed {
                let c = compressed.load(Ordering::Relaxed).max(1);
                if self.total > self.limits.ratio_grace_bytes
                    && self.total / c > self.limits.max_ratio
                {
                    return Err(refused(format!(
                        "decompresses more than {}:1 (a tar bomb?)",
                        self.limits.max_ratio
                    )));
                }
            }
            if !(self.pace)(self.total) {
                return Err(refused("stopped".into()));
            }
        }
        Ok(n)
    }

    /// One whole block; `false` at a clean end of stream, an error mid-block.
    fn block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, Error> {
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.read_some(&mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(refused("truncated tar header".into()));
            }
            filled += n;
        }
        Ok(true)
    }

    fn exact(&mut self, mut buf: &mut [u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = self.read_some(buf)?;
            if n == 0 {
                return Err(refused("truncated tar member".into()));
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// A member's data, padded to whole blocks, read into memory up to `max` bytes.
    fn extended(&mut self, size: u64, max: u64, what: &str) -> Result<Vec<u8>, Error> {
        if size > max {
            return Err(refused(format!(
                "a {what} of {size} bytes, more than {max}"
            )));
        }
        let mut data = vec![0u8; size as usize];
        self.exact(&mut data)?;
        let mut pad = [0u8; BLOCK];
        self.exact(&mut pad[..padding(size)])?;
        Ok(data)
    }

    fn skip(&mut self, size: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.consume(size + padding(size) as u64, buf, |_| {})
    }

    fn hash_data(
        &mut self,
        size: u64,
        sha512: bool,
        buf: &mut [u8],
    ) -> Result<([u8; 32], Option<[u8; 64]>), Error> {
        let mut member = DigestStream::new(Algorithms {
            sha256: true,
            sha512,
        });
        self.consume(size, buf, |chunk| member.update(chunk))?;
        self.consume(padding(size) as u64, buf, |_| {})?;
        let digests = member.finish();
        Ok((
            digests.sha256.unwrap_or_default(),
            digests.sha512.map(|b| *b),
        ))
    }

    fn consume(
        &mut self,
        mut left: u64,
        buf: &mut [u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self.read_some(&mut buf[..want])?;
            if n == 0 {
                return Err(refused("truncated tar member data".into()));
            }
            each(&buf[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    /// The rest of the stream after the end marker (it counts toward the digest).
    fn drain(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        while self.read_some(buf)? > 0 {}
        Ok(())
    }
}

fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_octal_and_base256() {
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(b"  755 \0\0"), Some(0o755));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(
            parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]),
            Some(2 << 32)
        );
        assert_eq!(parse_number(b"0009"), None);
        assert_eq!(parse_number(&[0xff; 12]), None);
    }

    #[test]
    fn names_are_normalised_and_climbing_out_is_refused() {
        let l = Limits::default();
        assert_eq!(normalize(b"./usr//bin/./ls", &l).unwrap(), b"usr/bin/ls");
        assert_eq!(normalize(b"/bin/sh", &l).unwrap(), b"bin/sh");
        assert!(normalize(b"usr/../../etc/passwd", &l).is_err());
        let deep = "a/".repeat(10_000);
        assert!(normalize(deep.as_bytes(), &l).is_err());
        let deep = "a/".repeat(200);
        assert!(normalize(deep.as_bytes(), &l).is_err());
    }

    #[test]
    fn whiteouts_and_opaque_directories_are_recognised() {
        assert!(
            matches!(whiteout_target(b"etc/.wh.passwd"), Some(WhiteoutOf::Entry(p)) if p == b"etc/passwd")
        );
        assert!(matches!(whiteout_target(b".wh.bin"), Some(WhiteoutOf::Entry(p)) if p == b"bin"));
        assert!(
            matches!(whiteout_target(b"usr/lib/.wh..wh..opq"), Some(WhiteoutOf::Opaque(p)) if p == b"usr/lib")
        );
        assert!(matches!(
            whiteout_target(b".wh..wh.plnk"),
            Some(WhiteoutOf::Meta)
        ));
        assert!(whiteout_target(b"usr/bin/.whatever").is_none());
    }
}
