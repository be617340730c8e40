//! Which overlay layer an executable comes from, and the identity of the real file.
//!
//! Layer directories are host paths reachable under the host root. Inside a layer every path
//! component is opened with `O_PATH | O_NOFOLLOW` (directories also `O_DIRECTORY`), so a
//! symlink planted in a layer can never lead the agent out of it: a symlink anywhere on the
//! way means "not in this layer". Nothing is opened for reading.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use nodeguard_model::Layer;
use nodeguard_model::OverlayLayers;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use nodeguard_model::FileIdentity;

/// The identity `stat` gives a file.
pub fn identity_of(st: &FileStat) -> FileIdentity {
    FileIdentity::new(
        st.st_dev,
        st.st_ino,
        u64::try_from(st.st_size).unwrap_or(0),
        (st.st_mtime, st.st_mtime_nsec),
        (st.st_ctime, st.st_ctime_nsec),
    )
}

fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

/// The host's root directory, through which layer paths are resolved.
#[derive(Debug)]
pub struct HostRoot {
    path: PathBuf,
    fd: OwnedFd,
}

impl HostRoot {
    pub fn open(path: &Path) -> io::Result<HostRoot> {
        let fd = nix::fcntl::open(path, dir_flags(), Mode::empty())?;
        Ok(HostRoot {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Opens a host directory (an absolute host path such as an overlay `upperdir`).
    /// Symlinks on the way are resolved as the host would, but never above the host root
    /// (`RESOLVE_IN_ROOT`; plain `openat` on kernels without `openat2`).
    pub fn open_dir(&self, host_path: &[u8]) -> io::Result<OwnedFd> {
        let mut rel: &[u8] = host_path;
        while let Some(rest) = rel.strip_prefix(b"/") {
            rel = rest;
        }
        let rel = if rel.is_empty() { &b"."[..] } else { rel };
        let rel = OsStr::from_bytes(rel);
        let how = OpenHow::new()
            .flags(dir_flags())
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(self.fd.as_fd(), rel, how) {
            Ok(fd) => Ok(fd),
            // No openat2 (kernel < 5.6), or a seccomp profile that refuses it.
            Err(Errno::ENOSYS | Errno::EPERM) => {
                Ok(openat(self.fd.as_fd(), rel, dir_flags(), Mode::empty())?)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path as reached from the agent, for messages.
    pub fn display(&self, host_path: &[u8]) -> PathBuf {
        let rel = OsStr::from_bytes(host_path);
        self.path
            .join(Path::new(rel).strip_prefix("/").unwrap_or(Path::new(rel)))
    }
}

/// What a layer holds at a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A regular file.
    File(FileStat),
    /// Nothing usable here: absent, or a symlink on the way or at the end.
    Absent,
    /// Something that hides lower layers but is not a regular file (a whiteout, a directory).
    Blocked,
}

/// Looks up `path` (absolute, as seen inside the container) in the layer directory `dir`
/// without following any symlink and without opening anything but `O_PATH` handles.
pub fn lookup_beneath(dir: &OwnedFd, path: &[u8]) -> io::Result<Entry> {
    let comps: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if comps.is_empty() || comps.iter().any(|c| *c == b".." || *c == b".") {
        return Ok(Entry::Absent);
    }
    let mut current: Option<OwnedFd> = None;
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let flags = if last {
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        } else {
            dir_flags() | OFlag::O_NOFOLLOW
        };
        let base = match &current {
            Some(fd) => fd.as_fd(),
            None => dir.as_fd(),
        };
        match openat(base, OsStr::from_bytes(comp), flags, Mode::empty()) {
            Ok(fd) => current = Some(fd),
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(Entry::Absent),
            Err(e) => return Err(e.into()),
        }
    }
    let Some(fd) = current else {
        return Ok(Entry::Absent);
    };
    let st = fstat(&fd)?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Ok(if kind == SFlag::S_IFREG {
        Entry::File(st)
    } else if kind == SFlag::S_IFLNK {
        Entry::Absent
    } else {
        Entry::Blocked
    })
}

/// Where an executable was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub layer: Layer,
    /// The layer file's identity (`Layer::Image`/`Upper`), else `None`.
    pub identity: Option<FileIdentity>,
}

/// Finds `exe` (the in-container path) in the container's layers: the upper layer first, then
/// the lower layers top first. The file found must look like the running executable
/// (`running`: stat of `/proc/PID/exe`) — an exe on a volume, or one replaced in a way the
/// layers do not show, is `Layer::Unknown`.
pub fn locate(
    host: &HostRoot,
    layers: &OverlayLayers,
    exe: &[u8],
    running: &FileIdentity,
) -> Result<Located, crate::Error> {
    let unknown = Located {
        layer: Layer::Unknown,
        identity: None,
    };
    let candidates = layers
        .upper_dir
        .iter()
        .map(|u| (Layer::Upper, u))
        .chain(layers.lower_dirs.iter().map(|l| (Layer::Image, l)));
    for (layer, dir) in candidates {
        let dir = dir.as_os_str().as_bytes();
        let layer_error = |source: io::Error| crate::Error::Layer {
            path: host.display(dir),
            source,
        };
        let fd = host.open_dir(dir).map_err(layer_error)?;
        match lookup_beneath(&fd, exe).map_err(layer_error)? {
            Entry::Absent => continue,
            Entry::Blocked => return Ok(unknown),
            Entry::File(st) => {
                let identity = identity_of(&st);
                return Ok(if identity.same_file_as(running) {
                    Located {
                        layer,
                        identity: Some(identity),
                    }
                } else {
                    unknown
                });
            }
        }
    }
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn stat_of(path: &Path) -> FileIdentity {
        identity_of(&nix::sys::stat::stat(path).unwrap())
    }

    /// host/{upper,l1,l2} with files; returns (tempdir, host root, layers).
    fn layered() -> (tempfile::TempDir, HostRoot, OverlayLayers) {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        for d in [
            "upper/usr/bin",
            "l1/usr/bin",
            "l2/usr/bin",
            "l2/bin",
            "outside",
        ] {
            fs::create_dir_all(host.join(d)).unwrap();
        }
        fs::write(host.join("l1/usr/bin/app"), b"app v2").unwrap();
        fs::write(host.join("l2/usr/bin/app"), b"app version 1").unwrap();
        fs::write(host.join("l2/usr/bin/base"), b"base").unwrap();
        fs::write(host.join("upper/usr/bin/dropped"), b"dropped").unwrap();
        fs::write(host.join("outside/secret"), b"secret").unwrap();
        let layers = OverlayLayers {
            lower_dirs: vec!["/l1".into(), "/l2".into()],
            upper_dir: Some("/upper".into()),
        };
        let root = HostRoot::open(&host).unwrap();
        (tmp, root, layers)
    }

    #[test]
    fn finds_upper_then_top_lower_first() {
        let (tmp, host, layers) = layered();
        let h = tmp.path().join("host");
        let dropped = stat_of(&h.join("upper/usr/bin/dropped"));
        let got = locate(&host, &layers, b"/usr/bin/dropped", &dropped).unwrap();
        assert_eq!(
            got,
            Located {
                layer: Layer::Upper,
                identity: Some(dropped)
            }
        );

        let app = stat_of(&h.join("l1/usr/bin/app"));
        let got = locate(&host, &layers, b"/usr/bin/app", &app).unwrap();
        assert_eq!(
            got,
            Located {
                layer: Layer::Image,
                identity: Some(app)
            }
        );
        // The identity is the layer file's: the same for every container using the layer.
        assert_eq!(got.identity.map(|i| i.ino), Some(app.ino));

        let base = stat_of(&h.join("l2/usr/bin/base"));
        let got = locate(&host, &layers, b"/usr/bin/base", &base).unwrap();
        assert_eq!(got.layer, Layer::Image);
        assert_eq!(got.identity, Some(base));
    }

    #[test]
    fn a_file_that_does_not_match_the_running_exe_is_unknown() {
        let (tmp, host, layers) = layered();
        // The running binary is really l2's (e.g. from a volume): l1's app must not be taken.
        let other = stat_of(&tmp.path().join("host/l2/usr/bin/app"));
        let got = locate(&host, &layers, b"/usr/bin/app", &other).unwrap();
        assert_eq!(
            got,
            Located {
                layer: Layer::Unknown,
                identity: None
            }
        );
        let missing = locate(&host, &layers, b"/usr/bin/nowhere", &other).unwrap();
        assert_eq!(missing.layer, Layer::Unknown);
    }

    #[test]
    fn symlinks_in_layers_are_never_followed() {
        let (tmp, host, layers) = layered();
        let h = tmp.path().join("host");
        let secret = stat_of(&h.join("outside/secret"));
        // upper/etc -> /outside (absolute) and upper/usr/bin/secret -> ../../../outside/secret
        symlink("/outside", h.join("upper/etc")).unwrap();
        symlink("../../../outside/secret", h.join("upper/usr/bin/secret")).unwrap();
        // l1/bin -> the host's /bin directory.
        symlink("/bin", h.join("l1/bin")).unwrap();
        assert_eq!(
            lookup_beneath(&host.open_dir(b"/upper").unwrap(), b"/etc/secret").unwrap(),
            Entry::Absent
        );
        assert_eq!(
            lookup_beneath(&host.open_dir(b"/upper").unwrap(), b"/usr/bin/secret").unwrap(),
            Entry::Absent
        );
        for exe in [
            &b"/etc/secret"[..],
            b"/usr/bin/secret",
            b"/usr/bin/../../outside/secret",
        ] {
            let got = locate(&host, &layers, exe, &secret).unwrap();
            assert_eq!(
                got.layer,
                Layer::Unknown,
                "{}",
                String::from_utf8_lossy(exe)
            );
        }
        // A symlinked directory in l1 does not hide l2's real file.
        fs::write(h.join("l2/bin/tool"), b"tool").unwrap();
        let tool = stat_of(&h.join("l2/bin/tool"));
        let got = locate(&host, &layers, b"/bin/tool", &tool).unwrap();
        assert_eq!(
            got,
            Located {
                layer: Layer::Image,
                identity: Some(tool)
            }
        );
    }

    #[test]
    fn layer_paths_cannot_climb_out_of_the_host_root() {
        let (tmp, host, _) = layered();
        let h = tmp.path().join("host");
        // A host symlink to an absolute path resolves inside the host root.
        symlink("/l2", h.join("lowerlink")).unwrap();
        let fd = host.open_dir(b"/lowerlink").unwrap();
        assert!(matches!(
            lookup_beneath(&fd, b"/usr/bin/base").unwrap(),
            Entry::File(_)
        ));
        // RESOLVE_IN_ROOT clamps `..` at the host root: the fake host has no /etc.
        assert!(host.open_dir(b"/../../../../etc").is_err());
    }

    #[test]
    fn whiteout_like_entries_block_lower_layers() {
        let (tmp, host, layers) = layered();
        let h = tmp.path().join("host");
        // A directory where the file would be hides the lower layers.
        fs::create_dir_all(h.join("upper/usr/bin/app")).unwrap();
        let app = stat_of(&h.join("l1/usr/bin/app"));
        let got = locate(&host, &layers, b"/usr/bin/app", &app).unwrap();
        assert_eq!(got.layer, Layer::Unknown);
    }

    #[test]
    fn unreachable_layer_dir_is_an_error_naming_it() {
        let (_tmp, host, _) = layered();
        let layers = OverlayLayers {
            lower_dirs: vec!["/no/such/layer".into()],
            upper_dir: None,
        };
        let running = FileIdentity {
            dev: 0,
            ino: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        let err = locate(&host, &layers, b"/usr/bin/app", &running).unwrap_err();
        assert!(err.to_string().contains("no/such/layer"), "{err}");
    }
}
