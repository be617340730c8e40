//! Ground truth that does not go through nodeguard: coreutils, libcap's `capsh`, the kernel's own
//! text files.

use super::cmd;
use std::path::{Path, PathBuf};

/// `sha256sum PATH` (for `/proc/PID/exe` this reads the executable the process runs).
pub fn sha256sum(path: &Path) -> String {
    digest_with("sha256sum", path)
}

/// `sha512sum PATH`.
pub fn sha512sum(path: &Path) -> String {
    digest_with("sha512sum", path)
}

fn digest_with(tool: &str, path: &Path) -> String {
    let out = cmd::run_ok(tool, &[path]);
    let digest = out.stdout.split_whitespace().next().unwrap_or_default();
    assert!(
        !digest.is_empty() && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "unexpected output of {tool}\n{out}"
    );
    digest.to_string()
}

/// One field of a `/proc/PID/status`-style file (`Uid`, `CapEff`, `NoNewPrivs`, ...), trimmed.
pub fn status_field(path: &Path, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| value.trim().to_string())
    })
}

/// The `/proc/PID/status` of each thread of `pid` that is still there, read once each:
/// (its status path, its text). A thread that ended since the listing (a blocking-pool
/// thread idles out) is left out.
pub fn thread_statuses(pid: impl std::fmt::Display) -> Vec<(PathBuf, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("the threads of {pid}: {e}"));
    tasks
        .filter_map(|e| e.ok().map(|e| e.path().join("status")))
        .filter_map(|status| {
            let text = std::fs::read_to_string(&status).ok()?;
            Some((status, text))
        })
        .collect()
}

/// A hexadecimal or decimal mask field (`CapEff`, `NoNewPrivs`) of a status text read by
/// [`thread_statuses`]; panics if it is missing.
pub fn status_mask(text: &str, field: &str) -> u64 {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {text}"));
    u64::from_str_radix(value.trim(), 16).unwrap_or_else(|e| panic!("{field}: {value}: {e}"))
}

/// A field of `/proc/PID/status` of a live process; panics if it is missing.
pub fn proc_status(pid: i32, field: &str) -> String {
    let path = format!("/proc/{pid}/status");
    status_field(Path::new(&path), field)
        .unwrap_or_else(|| panic!("{path} has no {field} line (did pid {pid} exit?)"))
}

/// Capability names of a mask, by `capsh --decode=HEX`, uppercased and sorted.
/// `capsh` prints `0x...=cap_chown,cap_kill`; numbers it does not know stay numbers.
pub fn capsh_decode(hex: &str) -> Vec<String> {
    let out = cmd::run_ok("capsh", &[format!("--decode={hex}")]);
    let names = out
        .stdout
        .trim()
        .split_once('=')
        .unwrap_or_else(|| panic!("unexpected capsh output\n{out}"))
        .1;
    let mut names: Vec<String> = names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| n.trim().to_ascii_uppercase())
        .collect();
    names.sort();
    names
}

/// The capability set `set` (`CapEff`, `CapPrm`, `CapBnd`, `CapInh`, `CapAmb`) of a live
/// process, decoded by `capsh`.
pub fn capabilities(pid: i32, set: &str) -> Vec<String> {
    capsh_decode(&proc_status(pid, set))
}

/// Effective uid of a live process (the second field of `Uid:`).
pub fn effective_uid(pid: i32) -> u32 {
    proc_status(pid, "Uid")
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("bad Uid line of pid {pid}"))
}

/// Whether `NoNewPrivs: 1`.
pub fn no_new_privs(pid: i32) -> bool {
    proc_status(pid, "NoNewPrivs") == "1"
}

/// The `Seccomp:` mode: 0 disabled, 1 strict, 2 filter.
pub fn seccomp_mode(pid: i32) -> u32 {
    proc_status(pid, "Seccomp").parse().unwrap()
}

/// A cgroup file's content, trimmed.
pub fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// `devices.list` of cgroup `path` in the v1 devices hierarchy, trimmed; `None` when this
/// host has no v1 devices hierarchy or no such cgroup.
pub fn devices_list(path: &str) -> Option<String> {
    let file = Path::new("/sys/fs/cgroup/devices")
        .join(path.trim_start_matches('/'))
        .join("devices.list");
    std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_string())
}

/// Paths of runc's, crun's and Docker's default `maskedPaths` and `readonlyPaths` (and
/// `/sys`) that a live process's mount table shows masked (any mount on a masked path) or
/// read-only, as util-linux's `findmnt --task PID` lists them; sorted.
pub fn runtime_masks(pid: i32) -> Vec<String> {
    const MASKED: [&str; 12] = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/sys/devices/virtual/powercap",
        "/sys/firmware",
    ];
    const READ_ONLY: [&str; 6] = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/sys",
    ];
    let out = cmd::run_ok(
        "findmnt",
        &[
            "--task",
            &pid.to_string(),
            "-r",
            "-n",
            "-o",
            "TARGET,OPTIONS",
        ],
    );
    // The last mount on a target is the one path lookup finds.
    let mut top: std::collections::BTreeMap<String, bool> = Default::default();
    for line in out.stdout.lines() {
        let Some((target, options)) = line.split_once(' ') else {
            continue;
        };
        top.insert(target.to_string(), options.split(',').any(|o| o == "ro"));
    }
    top.into_iter()
        .filter(|(target, ro)| {
            MASKED.contains(&target.as_str()) || (*ro && READ_ONLY.contains(&target.as_str()))
        })
        .map(|(target, _)| target)
        .collect()
}
