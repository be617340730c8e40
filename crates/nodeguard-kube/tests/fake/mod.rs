//! A fake Kubernetes API server over real HTTP on 127.0.0.1:0, serving just what nodeguard
//! uses and checking requests the way the real one does (422 with a reason otherwise).
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// How an endpoint group answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// 500 InternalError.
    Fail500,
    /// Accept the request and never answer until the mode changes; then answer 500 (a
    /// request that hung that long has failed).
    Hang,
}

/// One request to the Events API, answered or not.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub method: &'static str,
    pub at: Instant,
    pub status: u16,
}

/// An Event the fake accepted (POST) or a series update it applied (PATCH).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: &'static str,
    pub namespace: String,
    pub name: String,
    pub body: Value,
    pub at: Instant,
}

impl Recorded {
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }
    pub fn type_(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
    pub fn note(&self) -> &str {
        self.body["note"].as_str().unwrap_or("")
    }
    pub fn field_path(&self) -> &str {
        self.body["regarding"]["fieldPath"].as_str().unwrap_or("")
    }
    pub fn regarding_kind(&self) -> &str {
        self.body["regarding"]["kind"].as_str().unwrap_or("")
    }
}

struct Inner {
    node: String,
    node_uid: String,
    rv: u64,
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, watch line) of every pod change, for watches that start behind.
    history: Vec<(u64, String)>,
    events: BTreeMap<(String, String), Value>,
    recorded: Vec<Recorded>,
    attempts: Vec<Attempt>,
    rejections: Vec<String>,
    queries: Vec<String>,
    event_mode: Mode,
    pod_mode: Mode,
}

pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    pod_watch: broadcast::Sender<Option<(u64, String)>>,
    release: watch::Sender<u64>,
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    pod_watch: broadcast::Sender<Option<(u64, String)>>,
    release: watch::Receiver<u64>,
}

impl FakeApi {
    pub async fn start(node: &str) -> FakeApi {
        let inner = Arc::new(Mutex::new(Inner {
            node: node.to_string(),
            node_uid: format!("uid-of-{node}"),
            rv: 100,
            pods: BTreeMap::new(),
            history: Vec::new(),
            events: BTreeMap::new(),
            recorded: Vec::new(),
            attempts: Vec::new(),
            rejections: Vec::new(),
            queries: Vec::new(),
            event_mode: Mode::Normal,
            pod_mode: Mode::Normal,
        }));
        let (pod_watch, _) = broadcast::channel(1024);
        let (release, release_rx) = watch::channel(0);
        let app = App {
            inner: inner.clone(),
            pod_watch: pod_watch.clone(),
            release: release_rx,
        };
        let router = Router::new()
            .route("/api/v1/pods", get(pods))
            .route("/api/v1/nodes/{name}", get(node_get))
            .route("/apis/events.k8s.io/v1/events", get(events_list))
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                axum::routing::post(event_create),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                axum::routing::patch(event_patch),
            )
            .fallback(|uri: axum::http::Uri| async move {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("no route {uri}"),
                )
            })
            .with_state(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        FakeApi {
            addr,
            inner,
            pod_watch,
            release,
        }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn node_uid(&self) -> String {
        self.inner.lock().unwrap().node_uid.clone()
    }

    /// Adds or replaces a pod and tells open watches.
    pub fn put_pod(&self, mut pod: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = pod_key(&pod);
        let kind = if inner.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let line = json!({"type": kind, "object": pod}).to_string();
        inner.pods.insert(key, pod);
        inner.history.push((rv, line.clone()));
        let _ = self.pod_watch.send(Some((rv, line)));
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        let Some(mut pod) = inner.pods.remove(&format!("{namespace}/{name}")) else {
            return;
        };
        inner.rv += 1;
        let rv = inner.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": "DELETED", "object": pod}).to_string();
        inner.history.push((rv, line.clone()));
        let _ = self.pod_watch.send(Some((rv, line)));
    }

    pub fn set_event_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().event_mode = mode;
        self.release.send_modify(|g| *g += 1);
    }

    /// Also ends open watches, as an API server going away would.
    pub fn set_pod_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().pod_mode = mode;
        let _ = self.pod_watch.send(None);
        self.release.send_modify(|g| *g += 1);
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().recorded.clone()
    }

    pub fn posts(&self) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// Why requests were refused with 422 (a correct client gets none).
    pub fn rejections(&self) -> Vec<String> {
        self.inner.lock().unwrap().rejections.clone()
    }

    /// Query strings of every request, in order.
    pub fn queries(&self) -> Vec<String> {
        self.inner.lock().unwrap().queries.clone()
    }

    /// The stored Event by name (after any series PATCH).
    pub fn stored(&self, namespace: &str, name: &str) -> Option<Value> {
        self.inner
            .lock()
            .unwrap()
            .events
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

fn pod_key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or("default"),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// Waits while `mode` hangs; the answer once released is a 500.
async fn hang(app: &App) -> Response {
    let mut release = app.release.clone();
    release.borrow_and_update();
    let _ = release.changed().await;
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "request hung",
    )
}

async fn pods(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (mode, node) = {
        let mut inner = app.inner.lock().unwrap();
        inner.queries.push(format!("pods?{q:?}"));
        (inner.pod_mode, inner.node.clone())
    };
    match mode {
        Mode::Normal => {}
        Mode::Fail500 => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "down"),
        Mode::Hang => return hang(&app).await,
    }
    let want = format!("spec.nodeName={node}");
    if q.get("fieldSelector") != Some(&want) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "expected fieldSelector {want}, got {:?}",
                q.get("fieldSelector")
            ),
        );
    }
    if q.get("watch").map(String::as_str) == Some("true") {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Subscribe before reading the history: no change falls between the two.
        let rx = app.pod_watch.subscribe();
        let backlog: Vec<(u64, String)> = app
            .inner
            .lock()
            .unwrap()
            .history
            .iter()
            .filter(|(rv, _)| *rv > from)
            .cloned()
            .collect();
        let last = backlog.last().map_or(from, |(rv, _)| *rv);
        let backlog = futures::stream::iter(
            backlog
                .into_iter()
                .map(|(_, line)| Ok::<_, std::io::Error>(format!("{line}\n"))),
        );
        let live = futures::stream::unfold((rx, last), |(mut rx, last)| async move {
            loop {
                match rx.recv().await {
                    Ok(Some((rv, line))) if rv > last => {
                        return Some((Ok(format!("{line}\n")), (rx, rv)));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return None,
                }
            }
        });
        use futures::StreamExt;
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(backlog.chain(live)))
            .unwrap();
    }
    let inner = app.inner.lock().unwrap();
    let items: Vec<Value> = inner.pods.values().cloned().collect();
    axum::Json(json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

async fn node_get(State(app): State<App>, Path(name): Path<String>) -> Response {
    let inner = app.inner.lock().unwrap();
    if name != inner.node {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such node");
    }
    axum::Json(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": inner.node, "uid": inner.node_uid, "resourceVersion": "1"},
    }))
    .into_response()
}

async fn events_list(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = app.inner.lock().unwrap();
    inner.queries.push(format!("events?{q:?}"));
    // The fields events.k8s.io/v1 supports in selectors (besides metadata.*).
    let supported = [
        "reportingController",
        "type",
        "reason",
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.fieldPath",
    ];
    let mut filters = Vec::new();
    if let Some(selector) = q.get("fieldSelector") {
        for term in selector.split(',') {
            let Some((field, value)) = term.split_once('=') else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "bad selector");
            };
            if !supported.contains(&field) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("field label not supported: {field}"),
                );
            }
            filters.push((field.to_string(), value.to_string()));
        }
    }
    let items: Vec<Value> = inner
        .events
        .values()
        .filter(|ev| {
            filters.iter().all(|(field, value)| {
                let got = field
                    .split('.')
                    .fold(*ev, |v, part| &v[part])
                    .as_str()
                    .unwrap_or("");
                got == value
            })
        })
        .cloned()
        .collect();
    axum::Json(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "EventList",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

fn event_mode(app: &App) -> Mode {
    app.inner.lock().unwrap().event_mode
}

fn record_attempt(app: &App, method: &'static str, code: StatusCode) {
    app.inner.lock().unwrap().attempts.push(Attempt {
        method,
        at: Instant::now(),
        status: code.as_u16(),
    });
}

fn reject(app: &App, method: &'static str, why: String) -> Response {
    app.inner.lock().unwrap().rejections.push(why.clone());
    record_attempt(app, method, StatusCode::UNPROCESSABLE_ENTITY);
    status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &why)
}

async fn event_create(
    State(app): State<App>,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match event_mode(&app) {
        Mode::Normal => {}
        Mode::Fail500 => {
            record_attempt(&app, "POST", StatusCode::INTERNAL_SERVER_ERROR);
            return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "down");
        }
        Mode::Hang => {
            // Status 0: accepted, never answered.
            app.inner.lock().unwrap().attempts.push(Attempt {
                method: "POST",
                at: Instant::now(),
                status: 0,
            });
            return hang(&app).await;
        }
    }
    let mut event: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reject(&app, "POST", format!("body is not JSON: {e}")),
    };
    if let Err(why) = validate_event(&ns, &mut event) {
        return reject(&app, "POST", why);
    }
    let name = event["metadata"]["name"].as_str().unwrap_or("").to_string();
    let mut inner = app.inner.lock().unwrap();
    if inner.events.contains_key(&(ns.clone(), name.clone())) {
        drop(inner);
        record_attempt(&app, "POST", StatusCode::CONFLICT);
        return status(StatusCode::CONFLICT, "AlreadyExists", "event exists");
    }
    inner.rv += 1;
    event["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
    event["metadata"]["uid"] = json!(format!("event-uid-{}", inner.rv));
    inner
        .events
        .insert((ns.clone(), name.clone()), event.clone());
    inner.recorded.push(Recorded {
        method: "POST",
        namespace: ns,
        name,
        body: event.clone(),
        at: Instant::now(),
    });
    inner.attempts.push(Attempt {
        method: "POST",
        at: Instant::now(),
        status: 201,
    });
    (StatusCode::CREATED, axum::Json(event)).into_response()
}

async fn event_patch(
    State(app): State<App>,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    match event_mode(&app) {
        Mode::Normal => {}
        Mode::Fail500 => {
            record_attempt(&app, "PATCH", StatusCode::INTERNAL_SERVER_ERROR);
            return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "down");
        }
        Mode::Hang => {
            // Status 0: accepted, never answered.
            app.inner.lock().unwrap().attempts.push(Attempt {
                method: "PATCH",
                at: Instant::now(),
                status: 0,
            });
            return hang(&app).await;
        }
    }
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reject(&app, "PATCH", format!("body is not JSON: {e}")),
    };
    let Some(old) = app
        .inner
        .lock()
        .unwrap()
        .events
        .get(&(ns.clone(), name.clone()))
        .cloned()
    else {
        record_attempt(&app, "PATCH", StatusCode::NOT_FOUND);
        return status(StatusCode::NOT_FOUND, "NotFound", "no such event");
    };
    let mut merged = old.clone();
    merge_patch(&mut merged, &patch);
    if let Err(why) = validate_event(&ns, &mut merged) {
        return reject(&app, "PATCH", why);
    }
    for field in [
        "reason",
        "note",
        "type",
        "action",
        "regarding",
        "related",
        "reportingController",
        "reportingInstance",
        "eventTime",
    ] {
        if old[field] != merged[field] {
            return reject(&app, "PATCH", format!("{field}: field is immutable"));
        }
    }
    if merged["series"].is_null() {
        return reject(&app, "PATCH", "a series update without a series".into());
    }
    let mut inner = app.inner.lock().unwrap();
    inner.rv += 1;
    merged["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
    inner
        .events
        .insert((ns.clone(), name.clone()), merged.clone());
    inner.recorded.push(Recorded {
        method: "PATCH",
        namespace: ns,
        name,
        body: merged.clone(),
        at: Instant::now(),
    });
    inner.attempts.push(Attempt {
        method: "PATCH",
        at: Instant::now(),
        status: 200,
    });
    axum::Json(merged).into_response()
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_camel_reason(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
        && s.len() <= 128
}

/// What the API server checks on events.k8s.io/v1 (ValidateEventCreate), plus the shape
/// nodeguard promises. Fills in metadata.namespace from the path as the server does.
fn validate_event(path_ns: &str, ev: &mut Value) -> Result<(), String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    if s(&ev["apiVersion"]).as_deref() != Some("events.k8s.io/v1") {
        return Err(format!("apiVersion {:?}", ev["apiVersion"]));
    }
    if s(&ev["kind"]).as_deref() != Some("Event") {
        return Err(format!("kind {:?}", ev["kind"]));
    }
    let name = s(&ev["metadata"]["name"]).unwrap_or_default();
    if !is_dns_subdomain(&name) {
        return Err(format!("metadata.name {name:?} is not a DNS subdomain"));
    }
    match s(&ev["metadata"]["namespace"]) {
        None => ev["metadata"]["namespace"] = json!(path_ns),
        Some(ns) if ns == path_ns => {}
        Some(ns) => {
            return Err(format!(
                "metadata.namespace {ns:?} does not match the request namespace {path_ns:?}"
            ))
        }
    }
    if ev["eventTime"].as_str().is_none_or(str::is_empty) {
        return Err("eventTime: Required value".into());
    }
    for unset in [
        "deprecatedCount",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedSource",
    ] {
        if !ev[unset].is_null() {
            return Err(format!("{unset}: needs to be unset"));
        }
    }
    let controller = s(&ev["reportingController"]).unwrap_or_default();
    if controller.is_empty() || controller.len() > 63 {
        return Err(format!("reportingController {controller:?}"));
    }
    let instance = s(&ev["reportingInstance"]).unwrap_or_default();
    if instance.is_empty() || instance.len() > 128 {
        return Err(format!("reportingInstance {instance:?}"));
    }
    let action = s(&ev["action"]).unwrap_or_default();
    if action.is_empty() || action.len() > 128 {
        return Err(format!("action {action:?}"));
    }
    let reason = s(&ev["reason"]).unwrap_or_default();
    if !is_camel_reason(&reason) {
        return Err(format!("reason {reason:?} is not UpperCamelCase"));
    }
    let type_ = s(&ev["type"]).unwrap_or_default();
    if type_ != "Normal" && type_ != "Warning" {
        return Err(format!("type: has invalid value: {type_:?}"));
    }
    if let Some(note) = ev["note"].as_str() {
        if note.len() > 1024 {
            return Err(format!(
                "note: can have at most 1024 characters, has {}",
                note.len()
            ));
        }
    }
    let regarding = &ev["regarding"];
    let kind = s(&regarding["kind"]).unwrap_or_default();
    for field in ["kind", "name", "uid", "apiVersion"] {
        if regarding[field].as_str().is_none_or(str::is_empty) {
            return Err(format!("regarding.{field} is missing"));
        }
    }
    let regarding_ns = s(&regarding["namespace"]).unwrap_or_default();
    match kind.as_str() {
        "Pod" => {
            if regarding_ns != path_ns {
                return Err(format!(
                    "regarding.namespace {regarding_ns:?} does not match event.namespace {path_ns:?}"
                ));
            }
        }
        "Node" => {
            if !regarding_ns.is_empty() {
                return Err("a Node has no namespace".into());
            }
            if path_ns != "default" && path_ns != "kube-system" {
                return Err(format!(
                    "cluster-scoped regarding needs event namespace default, got {path_ns:?}"
                ));
            }
        }
        other => return Err(format!("regarding.kind {other:?} unexpected")),
    }
    if !ev["series"].is_null() {
        if ev["series"]["count"].as_i64().unwrap_or(0) < 2 {
            return Err("series.count: should be at least 2".into());
        }
        if ev["series"]["lastObservedTime"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err("series.lastObservedTime: Required value".into());
        }
    }
    Ok(())
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
