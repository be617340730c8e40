//! `nodeguard digests import`: release artifacts in, a digest bundle out.
//!
//! What each input is, by its name first and then its first bytes:
//! - a directory: every regular file in it (recursively, symlinks never followed, at most
//!   [`MAX_DIR_FILES`] files and [`MAX_DEPTH`] levels), each taken as below, except that
//!   a file neither a checksum file nor a tarball is hashed as an artifact;
//! - `*.tar.gz`, `*.tgz`, `*.tar`: a release tarball: the tarball itself is hashed, and
//!   every regular member, streamed (nothing is extracted), at most [`MAX_MEMBERS`] members;
//! - `*.sha256`, `*.sha512`: Kubernetes' per-binary checksum files: one digest, the binary
//!   named by the file name without the suffix;
//! - `sha256sum`/`sha512sum` output (`HEX  NAME`, `HEX *NAME`, or the BSD `SHA256 (NAME) =
//!   HEX` form), recognised by a name ending like `SHA256SUMS`, `*.sha256sum` or
//!   `checksums.txt`, or by a first line of that shape; a malformed line is an error naming
//!   the file and line;
//! - anything else: an artifact, hashed (SHA-256 and SHA-512) under its file name.
//!
//! Every digest records its source. Two sources giving one name different digests is an
//! error unless `--allow-several` (see [`DigestBundle::add`]).

use crate::cli::ImportArgs;
use anyhow::{anyhow, bail, Context, Result};
use nodeguard_hash::{digest_reader, open_regular, Algorithms};
use nodeguard_model::Timestamp;
use nodeguard_policy::bundle::{check_hex, check_name, MAX_BUNDLE_BYTES};
use nodeguard_policy::{DigestBundle, DigestSource};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The most regular files one directory argument may hold.
pub const MAX_DIR_FILES: usize = 10_000;
/// The most entries (of any type) one directory may hold.
pub const MAX_DIR_ENTRIES: usize = 100_000;
/// How deep a directory argument is walked.
pub const MAX_DEPTH: usize = 8;
/// The most members one tarball may hold (a Kubernetes server tarball has about 60).
pub const MAX_MEMBERS: usize = 100_000;
/// The largest checksum file.
pub const MAX_CHECKSUM_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// The longest line of a checksum file.
const MAX_LINE_BYTES: usize = 8 * 1024;
const BUFFER_SIZE: usize = 256 * 1024;

pub fn import(args: &ImportArgs) -> Result<()> {
    let renames = parse_renames(&args.rename)?;
    let mut importer = Importer {
        bundle: DigestBundle::new(Timestamp::now().to_string()),
        allow_several: args.allow_several,
        renames,
        max_size: args.max_size,
        buf: vec![0u8; BUFFER_SIZE],
        sources: 0,
    };
    for path in &args.paths {
        importer.input(path)?;
    }
    let mut bundle = importer.bundle;
    if !args.only.is_empty() {
        if let Some(missing) = args.only.iter().find(|n| !bundle.binaries.contains_key(*n)) {
            bail!("--only {missing}: no input has a binary of that name");
        }
        bundle.binaries.retain(|name, _| args.only.contains(name));
    }
    if bundle.binaries.is_empty() {
        bail!("no digest found in {} input(s)", args.paths.len());
    }
    bundle
        .validate()
        .map_err(|e| anyhow!("the bundle would be invalid: {e}"))?;
    let text = bundle.to_json();
    if text.len() > MAX_BUNDLE_BYTES {
        bail!(
            "the bundle would be {} bytes, more than the {MAX_BUNDLE_BYTES} a policy reads \
             (import fewer artifacts per bundle; a policy may list several)",
            text.len()
        );
    }
    let entries: usize = bundle.binaries.values().map(Vec::len).sum();
    if args.output == Path::new("-") {
        io::stdout().write_all(text.as_bytes())?;
    } else {
        write_atomically(&args.output, text.as_bytes())
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    eprintln!(
        "nodeguard: {} binary names, {entries} digest entries from {} sources{}",
        bundle.binaries.len(),
        importer.sources,
        if args.output == Path::new("-") {
            String::new()
        } else {
            format!(" written to {}", args.output.display())
        }
    );
    Ok(())
}

fn parse_renames(list: &[String]) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|r| {
            let (old, new) = r
                .split_once('=')
                .ok_or_else(|| anyhow!("--rename {r:?}: want OLD=NEW"))?;
            check_name(new).map_err(|e| anyhow!("--rename {r:?}: {new:?}: {e}"))?;
            Ok((old.to_string(), new.to_string()))
        })
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What an input file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tarball {
        gzip: bool,
    },
    /// `NAME.sha256` / `NAME.sha512`: one digest of NAME.
    PerBinary {
        hex_len: usize,
    },
    /// sha256sum/sha512sum output.
    SumList,
    Artifact,
}

fn kind_of(path: &Path) -> Kind {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        return Kind::Tarball { gzip: true };
    }
    if name.ends_with(".tar") {
        return Kind::Tarball { gzip: false };
    }
    if name.ends_with(".sha256") {
        return Kind::PerBinary { hex_len: 64 };
    }
    if name.ends_with(".sha512") {
        return Kind::PerBinary { hex_len: 128 };
    }
    // By the name's end only: `SHA256SUMS.asc` (its signature) is not a checksum list.
    if name.ends_with("sums")
        || name.ends_with("sums.txt")
        || name.ends_with(".sha256sum")
        || name.ends_with(".sha512sum")
        || looks_like_sum_list(path)
    {
        return Kind::SumList;
    }
    Kind::Artifact
}

/// Whether the first line of the file is a checksum line (it is read without blocking: a
/// FIFO or device is left to the artifact path, which refuses it).
fn looks_like_sum_list(path: &Path) -> bool {
    let Ok((mut file, _)) = open_regular(path, u64::MAX) else {
        return false;
    };
    let mut head = [0u8; 512];
    let Ok(n) = file.read(&mut head) else {
        return false;
    };
    let head = &head[..n];
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    std::str::from_utf8(line).ok().is_some_and(|l| {
        parse_sum_line(l.trim_start_matches('\u{feff}').trim_end_matches('\r')).is_ok()
    })
}

/// `(hex, name)` from one `sha256sum`/`sha512sum` line.
fn parse_sum_line(line: &str) -> Result<(String, String), String> {
    // BSD tag form: `SHA256 (name) = hex`.
    for (tag, len) in [("SHA256 (", 64), ("SHA512 (", 128)] {
        if let Some(rest) = line.strip_prefix(tag) {
            let (name, hex) = rest
                .rsplit_once(") = ")
                .ok_or("a BSD-style line without \") = \"")?;
            return Ok((check_hex(hex.trim(), len)?, name.to_string()));
        }
    }
    // GNU form: `hex  name` (text) or `hex *name` (binary); a leading `\` means the name
    // is escaped (`\\`, `\n`).
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (hex, rest) = line
        .split_once(' ')
        .ok_or("want \"HEX  NAME\" or \"HEX *NAME\"")?;
    let name = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('*'))
        .ok_or("want two spaces or \" *\" between the digest and the name")?;
    let hex = match hex.len() {
        64 | 128 => check_hex(hex, hex.len())?,
        n => {
            return Err(format!(
                "a digest of {n} characters (SHA-256 has 64, SHA-512 128)"
            ))
        }
    };
    if name.is_empty() {
        return Err("no file name after the digest".to_string());
    }
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_string()
    };
    Ok((hex, name))
}

fn unescape(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// The file name of a path as a checksum line or tarball member gives it.
fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

struct Importer {
    bundle: DigestBundle,
    allow_several: bool,
    renames: BTreeMap<String, String>,
    max_size: u64,
    buf: Vec<u8>,
    sources: usize,
}

impl Importer {
    fn input(&mut self, path: &Path) -> Result<()> {
        // An argument is what the user named: a symlink to it is followed (inside a directory
        // nothing is).
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        if meta.is_dir() {
            let mut count = 0;
            self.directory(path, path, 0, &mut count)
        } else {
            self.file(path)
        }
    }

    fn directory(
        &mut self,
        root: &Path,
        dir: &Path,
        depth: usize,
        count: &mut usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!(
                "{}: deeper than {MAX_DEPTH} directory levels under {}",
                dir.display(),
                root.display()
            );
        }
        // Bounded before sorting: a directory of a million empty entries is refused, not
        // listed into memory.
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .take(MAX_DIR_ENTRIES + 1)
            .collect::<io::Result<_>>()
            .with_context(|| format!("{}", dir.display()))?;
        if entries.len() > MAX_DIR_ENTRIES {
            bail!(
                "{}: more than {MAX_DIR_ENTRIES} entries in one directory",
                dir.display()
            );
        }
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            // The entry's own type: a symlink is a symlink, never what it points at.
            let ty = entry
                .file_type()
                .with_context(|| format!("{}", path.display()))?;
            if ty.is_dir() {
                self.directory(root, &path, depth + 1, count)?;
            } else if ty.is_file() {
                *count += 1;
                if *count > MAX_DIR_FILES {
                    bail!(
                        "{}: more than {MAX_DIR_FILES} files (import a narrower directory)",
                        root.display()
                    );
                }
                self.file(&path)?;
            } else {
                tracing::info!(path = %path.display(), "skipped: not a regular file (symlinks are not followed)");
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &Path) -> Result<()> {
        match kind_of(path) {
            Kind::Tarball { gzip } => {
                self.artifact(path)?;
                self.tarball(path, gzip)
            }
            Kind::PerBinary { hex_len } => self.per_binary(path, hex_len),
            Kind::SumList => self.sum_list(path),
            Kind::Artifact => self.artifact(path),
        }
    }

    fn add(
        &mut self,
        name: &str,
        hex: (Option<String>, Option<String>),
        source: DigestSource,
    ) -> Result<()> {
        let name = self.renames.get(name).map(String::as_str).unwrap_or(name);
        let at = source.to_string();
        check_name(name).map_err(|e| anyhow!("{at}: binary name {name:?}: {e}"))?;
        self.bundle
            .add(name, hex.0, hex.1, source, self.allow_several)
            .map_err(|e| anyhow!(e))?;
        self.sources += 1;
        Ok(())
    }

    fn artifact(&mut self, path: &Path) -> Result<()> {
        let digests =
            nodeguard_hash::digest_path(path, Algorithms::BOTH, self.max_size, &mut self.buf)
                .with_context(|| format!("{}: cannot hash", path.display()))?;
        let name = file_name(path)?;
        self.add(
            &name,
            (digests.sha256_hex(), digests.sha512_hex()),
            DigestSource {
                file: display(path),
                member: None,
                line: None,
            },
        )
    }

    fn tarball(&mut self, path: &Path, gzip: bool) -> Result<()> {
        let (file, _) = open_regular(path, u64::MAX)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .with_context(|| format!("{}: not a tar archive", path.display()))?;
        let mut members = 0usize;
        for (i, entry) in entries.enumerate() {
            let mut entry = entry.with_context(|| {
                format!(
                    "{}: member {}: not a readable tar member",
                    path.display(),
                    i + 1
                )
            })?;
            members += 1;
            if members > MAX_MEMBERS {
                bail!("{}: more than {MAX_MEMBERS} members", path.display());
            }
            if !matches!(
                entry.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                continue;
            }
            let member = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .with_context(|| format!("{}: member {}: bad name", path.display(), i + 1))?;
            let size = entry.size();
            if size > self.max_size {
                bail!(
                    "{}: member {member} is {size} bytes, more than --max-size {}",
                    path.display(),
                    self.max_size
                );
            }
            let digests = digest_reader(&mut entry, Algorithms::BOTH, &mut self.buf, size)
                .with_context(|| format!("{}: member {member}: cannot read", path.display()))?;
            if digests.bytes != size {
                bail!(
                    "{}: member {member}: {} bytes read, the header says {size} (truncated archive)",
                    path.display(),
                    digests.bytes
                );
            }
            let name = base_name(&member).to_string();
            self.add(
                &name,
                (digests.sha256_hex(), digests.sha512_hex()),
                DigestSource {
                    file: display(path),
                    member: Some(member),
                    line: None,
                },
            )?;
        }
        Ok(())
    }

    fn per_binary(&mut self, path: &Path, hex_len: usize) -> Result<()> {
        let lines = read_lines(path)?;
        let content: Vec<&(u64, String)> =
            lines.iter().filter(|(_, l)| !l.trim().is_empty()).collect();
        let [(line_no, line)] = content.as_slice() else {
            bail!(
                "{}: want one digest line, found {}",
                path.display(),
                content.len()
            );
        };
        let line = line.trim_start_matches('\u{feff}').trim();
        let file = file_name(path)?;
        let stem = &file[..file.len() - 7]; // ".sha256" / ".sha512"
                                            // Kubernetes writes the bare digest; other projects write a sha256sum line.
        let (hex, name) = if line.contains(char::is_whitespace) {
            parse_sum_line(line)
                .map(|(hex, name)| (hex, base_name(&name).to_string()))
                .map_err(|e| {
                    anyhow!("{}:{line_no}: malformed checksum line: {e}", path.display())
                })?
        } else {
            let hex = check_hex(line, hex_len)
                .map_err(|e| anyhow!("{}:{line_no}: malformed checksum: {e}", path.display()))?;
            (hex, stem.to_string())
        };
        if hex.len() != hex_len {
            bail!(
                "{}:{line_no}: a {}-digit digest in a {} file",
                path.display(),
                hex.len(),
                &file[file.len() - 6..]
            );
        }
        let pair = if hex_len == 64 {
            (Some(hex), None)
        } else {
            (None, Some(hex))
        };
        self.add(
            &name,
            pair,
            DigestSource {
                file: display(path),
                member: None,
                line: None,
            },
        )
    }

    fn sum_list(&mut self, path: &Path) -> Result<()> {
        let lines = read_lines(path)?;
        let mut found = 0;
        for (line_no, line) in &lines {
            // A Windows editor's byte-order mark and line ends.
            let line = line.trim_start_matches('\u{feff}').trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (hex, name) = parse_sum_line(line).map_err(|e| {
                anyhow!("{}:{line_no}: malformed checksum line: {e}", path.display())
            })?;
            let pair = if hex.len() == 64 {
                (Some(hex), None)
            } else {
                (None, Some(hex))
            };
            self.add(
                base_name(&name),
                pair,
                DigestSource {
                    file: display(path),
                    member: None,
                    line: Some(*line_no),
                },
            )?;
            found += 1;
        }
        if found == 0 {
            bail!("{}: no checksum line", path.display());
        }
        Ok(())
    }
}

/// The lines of a small text file, numbered from 1. A FIFO, device or socket is refused
/// before a byte is read; so is a file over [`MAX_CHECKSUM_FILE_BYTES`], a line over 8 KiB,
/// or text that is not UTF-8 (each naming the file and line).
fn read_lines(path: &Path) -> Result<Vec<(u64, String)>> {
    let (file, _) =
        open_regular(path, MAX_CHECKSUM_FILE_BYTES).context("cannot read the checksum file")?;
    let mut reader = BufReader::new(file.take(MAX_CHECKSUM_FILE_BYTES + 1));
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut raw = Vec::new();
    for line_no in 1u64.. {
        raw.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut raw)
            .with_context(|| format!("{}:{line_no}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_CHECKSUM_FILE_BYTES {
            bail!(
                "{}: grew past {MAX_CHECKSUM_FILE_BYTES} bytes while read",
                path.display()
            );
        }
        if raw.len() > MAX_LINE_BYTES {
            bail!(
                "{}:{line_no}: a line longer than {MAX_LINE_BYTES} bytes (not a checksum file?)",
                path.display()
            );
        }
        if raw.last() == Some(&b'\n') {
            raw.pop();
        }
        let text = std::str::from_utf8(&raw).map_err(|_| {
            anyhow!(
                "{}:{line_no}: not text (binary data is not a checksum file)",
                path.display()
            )
        })?;
        out.push((line_no, text.to_string()));
    }
    Ok(out)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: no UTF-8 file name", path.display()))
}

/// The path as the bundle records it: absolute when it can be made so.
fn display(path: &Path) -> String {
    let abs: PathBuf = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_lines_in_every_form() {
        let h = "A".repeat(64);
        let lower = "a".repeat(64);
        assert_eq!(
            parse_sum_line(&format!("{h}  kubernetes/server/bin/kubelet")),
            Ok((lower.clone(), "kubernetes/server/bin/kubelet".into()))
        );
        assert_eq!(
            parse_sum_line(&format!("{h} *kubelet")),
            Ok((lower.clone(), "kubelet".into()))
        );
        assert_eq!(
            parse_sum_line(&format!("SHA256 (kubelet) = {h}")),
            Ok((lower.clone(), "kubelet".into()))
        );
        assert_eq!(
            parse_sum_line(&format!("\\{h}  a\\\\b")),
            Ok((lower, "a\\b".into()))
        );
        assert!(parse_sum_line(&format!("{h} kubelet")).is_err());
        assert!(parse_sum_line("abc  kubelet").is_err());
        assert!(parse_sum_line(&format!("{}  k", "g".repeat(64))).is_err());
    }
}
