//! Rebuilding an unpacked layer's tar stream from its tar-split metadata and its files.
//!
//! containers/storage and Docker keep layers unpacked, plus a tar-split file (gzip'd JSON lines,
//! vbatts/tar-split's `storage.Entry`): `{"type":2,"payload":<base64>}` segments are the raw tar
//! bytes (headers, padding), `{"type":1,"name":…,"size":N,…}` entries stand for a member's data,
//! to be read from the layer directory. Concatenated, they are the layer's original tar stream,
//! byte for byte, so its SHA-256 must equal the layer's diff_id. A file whose bytes changed on the
//! node changes the rebuilt stream, and the digest check catches it.
//!
//! Files are opened beneath the layer directory one component at a time without following
//! symlinks; a file that is missing, not regular or of another size is read as exactly the
//! recorded size (zero-filled or cut), so the stream stays aligned and the digest differs.

use crate::entry::normalize;
use crate::safe_open::Beneath;
use crate::{Error, Limits};
use base64::Engine as _;
use serde::Deserialize;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// A tar stream rebuilt on the fly; implements [`Read`].
pub(crate) struct Rebuild {
    lines: BufReader<flate2::read::MultiGzDecoder<File>>,
    diff: Beneath,
    limits: Limits,
    max_line: u64,
    line: Vec<u8>,
    current: Part,
    entries: usize,
    /// Members whose file did not match its record (missing, not regular, other size).
    pub(crate) mismatched_files: usize,
}

enum Part {
    Segment { bytes: Vec<u8>, at: usize },
    File { file: File, left: u64 },
    Zeros { left: u64 },
    Done,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    payload: Option<String>,
}

impl Rebuild {
    pub(crate) fn open(
        tar_split: &Path,
        diff_dir: &Path,
        limits: &Limits,
    ) -> Result<Rebuild, Error> {
        let file = crate::safe_open::open_file(tar_split)?;
        let diff = Beneath::open(diff_dir)?;
        Ok(Rebuild {
            lines: BufReader::with_capacity(64 * 1024, flate2::read::MultiGzDecoder::new(file)),
            diff,
            limits: *limits,
            // A segment holds a header block group (PAX headers included) and padding: base64 of
            // the largest extended header, plus room for the JSON around it.
            max_line: limits.max_extended_header_bytes * 4 / 3 + 64 * 1024,
            line: Vec::new(),
            current: Part::Segment {
                bytes: Vec::new(),
                at: 0,
            },
            entries: 0,
            mismatched_files: 0,
        })
    }

    /// Moves to the next non-empty part; `false` at the end.
    fn advance(&mut self) -> io::Result<bool> {
        loop {
            self.line.clear();
            let n = (&mut self.lines)
                .take(self.max_line + 1)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 {
                self.current = Part::Done;
                return Ok(false);
            }
            if n as u64 > self.max_line {
                return Err(invalid(format!(
                    "tar-split: a line longer than {} bytes",
                    self.max_line
                )));
            }
            self.entries += 1;
            if self.entries > self.limits.max_members.saturating_mul(3) {
                return Err(invalid("tar-split: too many entries".into()));
            }
            let text = self.line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_slice(text)
                .map_err(|e| invalid(format!("tar-split: a malformed line: {e}")))?;
            match entry.kind {
                2 => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(entry.payload.unwrap_or_default())
                        .map_err(|e| invalid(format!("tar-split: bad segment payload: {e}")))?;
                    if bytes.is_empty() {
                        continue;
                    }
                    self.current = Part::Segment { bytes, at: 0 };
                    return Ok(true);
                }
                1 => {
                    if entry.size == 0 {
                        continue;
                    }
                    if entry.size > self.limits.max_member_bytes {
                        return Err(invalid(format!(
                            "tar-split: a member of {} bytes, more than {}",
                            entry.size, self.limits.max_member_bytes
                        )));
                    }
                    let name = match (entry.name_raw, entry.name) {
                        (Some(raw), _) => base64::engine::general_purpose::STANDARD
                            .decode(raw)
                            .map_err(|e| invalid(format!("tar-split: bad name_raw: {e}")))?,
                        (None, Some(name)) => name.into_bytes(),
                        (None, None) => {
                            return Err(invalid("tar-split: a file without a name".into()))
                        }
                    };
                    let path = normalize(&name, &self.limits)
                        .map_err(|e| invalid(format!("tar-split: {e}")))?;
                    self.current = match self.diff.open_file(&path) {
                        Ok(file) if file.metadata().map(|m| m.len()).ok() == Some(entry.size) => {
                            Part::File {
                                file,
                                left: entry.size,
                            }
                        }
                        _ => {
                            self.mismatched_files += 1;
                            Part::Zeros { left: entry.size }
                        }
                    };
                    return Ok(true);
                }
                other => return Err(invalid(format!("tar-split: unknown entry type {other}"))),
            }
        }
    }
}

impl Read for Rebuild {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = match &mut self.current {
                Part::Done => return Ok(0),
                Part::Segment { bytes, at } => {
                    let n = (bytes.len() - *at).min(buf.len());
                    buf[..n].copy_from_slice(&bytes[*at..*at + n]);
                    *at += n;
                    n
                }
                Part::File { left: 0, .. } => 0,
                Part::File { file, left } => {
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = file.read(&mut buf[..want])?;
                    if n == 0 {
                        // The file shrank while being read: keep the stream aligned.
                        self.mismatched_files += 1;
                        let left = *left;
                        self.current = Part::Zeros { left };
                        continue;
                    }
                    *left -= n as u64;
                    n
                }
                Part::Zeros { left } => {
                    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    buf[..n].fill(0);
                    *left -= n as u64;
                    n
                }
            };
            if n > 0 {
                return Ok(n);
            }
            if !self.advance()? {
                return Ok(0);
            }
        }
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}
