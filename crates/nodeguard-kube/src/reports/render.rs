//! What the reports say: the `wgpolicyk8s.io/v1alpha2` objects one node's open findings make,
//! as plain JSON. Pure: state in, objects out.

use super::PolicyReportConfig;
use crate::publish::placement::{place, waits_for_pod, TargetKind};
use nodeguard_model::text::{clean, cut};
use nodeguard_model::{fnv1a, FNV_BASIS};
use nodeguard_model::{short_id, Finding, NodeState, Severity, Timestamp, TrackedFinding};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

pub(crate) const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
/// `policy` of every result, and `source`.
pub(crate) const POLICY: &str = "nodeguard";
pub(crate) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub(crate) const NODE_LABEL: &str = "nodeguard.io/node";
/// `rule` of the result that says how many findings a capped report leaves out.
pub(crate) const OMITTED_RULE: &str = "results_omitted";
const CATEGORY: &str = "Node security";
/// Longest string field of a result (message, path, subject): a hostile file name must not
/// blow the report's size.
const MAX_FIELD_BYTES: usize = 1024;

/// Which report of this node a finding goes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// The node's ClusterPolicyReport: host findings and containers without a known pod.
    Cluster,
    /// The node's PolicyReport in this namespace: findings of that namespace's pods.
    Namespace(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Cluster => f.write_str("ClusterPolicyReport"),
            Key::Namespace(ns) => write!(f, "PolicyReport in {ns}"),
        }
    }
}

/// One report as it should be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Desired {
    /// The whole object, without `resourceVersion`.
    pub body: Value,
    /// Findings this report leaves out (over its cap).
    pub omitted: usize,
    /// [`content`] of `body`, computed once.
    pub content: Value,
}

/// `nodeguard-<node>`; a node name too long for that (names are at most 253 bytes) is cut
/// and given a hash so two long names never meet.
pub(crate) fn report_name(node: &str) -> String {
    let full = format!("nodeguard-{node}");
    if full.len() <= 253 {
        return full;
    }
    let hash = format!("{:016x}", fnv(node));
    let stem = cut(&full, 253 - 1 - hash.len());
    format!("{}-{hash}", stem.trim_end_matches(['-', '.']))
}

/// The node's name as a label value (at most 63 bytes of `[A-Za-z0-9._-]`, alphanumeric at
/// both ends); a longer name is cut and given a hash.
pub(crate) fn node_label(node: &str) -> String {
    let clean: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= 63 && trimmed == node {
        return trimmed.to_string();
    }
    let hash = format!("{:016x}", fnv(node));
    let stem = cut(trimmed, 63 - 1 - hash.len());
    let stem = stem.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if stem.is_empty() {
        hash
    } else {
        format!("{stem}-{hash}")
    }
}

/// The label selector of this node's reports.
pub(crate) fn selector(node: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={POLICY},{NODE_LABEL}={}",
        node_label(node)
    )
}

fn fnv(s: &str) -> u64 {
    fnv1a(FNV_BASIS, s.bytes())
}

/// The CRD's severity enum (`critical`, `high`, `medium`, `low`, `info`).
pub(crate) fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
    }
}

fn timestamp(t: Timestamp) -> Value {
    let d =
        t.0.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
    json!({"seconds": d.as_secs(), "nanos": d.subsec_nanos()})
}

/// One result for one finding, and the report it belongs to. `None` while a pod's container
/// waits for its pod's metadata.
fn result_of(
    t: &TrackedFinding,
    st: &NodeState,
    cfg: &PolicyReportConfig,
    wall: SystemTime,
    verdicts: &super::image_properties::VerdictsByPid,
) -> Option<(Key, Value)> {
    let f: &Finding = &t.finding;
    let placement = place(f, &st.report, &cfg.node_name);
    let (key, resource) = match placement.target.kind {
        TargetKind::Pod => {
            let ns = placement.target.namespace.clone().unwrap_or_default();
            (
                Key::Namespace(ns.clone()),
                json!({"apiVersion": "v1", "kind": "Pod", "namespace": ns,
                       "name": placement.target.name, "uid": placement.target.uid}),
            )
        }
        TargetKind::Node => {
            if waits_for_pod(t, &placement, &st.report, cfg.pod_metadata_wait, wall) {
                return None;
            }
            (
                Key::Cluster,
                json!({"apiVersion": "v1", "kind": "Node", "name": cfg.node_name}),
            )
        }
    };
    let mut props = Map::new();
    props.insert("finding_id".into(), json!(f.id));
    props.insert("node".into(), json!(cfg.node_name));
    if let Some(c) = &placement.container {
        props.insert("container".into(), json!(clean(c, 253)));
    }
    if let Some(id) = &f.container_id {
        props.insert("container_id".into(), json!(short_id(id)));
    }
    if let Some(image) = &placement.image {
        props.insert("image".into(), json!(clean(image, MAX_FIELD_BYTES)));
    }
    if let Some(path) = &f.path {
        props.insert("path".into(), json!(clean(path, MAX_FIELD_BYTES)));
    }
    if !f.subject.is_empty() && Some(&f.subject) != f.path.as_ref() {
        props.insert("subject".into(), json!(clean(&f.subject, MAX_FIELD_BYTES)));
    }
    if let Some(digest) = &f.sha256 {
        props.insert(
            "digest".into(),
            json!(format!("sha256:{}", clean(digest, 128))),
        );
    }
    if let Some(pid) = f.pid {
        props.insert("pid".into(), json!(pid.to_string()));
        super::image_properties::insert(&mut props, verdicts, pid);
    }
    Some((
        key,
        json!({
            "source": POLICY,
            "policy": POLICY,
            "rule": f.kind.as_str(),
            "category": CATEGORY,
            "severity": severity(f.severity),
            "result": "fail",
            "scored": true,
            "timestamp": timestamp(t.first_seen),
            "message": clean(&f.message, MAX_FIELD_BYTES),
            "resources": [resource],
            "properties": props,
        }),
    ))
}

/// Every report this node's open findings make, by key: worst findings first, at most
/// `max_results` results and `max_bytes` of them per report; what does not fit is counted in
/// one last `warn` result (rule `results_omitted`).
///
/// The second value says whether a pod's finding waits for its pod's metadata: then some
/// report is incomplete, and the planner writes nothing until it is not.
pub(crate) fn desired(
    st: &NodeState,
    cfg: &PolicyReportConfig,
    wall: SystemTime,
) -> (BTreeMap<Key, Desired>, bool) {
    let mut by_key: BTreeMap<Key, Vec<(&TrackedFinding, Value)>> = BTreeMap::new();
    let mut waiting = false;
    let verdicts = super::image_properties::verdicts_by_pid(&st.report);
    for t in &st.findings {
        match result_of(t, st, cfg, wall, &verdicts) {
            Some((key, result)) => by_key.entry(key).or_default().push((t, result)),
            None => waiting = true,
        }
    }
    let reports = by_key
        .into_iter()
        .map(|(key, mut results)| {
            results.sort_by(|(a, _), (b, _)| {
                b.finding
                    .severity
                    .cmp(&a.finding.severity)
                    .then(a.finding.kind.as_str().cmp(b.finding.kind.as_str()))
                    .then(a.finding.id.cmp(&b.finding.id))
            });
            let total = results.len();
            let mut kept = Vec::new();
            let mut bytes = 0usize;
            for (_, result) in results {
                let size = result.to_string().len();
                if kept.len() >= cfg.max_results || bytes + size > cfg.max_bytes {
                    break;
                }
                bytes += size;
                kept.push(result);
            }
            let omitted = total - kept.len();
            let body = report(&key, cfg, kept, omitted);
            let content = content(&body);
            (
                key,
                Desired {
                    body,
                    omitted,
                    content,
                },
            )
        })
        .collect();
    (reports, waiting)
}

fn report(key: &Key, cfg: &PolicyReportConfig, mut results: Vec<Value>, omitted: usize) -> Value {
    let fail = results.len();
    if omitted > 0 {
        results.push(json!({
            "source": POLICY,
            "policy": POLICY,
            "rule": OMITTED_RULE,
            "category": CATEGORY,
            "severity": "info",
            "result": "warn",
            "scored": false,
            "message": format!(
                "{omitted} more open findings of node {} are not listed: a report holds at most {} \
                 results ({} KiB), below the API server's 1.5 MiB object limit; \
                 `nodeguard query findings` lists them all",
                cfg.node_name, cfg.max_results, cfg.max_bytes / 1024
            ),
            "properties": {"omitted": omitted.to_string(), "node": cfg.node_name},
        }));
    }
    let mut metadata = json!({
        "name": report_name(&cfg.node_name),
        "labels": {MANAGED_BY_LABEL: POLICY, NODE_LABEL: node_label(&cfg.node_name)},
    });
    let (kind, scope) = match key {
        Key::Cluster => (
            "ClusterPolicyReport",
            Some(json!({"apiVersion": "v1", "kind": "Node", "name": cfg.node_name})),
        ),
        Key::Namespace(ns) => {
            metadata["namespace"] = json!(ns);
            ("PolicyReport", None)
        }
    };
    let mut body = json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "summary": {"pass": 0, "fail": fail, "warn": usize::from(omitted > 0), "error": 0, "skip": 0},
        "results": results,
    });
    if let Some(scope) = scope {
        body["scope"] = scope;
    }
    body
}

/// What decides whether a stored report needs a write: labels, scope, summary and results
/// without their timestamps (a restarted agent sees its findings anew, with new first-seen
/// times, but they are the same findings).
pub(crate) fn content(object: &Value) -> Value {
    let mut results = object["results"].as_array().cloned().unwrap_or_default();
    for r in &mut results {
        if let Some(map) = r.as_object_mut() {
            map.remove("timestamp");
        }
    }
    json!({
        "labels": object["metadata"]["labels"],
        "scope": object["scope"],
        "summary": object["summary"],
        "results": results,
    })
}

/// `finding_id` → `timestamp` of a stored report's results, so a rewrite keeps the time a
/// finding was first reported.
pub(crate) fn timestamps(object: &Value) -> BTreeMap<String, Value> {
    object["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let id = r["properties"]["finding_id"].as_str()?;
            let ts = r.get("timestamp")?;
            Some((id.to_string(), ts.clone()))
        })
        .collect()
}

/// `body` with the timestamps of results already stored.
pub(crate) fn keep_timestamps(mut body: Value, stored: &BTreeMap<String, Value>) -> Value {
    if let Some(results) = body["results"].as_array_mut() {
        for r in results {
            let id = r["properties"]["finding_id"].as_str().map(str::to_string);
            if let Some(ts) = id.and_then(|id| stored.get(&id)) {
                r["timestamp"] = ts.clone();
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Report names and labels are read back by name: the hash in a cut name was computed
    /// before FNV-1a moved to `nodeguard_model` and must not change.
    #[test]
    fn hashed_node_label_is_pinned() {
        assert_eq!(node_label("node_a!"), "node_a-263095df5bd8509c");
    }
    use nodeguard_model::{FindingKind, PodRef};

    const CID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn hostile_image_container_path_and_message_reach_results_escaped() {
        let forged = "\u{1b}[2J\n\u{9b}31m\u{7f}\u{202e}";
        let pod = PodRef {
            image: Some(format!("nginx{forged}")),
            ..nodeguard_testkit::model::pod_ref("shop", "web-0", &format!("app{forged}"))
        };
        let path = format!("/tmp/x{forged}");
        let mut f = Finding::new(
            FindingKind::SetuidFile,
            Severity::High,
            Some(CID),
            format!("CAP_X{forged}"),
            format!("msg{forged}"),
        );
        f.path = Some(path);
        let st = nodeguard_testkit::model::state(
            "node-a",
            vec![nodeguard_testkit::model::container(CID)
                .cgroup("/kubepods/x")
                .pod(Some("uid-1"), Some(pod))
                .build()],
            &[f],
            Timestamp::now(),
        );
        let cfg = PolicyReportConfig::new("node-a");
        let (reports, _) = desired(&st, &cfg, SystemTime::now());
        let body = &reports[&Key::Namespace("shop".into())].body;
        let result = &body["results"][0];
        for field in [
            &result["message"],
            &result["properties"]["image"],
            &result["properties"]["container"],
            &result["properties"]["path"],
            &result["properties"]["subject"],
        ] {
            let text = field.as_str().unwrap_or_else(|| panic!("{result}"));
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() || nodeguard_model::is_bidi_or_invisible(c)),
                "raw control in {text:?}"
            );
            assert!(
                text.ends_with("\\u{1b}[2J\\n\\u{9b}31m\\u{7f}\\u{202e}"),
                "{text}"
            );
        }
    }
}
