//! Findings: what nodeguard flags, how bad it is, and a stable identity for each.

use crate::fnv::{fnv1a, FNV_BASIS};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How bad a finding is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown severity or finding kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub expected: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} {:?} (expected one of: {})",
            self.what, self.name, self.expected
        )
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Severity {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownName {
                what: "severity",
                name: s.to_string(),
                expected: "low, medium, high, critical".to_string(),
            })
    }
}

macro_rules! finding_kinds {
    ($( $(#[$doc:meta])* $variant:ident => $snake:literal, $reason:literal; )*) => {
        /// What a finding is about. Serialized snake_case (`binary_drift`); Kubernetes Event
        /// reasons are the UpperCamelCase form (`BinaryDrift`). Both are stable contracts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FindingKind {
            $( $(#[$doc])* $variant, )*
        }

        impl FindingKind {
            pub const ALL: &'static [FindingKind] = &[$(FindingKind::$variant,)*];

            /// The JSON / metric label form, e.g. `binary_drift`.
            pub fn as_str(self) -> &'static str {
                match self { $(FindingKind::$variant => $snake,)* }
            }

            /// The Kubernetes Event reason, e.g. `BinaryDrift`.
            pub fn reason(self) -> &'static str {
                match self { $(FindingKind::$variant => $reason,)* }
            }
        }
    };
}

finding_kinds! {
    /// A process holds a capability from the dangerous list in its effective set.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::capability_masks`](crate::Process::capability_masks)`.effective` (and
    /// [`Process::capabilities`](crate::Process::capabilities)), from `CapEff` of
    /// `/proc/PID/status`, `crates/nodeguard-collect/src/process.rs`.
    DangerousCapability => "dangerous_capability", "DangerousCapability";
    /// A container is privileged (`docker run --privileged`, `privileged: true`): its
    /// bounding set holds every capability its runtime could grant, every device is allowed
    /// and nothing of `/proc` or `/sys` is masked or read-only.
    ///
    /// Rule: `privileged_rule` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::capability_masks`](crate::Process::capability_masks)`.bounding` against the
    /// host's bounding set, from `CapBnd` of `/proc/PID/status` (and of pid 1),
    /// `crates/nodeguard-collect/src/process.rs`; [`Container::confinement`](crate::Container::confinement)
    /// from the devices cgroup and the container's mount table,
    /// `crates/nodeguard-collect/src/confinement.rs`.
    PrivilegedContainer => "privileged_container", "PrivilegedContainer";
    /// A container has no memory limit anywhere up its cgroup hierarchy.
    ///
    /// Rule: `limit_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Container::effective_limits`](crate::Container::effective_limits)`.memory_bytes` (unless
    /// in [`Container::unknown_limits`](crate::Container::unknown_limits)), from cgroup files up
    /// the hierarchy, `crates/nodeguard-collect/src/limits.rs`.
    MissingMemoryLimit => "missing_memory_limit", "MissingMemoryLimit";
    /// A container has no CPU quota anywhere up its cgroup hierarchy.
    ///
    /// Rule: `limit_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Container::effective_limits`](crate::Container::effective_limits)`.cpu_cores` (unless in
    /// [`Container::unknown_limits`](crate::Container::unknown_limits)), from cgroup files up the
    /// hierarchy, `crates/nodeguard-collect/src/limits.rs`.
    MissingCpuLimit => "missing_cpu_limit", "MissingCpuLimit";
    /// A container has no pids limit anywhere up its cgroup hierarchy.
    ///
    /// Rule: `limit_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Container::effective_limits`](crate::Container::effective_limits)`.pids` (unless in
    /// [`Container::unknown_limits`](crate::Container::unknown_limits)), from cgroup files up the
    /// hierarchy, `crates/nodeguard-collect/src/limits.rs`.
    MissingPidsLimit => "missing_pids_limit", "MissingPidsLimit";
    /// A container process runs with effective uid 0 (as seen from the host).
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::uid`](crate::Process::uid), from `Uid` of `/proc/PID/status`,
    /// `crates/nodeguard-collect/src/process.rs`.
    RunsAsRoot => "runs_as_root", "RunsAsRoot";
    /// A container process may gain privileges through setuid or file capabilities.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::no_new_privs`](crate::Process::no_new_privs), from `NoNewPrivs` of
    /// `/proc/PID/status`, `crates/nodeguard-collect/src/process.rs`.
    NoNewPrivsDisabled => "no_new_privs_disabled", "NoNewPrivsDisabled";
    /// A container process runs without any seccomp filter.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::seccomp`](crate::Process::seccomp), from `Seccomp` of `/proc/PID/status`,
    /// `crates/nodeguard-collect/src/process.rs`.
    SeccompDisabled => "seccomp_disabled", "SeccompDisabled";
    /// A container process shares the host's pid namespace.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Namespaces::shared_with_host`](crate::Namespaces::shared_with_host) of
    /// [`Process::namespaces`](crate::Process::namespaces), from `/proc/PID/ns/*` against pid 1's,
    /// `crates/nodeguard-collect/src/process.rs`.
    HostPidNamespace => "host_pid_namespace", "HostPidNamespace";
    /// A container process shares the host's network namespace.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Namespaces::shared_with_host`](crate::Namespaces::shared_with_host) of
    /// [`Process::namespaces`](crate::Process::namespaces), from `/proc/PID/ns/*` against pid 1's,
    /// `crates/nodeguard-collect/src/process.rs`.
    HostNetworkNamespace => "host_network_namespace", "HostNetworkNamespace";
    /// A container process shares the host's IPC namespace.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Namespaces::shared_with_host`](crate::Namespaces::shared_with_host) of
    /// [`Process::namespaces`](crate::Process::namespaces), from `/proc/PID/ns/*` against pid 1's,
    /// `crates/nodeguard-collect/src/process.rs`.
    HostIpcNamespace => "host_ipc_namespace", "HostIpcNamespace";
    /// A container process shares the host's UTS namespace.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Namespaces::shared_with_host`](crate::Namespaces::shared_with_host) of
    /// [`Process::namespaces`](crate::Process::namespaces), from `/proc/PID/ns/*` against pid 1's,
    /// `crates/nodeguard-collect/src/process.rs`.
    HostUtsNamespace => "host_uts_namespace", "HostUtsNamespace";
    /// A process runs an executable that was deleted or never had a path (memfd): fileless.
    ///
    /// Rule: `binary_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::exe_deleted`](crate::Process::exe_deleted), from `/proc/PID/exe` link text,
    /// `crates/nodeguard-collect/src/process.rs`.
    DeletedExecutable => "deleted_executable", "DeletedExecutable";
    /// A file with the setuid bit inside a container filesystem.
    ///
    /// Rule: `file_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`FileEntry::setuid`](crate::FileEntry::setuid), from the walk's `fstatat`,
    /// `crates/nodeguard-fscan/src/walk.rs`.
    SetuidFile => "setuid_file", "SetuidFile";
    /// A file with the setgid bit inside a container filesystem.
    ///
    /// Rule: `file_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`FileEntry::setgid`](crate::FileEntry::setgid), from the walk's `fstatat`,
    /// `crates/nodeguard-fscan/src/walk.rs`.
    SetgidFile => "setgid_file", "SetgidFile";
    /// A file carrying file capabilities (`security.capability`) inside a container filesystem.
    ///
    /// Rule: `file_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`FileEntry::capabilities`](crate::FileEntry::capabilities), from `security.capability`
    /// xattr, `crates/nodeguard-fscan/src/walk.rs` + `caps.rs`.
    FileCapability => "file_capability", "FileCapability";
    /// A process runs an executable from the container's writable layer, not from the image.
    ///
    /// Rule: `container_process_rules` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::exe_layer`](crate::Process::exe_layer), from overlay layers from mountinfo,
    /// `crates/nodeguard-collect/src/layer.rs`.
    BinaryDrift => "binary_drift", "BinaryDrift";
    /// A trusted binary's digest is not one the policy allows.
    ///
    /// Rule: `binary_rules` and `file_rules` (through `trusted`) in
    /// `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::sha256`](crate::Process::sha256)/[`Process::sha512`](crate::Process::sha512),
    /// [`FileEntry::sha256`](crate::FileEntry::sha256)/[`FileEntry::sha512`](crate::FileEntry::sha512),
    /// from `crates/nodeguard-hash` (executables via `nodeguard-scan`, files via
    /// `crates/nodeguard-fscan/src/walk.rs`).
    UnexpectedBinaryHash => "unexpected_binary_hash", "UnexpectedBinaryHash";
    /// A process or file matches a denied digest (an indicator of compromise).
    ///
    /// Rule: `binary_rules` and `file_rules` (through `denied`) in
    /// `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::sha256`](crate::Process::sha256)/[`Process::sha512`](crate::Process::sha512),
    /// [`FileEntry::sha256`](crate::FileEntry::sha256)/[`FileEntry::sha512`](crate::FileEntry::sha512),
    /// from `crates/nodeguard-hash` (executables via `nodeguard-scan`, files via
    /// `crates/nodeguard-fscan/src/walk.rs`).
    DeniedBinary => "denied_binary", "DeniedBinary";
    /// A process's executable (or a file a trusted entry covers) could not be hashed — too
    /// large, unreadable, not a regular file — so no digest rule could check it.
    ///
    /// Rule: `unverifiable_process_rule` and `unverifiable_file_rule` in
    /// `crates/nodeguard-policy/src/evaluate.rs`. Evidence:
    /// [`Process::hash_error`](crate::Process::hash_error); a [`FileEntry`](crate::FileEntry)
    /// without digest, from `crates/nodeguard-hash` / `crates/nodeguard-fscan/src/walk.rs`.
    UnverifiableBinary => "unverifiable_binary", "UnverifiableBinary";
    /// A container's filesystem walk hit its file or time budget, or its inventory was
    /// capped: setuid/setgid/file-capability files past that point are not reported.
    ///
    /// Rule: `gap_rule` in `crates/nodeguard-policy/src/evaluate.rs`. Evidence: `FsGap`
    /// (`nodeguard_policy::Evidence::gaps`), from `Incomplete` of
    /// `crates/nodeguard-fscan/src/scanner.rs`.
    FilesystemScanIncomplete => "filesystem_scan_incomplete", "FilesystemScanIncomplete";
    /// A container process runs (or an image layer holds a setuid/setgid/capability file
    /// whose) bytes differ from the file its image has at that path: the image's layer was
    /// altered on the node after it was pulled.
    ///
    /// Rule: `image_content_rules` in `crates/nodeguard-policy/src/image_content.rs`.
    /// Evidence: [`Process::image_verdict`](crate::Process::image_verdict) and
    /// [`FileEntry::image_verdict`](crate::FileEntry::image_verdict), from the image indexes
    /// of `crates/nodeguard-image`, judged in `crates/nodeguard-scan/src/image_verdicts.rs`.
    ImageContentMismatch => "image_content_mismatch", "ImageContentMismatch";
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FindingKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FindingKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s.trim() || k.reason() == s.trim())
            .ok_or_else(|| UnknownName {
                what: "finding kind",
                name: s.to_string(),
                expected: FindingKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// One thing nodeguard flags.
///
/// `id` is stable across scans and restarts: it is derived from the kind, the container (or
/// `host`) and the subject (capability name, limit, path, digest), never from a pid, so the
/// same problem keeps its id while it lasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub kind: FindingKind,
    pub severity: Severity,
    /// The container, or null for a host process or host file.
    pub container_id: Option<String>,
    /// A process that shows the problem (the lowest pid when several do), if any.
    pub pid: Option<i32>,
    /// What exactly: a capability name, `memory`, a path, a namespace.
    pub subject: String,
    /// Path of the file or executable involved, as the container sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SHA-256 of the file or executable involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// One line for humans.
    pub message: String,
    /// Kubernetes names, when known.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub container_name: Option<String>,
    /// Present when this finding stands for many of one kind in one container (past
    /// [`MAX_FINDINGS_PER_CONTAINER_KIND`]): how many, and the first subjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

/// Beyond this many findings of one kind in one container, they are folded into one
/// finding with an [`Aggregate`], so a container cannot flood the report, the metrics or
/// the Events with findings.
pub const MAX_FINDINGS_PER_CONTAINER_KIND: usize = 20;

/// How many subjects an aggregated finding lists.
pub const AGGREGATE_SAMPLES: usize = 10;

/// What an aggregated finding stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// How many findings (at least) it stands for.
    pub count: u64,
    /// The first subjects (paths, capability names) in order, at most [`AGGREGATE_SAMPLES`].
    pub subjects: Vec<String>,
}

/// The subject of an aggregated finding, so its id stays stable while it lasts.
pub const AGGREGATE_SUBJECT: &str = "(aggregated)";

impl Finding {
    /// Builds a finding whose id is derived from `(kind, container, subject)`.
    pub fn new(
        kind: FindingKind,
        severity: Severity,
        container_id: Option<&str>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Finding {
        let subject = subject.into();
        Finding {
            id: finding_id(kind, container_id, &subject),
            kind,
            severity,
            container_id: container_id.map(str::to_string),
            pid: None,
            subject,
            path: None,
            sha256: None,
            message: message.into(),
            namespace: None,
            pod: None,
            container_name: None,
            aggregate: None,
        }
    }

    pub fn with_pid(mut self, pid: i32) -> Finding {
        self.pid = Some(pid);
        self
    }

    pub fn with_path(mut self, path: impl Into<String>) -> Finding {
        self.path = Some(path.into());
        self
    }

    pub fn with_sha256(mut self, digest: impl Into<String>) -> Finding {
        self.sha256 = Some(digest.into());
        self
    }
}

/// The stable id of a finding: 16 hex digits of FNV-1a over `kind \0 container|host \0 subject`.
pub fn finding_id(kind: FindingKind, container_id: Option<&str>, subject: &str) -> String {
    let parts = [
        kind.as_str().as_bytes(),
        b"\0",
        container_id.unwrap_or("host").as_bytes(),
        b"\0",
        subject.as_bytes(),
    ];
    let hash = fnv1a(FNV_BASIS, parts.into_iter().flatten().copied());
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding ids are a contract (the API, Events and reports name findings by them): these
    /// values were computed before FNV-1a got its own module and must never change.
    #[test]
    fn finding_ids_are_pinned() {
        assert_eq!(
            finding_id(FindingKind::BinaryDrift, Some("abc123"), "/usr/bin/x"),
            "a30f099288c2ea20"
        );
        assert_eq!(
            finding_id(FindingKind::BinaryDrift, None, "/usr/bin/x"),
            "54f8da9d0a4bfbfa"
        );
    }

    #[test]
    fn severity_orders_and_parses() {
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::High < Severity::Critical);
        assert_eq!("HIGH".parse::<Severity>(), Ok(Severity::High));
        let err = "urgent".parse::<Severity>().unwrap_err();
        assert!(err.to_string().contains("urgent"));
    }

    #[test]
    fn kinds_round_trip_through_json_and_reason() {
        for kind in FindingKind::ALL {
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.as_str().parse::<FindingKind>(), Ok(*kind));
            assert_eq!(kind.reason().parse::<FindingKind>(), Ok(*kind));
            assert!(kind.reason().chars().next().unwrap().is_ascii_uppercase());
            assert!(!kind.reason().contains('_'));
        }
    }

    #[test]
    fn ids_are_stable_and_distinguish_scope() {
        let a = finding_id(FindingKind::RunsAsRoot, Some("abc"), "uid 0");
        assert_eq!(a, finding_id(FindingKind::RunsAsRoot, Some("abc"), "uid 0"));
        assert_ne!(a, finding_id(FindingKind::RunsAsRoot, Some("abd"), "uid 0"));
        assert_ne!(a, finding_id(FindingKind::RunsAsRoot, None, "uid 0"));
        assert_ne!(
            a,
            finding_id(FindingKind::SeccompDisabled, Some("abc"), "uid 0")
        );
        // A published contract (alert silences and Event dedup key on it): never change it.
        assert_eq!(
            finding_id(FindingKind::BinaryDrift, None, "/tmp/x"),
            "ef14f5c1e051dad7"
        );
        assert_eq!(a.len(), 16);
    }
}
