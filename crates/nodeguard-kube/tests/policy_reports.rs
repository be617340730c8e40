//! PolicyReportPublisher against the testkit's fake API server (which checks reports against
//! the CRDs in `manifests/crds/` and grants only the shipped ClusterRole): the fault modes a
//! real API server is hard to drive into. What real reports look like is tests/realnode.rs's.

use nodeguard_kube::{PolicyReportConfig, PolicyReportPublisher};
use nodeguard_model::{Finding, FindingKind, NodeState, Severity, Timestamp};
use nodeguard_testkit::fake::{eventually, FakeApi, Mode, ReportsMode};
use nodeguard_testkit::model::{self, container, pod_ref};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);
const CID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";

fn state(findings: &[Finding]) -> Arc<NodeState> {
    let containers = vec![container(CID)
        .pod(Some("uid-web-0"), Some(pod_ref("shop", "web-0", "app")))
        .build()];
    Arc::new(model::state(NODE, containers, findings, Timestamp::now()))
}

fn in_pod(path: &str) -> Finding {
    Finding::new(
        FindingKind::SetuidFile,
        Severity::High,
        Some(CID),
        path,
        format!("setuid root file {path}"),
    )
    .with_path(path)
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

fn config() -> PolicyReportConfig {
    let mut c = PolicyReportConfig::new(NODE);
    c.writes_per_sec = 50.0;
    c.request_timeout = Duration::from_secs(1);
    c.backoff_initial = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(500);
    c.unavailable_retry = Duration::from_secs(2);
    c
}

/// Paths of the results in the stored report of `namespace` (None: the ClusterPolicyReport).
fn stored_paths(api: &FakeApi, namespace: Option<&str>) -> Option<Vec<String>> {
    let report = api.reports().into_iter().find(|r| {
        r["metadata"]["namespace"].as_str() == namespace
            && r["metadata"]["name"] == "nodeguard-node-a"
    })?;
    Some(
        report["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                r["properties"]["path"]
                    .as_str()
                    .or(r["properties"]["subject"].as_str())
            })
            .map(str::to_string)
            .collect(),
    )
}

fn no_refusals_but(api: &FakeApi, allowed: &[u16]) {
    let refused: Vec<String> = api
        .refused()
        .iter()
        .filter(|r| !allowed.contains(&r.status))
        .map(|r| r.line())
        .collect();
    assert!(refused.is_empty(), "{refused:#?}\n{}", api.dump(30));
}

/// Without the CRDs the publisher says so (`crds_installed = false`), keeps taking states and
/// looks again rarely; once they are installed, the reports appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crds_it_keeps_going_and_writes_once_they_are_installed() {
    let api = FakeApi::shipped(NODE);
    api.set_reports_mode(ReportsMode::NotInstalled);
    let (tx, rx) = watch::channel(None);
    let publisher = PolicyReportPublisher::start(api.client(), config(), rx);
    tx.send_replace(Some(state(&[
        in_pod("/usr/bin/su"),
        on_host("/tmp/g (deleted)"),
    ])));
    eventually(WAIT, "the CRDs found missing", || {
        publisher.stats().crds_installed == Some(false)
    })
    .await;
    let lists = api.requests().len();
    // More states arrive meanwhile; nothing is asked until the retry is due.
    for _ in 0..20 {
        tx.send_replace(Some(state(&[
            in_pod("/usr/bin/su"),
            on_host("/tmp/g (deleted)"),
        ])));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.requests().len(), lists, "{}", api.dump(10));
    api.set_reports_mode(ReportsMode::Normal);
    eventually(WAIT, "both reports written", || {
        stored_paths(&api, Some("shop")).is_some() && stored_paths(&api, None).is_some()
    })
    .await;
    assert_eq!(stored_paths(&api, Some("shop")).unwrap(), ["/usr/bin/su"]);
    assert_eq!(stored_paths(&api, None).unwrap(), ["/tmp/g (deleted)"]);
    assert_eq!(publisher.stats().crds_installed, Some(true));
    no_refusals_but(&api, &[404]);
    drop(tx);
    publisher.join().await;
}

/// A failing (500) and a hanging API server: the work is kept and retried with backoff,
/// states keep being taken, and the reports end as the newest state says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_hangs_are_retried_with_backoff_and_the_newest_state_wins() {
    let api = FakeApi::shipped(NODE);
    api.set_reports_mode(ReportsMode::Fail(Mode::Fail500));
    let (tx, rx) = watch::channel(None);
    let publisher = PolicyReportPublisher::start(api.client(), config(), rx);
    tx.send_replace(Some(state(&[in_pod("/a")])));
    eventually(WAIT, "three failed attempts", || {
        publisher.stats().failed >= 3
    })
    .await;
    // Backoff: attempts spread out, not a tight loop.
    let attempts = api.requests();
    let spread = attempts.last().unwrap().at - attempts[0].at;
    assert!(spread >= Duration::from_millis(150), "{}", api.dump(10));

    api.set_reports_mode(ReportsMode::Fail(Mode::Hang));
    tx.send_replace(Some(state(&[in_pod("/b")])));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The states kept coming while a request hung: the newest is what gets written.
    tx.send_replace(Some(state(&[in_pod("/c"), on_host("/tmp/g (deleted)")])));
    api.set_reports_mode(ReportsMode::Normal);
    eventually(WAIT, "the newest state's reports", || {
        stored_paths(&api, Some("shop")) == Some(vec!["/c".to_string()])
            && stored_paths(&api, None).is_some()
    })
    .await;
    drop(tx);
    publisher.join().await;
}

/// Someone else changed the stored report: the update meets 409, the publisher lists again
/// and writes over the fresh version; an empty report is deleted; an unchanged one is never
/// written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_listed_again_unchanged_reports_are_left_alone_empty_ones_deleted() {
    let api = FakeApi::shipped(NODE);
    let (tx, rx) = watch::channel(None);
    let publisher = PolicyReportPublisher::start(api.client(), config(), rx);
    tx.send_replace(Some(state(&[in_pod("/a"), on_host("/tmp/g (deleted)")])));
    eventually(WAIT, "two reports", || {
        api.accepted_report_writes().len() == 2
    })
    .await;
    for _ in 0..5 {
        tx.send_replace(Some(state(&[in_pod("/a"), on_host("/tmp/g (deleted)")])));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api.accepted_report_writes().len(),
        2,
        "unchanged: not written"
    );

    api.touch_report(Some("shop"), "nodeguard-node-a", |r| {
        r["metadata"]["labels"]["someone"] = Value::from("else");
    });
    tx.send_replace(Some(state(&[
        in_pod("/a"),
        in_pod("/b"),
        on_host("/tmp/g (deleted)"),
    ])));
    eventually(WAIT, "the report updated after the conflict", || {
        stored_paths(&api, Some("shop")).is_some_and(|p| p.len() == 2)
    })
    .await;
    let conflicts = api.refused().iter().filter(|r| r.status == 409).count();
    assert_eq!(conflicts, 1, "{}", api.dump(20));

    tx.send_replace(Some(state(&[in_pod("/a"), in_pod("/b")])));
    eventually(WAIT, "the empty ClusterPolicyReport deleted", || {
        stored_paths(&api, None).is_none()
    })
    .await;
    no_refusals_but(&api, &[409]);
    // Exactly the verbs the shipped ClusterRole grants (the fake refuses anything else).
    let verbs: std::collections::BTreeSet<String> = api
        .requests()
        .iter()
        .filter_map(|r| r.attributes.as_ref().map(|a| a.verb.clone()))
        .collect();
    assert_eq!(
        verbs.into_iter().collect::<Vec<_>>(),
        ["create", "delete", "list", "update"]
    );
    drop(tx);
    publisher.join().await;
}

/// The fake rejects what the real server rejects: a result outside the CRD's enums, an update
/// without a resourceVersion. (Without this, "no refusals" above could mean it checks nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_what_the_crd_and_the_api_server_refuse() {
    use kube::api::{Api, ApiResource, DynamicObject, PostParams};
    let api = FakeApi::shipped(NODE);
    let ar = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let reports: Api<DynamicObject> = Api::namespaced_with(api.client(), "shop", &ar);
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "x"},
        "results": [{"policy": "p", "severity": "urgent", "result": "fail"}],
    }))
    .unwrap();
    let err = reports
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("urgent")),
        "{err}"
    );
    let mut good = bad.clone();
    good.data["results"][0]["severity"] = "high".into();
    good.data["results"][0]["unknown"] = "pruned".into();
    let stored = reports.create(&PostParams::default(), &good).await.unwrap();
    assert!(
        stored.data["results"][0].get("unknown").is_none(),
        "pruned as the real one does"
    );
    let err = reports
        .replace("x", &PostParams::default(), &good)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err}"
    );
}
