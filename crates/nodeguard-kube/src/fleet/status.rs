//! `nodeguard fleet status`, decided: every Node next to its agent's Lease. Pure: the
//! Nodes, the Leases and the time come in, a [`FleetStatus`] (the JSON of `-o json`) comes
//! out.
//!
//! A Node is matched to the Lease named [`lease_name`]`(node)` (names are facts; a Lease's
//! annotations are only claims). It is `covered` when that Lease was renewed within
//! [`STALE_AFTER_INTERVALS`] of the agent's interval, `stale` when not, `missing` when
//! there is no Lease. Leases of the prefix whose Node is gone are listed as `orphaned`.
//! A version is skewed when it differs from the one most agents run.

use super::cluster::{LeaseView, NodeView};
use nodeguard_model::fleet::{lease_name, SeverityCounts, STALE_AFTER_INTERVALS};
use nodeguard_model::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The interval assumed for a Lease that says neither its interval nor its duration (the
/// agent's default).
const DEFAULT_INTERVAL_SECONDS: u64 = 30;

/// Whether a node is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Coverage {
    /// The node's agent renewed its Lease in time.
    Covered,
    /// The Lease was not renewed for 3 intervals: the agent is down, stuck or cut off.
    Stale,
    /// No Lease: no agent ever ran there (or its Lease was removed).
    Missing,
    /// A Lease whose Node no longer exists.
    Orphaned,
}

impl Coverage {
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::Covered => "covered",
            Coverage::Stale => "stale",
            Coverage::Missing => "missing",
            Coverage::Orphaned => "orphaned",
        }
    }
}

/// One row: a Node and what its agent's Lease says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub coverage: Coverage,
    /// From the Node object (never from the Lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version differs from the one most agents run.
    pub version_skew: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<SeverityCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewed: Option<Timestamp>,
    /// Seconds since the last renewal (0 when the renewal is in the future: clock skew).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewed_seconds_ago: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// What does not add up (a Lease claiming another node, no renew time).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Counts over the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub nodes: u64,
    pub covered: u64,
    pub stale: u64,
    pub missing: u64,
    pub orphaned: u64,
    pub version_skew: u64,
    /// Open findings over the covered and stale nodes.
    pub findings: SeverityCounts,
}

/// Everything `fleet status` knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetStatus {
    pub namespace: String,
    pub generated_at: Timestamp,
    /// The version most agents run (the CLI's own when no agent says).
    pub reference_version: String,
    pub cli_version: String,
    pub summary: Summary,
    /// Nodes by name, then orphaned Leases by name.
    pub nodes: Vec<NodeStatus>,
}

impl FleetStatus {
    /// Whether some node is stale or missing.
    pub fn any_uncovered(&self) -> bool {
        self.summary.stale > 0 || self.summary.missing > 0
    }
}

/// Classifies `nodes` against `leases` at `now`.
pub fn classify(
    namespace: &str,
    nodes: &[NodeView],
    leases: Vec<LeaseView>,
    now: Timestamp,
    cli_version: &str,
) -> FleetStatus {
    let mut by_name: HashMap<String, LeaseView> =
        leases.into_iter().map(|l| (l.name.clone(), l)).collect();
    let reference_version = most_common_version(by_name.values(), cli_version);
    let mut rows: Vec<NodeStatus> = nodes
        .iter()
        .map(|node| {
            let lease = by_name.remove(&lease_name(&node.name));
            row(
                &node.name,
                node.address.clone(),
                lease.as_ref(),
                now,
                &reference_version,
            )
        })
        .collect();
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    let mut orphans: Vec<NodeStatus> = by_name
        .into_values()
        .map(|lease| {
            let node = lease
                .name
                .strip_prefix(nodeguard_model::fleet::LEASE_NAME_PREFIX)
                .unwrap_or(&lease.name)
                .to_string();
            let mut r = row(&node, None, Some(&lease), now, &reference_version);
            r.coverage = Coverage::Orphaned;
            r
        })
        .collect();
    orphans.sort_by(|a, b| a.node.cmp(&b.node));
    rows.extend(orphans);

    let mut summary = Summary::default();
    for r in &rows {
        match r.coverage {
            Coverage::Covered => summary.covered += 1,
            Coverage::Stale => summary.stale += 1,
            Coverage::Missing => summary.missing += 1,
            Coverage::Orphaned => summary.orphaned += 1,
        }
        if r.coverage != Coverage::Orphaned {
            summary.nodes += 1;
            summary.version_skew += u64::from(r.version_skew);
            if let Some(f) = r.findings {
                summary.findings.critical += f.critical;
                summary.findings.high += f.high;
                summary.findings.medium += f.medium;
                summary.findings.low += f.low;
            }
        }
    }
    FleetStatus {
        namespace: namespace.to_string(),
        generated_at: now,
        reference_version,
        cli_version: cli_version.to_string(),
        summary,
        nodes: rows,
    }
}

fn row(
    node: &str,
    address: Option<String>,
    lease: Option<&LeaseView>,
    now: Timestamp,
    reference_version: &str,
) -> NodeStatus {
    let Some(lease) = lease else {
        return NodeStatus {
            node: node.to_string(),
            coverage: Coverage::Missing,
            address,
            lease: None,
            holder: None,
            version: None,
            version_skew: false,
            findings: None,
            last_scan: None,
            renewed: None,
            renewed_seconds_ago: None,
            interval_seconds: None,
            api_port: None,
            cert_sha256: None,
            problems: Vec::new(),
        };
    };
    let claims = &lease.claims;
    let mut problems = Vec::new();
    if let Some(claimed) = claims.node.as_deref().filter(|c| *c != node) {
        problems.push(format!(
            "the Lease says it is node {:?}",
            nodeguard_model::clean(claimed, 80)
        ));
    }
    let interval = claims.interval_seconds.or_else(|| {
        lease
            .duration_seconds
            .and_then(|d| u64::try_from(d).ok())
            .filter(|d| *d > 0)
            .map(|d| d.div_ceil(u64::from(STALE_AFTER_INTERVALS)))
    });
    let stale_after = Duration::from_secs(
        interval
            .unwrap_or(DEFAULT_INTERVAL_SECONDS)
            .saturating_mul(u64::from(STALE_AFTER_INTERVALS)),
    );
    let ago = lease
        .renew_time
        .map(|t| now.0.duration_since(t.0).unwrap_or(Duration::ZERO));
    if lease.renew_time.is_none() {
        problems.push("the Lease has no renew time".to_string());
    }
    let coverage = match ago {
        Some(ago) if ago <= stale_after => Coverage::Covered,
        _ => Coverage::Stale,
    };
    NodeStatus {
        node: node.to_string(),
        coverage,
        address,
        lease: Some(lease.name.clone()),
        holder: lease.holder.clone(),
        version_skew: claims
            .version
            .as_deref()
            .is_some_and(|v| v != reference_version),
        version: claims.version.clone(),
        findings: claims.findings,
        last_scan: claims.last_scan,
        renewed: lease.renew_time,
        renewed_seconds_ago: ago.map(|d| d.as_secs()),
        interval_seconds: interval,
        api_port: claims.api_port,
        cert_sha256: claims.cert_sha256.clone(),
        problems,
    }
}

/// The version most Leases carry; ties go to the CLI's own, then to the greater string.
fn most_common_version<'a>(leases: impl Iterator<Item = &'a LeaseView>, cli: &str) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in leases.filter_map(|l| l.claims.version.as_deref()) {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(v, n)| (*n, *v == cli, *v))
        .map_or_else(|| cli.to_string(), |(v, _)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::fleet::HeartbeatClaims;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> Timestamp {
        Timestamp(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn node(name: &str) -> NodeView {
        NodeView {
            name: name.into(),
            address: Some(format!("10.0.0.{}", name.len())),
        }
    }

    fn lease(node: &str, renewed: u64, interval: u64, version: &str) -> LeaseView {
        LeaseView {
            name: lease_name(node),
            holder: Some(format!("pod-{node}")),
            renew_time: Some(at(renewed)),
            duration_seconds: Some(i32::try_from(interval * 3).unwrap()),
            claims: HeartbeatClaims {
                node: Some(node.into()),
                version: Some(version.into()),
                interval_seconds: Some(interval),
                findings: Some(SeverityCounts {
                    critical: 1,
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn covered_stale_missing_and_orphaned() {
        let nodes = [node("a"), node("b"), node("c")];
        let leases = vec![
            lease("a", 1000, 10, "0.1.0"),
            // 31 s ago with a 10 s interval: 3 intervals passed.
            lease("b", 969, 10, "0.1.0"),
            lease("gone", 1000, 10, "0.1.0"),
        ];
        let s = classify("nodeguard", &nodes, leases, at(1000), "0.1.0");
        let by: Vec<(&str, Coverage)> = s.nodes.iter().map(|r| (&*r.node, r.coverage)).collect();
        assert_eq!(
            by,
            vec![
                ("a", Coverage::Covered),
                ("b", Coverage::Stale),
                ("c", Coverage::Missing),
                ("gone", Coverage::Orphaned),
            ]
        );
        assert_eq!(
            (
                s.summary.nodes,
                s.summary.covered,
                s.summary.stale,
                s.summary.missing
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(s.summary.orphaned, 1);
        assert_eq!(s.summary.findings.critical, 2, "a and b, not the orphan");
        assert!(s.any_uncovered());
        assert_eq!(s.nodes[0].address.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.nodes[1].renewed_seconds_ago, Some(31));
    }

    #[test]
    fn exactly_three_intervals_is_still_covered_and_a_future_renewal_too() {
        let s = classify(
            "ns",
            &[node("a"), node("b")],
            vec![lease("a", 970, 10, "1"), lease("b", 2000, 10, "1")],
            at(1000),
            "1",
        );
        assert!(s.nodes.iter().all(|r| r.coverage == Coverage::Covered));
        assert!(!s.any_uncovered());
    }

    #[test]
    fn without_an_interval_annotation_the_lease_duration_decides() {
        let mut l = lease("a", 900, 10, "1");
        l.claims.interval_seconds = None;
        l.duration_seconds = Some(300);
        let s = classify("ns", &[node("a")], vec![l.clone()], at(1000), "1");
        assert_eq!(s.nodes[0].coverage, Coverage::Covered, "100 s < 300 s");
        l.duration_seconds = None;
        let s = classify("ns", &[node("a")], vec![l], at(1000), "1");
        assert_eq!(s.nodes[0].coverage, Coverage::Stale, "100 s > 3 × 30 s");
    }

    #[test]
    fn the_version_most_agents_run_is_the_reference() {
        let nodes = [node("a"), node("b"), node("c")];
        let leases = vec![
            lease("a", 1000, 10, "0.2.0"),
            lease("b", 1000, 10, "0.2.0"),
            lease("c", 1000, 10, "0.1.0"),
        ];
        let s = classify("ns", &nodes, leases, at(1000), "0.1.0");
        assert_eq!(s.reference_version, "0.2.0");
        let skewed: Vec<&str> = s
            .nodes
            .iter()
            .filter(|r| r.version_skew)
            .map(|r| &*r.node)
            .collect();
        assert_eq!(skewed, ["c"]);
        assert_eq!(s.summary.version_skew, 1);
        // A tie goes to the CLI's version.
        let s = classify(
            "ns",
            &nodes[..2],
            vec![lease("a", 1000, 10, "0.2.0"), lease("b", 1000, 10, "0.1.0")],
            at(1000),
            "0.1.0",
        );
        assert_eq!(s.reference_version, "0.1.0");
    }

    #[test]
    fn a_lease_claiming_another_node_and_one_without_renewal_are_flagged() {
        let mut l = lease("a", 1000, 10, "1");
        l.claims.node = Some("b\u{1b}[2J".into());
        let mut m = lease("b", 1000, 10, "1");
        m.renew_time = None;
        let s = classify("ns", &[node("a"), node("b")], vec![l, m], at(1000), "1");
        assert_eq!(s.nodes[0].coverage, Coverage::Covered);
        assert!(
            s.nodes[0].problems[0].contains("\\u{1b}"),
            "{:?}",
            s.nodes[0].problems
        );
        assert_eq!(s.nodes[1].coverage, Coverage::Stale);
        assert_eq!(s.nodes[1].problems, ["the Lease has no renew time"]);
    }

    #[test]
    fn json_names_the_coverage_in_lower_case() {
        let s = classify("ns", &[node("a")], vec![], at(1000), "1");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["nodes"][0]["coverage"], "missing");
        assert_eq!(v["summary"]["missing"], 1);
        assert_eq!(v["generated_at"], "1970-01-01T00:16:40.000Z");
    }
}
