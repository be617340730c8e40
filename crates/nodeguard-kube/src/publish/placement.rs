//! Where a finding belongs in the cluster: the Pod its container runs in when the pod watch
//! knows it, else the Node. Shared by the Event and PolicyReport publishers, which must agree
//! (a finding's Event and its report result name the same object). Pure.

use nodeguard_model::text::clean;
use nodeguard_model::{short_id, Finding, Report, TrackedFinding};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Longest container name quoted in a field path.
const MAX_NAME_BYTES: usize = 240;

/// What an Event or a report result is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TargetKind {
    Pod,
    Node,
}

/// The object an Event regards (the `regarding` reference, without the field path). For the
/// node the uid is filled in when the Event is sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Target {
    pub kind: TargetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Target {
    pub(crate) fn node(name: &str) -> Target {
        Target {
            kind: TargetKind::Node,
            namespace: None,
            name: name.to_string(),
            uid: None,
        }
    }
}

/// Where a finding goes: the object its Event and its report result regard.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placement {
    pub target: Target,
    pub field_path: String,
    /// Container name, else a short container id, for notes.
    pub container: Option<String>,
    pub image: Option<String>,
}

/// The Pod the finding's container belongs to when its namespace, name and uid are known;
/// otherwise (host findings, containers outside pods, pods the watch has not seen) the Node.
pub(crate) fn place(finding: &Finding, report: &Report, node_name: &str) -> Placement {
    let container = finding
        .container_id
        .as_deref()
        .and_then(|id| report.container(id));
    let pod = container.and_then(|c| c.pod.as_ref());
    let namespace = finding
        .namespace
        .clone()
        .or_else(|| pod.map(|p| p.namespace.clone()))
        .filter(|s| !s.is_empty());
    let name = finding
        .pod
        .clone()
        .or_else(|| pod.map(|p| p.name.clone()))
        .filter(|s| !s.is_empty());
    let uid = container
        .and_then(|c| c.pod_uid.as_deref())
        .map(|u| u.replace('_', "-"));
    let container_name = finding
        .container_name
        .clone()
        .or_else(|| pod.and_then(|p| p.container_name.clone()))
        .filter(|s| !s.is_empty());
    let image = pod.and_then(|p| p.image.clone());
    let (target, in_pod) = match (namespace, name, uid) {
        (Some(namespace), Some(name), Some(uid)) => (
            Target {
                kind: TargetKind::Pod,
                namespace: Some(namespace),
                name,
                uid: Some(uid),
            },
            true,
        ),
        _ => (Target::node(node_name), false),
    };
    let field_path = field_path(
        in_pod.then_some(container_name.as_deref()).flatten(),
        &finding.id,
    );
    let container = container_name.or_else(|| {
        finding
            .container_id
            .as_deref()
            .map(|id| short_id(id).to_string())
    });
    Placement {
        target,
        field_path,
        container,
        image,
    }
}

/// Whether a finding [`place`]d on the Node waits for its pod's metadata instead: its
/// container belongs to a pod (the cgroup path names a pod uid) that the pod watch does not
/// know yet (agent start, kubelet status lag), and it was first seen less than `wait` ago.
/// Sent to the Node now, it would never move to the Pod; after `wait` it goes to the Node.
pub(crate) fn waits_for_pod(
    tracked: &TrackedFinding,
    placement: &Placement,
    report: &Report,
    wait: Duration,
    wall: SystemTime,
) -> bool {
    placement.target.kind == TargetKind::Node
        && tracked
            .finding
            .container_id
            .as_deref()
            .and_then(|id| report.container(id))
            .is_some_and(|c| c.pod_uid.is_some())
        && wall
            .duration_since(tracked.first_seen.0)
            .unwrap_or(Duration::ZERO)
            < wait
}

/// `spec.containers{NAME}.findings{ID}` for a pod's container (the first half is the
/// kubelet's convention for container Events), `findings{ID}` otherwise. The finding id
/// tells Events of one kind on one container apart (`kubectl get events` and tools that
/// aggregate by involved object and reason would otherwise fold them into one), and ties a
/// `Resolved` Event to its Warning.
pub(crate) fn field_path(container_name: Option<&str>, id: &str) -> String {
    match container_name {
        Some(name) => format!(
            "spec.containers{{{}}}.findings{{{id}}}",
            clean(name, MAX_NAME_BYTES)
        ),
        None => format!("findings{{{id}}}"),
    }
}
