//! PodWatch against a fake API server over real HTTP.

use nodeguard_kube::PodWatch;
use nodeguard_testkit::fake::{eventually, FakeApi, Mode};
use serde_json::{json, Value};
use std::time::Duration;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);

fn cid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn pod(ns: &str, name: &str, uid: &str, containers: &[(&str, &str, String)]) -> Value {
    let spec: Vec<Value> = containers
        .iter()
        .map(|(n, image, _)| json!({"name": n, "image": image}))
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(n, image, id)| {
            json!({
                "name": n, "containerID": id, "image": format!("docker.io/library/{image}"),
                "imageID": format!("docker.io/library/{n}@sha256:{}", "d".repeat(64)),
                "ready": true, "restartCount": 0,
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid,
                     "annotations": {"big": "x".repeat(1000)}},
        "spec": {"nodeName": NODE, "containers": spec},
        "status": {"phase": "Running", "containerStatuses": statuses},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answers_from_the_pods_watched_on_this_node() {
    let api = FakeApi::shipped(NODE);
    api.put_pod(pod(
        "shop",
        "web-0",
        "uid-web-0",
        &[
            ("app", "nginx:1.25", format!("containerd://{}", cid(1))),
            ("proxy", "envoy:1.30", format!("containerd://{}", cid(2))),
        ],
    ));
    api.put_pod(pod(
        "batch",
        "job-x",
        "uid-job-x",
        &[("worker", "python:3.12", format!("cri-o://{}", cid(3)))],
    ));
    let watch = PodWatch::start(api.client(), NODE);
    let lookup = watch.lookup();
    eventually(WAIT, "pod store synced", || watch.is_synced()).await;
    assert_eq!(watch.pod_count(), 2);

    let app = lookup.pod_for(Some("uid-web-0"), &cid(1)).expect("app");
    assert_eq!(
        (app.namespace.as_str(), app.name.as_str()),
        ("shop", "web-0")
    );
    assert_eq!(app.container_name.as_deref(), Some("app"));
    assert_eq!(app.image.as_deref(), Some("nginx:1.25"));
    assert_eq!(
        app.image_id,
        Some(format!("docker.io/library/app@sha256:{}", "d".repeat(64)))
    );
    let worker = lookup.pod_for(None, &cid(3)).expect("cri-o container");
    assert_eq!(worker.container_name.as_deref(), Some("worker"));
    assert!(lookup.pod_for(None, &cid(9)).is_none());

    // Changes arrive through the watch.
    api.put_pod(pod(
        "shop",
        "web-1",
        "uid-web-1",
        &[("app", "nginx:1.25", format!("containerd://{}", cid(4)))],
    ));
    eventually(WAIT, "added pod seen", || {
        lookup.pod_for(None, &cid(4)).is_some()
    })
    .await;
    api.delete_pod("batch", "job-x");
    eventually(WAIT, "deleted pod gone", || {
        lookup.pod_for(None, &cid(3)).is_none()
    })
    .await;
    assert_eq!(watch.errors(), 0);
    // Every list and watch asked for this node's pods only (the fake refuses anything else).
    let queries = api.queries();
    assert!(
        queries.iter().any(|q| q.contains("watch=true")),
        "{queries:?}"
    );
    assert!(
        queries.iter().all(|q| q.contains("spec.nodeName=node-a")),
        "{queries:?}"
    );
    watch.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_keep_answering_while_the_api_server_is_down_and_catch_up_after() {
    let api = FakeApi::shipped(NODE);
    api.put_pod(pod(
        "shop",
        "web-0",
        "uid-web-0",
        &[("app", "nginx:1.25", format!("containerd://{}", cid(1)))],
    ));
    let watch = PodWatch::start(api.client(), NODE);
    let lookup = watch.lookup();
    eventually(WAIT, "pod store synced", || watch.is_synced()).await;

    // The API server goes away: open watches end, lists fail with 500.
    api.set_pod_mode(Mode::Fail500);
    eventually(WAIT, "the watch noticed the outage", || watch.errors() > 0).await;
    // Created only once the watch has seen the outage: a watch still open at the switch could
    // otherwise deliver it, which a real API server that went away would not.
    api.put_pod(pod(
        "shop",
        "web-1",
        "uid-web-1",
        &[("app", "nginx:1.25", format!("containerd://{}", cid(2)))],
    ));
    // Many scans' worth of lookups answer from the store while the watch retries (were they
    // waiting on the API server, this loop would never end).
    for _ in 0..10_000 {
        assert_eq!(
            lookup.pod_for(None, &cid(1)).map(|p| p.name),
            Some("web-0".to_string())
        );
    }
    assert!(lookup.pod_for(None, &cid(2)).is_none());

    api.set_pod_mode(Mode::Normal);
    eventually(WAIT, "the store caught up after the outage", || {
        lookup.pod_for(None, &cid(2)).is_some()
    })
    .await;
    assert!(lookup.pod_for(None, &cid(1)).is_some());
    watch.stop();
}
