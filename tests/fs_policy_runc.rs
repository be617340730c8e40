//! Filesystem checks and the policy against real runc containers, hostile ones included.
//!
//! What a user notices, checked against ground truth taken without nodeguard (`sha256sum`,
//! `getcap`, `find`, `stat` through the host's view of the container):
//!
//! - a policy that denies or pins the digest of the binary a container runs turns into the
//!   critical findings it promises, and a broken policy is refused whole, naming the line;
//! - setuid and file-capability files are reported per layer (writable layer high, image
//!   medium) with their digest, and the allow-lists only ever excuse image files;
//! - a hostile container — symlinks to the host's `/etc/shadow` and setuid binaries, FIFOs,
//!   sockets and devices with the setuid bit, a 64 GiB sparse file, 1,000 nested directories
//!   deeper than `PATH_MAX`, 100,000 files in one directory, names with newlines, terminal
//!   escapes and invalid UTF-8, bind-mount loops — neither hangs nor fools the scan, and
//!   never spoils what the scan says about the other containers (a control container with a
//!   known setuid file runs beside every hostile one).
//!
//! Each hostile case is scanned twice: through the overlay's layer directories (how the
//! agent reads containers whose layers it can reach) and through the merged root
//! `/proc/PID/root` (how it reads the rest; forced here by pointing `--host-root` nowhere).
//!
//! Not covered: a file deleted in the middle of the walk (it cannot be timed reliably from
//! outside the scan; `crates/nodeguard-fscan/tests/hostile.rs` races one on purpose).
//!
//! Needs root, runc, busybox-static and libcap2-bin; skips loudly without them, fails under
//! `CI`. Run: `cargo test -p nodeguard --test fs_policy_runc`.

mod support;

use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::cmd::{self, Output};
use support::container::{Container, ContainerSpec};
use support::fakeproc::FakeProc;
use support::image::Image;
use support::oracle;
use support::scan::Scan;

/// A scan that takes longer than this hangs on something: a failure.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// A `--host-root` that does not exist: the scan cannot reach layer directories and reads each
/// container through its merged root, `/proc/PID/root`.
const NO_HOST_ROOT: &str = "/nonexistent/nodeguard-fs-policy-runc";

/// How the scan reads container filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The overlay's lower and upper directories (the host root is reachable).
    Layers,
    /// The merged root through a process of the container.
    Merged,
}

impl Mode {
    const BOTH: [Mode; 2] = [Mode::Layers, Mode::Merged];

    /// The `layer` a file written after start is reported with.
    fn written_layer(self) -> &'static str {
        match self {
            Mode::Layers => "upper",
            Mode::Merged => "unknown",
        }
    }

    /// The severity of a setuid file written after start.
    fn written_severity(self) -> &'static str {
        match self {
            Mode::Layers => "high",
            Mode::Merged => "medium",
        }
    }
}

/// Runs the binary under test, killed (a test failure) after [`SCAN_TIMEOUT`].
fn nodeguard(args: &[&str]) -> Output {
    let bin = support::nodeguard_bin();
    let mut command = Command::new(bin);
    command.args(args);
    cmd::run_command(command, cmd::display(bin, args), SCAN_TIMEOUT)
}

/// `nodeguard scan --output FORMAT` over a proc root holding only `containers`' processes (so
/// nothing else on the machine is scanned), in `mode`, with `extra` flags.
fn run_scan(containers: &[&Container], mode: Mode, format: &str, extra: &[&str]) -> Output {
    let pids: Vec<i32> = containers.iter().flat_map(|c| c.pids()).collect();
    let proc_root = FakeProc::with_pids(&pids);
    let mut args = vec![
        "scan",
        "--output",
        format,
        "--proc-root",
        proc_root.path_str(),
    ];
    if mode == Mode::Merged {
        args.extend_from_slice(&["--host-root", NO_HOST_ROOT]);
    }
    args.extend_from_slice(extra);
    let output = nodeguard(&args);
    assert!(
        matches!(output.code, Some(0) | Some(3)),
        "nodeguard scan failed ({mode:?})\n{output}"
    );
    output
}

/// [`run_scan`] with JSON output, parsed.
fn scan(containers: &[&Container], mode: Mode, extra: &[&str]) -> Scan {
    let output = run_scan(containers, mode, "json", extra);
    let report: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("nodeguard scan did not print a JSON report: {e}\n{output}"));
    Scan { output, report }
}

/// `files[]` entries of container `c`.
fn files_of<'a>(scan: &'a Scan, c: &Container) -> Vec<&'a Value> {
    scan.files()
        .iter()
        .filter(|f| f["container_id"] == c.id.as_str())
        .collect()
}

/// The one `files[]` entry of `c` at `path`; panics showing what the scan saw.
fn file_at<'a>(scan: &'a Scan, c: &Container, path: &str) -> &'a Value {
    let hits: Vec<&Value> = files_of(scan, c)
        .into_iter()
        .filter(|f| f["path"] == path)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "want one files[] entry at {path:?}, got {}: {:?}\n{}",
        hits.len(),
        paths_of(scan, c),
        scan.seen(c)
    );
    hits[0]
}

/// Sorted paths of `c`'s files, for messages and comparisons.
fn paths_of(scan: &Scan, c: &Container) -> Vec<String> {
    let mut paths: Vec<String> = files_of(scan, c)
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    paths.sort();
    paths
}

/// The one finding of `kind` about `c` whose path is `path`.
fn finding_at<'a>(scan: &'a Scan, c: &Container, kind: &str, path: &str) -> &'a Value {
    let hits: Vec<&Value> = scan
        .findings_of(&c.id, kind, None)
        .into_iter()
        .filter(|f| f["path"] == path)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "want one {kind} finding for {path:?}; the container has {:?}\n{}",
        scan.finding_kinds(c),
        scan.seen(c)
    );
    hits[0]
}

fn no_finding_at(scan: &Scan, c: &Container, kind: &str, path: &str) {
    let hits = scan
        .findings_of(&c.id, kind, None)
        .into_iter()
        .filter(|f| f["path"] == path)
        .count();
    assert_eq!(
        hits,
        0,
        "no {kind} finding expected for {path}; the container has {:?}\n{}",
        scan.finding_kinds(c),
        scan.seen(c)
    );
}

/// The scan's warnings as one string, for `contains` checks.
fn warnings(scan: &Scan) -> String {
    scan.report["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes `contents` at `path` (creating parents) with `mode`.
fn plant(path: &Path, contents: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// The host's `getcap -n` text for one file (`cap_net_raw=ep`, `=ep cap_sys_admin-ep`,
/// `cap_chown=eip [rootid=1000]`).
fn getcap(path: &Path) -> String {
    let out = cmd::run_ok("getcap", &[OsStr::new("-n"), path.as_os_str()]);
    let prefix = format!("{} ", path.display());
    out.stdout
        .trim_end()
        .strip_prefix(&prefix)
        .map(str::to_string)
        .unwrap_or_else(|| panic!("getcap printed no capabilities\n{out}"))
}

/// `sha256sum < PATH`: the digest of a file whose name `sha256sum` would print escaped.
fn sha256sum_stdin(path: &Path) -> String {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let out = Command::new("sha256sum")
        .stdin(file)
        .output()
        .expect("run sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text.split_whitespace().next().unwrap_or_default();
    assert!(
        out.status.success() && digest.len() == 64,
        "sha256sum < {}: {text}",
        path.display()
    );
    digest.to_string()
}

/// Paths below `root` that `find -xdev -type f -perm /6000` reports, relative to `root`
/// with a leading `/`, as raw bytes.
fn find_setuid(root: &Path) -> Vec<Vec<u8>> {
    let mut command = Command::new("find");
    command
        .arg(root)
        .args(["-xdev", "-type", "f", "-perm", "/6000", "-print0"]);
    let out = command.output().expect("run find");
    assert!(out.status.success(), "find {} failed", root.display());
    let prefix = root.as_os_str().as_bytes();
    let mut paths: Vec<Vec<u8>> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| p.strip_prefix(prefix).unwrap_or(p).to_vec())
        .collect();
    paths.sort();
    paths
}

/// The inverse of the report's path escaping, written from the README's contract (`\n`,
/// `\t`, `\r`, `\\`, `\xNN`) rather than taken from the crate, so a bug there cannot hide.
fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let step = match bytes.get(i + 1) {
            Some(b'n') => {
                out.push(b'\n');
                2
            }
            Some(b't') => {
                out.push(b'\t');
                2
            }
            Some(b'r') => {
                out.push(b'\r');
                2
            }
            Some(b'\\') => {
                out.push(b'\\');
                2
            }
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).unwrap_or_else(|| {
                    panic!("truncated \\x escape at byte {i} of {text:?}");
                });
                out.push(
                    u8::from_str_radix(hex, 16)
                        .unwrap_or_else(|_| panic!("bad \\x escape at byte {i} of {text:?}")),
                );
                4
            }
            other => panic!("unknown escape {other:?} at byte {i} of {text:?}"),
        };
        i += step;
    }
    out
}

/// Writes a policy file in its own temporary directory.
struct PolicyFile {
    dir: tempfile::TempDir,
}

impl PolicyFile {
    fn new(text: &str) -> PolicyFile {
        let dir = tempfile::tempdir().expect("policy tempdir");
        fs::write(dir.path().join("policy.yaml"), text).unwrap();
        PolicyFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn path_str(&self) -> String {
        self.path().to_str().unwrap().to_string()
    }
}

/// A bind mount made by the test on the host, unmounted on drop (panics included). Declare
/// it after the container whose directories it uses, so it is dropped first.
struct BindMount {
    target: PathBuf,
}

impl BindMount {
    fn new(source: &Path, target: &Path) -> BindMount {
        cmd::run_ok(
            "mount",
            &[OsStr::new("--bind"), source.as_os_str(), target.as_os_str()],
        );
        BindMount {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        for _ in 0..50 {
            if cmd::run("umount", &[&self.target]).success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let lazy = cmd::run("umount", &[OsStr::new("-l"), self.target.as_os_str()]);
        if !lazy.success() {
            eprintln!("cannot unmount {}\n{lazy}", self.target.display());
        }
    }
}

/// A well-behaved container that runs beside each hostile one: one setuid file written after
/// start, nothing else unusual. Whatever the hostile container does, the scan must say
/// exactly this about it.
struct Control {
    c: Container,
    sha256: String,
    size: u64,
}

const CONTROL_FILE: &str = "/usr/bin/control-suid";

/// Finding kinds the control container has under the default policy: it runs as root with the
/// runtime's default capabilities, no limits, no seccomp filter, `no_new_privs` off, and one
/// setuid file.
const CONTROL_KINDS: &[&str] = &[
    "missing_cpu_limit",
    "missing_memory_limit",
    "missing_pids_limit",
    "no_new_privs_disabled",
    "runs_as_root",
    "seccomp_disabled",
    "setuid_file",
];

impl Control {
    fn start() -> Control {
        let c = ContainerSpec::new(Image::busybox()).start();
        let path = c.rootfs.join(CONTROL_FILE.trim_start_matches('/'));
        let contents = format!("#!/bin/sh\necho control {}\n", c.id);
        plant(&path, contents.as_bytes(), 0o4755);
        assert!(
            c.upper_dir
                .join(CONTROL_FILE.trim_start_matches('/'))
                .is_file(),
            "a file written into the merged root lands in the upper layer"
        );
        let sha256 = oracle::sha256sum(&path);
        Control {
            c,
            sha256,
            size: contents.len() as u64,
        }
    }

    /// What the scan says about the control container is exactly right.
    fn assert_intact(&self, scan: &Scan, mode: Mode, beside: &str) {
        let c = &self.c;
        let seen = || {
            format!(
                "control container beside {beside} ({mode:?})\n{}",
                scan.seen(c)
            )
        };
        let entry = scan.container(c);
        assert_eq!(
            support::scan::sorted_pids(&entry["pids"]),
            c.pids(),
            "{}",
            seen()
        );
        let init = scan.process(c, c.init_pid);
        assert_eq!(init["exe"], "/bin/sleep", "{}", seen());
        assert_eq!(
            init["sha256"],
            Image::busybox().sha256("/bin/busybox").as_str(),
            "{}",
            seen()
        );
        assert_eq!(paths_of(scan, c), [CONTROL_FILE], "{}", seen());
        let f = file_at(scan, c, CONTROL_FILE);
        assert_eq!(f["setuid"], true, "{}", seen());
        assert_eq!(f["setgid"], false, "{}", seen());
        assert_eq!(f["capabilities"], Value::Null, "{}", seen());
        assert_eq!(f["mode"], 0o4755, "{}", seen());
        assert_eq!(f["uid"], 0, "{}", seen());
        assert_eq!(f["size"], self.size, "{}", seen());
        assert_eq!(f["sha256"], self.sha256.as_str(), "{}", seen());
        assert_eq!(f["layer"], mode.written_layer(), "{}", seen());
        let mut kinds: Vec<String> = scan
            .findings_for(&c.id)
            .iter()
            .filter_map(|f| f["kind"].as_str().map(str::to_string))
            .collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, CONTROL_KINDS, "{}", seen());
        let suid = finding_at(scan, c, "setuid_file", CONTROL_FILE);
        assert_eq!(suid["severity"], mode.written_severity(), "{}", seen());
        assert_eq!(suid["sha256"], self.sha256.as_str(), "{}", seen());
        assert_eq!(
            scan.findings_of(&c.id, "setuid_file", None).len(),
            1,
            "{}",
            seen()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------

/// Denied and trusted digests of the busybox binary a container really runs.
#[test]
fn policy_digests_deny_and_pin_the_running_binary() {
    require_containers!();
    let image = Image::busybox();
    // Runs busybox under its own name; `plain` runs the same file as /bin/sleep (a hard link).
    let named = ContainerSpec::new(image)
        .args(&["/bin/busybox", "sleep", "3600"])
        .start();
    named.wait_for_exact_exe(named.init_pid, "/bin/busybox");
    let plain = ContainerSpec::new(image).start();
    let digest = oracle::sha256sum(Path::new(&format!("/proc/{}/exe", named.init_pid)));
    assert_eq!(digest, oracle::sha256sum(&image.path("/bin/busybox")));
    let both = [&named, &plain];
    // The same bytes, setuid, in `named`'s writable layer: a denied digest also finds files.
    plant(
        &named.rootfs.join("usr/bin/suid-shell"),
        &fs::read(image.path("/bin/busybox")).unwrap(),
        0o4755,
    );

    let baseline = scan(&both, Mode::Layers, &["--no-fs"]);
    assert_eq!(
        baseline.process(&named, named.init_pid)["exe"],
        "/bin/busybox",
        "{}",
        baseline.seen(&named)
    );
    for c in both {
        assert_eq!(
            baseline.process(c, c.init_pid)["sha256"],
            digest.as_str(),
            "{}",
            baseline.seen(c)
        );
        for kind in ["denied_binary", "unexpected_binary_hash"] {
            assert!(
                !baseline.has_finding(c, kind, None),
                "{kind} without a policy\n{}",
                baseline.seen(c)
            );
        }
    }

    // Denied: every process running that digest, whatever its file is called, and every
    // setuid file with it.
    let reason = "incident 4711: busybox is not allowed on this node";
    let denied = PolicyFile::new(&format!(
        "version: 1\ndenied_binaries:\n  - sha256: {digest}\n    reason: \"{reason}\"\n"
    ));
    let check = nodeguard(&["policy", "check", &denied.path_str()]);
    assert!(check.success(), "{check}");
    let scan_denied = scan(
        &both,
        Mode::Layers,
        &["--config", &denied.path_str(), "--fail-on", "critical"],
    );
    assert_eq!(
        scan_denied.exit_code(),
        Some(3),
        "{}",
        scan_denied.summary()
    );
    let subjects = |c: &Container| {
        let mut s: Vec<String> = scan_denied
            .findings_of(&c.id, "denied_binary", None)
            .iter()
            .filter_map(|f| f["subject"].as_str().map(str::to_string))
            .collect();
        s.sort();
        s
    };
    assert_eq!(
        subjects(&named),
        ["/bin/busybox", "/usr/bin/suid-shell"],
        "{}",
        scan_denied.seen(&named)
    );
    assert_eq!(
        subjects(&plain),
        ["/bin/sleep"],
        "{}",
        scan_denied.seen(&plain)
    );
    let file = finding_at(&scan_denied, &named, "denied_binary", "/usr/bin/suid-shell");
    let seen = || format!("{file}\n{}", scan_denied.seen(&named));
    assert_eq!(file["severity"], "critical", "{}", seen());
    assert_eq!(file["sha256"], digest.as_str(), "{}", seen());
    assert!(
        file["message"]
            .as_str()
            .unwrap_or_default()
            .contains(reason),
        "{}",
        seen()
    );
    for (c, exe) in [(&named, "/bin/busybox"), (&plain, "/bin/sleep")] {
        let f = finding_at(&scan_denied, c, "denied_binary", exe);
        let seen = || format!("{f}\n{}", scan_denied.seen(c));
        assert_eq!(f["severity"], "critical", "{}", seen());
        assert_eq!(f["pid"], c.init_pid, "{}", seen());
        assert_eq!(f["path"], exe, "{}", seen());
        assert_eq!(f["sha256"], digest.as_str(), "{}", seen());
        let message = f["message"].as_str().unwrap_or_default();
        for part in [reason, &c.id[..12], exe, &c.init_pid.to_string()] {
            assert!(message.contains(part), "message lacks {part:?}\n{}", seen());
        }
    }

    // Trusted with a wrong digest: the process at that path is unexpected; the same file run
    // as /bin/sleep is not covered by the entry.
    let mut wrong = digest.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(63.., last);
    let pinned_wrong = PolicyFile::new(&format!(
        "trusted_binaries:\n  - path: /bin/busybox\n    sha256:\n      - {wrong}\n"
    ));
    let scan_wrong = scan(
        &both,
        Mode::Layers,
        &["--no-fs", "--config", &pinned_wrong.path_str()],
    );
    let found = scan_wrong.findings_of(&named.id, "unexpected_binary_hash", None);
    assert_eq!(found.len(), 1, "{}", scan_wrong.seen(&named));
    let f = found[0];
    assert_eq!(f["severity"], "critical", "{}", scan_wrong.seen(&named));
    assert_eq!(f["subject"], "/bin/busybox", "{}", scan_wrong.seen(&named));
    assert_eq!(f["pid"], named.init_pid, "{}", scan_wrong.seen(&named));
    assert_eq!(f["sha256"], digest.as_str(), "{}", scan_wrong.seen(&named));
    assert!(
        f["message"].as_str().unwrap_or_default().contains(&digest),
        "the message shows the digest that ran\n{}",
        scan_wrong.seen(&named)
    );
    assert!(
        !scan_wrong.has_finding(&plain, "unexpected_binary_hash", None),
        "/bin/sleep is not covered by a /bin/busybox entry\n{}",
        scan_wrong.seen(&plain)
    );

    // Trusted with the right digest, written as docs/policy.md allows (prefix, upper case):
    // nothing to report.
    let pinned_right = PolicyFile::new(&format!(
        "trusted_binaries:\n  - path: /bin/busybox\n    sha256:\n      - {wrong}\n      - \"sha256:{}\"\n",
        digest.to_uppercase()
    ));
    let check = nodeguard(&["policy", "check", &pinned_right.path_str()]);
    assert!(check.success(), "{check}");
    let scan_right = scan(
        &both,
        Mode::Layers,
        &["--no-fs", "--config", &pinned_right.path_str()],
    );
    for c in both {
        for kind in ["unexpected_binary_hash", "denied_binary"] {
            assert!(
                !scan_right.has_finding(c, kind, None),
                "{kind} with the right digest pinned\n{}",
                scan_right.seen(c)
            );
        }
        assert_eq!(
            scan_right.process(c, c.init_pid)["sha256"],
            digest.as_str(),
            "{}",
            scan_right.seen(c)
        );
    }
}

/// A policy with one mistake is refused whole, by `policy check` and by `scan`, naming the
/// file, line, column and field; the scan prints no report at all.
#[test]
fn broken_policy_is_refused_whole() {
    // No container needed: the policy is read before anything is scanned.
    let good_digest = "a".repeat(64);
    let cases = [
        (
            // A digest one hex digit short, on line 8 (the value starts in column 9).
            format!(
                "version: 1\ndenied_binaries:\n  - sha256: {good_digest}\n    reason: banned\ntrusted_binaries:\n  - path: /bin/busybox\n    sha256:\n      - \"{}\"\n",
                &good_digest[..63]
            ),
            ":8:9: trusted_binaries[0].sha256[0]: ",
            "64 hex digits",
        ),
        (
            // A misspelt key on line 4: the error points at the key.
            format!(
                "trusted_binaries:\n  - path: /bin/busybox\n    sha256: [{good_digest}]\n    sha265: [{good_digest}]\n"
            ),
            ":4:5: trusted_binaries[0].sha265: ",
            "unknown field",
        ),
    ];
    for (text, position, why) in &cases {
        let policy = PolicyFile::new(text);
        let path = policy.path_str();
        let want = format!("{path}{position}");
        let check = nodeguard(&["policy", "check", &path]);
        assert_eq!(check.code, Some(1), "policy check must fail\n{check}");
        assert!(
            check.stderr.contains(&want) && check.stderr.contains(why),
            "policy check must say {want:?} … {why:?}\n{check}"
        );
        assert!(check.stdout.trim().is_empty(), "{check}");
        for format in ["json", "table"] {
            let out = nodeguard(&["scan", "--output", format, "--no-fs", "--config", &path]);
            assert_eq!(
                out.code,
                Some(1),
                "a scan with a broken policy must refuse to run\n{out}"
            );
            assert!(
                out.stderr.contains(&want) && out.stderr.contains(why),
                "the scan's error must say {want:?} … {why:?}\n{out}"
            );
            assert!(
                out.stdout.trim().is_empty(),
                "no report from half a policy\n{out}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// setuid and file capabilities by layer
// ---------------------------------------------------------------------------------------

/// Written after start: high, layer "upper". In the image: medium, layer "image", and
/// excused by the allow-lists, which never excuse the writable layer.
#[test]
fn setuid_and_capability_files_by_layer_and_allow_lists() {
    require_containers!();
    let image = Image::busybox_owned("fs-layers");
    let busybox = fs::read(image.path("/bin/busybox")).unwrap();
    image.add_file("/usr/bin/image-suid", &busybox, 0o4755);
    image.add_file("/usr/bin/image-cap", b"\x7fELF not really\n", 0o755);
    cmd::run_ok(
        "setcap",
        &[
            OsStr::new("cap_net_bind_service+ep"),
            image.path("/usr/bin/image-cap").as_os_str(),
        ],
    );
    // Image setuid files the container deletes: a whiteout, and an opaque directory.
    image.add_file("/usr/bin/image-gone", &busybox, 0o4755);
    image.add_file("/usr/lib/suid-dir/helper", &busybox, 0o4755);
    let c = ContainerSpec::new(&image).start();
    // The container's own root does what an attacker does: copy a shell and make it setuid;
    // and what a cleanup does: delete setuid files of the image.
    let out = c.runc(&[
        "exec",
        &c.id,
        "/bin/sh",
        "-c",
        "cp /bin/busybox /usr/bin/upper-suid && chmod 4755 /usr/bin/upper-suid \
         && rm /usr/bin/image-gone && rm -r /usr/lib/suid-dir && mkdir /usr/lib/suid-dir",
    ]);
    assert!(out.success(), "{out}");
    let whiteout = fs::symlink_metadata(c.upper_dir.join("usr/bin/image-gone")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "rm of an image file leaves a whiteout in the upper layer"
    );
    // A raw-socket tool with a file capability, set from the host (busybox has no setcap).
    let upper_cap = c.rootfs.join("usr/bin/upper-cap");
    plant(&upper_cap, b"#!/bin/sh\nping \"$@\"\n", 0o755);
    cmd::run_ok(
        "setcap",
        &[OsStr::new("cap_net_raw+ep"), upper_cap.as_os_str()],
    );

    // Ground truth from the host's view of the container.
    for (path, layer) in [
        ("usr/bin/upper-suid", &c.upper_dir),
        ("usr/bin/upper-cap", &c.upper_dir),
        ("usr/bin/image-suid", &image.dir),
        ("usr/bin/image-cap", &image.dir),
    ] {
        assert!(layer.join(path).is_file(), "{path} in {}", layer.display());
    }
    let merged = |p: &str| c.rootfs.join(p.trim_start_matches('/'));
    let sha = |p: &str| oracle::sha256sum(&merged(p));
    assert_eq!(
        fs::metadata(merged("/usr/bin/upper-suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        find_setuid(&c.rootfs),
        [
            b"/usr/bin/image-suid".to_vec(),
            b"/usr/bin/upper-suid".to_vec()
        ],
        "find's view of the merged root: the deleted image files are gone"
    );
    let upper_caps = getcap(&merged("/usr/bin/upper-cap"));
    let image_caps = getcap(&merged("/usr/bin/image-cap"));
    assert_eq!(upper_caps, "cap_net_raw=ep");
    assert_eq!(image_caps, "cap_net_bind_service=ep");

    let expected = [
        // (path, layer, severity, setuid, capabilities)
        (
            "/usr/bin/image-cap",
            "image",
            "medium",
            false,
            Some(&image_caps),
        ),
        ("/usr/bin/image-suid", "image", "medium", true, None),
        (
            "/usr/bin/upper-cap",
            "upper",
            "high",
            false,
            Some(&upper_caps),
        ),
        ("/usr/bin/upper-suid", "upper", "high", true, None),
    ];
    let check_files = |scan: &Scan| {
        assert_eq!(
            paths_of(scan, &c),
            expected.iter().map(|e| e.0).collect::<Vec<_>>(),
            "{}",
            scan.seen(&c)
        );
        for (path, layer, _, setuid, caps) in expected {
            let f = file_at(scan, &c, path);
            let seen = || format!("{path}: {f}\n{}", scan.seen(&c));
            assert_eq!(f["layer"], layer, "{}", seen());
            assert_eq!(f["setuid"], setuid, "{}", seen());
            assert_eq!(f["sha256"], sha(path).as_str(), "{}", seen());
            assert_eq!(
                f["size"],
                fs::metadata(merged(path)).unwrap().len(),
                "{}",
                seen()
            );
            match caps {
                Some(text) => assert_eq!(f["capabilities"], text.as_str(), "{}", seen()),
                None => assert_eq!(f["capabilities"], Value::Null, "{}", seen()),
            }
        }
    };

    let plain = scan(&[&c], Mode::Layers, &[]);
    check_files(&plain);
    // Through the merged root the container's view is the same (layers unknown there).
    let through_root = scan(&[&c], Mode::Merged, &[]);
    assert_eq!(
        paths_of(&through_root, &c),
        expected.iter().map(|e| e.0).collect::<Vec<_>>(),
        "{}",
        through_root.seen(&c)
    );
    for (path, _, severity, setuid, _) in expected {
        let kind = if setuid {
            "setuid_file"
        } else {
            "file_capability"
        };
        let f = finding_at(&plain, &c, kind, path);
        assert_eq!(f["severity"], severity, "{path}: {f}\n{}", plain.seen(&c));
        assert_eq!(
            f["sha256"],
            sha(path).as_str(),
            "{path}\n{}",
            plain.seen(&c)
        );
    }
    // The setuid copy of busybox in the writable layer is the shell; its digest is busybox's.
    assert_eq!(sha("/usr/bin/upper-suid"), image.sha256("/bin/busybox"));

    // Allow-lists whose globs match both layers' files: only the image's are excused.
    let allow = PolicyFile::new(
        "allowed_setuid:\n  - /usr/bin/*-suid\nallowed_file_capabilities:\n  - path: /usr/bin/*-cap\n    capabilities: [CAP_NET_BIND_SERVICE, CAP_NET_RAW]\n",
    );
    let allowed = scan(&[&c], Mode::Layers, &["--config", &allow.path_str()]);
    check_files(&allowed);
    no_finding_at(&allowed, &c, "setuid_file", "/usr/bin/image-suid");
    no_finding_at(&allowed, &c, "file_capability", "/usr/bin/image-cap");
    let f = finding_at(&allowed, &c, "setuid_file", "/usr/bin/upper-suid");
    assert_eq!(f["severity"], "high", "{}", allowed.seen(&c));
    let f = finding_at(&allowed, &c, "file_capability", "/usr/bin/upper-cap");
    assert_eq!(f["severity"], "high", "{}", allowed.seen(&c));

    // An allowed capability list narrower than what the image file carries excuses nothing.
    let narrow = PolicyFile::new(
        "allowed_file_capabilities:\n  - path: /usr/bin/image-cap\n    capabilities: [CAP_CHOWN]\n",
    );
    let narrowed = scan(&[&c], Mode::Layers, &["--config", &narrow.path_str()]);
    let f = finding_at(&narrowed, &c, "file_capability", "/usr/bin/image-cap");
    assert_eq!(f["severity"], "medium", "{}", narrowed.seen(&c));
    drop(c);
    drop(image);
}

/// File capability texts as `getcap -n` prints them, for sets that exercise libcap's
/// notation: several capabilities, differing permitted/inheritable sets, "all but one",
/// a namespaced (v3) capability with its root uid, and a file both setuid and capable.
#[test]
fn file_capability_texts_match_getcap() {
    require_containers!();
    let c = ContainerSpec::new(Image::busybox()).start();
    // (setcap text, setcap -n ROOTID, mode)
    let cases: &[(&str, Option<&str>, u32)] = &[
        ("cap_net_raw+ep", None, 0o755),
        ("cap_setuid,cap_sys_admin+ep", None, 0o755),
        ("cap_chown=ip cap_net_raw+p", None, 0o755),
        ("cap_chown,cap_net_raw=i", None, 0o755),
        ("all=ep", None, 0o755),
        ("all=p cap_sys_admin-p", None, 0o755),
        ("all=eip cap_sys_admin-eip", None, 0o755),
        ("cap_net_raw,cap_sys_admin+eip", Some("1000"), 0o755),
        ("cap_net_bind_service+ep", None, 0o4755),
    ];
    let mut want = Vec::new();
    for (i, (text, rootid, mode)) in cases.iter().enumerate() {
        let path = c.rootfs.join(format!("usr/sbin/cap-{i}"));
        plant(&path, format!("#!/bin/sh\n# {text}\n").as_bytes(), 0o755);
        let mut args: Vec<&OsStr> = Vec::new();
        if let Some(rootid) = rootid {
            args.extend([OsStr::new("-n"), OsStr::new(rootid)]);
        }
        args.extend([OsStr::new(text), path.as_os_str()]);
        cmd::run_ok("setcap", &args);
        // The mode last, once the capability is written.
        set_mode(&path, *mode);
        want.push((format!("/usr/sbin/cap-{i}"), getcap(&path), *mode));
    }
    assert!(
        want[7].1.ends_with("[rootid=1000]"),
        "a v3 capability: {:?}",
        want[7]
    );

    for mode in Mode::BOTH {
        let s = scan(&[&c], mode, &[]);
        let mut paths: Vec<String> = want.iter().map(|w| w.0.clone()).collect();
        paths.sort();
        assert_eq!(paths_of(&s, &c), paths, "{}", s.seen(&c));
        for (path, caps, file_mode) in &want {
            let f = file_at(&s, &c, path);
            let seen = || format!("{path}: {f}\n{}", s.seen(&c));
            assert_eq!(f["capabilities"], caps.as_str(), "vs getcap -n\n{}", seen());
            assert_eq!(f["setuid"], *file_mode == 0o4755, "{}", seen());
            let finding = finding_at(&s, &c, "file_capability", path);
            assert_eq!(finding["severity"], mode.written_severity(), "{}", seen());
            assert!(
                finding["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(caps.as_str()),
                "the message shows the capabilities\n{}",
                seen()
            );
            if *file_mode == 0o4755 {
                finding_at(&s, &c, "setuid_file", path);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile containers
// ---------------------------------------------------------------------------------------

/// A host file that is setuid, for symlinks whose target's mode bits would fool a walker that
/// follows links.
fn host_setuid_binary() -> Option<PathBuf> {
    [
        "/usr/bin/passwd",
        "/usr/bin/su",
        "/bin/su",
        "/usr/bin/mount",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| {
        fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file() && m.mode() & 0o4000 != 0)
    })
}

/// Symlinks into the host — to `/etc/shadow`, to a setuid binary, to a directory of them —
/// are never followed: nothing reported, no digest of a host file anywhere.
#[test]
fn symlinks_out_of_the_container_are_not_followed() {
    require_containers!();
    let control = Control::start();
    let h = ContainerSpec::new(Image::busybox()).start();
    let shadow_sha = oracle::sha256sum(Path::new("/etc/shadow"));
    let host_suid = host_setuid_binary();
    // Enough `..` to climb out of the container's directory on the host, however deep it is
    // (inside the container, `..` stops at its root).
    let up = "../".repeat(24);
    // (link in the container, target, whether the host's view of the link reaches the target)
    let mut links: Vec<(&str, PathBuf, bool)> = vec![
        ("usr/bin/sudo", "/etc/shadow".into(), true),
        ("usr/bin/sudoedit", "../../../../etc/shadow".into(), false),
        (
            "usr/bin/shadow-deep",
            format!("{up}etc/shadow").into(),
            true,
        ),
        ("usr/lib/hostbin", "/usr/bin".into(), true),
        ("usr/lib/hostbin-rel", format!("{up}usr/bin").into(), true),
    ];
    let mut host_digests = vec![shadow_sha.clone()];
    match &host_suid {
        Some(target) => {
            // Named like setuid binaries; their targets' mode bits must not matter.
            links.push(("usr/bin/newgrp", target.clone(), true));
            links.push((
                "usr/bin/chsh",
                PathBuf::from(&up).join(target.strip_prefix("/").unwrap()),
                true,
            ));
            host_digests.push(oracle::sha256sum(target));
        }
        None => eprintln!("note: no setuid binary on this host; links to one not tested"),
    }
    for (name, target, escapes) in &links {
        let link = h.rootfs.join(name);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &link).unwrap();
        assert!(
            fs::symlink_metadata(h.upper_dir.join(name))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name} is a symlink in the upper layer"
        );
        if *escapes {
            // The trap is real: followed from the host, the link reaches the host's file.
            assert!(
                fs::metadata(&link).is_ok(),
                "{name} -> {}",
                target.display()
            );
            assert!(
                fs::metadata(h.upper_dir.join(name)).is_ok(),
                "{name} -> {} from the upper layer",
                target.display()
            );
        }
    }
    if let Some(target) = &host_suid {
        assert_eq!(
            fs::metadata(h.rootfs.join("usr/bin/newgrp")).unwrap().ino(),
            fs::metadata(target).unwrap().ino(),
            "followed from the host, the link is the host's setuid binary"
        );
    }

    for mode in Mode::BOTH {
        let s = scan(&[&h, &control.c], mode, &[]);
        assert!(
            files_of(&s, &h).is_empty(),
            "symlinks reported as files ({mode:?}): {:?}\n{}",
            paths_of(&s, &h),
            s.seen(&h)
        );
        for kind in ["setuid_file", "setgid_file", "file_capability"] {
            assert!(
                !s.has_finding(&h, kind, None),
                "{kind} ({mode:?})\n{}",
                s.seen(&h)
            );
        }
        for f in s.files() {
            let digest = f["sha256"].as_str().unwrap_or_default();
            assert!(
                !host_digests.iter().any(|d| d == digest),
                "a host file's digest in the report ({mode:?}): {f}\n{}",
                s.summary()
            );
        }
        assert!(
            !s.output.stdout.contains(&shadow_sha),
            "/etc/shadow's digest appears in the report ({mode:?})"
        );
        control.assert_intact(&s, mode, "symlinks into the host");
    }
    drop(h);
}

/// FIFOs, sockets and device nodes with the setuid bit, named like setuid binaries: never
/// opened (a FIFO would block a reader forever, `/dev/zero` never ends), never reported.
#[test]
fn setuid_fifos_sockets_and_devices_neither_hang_nor_count() {
    require_containers!();
    let control = Control::start();
    let h = ContainerSpec::new(Image::busybox()).start();
    let bin = h.rootfs.join("usr/bin");
    let fifo = bin.join("sudo");
    cmd::run_ok("mkfifo", &[&fifo]);
    let socket = bin.join("su");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a unix socket"));
    let device = bin.join("passwd");
    cmd::run_ok(
        "mknod",
        &[
            device.as_os_str(),
            OsStr::new("c"),
            OsStr::new("1"),
            OsStr::new("5"),
        ],
    );
    let specials = [
        ("/usr/bin/sudo", &fifo),
        ("/usr/bin/su", &socket),
        ("/usr/bin/passwd", &device),
    ];
    for (name, path) in specials {
        set_mode(path, 0o4755);
        let meta = fs::symlink_metadata(path).unwrap();
        assert_eq!(
            meta.mode() & 0o7777,
            0o4755,
            "{name}: the kernel kept the setuid bit"
        );
        let t = meta.file_type();
        assert!(t.is_fifo() || t.is_socket() || t.is_char_device(), "{name}");
    }
    // Ground truth: find reports none of them as a setuid file.
    assert!(find_setuid(&h.upper_dir).is_empty());

    for mode in Mode::BOTH {
        // A hang is caught by SCAN_TIMEOUT.
        let s = scan(&[&h, &control.c], mode, &["--fail-on", "high"]);
        assert!(
            files_of(&s, &h).is_empty(),
            "special files reported as files ({mode:?}): {:?}\n{}",
            paths_of(&s, &h),
            s.seen(&h)
        );
        for (name, _) in specials {
            no_finding_at(&s, &h, "setuid_file", name);
        }
        // The scan finished normally: --fail-on high exits 3 for the control's setuid file
        // in the writable layer (high), 0 when it is only known as medium (merged root).
        let want = if mode == Mode::Layers { 3 } else { 0 };
        assert_eq!(s.exit_code(), Some(want), "{}", s.summary());
        control.assert_intact(&s, mode, "setuid FIFO, socket and device");
    }
    drop(h);
}

/// A 64 GiB sparse setuid file is reported without a digest (over the hash cap), quickly,
/// and the warnings say why.
#[test]
fn huge_sparse_setuid_file_is_reported_without_digest() {
    require_containers!();
    let control = Control::start();
    let h = ContainerSpec::new(Image::busybox()).start();
    const SIZE: u64 = 64 << 30;
    let path = h.rootfs.join("usr/bin/huge");
    let file = fs::File::create(&path).unwrap();
    file.set_len(SIZE).unwrap();
    drop(file);
    set_mode(&path, 0o4755);
    let upper_file = h.upper_dir.join("usr/bin/huge");
    let meta = fs::metadata(&upper_file).unwrap();
    assert_eq!(meta.len(), SIZE);
    assert!(meta.blocks() < 1024, "sparse: {} blocks", meta.blocks());
    // Whether anyone read the file shows in its access time (relatime updates it on the first
    // read after a change). Checked on a probe first, so the check itself is known to work.
    let atime = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.atime(), m.atime_nsec())
    };
    let probe = h.rootfs.join("usr/bin/atime-probe");
    plant(&probe, &[0u8; 4096], 0o644);
    let upper_probe = h.upper_dir.join("usr/bin/atime-probe");
    let before = atime(&upper_probe);
    std::thread::sleep(Duration::from_millis(20));
    fs::read(&probe).unwrap();
    assert_ne!(
        atime(&upper_probe),
        before,
        "a read through the container's root shows in the writable layer's atime"
    );
    let unread = atime(&upper_file);

    for mode in Mode::BOTH {
        let s = scan(&[&h, &control.c], mode, &["--fail-on", "high"]);
        let seen = || s.seen(&h);
        assert_eq!(paths_of(&s, &h), ["/usr/bin/huge"], "{}", seen());
        let f = file_at(&s, &h, "/usr/bin/huge");
        assert_eq!(f["size"], SIZE, "{}", seen());
        assert_eq!(f["setuid"], true, "{}", seen());
        assert_eq!(f["sha256"], Value::Null, "over the hash cap\n{}", seen());
        assert_eq!(f["layer"], mode.written_layer(), "{}", seen());
        let finding = finding_at(&s, &h, "setuid_file", "/usr/bin/huge");
        assert_eq!(finding["severity"], mode.written_severity(), "{}", seen());
        assert!(
            finding.get("sha256").is_none_or(Value::is_null),
            "{}",
            seen()
        );
        let w = warnings(&s);
        assert!(
            w.contains("/usr/bin/huge") && w.contains("hash cap"),
            "the warnings must name the file and the size cap: {w}\n{}",
            seen()
        );
        assert_eq!(
            atime(&upper_file),
            unread,
            "the 64 GiB file was read (its atime changed)\n{}",
            seen()
        );
        let gated = if mode == Mode::Layers { 3 } else { 0 };
        assert_eq!(s.exit_code(), Some(gated), "--fail-on high\n{}", seen());
        control.assert_intact(&s, mode, "a 64 GiB sparse setuid file");
    }
    drop(h);
}

/// Creates `depth` nested directories named `name` below `top`, then `leaf` with `contents`
/// and `mode` at the bottom. Paths are resolved one level at a time through the open parent
/// (`/proc/self/fd/N/NAME`), so the tree may be far deeper than `PATH_MAX`.
fn make_deep_tree(top: &Path, name: &str, depth: usize, leaf: &str, contents: &[u8], mode: u32) {
    use std::os::fd::AsRawFd;
    let mut dir = fs::File::open(top).unwrap();
    let via = |dir: &fs::File, n: &str| format!("/proc/self/fd/{}/{n}", dir.as_raw_fd());
    for level in 0..depth {
        fs::create_dir(via(&dir, name)).unwrap_or_else(|e| panic!("mkdir level {level}: {e}"));
        dir = fs::File::open(via(&dir, name)).unwrap();
    }
    let leaf = via(&dir, leaf);
    fs::write(&leaf, contents).unwrap();
    set_mode(Path::new(&leaf), mode);
}

/// 1,000 nested directories (8,000 bytes of path, nearly twice `PATH_MAX`) with a setuid file at
/// the bottom, and one directory of 100,000 files holding one setuid file: both found, at
/// their exact paths.
#[test]
fn deep_and_wide_trees_hide_nothing() {
    require_containers!();
    let control = Control::start();
    let h = ContainerSpec::new(Image::busybox()).start();
    let busybox = fs::read(Image::busybox().path("/bin/busybox")).unwrap();
    let busybox_sha = Image::busybox().sha256("/bin/busybox");

    const DEPTH: usize = 1000;
    fs::create_dir_all(h.rootfs.join("opt")).unwrap();
    make_deep_tree(
        &h.rootfs.join("opt"),
        "deepdir",
        DEPTH,
        "sh",
        &busybox,
        0o4755,
    );
    let deep_path = format!("/opt/{}sh", "deepdir/".repeat(DEPTH));
    assert!(deep_path.len() > 4096, "deeper than PATH_MAX");

    const MANY: usize = 100_000;
    let wide = h.upper_dir.join("var/spool/wide");
    fs::create_dir_all(&wide).unwrap();
    for i in 0..MANY {
        fs::File::create(wide.join(format!("f{i:06}"))).unwrap();
    }
    plant(&wide.join("f050000-suid"), b"#!/bin/sh\nid\n", 0o4755);
    let wide_sha = oracle::sha256sum(&wide.join("f050000-suid"));

    // Ground truth: find, which walks deeper than PATH_MAX with openat.
    let mut want = vec![
        deep_path.clone(),
        "/var/spool/wide/f050000-suid".to_string(),
    ];
    want.sort();
    let found: Vec<String> = find_setuid(&h.upper_dir)
        .into_iter()
        .map(|p| String::from_utf8(p).unwrap())
        .collect();
    assert_eq!(found, want, "find's view of the upper layer");

    for mode in Mode::BOTH {
        let s = scan(&[&h, &control.c], mode, &[]);
        let seen = || s.seen(&h);
        assert_eq!(paths_of(&s, &h), want, "{}", seen());
        let deep = file_at(&s, &h, &deep_path);
        assert_eq!(deep["sha256"], busybox_sha.as_str(), "{}", seen());
        assert_eq!(deep["layer"], mode.written_layer(), "{}", seen());
        let wide_file = file_at(&s, &h, "/var/spool/wide/f050000-suid");
        assert_eq!(wide_file["sha256"], wide_sha.as_str(), "{}", seen());
        for path in &want {
            let f = finding_at(&s, &h, "setuid_file", path);
            assert_eq!(f["severity"], mode.written_severity(), "{}", seen());
        }
        assert!(
            s.stat("files_walked") > MANY as u64 + DEPTH as u64,
            "every entry looked at\n{}",
            seen()
        );
        assert_eq!(s.stat("walks_truncated"), 0, "{}", seen());
        control.assert_intact(&s, mode, "deep and wide trees");
    }

    // A file budget below the hostile layer's size: its walk stops and says so; the budget is
    // per root, so the control container's layer is still walked whole.
    let budget = (MANY / 2).to_string();
    let s = scan(
        &[&h, &control.c],
        Mode::Layers,
        &["--walk-max-files", &budget],
    );
    assert_eq!(s.stat("walks_truncated"), 1, "{}", s.seen(&h));
    let w = warnings(&s);
    assert!(
        w.contains("truncated") && w.contains(&h.id),
        "the warnings must name the truncated walk: {w}\n{}",
        s.seen(&h)
    );
    control.assert_intact(&s, Mode::Layers, "a truncated walk");
    drop(h);
}

/// setuid files whose names hold a newline, tabs, terminal escapes, a backslash and bytes
/// that are not UTF-8: reported losslessly (escaped, and unescaping gives the bytes back),
/// and the table output cannot be forged with them.
#[test]
fn hostile_names_are_escaped_losslessly() {
    require_containers!();
    let control = Control::start();
    let h = ContainerSpec::new(Image::busybox()).start();
    // (raw name under /usr/bin, the escaped path the report must show)
    let names: &[(&[u8], &str)] = &[
        (
            b"evil\nCRITICAL  denied_binary  host  1  FORGED-ROW",
            r"/usr/bin/evil\nCRITICAL  denied_binary  host  1  FORGED-ROW",
        ),
        (b"bad\xff\xfename", r"/usr/bin/bad\xff\xfename"),
        (b"back\\x41slash", r"/usr/bin/back\\x41slash"),
        (
            b"esc\x1b[2J\x1b]0;owned\x07",
            r"/usr/bin/esc\x1b[2J\x1b]0;owned\x07",
        ),
        (b"tab\there\rcr\x7fdel", r"/usr/bin/tab\there\rcr\x7fdel"),
        (
            "nel\u{85}c1-newline".as_bytes(),
            r"/usr/bin/nel\xc2\x85c1-newline",
        ),
        ("ünïcödé-plain".as_bytes(), "/usr/bin/ünïcödé-plain"),
    ];
    let mut digests = Vec::new();
    for (raw, _) in names {
        let path = h.rootfs.join("usr/bin").join(OsStr::from_bytes(raw));
        // Distinct contents, so each entry's digest identifies its file.
        let mut contents = b"#!/bin/sh\n# ".to_vec();
        contents.extend_from_slice(raw);
        plant(&path, &contents, 0o4755);
        digests.push(sha256sum_stdin(&path));
    }
    let mut want_raw: Vec<Vec<u8>> = names
        .iter()
        .map(|(raw, _)| [b"/usr/bin/".as_slice(), raw].concat())
        .collect();
    want_raw.sort();
    assert_eq!(find_setuid(&h.upper_dir), want_raw, "find's view");

    // A process running a copy of busybox from a directory with such a name, in the
    // writable layer (busybox picks its applet from the file name, so that stays `sleep`):
    // its exe, its command line and the drift finding carry the name.
    const EXE: &[u8] = b"/tmp/ev\nFORGED-PROC\xff/sleep";
    const EXE_ESCAPED: &str = r"/tmp/ev\nFORGED-PROC\xff/sleep";
    plant(
        &h.rootfs.join(OsStr::from_bytes(&EXE[1..])),
        &fs::read(Image::busybox().path("/bin/busybox")).unwrap(),
        0o755,
    );
    let drifted = h.exec_detached(&[
        "/bin/sh",
        "-c",
        "for x in /tmp/ev*/sleep; do exec \"$x\" 3600; done",
    ]);
    let link = PathBuf::from(format!("/proc/{drifted}/exe"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while fs::read_link(&link).ok().as_deref() != Some(Path::new(OsStr::from_bytes(EXE))) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {drifted} runs {:?}, not {EXE:?}",
            fs::read_link(&link)
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    for mode in Mode::BOTH {
        let s = scan(&[&h, &control.c], mode, &[]);
        let seen = || s.seen(&h);
        let p = s.process(&h, drifted);
        assert_eq!(p["exe"], EXE_ESCAPED, "{}", seen());
        assert_eq!(unescape(EXE_ESCAPED), EXE);
        assert_eq!(p["command"], "sleep", "{}", seen());
        let cmdline = p["cmdline"].as_str().unwrap_or_default();
        assert!(
            cmdline.contains("FORGED-PROC") && !cmdline.chars().any(char::is_control),
            "cmdline {cmdline:?}\n{}",
            seen()
        );
        if mode == Mode::Layers {
            assert_eq!(p["exe_layer"], "upper", "{}", seen());
            let drift = finding_at(&s, &h, "binary_drift", EXE_ESCAPED);
            assert_eq!(drift["pid"], drifted, "{}", seen());
        }
        // docs/policy.md: messages are one line.
        for f in s.findings() {
            let message = f["message"].as_str().unwrap_or_default();
            assert!(
                !message.chars().any(char::is_control),
                "a finding message with a control character: {message:?}\n{}",
                seen()
            );
        }
        let mut got_raw: Vec<Vec<u8>> = paths_of(&s, &h).iter().map(|p| unescape(p)).collect();
        got_raw.sort();
        assert_eq!(
            got_raw,
            want_raw,
            "unescaped paths are the bytes on disk\n{}",
            seen()
        );
        for ((raw, escaped), digest) in names.iter().zip(&digests) {
            let f = file_at(&s, &h, escaped);
            assert_eq!(unescape(escaped), [b"/usr/bin/".as_slice(), raw].concat());
            assert_eq!(f["sha256"], digest.as_str(), "{escaped}\n{}", seen());
            let finding = finding_at(&s, &h, "setuid_file", escaped);
            assert_eq!(finding["subject"], *escaped, "{}", seen());
            let message = finding["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(escaped) && !message.chars().any(char::is_control),
                "message: {message:?}\n{}",
                seen()
            );
        }
        for f in files_of(&s, &h) {
            let path = f["path"].as_str().unwrap_or_default();
            assert!(
                !path.chars().any(char::is_control),
                "control character in {path:?}"
            );
        }
        control.assert_intact(&s, mode, "hostile file names");

        // The table: one line per row, whatever the names hold.
        let table = run_scan(&[&h, &control.c], mode, "table", &["--inventory"]);
        let text = &table.stdout;
        assert!(
            !text.contains('\u{fffd}'),
            "raw non-UTF-8 bytes in the table\n{table}"
        );
        assert!(
            !text.chars().any(|ch| ch.is_control() && ch != '\n'),
            "raw control characters in the table\n{table}"
        );
        let forged: Vec<&str> = text.lines().filter(|l| l.contains("FORGED-ROW")).collect();
        assert_eq!(
            forged.len(),
            2,
            "the newline name shows once in FILES and once in FINDINGS\n{table}"
        );
        // A row names the container itself (inventories) or sits indented under the header
        // of the container's group (findings); a forged line would start at column 0.
        let in_row = |line: &str| line.contains(&h.id[..12]) || line.starts_with("  ");
        for line in forged {
            assert!(
                line.contains("/usr/bin/evil") && in_row(line),
                "a forged row: {line:?}\n{table}"
            );
        }
        let proc_rows: Vec<&str> = text.lines().filter(|l| l.contains("FORGED-PROC")).collect();
        assert_eq!(
            proc_rows.len(),
            if mode == Mode::Layers { 2 } else { 1 },
            "the hostile exe shows in its process row (and the drift finding)\n{table}"
        );
        for line in proc_rows {
            assert!(
                in_row(line) && line.contains("ev\\"),
                "a forged row: {line:?}\n{table}"
            );
        }
        assert!(
            !text.lines().any(|l| l.starts_with("CRITICAL")),
            "no critical finding exists, yet a line starts with CRITICAL\n{table}"
        );
    }
    drop(h);
}

/// A directory bind-mounted onto its own subdirectory — in the writable layer on the host,
/// and inside the container's own mount namespace — is a loop: the scan steps over it, says
/// so, and still reports the setuid file inside once, at its real path.
#[test]
fn bind_mount_loops_terminate() {
    require_containers!();
    let control = Control::start();
    // CAP_SYS_ADMIN so the container can bind-mount inside its own mount namespace.
    let h = ContainerSpec::new(Image::busybox())
        .add_capability("CAP_SYS_ADMIN")
        .start();
    for dir in ["loop", "mloop"] {
        fs::create_dir_all(h.rootfs.join(dir).join("inner")).unwrap();
        plant(
            &h.rootfs.join(dir).join("suid"),
            format!("#!/bin/sh\n# {dir}\n").as_bytes(),
            0o4755,
        );
    }
    // On the host, in the writable layer the agent walks (the container does not see it: a
    // mount on an overlay's upper directory is not part of the overlay).
    let upper_loop = h.upper_dir.join("loop");
    let _host_loop = BindMount::new(&upper_loop, &upper_loop.join("inner"));
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&upper_loop.join("inner")),
        ino(&upper_loop),
        "the host-side loop is in place"
    );
    assert!(upper_loop.join("inner/suid").is_file());
    // Inside the container (its mount namespace dies with it; nothing to clean up here).
    let out = h.runc(&[
        "exec",
        &h.id,
        "/bin/busybox",
        "mount",
        "--bind",
        "/mloop",
        "/mloop/inner",
    ]);
    assert!(out.success(), "bind mount inside the container\n{out}");
    let root = PathBuf::from(format!("/proc/{}/root/mloop", h.init_pid));
    assert_eq!(
        ino(&root.join("inner")),
        ino(&root),
        "the in-container loop is in place\n{out}\nmountinfo: {}",
        fs::read_to_string(format!("/proc/{}/mountinfo", h.init_pid)).unwrap_or_default()
    );
    assert!(root.join("inner/suid").is_file());

    for mode in Mode::BOTH {
        let s = scan(&[&h, &control.c], mode, &[]);
        let seen = || s.seen(&h);
        assert_eq!(
            paths_of(&s, &h),
            ["/loop/suid", "/mloop/suid"],
            "each file once, at its real path\n{}",
            seen()
        );
        let w = warnings(&s);
        assert!(
            w.contains("loop")
                && w.contains(if mode == Mode::Layers {
                    "/loop/inner"
                } else {
                    "/mloop/inner"
                }),
            "the warnings must name the loop: {w}\n{}",
            seen()
        );
        control.assert_intact(&s, mode, "bind-mount loops");
    }
}

/// A container whose every process runs chrooted into a subdirectory of its root (a
/// `chroot` in the entrypoint, or an attacker who re-execs everything into a jail) must not
/// hide its root filesystem: the setuid files outside the jail are still the container's.
///
/// The kernel shows a chrooted process only the mounts below its root, so its
/// `/proc/PID/mountinfo` has no mount at `/`; the collector then finds the overlay in the
/// host's mount table by the device `/proc/PID/root` lives on.
///
/// On a busy node the host's mount table holds dozens of other overlays, each line a few
/// hundred bytes: the kernel hands `mountinfo` out a page per `read`, so the container's
/// overlay, mounted after them, is past the first page. ~50 overlays are mounted first here.
#[test]
fn chrooted_processes_do_not_hide_the_container_root() {
    require_containers!();
    let busy = BusyOverlays::mount(50);
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        host_mounts.len() > 3 * 4096,
        "harness: the mount table should span pages ({} bytes)",
        host_mounts.len()
    );
    let image = Image::busybox_owned("jail");
    let busybox = fs::read(image.path("/bin/busybox")).unwrap();
    image.add_file("/jail/bin/busybox", &busybox, 0o755);
    fs::hard_link(
        image.path("/jail/bin/busybox"),
        image.path("/jail/bin/sleep"),
    )
    .unwrap();
    image.add_file("/usr/bin/image-suid", &busybox, 0o4755);
    let c = ContainerSpec::new(&image)
        .args(&["/bin/busybox", "chroot", "/jail", "/bin/sleep", "3600"])
        .start();
    c.wait_for_exact_exe(c.init_pid, "/jail/bin/sleep");
    plant(
        &c.rootfs.join("usr/bin/upper-suid"),
        b"#!/bin/sh\nid\n",
        0o4755,
    );
    assert_eq!(
        fs::read_link(format!("/proc/{}/root", c.init_pid)).unwrap(),
        Path::new("/jail")
    );

    let s = scan(&[&c], Mode::Layers, &[]);
    assert_eq!(
        s.container(&c)["rootfs"]["upper_dir"],
        c.upper_dir.to_str().unwrap(),
        "{}",
        s.seen(&c)
    );
    assert_eq!(
        paths_of(&s, &c),
        ["/usr/bin/image-suid", "/usr/bin/upper-suid"],
        "{}",
        s.seen(&c)
    );
    assert_eq!(file_at(&s, &c, "/usr/bin/upper-suid")["layer"], "upper");
    // The container's overlay came after the busy ones in the host's table.
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours = table
        .find(c.upper_dir.to_str().unwrap())
        .expect("the container's overlay is in the host's mount table");
    assert!(
        ours > 4096,
        "harness: our overlay is past the first page ({ours})"
    );
    drop(c);
    drop(image);
    drop(busy);
}

/// Overlay mounts that are none of the test's containers, as on a node running dozens of
/// pods; unmounted on drop.
struct BusyOverlays {
    mounts: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl BusyOverlays {
    fn mount(n: usize) -> BusyOverlays {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-busy-overlays-")
            .tempdir()
            .unwrap();
        let mut busy = BusyOverlays {
            mounts: Vec::new(),
            _dir: dir,
        };
        // Paths as long as containerd's snapshot paths, so each mountinfo line is as long.
        let base = busy._dir.path().join(
            "io.containerd.snapshotter.v1.overlayfs/snapshots/a-long-snapshot-directory-name",
        );
        for i in 0..n {
            let layer = |what: &str| base.join(format!("{i}/{what}"));
            let (lower, upper, work, merged) = (
                layer("lower/fs"),
                layer("upper/fs"),
                layer("work"),
                layer("merged"),
            );
            for d in [&lower, &upper, &work, &merged] {
                fs::create_dir_all(d).unwrap();
            }
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            );
            cmd::run_ok(
                "mount",
                &[
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    options.as_str(),
                    merged.to_str().unwrap(),
                ],
            );
            busy.mounts.push(merged);
        }
        busy
    }
}

impl Drop for BusyOverlays {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            if !cmd::run("umount", &[m]).success() {
                let _ = cmd::run("umount", &[OsStr::new("-l"), m.as_os_str()]);
            }
        }
    }
}

/// A setuid file planted in a running container's writable layer, and then removed, shows
/// in the daemon's report within a few process-scan intervals, though the filesystem
/// interval is an hour: the writable layer is walked on every process scan once the
/// container's image layers are cached.
#[test]
fn writable_layer_changes_show_within_a_process_interval() {
    require_containers!();
    let image = Image::busybox_owned("writable");
    let c = ContainerSpec::new(&image).start();
    let port = support::http::free_port();
    let listen = format!("127.0.0.1:{port}");
    let state = tempfile::tempdir().unwrap();
    let log_path = state.path().join("agent.log");
    let mut args = vec![
        "run",
        "--listen",
        listen.as_str(),
        "--interval",
        "1s",
        "--fs-interval",
        "1h",
        "--kube",
        "off",
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    if !support::host_pid1_readable() {
        args.extend_from_slice(&["--host-root", "/"]);
    }
    let mut child = Command::new(support::nodeguard_bin())
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&log_path).unwrap())
        .stderr(fs::File::create(state.path().join("agent.err")).unwrap())
        .spawn()
        .expect("start nodeguard run");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let files = || -> Result<Vec<String>, String> {
        let r = support::http::get(port, "/v1/report", None, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("status {}", r.status));
        }
        let report: Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
        // Not before the first filesystem scan ran (it caches the image layers).
        if report["stats"]["files_walked"].as_u64().unwrap_or(0) == 0 {
            return Err("no filesystem scan yet".into());
        }
        Ok(report["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["container_id"] == c.id.as_str())
            .filter_map(|f| f["path"].as_str().map(str::to_string))
            .collect())
    };
    // The first filesystem scan (it caches the image layers); the next is an hour away.
    let first = support::wait_for("the first filesystem scan", Duration::from_secs(60), || {
        files().and_then(|f| {
            (!f.contains(&"/planted-suid".to_string()))
                .then_some(f)
                .ok_or_else(|| "planted too early".to_string())
        })
    });
    assert!(!first.contains(&"/planted-suid".to_string()));

    plant(&c.rootfs.join("planted-suid"), b"#!/bin/sh\nid\n", 0o4755);
    let in_upper = fs::metadata(c.upper_dir.join("planted-suid")).unwrap();
    assert_eq!(
        in_upper.mode() & 0o4000,
        0o4000,
        "ground truth: setuid in the writable layer"
    );
    support::wait_for(
        "the planted setuid file in the daemon's report",
        Duration::from_secs(20),
        || {
            let f = files()?;
            f.contains(&"/planted-suid".to_string())
                .then_some(())
                .ok_or_else(|| format!("{f:?}"))
        },
    );
    fs::remove_file(c.rootfs.join("planted-suid")).unwrap();
    assert!(!c.upper_dir.join("planted-suid").exists());
    support::wait_for(
        "the removed setuid file to leave the daemon's report",
        Duration::from_secs(20),
        || {
            let f = files()?;
            (!f.contains(&"/planted-suid".to_string()))
                .then_some(())
                .ok_or_else(|| format!("{f:?}"))
        },
    );
    drop(_kill);
    drop(c);
    drop(image);
}

/// What one root of a container may add to the inventory (`MAX_CANDIDATES_PER_ROOT`).
const INVENTORY_PER_ROOT: usize = 1000;

#[test]
fn a_setuid_flood_is_bounded_aggregated_and_reported_incomplete() {
    require_containers!();
    let image = Image::busybox_owned("fs-flood");
    let c = ContainerSpec::new(&image).start();
    // What a root process in any container can do with a one-line loop: many empty setuid
    // files in its writable layer. Written through the merged root, as the container would.
    let flood = 3_000;
    let dir = c.rootfs.join("flood");
    fs::create_dir(&dir).unwrap();
    for i in 0..flood {
        plant(&dir.join(format!("s{i:05}")), b"", 0o4755);
    }
    let oracle_count = find_setuid(&c.rootfs).len();
    assert_eq!(oracle_count, flood, "find's view of the merged root");

    for mode in Mode::BOTH {
        let scan = scan(&[&c], mode, &[]);
        let files = files_of(&scan, &c);
        assert_eq!(
            files.len(),
            INVENTORY_PER_ROOT,
            "{mode:?}: the inventory keeps the bound, not the flood\n{}",
            scan.seen(&c)
        );
        // One aggregated finding for the kind, counting what was kept, listing the first.
        let setuid = scan.findings_of(&c.id, "setuid_file", None);
        assert_eq!(setuid.len(), 1, "{mode:?}\n{}", scan.seen(&c));
        let f = setuid[0];
        assert_eq!(f["subject"], "(aggregated)", "{f}");
        assert_eq!(f["severity"], mode.written_severity(), "{f}");
        assert_eq!(f["aggregate"]["count"], INVENTORY_PER_ROOT as u64, "{f}");
        assert_eq!(
            f["aggregate"]["subjects"].as_array().unwrap().len(),
            10,
            "{f}"
        );
        for subject in f["aggregate"]["subjects"].as_array().unwrap() {
            assert!(subject.as_str().unwrap().starts_with("/flood/s"), "{f}");
        }
        // The truncation marker: a finding naming what was left out, and a warning.
        let gap = scan.findings_of(&c.id, "filesystem_scan_incomplete", None);
        assert_eq!(gap.len(), 1, "{mode:?}\n{}", scan.seen(&c));
        assert_eq!(gap[0]["severity"], "high");
        let omitted = (oracle_count - INVENTORY_PER_ROOT).to_string();
        assert!(
            gap[0]["message"].as_str().unwrap().contains(&omitted),
            "{mode:?}: {}",
            gap[0]
        );
        assert!(
            warnings(&scan).contains("inventory truncated"),
            "{}",
            warnings(&scan)
        );
        // Findings stay few whatever the container holds.
        assert!(scan.findings().len() < 50, "{}", scan.findings().len());
    }
}

#[test]
fn a_trusted_binary_padded_past_the_hash_limit_is_an_unverifiable_finding() {
    require_containers!();
    let image = Image::busybox_owned("fs-padded");
    let busybox = fs::read(image.path("/bin/busybox")).unwrap();
    let digest = oracle::sha256sum(&image.path("/bin/busybox"));
    // The attacker's copy, padded with zeros past the limit (`truncate -s`), still runs.
    let limit = busybox.len() as u64 + 4096;
    image.add_file("/usr/local/bin/sleep", &busybox, 0o755);
    let padded = image.path("/usr/local/bin/sleep");
    cmd::run_ok(
        "truncate",
        &[
            OsStr::new("-s"),
            OsStr::new(&(limit * 2).to_string()),
            padded.as_os_str(),
        ],
    );
    let c = ContainerSpec::new(&image)
        .args(&["/usr/local/bin/sleep", "3600"])
        .start();
    c.wait_for_exact_exe(c.init_pid, "/usr/local/bin/sleep");
    let policy = PolicyFile::new(&format!(
        "trusted_binaries:\n  - path: /usr/local/bin/sleep\n    sha256: [{digest}]\n"
    ));
    let limit_text = limit.to_string();
    let scan = scan(
        &[&c],
        Mode::Layers,
        &[
            "--no-fs",
            "--config",
            &policy.path_str(),
            "--max-hash-size",
            &limit_text,
        ],
    );
    let p = scan.process(&c, c.init_pid);
    assert!(p["sha256"].is_null(), "{p}");
    assert!(
        p["hash_error"]
            .as_str()
            .unwrap_or_default()
            .contains("hashing limit"),
        "{p}"
    );
    let found = scan.findings_of(&c.id, "unverifiable_binary", Some("/usr/local/bin/sleep"));
    assert_eq!(found.len(), 1, "{}", scan.seen(&c));
    assert_eq!(found[0]["severity"], "critical", "{}", found[0]);
    assert_eq!(found[0]["pid"], c.init_pid);
    // Within the limit it is hashed and matches: no finding.
    // Within the limit it is hashed: the padding shows as a digest mismatch instead.
    let big_enough = (limit * 3).to_string();
    let scan = scan_fn(&c, &policy, &big_enough);
    assert!(
        !scan.has_finding(&c, "unverifiable_binary", None),
        "{}",
        scan.seen(&c)
    );
    assert!(
        scan.has_finding(&c, "unexpected_binary_hash", Some("/usr/local/bin/sleep")),
        "{}",
        scan.seen(&c)
    );
}

fn scan_fn(c: &Container, policy: &PolicyFile, max_hash: &str) -> Scan {
    scan(
        &[c],
        Mode::Layers,
        &[
            "--no-fs",
            "--config",
            &policy.path_str(),
            "--max-hash-size",
            max_hash,
        ],
    )
}
