//! The rules: evidence in, findings out.

use crate::policy::Policy;
use crate::spec::{BundlesApplyTo, Exemption};
use nodeguard_model::capability::{
    capability_name, capability_number, decode_capabilities, full_capability_mask,
    CAPABILITY_NAMES, CAP_LAST_OLDEST_RUNTIME,
};
use nodeguard_model::{
    short_id, Aggregate, CapabilityName, Container, DeviceAccess, FileEntry, Finding, FindingKind,
    Layer, PodRef, Process, SeccompMode, Severity, AGGREGATE_SAMPLES, AGGREGATE_SUBJECT,
    MAX_FINDINGS_PER_CONTAINER_KIND,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What one scan saw, borrowed from the scan's own collections.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub processes: &'a [Process],
    pub containers: &'a [Container],
    /// setuid/setgid/file-capability files in container filesystems.
    pub files: &'a [FileEntry],
    /// `/proc/sys/kernel/cap_last_cap`; 0 when unknown, which is taken as the highest
    /// capability nodeguard knows by name (40, `CAP_CHECKPOINT_RESTORE`).
    pub cap_last_cap: u32,
    /// The host's capability bounding set (pid 1's `CapBnd`), when known: a container whose
    /// bounding set holds all of it is privileged. A node's own bounding set can be smaller
    /// than every capability the kernel knows; `None` compares with those instead.
    pub host_bounding: Option<u64>,
    /// Containers whose filesystem could not be inventoried whole.
    pub gaps: &'a [FsGap],
}

/// A container whose setuid/setgid/file-capability inventory is incomplete: its walk hit
/// the file or time budget, or it held more such files than the inventory keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGap {
    pub container_id: String,
    /// Why, for the message: `walk budget: more than 1000000 files (max_files)`.
    pub reason: String,
    /// Files found but left out of the inventory (0 when the walk itself stopped).
    pub files_omitted: u64,
}

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

/// Applies `policy` to `evidence`.
///
/// Container processes get every process rule; host processes only `deleted_executable`,
/// `denied_binary` and `unexpected_binary_hash` (trusted binaries without an `image`, and
/// digest bundles, which cover host processes and, by default, the containers of
/// `kube-system` pods by executable name: `digest_bundles_apply_to`) —
/// the host is expected to run as root with full capabilities. There is one finding per
/// `(container, kind, subject)`, carrying the lowest pid that shows it. Then `checks`
/// (disabled kinds, severity overrides) and `exemptions` apply. The result is sorted by
/// severity (highest first), kind, container (host first) and subject, and is the same for
/// the same evidence whatever its order.
pub fn evaluate(policy: &Policy, evidence: &Evidence) -> Vec<Finding> {
    let containers: HashMap<&str, &Container> = evidence
        .containers
        .iter()
        .map(|c| (c.id.as_str(), c))
        .collect();
    let mut found = Found::new(policy);

    // A pod's sandbox (pause) shares the pod's namespaces and runs nothing of the pod's: its
    // findings would repeat the real containers' under a name no pod spec has.
    let sandbox = |id: &str| containers.get(id).is_some_and(|c| c.sandbox);
    let privileged = PrivilegedCapabilities::of(evidence);
    for process in evidence.processes.iter().filter(|p| !p.kernel_thread) {
        let container = process
            .container_id
            .as_deref()
            .map(|id| (id, containers.get(id).copied()));
        if let Some((id, container)) = container {
            if sandbox(id) {
                continue;
            }
            container_process_rules(policy, id, process, &mut found);
            privileged_rule(privileged, id, container, process, &mut found);
            let pod = container.and_then(|c| c.pod.as_ref());
            let image = pod.and_then(|p| p.image.as_deref());
            let scope = Scope::Container(id, image, pod.map(|p| p.namespace.as_str()));
            binary_rules(policy, scope, process, &mut found);
            unverifiable_process_rule(policy, scope, process, &mut found);
            if let Some(f) = crate::image_content::process_mismatch(id, container, process) {
                found.add(f);
            }
        } else {
            binary_rules(policy, Scope::Host, process, &mut found);
            unverifiable_process_rule(policy, Scope::Host, process, &mut found);
        }
    }

    let mut lowest_pid: HashMap<&str, i32> = HashMap::new();
    for process in evidence.processes {
        if let Some(id) = process.container_id.as_deref() {
            let pid = lowest_pid.entry(id).or_insert(process.pid);
            *pid = (*pid).min(process.pid);
        }
    }
    // A container kept only for its exited processes' sake limits nothing any more.
    for container in evidence
        .containers
        .iter()
        .filter(|c| !c.sandbox && !c.exited)
    {
        let pid = container
            .pids
            .iter()
            .copied()
            .chain(lowest_pid.get(container.id.as_str()).copied())
            .min();
        limit_rules(policy, container, pid, &mut found);
        if let Some(f) = crate::image_content::altered_layer(container, pid) {
            found.add(f);
        }
    }

    for file in evidence.files.iter().filter(|f| !sandbox(&f.container_id)) {
        let image = containers
            .get(file.container_id.as_str())
            .and_then(|c| c.pod.as_ref()?.image.as_deref());
        file_rules(policy, image, file, &mut found);
        unverifiable_file_rule(policy, image, file, &mut found);
        let container = containers.get(file.container_id.as_str()).copied();
        if let Some(f) = crate::image_content::file_mismatch(container, file) {
            found.add(f);
        }
    }

    for gap in evidence.gaps {
        let pid = containers
            .get(gap.container_id.as_str())
            .and_then(|c| c.pids.first().copied())
            .or_else(|| lowest_pid.get(gap.container_id.as_str()).copied());
        gap_rule(gap, pid, &mut found);
    }

    found.finish(&containers)
}

/// Where a process or file lives, for matching trusted binaries and writing messages.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    Host,
    /// A container id, and its image and pod namespace when pod metadata is known.
    Container(&'a str, Option<&'a str>, Option<&'a str>),
}

impl<'a> Scope<'a> {
    fn container_id(self) -> Option<&'a str> {
        match self {
            Scope::Host => None,
            Scope::Container(id, ..) => Some(id),
        }
    }

    /// How messages name it ("host", "container 0123456789ab"), written only when a message
    /// is.
    fn label(self) -> ScopeLabel<'a> {
        ScopeLabel(self)
    }
}

#[derive(Clone, Copy)]
struct ScopeLabel<'a>(Scope<'a>);

impl std::fmt::Display for ScopeLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Scope::Host => f.write_str("host"),
            Scope::Container(id, ..) => write!(f, "container {}", short_id(id)),
        }
    }
}

fn who(process: &Process) -> String {
    format!("pid {} ({})", process.pid, process.command)
}

/// The bounding sets that make a container privileged (see [`privileged_rule`]).
#[derive(Debug, Clone, Copy)]
struct PrivilegedCapabilities {
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
    fn of(evidence: &Evidence) -> PrivilegedCapabilities {
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
fn privileged_rule(
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

fn container_process_rules(policy: &Policy, id: &str, p: &Process, found: &mut Found) {
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

/// Rules on the executable itself, for host and container processes alike.
fn binary_rules(policy: &Policy, scope: Scope, p: &Process, found: &mut Found) {
    let label = scope.label();
    let cid = scope.container_id();
    let exe = p.exe.as_deref().unwrap_or("(unknown executable)");

    if p.exe_deleted {
        let message = format!(
            "{label}: {} runs deleted or anonymous executable {exe}",
            who(p)
        );
        found.add(
            Finding::new(
                FindingKind::DeletedExecutable,
                Severity::High,
                cid,
                exe,
                message,
            )
            .with_pid(p.pid)
            .with_path(exe),
        );
    }

    let digests = Digests {
        sha256: p.sha256.as_deref(),
        sha512: p.sha512.as_deref(),
    };
    if let Some((algo, digest, reason)) = denied(policy, digests) {
        let message = format!(
            "{label}: {} runs {exe}, a denied binary ({algo} {digest}): {reason}",
            who(p)
        );
        found.add(with_digest(
            Finding::new(
                FindingKind::DeniedBinary,
                Severity::Critical,
                cid,
                exe,
                message,
            )
            .with_pid(p.pid)
            .with_path(exe),
            p.sha256.as_deref(),
        ));
    }

    if let Some(path) = p.exe.as_deref() {
        let unexpected = |message: String| {
            with_digest(
                Finding::new(
                    FindingKind::UnexpectedBinaryHash,
                    Severity::Critical,
                    cid,
                    path,
                    message,
                )
                .with_pid(p.pid)
                .with_path(path),
                p.sha256.as_deref(),
            )
        };
        if let Verdict::Unexpected(compared) = bundled(policy, scope, path, digests) {
            found.add(unexpected(format!(
                "{label}: {} runs {path} with {compared}, not a digest of {} in {}",
                who(p),
                exe_name(path),
                bundle_sources(policy, path),
            )));
        }
        if let Verdict::Unexpected(compared) = trusted(policy, scope, path, digests) {
            found.add(unexpected(format!(
                "{label}: {} runs {path} with {compared}, not a digest the policy trusts for it",
                who(p),
            )));
        }
    }
}

/// A process whose executable could not be hashed (too large, unreadable, not a regular
/// file, changed while read — a process that exited is no finding, the scan drops it):
/// no digest rule could check it, and an attacker can choose that (`truncate -s 700M`).
/// Critical when a trusted entry covers the path (as a mismatch would be); medium for any
/// other container process, and for a host process when the policy denies digests; else
/// (a host process nothing could have matched) no finding.
fn unverifiable_process_rule(policy: &Policy, scope: Scope, p: &Process, found: &mut Found) {
    let (Some(path), Some(error)) = (p.exe.as_deref(), p.hash_error.as_deref()) else {
        return;
    };
    if p.kernel_thread || p.sha256.is_some() || p.sha512.is_some() {
        return;
    }
    let no_digest = Digests {
        sha256: None,
        sha512: None,
    };
    let by_bundle = matches!(
        bundled(policy, scope, path, no_digest),
        Verdict::Unverifiable
    );
    let covered = by_bundle
        || matches!(
            trusted(policy, scope, path, no_digest),
            Verdict::Unverifiable
        );
    let severity = match (covered, scope) {
        (true, _) => Severity::Critical,
        (false, Scope::Container(..)) => Severity::Medium,
        (false, Scope::Host) if !policy.denied.is_empty() => Severity::Medium,
        (false, Scope::Host) => return,
    };
    let why = if by_bundle {
        "a binary named in a digest bundle whose digest cannot be checked"
    } else if covered {
        "a trusted binary whose digest cannot be checked"
    } else {
        "its digest cannot be checked against denied binaries"
    };
    let message = format!(
        "{}: {} runs {path}, {why}: {}",
        scope.label(),
        who(p),
        truncate_text(error, 300)
    );
    found.add(
        Finding::new(
            FindingKind::UnverifiableBinary,
            severity,
            scope.container_id(),
            path,
            message,
        )
        .with_pid(p.pid)
        .with_path(path),
    );
}

/// A setuid/capability file at a trusted path that was not hashed (over the walk's hashing
/// budget): critical, like a mismatch.
fn unverifiable_file_rule(policy: &Policy, image: Option<&str>, f: &FileEntry, found: &mut Found) {
    if f.sha256.is_some() || f.sha512.is_some() {
        return;
    }
    let scope = Scope::Container(&f.container_id, image, None);
    let no_digest = Digests {
        sha256: None,
        sha512: None,
    };
    if !matches!(
        trusted(policy, scope, &f.path, no_digest),
        Verdict::Unverifiable
    ) {
        return;
    }
    let message = format!(
        "{}: {} ({} bytes) is a trusted path but was not hashed, so its digest cannot be checked",
        scope.label(),
        f.path,
        f.size
    );
    found.add(
        Finding::new(
            FindingKind::UnverifiableBinary,
            Severity::Critical,
            Some(&f.container_id),
            f.path.as_str(),
            message,
        )
        .with_path(f.path.as_str()),
    );
}

/// A container whose filesystem inventory is incomplete: files an attacker hid past the
/// walk budget, or past the inventory bound, would otherwise go unseen. High: it is the
/// blind spot a container chooses by creating many files.
fn gap_rule(gap: &FsGap, pid: Option<i32>, found: &mut Found) {
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
        truncate_text(&gap.reason, 300),
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

/// At most `max` bytes of `text`, on a char boundary (the one cut, `nodeguard_model::text`).
fn truncate_text(text: &str, max: usize) -> &str {
    nodeguard_model::text::cut(text, max)
}

/// Folds the findings of one kind in one container past [`MAX_FINDINGS_PER_CONTAINER_KIND`]
/// into one finding (subject [`AGGREGATE_SUBJECT`], highest severity, lowest pid) that
/// counts them and lists the first subjects. `findings` must be in their final order.
fn aggregate_floods(findings: Vec<Finding>) -> Vec<Finding> {
    let mut per_group: HashMap<(FindingKind, Option<&str>), usize> = HashMap::new();
    for f in &findings {
        *per_group
            .entry((f.kind, f.container_id.as_deref()))
            .or_insert(0) += 1;
    }
    let flooded: std::collections::HashSet<(FindingKind, Option<String>)> = per_group
        .into_iter()
        .filter(|(_, n)| *n > MAX_FINDINGS_PER_CONTAINER_KIND)
        .map(|((kind, cid), _)| (kind, cid.map(str::to_string)))
        .collect();
    if flooded.is_empty() {
        return findings;
    }
    let mut out = Vec::new();
    let mut folded: BTreeMap<(FindingKind, Option<String>), Finding> = BTreeMap::new();
    for f in findings {
        let key = (f.kind, f.container_id.clone());
        if !flooded.contains(&key) {
            out.push(f);
            continue;
        }
        match folded.get_mut(&key) {
            None => {
                let mut agg = Finding::new(
                    f.kind,
                    f.severity,
                    f.container_id.as_deref(),
                    AGGREGATE_SUBJECT,
                    String::new(),
                );
                agg.pid = f.pid;
                agg.namespace = f.namespace.clone();
                agg.pod = f.pod.clone();
                agg.container_name = f.container_name.clone();
                agg.aggregate = Some(Aggregate {
                    count: 1,
                    subjects: vec![f.subject],
                });
                folded.insert(key, agg);
            }
            Some(agg) => {
                agg.severity = agg.severity.max(f.severity);
                agg.pid = match (agg.pid, f.pid) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(a) = agg.aggregate.as_mut() {
                    a.count += 1;
                    if a.subjects.len() < AGGREGATE_SAMPLES {
                        a.subjects.push(f.subject);
                    }
                }
            }
        }
    }
    for (_, mut agg) in folded {
        if let Some(a) = &agg.aggregate {
            let scope = match agg.container_id.as_deref() {
                Some(id) => format!("container {}", short_id(id)),
                None => "host".to_string(),
            };
            let pid = agg
                .pid
                .map(|p| format!(" (lowest pid {p})"))
                .unwrap_or_default();
            agg.message = one_line(&format!(
                "{scope}: {} {} findings{pid}, shown as one; first {}: {}",
                a.count,
                agg.kind,
                a.subjects.len(),
                a.subjects.join(", ")
            ));
        }
        out.push(agg);
    }
    out
}

/// `missing_*_limit` when the container's effective limits (its own and its pod's; node
/// allocatable does not count) have none. A limit that could not be read is unknown, not
/// missing: the scan's warnings say so, and no finding is raised.
fn limit_rules(policy: &Policy, c: &Container, pid: Option<i32>, found: &mut Found) {
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

fn file_rules(policy: &Policy, image: Option<&str>, f: &FileEntry, found: &mut Found) {
    let scope = Scope::Container(&f.container_id, image, None);
    let label = scope.label();
    let cid = Some(f.container_id.as_str());
    let upper = f.layer == Layer::Upper;
    let (severity, where_) = if upper {
        (Severity::High, "the container's writable layer")
    } else if f.layer == Layer::Image {
        (Severity::Medium, "the image")
    } else {
        (Severity::Medium, "an unknown layer")
    };

    let setuid_allowed = !upper && policy.allowed_setuid.iter().any(|g| g.is_match(&f.path));
    let bits = [
        (f.setuid, FindingKind::SetuidFile, "setuid", f.uid, "uid"),
        (f.setgid, FindingKind::SetgidFile, "setgid", f.gid, "gid"),
    ];
    for (set, kind, bit, owner, owner_kind) in bits {
        if set && !setuid_allowed {
            let severity = setuid_severity(policy, f, severity);
            let message = format!(
                "{label}: {bit} file {} ({owner_kind} {owner}, mode {:o}) in {where_}",
                f.path, f.mode
            );
            found.add(file_finding(kind, severity, cid, f, message));
        }
    }

    if let Some(text) = f.capabilities.as_deref() {
        let allowed = !upper
            && policy.allowed_file_capabilities.iter().any(|a| {
                a.path.is_match(&f.path)
                    && match &a.capabilities {
                        None => true,
                        Some(list) => {
                            let allowed = list.0.iter().fold(0u64, |m, c| m | (1u64 << c.0));
                            file_capability_mask(text).is_some_and(|mask| mask & !allowed == 0)
                        }
                    }
            });
        if !allowed {
            let message = format!(
                "{label}: {} carries file capabilities {text} in {where_}",
                f.path
            );
            found.add(file_finding(
                FindingKind::FileCapability,
                capability_severity(policy, f, text, severity),
                cid,
                f,
                message,
            ));
        }
    }

    let digests = Digests {
        sha256: f.sha256.as_deref(),
        sha512: f.sha512.as_deref(),
    };
    if let Some((algo, digest, reason)) = denied(policy, digests) {
        let message = format!(
            "{label}: {} in {where_} is a denied binary ({algo} {digest}): {reason}",
            f.path
        );
        found.add(file_finding(
            FindingKind::DeniedBinary,
            Severity::Critical,
            cid,
            f,
            message,
        ));
    }
    if let Verdict::Unexpected(compared) = trusted(policy, scope, &f.path, digests) {
        let message = format!(
            "{label}: {} in {where_} has {compared}, not a digest the policy trusts for it",
            f.path,
        );
        found.add(file_finding(
            FindingKind::UnexpectedBinaryHash,
            Severity::Critical,
            cid,
            f,
            message,
        ));
    }
}

/// A setuid/setgid file the distribution ships (`distro_setuid`), found where the image put
/// it, is `low` unless the policy is `strict_setuid`; anything else keeps `default`.
fn setuid_severity(policy: &Policy, f: &FileEntry, default: Severity) -> Severity {
    let distro = f.layer == Layer::Image
        && !policy.strict_setuid
        && crate::distro_setuid::is_distribution_setuid(&f.path, f.uid);
    if distro {
        Severity::Low
    } else {
        default
    }
}

/// Like [`setuid_severity`], for a file capability the distribution sets itself (ping's
/// `cap_net_raw`), exactly as it sets it.
fn capability_severity(policy: &Policy, f: &FileEntry, caps: &str, default: Severity) -> Severity {
    let distro = f.layer == Layer::Image
        && !policy.strict_setuid
        && crate::distro_setuid::is_distribution_capability(&f.path, f.uid, caps);
    if distro {
        Severity::Low
    } else {
        default
    }
}

fn file_finding(
    kind: FindingKind,
    severity: Severity,
    cid: Option<&str>,
    f: &FileEntry,
    message: String,
) -> Finding {
    with_digest(
        Finding::new(kind, severity, cid, f.path.as_str(), message).with_path(f.path.as_str()),
        f.sha256.as_deref(),
    )
}

fn with_digest(finding: Finding, sha256: Option<&str>) -> Finding {
    match sha256 {
        Some(digest) => finding.with_sha256(digest),
        None => finding,
    }
}

#[derive(Debug, Clone, Copy)]
struct Digests<'a> {
    sha256: Option<&'a str>,
    sha512: Option<&'a str>,
}

/// The first denied entry either digest matches: `(algorithm, digest, reason)`.
fn denied<'p>(policy: &'p Policy, digests: Digests) -> Option<(&'static str, String, &'p str)> {
    policy.denied.iter().find_map(|d| {
        let by256 = d
            .sha256
            .as_ref()
            .zip(digests.sha256)
            .filter(|(want, got)| want.0.eq_ignore_ascii_case(got))
            .map(|(want, _)| ("sha256", want.0.clone()));
        let by512 = d
            .sha512
            .as_ref()
            .zip(digests.sha512)
            .filter(|(want, got)| want.0.eq_ignore_ascii_case(got))
            .map(|(want, _)| ("sha512", want.0.clone()));
        by256
            .or(by512)
            .map(|(algo, digest)| (algo, digest, d.reason.as_str()))
    })
}

enum Verdict {
    /// No trusted entry covers this path (in this scope).
    NotCovered,
    Allowed,
    /// Covered, but no digest was computed that an entry lists (e.g. hashing failed, or
    /// only sha512 is listed and the scan did not compute it): nothing can be said.
    Unverifiable,
    /// Covered and compared, and no digest matched; says what was compared
    /// (`sha256 …`, `sha512 …`).
    Unexpected(String),
}

/// Checks `path` against every trusted entry that covers it; their digests pool together.
///
/// An entry with an `image` covers container paths only, and only containers whose image
/// matches — or is unknown (no pod metadata), so a missing API server never switches the
/// check off.
fn trusted(policy: &Policy, scope: Scope, path: &str, digests: Digests) -> Verdict {
    let mut covered = false;
    let mut compared256 = false;
    let mut compared512 = false;
    for entry in &policy.trusted {
        let image_ok = match (&entry.image, scope) {
            (None, _) => true,
            (Some(_), Scope::Host) => false,
            (Some(_), Scope::Container(_, None, _)) => true,
            (Some(glob), Scope::Container(_, Some(image), _)) => glob.is_match(image),
        };
        if !image_ok || !entry.path.is_match(path) {
            continue;
        }
        covered = true;
        if let Some(got) = digests.sha256.filter(|_| !entry.sha256.is_empty()) {
            compared256 = true;
            if entry.sha256.iter().any(|d| d.0.eq_ignore_ascii_case(got)) {
                return Verdict::Allowed;
            }
        }
        if let Some(got) = digests.sha512.filter(|_| !entry.sha512.is_empty()) {
            compared512 = true;
            if entry.sha512.iter().any(|d| d.0.eq_ignore_ascii_case(got)) {
                return Verdict::Allowed;
            }
        }
    }
    let mut compared = Vec::new();
    if let Some(d) = digests.sha256.filter(|_| compared256) {
        compared.push(format!("sha256 {d}"));
    }
    if let Some(d) = digests.sha512.filter(|_| compared512) {
        compared.push(format!("sha512 {d}"));
    }
    match (covered, compared.is_empty()) {
        (false, _) => Verdict::NotCovered,
        (true, true) => Verdict::Unverifiable,
        (true, false) => Verdict::Unexpected(compared.join(", ")),
    }
}

/// The file name of an executable path: what digest bundles are keyed by.
fn exe_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Checks an executable against the digest bundles' digests for its file name, pooled over
/// every bundle and release that lists the name, for the processes
/// `digest_bundles_apply_to` covers.
fn bundled(policy: &Policy, scope: Scope, path: &str, digests: Digests) -> Verdict {
    let covered = match (policy.bundles_apply_to, scope) {
        (_, Scope::Host) | (BundlesApplyTo::All, _) => true,
        (BundlesApplyTo::HostAndKubeSystem, Scope::Container(_, _, namespace)) => {
            namespace == Some("kube-system")
        }
        (BundlesApplyTo::Host, Scope::Container(..)) => false,
    };
    if !covered {
        return Verdict::NotCovered;
    }
    let Some(known) = policy.bundles.by_name.get(exe_name(path)) else {
        return Verdict::NotCovered;
    };
    let mut compared256 = false;
    let mut compared512 = false;
    for k in known {
        if let (Some(want), Some(got)) = (k.sha256.as_deref(), digests.sha256) {
            compared256 = true;
            if want.eq_ignore_ascii_case(got) {
                return Verdict::Allowed;
            }
        }
        if let (Some(want), Some(got)) = (k.sha512.as_deref(), digests.sha512) {
            compared512 = true;
            if want.eq_ignore_ascii_case(got) {
                return Verdict::Allowed;
            }
        }
    }
    let mut compared = Vec::new();
    if let Some(d) = digests.sha256.filter(|_| compared256) {
        compared.push(format!("sha256 {d}"));
    }
    if let Some(d) = digests.sha512.filter(|_| compared512) {
        compared.push(format!("sha512 {d}"));
    }
    if compared.is_empty() {
        Verdict::Unverifiable
    } else {
        Verdict::Unexpected(compared.join(", "))
    }
}

/// Where the bundles' digests for this executable's name came from, for a message: the
/// bundle file and the entry's first source, for at most three entries.
fn bundle_sources(policy: &Policy, path: &str) -> String {
    let Some(known) = policy.bundles.by_name.get(exe_name(path)) else {
        return String::new();
    };
    let mut parts: Vec<String> = known
        .iter()
        .take(3)
        .map(|k| {
            format!(
                "digest bundle {} (from {})",
                truncate_text(&k.bundle, 200),
                truncate_text(&k.source, 300)
            )
        })
        .collect();
    if known.len() > 3 {
        parts.push(format!("{} more", known.len() - 3));
    }
    parts.join("; ")
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

/// The capabilities named in `getcap` text (`cap_net_raw=ep`, `cap_a,cap_b+ep`, `=ep` for
/// all). `None` when a name is not understood, so the file is never taken as allowed.
fn file_capability_mask(text: &str) -> Option<u64> {
    let mut mask = 0u64;
    for clause in text.split_whitespace() {
        let end = clause.find(['=', '+', '-']).unwrap_or(clause.len());
        let names = &clause[..end];
        if names.is_empty() && end < clause.len() {
            mask = u64::MAX;
            continue;
        }
        for name in names.split(',') {
            if name.eq_ignore_ascii_case("all") {
                mask = u64::MAX;
            } else {
                mask |= 1u64 << capability_number(name)?;
            }
        }
    }
    Some(mask)
}

type Key = (FindingKind, Option<String>, String);

/// A finding's identity as [`Found`] looks it up: a [`Key`] in the map, borrowed parts for a
/// lookup, so that asking whether a finding would be kept allocates nothing (it is asked for
/// every process and rule, and mostly answered no).
trait KeyView {
    fn view(&self) -> (FindingKind, Option<&str>, &str);
}

impl KeyView for Key {
    fn view(&self) -> (FindingKind, Option<&str>, &str) {
        (self.0, self.1.as_deref(), &self.2)
    }
}

impl KeyView for (FindingKind, Option<&str>, &str) {
    fn view(&self) -> (FindingKind, Option<&str>, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

// Ordered as `Key` is (a tuple orders field by field; `Option<String>` as `Option<&str>`).
impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.view().cmp(&other.view())
    }
}

/// The findings so far, one per `(kind, container, subject)`, keeping the lowest pid.
/// Of two findings with the same key, the one of lower rank is kept: a pid beats none, a
/// lower pid beats a higher one.
fn rank(pid: Option<i32>) -> (u8, i32) {
    pid.map_or((1, 0), |p| (0, p))
}

struct Found<'p> {
    policy: &'p Policy,
    by_key: BTreeMap<Key, Finding>,
}

impl<'p> Found<'p> {
    fn new(policy: &'p Policy) -> Self {
        Found {
            policy,
            by_key: BTreeMap::new(),
        }
    }

    /// Whether a finding of `kind` on (`container`, `subject`) from process `pid` would be
    /// kept by [`Found::add`]: its kind is enabled and no finding with that key from a lower
    /// pid is in yet.
    fn keeps(&self, kind: FindingKind, container: Option<&str>, subject: &str, pid: i32) -> bool {
        self.would_keep(kind, container, subject, Some(pid))
    }

    /// [`Found::keeps`] for a finding that may have no pid (a pid beats none).
    fn would_keep(
        &self,
        kind: FindingKind,
        container: Option<&str>,
        subject: &str,
        pid: Option<i32>,
    ) -> bool {
        if !self.policy.is_enabled(kind) {
            return false;
        }
        let key: &dyn KeyView = &(kind, container, subject);
        self.by_key
            .get(key)
            .is_none_or(|existing| rank(existing.pid) > rank(pid))
    }

    fn add(&mut self, finding: Finding) {
        let kept = self.would_keep(
            finding.kind,
            finding.container_id.as_deref(),
            &finding.subject,
            finding.pid,
        );
        if kept {
            let key = (
                finding.kind,
                finding.container_id.clone(),
                finding.subject.clone(),
            );
            self.by_key.insert(key, finding);
        }
    }

    fn finish(self, containers: &HashMap<&str, &Container>) -> Vec<Finding> {
        let policy = self.policy;
        let mut out: Vec<Finding> = self
            .by_key
            .into_values()
            .filter_map(|mut f| {
                let pod = f
                    .container_id
                    .as_deref()
                    .and_then(|id| containers.get(id))
                    .and_then(|c| c.pod.as_ref());
                if policy.exemptions.iter().any(|e| exempts(e, f.kind, pod)) {
                    return None;
                }
                if let Some(severity) = policy.severity.get(&f.kind) {
                    f.severity = *severity;
                }
                if let Some(pod) = pod {
                    f.namespace = Some(pod.namespace.clone());
                    f.pod = Some(pod.name.clone());
                    f.container_name = pod.container_name.clone();
                }
                f.message = one_line(&f.message);
                Some(f)
            })
            .collect();
        out.sort_by(|a, b| {
            (a.kind, &a.container_id, &a.subject).cmp(&(b.kind, &b.container_id, &b.subject))
        });
        let out = fold_into_privileged(out);
        let mut out = aggregate_floods(out);
        out.sort_by(|a, b| {
            (Reverse(a.severity), a.kind, &a.container_id, &a.subject).cmp(&(
                Reverse(b.severity),
                b.kind,
                &b.container_id,
                &b.subject,
            ))
        });
        out
    }
}

/// A privileged container holds every capability and runs unconfined, so one
/// `dangerous_capability` per capability (15 with the default list) and its
/// `seccomp_disabled` only repeat what its `privileged_container` says and bury the next
/// container's findings. Once exemptions and severities are applied, a container whose
/// `privileged_container` finding stands keeps no `dangerous_capability` or
/// `seccomp_disabled` finding: they are named in the privileged finding's message instead.
/// Where the privileged finding is disabled or exempted, they stay.
fn fold_into_privileged(findings: Vec<Finding>) -> Vec<Finding> {
    let privileged: BTreeSet<String> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::PrivilegedContainer)
        .filter_map(|f| f.container_id.clone())
        .collect();
    if privileged.is_empty() {
        return findings;
    }
    let mut folded: BTreeMap<String, Vec<(Severity, String)>> = BTreeMap::new();
    let mut no_seccomp: BTreeSet<String> = BTreeSet::new();
    let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings {
        match &f.container_id {
            Some(id) if f.kind == FindingKind::DangerousCapability && privileged.contains(id) => {
                folded
                    .entry(id.clone())
                    .or_default()
                    .push((f.severity, f.subject));
            }
            Some(id) if f.kind == FindingKind::SeccompDisabled && privileged.contains(id) => {
                no_seccomp.insert(id.clone());
            }
            _ => kept.push(f),
        }
    }
    for f in kept
        .iter_mut()
        .filter(|f| f.kind == FindingKind::PrivilegedContainer)
    {
        let Some(id) = f.container_id.as_ref() else {
            continue;
        };
        if let Some(caps) = folded.get_mut(id) {
            caps.sort_by(|a, b| (Reverse(a.0), &a.1).cmp(&(Reverse(b.0), &b.1)));
            caps.dedup_by(|a, b| a.1 == b.1);
            let names: Vec<&str> = caps.iter().map(|(_, name)| name.as_str()).collect();
            let plural = if names.len() == 1 { "y" } else { "ies" };
            f.message = format!(
                "{}; among them {} dangerous capabilit{plural}: {}",
                f.message,
                names.len(),
                names.join(", ")
            );
        }
        if no_seccomp.contains(id) {
            f.message = format!("{}; it runs without a seccomp filter", f.message);
        }
    }
    kept
}

/// An exemption applies when every selector it gives matches. Without pod metadata (host,
/// or no API server) only exemptions that select by kind alone can match.
fn exempts(e: &Exemption, kind: FindingKind, pod: Option<&PodRef>) -> bool {
    if let Some(kinds) = &e.kinds {
        if !kinds.contains(&kind) {
            return false;
        }
    }
    let selects_pods = e.namespaces.is_some() || e.pods.is_some() || e.containers.is_some();
    if !selects_pods {
        return true;
    }
    let Some(pod) = pod else {
        return false;
    };
    let any = |globs: &Option<Vec<crate::spec::NamePattern>>, value: Option<&str>| match globs {
        None => true,
        Some(globs) => value.is_some_and(|v| globs.iter().any(|g| g.is_match(v))),
    };
    any(&e.namespaces, Some(&pod.namespace))
        && any(&e.pods, Some(&pod.name))
        && any(&e.containers, pod.container_name.as_deref())
}

/// Keeps a message on one line: control and bidi characters (from a hostile `comm`, path or
/// image) escaped, by the one cleaning every sink uses (`nodeguard_model::text`).
fn one_line(text: &str) -> String {
    nodeguard_model::escape_controls(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_getcap_text() {
        let raw = capability_number("CAP_NET_RAW").unwrap();
        let admin = capability_number("CAP_NET_ADMIN").unwrap();
        assert_eq!(file_capability_mask("cap_net_raw=ep"), Some(1 << raw));
        assert_eq!(
            file_capability_mask("cap_net_admin,cap_net_raw+ep"),
            Some((1 << raw) | (1 << admin))
        );
        assert_eq!(file_capability_mask("=ep"), Some(u64::MAX));
        assert_eq!(file_capability_mask("cap_bogus=ep"), None);
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(one_line("pid 1 (a\nb)"), "pid 1 (a\\nb)");
        assert_eq!(one_line("plain"), "plain");
    }
}
