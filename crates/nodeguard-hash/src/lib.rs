//! Streaming digests of executables and files, each distinct file read once.
//!
//! nodeguard hashes the executable of every process on a node. Many processes — often in
//! many containers — run the same binary, so digests are cached under a [`FileIdentity`]:
//! the identity of the file that really holds the bytes. The caller chooses the key (for an
//! overlay container it is the image layer's file, which is shared by every container of the
//! image, whereas `/proc/PID/exe` of each container sits on its own overlay `st_dev`).
//!
//! Files are opened so that nothing hostile can stall or fool the reader: never a FIFO,
//! socket or device (`O_NONBLOCK` on open, then `fstat` must say regular file), never more
//! than a size cap, always with a fixed buffer.
//!
//! ```no_run
//! use nodeguard_hash::{Algorithms, DigestCache, HashJob, hash_all};
//! let cache = DigestCache::new(4096);
//! let jobs = vec![HashJob { key: None, path: "/proc/self/exe".into() }];
//! let results = hash_all(&cache, &jobs, Algorithms::SHA256, 1 << 30, 2);
//! println!("{}", results[0].as_ref().unwrap().sha256_hex().unwrap());
//! ```

mod stream;

pub use nodeguard_model::FileIdentity;
use sha2::{Digest, Sha256, Sha512};
use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
pub use stream::DigestStream;

/// Read buffer per hashing thread. Large enough to amortize syscalls, small enough to be
/// irrelevant to the agent's memory.
const BUFFER_SIZE: usize = 256 * 1024;

/// Why a file was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot open: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: not a regular file ({kind}), not read")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: {size} bytes is over the {limit}-byte hashing limit, not read")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: read failed: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: file changed size while being hashed")]
    Changed { path: PathBuf },
}

impl Error {
    /// The file (or its process) is gone: an expected race, not a fault.
    pub fn is_vanished(&self) -> bool {
        match self {
            Error::Open { source, .. } | Error::Read { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ESRCH)
            ),
            _ => false,
        }
    }

    /// A short label for error counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Open { .. } => "open",
            Error::NotRegular { .. } => "not_regular",
            Error::TooLarge { .. } => "too_large",
            Error::Read { .. } => "read",
            Error::Changed { .. } => "changed",
        }
    }
}

/// Which digests to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algorithms {
    pub sha256: bool,
    pub sha512: bool,
}

impl Algorithms {
    pub const SHA256: Algorithms = Algorithms {
        sha256: true,
        sha512: false,
    };
    pub const SHA512: Algorithms = Algorithms {
        sha256: false,
        sha512: true,
    };
    pub const BOTH: Algorithms = Algorithms {
        sha256: true,
        sha512: true,
    };
}

/// The digests of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: Option<[u8; 32]>,
    pub sha512: Option<Box<[u8; 64]>>,
    /// Bytes read to compute them.
    pub bytes: u64,
}

impl Digests {
    pub fn sha256_hex(&self) -> Option<String> {
        self.sha256.as_ref().map(|d| hex(d))
    }

    pub fn sha512_hex(&self) -> Option<String> {
        self.sha512.as_ref().map(|d| hex(&d[..]))
    }

    /// Every digest `algs` asks for is here.
    pub fn covers(&self, algs: Algorithms) -> bool {
        (!algs.sha256 || self.sha256.is_some()) && (!algs.sha512 || self.sha512.is_some())
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The identity of an opened (or `stat`ed) file, for keying the [`DigestCache`].
pub fn identity_of(meta: &Metadata) -> FileIdentity {
    FileIdentity::new(
        meta.dev(),
        meta.ino(),
        meta.size(),
        (meta.mtime(), meta.mtime_nsec()),
        (meta.ctime(), meta.ctime_nsec()),
    )
}

fn file_kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "regular file"
    }
}

/// Opens `path` for hashing: read-only, non-blocking (a FIFO cannot hang us), no controlling
/// tty, close-on-exec; then `fstat` must say regular file of at most `max_size` bytes.
///
/// `path` may be a `/proc/PID/exe` magic link, which the kernel resolves to the process's own
/// executable whatever mount namespace it lives in.
pub fn open_regular(path: &Path, max_size: u64) -> Result<(File, Metadata), Error> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(Error::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(&meta),
        });
    }
    if meta.size() > max_size {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: meta.size(),
            limit: max_size,
        });
    }
    Ok((file, meta))
}

/// SHA-256 of `parts` fed one after the other, for keys of in-memory data (the API's
/// decision cache keys a token by it); files go through [`digest_file`].
pub fn sha256_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Streams `reader` through the requested digests with `buf`, reading at most `limit` bytes
/// (one more byte than `limit` is an error: the file grew past its cap while we read it).
pub fn digest_reader<R: Read>(
    reader: &mut R,
    algs: Algorithms,
    buf: &mut [u8],
    limit: u64,
) -> io::Result<Digests> {
    let mut sha256 = algs.sha256.then(Sha256::new);
    let mut sha512 = algs.sha512.then(Sha512::new);
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("grew past the {limit}-byte limit while being read"),
            ));
        }
        let chunk = &buf[..n];
        if let Some(h) = sha256.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha512.as_mut() {
            h.update(chunk);
        }
    }
    Ok(Digests {
        sha256: sha256.map(|h| {
            let mut out = [0u8; 32];
            out.copy_from_slice(&h.finalize());
            out
        }),
        sha512: sha512.map(|h| {
            let mut out = Box::new([0u8; 64]);
            out.copy_from_slice(&h.finalize());
            out
        }),
        bytes: total,
    })
}

/// Opens and hashes one file with a caller-provided buffer.
pub fn digest_path(
    path: &Path,
    algs: Algorithms,
    max_size: u64,
    buf: &mut [u8],
) -> Result<Digests, Error> {
    let (mut file, meta) = open_regular(path, max_size)?;
    advise_sequential(&file);
    let digests = digest_reader(&mut file, algs, buf, max_size).map_err(|source| {
        if source.kind() == io::ErrorKind::FileTooLarge {
            Error::Changed {
                path: path.to_path_buf(),
            }
        } else {
            Error::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    if digests.bytes != meta.size() {
        return Err(Error::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(digests)
}

/// Opens and hashes one file.
pub fn digest_file(path: &Path, algs: Algorithms, max_size: u64) -> Result<Digests, Error> {
    let mut buf = vec![0u8; BUFFER_SIZE];
    digest_path(path, algs, max_size, &mut buf)
}

fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads the fd and its arguments; a failure is harmless.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// Digests by file identity, shared across scans. Bounded: when full, entries not used in
/// the current or previous scan are dropped first.
pub struct DigestCache {
    entries: Mutex<HashMap<FileIdentity, (Digests, u64)>>,
    capacity: usize,
    generation: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_hashed: AtomicU64,
    files_hashed: AtomicU64,
}

/// Counters of a [`DigestCache`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes_hashed: u64,
    pub files_hashed: u64,
    pub entries: usize,
}

impl DigestCache {
    pub fn new(capacity: usize) -> DigestCache {
        DigestCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bytes_hashed: AtomicU64::new(0),
            files_hashed: AtomicU64::new(0),
        }
    }

    /// Forgets every digest.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Marks the start of a scan, for eviction by age.
    pub fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_hashed: self.bytes_hashed.load(Ordering::Relaxed),
            files_hashed: self.files_hashed.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileIdentity, (Digests, u64)>> {
        // A panic while holding the lock leaves a consistent map (inserts are atomic).
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached digests of `key` if they include every digest `algs` asks for. For
    /// callers that open files their own way (the filesystem walk); [`hash_all`] uses it too.
    pub fn lookup(&self, key: &FileIdentity, algs: Algorithms) -> Option<Digests> {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut map = self.lock();
        let entry = map.get_mut(key)?;
        if !entry.0.covers(algs) {
            return None;
        }
        entry.1 = generation;
        Some(entry.0.clone())
    }

    /// Keeps `digests` of `key`, evicting by age when full.
    pub fn store(&self, key: FileIdentity, digests: Digests) {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, used)| *used + 1 >= generation);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (digests, generation));
    }
}

/// One file to hash: where to read it and, if known, the identity of the bytes behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashJob {
    pub key: Option<FileIdentity>,
    pub path: PathBuf,
}

/// Hashes every job, reading each distinct [`FileIdentity`] at most once (from the cache, or from
/// the first of its paths that can still be read — a process may exit meanwhile), on up to
/// `threads` threads. Results are in job order.
pub fn hash_all(
    cache: &DigestCache,
    jobs: &[HashJob],
    algs: Algorithms,
    max_size: u64,
    threads: usize,
) -> Vec<Result<Digests, Error>> {
    let keys: Vec<Option<FileIdentity>> = jobs.iter().map(|j| j.key).collect();
    hash_keyed(
        cache,
        &keys,
        |i| jobs[i].path.clone(),
        algs,
        max_size,
        threads,
    )
}

/// [`hash_all`] for files named by their index: `path_of(i)` is asked only for the files
/// actually read, so a pass whose identities are all cached builds no path.
pub fn hash_keyed(
    cache: &DigestCache,
    keys: &[Option<FileIdentity>],
    path_of: impl Fn(usize) -> PathBuf + Sync,
    algs: Algorithms,
    max_size: u64,
    threads: usize,
) -> Vec<Result<Digests, Error>> {
    let path_of = &path_of;
    // Group jobs that share a key; jobs without a key each form their own group.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<FileIdentity, usize> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        match *key {
            Some(key) => {
                let g = *by_key.entry(key).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i);
            }
            None => groups.push(vec![i]),
        }
    }

    let mut results: Vec<Option<Result<Digests, Error>>> = (0..keys.len()).map(|_| None).collect();
    let mut pending: Vec<usize> = Vec::new();
    for (g, members) in groups.iter().enumerate() {
        let key = keys[members[0]];
        match key.and_then(|k| cache.lookup(&k, algs)) {
            Some(digests) => {
                cache
                    .hits
                    .fetch_add(members.len() as u64, Ordering::Relaxed);
                for &i in members {
                    results[i] = Some(Ok(digests.clone()));
                }
            }
            None => pending.push(g),
        }
    }

    let next = AtomicUsize::new(0);
    type GroupOutcome = (usize, Result<Digests, Vec<(usize, Error)>>);
    let done: Mutex<Vec<GroupOutcome>> = Mutex::new(Vec::new());
    // Nothing to read (every identity cached, the steady state): no threads, no buffers.
    let workers = if pending.is_empty() {
        0
    } else {
        threads.clamp(1, pending.len())
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut buf = vec![0u8; BUFFER_SIZE];
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&g) = pending.get(n) else { break };
                    let outcome =
                        hash_group(cache, keys, path_of, &groups[g], algs, max_size, &mut buf);
                    done.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((g, outcome));
                }
            });
        }
    });

    for (g, outcome) in done.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let members = &groups[g];
        match outcome {
            Ok(digests) => {
                // One member was read; the others are served by that read.
                cache.misses.fetch_add(1, Ordering::Relaxed);
                cache
                    .hits
                    .fetch_add(members.len() as u64 - 1, Ordering::Relaxed);
                for &i in members {
                    results[i] = Some(Ok(digests.clone()));
                }
            }
            Err(failures) => {
                for (i, err) in failures {
                    results[i] = Some(Err(err));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::Changed {
                    path: PathBuf::new(),
                })
            })
        })
        .collect()
}

/// Hashes a group's bytes from the first member path that works. A vanished process only
/// means the next member is tried; any other failure is the file's own (same key, same
/// file), so it is reported for every member without reading again.
fn hash_group(
    cache: &DigestCache,
    keys: &[Option<FileIdentity>],
    path_of: &(impl Fn(usize) -> PathBuf + Sync),
    members: &[usize],
    algs: Algorithms,
    max_size: u64,
    buf: &mut [u8],
) -> Result<Digests, Vec<(usize, Error)>> {
    let mut failures = Vec::new();
    for (n, &i) in members.iter().enumerate() {
        match digest_path(&path_of(i), algs, max_size, buf) {
            Ok(digests) => {
                cache
                    .bytes_hashed
                    .fetch_add(digests.bytes, Ordering::Relaxed);
                cache.files_hashed.fetch_add(1, Ordering::Relaxed);
                if let Some(key) = keys[i] {
                    cache.store(key, digests.clone());
                }
                return Ok(digests);
            }
            Err(e) if e.is_vanished() => failures.push((i, e)),
            Err(e) => {
                let message = e.to_string();
                failures.push((i, e));
                for &j in &members[n + 1..] {
                    failures.push((
                        j,
                        Error::Read {
                            path: path_of(j),
                            source: io::Error::other(message.clone()),
                        },
                    ));
                }
                return Err(failures);
            }
        }
    }
    Err(failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    #[test]
    fn sha256_of_parts_is_the_digest_of_their_concatenation() {
        // FIPS 180-2's "abc" example.
        assert_eq!(
            hex(&sha256_of(&[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_of(&[b"a", b"", b"bc"]), sha256_of(&[b"abc"]));
        assert_ne!(
            sha256_of(&[b"ab", b"\0", b"c"]),
            sha256_of(&[b"a", b"\0", b"bc"])
        );
    }

    fn write_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        let mut f = File::create(&path).unwrap();
        f.write_all(content).unwrap();
        path
    }

    fn tool_digest(tool: &str, path: &Path) -> Option<String> {
        let out = Command::new(tool).arg(path).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        text.split_whitespace().next().map(str::to_string)
    }

    #[test]
    fn known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write_file(dir.path(), "empty", b"");
        let abc = write_file(dir.path(), "abc", b"abc");
        let d = digest_file(&empty, Algorithms::BOTH, 1 << 20).unwrap();
        assert_eq!(
            d.sha256_hex().unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = digest_file(&abc, Algorithms::BOTH, 1 << 20).unwrap();
        assert_eq!(
            d.sha256_hex().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(d.sha512_hex().unwrap().starts_with("ddaf35a193617aba"));
        assert_eq!(d.bytes, 3);
    }

    #[test]
    fn equals_sha256sum_and_sha512sum_of_our_own_exe() {
        // The same thing a responder would run: sha256sum /proc/PID/exe.
        let exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
        let d = digest_file(&exe, Algorithms::BOTH, u64::MAX).unwrap();
        let Some(expected256) = tool_digest("sha256sum", &exe) else {
            panic!("sha256sum (coreutils) is needed for this test");
        };
        assert_eq!(d.sha256_hex().unwrap(), expected256);
        assert_eq!(
            d.sha512_hex().unwrap(),
            tool_digest("sha512sum", &exe).unwrap()
        );
    }

    #[test]
    fn refuses_fifo_without_hanging_and_devices() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: plain mkfifo on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = digest_file(&fifo, Algorithms::SHA256, 1 << 20).unwrap_err();
        assert!(
            matches!(err, Error::NotRegular { kind: "fifo", .. }),
            "{err}"
        );
        let err = digest_file(Path::new("/dev/zero"), Algorithms::SHA256, 1 << 20).unwrap_err();
        assert!(matches!(err, Error::NotRegular { .. }), "{err}");
        let err = digest_file(dir.path(), Algorithms::SHA256, 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn size_cap_refuses_before_reading_a_huge_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let f = File::create(&path).unwrap();
        f.set_len(1 << 40).unwrap(); // 1 TiB of holes
        let err = digest_file(&path, Algorithms::SHA256, 64 << 20).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { size, .. } if size == 1 << 40),
            "{err}"
        );
    }

    #[test]
    fn vanished_files_are_recognised() {
        let err = digest_file(
            Path::new("/proc/999999999/exe"),
            Algorithms::SHA256,
            1 << 20,
        )
        .unwrap_err();
        assert!(err.is_vanished(), "{err}");
    }

    #[test]
    fn shared_key_is_read_once_and_cached_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_file(dir.path(), "a", &vec![7u8; 100_000]);
        let meta = std::fs::metadata(&a).unwrap();
        let key = identity_of(&meta);
        // Ten "processes" running the same file, one of which has already gone.
        let mut jobs: Vec<HashJob> = (0..9)
            .map(|_| HashJob {
                key: Some(key),
                path: a.clone(),
            })
            .collect();
        jobs.insert(
            0,
            HashJob {
                key: Some(key),
                path: dir.path().join("gone"),
            },
        );
        let cache = DigestCache::new(16);
        let results = hash_all(&cache, &jobs, Algorithms::SHA256, 1 << 20, 2);
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let s = cache.stats();
        assert_eq!(s.files_hashed, 1);
        assert_eq!(s.bytes_hashed, 100_000);
        assert_eq!((s.misses, s.hits), (1, 9));

        cache.next_generation();
        let again = hash_all(&cache, &jobs[1..3], Algorithms::SHA256, 1 << 20, 2);
        assert!(again.iter().all(|r| r.is_ok()));
        assert_eq!(
            cache.stats().files_hashed,
            1,
            "second scan must not read again"
        );
        // Asking for SHA-512 too is a miss: the cache has only SHA-256 for it.
        let both = hash_all(&cache, &jobs[1..2], Algorithms::BOTH, 1 << 20, 1);
        assert!(both[0].as_ref().unwrap().sha512.is_some());
        assert_eq!(cache.stats().files_hashed, 2);
    }

    #[test]
    fn rewritten_file_gets_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_file(dir.path(), "a", b"one");
        let k1 = identity_of(&std::fs::metadata(&a).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&a, b"two!").unwrap();
        let k2 = identity_of(&std::fs::metadata(&a).unwrap());
        assert_eq!(k1.ino, k2.ino);
        assert_ne!(k1, k2);
    }

    #[test]
    fn cache_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DigestCache::new(4);
        for i in 0..20 {
            cache.next_generation();
            let p = write_file(dir.path(), &format!("f{i}"), format!("{i}").as_bytes());
            let key = identity_of(&std::fs::metadata(&p).unwrap());
            let r = hash_all(
                &cache,
                &[HashJob {
                    key: Some(key),
                    path: p,
                }],
                Algorithms::SHA256,
                1 << 20,
                1,
            );
            assert!(r[0].is_ok());
            assert!(cache.stats().entries <= 4);
        }
    }

    #[test]
    fn one_unreadable_file_does_not_spoil_others() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_file(dir.path(), "good", b"fine");
        let jobs = vec![
            HashJob {
                key: None,
                path: PathBuf::from("/dev/null"),
            },
            HashJob {
                key: None,
                path: good,
            },
        ];
        let cache = DigestCache::new(8);
        let r = hash_all(&cache, &jobs, Algorithms::SHA256, 1 << 20, 2);
        assert!(r[0].is_err());
        assert!(r[1].is_ok());
    }
}
