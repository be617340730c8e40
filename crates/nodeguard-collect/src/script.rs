//! Scripts run through an interpreter, and files a container can run from outside its image.
//!
//! A dropped script run as `sh /tmp/x.sh`, `python3 /tmp/x.py` or `./x.sh` (a shebang: the
//! kernel runs the interpreter with the script's path as an argument) shows the image's
//! interpreter as the executable. For the processes whose executable is a known interpreter
//! ([`script_argument`]), the one argument that names the script file is taken, resolved
//! inside the container's root by the kernel (`openat2` with `RESOLVE_IN_ROOT`: a symlink can
//! never lead out of the container, and nothing but an `O_PATH` handle is opened, so a FIFO
//! cannot block), and looked for in the writable layer (without following symlinks, as
//! executables are) and on the container's writable mounts. Bounded: one path per
//! interpreter process, and the result is kept per (container, path, file) between passes.

use crate::layer::{identity_of, lookup_beneath, Entry, FileIdentity, HostRoot};
use crate::mountinfo::{ContainerRoot, WritableMount};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The longest script path considered (a longer one is not resolved).
pub const SCRIPT_PATH_MAX: usize = 4096;

/// Which language family an interpreter speaks, for its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Shell,
    Python,
    Perl,
    Ruby,
    Node,
    Php,
}

/// The interpreter family of an executable file name (`sh`, `bash`, `python3.11`, …).
fn family(name: &[u8]) -> Option<Family> {
    let name = std::str::from_utf8(name).ok()?;
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match base {
        "sh" | "bash" | "dash" | "ash" | "ksh" | "mksh" | "zsh" | "rbash" => Family::Shell,
        "python" | "pypy" => Family::Python,
        "perl" => Family::Perl,
        "ruby" => Family::Ruby,
        "node" | "nodejs" => Family::Node,
        "php" | "php-cli" => Family::Php,
        _ => return None,
    })
}

fn file_name(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

/// The argument naming the script an interpreter process runs, from its executable's path
/// and its `argv`: `None` when the executable is no known interpreter, or when it runs inline
/// code (`sh -c`, `python3 -c`, `perl -e`, `node -e`, `php -r`), a module (`python3 -m`) or
/// standard input. Interpreter options are skipped, with the argument of those that take one.
/// Busybox counts as the shell its `argv[0]` names.
pub fn script_argument<'a>(exe: &[u8], argv: &[&'a [u8]]) -> Option<&'a [u8]> {
    let mut fam = family(file_name(exe));
    if fam.is_none() && file_name(exe).starts_with(b"busybox") {
        fam = argv
            .first()
            .and_then(|a0| family(file_name(a0)))
            .filter(|f| *f == Family::Shell);
    }
    let fam = fam?;
    let mut words = argv.iter().skip(1);
    while let Some(word) = words.next() {
        let w: &[u8] = word;
        if w == b"--" {
            return words
                .next()
                .copied()
                .filter(|w| !w.is_empty() && *w != b"-");
        }
        if w == b"-" {
            return None;
        }
        let is_option = w.starts_with(b"-") || (fam == Family::Shell && w.starts_with(b"+"));
        if !is_option {
            return (!w.is_empty()).then_some(*word);
        }
        match option(fam, w) {
            Opt::Inline => return None,
            Opt::TakesValue => {
                words.next();
            }
            Opt::Script => return words.next().copied(),
            Opt::Plain => {}
        }
    }
    None
}

enum Opt {
    /// Code given inline, a module, or standard input: no script file.
    Inline,
    /// The next word is this option's value.
    TakesValue,
    /// The next word is the script (`php -f FILE`).
    Script,
    Plain,
}

fn option(fam: Family, w: &[u8]) -> Opt {
    let long = w.starts_with(b"--");
    match fam {
        Family::Shell => {
            if long {
                return match w {
                    b"--rcfile" | b"--init-file" => Opt::TakesValue,
                    _ => Opt::Plain,
                };
            }
            let letters = &w[1..];
            if letters.contains(&b'c') || letters.contains(&b's') {
                Opt::Inline
            } else if letters.contains(&b'o') || letters.contains(&b'O') {
                Opt::TakesValue
            } else {
                Opt::Plain
            }
        }
        Family::Python => {
            if long {
                return match w {
                    b"--check-hash-based-pycs" => Opt::TakesValue,
                    _ => Opt::Plain,
                };
            }
            // Single-letter options may be grouped (`-uB`); one taking a value ends the group.
            for (i, b) in w[1..].iter().enumerate() {
                match b {
                    b'c' | b'm' => return Opt::Inline,
                    b'W' | b'X' => {
                        return if i + 2 == w.len() {
                            Opt::TakesValue
                        } else {
                            Opt::Plain
                        }
                    }
                    _ => {}
                }
            }
            Opt::Plain
        }
        Family::Perl => match w.get(1) {
            Some(b'e' | b'E') => Opt::Inline,
            // -I, -M, -m, -x take their value glued; `-I dir` apart is rare.
            _ => Opt::Plain,
        },
        Family::Ruby => match w {
            b"-e" => Opt::Inline,
            b"-I" | b"-r" | b"-C" | b"-E" | b"--encoding" => Opt::TakesValue,
            _ if w.starts_with(b"-e") => Opt::Inline,
            _ => Opt::Plain,
        },
        Family::Node => match w {
            b"-e" | b"--eval" | b"-p" | b"--print" | b"-i" | b"--interactive" => Opt::Inline,
            b"-r"
            | b"--require"
            | b"--import"
            | b"--loader"
            | b"--experimental-loader"
            | b"--env-file"
            | b"--inspect-port"
            | b"--title"
            | b"-C"
            | b"--conditions" => Opt::TakesValue,
            _ => Opt::Plain,
        },
        Family::Php => match w {
            b"-r" | b"-a" | b"-R" | b"-B" | b"-E" | b"-S" | b"-t" => Opt::Inline,
            b"-f" => Opt::Script,
            b"-c" | b"-d" | b"-z" => Opt::TakesValue,
            _ => Opt::Plain,
        },
    }
}

/// `arg` made absolute against `cwd` (both as the container sees them); `None` for an empty
/// or overlong result.
pub fn absolute(arg: &[u8], cwd: Option<&[u8]>) -> Option<Vec<u8>> {
    let path = if arg.starts_with(b"/") {
        arg.to_vec()
    } else {
        let mut p = cwd?.to_vec();
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(arg);
        p
    };
    (path.len() <= SCRIPT_PATH_MAX && !path.contains(&0)).then_some(path)
}

/// `path` without `.` components, `..` taken lexically, duplicate slashes folded.
fn lexical(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn resolve_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` (absolute, as the process `pid` sees it) inside that process's root with
/// `flags`: symlinks resolve as the container would, never above its root. The file must be
/// regular.
fn open_in_root(
    proc_root: &Path,
    pid: i32,
    path: &[u8],
    flags: OFlag,
) -> io::Result<(OwnedFd, FileStat)> {
    let root_dir = proc_root.join(pid.to_string()).join("root");
    let root = nix::fcntl::open(
        &root_dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut rel: &[u8] = path;
    while let Some(rest) = rel.strip_prefix(b"/") {
        rel = rest;
    }
    if rel.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let fd = openat2(root.as_fd(), OsStr::from_bytes(rel), resolve_how(flags))?;
    let st = fstat(&fd)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((fd, st))
}

/// Opens a script for reading (to hash it), resolved as [`locate_script`] resolved it, never
/// blocking on a FIFO; `expected` must still be the file found then.
pub fn open_script(
    proc_root: &Path,
    pid: i32,
    path: &[u8],
    expected: &FileIdentity,
) -> io::Result<File> {
    let (fd, st) = open_in_root(
        proc_root,
        pid,
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
    )?;
    let now = identity_of(&st);
    if now.dev != expected.dev || now.ino != expected.ino || !now.same_file_as(expected) {
        return Err(io::Error::other("changed since it was located"));
    }
    Ok(File::from(fd))
}

/// Where a script found outside the image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundScript {
    /// As the container sees it.
    pub path: Vec<u8>,
    /// `None`: the writable layer; else the writable mount it is on.
    pub mount: Option<WritableMount>,
    /// The file as the process sees it (through the overlay or the mount).
    pub identity: FileIdentity,
}

/// Looks for the script `path` (absolute, in the process's view) of process `pid` in the
/// container's writable layer and writable mounts. `Ok(None)`: it is in the image, or is not
/// found where the layers or mounts say (nothing to report).
pub fn locate_script(
    proc_root: &Path,
    pid: i32,
    path: &[u8],
    root: &ContainerRoot,
    host: Option<&HostRoot>,
) -> io::Result<Option<FoundScript>> {
    let (fd, st) = open_in_root(proc_root, pid, path, OFlag::O_PATH)?;
    let identity = identity_of(&st);
    // The path as given, then the one the kernel reached (symlinks on the way resolved):
    // a path is taken only when the layer or mount holds the very file opened.
    let mut candidates = vec![lexical(path)];
    if let Ok(reached) = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        fd.as_raw_fd()
    })) {
        let reached = reached.as_os_str().as_bytes().to_vec();
        if reached.starts_with(b"/") && !candidates.contains(&reached) {
            candidates.push(reached);
        }
    }
    for candidate in candidates {
        if let Some(mount) = root.writable_mount_of(&candidate, identity.dev) {
            return Ok(Some(FoundScript {
                path: candidate,
                mount: Some(mount.clone()),
                identity,
            }));
        }
        let (Some(host), Some(upper)) = (
            host,
            root.rootfs.overlay().and_then(|l| l.upper_dir.as_deref()),
        ) else {
            continue;
        };
        let upper = host.open_dir(upper.as_os_str().as_bytes())?;
        if let Entry::File(st) = lookup_beneath(&upper, &candidate)? {
            if identity_of(&st).same_file_as(&identity) {
                return Ok(Some(FoundScript {
                    path: candidate,
                    mount: None,
                    identity,
                }));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg<'a>(exe: &str, argv: &[&'a str]) -> Option<&'a str> {
        let words: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        script_argument(exe.as_bytes(), &words).map(|w| std::str::from_utf8(w).unwrap())
    }

    #[test]
    fn the_script_argument_of_each_interpreter() {
        assert_eq!(arg("/bin/sh", &["sh", "/tmp/x.sh"]), Some("/tmp/x.sh"));
        assert_eq!(
            arg("/usr/bin/bash", &["bash", "-e", "-x", "run.sh", "a"]),
            Some("run.sh")
        );
        assert_eq!(
            arg("/bin/dash", &["/bin/sh", "-e", "./x.sh"]),
            Some("./x.sh")
        );
        assert_eq!(
            arg("/bin/bash", &["bash", "-o", "pipefail", "x.sh"]),
            Some("x.sh")
        );
        assert_eq!(
            arg("/bin/bash", &["bash", "--norc", "--", "x.sh"]),
            Some("x.sh")
        );
        assert_eq!(arg("/bin/busybox", &["sh", "/tmp/x.sh"]), Some("/tmp/x.sh"));
        assert_eq!(
            arg(
                "/usr/bin/python3.11",
                &["python3", "-u", "-W", "ignore", "/app/x.py"]
            ),
            Some("/app/x.py")
        );
        assert_eq!(arg("/usr/bin/perl", &["perl", "-w", "x.pl"]), Some("x.pl"));
        assert_eq!(
            arg("/usr/bin/ruby", &["ruby", "-I", "lib", "x.rb"]),
            Some("x.rb")
        );
        assert_eq!(
            arg("/usr/bin/node", &["node", "--require", "m", "srv.js"]),
            Some("srv.js")
        );
        assert_eq!(
            arg("/usr/bin/php", &["php", "-d", "a=b", "-f", "x.php"]),
            Some("x.php")
        );
    }

    #[test]
    fn inline_code_stdin_and_other_programs_name_no_script() {
        assert_eq!(arg("/bin/sh", &["sh", "-c", "echo hi"]), None);
        assert_eq!(arg("/bin/sh", &["sh", "-ec", "echo hi"]), None);
        assert_eq!(arg("/bin/sh", &["sh"]), None);
        assert_eq!(arg("/bin/sh", &["sh", "-s", "x"]), None);
        assert_eq!(arg("/bin/sh", &["sh", "-"]), None);
        assert_eq!(
            arg("/usr/bin/python3", &["python3", "-c", "print(1)"]),
            None
        );
        assert_eq!(
            arg("/usr/bin/python3", &["python3", "-m", "http.server"]),
            None
        );
        assert_eq!(arg("/usr/bin/perl", &["perl", "-e", "print 1"]), None);
        assert_eq!(arg("/usr/bin/node", &["node", "-e", "1"]), None);
        assert_eq!(arg("/usr/bin/php", &["php", "-r", "echo 1;"]), None);
        // Not an interpreter, or busybox as something other than a shell.
        assert_eq!(arg("/usr/bin/tail", &["tail", "/tmp/x.sh"]), None);
        assert_eq!(arg("/bin/busybox", &["sleep", "/tmp/x"]), None);
        assert_eq!(arg("/bin/shred", &["shred", "/tmp/x"]), None);
    }

    #[test]
    fn relative_paths_join_the_working_directory() {
        assert_eq!(absolute(b"x.sh", Some(b"/tmp")).unwrap(), b"/tmp/x.sh");
        assert_eq!(absolute(b"./x.sh", Some(b"/")).unwrap(), b"/./x.sh");
        assert_eq!(lexical(b"/./x.sh"), b"/x.sh");
        assert_eq!(lexical(b"/a/../../b//c/."), b"/b/c");
        assert_eq!(absolute(b"x.sh", None), None);
        assert_eq!(absolute(&vec![b'a'; SCRIPT_PATH_MAX + 1], Some(b"/")), None);
    }
}
