//! What spans findings: exemptions, the fold of a privileged container's capability and
//! seccomp findings into its `privileged_container`, and the aggregation of floods.

use crate::spec::Exemption;
use nodeguard_model::{
    escape_controls, short_id, Aggregate, Finding, FindingKind, PodRef, Severity,
    AGGREGATE_SAMPLES, AGGREGATE_SUBJECT, MAX_FINDINGS_PER_CONTAINER_KIND,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A privileged container holds every capability and runs unconfined, so one
/// `dangerous_capability` per capability (15 with the default list) and its
/// `seccomp_disabled` only repeat what its `privileged_container` says and bury the next
/// container's findings. Once exemptions and severities are applied, a container whose
/// `privileged_container` finding stands keeps no `dangerous_capability` or
/// `seccomp_disabled` finding: they are named in the privileged finding's message instead.
/// Where the privileged finding is disabled or exempted, they stay.
pub(super) fn fold_into_privileged(findings: Vec<Finding>) -> Vec<Finding> {
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
pub(super) fn exempts(e: &Exemption, kind: FindingKind, pod: Option<&PodRef>) -> bool {
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

/// Folds the findings of one kind in one container past [`MAX_FINDINGS_PER_CONTAINER_KIND`]
/// into one finding (subject [`AGGREGATE_SUBJECT`], highest severity, lowest pid) that
/// counts them and lists the first subjects. `findings` must be in their final order.
pub(super) fn aggregate_floods(findings: Vec<Finding>) -> Vec<Finding> {
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
            agg.message = escape_controls(&format!(
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
