//! The rules on a container's processes: capabilities, user, no_new_privs, seccomp, host
//! namespaces, privileged containers and what runs from outside the image.

use super::found::Found;
use super::{who, Evidence, Scope};
use crate::policy::Policy;
use nodeguard_model::capability::{
    capability_name, capability_number, decode_capabilities, full_capability_mask,
    CAPABILITY_NAMES, CAP_LAST_OLDEST_RUNTIME,
};
use nodeguard_model::{
    CapabilityName, Container, DeviceAccess, Finding, FindingKind, Layer, Process, SeccompMode,
    Severity,
};

/// Capabilities whose `dangerous_capability` finding is critical rather than high: either
/// is enough to own the node.
const CRITICAL_CAPABILITIES: [&str; 2] = ["CAP_SYS_ADMIN", "CAP_SYS_MODULE"];

/// Namespaces whose sharing with the host is a finding, with its kind and severity.
const HOST_NAMESPACES: [(&str, FindingKind, Severity); 4] = [
    ("pid", FindingKind::HostPidNamespace, Severity::High),
    ("net", FindingKind::HostNetworkNamespace, Severity::High),
    ("ipc", FindingKind::HostIpcNamespace, Severity::Medium),
    ("uts", FindingKind::HostUtsNamespace, Severity::Low),
];
/// The bounding sets that make a container privileged (see [`privileged_rule`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct PrivilegedCapabilities {
    /// The host's bounding set (a privileged container gets everything its runtime has,
    /// which is the host's bounding set), else every capability up to `cap_last_cap`.
    /// Capabilities beyond `cap_last_cap` are ignored either way.
    host: u64,
    /// Of those, the ones every runtime in use knows (up to
    /// [`CAP_LAST_OLDEST_RUNTIME`], `CAP_AUDIT_READ`): what a runtime older than the kernel
    /// grants a privileged container.
    oldest_runtime: u64,
}

impl PrivilegedCapabilities {
    pub(super) fn of(evidence: &Evidence) -> PrivilegedCapabilities {
        let last_cap = if evidence.cap_last_cap == 0 {
            CAPABILITY_NAMES.len() as u32 - 1
        } else {
            evidence.cap_last_cap
        };
        let full = full_capability_mask(last_cap);
        let host = match evidence.host_bounding.map(|host| host & full) {
            // An empty host set would make every container privileged: not a host's.
            Some(host) if host != 0 => host,
            _ => full,
        };
        PrivilegedCapabilities {
            host,
            oldest_runtime: host & full_capability_mask(CAP_LAST_OLDEST_RUNTIME),
        }
    }
}

/// `privileged_container`: a container its runtime made privileged (`docker run
/// --privileged`, `privileged: true`), decided from what privileged means rather than from
/// one number:
///
/// - its bounding set holds every capability its runtime could grant: all of the host's
///   up to `CAP_AUDIT_READ` (37). A runtime older than the kernel grants no more (Docker
///   20.10 gives 0–37 on a 6.x kernel that has 0–40), so asking for the host's whole set
///   missed it;
/// - every device is allowed (cgroup v1 `devices.list` `a *:* rwm`);
/// - nothing of `/proc` or `/sys` is masked or read-only in its mount table.
///
/// A restricted device list or any mask means a runtime confined the container: it is not
/// privileged, whatever its capabilities (`capabilities: add: [ALL]` gets its
/// `dangerous_capability` findings instead). Unknown is not confined (on cgroup v2 the
/// device list cannot be read back; a chrooted container hides its mount table). When
/// neither says anything, the capabilities alone decide and must then be the host's whole
/// bounding set, as before masks and devices were looked at.
pub(super) fn privileged_rule(
    capabilities: PrivilegedCapabilities,
    id: &str,
    container: Option<&Container>,
    p: &Process,
    found: &mut Found,
) {
    let cid = Some(id);
    let Some(bounding) = p.capability_masks.bounding.as_deref().and_then(parse_mask) else {
        return;
    };
    let (devices, masked) = match container {
        Some(c) => (c.confinement.devices, c.confinement.masked_paths.as_deref()),
        None => (DeviceAccess::Unknown, None),
    };
    if devices == DeviceAccess::Restricted || masked.is_some_and(|m| !m.is_empty()) {
        return;
    }
    let unconfined_seen = devices == DeviceAccess::All || masked.is_some();
    let needed = if unconfined_seen {
        capabilities.oldest_runtime
    } else {
        capabilities.host
    };
    if bounding & needed != needed
        || !found.keeps(FindingKind::PrivilegedContainer, cid, "privileged", p.pid)
    {
        return;
    }
    let missing = capabilities.host & !bounding;
    let caps = if missing == 0 {
        "every capability of the host's bounding set".to_string()
    } else {
        let names: Vec<CapabilityName> = decode_capabilities(missing);
        format!(
            "every capability of the host's bounding set that a runtime older than the kernel \
             grants (all up to CAP_AUDIT_READ; not {})",
            names.join(", ")
        )
    };
    let devices = match devices {
        DeviceAccess::All => "every device is allowed (devices cgroup `a *:* rwm`)",
        _ => "device access unknown (no v1 devices cgroup to read)",
    };
    let masks = match masked {
        Some(_) => "nothing of /proc or /sys is masked or read-only",
        None => "masked paths unknown (no mount table of its own was read)",
    };
    let message = format!(
        "{} is privileged: the bounding set of {} ({bounding:016x}) holds {caps}; {devices}; \
         {masks}",
        Scope::Container(id, None, None).label(),
        who(p)
    );
    found.add(
        Finding::new(
            FindingKind::PrivilegedContainer,
            Severity::Critical,
            cid,
            "privileged",
            message,
        )
        .with_pid(p.pid),
    );
}

pub(super) fn container_process_rules(policy: &Policy, id: &str, p: &Process, found: &mut Found) {
    // Most of a container's processes repeat the findings of its first one: a rule asks
    // `found.keeps` before it formats a message that would be thrown away.
    let label = || Scope::Container(id, None, None).label();
    let cid = Some(id);

    let effective = process_mask(&p.capability_masks.effective, &p.capabilities.effective);
    for bit in (0..64u32).filter(|bit| effective & policy.dangerous & (1u64 << bit) != 0) {
        let name = capability_name(bit);
        if !found.keeps(FindingKind::DangerousCapability, cid, &name, p.pid) {
            continue;
        }
        let severity = if CRITICAL_CAPABILITIES.contains(&name.as_ref()) {
            Severity::Critical
        } else {
            Severity::High
        };
        let message = format!("{}: {} has {name} in its effective set", label(), who(p));
        found.add(
            Finding::new(
                FindingKind::DangerousCapability,
                severity,
                cid,
                name,
                message,
            )
            .with_pid(p.pid),
        );
    }

    if p.uid == 0 && found.keeps(FindingKind::RunsAsRoot, cid, "uid 0", p.pid) {
        let message = format!("{}: {} runs as uid 0", label(), who(p));
        found.add(
            Finding::new(
                FindingKind::RunsAsRoot,
                Severity::Medium,
                cid,
                "uid 0",
                message,
            )
            .with_pid(p.pid),
        );
    }

    if p.no_new_privs == Some(false)
        && found.keeps(FindingKind::NoNewPrivsDisabled, cid, "no_new_privs", p.pid)
    {
        let message = format!(
            "{}: {} runs without no_new_privs and may gain privileges through setuid files",
            label(),
            who(p)
        );
        found.add(
            Finding::new(
                FindingKind::NoNewPrivsDisabled,
                Severity::Low,
                cid,
                "no_new_privs",
                message,
            )
            .with_pid(p.pid),
        );
    }

    if p.seccomp == Some(SeccompMode::Disabled)
        && found.keeps(FindingKind::SeccompDisabled, cid, "seccomp", p.pid)
    {
        let message = format!("{}: {} runs without a seccomp filter", label(), who(p));
        found.add(
            Finding::new(
                FindingKind::SeccompDisabled,
                Severity::Medium,
                cid,
                "seccomp",
                message,
            )
            .with_pid(p.pid),
        );
    }

    for (ns, kind, severity) in HOST_NAMESPACES {
        if p.namespaces.shared_with_host.iter().any(|s| s == ns)
            && found.keeps(kind, cid, ns, p.pid)
        {
            let message = format!("{}: {} shares the host's {ns} namespace", label(), who(p));
            found.add(Finding::new(kind, severity, cid, ns, message).with_pid(p.pid));
        }
    }

    if p.exe_layer == Some(Layer::Upper) {
        if let Some(exe) = p.exe.as_deref() {
            let message = format!(
                "{}: {} runs {exe} from the container's writable layer, not the image \
                 (sha256 {})",
                label(),
                who(p),
                p.sha256.as_deref().unwrap_or("unknown")
            );
            found.add(drift(cid, p.pid, exe, p.sha256.as_deref(), message));
        }
    }
    outside_image_rules(id, p, found);
}

/// `binary_drift` for what runs from outside the image other than the writable layer's
/// executables: an executable on a writable mount of the container (a tmpfs, an `emptyDir`, a
/// `hostPath`), and a script an interpreter runs from the writable layer or such a mount
/// (`Process.script`: the finding's path and digest are the script's). The subject is the
/// file's path, as for the writable layer's executables, so those findings keep their ids.
fn outside_image_rules(id: &str, p: &Process, found: &mut Found) {
    let label = || Scope::Container(id, None, None).label();
    let cid = Some(id);
    if let (Some(mount), Some(exe)) = (&p.exe_mount, p.exe.as_deref()) {
        if found.keeps(FindingKind::BinaryDrift, cid, exe, p.pid) {
            let message = format!(
                "{}: {} runs {exe} from a writable {} mount at {}, not the image (sha256 {})",
                label(),
                who(p),
                mount.fstype,
                mount.mount_point,
                p.sha256.as_deref().unwrap_or("unknown")
            );
            found.add(drift(cid, p.pid, exe, p.sha256.as_deref(), message));
        }
    }
    if let Some(script) = &p.script {
        let path = script.path.as_str();
        if found.keeps(FindingKind::BinaryDrift, cid, path, p.pid) {
            let place = match &script.mount {
                Some(mount) => {
                    format!("a writable {} mount at {}", mount.fstype, mount.mount_point)
                }
                None => "the container's writable layer".to_string(),
            };
            let message = format!(
                "{}: {} runs script {path} from {place}, not the image, with {} (sha256 {})",
                label(),
                who(p),
                p.exe.as_deref().unwrap_or("an interpreter"),
                script.sha256.as_deref().unwrap_or("unknown")
            );
            found.add(drift(cid, p.pid, path, script.sha256.as_deref(), message));
        }
    }
}

/// A high `binary_drift` finding about the file at `path` that `pid` runs, with its digest
/// when it has one.
fn drift(
    cid: Option<&str>,
    pid: i32,
    path: &str,
    sha256: Option<&str>,
    message: String,
) -> Finding {
    let finding = Finding::new(FindingKind::BinaryDrift, Severity::High, cid, path, message)
        .with_pid(pid)
        .with_path(path);
    match sha256 {
        Some(digest) => finding.with_sha256(digest),
        None => finding,
    }
}

/// A process's capability set: the hex mask when it parses, else the decoded names.
fn process_mask(hex: &str, names: &[CapabilityName]) -> u64 {
    parse_mask(hex).unwrap_or_else(|| {
        names
            .iter()
            .filter_map(|n| capability_number(n))
            .fold(0u64, |m, bit| m | (1u64 << bit))
    })
}

fn parse_mask(hex: &str) -> Option<u64> {
    let hex = hex.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    u64::from_str_radix(hex, 16).ok()
}
