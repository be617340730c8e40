//! The pure half of the PolicyReport publisher: states, answers and time in, requests out.
//!
//! [`Planner`] keeps what the API server holds of this node's reports (`known`, from one
//! list at start and the answers to its own writes since) and what the newest state says
//! they should be (`desired`), and asks for the write that brings one report closer: create
//! what is missing, replace what differs, delete what is no longer wanted. A report whose
//! content ([`render::content`]: labels, scope, summary, results without timestamps) did
//! not change is never written. No I/O and no clock: every method takes `now`, and the task
//! in `mod.rs` hands the [`Op`]s to the sender and reports each answer with
//! [`Planner::on_done`]. The pace (token bucket and backoff) is the Event publisher's.

use super::render::{self, Desired, Key};
use super::PolicyReportConfig;
use crate::publish::limits::Pace;
use crate::publish::outcome::SendError;
use crate::publish::placement::{place, waits_for_pod};
use nodeguard_model::{NodeState, PolicyReportStats};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;
use tokio::time::Instant;

/// One request to the API server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// This node's reports (both kinds, by label): what is stored.
    List,
    Create {
        key: Key,
        body: Value,
    },
    Replace {
        key: Key,
        body: Value,
        resource_version: String,
    },
    Delete {
        key: Key,
    },
}

/// How a request ended, as far as the planner cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The reports of this node, both kinds, as stored.
    Listed(Vec<Value>),
    Written {
        resource_version: String,
    },
    Deleted,
}

/// A report as the API server holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Known {
    pub resource_version: String,
    pub content: Value,
    pub timestamps: BTreeMap<String, Value>,
}

pub(crate) struct Planner {
    cfg: PolicyReportConfig,
    stats: PolicyReportStats,
    /// `None` until a list answered (and again after a conflict): then the next request is
    /// a list.
    known: Option<BTreeMap<Key, Known>>,
    desired: BTreeMap<Key, Desired>,
    /// Findings of pods' containers that wait for their pod's metadata (the pod watch has
    /// not caught up, as at start, or the container is newer than the last pod update), by
    /// id. Only they wait: every report is written without them, except a stored report
    /// that already holds one of them (an agent restarted before the pod watch listed),
    /// which is left as it is, rather than dropping the result and writing it back moments
    /// later. The wait is bounded per finding ([`PolicyReportConfig::pod_metadata_wait`]),
    /// so no report waits for ever however many such containers keep appearing.
    waiting: HashSet<String>,
    /// Reports the API server refused for good, with the content refused: not asked again
    /// until the content changes.
    rejected: HashMap<Key, Value>,
    /// The node-wide bucket and the backoff.
    pace: Pace,
    /// The CRDs were found missing (or the list forbidden): said once, until it changes.
    unavailable_said: bool,
}

impl Planner {
    pub(crate) fn new(cfg: PolicyReportConfig, now: Instant, seed: u64) -> Planner {
        Planner {
            stats: PolicyReportStats::default(),
            known: None,
            desired: BTreeMap::new(),
            waiting: HashSet::new(),
            rejected: HashMap::new(),
            pace: Pace::new(
                cfg.writes_per_sec,
                cfg.write_burst,
                cfg.backoff_initial,
                cfg.backoff_max,
                seed,
                now,
            ),
            unavailable_said: false,
            cfg,
        }
    }

    pub(crate) fn stats(&self) -> PolicyReportStats {
        let mut s = self.stats;
        s.reports = self.known.as_ref().map_or(0, |k| k.len() as u64);
        s.results_omitted = self.desired.values().map(|d| d.omitted as u64).sum();
        s
    }

    /// What the reports should say now.
    pub(crate) fn on_state(&mut self, st: &NodeState, wall: SystemTime) {
        (self.desired, _) = render::desired(st, &self.cfg, wall);
        self.waiting = waiting_ids(st, &self.cfg, wall);
        let desired = &self.desired;
        self.rejected
            .retain(|key, refused| desired.get(key).is_some_and(|d| d.content == *refused));
    }

    /// The next write (or the list), if the backoff and the bucket allow one now.
    pub(crate) fn next_request(&mut self, now: Instant) -> Option<Op> {
        if self.pace.held(now) {
            return None;
        }
        let op = self.wanted()?;
        if !self.pace.try_take(now) {
            return None;
        }
        Some(op)
    }

    /// When there is something to do without new input; `busy` while a request is in flight.
    pub(crate) fn next_wake(&mut self, now: Instant, busy: bool) -> Option<Instant> {
        if busy || self.wanted().is_none() {
            return None;
        }
        Some(self.pace.ready_at(now))
    }

    /// The request that would bring the stored reports closer to the wanted ones.
    fn wanted(&self) -> Option<Op> {
        let Some(known) = &self.known else {
            return Some(Op::List);
        };
        let held = |key: &Key| {
            !self.waiting.is_empty() && known.get(key).is_some_and(|k| holds_any(k, &self.waiting))
        };
        for (key, d) in &self.desired {
            let content = &d.content;
            if self.rejected.get(key) == Some(content) || held(key) {
                continue;
            }
            match known.get(key) {
                None => {
                    return Some(Op::Create {
                        key: key.clone(),
                        body: d.body.clone(),
                    })
                }
                Some(k) if k.content != *content => {
                    return Some(Op::Replace {
                        key: key.clone(),
                        body: render::keep_timestamps(d.body.clone(), &k.timestamps),
                        resource_version: k.resource_version.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        known
            .keys()
            .find(|key| !self.desired.contains_key(*key) && !held(key))
            .map(|key| Op::Delete { key: key.clone() })
    }

    /// Takes the answer to `op`.
    pub(crate) fn on_done(&mut self, op: Op, result: Result<Outcome, SendError>, now: Instant) {
        match (op, result) {
            (Op::List, Ok(Outcome::Listed(items))) => {
                if self.unavailable_said {
                    tracing::info!("PolicyReports: the wgpolicyk8s.io reports can be written now");
                    self.unavailable_said = false;
                }
                self.stats.crds_installed = Some(true);
                self.known = Some(self.known_from(items));
                self.ok();
            }
            (
                Op::Create { key, body } | Op::Replace { key, body, .. },
                Ok(Outcome::Written { resource_version }),
            ) => {
                self.stats.written += 1;
                if let Some(known) = &mut self.known {
                    known.insert(
                        key,
                        Known {
                            resource_version,
                            content: render::content(&body),
                            timestamps: render::timestamps(&body),
                        },
                    );
                }
                self.ok();
            }
            (Op::Delete { key }, Ok(_) | Err(SendError::NotFound(_))) => {
                self.stats.written += 1;
                if let Some(known) = &mut self.known {
                    known.remove(&key);
                }
                self.ok();
            }
            (Op::List, Err(SendError::NotFound(why) | SendError::Permanent(why))) => {
                // No CRDs (404), or no right to list them (403): nothing to write to. Said
                // once; asked again rarely.
                self.stats.failed += 1;
                self.stats.crds_installed = Some(false);
                if !self.unavailable_said {
                    tracing::warn!(
                        error = %why,
                        retry_in = ?self.cfg.unavailable_retry,
                        "PolicyReports are off: the wgpolicyk8s.io/v1alpha2 CRDs are not installed \
                         (kubectl apply -k manifests/crds/) or not readable; the agent keeps going"
                    );
                    self.unavailable_said = true;
                }
                self.pace.hold_until(now + self.cfg.unavailable_retry);
            }
            (op, Err(SendError::NotFound(why) | SendError::Conflict(why))) => {
                // Someone else deleted or changed the report, or the CRDs went away: read
                // again what is stored before writing.
                self.stats.failed += 1;
                tracing::debug!(error = %why, ?op, "PolicyReports: stored reports changed under us; listing again");
                self.known = None;
                self.back_off(now);
            }
            (op, Err(SendError::Permanent(why))) => {
                self.stats.failed += 1;
                let (key, body) = match op {
                    Op::Create { key, body } | Op::Replace { key, body, .. } => (key, Some(body)),
                    Op::Delete { key } => (key, None),
                    Op::List => unreachable_list(),
                };
                tracing::warn!(error = %why, report = %key, "PolicyReports: the API server refused a report; not retried until it changes");
                match body {
                    Some(body) => {
                        self.rejected.insert(key, render::content(&body));
                    }
                    // A delete refused for good: forget the report rather than ask forever.
                    None => {
                        if let Some(known) = &mut self.known {
                            known.remove(&key);
                        }
                    }
                }
            }
            (_, Err(SendError::Retryable(why))) => {
                self.stats.failed += 1;
                tracing::debug!(error = %why, "PolicyReports: request failed; retrying after a backoff");
                self.back_off(now);
            }
            (op, Ok(outcome)) => {
                // An answer that does not fit the request (never from the sender): list again.
                tracing::debug!(
                    ?op,
                    ?outcome,
                    "PolicyReports: unexpected answer; listing again"
                );
                self.known = None;
                self.back_off(now);
            }
        }
    }

    fn ok(&mut self) {
        self.pace.succeeded();
    }

    fn back_off(&mut self, now: Instant) {
        self.pace.failed(now);
    }

    /// This node's stored reports by key. Objects of another name (a label collision) are
    /// not ours to write.
    fn known_from(&self, items: Vec<Value>) -> BTreeMap<Key, Known> {
        let name = render::report_name(&self.cfg.node_name);
        items
            .into_iter()
            .filter(|o| o["metadata"]["name"].as_str() == Some(name.as_str()))
            .filter_map(|o| {
                let key = match o["metadata"]["namespace"].as_str() {
                    Some(ns) if !ns.is_empty() => Key::Namespace(ns.to_string()),
                    _ => Key::Cluster,
                };
                let resource_version = o["metadata"]["resourceVersion"].as_str()?.to_string();
                Some((
                    key,
                    Known {
                        resource_version,
                        content: render::content(&o),
                        timestamps: render::timestamps(&o),
                    },
                ))
            })
            .collect()
    }
}

/// The ids of the findings whose pod's metadata has not arrived yet, within the wait: the
/// results [`render::desired`] leaves out for now.
fn waiting_ids(st: &NodeState, cfg: &PolicyReportConfig, wall: SystemTime) -> HashSet<String> {
    st.findings
        .iter()
        .filter(|t| {
            let placement = place(&t.finding, &st.report, &cfg.node_name);
            waits_for_pod(t, &placement, &st.report, cfg.pod_metadata_wait, wall)
        })
        .map(|t| t.finding.id.clone())
        .collect()
}

/// Whether a stored report has a result for one of `ids`.
fn holds_any(known: &Known, ids: &HashSet<String>) -> bool {
    known.content["results"].as_array().is_some_and(|results| {
        results.iter().any(|r| {
            r["properties"]["finding_id"]
                .as_str()
                .is_some_and(|id| ids.contains(id))
        })
    })
}

/// A list is never refused "for good" past the arm above that handles it.
fn unreachable_list() -> (Key, Option<Value>) {
    (Key::Cluster, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{CgroupVersion, Finding, FindingKind, Severity, Timestamp};
    use std::sync::Arc;
    use std::time::Duration;

    const CID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";
    const PODMAN: &str = "babe000000000000000000000000000000000000000000000000000000000002";

    fn cfg() -> PolicyReportConfig {
        PolicyReportConfig::new("node-a")
    }

    /// A state with one pod container (shop/web-0) and one podman container (no pod).
    fn state(findings: &[Finding], seen: SystemTime) -> NodeState {
        nodeguard_testkit::model::state(
            "node-a",
            vec![
                nodeguard_testkit::model::container(CID)
                    .cgroup("/kubepods/x")
                    .cgroup_version(CgroupVersion::V2)
                    .pod(
                        Some("uid-1"),
                        Some(nodeguard_testkit::model::pod_ref("shop", "web-0", "app")),
                    )
                    .build(),
                nodeguard_testkit::model::container(PODMAN)
                    .cgroup("/machine.slice/libpod-x")
                    .cgroup_version(CgroupVersion::V2)
                    .build(),
            ],
            findings,
            Timestamp(seen),
        )
    }

    fn in_pod(kind: FindingKind, severity: Severity, path: &str) -> Finding {
        let mut f = Finding::new(kind, severity, Some(CID), path, "in the pod");
        f.path = Some(path.to_string());
        f.sha256 = Some("ab".repeat(32));
        f
    }

    /// The pod's container has no memory limit.
    fn memory_limit() -> Finding {
        in_pod(
            FindingKind::MissingMemoryLimit,
            Severity::Medium,
            "/kubepods/x",
        )
    }

    /// The pod's [`memory_limit`] and a host process's deleted executable, and the two
    /// reports an agent wrote for them at `wall`, as the API server holds them
    /// (`resourceVersion` 5): what a restarted agent finds.
    fn stored_by_a_first_agent(wall: SystemTime, now: Instant) -> (Finding, Finding, Vec<Value>) {
        let (mem, ghost) = (memory_limit(), on_host("/tmp/ghost (deleted)"));
        let mut first = Planner::new(cfg(), now, 1);
        first.on_state(&state(&[mem.clone(), ghost.clone()], wall), wall);
        let stored = drain(&mut first, now)
            .into_iter()
            .filter_map(|op| match op {
                Op::Create { mut body, .. } => {
                    body["metadata"]["resourceVersion"] = "5".into();
                    Some(body)
                }
                _ => None,
            })
            .collect();
        (mem, ghost, stored)
    }

    fn on_host(path: &str) -> Finding {
        Finding::new(
            FindingKind::DeletedExecutable,
            Severity::Critical,
            None,
            path,
            "host process runs a deleted executable",
        )
        .with_pid(77)
    }

    fn in_podman(path: &str) -> Finding {
        let mut f = Finding::new(
            FindingKind::SetuidFile,
            Severity::High,
            Some(PODMAN),
            path,
            "m",
        );
        f.path = Some(path.to_string());
        f
    }

    /// The API server's answer to a write: what a real one would store.
    fn accept(w: &mut Planner, op: Op, rv: &str, now: Instant) {
        let outcome = match &op {
            Op::List => Outcome::Listed(vec![]),
            Op::Delete { .. } => Outcome::Deleted,
            _ => Outcome::Written {
                resource_version: rv.to_string(),
            },
        };
        w.on_done(op, Ok(outcome), now);
    }

    /// Runs every request the planner wants, answering each as a healthy API server would;
    /// the ops, in order.
    fn drain(w: &mut Planner, now: Instant) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut rv = 10;
        while let Some(op) = w.next_request(now) {
            rv += 1;
            ops.push(op.clone());
            accept(w, op, &rv.to_string(), now);
            assert!(ops.len() < 50, "no end: {ops:#?}");
        }
        ops
    }

    fn kinds(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Op::List => "list".to_string(),
                Op::Create { key, .. } => format!("create {key}"),
                Op::Replace { key, .. } => format!("replace {key}"),
                Op::Delete { key } => format!("delete {key}"),
            })
            .collect()
    }

    #[test]
    fn one_result_per_finding_in_the_pods_namespace_or_the_nodes_cluster_report() {
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut w = Planner::new(cfg(), now, 1);
        let mem = memory_limit();
        let suid = in_pod(FindingKind::SetuidFile, Severity::High, "/usr/bin/su");
        let ghost = on_host("/tmp/ghost (deleted)");
        let pm = in_podman("/bin/mount");
        w.on_state(
            &state(
                &[mem.clone(), suid.clone(), ghost.clone(), pm.clone()],
                wall,
            ),
            wall,
        );
        let ops = drain(&mut w, now);
        assert_eq!(
            kinds(&ops),
            [
                "list",
                "create ClusterPolicyReport",
                "create PolicyReport in shop"
            ]
        );
        let Op::Create { body: shop, .. } = &ops[2] else {
            panic!()
        };
        assert_eq!(shop["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(shop["kind"], "PolicyReport");
        assert_eq!(shop["metadata"]["name"], "nodeguard-node-a");
        assert_eq!(shop["metadata"]["namespace"], "shop");
        assert_eq!(shop["metadata"]["labels"]["nodeguard.io/node"], "node-a");
        assert_eq!(
            shop["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "nodeguard"
        );
        assert_eq!(shop["summary"]["fail"], 2);
        let results = shop["results"].as_array().unwrap();
        // Worst first.
        assert_eq!(results[0]["rule"], "setuid_file");
        assert_eq!(results[0]["severity"], "high");
        assert_eq!(results[1]["rule"], "missing_memory_limit");
        assert_eq!(results[1]["severity"], "medium");
        let r = &results[0];
        assert_eq!(r["policy"], "nodeguard");
        assert_eq!(r["result"], "fail");
        assert_eq!(
            r["resources"][0],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "uid-1"})
        );
        assert_eq!(r["properties"]["container"], "app");
        assert_eq!(r["properties"]["path"], "/usr/bin/su");
        assert_eq!(
            r["properties"]["digest"],
            format!("sha256:{}", "ab".repeat(32))
        );
        assert_eq!(r["properties"]["node"], "node-a");
        assert_eq!(r["properties"]["finding_id"], suid.id.as_str());

        let Op::Create { body: cluster, .. } = &ops[1] else {
            panic!()
        };
        assert_eq!(cluster["kind"], "ClusterPolicyReport");
        assert!(cluster["metadata"].get("namespace").is_none());
        assert_eq!(cluster["scope"]["kind"], "Node");
        let rules: Vec<(&str, &str)> = cluster["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rule"].as_str().unwrap(),
                    r["resources"][0]["kind"].as_str().unwrap(),
                )
            })
            .collect();
        // The host finding and the podman container's (no pod) both regard the node.
        assert_eq!(
            rules,
            [("deleted_executable", "Node"), ("setuid_file", "Node")]
        );
        assert_eq!(cluster["results"][0]["severity"], "critical");
        assert_eq!(
            cluster["results"][1]["properties"]["container_id"],
            &PODMAN[..12]
        );
    }

    #[test]
    fn unchanged_reports_are_not_written_changed_ones_are_replaced_empty_ones_deleted() {
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut w = Planner::new(cfg(), now, 1);
        let mem = memory_limit();
        let ghost = on_host("/tmp/ghost (deleted)");
        w.on_state(&state(&[mem.clone(), ghost.clone()], wall), wall);
        assert_eq!(drain(&mut w, now).len(), 3);

        // The next scans find the same, seen later: nothing to write.
        let later = wall + Duration::from_secs(60);
        w.on_state(&state(&[mem.clone(), ghost.clone()], later), later);
        assert!(w.next_request(now).is_none());
        assert_eq!(w.next_wake(now, false), None);

        // A new finding in the pod: that report only, keeping the old result's timestamp.
        let suid = in_pod(FindingKind::SetuidFile, Severity::High, "/usr/bin/su");
        w.on_state(
            &state(&[mem.clone(), ghost.clone(), suid.clone()], later),
            later,
        );
        let ops = drain(&mut w, now);
        assert_eq!(kinds(&ops), ["replace PolicyReport in shop"]);
        let Op::Replace {
            body,
            resource_version,
            ..
        } = &ops[0]
        else {
            panic!()
        };
        assert_eq!(resource_version, "13", "the version of the stored report");
        let mem_result = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["properties"]["finding_id"] == mem.id.as_str())
            .unwrap();
        let first = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(mem_result["timestamp"]["seconds"], first);

        // The host finding is gone: the ClusterPolicyReport goes.
        w.on_state(&state(&[mem.clone(), suid.clone()], later), later);
        assert_eq!(kinds(&drain(&mut w, now)), ["delete ClusterPolicyReport"]);
        assert_eq!(w.stats().reports, 1);
        assert_eq!(w.stats().written, 4);
    }

    #[test]
    fn a_restarted_agent_lists_what_is_stored_and_rewrites_nothing_unchanged() {
        let wall = SystemTime::now();
        let now = Instant::now();
        let (mem, ghost, stored) = stored_by_a_first_agent(wall, now);
        assert_eq!(stored.len(), 2);

        // Restart: the pod's finding and the host's are still there, first seen again now;
        // a stale report in another namespace (the pod there went while the agent was down).
        let mut stale = stored[1].clone();
        stale["metadata"]["namespace"] = "gone".into();
        let restart = wall + Duration::from_secs(600);
        let mut w = Planner::new(cfg(), now, 2);
        w.on_state(&state(&[mem, ghost], restart), restart);
        let Some(Op::List) = w.next_request(now) else {
            panic!("a list first")
        };
        let mut items = stored.clone();
        items.push(stale);
        w.on_done(Op::List, Ok(Outcome::Listed(items)), now);
        assert_eq!(kinds(&drain(&mut w, now)), ["delete PolicyReport in gone"]);
        assert_eq!(w.stats().crds_installed, Some(true));
    }

    /// At start the pod watch may not know a pod yet: its findings wait (up to a minute) and
    /// the stored report that holds them is neither deleted nor rewritten meanwhile.
    #[test]
    fn while_a_pods_findings_wait_for_its_metadata_no_report_is_written() {
        let wall = SystemTime::now();
        let now = Instant::now();
        let (mem, ghost, stored) = stored_by_a_first_agent(wall, now);

        let mut w = Planner::new(cfg(), now, 2);
        let mut unknown = state(&[mem.clone(), ghost.clone()], wall);
        let mut report = (*unknown.report).clone();
        report.containers[0].pod = None;
        unknown.report = Arc::new(report);
        w.on_state(&unknown, wall + Duration::from_secs(5));
        assert_eq!(w.next_request(now), Some(Op::List));
        w.on_done(Op::List, Ok(Outcome::Listed(stored)), now);
        assert_eq!(
            w.next_request(now),
            None,
            "nothing while the pod is unknown"
        );
        assert_eq!(w.next_wake(now, false), None);
        // Known now: the stored reports are what they should be.
        w.on_state(
            &state(&[mem.clone(), ghost.clone()], wall),
            wall + Duration::from_secs(10),
        );
        assert_eq!(w.next_request(now), None);
        // Never known: after the wait the finding goes to the ClusterPolicyReport.
        w.on_state(&unknown, wall + Duration::from_secs(61));
        assert_eq!(
            kinds(&drain(&mut w, now)),
            ["replace ClusterPolicyReport", "delete PolicyReport in shop"]
        );
    }

    /// A node where a container of an unknown pod just appeared: only its result waits;
    /// every other namespace's report, and the node's, is written at once.
    #[test]
    fn one_unknown_pods_results_wait_but_every_other_report_is_written_at_once() {
        const UNKNOWN: &str = "c0ffee0000000000000000000000000000000000000000000000000000000003";
        let wall = SystemTime::now();
        let now = Instant::now();
        let mem = memory_limit();
        let ghost = on_host("/tmp/ghost (deleted)");
        let mut waits = Finding::new(
            FindingKind::MissingMemoryLimit,
            Severity::Medium,
            Some(UNKNOWN),
            "/kubepods/z",
            "in a pod not known yet",
        );
        waits.path = None;
        let mut st = state(&[mem.clone(), ghost.clone(), waits.clone()], wall);
        let mut report = (*st.report).clone();
        report.containers.push(
            nodeguard_testkit::model::container(UNKNOWN)
                .cgroup("/kubepods/z")
                .cgroup_version(CgroupVersion::V2)
                .pod(Some("uid-3"), None)
                .build(),
        );
        st.report = Arc::new(report);

        let mut w = Planner::new(cfg(), now, 3);
        w.on_state(&st, wall + Duration::from_secs(5));
        let ops = drain(&mut w, now);
        assert_eq!(
            kinds(&ops),
            [
                "list",
                "create ClusterPolicyReport",
                "create PolicyReport in shop"
            ]
        );
        let written: Vec<String> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Create { body, .. } => Some(body.to_string()),
                _ => None,
            })
            .collect();
        assert!(written.iter().any(|b| b.contains(&mem.id)));
        assert!(written.iter().any(|b| b.contains(&ghost.id)));
        assert!(
            !written.iter().any(|b| b.contains(&waits.id)),
            "the waiting result is in no report yet"
        );
        // Past the wait it goes to the node's report; nothing else is written.
        w.on_state(&st, wall + Duration::from_secs(61));
        assert_eq!(kinds(&drain(&mut w, now)), ["replace ClusterPolicyReport"]);
    }

    #[test]
    fn reports_are_capped_and_say_how_many_findings_they_leave_out() {
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut c = cfg();
        c.max_results = 3;
        let mut w = Planner::new(c.clone(), now, 1);
        let findings: Vec<Finding> = (0..5)
            .map(|i| {
                let sev = if i == 4 {
                    Severity::Critical
                } else {
                    Severity::Low
                };
                in_pod(FindingKind::SetuidFile, sev, &format!("/bin/s{i}"))
            })
            .collect();
        w.on_state(&state(&findings, wall), wall);
        let ops = drain(&mut w, now);
        let Op::Create { body, .. } = &ops[1] else {
            panic!("{ops:?}")
        };
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 4, "three findings and the note");
        assert_eq!(results[0]["severity"], "critical", "the worst is kept");
        let note = &results[3];
        assert_eq!(note["rule"], "results_omitted");
        assert_eq!(note["result"], "warn");
        assert_eq!(note["properties"]["omitted"], "2");
        assert_eq!(body["summary"]["fail"], 3);
        assert_eq!(body["summary"]["warn"], 1);
        assert_eq!(w.stats().results_omitted, 2);

        // The byte budget holds too: long hostile paths are clipped, and a report never grows
        // past it whatever the count.
        let mut c = cfg();
        c.max_bytes = 64 * 1024;
        let mut w = Planner::new(c.clone(), now, 1);
        let huge: Vec<Finding> = (0..400)
            .map(|i| {
                in_pod(
                    FindingKind::SetuidFile,
                    Severity::Low,
                    &format!("/{i}/{}", "x".repeat(100_000)),
                )
            })
            .collect();
        w.on_state(&state(&huge, wall), wall);
        let ops = drain(&mut w, now);
        let Op::Create { body, .. } = &ops[1] else {
            panic!()
        };
        let size = body.to_string().len();
        assert!(size < 64 * 1024 + 4096, "{size} bytes");
        let omitted: usize = body["results"].as_array().unwrap().last().unwrap()["properties"]
            ["omitted"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            omitted + body["summary"]["fail"].as_u64().unwrap() as usize,
            400
        );
        // The shipped defaults stay well below the API server's 1.5 MiB.
        let d = cfg();
        assert!(d.max_bytes <= 1024 * 1024 && d.max_results <= 1000);
    }

    #[test]
    fn missing_crds_are_said_once_and_retried_rarely_and_errors_back_off() {
        let wall = SystemTime::now();
        let mut now = Instant::now();
        let mut w = Planner::new(cfg(), now, 1);
        w.on_state(&state(&[on_host("/tmp/g (deleted)")], wall), wall);
        let op = w.next_request(now).unwrap();
        assert_eq!(op, Op::List);
        w.on_done(
            op,
            Err(SendError::NotFound(
                "404 the server could not find the requested resource".into(),
            )),
            now,
        );
        assert_eq!(w.stats().crds_installed, Some(false));
        assert!(w.next_request(now + Duration::from_secs(60)).is_none());
        assert_eq!(w.next_wake(now, false), Some(now + cfg().unavailable_retry));
        now += cfg().unavailable_retry;
        let op = w.next_request(now).unwrap();
        assert_eq!(op, Op::List);
        w.on_done(op, Ok(Outcome::Listed(vec![])), now);
        assert_eq!(w.stats().crds_installed, Some(true));

        // A 503: the write is kept and retried after a backoff, not before.
        let op = w.next_request(now).unwrap();
        assert!(matches!(op, Op::Create { .. }));
        w.on_done(op.clone(), Err(SendError::Retryable("503".into())), now);
        assert!(w.next_request(now).is_none());
        let wake = w.next_wake(now, false).unwrap();
        assert!(
            wake > now && wake <= now + Duration::from_secs(1),
            "{wake:?}"
        );
        assert_eq!(w.next_request(wake), Some(op.clone()));
        // Refused for good (422, 413): not asked again until the report changes.
        w.on_done(op, Err(SendError::Permanent("422".into())), wake);
        assert!(w.next_request(wake + Duration::from_secs(600)).is_none());
        w.on_state(&state(&[on_host("/tmp/h (deleted)")], wall), wall);
        assert!(matches!(
            w.next_request(wake + Duration::from_secs(600)),
            Some(Op::Create { .. })
        ));
        // A conflict (someone else wrote the report): list again before writing.
        let later = wake + Duration::from_secs(700);
        w.on_done(
            Op::Replace {
                key: Key::Cluster,
                body: Value::Null,
                resource_version: "1".into(),
            },
            Err(SendError::Conflict("409".into())),
            later,
        );
        let wake = w.next_wake(later, false).unwrap();
        assert_eq!(w.next_request(wake), Some(Op::List));
        assert_eq!(w.stats().failed, 4);
    }

    #[test]
    fn writes_are_rate_limited_by_the_node_bucket() {
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut c = cfg();
        c.write_burst = 2;
        c.writes_per_sec = 0.5;
        let mut w = Planner::new(c, now, 1);
        let findings: Vec<Finding> = (0..4)
            .map(|i| {
                let mut f = in_pod(FindingKind::SetuidFile, Severity::High, "/bin/su");
                f.namespace = Some(format!("ns{i}"));
                f.pod = Some("p".into());
                f
            })
            .collect();
        w.on_state(&state(&findings, wall), wall);
        // The list and one create use the burst; the next waits two seconds.
        assert_eq!(drain(&mut w, now).len(), 2);
        let wake = w.next_wake(now, false).unwrap();
        assert!(
            wake >= now + Duration::from_millis(1900),
            "{:?}",
            wake - now
        );
        assert_eq!(drain(&mut w, wake).len(), 1);
    }

    #[test]
    fn names_and_labels_stay_valid_for_any_node_name() {
        assert_eq!(render::report_name("node-a"), "nodeguard-node-a");
        let long = "n".repeat(253);
        assert!(render::report_name(&long).len() <= 253);
        assert_ne!(
            render::report_name(&long),
            render::report_name(&format!("{}m", "n".repeat(252)))
        );
        let label = render::node_label(&format!("{}.example.com", "a".repeat(70)));
        assert!(label.len() <= 63, "{label}");
        assert!(label.starts_with('a') && label.chars().last().unwrap().is_ascii_alphanumeric());
        assert_eq!(
            render::node_label("ip-10-0-0-1.ec2.internal"),
            "ip-10-0-0-1.ec2.internal"
        );
    }
}
