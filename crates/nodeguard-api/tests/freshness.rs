//! `/readyz` and `/healthz` judge the age of the last completed scan: a scan loop that hangs
//! (a policy FIFO once blocked it while `/readyz` stayed 200) takes the agent out of its
//! Service, then gets it restarted.

mod common;

use common::*;
use nodeguard_api::{Freshness, RequestLimits};
use nodeguard_model::{ScanKind, ScanRun, Timestamp};
use std::time::{Duration, SystemTime};

async fn serve(ctx: nodeguard_api::ApiContext, f: Freshness) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = nodeguard_api::router_with_freshness(ctx, RequestLimits::default(), f);
    tokio::spawn(nodeguard_api::serve(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}

fn scanned(ago: Duration) -> nodeguard_model::NodeState {
    let mut state = node_state("node-a");
    let run = ScanRun {
        finished_at: Timestamp(SystemTime::now() - ago),
        duration_ms: 10,
    };
    state.last_scans.clear();
    state.last_scans.insert(ScanKind::Processes, run);
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_fail_when_the_last_scan_is_too_old() {
    let f = Freshness::for_interval(Duration::from_secs(30));
    assert_eq!(f.ready_after, Some(Duration::from_secs(150)));
    assert_eq!(f.live_after, Some(Duration::from_secs(600)));

    let (ctx, tx) = context(Some(scanned(Duration::from_secs(5))));
    let addr = serve(ctx, f).await;
    let (status, _, _) = raw_get(addr, "GET", "/readyz").await;
    assert_eq!(status, 200);
    let (status, _, _) = raw_get(addr, "GET", "/healthz").await;
    assert_eq!(status, 200);

    // Stale for readiness, still live.
    tx.send_replace(Some(std::sync::Arc::new(scanned(Duration::from_secs(200)))));
    let (status, _, body) = raw_get(addr, "GET", "/readyz").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("stale"));
    let (status, _, _) = raw_get(addr, "GET", "/healthz").await;
    assert_eq!(status, 200);

    // Past the liveness margin too: the kubelet restarts the agent.
    tx.send_replace(Some(std::sync::Arc::new(scanned(Duration::from_secs(700)))));
    let (status, _, body) = raw_get(addr, "GET", "/healthz").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("stuck"));

    // A new scan makes it ready again.
    tx.send_replace(Some(std::sync::Arc::new(scanned(Duration::ZERO))));
    let (status, _, _) = raw_get(addr, "GET", "/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_scan_liveness_counts_from_the_start() {
    let f = Freshness {
        ready_after: Some(Duration::from_millis(1)),
        live_after: Some(Duration::from_millis(300)),
    };
    let (ctx, _tx) = context(None);
    let addr = serve(ctx, f).await;
    let (status, _, _) = raw_get(addr, "GET", "/healthz").await;
    assert_eq!(status, 200);
    let (status, _, _) = raw_get(addr, "GET", "/readyz").await;
    assert_eq!(status, 503);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, _) = raw_get(addr, "GET", "/healthz").await;
    assert_eq!(status, 503);
}
