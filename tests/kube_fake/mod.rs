//! A fake Kubernetes API server for `nodeguard run`, over real HTTP on 127.0.0.1:0, on a tokio
//! runtime of its own: synchronous tests and `#[tokio::test]`s can both start it.
//!
//! It checks what a real API server checks of what nodeguard sends:
//! - authentication: `Authorization: Bearer TOKEN` (401 otherwise);
//! - authorization: the rules of `manifests/clusterrole.yaml`, with the request attributes the
//!   API server derives from method, path and query (403 otherwise);
//! - pods: only the cluster-wide list and watch with `fieldSelector=spec.nodeName=NODE`
//!   (400 otherwise); watches replay what changed after their `resourceVersion`, then stream;
//! - Events: `events.k8s.io/v1` create and patch, validated like `ValidateEventCreate` plus the
//!   shape nodeguard promises (reporting controller `nodeguard`, instance = the node's name,
//!   action `Scan`): 422 with the reason otherwise.
//!
//! Adapted from `crates/nodeguard-kube/tests/fake`; shared by `tests/kube_e2e.rs` and
//! `tests/manifests.rs`. Event creates and patches can be switched to fail (500) or to hang,
//! and pod lists and watches made slow.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How Event creates and patches are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// 500 InternalError, without looking at the request.
    Fail500,
    /// Read the request and never answer (the client's timeout must end it).
    Hang,
}

/// What the API server's authorizer sees of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `pods`, or `pods/log` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Attributes {
    /// `verb group/resource namespace/name`, `-` for what is absent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        write!(
            f,
            "{} {}/{} {}/{}",
            self.verb,
            self.group,
            self.resource,
            or_dash(&self.namespace),
            or_dash(&self.name)
        )
    }
}

/// The RBAC attributes of a resource request, as the API server derives them
/// (`k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory`). `None` for non-resource URLs.
pub fn attributes(
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
) -> Option<Attributes> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let resource = match rest {
        [resource, _name, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] if !resource.is_empty() => resource.to_string(),
        _ => return None,
    };
    let name = rest.get(1).map(|n| n.to_string());
    let watch_param = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match method {
        "GET" | "HEAD" if legacy_watch || watch_param => "watch",
        "GET" | "HEAD" if name.is_some() => "get",
        "GET" | "HEAD" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if name.is_some() => "delete",
        "DELETE" => "deletecollection",
        _ => return None,
    };
    Some(Attributes {
        verb: verb.into(),
        group: group.into(),
        resource,
        namespace,
        name,
    })
}

/// The rules of a ClusterRole, as RBAC evaluates them.
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub user: String,
    pub rules: Vec<PolicyRule>,
}

impl Authorizer {
    /// The rules of the ClusterRole in `file` (the shipped `manifests/clusterrole.yaml`),
    /// granted to `user`.
    pub fn from_cluster_role_file(file: &Path, user: &str) -> Authorizer {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let role: ClusterRole = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a ClusterRole: {e}", file.display()));
        let rules = role.rules.unwrap_or_default();
        assert!(!rules.is_empty(), "{} grants nothing", file.display());
        Authorizer {
            user: user.to_string(),
            rules,
        }
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        let has = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        self.rules.iter().any(|rule| {
            has(rule.api_groups.as_deref().unwrap_or_default(), &a.group)
                && has(rule.resources.as_deref().unwrap_or_default(), &a.resource)
                && has(&rule.verbs, &a.verb)
                && rule.resource_names.as_ref().is_none_or(|names| {
                    names.is_empty() || a.name.as_ref().is_some_and(|n| names.contains(n))
                })
        })
    }
}

/// One request and how it was answered (status 0: never answered).
#[derive(Debug, Clone)]
pub struct Request {
    pub seq: usize,
    /// Since the server started.
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub query: String,
    pub attributes: Option<Attributes>,
    pub status: u16,
    /// The JSON body (`null` without one); for an accepted patch, the Event after it.
    pub body: Value,
    /// Why it was refused (4xx), empty otherwise.
    pub why: String,
}

impl Request {
    pub fn is_event_write(&self) -> bool {
        self.attributes.as_ref().is_some_and(|a| {
            a.group == "events.k8s.io" && a.resource == "events" && a.verb != "list"
        })
    }

    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    pub fn type_(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    pub fn regarding(&self) -> &Value {
        &self.body["regarding"]
    }

    /// The finding id in `regarding.fieldPath` (`…findings{ID}`), as nodeguard writes it.
    pub fn finding_id(&self) -> Option<&str> {
        let path = self.body["regarding"]["fieldPath"].as_str()?;
        let start = path.rfind("findings{")? + "findings{".len();
        path[start..].strip_suffix('}')
    }

    /// One line for failure messages.
    pub fn line(&self) -> String {
        let mut line = format!(
            "#{} +{:.1?} {} {}{}{} -> {}",
            self.seq,
            self.at,
            self.method,
            self.path,
            if self.query.is_empty() { "" } else { "?" },
            self.query,
            self.status
        );
        if self.is_event_write() && !self.body.is_null() {
            let r = self.regarding();
            let _ = write!(
                line,
                " [{} {} regarding {} {}/{} uid={} fieldPath={}]",
                self.type_(),
                self.reason(),
                r["kind"].as_str().unwrap_or("?"),
                r["namespace"].as_str().unwrap_or("-"),
                r["name"].as_str().unwrap_or("?"),
                r["uid"].as_str().unwrap_or("-"),
                r["fieldPath"].as_str().unwrap_or("-"),
            );
        }
        if !self.why.is_empty() {
            let _ = write!(line, " ({})", self.why);
        }
        line
    }
}

struct Inner {
    node: String,
    token: String,
    rv: u64,
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, watch line) of every pod change, for watches that start behind.
    history: Vec<(u64, String)>,
    events: BTreeMap<(String, String), Value>,
    requests: Vec<Request>,
    event_mode: Mode,
    /// How long pod lists and watches wait before they answer.
    pod_delay: Duration,
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    authorizer: Arc<Authorizer>,
    pod_watch: broadcast::Sender<(u64, String)>,
    started: Instant,
}

/// The running fake. Its server stops when this is dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    pub token: String,
    inner: Arc<Mutex<Inner>>,
    pod_watch: broadcast::Sender<(u64, String)>,
    started: Instant,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeApi {
    /// Serves `node`'s pods and its Events to requests that carry `token` and that
    /// `authorizer` allows.
    pub fn start(node: &str, token: &str, authorizer: Authorizer) -> FakeApi {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fake-api-server")
            .build()
            .expect("start the fake API server's runtime");
        let inner = Arc::new(Mutex::new(Inner {
            node: node.to_string(),
            token: token.to_string(),
            rv: 100,
            pods: BTreeMap::new(),
            history: Vec::new(),
            events: BTreeMap::new(),
            requests: Vec::new(),
            event_mode: Mode::Normal,
            pod_delay: Duration::ZERO,
        }));
        let (pod_watch, _) = broadcast::channel(1024);
        let started = Instant::now();
        let app = App {
            inner: inner.clone(),
            authorizer: Arc::new(authorizer),
            pod_watch: pod_watch.clone(),
            started,
        };
        let router = Router::new().fallback(handle).with_state(app);
        // Bound without `block_on`, which would panic inside a caller's runtime.
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        listener
            .set_nonblocking(true)
            .expect("make the fake API server's socket non-blocking");
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
        FakeApi {
            addr,
            token: token.to_string(),
            inner,
            pod_watch,
            started,
            runtime: Some(runtime),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kubeconfig that points at this server over plain HTTP with the token.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: nodeguard\n  user:\n    token: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nodeguard\n\
             current-context: fake\n",
            self.addr, self.token
        )
    }

    /// Adds or replaces a pod and tells open watches.
    pub fn put_pod(&self, mut pod: Value) {
        let mut inner = self.lock();
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
        let _ = self.pod_watch.send((rv, line));
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        let Some(mut pod) = inner.pods.remove(&format!("{namespace}/{name}")) else {
            return;
        };
        inner.rv += 1;
        let rv = inner.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": "DELETED", "object": pod}).to_string();
        inner.history.push((rv, line.clone()));
        let _ = self.pod_watch.send((rv, line));
    }

    pub fn set_event_mode(&self, mode: Mode) {
        self.lock().event_mode = mode;
    }

    /// Makes pod lists and watches answer only after `delay`, as a busy API server does.
    pub fn set_pod_delay(&self, delay: Duration) {
        self.lock().pod_delay = delay;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Event creates and patches the fake accepted, in order.
    pub fn accepted_event_writes(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_event_write() && (200..300).contains(&r.status))
            .collect()
    }

    /// Requests refused for what they were (401, 403, 400, 404, 409, 422): a correct client
    /// within its ClusterRole gets none.
    pub fn refused(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| (400..500).contains(&r.status))
            .collect()
    }

    /// Everything the fake saw, for failure messages (the last `max` requests).
    pub fn dump(&self, max: usize) -> String {
        let requests = self.requests();
        let skip = requests.len().saturating_sub(max);
        let mut out = format!(
            "--- fake API server at {}: {} requests (last {} shown)\n",
            self.addr,
            requests.len(),
            requests.len() - skip
        );
        for r in &requests[skip..] {
            out.push_str(&r.line());
            out.push('\n');
        }
        out.push_str("--- end of fake API server requests");
        out
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Hung requests and open watches never end by themselves.
            runtime.shutdown_background();
        }
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

/// The query string's parameters, percent-decoded.
pub fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Records a request; returns its sequence number.
fn record(app: &App, request: Request) -> usize {
    let mut inner = app.inner.lock().unwrap_or_else(|e| e.into_inner());
    let seq = inner.requests.len();
    inner.requests.push(Request { seq, ..request });
    seq
}

fn set_status(app: &App, seq: usize, code: u16, why: &str, body: Option<Value>) {
    let mut inner = app.inner.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = inner.requests.get_mut(seq) {
        r.status = code;
        r.why = why.to_string();
        if let Some(body) = body {
            r.body = body;
        }
    }
}

/// An error answer, recorded with its reason.
fn refuse(app: &App, seq: usize, code: StatusCode, reason: &str, why: &str) -> Response {
    set_status(app, seq, code.as_u16(), why, None);
    status(code, reason, why)
}

async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query_map(uri.query());
    let attrs = attributes(method.as_str(), uri.path(), &query);
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let seq = record(
        &app,
        Request {
            seq: 0,
            at: app.started.elapsed(),
            method: method.to_string(),
            path: uri.path().to_string(),
            query: percent_decode(uri.query().unwrap_or("")),
            attributes: attrs.clone(),
            status: 0,
            body: body_json.clone(),
            why: String::new(),
        },
    );
    let token = app
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .token
        .clone();
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token.as_str()) {
        return refuse(
            &app,
            seq,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            &format!("no valid bearer token (got {presented:?})"),
        );
    }
    let Some(a) = attrs else {
        return refuse(
            &app,
            seq,
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("non-resource URL {} is not granted", uri.path()),
        );
    };
    if !app.authorizer.allows(&a) {
        let scope = match &a.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let message = format!(
            "{} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            a.resource, app.authorizer.user, a.verb, a.resource, a.group
        );
        return refuse(&app, seq, StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    match (a.group.as_str(), a.resource.as_str(), a.verb.as_str()) {
        ("", "pods", "list" | "watch") if a.namespace.is_none() && a.name.is_none() => {
            let delay = app
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pod_delay;
            tokio::time::sleep(delay).await;
            pods(&app, seq, &a.verb, &query)
        }
        ("events.k8s.io", "events", "create") if a.name.is_none() => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, &ns, None, body_json).await
        }
        ("events.k8s.io", "events", "patch") => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, &ns, a.name.clone(), body_json).await
        }
        _ => refuse(
            &app,
            seq,
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake does not serve {} {uri}", method),
        ),
    }
}

fn pods(app: &App, seq: usize, verb: &str, query: &BTreeMap<String, String>) -> Response {
    let node = app
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .node
        .clone();
    let want = format!("spec.nodeName={node}");
    if query.get("fieldSelector") != Some(&want) {
        return refuse(
            app,
            seq,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "this node's agent must select fieldSelector {want}, got {:?}",
                query.get("fieldSelector")
            ),
        );
    }
    if verb == "watch" {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Subscribe before reading the history: no change falls between the two.
        let rx = app.pod_watch.subscribe();
        let backlog: Vec<(u64, String)> = app
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
                    Ok((rv, line)) if rv > last => {
                        return Some((Ok(format!("{line}\n")), (rx, rv)));
                    }
                    Ok(_) => continue,
                    // Lagged or closed: end the watch; the client re-lists.
                    Err(_) => return None,
                }
            }
        });
        use futures::StreamExt;
        set_status(app, seq, 200, "", None);
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(backlog.chain(live)))
            .unwrap();
    }
    let inner = app.inner.lock().unwrap_or_else(|e| e.into_inner());
    let items: Vec<Value> = inner
        .pods
        .values()
        .filter(|p| p["spec"]["nodeName"] == inner.node.as_str())
        .cloned()
        .collect();
    let rv = inner.rv;
    drop(inner);
    set_status(app, seq, 200, "", None);
    axum::Json(json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    }))
    .into_response()
}

/// An Event create (`name` None) or patch.
async fn event_write(
    app: &App,
    seq: usize,
    ns: &str,
    name: Option<String>,
    body: Value,
) -> Response {
    let mode = app
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .event_mode;
    match mode {
        Mode::Normal => {}
        Mode::Fail500 => {
            set_status(app, seq, 500, "", None);
            return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "down");
        }
        Mode::Hang => {
            // Status stays 0: accepted, never answered.
            return std::future::pending().await;
        }
    }
    if body.is_null() {
        return refuse(
            app,
            seq,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    }
    let mut inner = app.inner.lock().unwrap_or_else(|e| e.into_inner());
    let node = inner.node.clone();
    match name {
        None => {
            let mut event = body;
            if let Err(why) = validate_event(ns, &node, &mut event) {
                drop(inner);
                return refuse(app, seq, StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &why);
            }
            let key = (
                ns.to_string(),
                event["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            if inner.events.contains_key(&key) {
                drop(inner);
                return refuse(
                    app,
                    seq,
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("events \"{}\" already exists", key.1),
                );
            }
            inner.rv += 1;
            event["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            event["metadata"]["uid"] = json!(format!("event-uid-{}", inner.rv));
            inner.events.insert(key, event.clone());
            drop(inner);
            set_status(app, seq, 201, "", Some(event.clone()));
            (StatusCode::CREATED, axum::Json(event)).into_response()
        }
        Some(name) => {
            let key = (ns.to_string(), name.clone());
            let Some(old) = inner.events.get(&key).cloned() else {
                drop(inner);
                return refuse(
                    app,
                    seq,
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("events \"{name}\" not found"),
                );
            };
            let mut merged = old.clone();
            merge_patch(&mut merged, &body);
            let invalid = validate_event(ns, &node, &mut merged).err().or_else(|| {
                [
                    "reason",
                    "note",
                    "type",
                    "action",
                    "regarding",
                    "related",
                    "reportingController",
                    "reportingInstance",
                    "eventTime",
                ]
                .into_iter()
                .find(|field| old[*field] != merged[*field])
                .map(|field| format!("{field}: field is immutable"))
            });
            if let Some(why) = invalid {
                drop(inner);
                return refuse(app, seq, StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &why);
            }
            inner.rv += 1;
            merged["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            inner.events.insert(key, merged.clone());
            drop(inner);
            set_status(app, seq, 200, "", Some(merged.clone()));
            axum::Json(merged).into_response()
        }
    }
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

/// `^[A-Z][A-Za-z0-9]*$`, at most 128 bytes: the API server's rule for reasons.
pub fn is_camel_reason(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// What the API server checks of an events.k8s.io/v1 Event (`ValidateEventCreate`), plus the
/// shape nodeguard promises. Fills in metadata.namespace from the path as the server does.
fn validate_event(path_ns: &str, node: &str, ev: &mut Value) -> Result<(), String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    if s(&ev["apiVersion"]).as_deref() != Some("events.k8s.io/v1") {
        return Err(format!(
            "apiVersion {} is not events.k8s.io/v1",
            ev["apiVersion"]
        ));
    }
    if s(&ev["kind"]).as_deref() != Some("Event") {
        return Err(format!("kind {} is not Event", ev["kind"]));
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
                "metadata.namespace {ns:?} does not match the request's namespace {path_ns:?}"
            ))
        }
    }
    if s(&ev["eventTime"]).is_none_or(|t| t.is_empty()) {
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
    if controller != "nodeguard" {
        return Err(format!(
            "reportingController {controller:?} is not nodeguard"
        ));
    }
    let instance = s(&ev["reportingInstance"]).unwrap_or_default();
    if instance != node {
        return Err(format!(
            "reportingInstance {instance:?} is not the node's name {node:?}"
        ));
    }
    let action = s(&ev["action"]).unwrap_or_default();
    if action != "Scan" {
        return Err(format!("action {action:?} is not Scan"));
    }
    let reason = s(&ev["reason"]).unwrap_or_default();
    if !is_camel_reason(&reason) {
        return Err(format!("reason {reason:?} is not UpperCamelCase"));
    }
    let type_ = s(&ev["type"]).unwrap_or_default();
    if type_ != "Normal" && type_ != "Warning" {
        return Err(format!("type: Unsupported value {type_:?}"));
    }
    if let Some(note) = ev["note"].as_str() {
        if note.len() > 1024 {
            return Err(format!(
                "note: Too long: may not be longer than 1024, has {} bytes",
                note.len()
            ));
        }
    } else if !ev["note"].is_null() {
        return Err("note is not a string".into());
    }
    let regarding = &ev["regarding"];
    for field in ["kind", "name", "apiVersion"] {
        if s(&regarding[field]).is_none_or(|v| v.is_empty()) {
            return Err(format!("regarding.{field}: Required value"));
        }
    }
    let regarding_ns = s(&regarding["namespace"]).unwrap_or_default();
    match s(&regarding["kind"]).unwrap_or_default().as_str() {
        "Pod" => {
            if regarding_ns != path_ns {
                return Err(format!(
                    "regarding.namespace {regarding_ns:?} does not match the Event's namespace {path_ns:?}"
                ));
            }
            if s(&regarding["uid"]).is_none_or(|u| u.is_empty()) {
                return Err("regarding.uid of a Pod is missing".into());
            }
        }
        "Node" => {
            if !regarding_ns.is_empty() {
                return Err("regarding.namespace: a Node has no namespace".into());
            }
            if path_ns != "default" {
                return Err(format!(
                    "a cluster-scoped object's Event belongs in namespace default, not {path_ns:?}"
                ));
            }
        }
        other => {
            return Err(format!(
                "regarding.kind {other:?}: nodeguard regards Pods and Nodes only"
            ))
        }
    }
    if !ev["series"].is_null() {
        if ev["series"]["count"].as_i64().unwrap_or(0) < 2 {
            return Err("series.count: should be at least 2".into());
        }
        if s(&ev["series"]["lastObservedTime"]).is_none_or(|t| t.is_empty()) {
            return Err("series.lastObservedTime: Required value".into());
        }
    }
    Ok(())
}
