//! The router: endpoints, filters, JSON errors, and the per-request time and concurrency
//! bounds.

use crate::auth::{
    bearer_token, AccessDecision, AuthOptions, Denial, DenialReason, MAX_TOKEN_BYTES,
};
use crate::query::{ContainersQuery, ExecsQuery, FindingsQuery, ProcessesQuery};
use crate::types::{ErrorBody, Health};
use crate::Error;
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use nodeguard_model::{Container, NodeState, PodRef, Process, ScanKind, ScanRun, Timestamp};
use nodeguard_model::{ExecHistory, ExecHistoryStats, ExecObservation, TrackedFinding};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::{timeout_at, Instant};

/// The renderer of `/metrics`, supplied by the metrics crate. It gets the request's `Accept`
/// header (Prometheus asks for OpenMetrics; `promtool` and older scrapers want the 0.0.4
/// text format) and answers the body with its `Content-Type`.
pub type MetricsRenderer = Arc<dyn Fn(Option<&str>) -> Result<MetricsBody, String> + Send + Sync>;

/// A rendered `/metrics` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsBody {
    pub text: String,
    pub content_type: &'static str,
}

/// What the API serves from.
pub struct ApiContext {
    /// The daemon's latest state: `None` until the first complete scan.
    pub state: watch::Receiver<Option<Arc<NodeState>>>,
    /// Renders the `/metrics` text. Called on a blocking thread, once per scrape.
    pub metrics: MetricsRenderer,
    /// What exec-time reads saw (`/v1/execs`); `None`: an empty history.
    pub exec_history: Option<Arc<ExecHistory>>,
}

/// Bounds on each request, so a burst of slow requests cannot pile up in the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest a request may wait for a slot and run; past it the answer is a JSON 503.
    pub timeout: Duration,
    /// Requests handled at once (`/healthz` and `/readyz` do not count and are never queued,
    /// so an overloaded API does not make the kubelet restart the agent).
    pub max_concurrent: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            timeout: Duration::from_secs(10),
            max_concurrent: 256,
        }
    }
}

/// The API router with [`RequestLimits::default`]. Serve it with [`crate::serve`].
pub fn router(ctx: ApiContext) -> Router {
    router_with_limits(ctx, RequestLimits::default())
}

/// When the probes call the agent stale: `/readyz` answers 503 once the newest completed
/// scan is older than `ready_after`, `/healthz` once it (or, before the first scan, the
/// router's start) is older than `live_after`, so a scan loop that hangs takes the agent
/// out of its Service and then gets it restarted. `None` never calls it stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Freshness {
    pub ready_after: Option<Duration>,
    pub live_after: Option<Duration>,
}

impl Freshness {
    /// For scans every `interval`: not ready after 3 intervals + 1 minute (a filesystem
    /// walk may hold the loop up to its time budget), not live after 10 intervals + 5
    /// minutes.
    pub fn for_interval(interval: Duration) -> Freshness {
        Freshness {
            ready_after: Some(interval.saturating_mul(3) + Duration::from_secs(60)),
            live_after: Some(interval.saturating_mul(10) + Duration::from_secs(300)),
        }
    }
}

#[derive(Clone, Copy)]
struct Staleness {
    freshness: Freshness,
    started: std::time::SystemTime,
}

impl Staleness {
    /// Age of the newest completed scan, or of the start when there is none yet.
    fn age(&self, state: Option<&NodeState>) -> Duration {
        let newest = state
            .and_then(|s| s.last_scans.values().map(|r| r.finished_at.0).max())
            .unwrap_or(self.started);
        std::time::SystemTime::now()
            .duration_since(newest)
            .unwrap_or(Duration::ZERO)
    }
}

/// The API router with explicit request bounds and probe [`Freshness`].
pub fn router_with_freshness(
    ctx: ApiContext,
    limits: RequestLimits,
    freshness: Freshness,
) -> Router {
    with_freshness(router_with_limits(ctx, limits), freshness)
}

/// Makes the `/healthz` and `/readyz` of `router` (the API router or [`probe_router`])
/// judge the age of the last completed scan by `freshness`.
pub fn with_freshness(router: Router, freshness: Freshness) -> Router {
    router.layer(axum::Extension(Staleness {
        freshness,
        started: std::time::SystemTime::now(),
    }))
}

/// The API router with explicit request bounds.
pub fn router_with_limits(ctx: ApiContext, limits: RequestLimits) -> Router {
    router_with_auth(ctx, limits, None)
}

/// The API router with request bounds and, when `auth` is given, a bearer token checked for
/// every path but the probes (see [`crate::auth`]). The token is checked inside the request
/// bounds, so a flood of requests cannot start more reviews than `max_concurrent`.
pub fn router_with_auth(
    ctx: ApiContext,
    limits: RequestLimits,
    auth: Option<AuthOptions>,
) -> Router {
    let guard = Guard {
        limits,
        permits: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
    };
    let mut router = Router::new();
    for (path, route) in routes() {
        router = router.route(path, route);
    }
    let mut router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Shared(Arc::new(ctx)));
    if let Some(auth) = auth {
        router = router.layer(middleware::from_fn_with_state(auth, authenticate));
    }
    router.layer(middleware::from_fn_with_state(guard, bound_request))
}

/// A router of the probes alone, `/healthz` and `/readyz`, for their own listener: however
/// busy or attacked the API port is, the kubelet's probes get a connection and an answer.
pub fn probe_router(state: watch::Receiver<Option<Arc<NodeState>>>) -> Router {
    let ctx = ApiContext {
        state,
        metrics: Arc::new(|_| Err("not served on the probe port".to_string())),
        exec_history: None,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|uri: Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no endpoint at {:?}; the probe port serves /healthz and /readyz",
                    uri.path()
                ),
            )
        })
        .with_state(Shared(Arc::new(ctx)))
}

async fn authenticate(State(auth): State<AuthOptions>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if !auth.protects(&path) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    if auth.trusts_peer(peer) {
        tracing::debug!(?peer, %path, "API request from loopback inside the agent's pod: no token needed");
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let denial = |reason, user, detail| Denial {
        reason,
        path: &path,
        peer,
        user,
        detail,
    };
    let Some(token) = header.and_then(bearer_token) else {
        let message = if header.is_some() {
            "the Authorization header is not \"Bearer TOKEN\""
        } else {
            "authentication required: send \"Authorization: Bearer TOKEN\" (a Kubernetes service-account or user token)"
        };
        auth.deny(denial(DenialReason::MissingToken, None, message));
        return unauthorized(message);
    };
    if token.len() > MAX_TOKEN_BYTES {
        // Refused before any review: a made-up token this long costs no TokenReview and no
        // cache entry.
        let message = format!(
            "the bearer token is {} bytes, more than any Kubernetes token ({MAX_TOKEN_BYTES} at most)",
            token.len()
        );
        auth.deny(denial(DenialReason::OversizedToken, None, &message));
        return unauthorized(&message);
    }
    let decision =
        tokio::time::timeout(auth.timeout, auth.authorizer.authorize(token, &path)).await;
    match decision {
        Ok(AccessDecision::Allowed { user }) => {
            tracing::debug!(%user, %path, "API request authorized");
            next.run(request).await
        }
        Ok(AccessDecision::Unauthenticated { reason }) => {
            auth.deny(denial(DenialReason::InvalidToken, None, &reason));
            unauthorized(&format!("the token is not valid: {reason}"))
        }
        Ok(AccessDecision::Forbidden { user, reason }) => {
            auth.deny(denial(DenialReason::Forbidden, Some(&user), &reason));
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{user} may not get {path}: {reason}"),
            )
            .into_response()
        }
        Ok(AccessDecision::Unavailable { reason }) => {
            auth.deny(denial(DenialReason::Unavailable, None, &reason));
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the token now: {reason}; try again"),
            )
            .into_response()
        }
        Err(_) => {
            let message = format!(
                "cannot check the token now: no decision within {:?}; try again",
                auth.timeout
            );
            auth.deny(denial(DenialReason::Unavailable, None, &message));
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response()
        }
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"nodeguard\""),
    );
    response
}

/// Every path the router serves (all `GET`), as `docs/openapi.json` must list them.
pub fn paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The paths that bypass the concurrency bound: probes must answer even under load.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

fn routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/v1/report", get(report)),
        ("/v1/findings", get(findings)),
        ("/v1/containers", get(containers)),
        ("/v1/processes", get(processes)),
        ("/v1/execs", get(execs)),
    ]
}

#[derive(Clone)]
struct Shared(Arc<ApiContext>);

impl Shared {
    /// The latest state. The watch's read lock is held only for the `Arc` clone, so a scan
    /// publishing a new state never waits on a request, and a request never waits on a scan.
    fn snapshot(&self) -> Result<Arc<NodeState>, ApiError> {
        let current = self.0.state.borrow().clone();
        current.ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no complete scan yet: the agent is still running its first scan",
            )
        })
    }
}

#[derive(Clone)]
struct Guard {
    limits: RequestLimits,
    permits: Arc<Semaphore>,
}

async fn bound_request(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let timeout = guard.limits.timeout;
    let deadline = Instant::now() + timeout;
    let _permit = if PROBES.contains(&request.uri().path()) {
        None
    } else {
        match timeout_at(deadline, guard.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_)) | Err(_) => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "too many requests in progress (at most {}); try again",
                        guard.limits.max_concurrent
                    ),
                )
                .into_response()
            }
        }
    };
    match timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {timeout:?} and was abandoned"),
        )
        .into_response(),
    }
}

/// An error answer: JSON `{"error": "...", "status": N}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> ApiError {
        let status = match err {
            Error::UnknownParameters { .. } | Error::InvalidParameter { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            status: self.status.as_u16(),
        };
        let mut response = json_response(&body);
        *response.status_mut() = self.status;
        response
    }
}

fn json_response<T: Serialize + ?Sized>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_bytes(bytes),
        Err(err) => {
            tracing::error!(%err, "cannot serialize an API answer");
            let body = format!(
                r#"{{"error":"cannot serialize the answer","status":{}}}"#,
                StatusCode::INTERNAL_SERVER_ERROR.as_u16()
            );
            let mut response = json_bytes(body.into_bytes());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint at {:?}; the API serves {}",
            uri.path(),
            paths().join(", ")
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {:?}: the API is read-only, use GET",
            uri.path()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

async fn healthz(
    State(shared): State<Shared>,
    staleness: Option<axum::Extension<Staleness>>,
) -> Response {
    if let Some(axum::Extension(st)) = staleness {
        let state = shared.0.state.borrow().clone();
        let age = st.age(state.as_deref());
        if st.freshness.live_after.is_some_and(|max| age > max) {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no scan completed for {}s: the scan loop is stuck",
                    age.as_secs()
                ),
            )
            .into_response();
        }
    }
    json_response(&Health {
        status: "ok".to_string(),
    })
}

#[derive(Serialize)]
struct ReadinessOut<'a> {
    status: &'static str,
    node: &'a str,
    last_scan: Timestamp,
    scans: &'a BTreeMap<ScanKind, ScanRun>,
}

async fn readyz(
    State(shared): State<Shared>,
    staleness: Option<axum::Extension<Staleness>>,
) -> Result<Response, ApiError> {
    let state = shared.snapshot()?;
    if let Some(axum::Extension(st)) = staleness {
        let age = st.age(Some(&state));
        if st.freshness.ready_after.is_some_and(|max| age > max) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the last completed scan is {}s old: scans are stale",
                    age.as_secs()
                ),
            ));
        }
    }
    Ok(json_response(&ReadinessOut {
        status: "ready",
        node: &state.report.node,
        last_scan: state.report.scanned_at,
        scans: &state.last_scans,
    }))
}

async fn metrics(
    State(shared): State<Shared>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let render = shared.0.metrics.clone();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The renderer may take locks the daemon also takes: keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || render(accept.as_deref()))
        .await
        .map_err(|err| ApiError::internal(format!("the metrics renderer failed: {err}")))?
        .map_err(|err| ApiError::internal(format!("cannot render metrics: {err}")))?;
    Ok(([(header::CONTENT_TYPE, body.content_type)], body.text).into_response())
}

async fn report(State(shared): State<Shared>) -> Result<Response, ApiError> {
    let state = shared.snapshot()?;
    // A full report can be megabytes: serialize it off the async workers.
    let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec(&*state.report))
        .await
        .map_err(|err| ApiError::internal(format!("serializing the report failed: {err}")))?
        .map_err(|err| ApiError::internal(format!("cannot serialize the report: {err}")))?;
    Ok(json_bytes(bytes))
}

fn containers_by_id(state: &NodeState) -> HashMap<&str, &Container> {
    state
        .report
        .containers
        .iter()
        .map(|c| (c.id.as_str(), c))
        .collect()
}

#[derive(Serialize)]
struct FindingsOut<'a> {
    node: &'a str,
    scanned_at: Timestamp,
    count: usize,
    findings: Vec<&'a TrackedFinding>,
}

async fn findings(
    State(shared): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = FindingsQuery::parse(raw.as_deref())?;
    let state = shared.snapshot()?;
    let by_id = containers_by_id(&state);
    let findings: Vec<&TrackedFinding> = state
        .findings
        .iter()
        .filter(|t| {
            let container = t
                .finding
                .container_id
                .as_deref()
                .and_then(|id| by_id.get(id));
            query.matches(t, container.copied())
        })
        .collect();
    Ok(json_response(&FindingsOut {
        node: &state.report.node,
        scanned_at: state.report.scanned_at,
        count: findings.len(),
        findings,
    }))
}

#[derive(Serialize)]
struct ContainersOut<'a> {
    node: &'a str,
    scanned_at: Timestamp,
    count: usize,
    containers: Vec<&'a Container>,
}

async fn containers(
    State(shared): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = ContainersQuery::parse(raw.as_deref())?;
    let state = shared.snapshot()?;
    let containers: Vec<&Container> = state
        .report
        .containers
        .iter()
        .filter(|c| query.matches(c))
        .collect();
    Ok(json_response(&ContainersOut {
        node: &state.report.node,
        scanned_at: state.report.scanned_at,
        count: containers.len(),
        containers,
    }))
}

#[derive(Serialize)]
struct ProcessOut<'a> {
    #[serde(flatten)]
    process: &'a Process,
    pod: Option<&'a PodRef>,
}

#[derive(Serialize)]
struct ProcessesOut<'a> {
    node: &'a str,
    scanned_at: Timestamp,
    count: usize,
    processes: Vec<ProcessOut<'a>>,
}

async fn processes(
    State(shared): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = ProcessesQuery::parse(raw.as_deref())?;
    let state = shared.snapshot()?;
    let by_id = containers_by_id(&state);
    let processes: Vec<ProcessOut> = state
        .report
        .processes
        .iter()
        .filter_map(|p| {
            let container = p
                .container_id
                .as_deref()
                .and_then(|id| by_id.get(id).copied());
            query.matches(p, container).then(|| ProcessOut {
                process: p,
                pod: container.and_then(|c| c.pod.as_ref()),
            })
        })
        .collect();
    Ok(json_response(&ProcessesOut {
        node: &state.report.node,
        scanned_at: state.report.scanned_at,
        count: processes.len(),
        processes,
    }))
}

#[derive(Serialize)]
struct ExecsOut<'a> {
    node: &'a str,
    since: Option<Timestamp>,
    count: usize,
    history: ExecHistoryStats,
    execs: Vec<ExecObservation>,
}

/// The history of exec-time observations: what short-lived processes were and raised,
/// after they (and their pods) are gone from the open findings.
async fn execs(
    State(shared): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = ExecsQuery::parse(raw.as_deref())?;
    let state = shared.snapshot()?;
    let now = Timestamp::now();
    let since = query.since.map(|s| s.resolve(now));
    let (history, execs) = match &shared.0.exec_history {
        Some(h) => (
            h.stats(),
            h.since(
                since.unwrap_or(Timestamp(std::time::UNIX_EPOCH)),
                now,
                |o| query.matches(o),
            ),
        ),
        None => (ExecHistoryStats::default(), Vec::new()),
    };
    Ok(json_response(&ExecsOut {
        node: &state.report.node,
        since,
        count: execs.len(),
        history,
        execs,
    }))
}
