//! The API is not the weak spot: tokens are asked for and checked, probes cannot be starved,
//! one peer cannot take every connection, and a hostile query string costs one pass.
//! Real loopback sockets; loops are bounded and waits generous; no test asserts a speed.

mod common;

use common::{context, node_state};
use nodeguard_api::{
    AccessDecision, AuthOptions, Authorizer, DecisionFuture, RequestLimits, ServeLimits,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

const GENEROUS: Duration = Duration::from_secs(30);

/// One request with an optional `Authorization` header value: (status, head, body).
async fn request(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    timeout(GENEROUS, stream.read_to_end(&mut bytes))
        .await
        .expect("no answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Serves `router` on a fresh loopback port with `limits`; the task ends with the test.
async fn spawn(router: axum::Router, limits: ServeLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(nodeguard_api::serve_with_limits(
        listener,
        router,
        std::future::pending(),
        limits,
    ));
    addr
}

/// Answers like the API server would for three users; `slow` never answers, `down` cannot.
#[derive(Default)]
struct FakeAuthorizer {
    asked: Mutex<Vec<(String, String)>>,
}

impl Authorizer for FakeAuthorizer {
    fn authorize<'a>(&'a self, token: &'a str, path: &'a str) -> DecisionFuture<'a> {
        self.asked
            .lock()
            .unwrap()
            .push((token.to_string(), path.to_string()));
        Box::pin(async move {
            match token {
                "admin-token" => AccessDecision::Allowed {
                    user: "admin".into(),
                },
                "prometheus-token" if path == "/metrics" => AccessDecision::Allowed {
                    user: "prometheus".into(),
                },
                "prometheus-token" | "stranger-token" => AccessDecision::Forbidden {
                    user: "stranger".into(),
                    reason: "no RBAC grant".into(),
                },
                "slow-token" => std::future::pending().await,
                "down-token" => AccessDecision::Unavailable {
                    reason: "connection refused".into(),
                },
                _ => AccessDecision::Unauthenticated {
                    reason: "unknown token".into(),
                },
            }
        })
    }
}

fn auth_options(fake: &Arc<FakeAuthorizer>) -> AuthOptions {
    let mut options = AuthOptions::new(fake.clone());
    options.timeout = Duration::from_millis(500);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_metrics_need_a_token_the_authorizer_accepts_and_probes_never_do() {
    let fake = Arc::new(FakeAuthorizer::default());
    let router = nodeguard_api::router_with_auth(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        Some(auth_options(&fake)),
    );
    let addr = spawn(router, ServeLimits::default()).await;

    // No token: 401, the JSON error shape, and the challenge.
    for path in [
        "/v1/findings",
        "/v1/report",
        "/metrics",
        "//v1/report",
        "/v1/nothing",
    ] {
        let (status, head, body) = request(addr, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(head.contains("www-authenticate: bearer"), "{path}: {head}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], 401, "{body}");
        assert!(json["error"].as_str().unwrap().contains("Bearer"), "{body}");
    }
    let (status, _, _) = request(addr, "/v1/findings", Some("Basic YWRtaW46cHc=")).await;
    assert_eq!(status, 401, "a Basic header is not a token");
    assert!(
        fake.asked.lock().unwrap().is_empty(),
        "nothing to ask without a token"
    );

    // The probes answer without a token.
    assert_eq!(request(addr, "/healthz", None).await.0, 200);
    assert_eq!(request(addr, "/readyz", None).await.0, 200);

    let bearer = |t: &str| format!("Bearer {t}");
    let (status, _, body) = request(addr, "/v1/findings", Some(&bearer("admin-token"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"findings\""), "{body}");
    assert_eq!(
        request(addr, "/metrics", Some(&bearer("admin-token")))
            .await
            .0,
        200
    );
    assert_eq!(
        request(addr, "/metrics", Some(&bearer("prometheus-token")))
            .await
            .0,
        200,
        "a token allowed /metrics only reads /metrics"
    );
    let (status, _, body) = request(addr, "/v1/report", Some(&bearer("prometheus-token"))).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = request(addr, "/v1/processes", Some(&bearer("stranger-token"))).await;
    assert_eq!(status, 403, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], 403);
    assert!(
        json["error"].as_str().unwrap().contains("stranger"),
        "{body}"
    );
    assert!(
        !body.contains("\"processes\""),
        "a forbidden answer leaks nothing: {body}"
    );
    let (status, head, _) = request(addr, "/v1/report", Some(&bearer("made-up"))).await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate"), "{head}");

    // An authorizer that cannot decide, or never answers: 503, never a hang or a 200.
    let (status, _, body) = request(addr, "/v1/findings", Some(&bearer("down-token"))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection refused"), "{body}");
    let (status, _, body) = request(addr, "/v1/findings", Some(&bearer("slow-token"))).await;
    assert_eq!(status, 503, "{body}");

    // The authorizer is asked about the path the request is for (no query string).
    let asked = fake.asked.lock().unwrap().clone();
    assert!(
        asked.contains(&("stranger-token".to_string(), "/v1/processes".to_string())),
        "{asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_left_open_while_v1_stays_protected() {
    let fake = Arc::new(FakeAuthorizer::default());
    let mut options = auth_options(&fake);
    options.protect_metrics = false;
    let router = nodeguard_api::router_with_auth(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        Some(options),
    );
    let addr = spawn(router, ServeLimits::default()).await;
    let (status, _, body) = request(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nodeguard_up"), "{body}");
    assert_eq!(request(addr, "/v1/findings", None).await.0, 401);
}

/// Whether the server closed the connection (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut sink = Vec::new();
    timeout(wait, stream.read_to_end(&mut sink)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_on_their_own_listener_while_600_idle_connections_flood_the_api_port() {
    let (ctx, _tx) = context(Some(node_state("node-a")));
    let state = ctx.state.clone();
    // The API port as the agent serves it, but silent sockets are not closed during the
    // test: the probe listener alone must keep the probes alive.
    let api_limits = ServeLimits {
        header_read_timeout: Duration::from_secs(120),
        ..ServeLimits::default()
    };
    let api = spawn(nodeguard_api::router(ctx), api_limits).await;
    let probes = spawn(nodeguard_api::probe_router(state), ServeLimits::probes()).await;

    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(TcpStream::connect(api).await.unwrap());
    }
    for path in ["/healthz", "/readyz"] {
        let answer = timeout(GENEROUS, request(probes, path, None)).await;
        assert_eq!(
            answer
                .expect("the probe port did not answer while the API port is flooded")
                .0,
            200,
            "{path}"
        );
    }
    let (status, _, body) = request(probes, "/v1/report", None).await;
    assert_eq!(status, 404, "the probe port serves nothing else: {body}");

    // One peer holds at most its share of the API's connections: the rest are closed.
    let mut closed = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    let per_peer = ServeLimits::default().max_connections_per_peer;
    assert!(
        closed >= 600 - per_peer,
        "only {closed} of 600 idle connections from one peer were closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_connection_bound_is_closed_and_a_freed_slot_is_reused() {
    let limits = ServeLimits {
        max_connections_per_peer: 4,
        header_read_timeout: Duration::from_secs(120),
        ..ServeLimits::default()
    };
    let addr = spawn(
        nodeguard_api::router(context(Some(node_state("node-a"))).0),
        limits,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the server accept the four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut fifth, GENEROUS).await,
        "a fifth connection from the same peer stayed open"
    );
    for stream in &mut held {
        assert!(
            !closed_within(stream, Duration::from_millis(20)).await,
            "a connection within the bound was closed"
        );
    }
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(request(addr, "/healthz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_refused_at_its_first_unknown_parameter() {
    let addr = spawn(
        nodeguard_api::router(context(Some(node_state("node-a"))).0),
        ServeLimits::default(),
    )
    .await;
    // 10,000 distinct unknown names in ~56 KB (hyper answers 414 to a URI over 64 KiB).
    let query: Vec<String> = (0..10_000).map(|i| format!("z{i:x}")).collect();
    let path = format!("/v1/findings?{}", query.join("&"));
    assert!(path.len() > 50_000, "{}", path.len());
    let (status, _, body) = request(addr, &path, None).await;
    assert_eq!(status, 400, "{}", &body[..body.len().min(300)]);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = json["error"].as_str().unwrap();
    assert!(error.contains("\"z0\""), "{error}");
    assert!(
        !error.contains("\"z1\""),
        "only the first unknown name is named: {error}"
    );
    assert!(
        body.len() < 1000,
        "the error does not echo the query: {} bytes",
        body.len()
    );

    // A known name followed by unknown ones: still refused, the unknown one named.
    let (status, _, body) = request(addr, "/v1/findings?kind=runs_as_root&bogus=1", None).await;
    assert_eq!(status, 400);
    assert!(body.contains("bogus"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_router_reports_readiness_from_the_state() {
    let (tx, rx) = watch::channel(None);
    let addr = spawn(nodeguard_api::probe_router(rx), ServeLimits::probes()).await;
    assert_eq!(request(addr, "/healthz", None).await.0, 200);
    assert_eq!(request(addr, "/readyz", None).await.0, 503);
    tx.send(Some(Arc::new(node_state("node-a")))).unwrap();
    let (status, _, body) = request(addr, "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("node-a"), "{body}");
}

/// A router that authenticates with `fake`, loopback trusted or not; `stand_in` replaces the
/// peer the serve loop recorded, as a request from another pod or the node would carry.
fn loopback_router(
    fake: &Arc<FakeAuthorizer>,
    pod_private: bool,
    stand_in: Option<SocketAddr>,
) -> axum::Router {
    let mut options = auth_options(fake);
    options.loopback_is_pod_private = pod_private;
    let router = nodeguard_api::router_with_auth(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        Some(options),
    );
    match stand_in {
        Some(peer) => router.layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        None => router,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_peer_needs_no_token_only_when_loopback_is_pod_private() {
    // Pod-private loopback (`kubectl exec` into the agent's pod): no token, and no review.
    let fake = Arc::new(FakeAuthorizer::default());
    let addr = spawn(loopback_router(&fake, true, None), ServeLimits::default()).await;
    for path in ["/v1/findings", "/v1/report", "/metrics"] {
        let (status, _, body) = request(addr, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert!(
        fake.asked.lock().unwrap().is_empty(),
        "a trusted peer is not reviewed"
    );

    // Loopback shared with the node (hostNetwork, or not known): a token like anyone else.
    let fake = Arc::new(FakeAuthorizer::default());
    let addr = spawn(loopback_router(&fake, false, None), ServeLimits::default()).await;
    let (status, head, _) = request(addr, "/v1/findings", None).await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (status, _, _) = request(addr, "/v1/findings", Some("Bearer stranger-token")).await;
    assert_eq!(status, 403);
    let (status, _, _) = request(addr, "/v1/findings", Some("Bearer admin-token")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_beyond_loopback_always_needs_a_token() {
    // Another pod or the node, as the auth layer sees it.
    let fake = Arc::new(FakeAuthorizer::default());
    let other_pod: SocketAddr = "10.244.1.7:40000".parse().unwrap();
    let addr = spawn(
        loopback_router(&fake, true, Some(other_pod)),
        ServeLimits::default(),
    )
    .await;
    let (status, _, body) = request(addr, "/v1/findings", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = request(addr, "/v1/findings", Some("Bearer stranger-token")).await;
    assert_eq!(status, 403);
    let (status, _, _) = request(addr, "/v1/findings", Some("Bearer admin-token")).await;
    assert_eq!(status, 200);

    // A real connection from this machine's own non-loopback address, when it has one.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let local = probe
        .connect("192.0.2.1:9")
        .or_else(|_| probe.connect("198.51.100.1:9"))
        .and_then(|()| probe.local_addr())
        .map(|a| a.ip());
    let Ok(ip) = local.map_err(|err| err.to_string()).and_then(|ip| {
        (!ip.is_loopback() && !ip.is_unspecified())
            .then_some(ip)
            .ok_or_else(|| format!("{ip}"))
    }) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: no non-loopback address to connect from"
        );
        eprintln!("SKIPPED: no non-loopback address on this machine to connect from");
        return;
    };
    let fake = Arc::new(FakeAuthorizer::default());
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let real = listener.local_addr().unwrap();
    tokio::spawn(nodeguard_api::serve_with_limits(
        listener,
        loopback_router(&fake, true, None),
        std::future::pending(),
        ServeLimits::default(),
    ));
    let (status, _, body) = request(real, "/v1/findings", None).await;
    assert_eq!(status, 401, "{ip}: {body}");
}

/// Log lines written while the guard lives, on this thread (a current-thread runtime runs
/// the server's tasks on it too).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let lines = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || lines.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

#[tokio::test]
async fn an_oversized_token_is_refused_before_any_review() {
    let fake = Arc::new(FakeAuthorizer::default());
    let options = auth_options(&fake);
    let denials = Arc::clone(&options.denials);
    let router = nodeguard_api::router_with_auth(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        Some(options),
    );
    let addr = spawn(router, ServeLimits::default()).await;
    // Over the bound: 401 with the challenge, no review, counted.
    let token = "a".repeat(nodeguard_api::MAX_TOKEN_BYTES + 1);
    let (status, head, body) =
        request(addr, "/v1/processes", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("bytes"), "{body}");
    assert!(!body.contains("aaaa"), "the token is not echoed: {body}");
    assert!(fake.asked.lock().unwrap().is_empty(), "no review");
    assert_eq!(denials.get(nodeguard_api::DenialReason::OversizedToken), 1);
    // At the bound a token is reviewed like any other (and this one is made up).
    let token = "a".repeat(nodeguard_api::MAX_TOKEN_BYTES);
    let (status, _, _) = request(addr, "/v1/processes", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 401);
    assert_eq!(fake.asked.lock().unwrap().len(), 1);
    assert_eq!(denials.get(nodeguard_api::DenialReason::InvalidToken), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_bound_is_answered_431_and_closed() {
    let addr = spawn(
        nodeguard_api::router(context(Some(node_state("node-a"))).0),
        ServeLimits::default(),
    )
    .await;
    let bound = nodeguard_api::DEFAULT_MAX_HEAD_BYTES;
    // Under the bound: answered.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let pad = "p".repeat(bound - 1024);
    let head =
        format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    timeout(GENEROUS, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Over it (hyper's own default would buffer ~400 KiB): 431, and the connection closes
    // although the head never ends.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let pad = "p".repeat(4 * bound);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}");
    // The server may close before it read everything: a failed write is fine.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = timeout(GENEROUS, stream.read_to_end(&mut answer))
        .await
        .expect("a connection over the head bound stayed open");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test]
async fn a_flood_of_refusals_is_counted_and_logged_in_a_few_lines_not_one_each() {
    let lines = Lines::default();
    let _guard = lines.capture();
    let fake = Arc::new(FakeAuthorizer::default());
    let mut options = auth_options(&fake);
    options.denial_log = Arc::new(nodeguard_api::DenialLog::new(Duration::from_secs(3600)));
    let denials = Arc::clone(&options.denials);
    let router = nodeguard_api::router_with_auth(
        context(Some(node_state("node-a"))).0,
        RequestLimits::default(),
        Some(options),
    );
    let addr = spawn(router, ServeLimits::default()).await;
    let oversized = format!("Bearer {}", "o".repeat(nodeguard_api::MAX_TOKEN_BYTES + 1));
    for i in 0..100 {
        assert_eq!(request(addr, "/v1/report", None).await.0, 401);
        let made_up = format!("Bearer made-up-{i}");
        assert_eq!(request(addr, "/v1/report", Some(&made_up)).await.0, 401);
        assert_eq!(request(addr, "/v1/report", Some(&oversized)).await.0, 401);
        let stranger = "Bearer stranger-token";
        assert_eq!(request(addr, "/v1/report", Some(stranger)).await.0, 403);
    }
    use nodeguard_api::DenialReason::*;
    for reason in [MissingToken, InvalidToken, OversizedToken, Forbidden] {
        assert_eq!(denials.get(reason), 100, "{reason:?}");
    }
    let text = lines.text();
    // Every line counts, whatever it says: the router logs nothing else here.
    let refusal_lines = text.lines().count();
    assert!(
        refusal_lines <= 2,
        "400 refusals wrote {refusal_lines} lines:\n{}",
        &text[..text.len().min(2000)]
    );
    assert!(
        text.lines().any(|l| l.contains("refused")),
        "the first refusal is logged: {text}"
    );
    assert!(!text.contains("oooooooo"), "no token in the log");
}

#[test]
fn a_quiet_interval_ends_with_a_summary_of_what_was_not_logged() {
    let lines = Lines::default();
    let _guard = lines.capture();
    let log = nodeguard_api::DenialLog::new(Duration::from_millis(300));
    let denial = |reason| nodeguard_api::Denial {
        reason,
        path: "/v1/report",
        peer: None,
        user: None,
        detail: "unknown token",
    };
    for _ in 0..50 {
        log.record(&denial(nodeguard_api::DenialReason::InvalidToken));
    }
    log.record(&denial(nodeguard_api::DenialReason::MissingToken));
    std::thread::sleep(Duration::from_millis(400));
    log.record(&denial(nodeguard_api::DenialReason::Forbidden));
    let text = lines.text();
    assert_eq!(text.lines().count(), 3, "{text}");
    let summary = text
        .lines()
        .find(|l| l.contains("without a log line each"))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    assert!(summary.contains("denied=50"), "{summary}");
    assert!(
        summary.contains("missing_token=1,invalid_token=49"),
        "{summary}"
    );

    // A flood that stops is summed up by the next flush after its interval, not only by a
    // later refusal; a flush with nothing to say writes nothing.
    for _ in 0..20 {
        log.record(&denial(nodeguard_api::DenialReason::OversizedToken));
    }
    log.flush();
    assert_eq!(
        lines.text().lines().count(),
        3,
        "not before the interval ends"
    );
    std::thread::sleep(Duration::from_millis(400));
    log.flush();
    log.flush();
    let text = lines.text();
    assert_eq!(text.lines().count(), 4, "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("denied=20") && last.contains("oversized_token=20"),
        "{last}"
    );
    // The next refusal opens a new interval and is logged in full.
    log.record(&denial(nodeguard_api::DenialReason::Forbidden));
    assert_eq!(lines.text().lines().count(), 5);
}
