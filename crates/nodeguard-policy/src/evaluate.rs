//! The rules: evidence in, findings out.
//!
//! `evaluate` walks the evidence once and hands each process, container, file and gap to
//! the rules of its kind (`process_rules`, `binary_rules`, `container_rules`, `file_rules`;
//! digests are compared in `digests`). Every rule adds to one `Found`, which keeps one
//! finding per `(kind, container, subject)`; `fold` then applies what spans findings
//! (exemptions, the privileged fold, flood aggregation).

mod binary_rules;
mod container_rules;
mod digests;
mod file_rules;
mod fold;
mod found;
mod process_rules;

use binary_rules::{binary_rules, unverifiable_process_rule};
use container_rules::{gap_rule, limit_rules};
use file_rules::{file_rules, unverifiable_file_rule};
use found::Found;
use nodeguard_model::{short_id, Container, FileEntry, Finding, Process};
use process_rules::{container_process_rules, privileged_rule, PrivilegedCapabilities};
use std::collections::HashMap;

use crate::policy::Policy;

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
