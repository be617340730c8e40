//! What the walk does with one regular file: its mode bits, its `security.capability`, and
//! (for a setuid/setgid/capability file) its digest. Shared by the full walk (`walk.rs`) and
//! the incremental pass over writable layers (`incremental.rs`), which differ only in where a
//! found file goes ([`crate::walk::FileSink`]).

use crate::caps::decode_file_capability;
use crate::sys::{self, Stat};
use crate::walk::{
    identity, push_component, Candidate, FileSink, WalkConfig, Worker, HASH_BUFFER_SIZE,
};
use nodeguard_hash::Digests;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

pub(crate) const CAPABILITY_XATTR: &CStr = c"security.capability";
pub(crate) const METACOPY_XATTR: &CStr = c"trusted.overlay.metacopy";

impl Worker {
    /// Counts an error of `kind` and warns, and tells the sink (a lasting property of a file).
    fn note(&mut self, sink: &dyn FileSink, kind: &'static str, warning: String) {
        self.stats.count_error(kind);
        sink.note(kind, &warning);
        self.warn(warning);
    }

    /// Looks at one regular file: mode bits, capability xattr, and a hash when it matters.
    pub(crate) fn examine(
        &mut self,
        cfg: &WalkConfig<'_>,
        sink: &dyn FileSink,
        dir: BorrowedFd<'_>,
        name: &CStr,
        st: Option<Stat>,
        dir_path: &[u8],
    ) {
        let st = match st {
            Some(st) => st,
            None => match sys::stat_at(dir, name) {
                Ok(st) => st,
                Err(e) => {
                    self.count_io("walk_io", &e);
                    return;
                }
            },
        };
        if !st.is_reg() {
            return;
        }
        let special = st.mode & (libc::S_ISUID | libc::S_ISGID) != 0;
        let rel = || {
            let mut rel = dir_path.to_vec();
            push_component(&mut rel, name.to_bytes());
            rel
        };
        let caps = match sys::get_xattr_at(dir, name, CAPABILITY_XATTR, &mut self.xattr_buf) {
            Ok(None) => None,
            Ok(Some(n)) => match decode_file_capability(&self.xattr_buf[..n.min(64)]) {
                Ok(caps) => Some(caps.to_string()),
                Err(e) => {
                    self.invalid_caps(sink, &rel(), &e.to_string());
                    None
                }
            },
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                self.invalid_caps(sink, &rel(), "value larger than 64 bytes");
                None
            }
            Err(e) => {
                self.count_io("xattr_io", &e);
                None
            }
        };
        if !special && caps.is_none() {
            return;
        }
        // Reserve a place before the (unlocked) hashing, so parallel walkers of one root
        // never keep more than the bound.
        if !sink.reserve() {
            return;
        }
        let rel = rel();
        let mut metacopy = false;
        if sink.upper() {
            if let Ok(Some(_)) = sys::get_xattr_at(dir, name, METACOPY_XATTR, &mut self.xattr_buf) {
                metacopy = true;
                self.note(
                    sink,
                    "metacopy_unhashed",
                    format!(
                    "{}: /{} is a metadata-only copy-up (overlay metacopy); its data lives in a \
                     lower layer and is not hashed",
                    sink.label(),
                    nodeguard_model::escape_path(&rel)
                ),
                );
            }
        }
        let digests = if metacopy {
            None
        } else {
            self.hash(cfg, sink, dir, name, &st, &rel)
        };
        let (sha256, sha512) = match digests {
            Some(d) => (d.sha256_hex(), d.sha512_hex()),
            None => (None, None),
        };
        sink.push(Candidate {
            rel,
            stat: st,
            caps,
            sha256,
            sha512,
        });
    }

    fn invalid_caps(&mut self, sink: &dyn FileSink, rel: &[u8], why: &str) {
        self.note(
            sink,
            "xattr_invalid",
            format!(
                "{}: /{} has an unreadable security.capability ({why})",
                sink.label(),
                nodeguard_model::escape_path(rel)
            ),
        );
    }

    fn hash(
        &mut self,
        cfg: &WalkConfig<'_>,
        sink: &dyn FileSink,
        dir: BorrowedFd<'_>,
        name: &CStr,
        st: &Stat,
        rel: &[u8],
    ) -> Option<Digests> {
        let max = cfg.budget.max_hash_bytes;
        if st.size > max {
            self.stats.count_error("hash_too_large");
            self.warn(format!(
                "{}: /{} is {} bytes, over the {} byte hash cap: not hashed",
                sink.label(),
                nodeguard_model::escape_path(rel),
                st.size,
                max
            ));
            return None;
        }
        let key = identity(st);
        if let Some(hit) = cfg.digests.lookup(&key, cfg.algorithms) {
            self.stats.hash_cache_hits += 1;
            return Some(hit);
        }
        let fd = match sys::open_file_at(dir, name) {
            Ok(fd) => fd,
            Err(e) => {
                self.count_io("hash_io", &e);
                return None;
            }
        };
        match sys::fstat(fd.as_fd()) {
            Ok(now) if now.is_reg() && now.dev == st.dev && now.ino == st.ino => {}
            Ok(_) => {
                self.stats.count_error("walk_changed");
                return None;
            }
            Err(e) => {
                self.count_io("hash_io", &e);
                return None;
            }
        }
        // Read from the fd opened above (no path is resolved again), at most `max` bytes.
        let mut file = std::fs::File::from(fd);
        if self.hash_buf.is_empty() {
            self.hash_buf = vec![0u8; HASH_BUFFER_SIZE];
        }
        match nodeguard_hash::digest_reader(&mut file, cfg.algorithms, &mut self.hash_buf, max) {
            Ok(digests) => {
                self.stats.files_hashed += 1;
                self.stats.bytes_hashed += digests.bytes;
                cfg.digests.store(key, digests.clone());
                Some(digests)
            }
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                // Grew past the cap while being read.
                self.stats.count_error("hash_too_large");
                None
            }
            Err(e) => {
                self.count_io("hash_io", &e);
                None
            }
        }
    }
}
