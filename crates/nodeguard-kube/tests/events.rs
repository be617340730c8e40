//! EventPublisher against a fake API server over real HTTP: what reaches the API server, how
//! often, and what happens when it fails, hangs, or the agent restarts.

use nodeguard_kube::{EventConfig, EventPublisher};
use nodeguard_model::{
    Finding, FindingKind, NodeState, PodRef, ScanKind, ScanRun, Severity, Timestamp,
};
use nodeguard_testkit::fake::{
    eventually, Authorizer, FakeApi, Mode, Request as Recorded, SHIPPED_USER,
};
use nodeguard_testkit::model::{self, container, pod_ref};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);

/// A container of a pod `ns/name`, or a container outside Kubernetes when `pod` is None.
struct Box_ {
    id: String,
    pod_uid: Option<String>,
    pod: Option<PodRef>,
}

fn cid(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

fn pod_container(n: u32, ns: &str, pod: &str) -> Box_ {
    Box_ {
        id: cid(n),
        pod_uid: Some(format!("uid-{pod}")),
        pod: Some(PodRef {
            image: Some("nginx:1.25".into()),
            image_id: Some("docker.io/library/nginx@sha256:aa".into()),
            ..pod_ref(ns, pod, "app")
        }),
    }
}

fn setuid(container: &str, path: &str) -> Finding {
    Finding::new(
        FindingKind::SetuidFile,
        Severity::Medium,
        Some(container),
        path,
        format!("setuid root file {path}"),
    )
    .with_path(path)
    .with_sha256("ab".repeat(32))
}

fn capability(container: &str, cap: &str) -> Finding {
    Finding::new(
        FindingKind::DangerousCapability,
        Severity::High,
        Some(container),
        cap,
        format!("process holds {cap}"),
    )
    .with_pid(42)
}

fn host_finding(subject: &str) -> Finding {
    Finding::new(
        FindingKind::DeletedExecutable,
        Severity::Critical,
        None,
        subject,
        format!("host process runs a deleted executable {subject}"),
    )
}

/// The state after a scan that finished now.
fn state(containers: &[&Box_], findings: &[Finding]) -> Arc<NodeState> {
    state_at(containers, findings, Timestamp::now())
}

fn state_at(containers: &[&Box_], findings: &[Finding], scanned: Timestamp) -> Arc<NodeState> {
    let containers = containers
        .iter()
        .map(|b| {
            container(&b.id)
                .pod(b.pod_uid.as_deref(), b.pod.clone())
                .build()
        })
        .collect();
    let mut st = model::state(NODE, containers, findings, scanned);
    for kind in [ScanKind::Processes, ScanKind::Filesystems] {
        st.last_scans.insert(
            kind,
            ScanRun {
                finished_at: scanned,
                duration_ms: 1,
            },
        );
    }
    Arc::new(st)
}

fn config() -> EventConfig {
    let mut c = EventConfig::new(NODE);
    c.node_rate_per_sec = 50.0;
    c.request_timeout = Duration::from_secs(2);
    c.backoff_initial = Duration::from_millis(100);
    c.backoff_max = Duration::from_secs(1);
    c
}

/// Warnings and Resolved Events per finding id, read from the field path.
fn by_finding(recorded: &[Recorded]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in recorded {
        if let Some(id) = r
            .field_path()
            .rsplit_once("findings{")
            .and_then(|(_, rest)| rest.strip_suffix('}'))
        {
            out.entry(id.to_string()).or_default().push(format!(
                "{} {} {}",
                r.method,
                r.type_(),
                r.reason()
            ));
        }
    }
    out
}

fn assert_no_rejections(api: &FakeApi) {
    let rejections = api.rejections();
    assert!(
        rejections.is_empty(),
        "the API server refused: {rejections:?}"
    );
}

/// Creates `event` (JSON) through `api` in namespace `ns` of the Event API `group_path`
/// (`/api/v1` or `/apis/events.k8s.io/v1`); the status and message of the answer.
async fn create_raw(
    client: &kube::Client,
    group_path: &str,
    ns: &str,
    event: &serde_json::Value,
) -> (u16, String) {
    let request = http::Request::post(format!("{group_path}/namespaces/{ns}/events"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(event).unwrap())
        .unwrap();
    match client.request_text(request).await {
        Ok(_) => (201, String::new()),
        Err(kube::Error::Api(status)) => (status.code, status.message),
        Err(e) => panic!("transport: {e}"),
    }
}

fn core_event(ns: &str, involved: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("x.{}", involved["name"].as_str().unwrap()), "namespace": ns},
        "involvedObject": involved,
        "reason": "SetuidFile", "message": "n", "type": "Warning", "action": "Scan",
        "source": {"component": "nodeguard", "host": NODE},
        "reportingComponent": "nodeguard", "reportingInstance": NODE,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_what_a_real_api_server_refuses() {
    // Without this the other tests' "no rejections" would prove nothing. The messages are
    // the ones a kube-apiserver v1.20.2 gave for the same requests
    // (`nodeguard_testkit::fake::REAL_V1_20_2_ANSWERS`).
    let admin = FakeApi::start(NODE, "admin-token", Authorizer::allow_all("admin"));
    let client = admin.client();
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "u"});
    let node = serde_json::json!({"apiVersion": "v1", "kind": "Node", "name": NODE});
    // What nodeguard sends: legacy core/v1 Events, a Pod's in its namespace, the Node's in
    // `default`.
    assert_eq!(
        create_raw(&client, "/api/v1", "shop", &core_event("shop", pod.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        create_raw(
            &client,
            "/api/v1",
            "default",
            &core_event("default", node.clone())
        )
        .await
        .0,
        201
    );

    let invalid = "involvedObject.namespace: Invalid value: \"\": does not match event.namespace";
    // kube's Recorder: an events.k8s.io/v1 Event about the Node in `default`.
    let new_style = serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "node-a.1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "nodeguard", "reportingInstance": NODE,
        "action": "Scan", "reason": "SetuidFile", "type": "Warning", "note": "n",
        "regarding": node,
    });
    let (code, message) =
        create_raw(&client, "/apis/events.k8s.io/v1", "default", &new_style).await;
    assert_eq!(code, 422, "{message}");
    assert_eq!(message, format!("Event \"node-a.1\" is invalid: {invalid}"));
    // A legacy Event about the Node anywhere but `default`, and a Pod's outside its namespace.
    let (code, message) = create_raw(
        &client,
        "/api/v1",
        "kube-system",
        &core_event("kube-system", node.clone()),
    )
    .await;
    assert_eq!((code, message.contains(invalid)), (422, true), "{message}");
    let (code, message) = create_raw(
        &client,
        "/api/v1",
        "other",
        &core_event("other", pod.clone()),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains(
            "involvedObject.namespace: Invalid value: \"shop\": does not match event.namespace"
        ),
        "{message}"
    );
    // A core/v1 Event with eventTime about the Node in `default`: new-style rules again.
    let mut timed = core_event("default", node.clone());
    timed["metadata"]["name"] = "x.timed".into();
    timed["eventTime"] = "2026-01-01T00:00:00.000000Z".into();
    let (code, message) = create_raw(&client, "/api/v1", "default", &timed).await;
    assert_eq!((code, message.contains(invalid)), (422, true), "{message}");
    // The body's namespace is not the path's.
    let (code, message) = create_raw(
        &client,
        "/api/v1",
        "shop",
        &core_event("other", pod.clone()),
    )
    .await;
    assert_eq!(code, 400, "{message}");
    assert_eq!(
        message,
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    // No name.
    let mut nameless = core_event("shop", pod.clone());
    nameless["metadata"].as_object_mut().unwrap().remove("name");
    let (code, message) = create_raw(&client, "/api/v1", "shop", &nameless).await;
    assert_eq!(
        (code, message.contains("metadata.name: Required value")),
        (422, true),
        "{message}"
    );
    // nodeguard's own contract (a real server would take these; our tests would not).
    for (i, spoil) in [
        serde_json::json!({"reason": "setuid_file"}),
        serde_json::json!({"involvedObject": {"uid": null}}),
        serde_json::json!({"source": {"host": "elsewhere"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ev = core_event("shop", pod.clone());
        ev["metadata"]["name"] = format!("x.contract{i}").into();
        for (k, v) in spoil.as_object().unwrap() {
            match v {
                serde_json::Value::Object(fields) => {
                    for (f, x) in fields {
                        ev[k][f] = x.clone();
                    }
                }
                _ => ev[k] = v.clone(),
            }
        }
        let (code, message) = create_raw(&client, "/api/v1", "shop", &ev).await;
        assert_eq!(
            (code, message.contains("nodeguard contract:")),
            (422, true),
            "{spoil}: {message}"
        );
    }
    assert_eq!(admin.rejections().len(), 9, "{:#?}", admin.rejections());

    // RBAC as shipped: what the ClusterRole does not grant is a 403 naming verb and resource.
    let shipped = FakeApi::shipped(NODE);
    let client = shipped.client();
    let (code, message) = create_raw(&client, "/apis/events.k8s.io/v1", "shop", &new_style).await;
    assert_eq!(code, 403);
    assert_eq!(
        message,
        format!("events.events.k8s.io is forbidden: User \"{SHIPPED_USER}\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"shop\"")
    );
    let list = kube::Api::<k8s_openapi::api::core::v1::Event>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&list, kube::Error::Api(s) if s.code == 403 && s.message == format!("events is forbidden: User \"{SHIPPED_USER}\" cannot list resource \"events\" in API group \"\" at the cluster scope")),
        "{list}"
    );
    assert_eq!(
        create_raw(&client, "/api/v1", "shop", &core_event("shop", pod))
            .await
            .0,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_finding_is_announced_once_and_its_resolution_once() {
    let api = FakeApi::shipped(NODE);
    let web = pod_container(1, "shop", "web-0");
    let loose = Box_ {
        id: cid(2),
        pod_uid: None,
        pod: None,
    };
    let passwd = setuid(&web.id, "/usr/bin/passwd");
    let su = setuid(&web.id, "/bin/su");
    let admin = capability(&web.id, "CAP_SYS_ADMIN");
    let host = host_finding("/usr/sbin/evil (deleted)");
    let outside = capability(&loose.id, "CAP_NET_RAW");
    let all = [
        passwd.clone(),
        su.clone(),
        admin.clone(),
        host.clone(),
        outside.clone(),
    ];

    let (tx, rx) = watch::channel(None);
    let publisher = EventPublisher::start(api.client(), config(), rx);
    tx.send_replace(Some(state(&[&web, &loose], &all)));
    eventually(WAIT, "5 Warnings", || api.posts().len() == 5).await;
    // Rescans with the same findings announce nothing new.
    for _ in 0..5 {
        tx.send_replace(Some(state(&[&web, &loose], &all)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A resolution; then a marker finding as a sync point before counting.
    let marker = host_finding("/tmp/marker (deleted)");
    let mut now_open: Vec<Finding> = all.iter().filter(|f| f.id != su.id).cloned().collect();
    now_open.push(marker.clone());
    tx.send_replace(Some(state(&[&web, &loose], &now_open)));
    eventually(WAIT, "Resolved + marker", || api.posts().len() == 7).await;
    assert_no_rejections(&api);

    let posts = api.posts();
    let per = by_finding(&posts);
    for f in &all {
        let want = if f.id == su.id {
            vec![
                "POST Warning SetuidFile".to_string(),
                "POST Normal SetuidFileResolved".to_string(),
            ]
        } else {
            vec![format!("POST Warning {}", f.kind.reason())]
        };
        assert_eq!(per.get(&f.id), Some(&want), "finding {}", f.subject);
    }

    // Findings of one kind on one container are separate Events (not one series), each
    // naming its own path and digest.
    let on_pod: Vec<&Recorded> = posts
        .iter()
        .filter(|r| r.regarding_kind() == "Pod" && r.type_() == "Warning")
        .collect();
    assert_eq!(on_pod.len(), 3);
    for r in &on_pod {
        assert_eq!(r.namespace(), "shop");
        assert_eq!(r.regarding()["name"], "web-0");
        assert_eq!(r.regarding()["uid"], "uid-web-0");
        assert!(r.field_path().starts_with("spec.containers{app}.findings{"));
        assert_eq!(r.body["action"], "Scan");
        assert_eq!(r.body["reportingComponent"], "nodeguard");
        assert_eq!(r.body["reportingInstance"], NODE);
        assert_eq!(r.body["source"]["host"], NODE);
        assert!(r.note().contains("container=app"), "{}", r.note());
    }
    let passwd_ev = on_pod
        .iter()
        .find(|r| r.note().contains("/usr/bin/passwd"))
        .unwrap();
    assert!(passwd_ev
        .note()
        .contains(&format!("sha256={}", "ab".repeat(32))));
    assert!(on_pod.iter().any(|r| r.note().contains("path=/bin/su")));
    assert!(on_pod
        .iter()
        .any(|r| r.note().contains("subject=CAP_SYS_ADMIN")));

    // Host findings and containers without pod metadata regard the Node, in `default` (where
    // a v1.20.2 API server takes a legacy Event about a cluster-scoped object), with the
    // node's name as uid as kubelet does (the shipped ClusterRole grants no `get nodes`, and
    // `kubectl describe node` shows only Events with that uid).
    let on_node: Vec<&Recorded> = posts
        .iter()
        .filter(|r| r.regarding_kind() == "Node")
        .collect();
    assert_eq!(on_node.len(), 3, "host, outside-pod container, marker");
    for r in &on_node {
        assert_eq!(r.namespace(), "default");
        assert_eq!(r.regarding()["name"], NODE);
        assert!(r.regarding().get("namespace").is_none(), "{}", r.body);
        assert_eq!(r.regarding()["uid"], NODE, "{}", r.body);
    }
    let resolved = posts.iter().find(|r| r.type_() == "Normal").unwrap();
    let su_warning = posts
        .iter()
        .find(|r| r.type_() == "Warning" && r.note().contains("path=/bin/su"))
        .unwrap();
    assert_eq!(resolved.regarding(), su_warning.regarding());

    // A finding that comes back is news again: a new Event (core/v1 Events are created anew,
    // never patched; the RBAC grants `create` only).
    let mut again = all.to_vec();
    again.push(marker.clone());
    tx.send_replace(Some(state(&[&web, &loose], &again)));
    eventually(WAIT, "the returning finding announced", || {
        api.posts().len() == 8
    })
    .await;
    let back = api.posts().pop().unwrap();
    assert_eq!(back.regarding(), su_warning.regarding());
    assert_ne!(
        back.body["metadata"]["name"],
        su_warning.body["metadata"]["name"]
    );
    assert!(api.requests().iter().all(|r| r.method != "PATCH"));
    assert_no_rejections(&api);

    eventually(WAIT, "the last answer counted", || {
        publisher.stats().sent == 8
    })
    .await;
    let stats = publisher.stats();
    assert_eq!((stats.sent, stats.failed, stats.rate_limited), (8, 0, 0));
    drop(tx);
    publisher.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_pod_stays_within_its_budget_and_is_summarized() {
    let api = FakeApi::shipped(NODE);
    let web = pod_container(1, "shop", "web-0");
    let mut findings: Vec<Finding> = (0..995)
        .map(|i| setuid(&web.id, &format!("/opt/app/bin/tool-{i:04}")))
        .collect();
    // The worst ones come last in the list but first in the budget.
    let critical: Vec<Finding> = (0..5)
        .map(|i| {
            let mut f = setuid(&web.id, &format!("/tmp/dropper-{i}"));
            f.severity = Severity::Critical;
            f.kind = FindingKind::DeniedBinary;
            f.id =
                nodeguard_model::finding_id(FindingKind::DeniedBinary, Some(&web.id), &f.subject);
            f
        })
        .collect();
    findings.extend(critical.iter().cloned());
    assert_eq!(findings.len(), 1000);

    let mut cfg = config();
    cfg.node_rate_per_sec = 10.0; // node-wide: 10/s after a burst of 20
    let (rate, burst) = (cfg.node_rate_per_sec, cfg.node_burst);
    let (tx, rx) = watch::channel(None);
    let publisher = EventPublisher::start(api.client(), cfg, rx);
    tx.send_replace(Some(state(&[&web], &findings)));
    eventually(WAIT, "30 Warnings and a summary", || {
        api.posts().len() >= 31
    })
    .await;
    // Later scans of the same findings add nothing; a new finding elsewhere is the sync point.
    let other = pod_container(2, "shop", "web-1");
    let marker = setuid(&other.id, "/usr/bin/newgrp");
    let mut with_marker = findings.clone();
    with_marker.push(marker.clone());
    for _ in 0..3 {
        tx.send_replace(Some(state(&[&web, &other], &findings)));
    }
    tx.send_replace(Some(state(&[&web, &other], &with_marker)));
    eventually(WAIT, "marker announced", || {
        api.posts()
            .iter()
            .any(|r| r.note().contains("/usr/bin/newgrp"))
    })
    .await;
    assert_no_rejections(&api);

    let posts = api.posts();
    let on_web: Vec<&Recorded> = posts
        .iter()
        .filter(|r| r.regarding()["name"] == "web-0")
        .collect();
    let warnings: Vec<&&Recorded> = on_web
        .iter()
        .filter(|r| r.reason() != "FindingsSummary")
        .collect();
    let summaries: Vec<&&Recorded> = on_web
        .iter()
        .filter(|r| r.reason() == "FindingsSummary")
        .collect();
    // 25 of the medium findings, and the 5 critical ones, whose bucket is their own (a
    // burst of medium findings never spends what a high or critical one needs).
    assert_eq!(warnings.len(), 30, "per-object budget, per class");
    assert_eq!(summaries.len(), 1, "one summary");
    let note = summaries[0].note();
    assert!(
        note.starts_with("970 more findings of kinds SetuidFile"),
        "{note}"
    );
    assert!(
        note.contains("nodeguard query findings --pod shop/web-0"),
        "{note}"
    );
    assert_eq!(summaries[0].type_(), "Warning");
    for c in &critical {
        assert!(
            warnings.iter().any(|r| r.field_path().contains(&c.id)),
            "critical finding {} not among the announced",
            c.subject
        );
    }
    // The fake records a request before its answer reaches the publisher.
    eventually(WAIT, "the marker's answer counted", || {
        publisher.stats().sent == 32
    })
    .await;
    let stats = publisher.stats();
    assert_eq!(stats.rate_limited, 970);
    assert_eq!(stats.summaries, 1);

    // The node-wide cap: in any stretch of time, no more than burst + rate × length arrive
    // (one extra for the edges). Slowness can only make this easier to meet.
    let times: Vec<Duration> = posts.iter().map(|r| r.at).collect();
    for i in 0..times.len() {
        for j in i..times.len() {
            let span = (times[j] - times[i]).as_secs_f64();
            let allowed = f64::from(burst) + rate * span + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} Events in {span:.3}s exceed the node-wide bucket",
                j - i + 1
            );
        }
    }
    drop(tx);
    publisher.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_wide_bucket_spreads_many_pods_over_time() {
    let api = FakeApi::shipped(NODE);
    let pods: Vec<Box_> = (0..40)
        .map(|i| pod_container(i, "shop", &format!("web-{i}")))
        .collect();
    let findings: Vec<Finding> = pods
        .iter()
        .map(|b| setuid(&b.id, "/usr/bin/passwd"))
        .collect();
    let mut cfg = config();
    cfg.node_rate_per_sec = 20.0;
    cfg.node_burst = 5;
    let (tx, rx) = watch::channel(None);
    let publisher = EventPublisher::start(api.client(), cfg, rx);
    let refs: Vec<&Box_> = pods.iter().collect();
    tx.send_replace(Some(state(&refs, &findings)));
    eventually(WAIT, "40 Events", || api.posts().len() == 40).await;
    assert_no_rejections(&api);
    let times: Vec<Duration> = api.posts().iter().map(|r| r.at).collect();
    for i in 0..times.len() {
        for j in i..times.len() {
            let span = (times[j] - times[i]).as_secs_f64();
            assert!(
                (j - i + 1) as f64 <= 5.0 + 20.0 * span + 1.0,
                "{} Events in {span:.3}s",
                j - i + 1
            );
        }
    }
    assert_eq!(
        publisher.stats().rate_limited,
        0,
        "each pod is within its own budget"
    );
    drop(tx);
    publisher.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_back_off_and_findings_are_announced_after_recovery() {
    let api = FakeApi::shipped(NODE);
    api.set_event_mode(Mode::Fail500);
    let web = pod_container(1, "shop", "web-0");
    let a = setuid(&web.id, "/usr/bin/a");
    let b = setuid(&web.id, "/usr/bin/b");
    let gone = setuid(&web.id, "/usr/bin/gone-before-announced");
    let mut cfg = config();
    cfg.backoff_initial = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(1600);
    let initial = cfg.backoff_initial;
    let (tx, rx) = watch::channel(None);
    let publisher = EventPublisher::start(api.client(), cfg, rx);
    tx.send_replace(Some(state(&[&web], &[a.clone(), b.clone(), gone.clone()])));

    // The scanner and the metrics loop go on meanwhile.
    for _ in 0..200 {
        tx.send_replace(Some(state(&[&web], &[a.clone(), b.clone(), gone.clone()])));
        let _ = publisher.stats();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually(WAIT, "5 failed attempts", || api.attempts().len() >= 5).await;
    let attempts = api.attempts();
    assert!(attempts.iter().all(|x| x.status == 500));
    // Exponential backoff with jitter: the k-th pause is at least half of initial × 2^k.
    for (k, pair) in attempts.windows(2).take(4).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let floor = initial * (1 << k) / 2;
        assert!(
            gap >= floor,
            "retry {k} after {gap:?}, backoff floor {floor:?}"
        );
    }
    eventually(WAIT, "5 failures counted", || publisher.stats().failed >= 5).await;
    assert_eq!(publisher.stats().sent, 0);

    // One finding goes away before it could be announced.
    tx.send_replace(Some(state(&[&web], &[a.clone(), b.clone()])));
    api.set_event_mode(Mode::Normal);
    eventually(WAIT, "both findings announced", || api.posts().len() >= 2).await;
    // Sync point: one more finding.
    let c = setuid(&web.id, "/usr/bin/c");
    tx.send_replace(Some(state(&[&web], &[a.clone(), b.clone(), c.clone()])));
    eventually(WAIT, "c announced", || api.posts().len() >= 3).await;
    let per = by_finding(&api.posts());
    assert_eq!(per.len(), 3);
    assert!(
        !per.contains_key(&gone.id),
        "a finding gone before announcing was announced"
    );
    for f in [&a, &b, &c] {
        assert_eq!(per[&f.id], vec!["POST Warning SetuidFile".to_string()]);
    }
    assert_no_rejections(&api);
    drop(tx);
    publisher.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_api_server_stalls_neither_the_sender_nor_the_diffing() {
    let api = FakeApi::shipped(NODE);
    api.set_event_mode(Mode::Hang);
    let web = pod_container(1, "shop", "web-0");
    let first = setuid(&web.id, "/bin/first");
    let mut cfg = config();
    cfg.request_timeout = Duration::from_secs(600); // only the fake's release ends a request
    let (tx, rx) = watch::channel(None);
    let publisher = EventPublisher::start(api.client(), cfg, rx);
    tx.send_replace(Some(state(&[&web], std::slice::from_ref(&first))));
    eventually(WAIT, "a request hangs", || !api.attempts().is_empty()).await;

    // While that request hangs: the scanner sends on, the metrics loop reads on, and the
    // publisher keeps diffing (its queue follows the newest state).
    let mut more = vec![first.clone()];
    for i in 0..100 {
        more.push(setuid(&web.id, &format!("/bin/more{i:03}")));
        tx.send_replace(Some(state(&[&web], &more)));
        let _ = publisher.stats();
    }
    // 24 more Warnings fit the pod's budget of 25 (one is in flight); one summary for the
    // remaining 76.
    eventually(WAIT, "the queue follows the newest state", || {
        let s = publisher.stats();
        s.queued == 25 && s.rate_limited == 76
    })
    .await;
    assert_eq!(api.attempts().len(), 1, "still one request, still hanging");
    // Findings that go away leave the queue at once, the summary with them.
    let fewer = vec![first.clone(), more[1].clone()];
    tx.send_replace(Some(state(&[&web], &fewer)));
    eventually(WAIT, "queue shrank", || publisher.stats().queued == 1).await;

    // The API server recovers; the hung request fails and is retried.
    api.set_event_mode(Mode::Normal);
    eventually(WAIT, "both open findings announced", || {
        api.posts().len() >= 2
    })
    .await;
    let other = pod_container(2, "shop", "web-1");
    let sync = setuid(&other.id, "/bin/sync");
    let mut last = fewer.clone();
    last.push(sync.clone());
    tx.send_replace(Some(state(&[&web, &other], &last)));
    eventually(WAIT, "sync point", || api.posts().len() >= 3).await;
    let per = by_finding(&api.posts());
    let mut ids: Vec<&String> = per.keys().collect();
    ids.sort();
    let mut want = vec![&fewer[0].id, &fewer[1].id, &sync.id];
    want.sort();
    assert_eq!(ids, want);
    assert!(api.posts().iter().all(|r| r.reason() != "FindingsSummary"));
    assert!(publisher.stats().failed >= 1);
    assert_no_rejections(&api);
    drop(tx);
    publisher.join().await;
}

fn persisted_ids(dir: &Path) -> Vec<String> {
    let text = std::fs::read(dir.join("announced-events.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let mut ids: Vec<String> = v["announced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_same_state_dir_does_not_announce_again() {
    let api = FakeApi::shipped(NODE);
    let dir = tempfile::tempdir().unwrap();
    let web = pod_container(1, "shop", "web-0");
    let f1 = setuid(&web.id, "/bin/one");
    let f2 = setuid(&web.id, "/bin/two");
    let mut cfg = config();
    cfg.state_dir = Some(dir.path().to_path_buf());

    let (tx, rx) = watch::channel(None);
    let first = EventPublisher::start(api.client(), cfg.clone(), rx);
    tx.send_replace(Some(state(&[&web], &[f1.clone(), f2.clone()])));
    eventually(WAIT, "2 Warnings", || api.posts().len() == 2).await;
    drop(tx);
    first.join().await;
    let mut want = vec![f1.id.clone(), f2.id.clone()];
    want.sort();
    assert_eq!(persisted_ids(dir.path()), want);

    // The agent restarts. Its first state comes from a scan made before it started (as a
    // restarted daemon's cached state might): f2 missing there proves nothing yet.
    let before_start = Timestamp(SystemTime::now() - Duration::from_secs(5));
    let (tx, rx) = watch::channel(None);
    let second = EventPublisher::start(api.client(), cfg.clone(), rx);
    let f3 = setuid(&web.id, "/bin/three");
    tx.send_replace(Some(state_at(
        &[&web],
        &[f1.clone(), f3.clone()],
        before_start,
    )));
    eventually(WAIT, "only the new finding", || api.posts().len() == 3).await;
    let per = by_finding(&api.posts());
    assert_eq!(per[&f1.id].len(), 1, "f1 announced again after restart");
    assert_eq!(
        per[&f2.id].len(),
        1,
        "f2 resolved on a scan from before the restart"
    );
    assert_eq!(per[&f3.id].len(), 1);

    // A scan after the restart without f2: now it is resolved.
    tx.send_replace(Some(state(&[&web], &[f1.clone(), f3.clone()])));
    eventually(WAIT, "f2 resolved", || api.posts().len() == 4).await;
    let per = by_finding(&api.posts());
    assert_eq!(
        per[&f2.id],
        vec![
            "POST Warning SetuidFile".to_string(),
            "POST Normal SetuidFileResolved".to_string()
        ]
    );
    drop(tx);
    second.join().await;
    let mut want = vec![f1.id.clone(), f3.id.clone()];
    want.sort();
    assert_eq!(persisted_ids(dir.path()), want);
    assert_no_rejections(&api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_older_than_the_event_ttl_are_repeated() {
    let api = FakeApi::shipped(NODE);
    let dir = tempfile::tempdir().unwrap();
    let web = pod_container(1, "shop", "web-0");
    let old = setuid(&web.id, "/bin/old");
    let recent = setuid(&web.id, "/bin/recent");
    let entry = |f: &Finding, age: u64| {
        serde_json::json!({
            "id": f.id, "kind": "setuid_file",
            "at": Timestamp(SystemTime::now() - Duration::from_secs(age)).to_string(),
            "target": {"kind": "pod", "namespace": "shop", "name": "web-0", "uid": "uid-web-0"},
            "field_path": format!("spec.containers{{app}}.findings{{{}}}", f.id),
            "subject": f.subject,
        })
    };
    let file = serde_json::json!({
        "version": 1, "node": NODE,
        "announced": [entry(&old, 2 * 3600), entry(&recent, 60)],
    });
    std::fs::write(
        dir.path().join("announced-events.json"),
        serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    let mut cfg = config();
    cfg.state_dir = Some(dir.path().to_path_buf());
    let (tx, rx) = watch::channel(None);
    let publisher = EventPublisher::start(api.client(), cfg, rx);
    let marker = setuid(&web.id, "/bin/marker");
    tx.send_replace(Some(state(
        &[&web],
        &[old.clone(), recent.clone(), marker.clone()],
    )));
    eventually(WAIT, "2 Events", || api.posts().len() == 2).await;
    let per = by_finding(&api.posts());
    assert!(
        per.contains_key(&old.id),
        "an expired announcement was not repeated"
    );
    assert!(per.contains_key(&marker.id));
    assert!(
        !per.contains_key(&recent.id),
        "a recent announcement was repeated"
    );
    drop(tx);
    publisher.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_dir_a_restart_announces_again_and_asks_nothing_rbac_forbids() {
    // Reading the announced set back would need `list` on Events cluster-wide, which the
    // shipped ClusterRole does not grant: without a state dir, open findings are announced
    // again after a restart (docs/kubernetes.md), and no request is refused.
    let api = FakeApi::shipped(NODE);
    let web = pod_container(1, "shop", "web-0");
    let f1 = setuid(&web.id, "/bin/one");
    let host = host_finding("/usr/bin/x (deleted)");

    let (tx, rx) = watch::channel(None);
    let first = EventPublisher::start(api.client(), config(), rx);
    tx.send_replace(Some(state(&[&web], &[f1.clone(), host.clone()])));
    eventually(WAIT, "2 Warnings", || api.posts().len() == 2).await;
    drop(tx);
    first.join().await;

    let (tx, rx) = watch::channel(None);
    let second = EventPublisher::start(api.client(), config(), rx);
    tx.send_replace(Some(state(&[&web], &[f1.clone(), host.clone()])));
    eventually(WAIT, "announced again", || api.posts().len() == 4).await;
    let per = by_finding(&api.posts());
    for f in [&f1, &host] {
        assert_eq!(
            per[&f.id],
            vec![format!("POST Warning {}", f.kind.reason()); 2]
        );
    }
    assert!(
        api.requests()
            .iter()
            .all(|r| r.method == "POST" || r.path.contains("pods")),
        "{}",
        api.dump(20)
    );
    assert_no_rejections(&api);
    drop(tx);
    second.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_state_file_means_announcing_again_not_asking_the_api_server() {
    // A state file that does not parse is set aside: the open finding is announced again
    // (no `list` on Events, which the shipped ClusterRole does not grant), and the file is
    // rewritten with what was announced.
    let api = FakeApi::shipped(NODE);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("announced-events.json"), b"{ not json").unwrap();
    let web = pod_container(1, "shop", "web-0");
    let f1 = setuid(&web.id, "/bin/one");
    let mut cfg = config();
    cfg.state_dir = Some(dir.path().to_path_buf());
    let (tx, rx) = watch::channel(None);
    let publisher = EventPublisher::start(api.client(), cfg, rx);
    tx.send_replace(Some(state(&[&web], std::slice::from_ref(&f1))));
    eventually(WAIT, "announced", || api.posts().len() == 1).await;
    drop(tx);
    publisher.join().await;
    assert_eq!(persisted_ids(dir.path()), vec![f1.id.clone()]);
    assert!(
        api.requests().iter().all(|r| r.method == "POST"),
        "{}",
        api.dump(10)
    );
    assert_no_rejections(&api);
}
