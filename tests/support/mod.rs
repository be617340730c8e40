//! Test harness for running `nodeguard` against real runc containers.
//!
//! In the spirit of ripgrep's `tests/util.rs`: small, explicit helpers that say loudly what they
//! ran and what went wrong.
//!
//! - [`require_containers`] (through the [`require_containers!`] macro) decides whether this
//!   machine can run containers: root, `runc`, a static busybox, `capsh`, overlayfs. When it
//!   cannot, the test is skipped with the reason on stderr — unless `CI` is set, in which case
//!   the test fails, because CI must run these tests.
//! - [`image::Image`] is an image: a directory used as the overlay lower layer.
//! - [`container::ContainerSpec`] / [`container::Container`] start a container the way containerd
//!   does (private `runc --root`, a bundle, an overlay rootfs, a kubepods cgroup path) and tear it
//!   down on drop, panics included.
//! - [`scan::Scan`] runs `nodeguard scan --output json` and answers questions about the report;
//!   [`scan::Scan::seen`] renders what the scan saw of one container for assertion messages.
//! - [`oracle`] is the independent ground truth: `sha256sum`, `capsh --decode`, `/proc/PID/status`.
//! - [`fakeproc::FakeProc`] builds a proc root that holds only chosen pids, so counters of a
//!   scan can be attributed to the test's own processes.
#![allow(dead_code)]

pub mod agent;
pub mod api_bed;
pub mod cmd;
pub mod container;
pub mod deployment;
pub mod fakeproc;
pub mod http;
pub mod image;
pub mod oracle;
pub mod prometheus;
pub mod scan;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often [`wait_for`] polls.
pub const POLL: Duration = Duration::from_millis(250);

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most `timeout`; then fails with
/// `what` and the last reason the probe gave.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    wait_for_every(POLL, what, timeout, probe)
}

/// [`wait_for`] with its own polling period.
pub fn wait_for_every<T>(
    poll: Duration,
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("gave up after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(poll),
        }
    }
}

/// At most `max` bytes of `text` (cut on a char boundary), saying how much was left out.
pub fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} more bytes)", &text[..cut], text.len() - cut)
}

/// Returns from the calling test (after saying why on stderr) when containers cannot run here.
/// Under `CI` it panics instead.
#[macro_export]
macro_rules! require_containers {
    () => {
        if !$crate::support::require_containers() {
            return;
        }
    };
}

/// Whether this machine can run the container tests. Prints the reason when it cannot; panics
/// with it when the `CI` environment variable is set.
pub fn require_containers() -> bool {
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    static VERDICT: OnceLock<Result<(), String>> = OnceLock::new();
    match VERDICT.get_or_init(check_prerequisites) {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set, so container tests must run, but: {reason}");
            }
            // Straight to the stderr handle: libtest captures eprintln! of passing tests, and a
            // skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED {test}: {reason}\n!!! (with CI set this is a failure)\n"
            );
            false
        }
    }
}

/// The repository's root (tests read its manifests and scripts).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// Skips the calling test, saying why on stderr, or fails it when `CI` is set: `what` names
/// what must run (`the real API server test`).
pub fn skip(what: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so {what} must run, but: {reason}");
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    // Straight to the stderr handle: libtest captures eprintln! of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED {test}: {reason}\n!!! (with CI set this is a failure)\n"
    );
}

fn check_prerequisites() -> Result<(), String> {
    let uid = oracle::status_field(Path::new("/proc/self/status"), "Uid")
        .ok_or("cannot read /proc/self/status")?;
    if uid.split_whitespace().nth(1) != Some("0") {
        return Err("not root (real containers need root)".into());
    }
    let install = "apt-get install runc busybox-static libcap2-bin";
    for tool in ["runc", "capsh", "sha256sum", "sha512sum", "mount", "umount"] {
        if which(tool).is_none() {
            return Err(format!("{tool} not found: {install}"));
        }
    }
    let busybox = image::busybox_binary().ok_or_else(|| format!("busybox not found: {install}"))?;
    if !image::is_static_elf(&busybox) {
        return Err(format!(
            "{} is not statically linked: {install}",
            busybox.display()
        ));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        return Err("overlayfs is not available (modprobe overlay)".into());
    }
    Ok(())
}

/// Whether this process can look into the host's pid 1 (`/proc/1/ns/*`, `/proc/1/root`), the
/// reference nodeguard compares namespaces with and reaches host paths through.
///
/// Not always so, even as root: on a machine whose root session runs with a smaller capability
/// bounding set than pid 1 (this project's test VM drops CAP_SYS_RESOURCE), the kernel's
/// ptrace-access check denies those links. [`fakeproc::FakeProc`] then lets the test process
/// stand in for pid 1 and [`scan::Scan::run`] passes `--host-root /`.
pub fn host_pid1_readable() -> bool {
    static READABLE: OnceLock<bool> = OnceLock::new();
    *READABLE.get_or_init(|| {
        let readable = std::fs::read_link("/proc/1/ns/net").is_ok()
            && std::fs::read_link("/proc/1/root").is_ok();
        if !readable {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "note: /proc/1/ns and /proc/1/root are not readable here (pid 1 holds capabilities \
                 this process lacks); scans get --host-root / and namespace tests a proc root \
                 in which the test process stands in for pid 1"
            );
        }
        readable
    })
}

/// Finds a program on `PATH` (plus the sbin directories, which a non-login root shell may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file());
    found
}

/// `n` random bytes from the kernel, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random 64-hex container id, as containerd, CRI-O and Docker make them.
pub fn random_container_id() -> String {
    random_hex(32)
}

/// A random version-4 UUID, as the API server gives pods.
pub fn random_pod_uid() -> String {
    let h = random_hex(16);
    let variant = ["8", "9", "a", "b"][usize::from_str_radix(&h[16..17], 16).unwrap() % 4];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

/// A directory for this test run's leftovers worth keeping (saved reports), inside `target/`.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nodeguard-it");
    std::fs::create_dir_all(&dir).expect("create artifacts dir");
    dir
}

/// The `nodeguard` binary under test.
pub fn nodeguard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nodeguard")
}
