//! Files under the state directory (`--state-dir`, a hostPath the agent writes as root):
//! read and written so that nothing planted in that directory can redirect the agent.
//!
//! - **Never through a symlink.** A file is opened with `O_NOFOLLOW`; the temporary file of
//!   a write is created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a symlink planted at its name
//!   (even a dangling one) makes the create fail instead of writing into the link's target.
//!   Such a leftover is unlinked (the link itself, never what it points at), logged, and the
//!   create tried once more; planted again in between, the write fails. The final name is
//!   replaced by `rename`, which replaces a symlink there rather than following it.
//! - **Regular files only, size-capped.** A read opens without blocking (a FIFO cannot hang
//!   it), asks `fstat` for a regular file of at most the cap before reading a byte, and reads
//!   at most one byte past the cap, so a 512 MiB sparse file or one that grows while read
//!   costs nothing.
//! - **Atomic replace.** Temporary file in the same directory, `fsync`, `rename`, then the
//!   directory synced: a reader (or a restart after a crash) sees the old file or the new one.
//!
//! The state directory itself is the operator's configuration (`--state-dir`, a hostPath),
//! and its path is followed as given, symlinked components included (`/var/lib` is a symlink
//! on some hosts). Whoever can replace that path can already choose where the agent keeps
//! state; the guard here is against what is planted *inside* it. The directory is created
//! `0700` when missing.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Reads `dir/name`: `Ok(None)` when it does not exist; an error saying why when it is a
/// symlink, not a regular file, or larger than `max` bytes.
pub(crate) fn read(dir: &Path, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symlink, and a state file is never read through one",
            ))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is a {}, not a regular file",
                kind(&meta.file_type(), meta.is_dir())
            ),
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is {} bytes, more than the {max} a state file may have",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it grew past the {max} bytes a state file may have while being read"),
        ));
    }
    Ok(Some(bytes))
}

/// Replaces `dir/name` with `bytes` atomically, never writing through a symlink.
pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(name);
    let tmp = temp_path(dir, name);
    let mut file = match create_new(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A leftover of a crash, or something planted: unlink the name (a symlink is
            // removed itself, its target untouched) and create once more, still exclusively.
            let what = std::fs::symlink_metadata(&tmp)
                .map(|m| kind(&m.file_type(), m.is_dir()))
                .unwrap_or("file");
            if what != "regular file" {
                tracing::warn!(
                    path = %tmp.display(),
                    found = what,
                    "removed a {what} planted at the state file's temporary name; nothing was written through it"
                );
            }
            std::fs::remove_file(&tmp)?;
            create_new(&tmp)?
        }
        other => other?,
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            std::fs::rename(&tmp, &path)
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable; not every filesystem allows syncing a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `dir/.NAME.tmp`: the one temporary name of `name` (one writer per state directory).
pub(crate) fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.tmp"))
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn kind(ft: &std::fs::FileType, is_dir: bool) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if is_dir {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        symlink(&victim, temp_path(&state, "f.json")).unwrap();
        // And a dangling one, which a plain create would have made a file through.
        let dangling = dir.path().join("made-by-the-agent");
        let state2 = dir.path().join("state2");
        std::fs::create_dir(&state2).unwrap();
        symlink(&dangling, temp_path(&state2, "f.json")).unwrap();

        write(&state, "f.json", b"{}").unwrap();
        write(&state2, "f.json", b"{}").unwrap();

        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            !dangling.exists(),
            "a file was created through a dangling link"
        );
        assert_eq!(read(&state, "f.json", 16).unwrap().unwrap(), b"{}");
        assert!(!temp_path(&state, "f.json").exists());
        let meta = std::fs::symlink_metadata(state.join("f.json")).unwrap();
        assert!(meta.is_file());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_symlink_at_the_final_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        symlink(&victim, dir.path().join("f.json")).unwrap();
        let err = read(dir.path(), "f.json", 1024).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        write(dir.path(), "f.json", b"[]").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(read(dir.path(), "f.json", 16).unwrap().unwrap(), b"[]");
    }

    #[test]
    fn huge_sparse_fifo_and_directory_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let huge = File::create(dir.path().join("huge")).unwrap();
        huge.set_len(512 << 20).unwrap();
        let err = read(dir.path(), "huge", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("536870912 bytes"), "{err}");

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read(dir.path(), "fifo", 1024).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");

        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = read(dir.path(), "sub", 1024).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");

        assert!(read(dir.path(), "absent", 1024).unwrap().is_none());
    }

    #[test]
    fn a_missing_state_directory_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        write(&state, "f.json", b"1").unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }
}
