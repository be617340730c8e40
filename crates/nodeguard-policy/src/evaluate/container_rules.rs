//! The rules on a container as a whole: missing limits, and a filesystem inventory that
//! could not be made whole.

use super::found::Found;
use super::FsGap;
use crate::policy::Policy;
use nodeguard_model::text::cut;
use nodeguard_model::{short_id, Container, Finding, FindingKind, Severity};

/// `missing_*_limit` when the container's effective limits (its own and its pod's; node
/// allocatable does not count) have none. A limit that could not be read is unknown, not
/// missing: the scan's warnings say so, and no finding is raised.
pub(super) fn limit_rules(policy: &Policy, c: &Container, pid: Option<i32>, found: &mut Found) {
    let required = policy.required_limits;
    let limits = c.effective_limits;
    let missing = [
        (
            required.memory && limits.memory_bytes.is_none(),
            FindingKind::MissingMemoryLimit,
            Severity::Medium,
            "memory",
        ),
        (
            required.cpu && limits.cpu_cores.is_none(),
            FindingKind::MissingCpuLimit,
            Severity::Low,
            "cpu",
        ),
        (
            required.pids && limits.pids.is_none(),
            FindingKind::MissingPidsLimit,
            Severity::Low,
            "pids",
        ),
    ];
    for (is_missing, kind, severity, what) in missing {
        if !is_missing || c.unknown_limits.iter().any(|u| u == what) {
            continue;
        }
        let pid_text = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let message = format!(
            "container {} has no {what} limit of its own or its pod's (cgroup {}){pid_text}",
            short_id(&c.id),
            c.cgroup
        );
        let mut finding = Finding::new(kind, severity, Some(&c.id), what, message);
        if let Some(pid) = pid {
            finding = finding.with_pid(pid);
        }
        found.add(finding);
    }
}

/// A container whose filesystem inventory is incomplete: files an attacker hid past the
/// walk budget, or past the inventory bound, would otherwise go unseen. High: it is the
/// blind spot a container chooses by creating many files.
pub(super) fn gap_rule(gap: &FsGap, pid: Option<i32>, found: &mut Found) {
    let omitted = if gap.files_omitted > 0 {
        format!(
            "; {} setuid/setgid/file-capability files left out of the inventory",
            gap.files_omitted
        )
    } else {
        String::new()
    };
    let pid_text = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let message = format!(
        "container {}{pid_text}: filesystem scan incomplete ({}){omitted}; files past this point are not checked",
        short_id(&gap.container_id),
        cut(&gap.reason, 300),
    );
    let mut finding = Finding::new(
        FindingKind::FilesystemScanIncomplete,
        Severity::High,
        Some(&gap.container_id),
        "filesystem",
        message,
    );
    if let Some(pid) = pid {
        finding = finding.with_pid(pid);
    }
    found.add(finding);
}
