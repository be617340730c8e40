//! The endpoints over real HTTP, through the client `nodeguard query` uses: what a responder
//! asks, what comes back, and how refusals read.

mod common;

use common::{
    at, context, node_state, raw_get, Server, DROPPER_SHA, NGINX_ID, NGINX_SHA, SHELL_ID,
};
use nodeguard_api::client;
use nodeguard_api::{Error, FindingsQuery, ProcessesQuery};
use nodeguard_model::{FindingKind, Severity};
use std::collections::BTreeSet;

/// Runs a blocking client call off the async workers that serve it.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn kinds(answer: &nodeguard_api::types::FindingsResponse) -> BTreeSet<FindingKind> {
    assert_eq!(answer.count, answer.findings.len());
    answer.findings.iter().map(|t| t.finding.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_filters_narrow_to_what_a_responder_asks_for() {
    let state = node_state("node-a");
    let server = Server::start(context(Some(state.clone())).0).await;
    let base = server.base.clone();
    let ask = move |q: FindingsQuery| {
        let base = base.clone();
        blocking(move || client::findings(&base, &q).unwrap())
    };

    let all = ask(FindingsQuery::default()).await;
    assert_eq!(
        all.findings, state.findings,
        "every open finding, in id order, with times"
    );
    assert_eq!(
        (all.node.as_str(), all.scanned_at),
        ("node-a", at("2026-11-22T10:00:00Z"))
    );

    use FindingKind::*;
    let q = |f: fn(&mut FindingsQuery)| {
        let mut q = FindingsQuery::default();
        f(&mut q);
        q
    };
    let nginx = BTreeSet::from([RunsAsRoot, DangerousCapability, SetuidFile]);
    let shell = BTreeSet::from([DeletedExecutable, MissingMemoryLimit]);
    let cases: Vec<(&str, FindingsQuery, BTreeSet<FindingKind>)> = vec![
        (
            "namespace",
            q(|q| q.namespace = Some("shop".into())),
            nginx.clone(),
        ),
        (
            "pod",
            q(|q| q.pod = Some("web-7d9f8".into())),
            nginx.clone(),
        ),
        (
            "container name",
            q(|q| q.container = Some("nginx".into())),
            nginx.clone(),
        ),
        (
            "short id",
            q(|q| q.container = Some(NGINX_ID[..12].into())),
            nginx.clone(),
        ),
        (
            "kubectl container id",
            q(|q| q.container = Some(format!("cri-o://{SHELL_ID}"))),
            shell,
        ),
        (
            "host",
            q(|q| q.container = Some("host".into())),
            BTreeSet::from([DeniedBinary]),
        ),
        (
            "minimum severity",
            q(|q| q.min_severity = Some(Severity::High)),
            BTreeSet::from([DangerousCapability, DeletedExecutable, DeniedBinary]),
        ),
        (
            "kind",
            q(|q| q.kind = Some(SetuidFile)),
            BTreeSet::from([SetuidFile]),
        ),
        (
            "since",
            q(|q| q.since = Some(at("2026-11-22T09:55:00Z"))),
            BTreeSet::from([DeletedExecutable, DeniedBinary]),
        ),
        (
            "namespace AND severity",
            q(|q| {
                q.namespace = Some("shop".into());
                q.min_severity = Some(Severity::High);
            }),
            BTreeSet::from([DangerousCapability]),
        ),
        (
            "no match",
            q(|q| q.namespace = Some("kube-system".into())),
            BTreeSet::new(),
        ),
    ];
    for (what, query, want) in cases {
        assert_eq!(kinds(&ask(query).await), want, "{what}");
    }

    // A `+02:00` offset sent unencoded arrives as a space and still means 07:55Z.
    let (status, _, body) = raw_get(
        server.addr,
        "GET",
        "/v1/findings?since=2026-11-22T11:55:00+02:00",
    )
    .await;
    assert_eq!(status, 200);
    let answer: nodeguard_api::types::FindingsResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        kinds(&answer),
        BTreeSet::from([DeletedExecutable, DeniedBinary])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_answer_where_a_hash_runs_with_pod_metadata() {
    let server = Server::start(context(Some(node_state("node-a"))).0).await;
    let base = server.base.clone();

    let b = base.clone();
    let nginx = blocking(move || client::processes(&b, None, Some(NGINX_SHA)).unwrap()).await;
    let pids: Vec<i32> = nginx.processes.iter().map(|e| e.process.pid).collect();
    assert_eq!(pids, [4242, 4243]);
    for entry in &nginx.processes {
        let pod = entry
            .pod
            .as_ref()
            .expect("pod metadata of the nginx container");
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("shop", "web-7d9f8")
        );
        assert_eq!(entry.process.container_id.as_deref(), Some(NGINX_ID));
    }

    // Digests are matched in any case; this one runs on the host, outside any pod.
    let b = base.clone();
    let upper = DROPPER_SHA.to_ascii_uppercase();
    let dropper = blocking(move || client::processes(&b, None, Some(&upper)).unwrap()).await;
    assert_eq!(dropper.count, 1);
    assert_eq!(dropper.processes[0].process.pid, 777);
    assert_eq!(dropper.processes[0].pod, None);

    let b = base.clone();
    let host = blocking(move || client::processes(&b, Some("host"), None).unwrap()).await;
    let pids: Vec<i32> = host.processes.iter().map(|e| e.process.pid).collect();
    assert_eq!(pids, [1, 2, 777]);

    let b = base.clone();
    let one = blocking(move || {
        let q = ProcessesQuery {
            pid: Some(5001),
            ..Default::default()
        };
        client::processes_matching(&b, &q).unwrap()
    })
    .await;
    assert_eq!(one.count, 1);
    assert!(one.processes[0].process.exe_deleted);
    assert_eq!(
        one.processes[0].pod, None,
        "the crio container has no pod metadata"
    );

    let b = base.clone();
    let none =
        blocking(move || client::processes(&b, Some(&NGINX_ID[..12]), Some(DROPPER_SHA)).unwrap())
            .await;
    assert_eq!(none.count, 0, "filters are AND-ed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_and_report_round_trip_into_model_types() {
    let state = node_state("node-a");
    let server = Server::start(context(Some(state.clone())).0).await;
    let base = server.base.clone();

    let b = base.clone();
    let all = blocking(move || client::containers(&b, None, None).unwrap()).await;
    assert_eq!(all.containers, state.report.containers);

    let b = base.clone();
    let shop =
        blocking(move || client::containers(&b, Some("shop"), Some("web-7d9f8")).unwrap()).await;
    assert_eq!(shop.count, 1);
    assert_eq!(shop.containers[0].id, NGINX_ID);
    let table = client::containers_table(&shop.containers);
    assert!(table.lines().nth(1).unwrap().contains("256Mi"), "{table}");

    let b = base.clone();
    let report = blocking(move || client::report(&b).unwrap()).await;
    assert_eq!(
        report, *state.report,
        "the report survives JSON both ways unchanged"
    );
    let summary = client::report_summary(&report);
    assert!(
        summary.contains("critical 2, high 1, medium 1, low 2"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_real_answers_escape_hostile_process_names() {
    let server = Server::start(context(Some(node_state("node-a"))).0).await;
    let b = server.base.clone();
    let answer = blocking(move || client::processes(&b, Some("host"), None).unwrap()).await;
    let table = client::processes_table(&answer.processes);
    assert_eq!(
        table.lines().count(),
        4,
        "a header and 3 host processes:\n{table}"
    );
    assert!(!table.contains('\x1b'));
    assert!(table.contains("kworker\\n\\x1b[32mok"), "{table}");
    let kthreadd = table.lines().find(|l| l.contains("kthreadd")).unwrap();
    assert!(kthreadd.contains("host"));

    // A process kept after its exit says so.
    let b = server.base.clone();
    let answer = blocking(move || client::processes(&b, None, None).unwrap()).await;
    let table = client::processes_table(&answer.processes);
    let dropper = table.lines().find(|l| l.starts_with("5001 ")).unwrap();
    assert!(dropper.contains("sh (exited)"), "{table}");
    let nginx = table.lines().find(|l| l.starts_with("4242 ")).unwrap();
    assert!(!nginx.contains("exited"), "{table}");

    let b = server.base.clone();
    let findings = blocking(move || client::findings(&b, &FindingsQuery::default()).unwrap()).await;
    let table = client::findings_table(&findings.findings);
    let first = table.lines().nth(1).unwrap();
    assert!(first.contains("critical"), "most severe first:\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_name_the_url_and_the_agents_message() {
    let server = Server::start(context(Some(node_state("node-a"))).0).await;
    let b = server.base.clone();
    let err =
        blocking(move || client::processes(&b, None, Some("not-a-digest")).unwrap_err()).await;
    match &err {
        Error::Status {
            url,
            status,
            message,
        } => {
            assert_eq!(*status, 400);
            assert!(url.ends_with("/v1/processes?sha256=not-a-digest"), "{url}");
            assert!(message.contains("not a SHA-256 digest"), "{message}");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(err.to_string().contains(&server.base), "{err}");

    let not_ready = Server::start(context(None).0).await;
    let b = not_ready.base.clone();
    let err = blocking(move || client::report(&b).unwrap_err()).await;
    assert!(matches!(err, Error::Status { status: 503, .. }), "{err:?}");
    assert!(err.to_string().contains("no complete scan yet"), "{err}");

    // Nothing listens: the error names the URL and keeps the cause.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let b = base.clone();
    let err = blocking(move || client::report(&b).unwrap_err()).await;
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{base}/v1/report")),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_error_page_or_wrong_json_is_reported_not_misread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A fake "agent" that answers each connection with a canned response.
    async fn fake(answer: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        base
    }
    let gateway = fake(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 26\r\nConnection: close\r\n\r\n<html>\x1b[31mupstream</html>",
    )
    .await;
    let err = blocking(move || client::report(&gateway).unwrap_err()).await;
    match &err {
        Error::Status {
            status: 502,
            message,
            ..
        } => {
            assert_eq!(message, "<html>\\x1b[31mupstream</html>")
        }
        other => panic!("{other:?}"),
    }

    let wrong = fake(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{\"findings\":1}",
    )
    .await;
    let err =
        blocking(move || client::findings(&wrong, &FindingsQuery::default()).unwrap_err()).await;
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_methods_and_parameters_get_json_errors() {
    let server = Server::start(context(Some(node_state("node-a"))).0).await;

    let (status, _, body) = raw_get(server.addr, "GET", "/v1/finding").await;
    assert_eq!(status, 404);
    let err: nodeguard_api::types::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.status, 404);
    assert!(
        err.error.contains("/v1/finding") && err.error.contains("/v1/findings"),
        "{}",
        err.error
    );

    let (status, head, body) = raw_get(server.addr, "POST", "/v1/report").await;
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    let err: nodeguard_api::types::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(err.error.contains("POST"), "{}", err.error);

    let (status, _, body) = raw_get(server.addr, "HEAD", "/v1/report").await;
    assert_eq!(
        (status, body.len()),
        (200, 0),
        "HEAD is served as GET without a body"
    );

    let (status, _, body) = raw_get(
        server.addr,
        "GET",
        "/v1/findings?severity=high&nmespace=shop&colour=red",
    )
    .await;
    assert_eq!(status, 400);
    let err: nodeguard_api::types::ErrorBody = serde_json::from_slice(&body).unwrap();
    // Refused at the first unknown name (a hostile query costs one pass).
    assert!(
        err.error
            .contains("unknown query parameter \"nmespace\" (allowed:")
            && !err.error.contains("colour"),
        "{}",
        err.error
    );

    let (status, _, body) = raw_get(server.addr, "GET", "/v1/findings?kind=root").await;
    assert_eq!(status, 400);
    let err: nodeguard_api::types::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        err.error.contains("runs_as_root"),
        "lists the kinds: {}",
        err.error
    );

    let (status, _, body) = raw_get(server.addr, "GET", "/readyz").await;
    assert_eq!(status, 200);
    let ready: nodeguard_api::types::Readiness = serde_json::from_slice(&body).unwrap();
    assert_eq!(ready.last_scan, at("2026-11-22T10:00:00Z"));
    assert_eq!(ready.scans.len(), 2);

    let (status, head, body) = raw_get(server.addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains(common::METRICS_TYPE), "{head}");
    assert_eq!(body, b"nodeguard_up 1\n# EOF\n");
}
