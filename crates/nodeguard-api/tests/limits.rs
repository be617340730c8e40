//! A slow or hostile client must not stall the agent, and publishing a new state must not
//! wait for requests. Everything here runs over real loopback connections; waits are bounded
//! and generous, and no test asserts a speed.

mod common;

use common::{context, node_state, raw_get, Server, METRICS_TYPE};
use nodeguard_api::{client, ApiContext, FindingsQuery, MetricsBody, RequestLimits, ServeLimits};
use nodeguard_model::NodeState;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

const GENEROUS: Duration = Duration::from_secs(60);

/// A node with thousands of processes: its report is megabytes of JSON, more than socket
/// buffers hold, so a client that does not read really stalls the server's writes.
fn big_state() -> NodeState {
    let mut state = node_state("big-node");
    let report = Arc::make_mut(&mut state.report);
    let template = report.processes[3].clone();
    for i in 0..4000 {
        let mut p = template.clone();
        p.pid = 10_000 + i;
        p.cmdline = format!("{} --worker={i} {}", p.cmdline, "x".repeat(600));
        report.processes.push(p);
    }
    state
}

/// Sends the start of a request head and never finishes it.
async fn slowloris(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /v1/report HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .await
        .unwrap();
    stream
}

/// Asks for the full report and never reads the answer.
async fn non_reader(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /v1/report HTTP/1.1\r\nHost: stuck\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// Sends one keep-alive GET on `stream` and reads its answer: (status, body).
async fn keep_alive_get(stream: &mut TcpStream, path: &str) -> (u16, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("content-length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, buf[head_end..head_end + length].to_vec())
}

/// Whether the server closed the connection (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut sink = Vec::new();
    timeout(wait, stream.read_to_end(&mut sink)).await.is_ok()
}

/// A metrics renderer that blocks until released, and says when it was entered.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        self.changed.notify_all();
        while !state.0 {
            let (next, waited) = self.changed.wait_timeout(state, GENEROUS).unwrap();
            state = next;
            if waited.timed_out() {
                break;
            }
        }
    }

    fn release(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    async fn entered(self: &Arc<Self>, n: usize) {
        let gate = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = gate.state.lock().unwrap();
            while state.1 < n {
                state = gate.changed.wait_timeout(state, GENEROUS).unwrap().0;
            }
        })
        .await
        .unwrap();
    }
}

fn gated_context(state: NodeState, gate: &Arc<Gate>) -> ApiContext {
    let gate = gate.clone();
    let (tx, rx) = watch::channel(Some(Arc::new(state)));
    std::mem::forget(tx); // the state never changes in these tests
    ApiContext {
        state: rx,
        metrics: Arc::new(move |_| {
            gate.pass();
            Ok(MetricsBody {
                text: "# EOF\n".to_string(),
                content_type: METRICS_TYPE,
            })
        }),
        exec_history: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_succeed_while_slow_clients_hold_connections() {
    // Every client here shares one address (127.0.0.1), while the per-peer bound (32 by
    // default) is meant for one client among many: raise it so this test measures the global
    // bounds. tests/hardening.rs shows the per-peer bound itself.
    let serve = ServeLimits {
        max_connections_per_peer: 64,
        ..ServeLimits::default()
    };
    let server = Server::start_with(
        context(Some(big_state())).0,
        RequestLimits::default(),
        serve,
    )
    .await;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(slowloris(server.addr).await);
    }
    for _ in 0..2 {
        held.push(non_reader(server.addr).await);
    }
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(keep_alive_get(&mut idle, "/healthz").await.0, 200);
    held.push(idle);
    // Let the non-readers' answers fill their socket buffers.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut requests = Vec::new();
    for i in 0..50 {
        let base = server.base.clone();
        requests.push(tokio::task::spawn_blocking(move || {
            let query = FindingsQuery {
                container: (i % 2 == 0).then(|| "nginx".to_string()),
                ..Default::default()
            };
            client::findings(&base, &query).map(|answer| (i, answer.count))
        }));
    }
    let all = timeout(GENEROUS, futures_join(requests))
        .await
        .expect("50 requests did not all finish while slow clients held connections");
    for result in all {
        let (i, count) = result.unwrap();
        assert_eq!(count, if i % 2 == 0 { 3 } else { 6 });
    }
    // The stalled connections are still open: nothing was freed to make room.
    assert_eq!(held.len(), 6);
    drop(held);
    server.shutdown().await.unwrap();
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_states_publish_while_requests_run_and_answers_are_never_torn() {
    // State n has node "node-n" and the first n % 7 findings: an answer mixing two states
    // would show a count that does not belong to its node name.
    let template = node_state("template");
    let states: Arc<Vec<Arc<NodeState>>> = Arc::new(
        (0..300)
            .map(|n| {
                let mut s = template.clone();
                Arc::make_mut(&mut s.report).node = format!("node-{n}");
                s.findings.truncate(n % 7);
                Arc::new(s)
            })
            .collect(),
    );
    let (tx, rx) = watch::channel(Some(states[0].clone()));
    let ctx = ApiContext {
        state: rx,
        metrics: Arc::new(|_| {
            Ok(MetricsBody {
                text: String::new(),
                content_type: METRICS_TYPE,
            })
        }),
        exec_history: None,
    };
    let server = Server::start(ctx).await;

    let publisher = {
        let states = states.clone();
        tokio::spawn(async move {
            for state in states.iter() {
                tx.send(Some(state.clone())).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tx
        })
    };
    let mut readers = Vec::new();
    for _ in 0..8 {
        let base = server.base.clone();
        let states = states.clone();
        readers.push(tokio::task::spawn_blocking(move || {
            let mut nodes = Vec::new();
            for _ in 0..25 {
                let answer = client::findings(&base, &FindingsQuery::default()).unwrap();
                let n: usize = answer.node.strip_prefix("node-").unwrap().parse().unwrap();
                assert_eq!(
                    answer.findings, states[n].findings,
                    "a torn answer for node-{n}"
                );
                nodes.push(n);
            }
            nodes
        }));
    }
    let tx = timeout(GENEROUS, publisher)
        .await
        .expect("publishing was held up by requests")
        .unwrap();
    let seen = timeout(GENEROUS, futures_join(readers)).await.unwrap();
    assert_eq!(seen.iter().map(Vec::len).sum::<usize>(), 200);
    for nodes in &seen {
        assert!(
            nodes.windows(2).all(|w| w[0] <= w[1]),
            "a reader went back in time: {nodes:?}"
        );
    }
    // After the last publish, every answer is the last state.
    let base = server.base.clone();
    let last = tokio::task::spawn_blocking(move || client::report(&base).unwrap())
        .await
        .unwrap();
    assert_eq!(last.node, "node-299");
    drop(tx);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_runs_too_long_gets_a_json_503_and_probes_still_answer() {
    let gate = Arc::new(Gate::default());
    let limits = RequestLimits {
        timeout: Duration::from_millis(300),
        max_concurrent: 4,
    };
    let server = Server::start_with(
        gated_context(node_state("node-a"), &gate),
        limits,
        ServeLimits::default(),
    )
    .await;
    let (status, _, body) = raw_get(server.addr, "GET", "/metrics").await;
    assert_eq!(status, 503);
    let err: nodeguard_api::types::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        err.error.contains("took longer than 300ms"),
        "{}",
        err.error
    );
    assert_eq!(raw_get(server.addr, "GET", "/healthz").await.0, 200);
    gate.release();
    assert_eq!(raw_get(server.addr, "GET", "/metrics").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_bound_wait_but_probes_do_not() {
    let gate = Arc::new(Gate::default());
    let limits = RequestLimits {
        timeout: GENEROUS,
        max_concurrent: 1,
    };
    let server = Server::start_with(
        gated_context(node_state("node-a"), &gate),
        limits,
        ServeLimits::default(),
    )
    .await;
    let addr = server.addr;
    let holder = tokio::spawn(async move { raw_get(addr, "GET", "/metrics").await.0 });
    gate.entered(1).await;

    let mut waiting = tokio::spawn(async move { raw_get(addr, "GET", "/v1/findings").await.0 });
    assert!(
        timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a second request ran while the only slot was taken"
    );
    assert_eq!(raw_get(addr, "GET", "/healthz").await.0, 200);
    assert_eq!(raw_get(addr, "GET", "/readyz").await.0, 200);

    gate.release();
    assert_eq!(timeout(GENEROUS, holder).await.unwrap().unwrap(), 200);
    assert_eq!(timeout(GENEROUS, waiting).await.unwrap().unwrap(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_and_a_freed_slot_is_reused() {
    let limits = ServeLimits {
        max_connections: 1,
        header_read_timeout: GENEROUS,
        ..ServeLimits::default()
    };
    let server = Server::start_with(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        limits,
    )
    .await;
    let stalled = slowloris(server.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr;
    let mut next = tokio::spawn(async move { raw_get(addr, "GET", "/healthz").await.0 });
    assert!(
        timeout(Duration::from_millis(500), &mut next)
            .await
            .is_err(),
        "a second connection was served beyond max_connections"
    );
    drop(stalled);
    assert_eq!(timeout(GENEROUS, next).await.unwrap().unwrap(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_old_connections_are_closed_by_the_server() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServeLimits::default()
    };
    let server = Server::start_with(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        limits,
    )
    .await;
    let mut stalled = slowloris(server.addr).await;
    assert!(
        closed_within(&mut stalled, Duration::from_secs(20)).await,
        "a connection that never finished its request head stayed open"
    );
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(keep_alive_get(&mut idle, "/healthz").await.0, 200);
    assert!(
        closed_within(&mut idle, Duration::from_secs(20)).await,
        "an idle keep-alive connection outlived header_read_timeout"
    );

    // A header timeout longer than the wait below: only the age closes.

    let limits = ServeLimits {
        max_connection_age: Duration::from_millis(300),
        header_read_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    };
    let aged = Server::start_with(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        limits,
    )
    .await;
    let mut keep_alive = TcpStream::connect(aged.addr).await.unwrap();
    assert_eq!(keep_alive_get(&mut keep_alive, "/healthz").await.0, 200);
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(20)).await,
        "an idle keep-alive connection outlived max_connection_age"
    );
    server.shutdown().await.unwrap();
    aged.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_and_does_not_wait_on_stuck_clients() {
    let gate = Arc::new(Gate::default());
    let limits = ServeLimits {
        shutdown_grace: Duration::from_secs(2),
        ..ServeLimits::default()
    };
    let server = Server::start_with(
        gated_context(big_state(), &gate),
        RequestLimits::default(),
        limits,
    )
    .await;
    let addr = server.addr;
    let _stalled = slowloris(addr).await;
    let _stuck = non_reader(addr).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(keep_alive_get(&mut idle, "/healthz").await.0, 200);

    let in_flight = tokio::spawn(async move { raw_get(addr, "GET", "/metrics").await.0 });
    gate.entered(1).await;
    let stopped = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.release();

    assert_eq!(timeout(GENEROUS, in_flight).await.unwrap().unwrap(), 200);
    timeout(GENEROUS, stopped)
        .await
        .expect("serve kept waiting on stuck clients")
        .unwrap()
        .unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle connection left open"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
