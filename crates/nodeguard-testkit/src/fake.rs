//! A fake Kubernetes API server over real HTTP on 127.0.0.1:0, on a tokio runtime of its
//! own: synchronous tests and `#[tokio::test]`s can both start it. The one fake of the
//! workspace: the kube crate's tests, `tests/kube_e2e.rs` and `tests/manifests.rs` use it.
//!
//! It checks what a real kube-apiserver v1.20.2 checks of what nodeguard sends:
//! - authentication: `Authorization: Bearer TOKEN` (401 otherwise);
//! - authorization: the rules of a ClusterRole (the shipped `manifests/clusterrole.yaml`), with
//!   the request attributes the API server derives from method, path and query; a denial is a
//!   403 whose message names user, verb, resource, group and scope as the real one does;
//! - pods: only the cluster-wide list and watch with `fieldSelector=spec.nodeName=NODE`
//!   (400 otherwise); watches replay what changed after their `resourceVersion`, then stream;
//! - Events, core/v1 (create) and `events.k8s.io/v1` (create, patch), validated as v1.20.2's
//!   `ValidateEventCreate` does, including its namespace rule for Events about cluster-scoped
//!   objects: a core/v1 Event without `eventTime` about the Node must be in `default` (or no
//!   namespace); an Event with `eventTime` (every `events.k8s.io/v1` one) must be in
//!   `kube-system` (v1.20.12 / 1.21.6 / 1.22.3 and later also take `default`;
//!   kubernetes/kubernetes#100125). Then the shape nodeguard promises (its "contract":
//!   reporting component `nodeguard`, instance and source host = the node's name, action `Scan`,
//!   UpperCamelCase reason, a Pod's uid): 422 with the reason otherwise, prefixed
//!   `nodeguard contract:` where a real server would have taken it;
//! - the Node (`get`), for configurations whose ClusterRole grants it;
//! - `wgpolicyk8s.io/v1alpha2` PolicyReports and ClusterPolicyReports (list by label, create,
//!   update, delete), validated as the CRDs in `manifests/crds/` make the real server do, with
//!   its conflicts and size limits (`fake/reports.rs`); or a 404 for all of them while the
//!   CRDs are "not installed".
//!
//! Event creates and patches can be switched to fail (500) or to hang, pod lists and watches
//! likewise, or made slow.
//!
//! Every handler has one shape: a fault mode first ([`Mode`], through `fault`), then a
//! decision `Result<Reply, Refusal>` (refusals worded as the real server words them), with
//! stored objects (Events, reports) kept in a `Store` that answers conflicts, missing
//! objects, etcd's size limit and resourceVersions as the real storage does; `answer`
//! records the outcome on the request, which tests read back ([`FakeApi::requests`]).
#![allow(dead_code)]

mod reports;
pub use reports::ReportsMode;

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
    /// Read the request and answer nothing until the mode changes; then a 500 (a request
    /// that hung that long has failed). A client's timeout may end it first.
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

    /// Everything, for `user` (a cluster admin): for tests of what the server validates
    /// rather than what it authorizes.
    pub fn allow_all(user: &str) -> Authorizer {
        Authorizer {
            user: user.to_string(),
            rules: vec![PolicyRule {
                api_groups: Some(vec!["*".into()]),
                resources: Some(vec!["*".into()]),
                verbs: vec!["*".into()],
                ..PolicyRule::default()
            }],
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
    /// A create or patch of Events, core/v1 or `events.k8s.io/v1`.
    pub fn is_event_write(&self) -> bool {
        self.attributes.as_ref().is_some_and(|a| {
            (a.group.is_empty() || a.group == "events.k8s.io")
                && a.resource == "events"
                && (a.verb == "create" || a.verb == "patch")
        })
    }

    /// The namespace in the request's path.
    pub fn namespace(&self) -> &str {
        self.attributes
            .as_ref()
            .and_then(|a| a.namespace.as_deref())
            .unwrap_or("")
    }

    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    pub fn type_(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    /// `note` (events.k8s.io) or `message` (core/v1).
    pub fn note(&self) -> &str {
        self.body["note"]
            .as_str()
            .or(self.body["message"].as_str())
            .unwrap_or("")
    }

    /// `regarding` (events.k8s.io) or `involvedObject` (core/v1).
    pub fn regarding(&self) -> &Value {
        if self.body["involvedObject"].is_object() {
            &self.body["involvedObject"]
        } else {
            &self.body["regarding"]
        }
    }

    pub fn regarding_kind(&self) -> &str {
        self.regarding()["kind"].as_str().unwrap_or("")
    }

    pub fn field_path(&self) -> &str {
        self.regarding()["fieldPath"].as_str().unwrap_or("")
    }

    /// The finding id in the field path (`…findings{ID}`), as nodeguard writes it.
    pub fn finding_id(&self) -> Option<&str> {
        let path = self.regarding()["fieldPath"].as_str()?;
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
    node_uid: String,
    token: String,
    rv: u64,
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, watch line) of every pod change, for watches that start behind.
    history: Vec<(u64, String)>,
    /// Events (both APIs) by (namespace, name).
    events: Store<(String, String)>,
    requests: Vec<Request>,
    event_mode: Mode,
    pod_mode: Mode,
    /// How long pod lists and watches wait before they answer.
    pod_delay: Duration,
    /// Stored reports by (resource, namespace or "", name).
    reports: Store<(String, String, String)>,
    reports_mode: ReportsMode,
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    authorizer: Arc<Authorizer>,
    pod_watch: broadcast::Sender<(u64, String)>,
    release: tokio::sync::watch::Receiver<u64>,
    started: Instant,
}

impl App {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake. Its server stops when this is dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    pub token: String,
    inner: Arc<Mutex<Inner>>,
    pod_watch: broadcast::Sender<(u64, String)>,
    release: tokio::sync::watch::Sender<u64>,
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
            node_uid: format!("uid-of-{node}"),
            token: token.to_string(),
            rv: 100,
            pods: BTreeMap::new(),
            history: Vec::new(),
            events: Store::new(),
            requests: Vec::new(),
            event_mode: Mode::Normal,
            pod_mode: Mode::Normal,
            pod_delay: Duration::ZERO,
            reports: Store::new(),
            reports_mode: ReportsMode::Normal,
        }));
        let (pod_watch, _) = broadcast::channel(1024);
        let (release, release_rx) = tokio::sync::watch::channel(0);
        let started = Instant::now();
        let app = App {
            inner: inner.clone(),
            authorizer: Arc::new(authorizer),
            pod_watch: pod_watch.clone(),
            release: release_rx,
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
            release,
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
        self.release.send_modify(|n| *n += 1);
    }

    /// How pod lists and watches are answered.
    pub fn set_pod_mode(&self, mode: Mode) {
        self.lock().pod_mode = mode;
        self.release.send_modify(|n| *n += 1);
    }

    /// The uid the fake's Node has.
    pub fn node_uid(&self) -> String {
        self.lock().node_uid.clone()
    }

    /// A client for this server with its token, as the agent builds one from a kubeconfig.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(
            format!("http://{}", self.addr)
                .parse()
                .expect("the fake's address is a URI"),
        );
        config.auth_info =
            serde_json::from_value(json!({ "token": self.token })).expect("a token AuthInfo");
        kube::Client::try_from(config).expect("a client for the fake API server")
    }

    /// Event creates the fake accepted, in order.
    pub fn posts(&self) -> Vec<Request> {
        self.accepted_event_writes()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    /// Event writes, answered or not (status 0 while hanging), in order.
    pub fn attempts(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::is_event_write)
            .collect()
    }

    /// One line per refused request (4xx).
    pub fn rejections(&self) -> Vec<String> {
        self.refused().iter().map(Request::line).collect()
    }

    /// `METHOD path?query` of every request.
    pub fn queries(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
            .collect()
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
    let mut inner = app.lock();
    let seq = inner.requests.len();
    inner.requests.push(Request { seq, ..request });
    seq
}

fn set_status(app: &App, seq: usize, code: u16, why: &str, body: Option<Value>) {
    let mut inner = app.lock();
    if let Some(r) = inner.requests.get_mut(seq) {
        r.status = code;
        r.why = why.to_string();
        if let Some(body) = body {
            r.body = body;
        }
    }
}

/// Answers nothing (status stays 0) until a mode changes, then a 500.
async fn hang(app: &App, seq: usize) -> Response {
    let mut release = app.release.clone();
    release.borrow_and_update();
    let _ = release.changed().await;
    set_status(app, seq, 500, "request hung", None);
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "request hung",
    )
}

/// An error answer, recorded with its reason.
fn refuse(app: &App, seq: usize, code: StatusCode, reason: &str, why: &str) -> Response {
    set_status(app, seq, code.as_u16(), why, None);
    status(code, reason, why)
}

// One shape for every handler that stores objects (Events, PolicyReports): it decides with
// `Result<Reply, Refusal>` (a refusal worded as kube-apiserver v1.20.2 words it), the
// objects live in a `Store` that answers as the real storage does, and `answer` records the
// outcome on the request and renders it. Faults come first, from `fault`.

/// A request refused: status code, `reason` and message of the real server's `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: StatusCode,
    reason: &'static str,
    why: String,
}

impl Refusal {
    fn new(code: StatusCode, reason: &'static str, why: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason,
            why: why.into(),
        }
    }

    fn bad_request(why: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", why)
    }

    fn invalid(why: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why)
    }

    fn not_found(why: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "NotFound", why)
    }
}

/// What a request that was not refused gets.
enum Reply {
    /// An object written: recorded as the request's body (what the store holds now).
    Stored(StatusCode, Value),
    /// An object read or removed: the request keeps the body it was sent with.
    Served(StatusCode, Value),
}

/// Records the outcome on request `seq` and renders it.
fn answer(app: &App, seq: usize, outcome: Result<Reply, Refusal>) -> Response {
    match outcome {
        Ok(Reply::Stored(code, object)) => {
            set_status(app, seq, code.as_u16(), "", Some(object.clone()));
            (code, axum::Json(object)).into_response()
        }
        Ok(Reply::Served(code, object)) => {
            set_status(app, seq, code.as_u16(), "", None);
            (code, axum::Json(object)).into_response()
        }
        Err(r) => refuse(app, seq, r.code, r.reason, &r.why),
    }
}

/// The answer of a fault mode: `None` in [`Mode::Normal`], else a 500 without looking, or
/// nothing until the mode changes.
async fn fault(app: &App, seq: usize, mode: Mode) -> Option<Response> {
    match mode {
        Mode::Normal => None,
        Mode::Fail500 => Some(fail500(app, seq)),
        Mode::Hang => Some(hang(app, seq).await),
    }
}

/// A 500 without looking at the request.
fn fail500(app: &App, seq: usize) -> Response {
    set_status(app, seq, 500, "", None);
    status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "down")
}

/// Stored objects of one kind by key, answering as the API server's storage does: a create
/// of a name it holds is `409 AlreadyExists`, a read, update or delete of one it lacks is
/// `404 NotFound` (both named `RESOURCE "NAME"`, the resource group-qualified as the real
/// one words it), an object over etcd's default request limit (1.5 MiB) is a `500
/// etcdserver: request is too large`, and every write takes the next resourceVersion of the
/// whole server.
struct Store<K>(BTreeMap<K, Value>);

/// etcd's default request limit: the largest object the API server can store.
const MAX_STORED: usize = 1024 * 1024 * 3 / 2;

fn too_large(object: &Value) -> Result<(), Refusal> {
    if object.to_string().len() > MAX_STORED {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcdserver: request is too large",
        ));
    }
    Ok(())
}

impl<K: Ord> Store<K> {
    fn new() -> Store<K> {
        Store(BTreeMap::new())
    }

    /// Stores a new object under `key` with the next resourceVersion and a uid
    /// `<uid_prefix>-uid-<rv>`; returns it as stored.
    fn create(
        &mut self,
        rv: &mut u64,
        key: K,
        resource: &str,
        name: &str,
        uid_prefix: &str,
        mut object: Value,
    ) -> Result<Value, Refusal> {
        if self.0.contains_key(&key) {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            ));
        }
        too_large(&object)?;
        *rv += 1;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(format!("{uid_prefix}-uid-{rv}"));
        self.0.insert(key, object.clone());
        Ok(object)
    }

    /// The stored object under `key`.
    fn get(&self, key: &K, resource: &str, name: &str) -> Result<&Value, Refusal> {
        self.0
            .get(key)
            .ok_or_else(|| Refusal::not_found(format!("{resource} \"{name}\" not found")))
    }

    /// Replaces the object under `key` (which [`Store::get`] found) with the next
    /// resourceVersion; returns it as stored.
    fn replace(&mut self, rv: &mut u64, key: K, mut object: Value) -> Result<Value, Refusal> {
        too_large(&object)?;
        *rv += 1;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.0.insert(key, object.clone());
        Ok(object)
    }

    fn remove(&mut self, key: &K, resource: &str, name: &str) -> Result<Value, Refusal> {
        self.0
            .remove(key)
            .ok_or_else(|| Refusal::not_found(format!("{resource} \"{name}\" not found")))
    }
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
    let token = app.lock().token.clone();
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
        // As the real one words it: the group-qualified resource first.
        let qualified = if a.group.is_empty() {
            a.resource.clone()
        } else {
            format!("{}.{}", a.resource, a.group)
        };
        let message = format!(
            "{qualified} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            app.authorizer.user, a.verb, a.resource, a.group
        );
        return refuse(&app, seq, StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    match (a.group.as_str(), a.resource.as_str(), a.verb.as_str()) {
        ("", "pods", "list" | "watch") if a.namespace.is_none() && a.name.is_none() => {
            let delay = app.lock().pod_delay;
            tokio::time::sleep(delay).await;
            let mode = app.lock().pod_mode;
            match fault(&app, seq, mode).await {
                Some(faulted) => faulted,
                None => pods(&app, seq, &a.verb, &query),
            }
        }
        ("", "nodes", "get") => {
            let inner = app.lock();
            let outcome = if a.name.as_deref() != Some(inner.node.as_str()) {
                let name = a.name.clone().unwrap_or_default();
                Err(Refusal::not_found(format!("nodes \"{name}\" not found")))
            } else {
                Ok(Reply::Served(
                    StatusCode::OK,
                    json!({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": inner.node, "uid": inner.node_uid, "resourceVersion": "1"},
                    }),
                ))
            };
            drop(inner);
            answer(&app, seq, outcome)
        }
        ("", "events", "create") if a.name.is_none() => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, Api::Core, &ns, None, body_json).await
        }
        ("events.k8s.io", "events", "create") if a.name.is_none() => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, Api::Events, &ns, None, body_json).await
        }
        ("events.k8s.io", "events", "patch") => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, Api::Events, &ns, a.name.clone(), body_json).await
        }
        ("wgpolicyk8s.io", "policyreports" | "clusterpolicyreports", _) => {
            reports::handle(&app, seq, &a, &query, body.len(), body_json).await
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
    let node = app.lock().node.clone();
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
            .lock()
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
        // A pod mode other than Normal (an outage) ends open watches, as a restarting API
        // server does.
        let mut release = app.release.clone();
        release.borrow_and_update();
        let inner = app.inner.clone();
        let live = futures::stream::unfold((rx, last), move |(mut rx, last)| {
            let mut release = release.clone();
            let inner = inner.clone();
            async move {
                loop {
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        _ = release.changed() => {
                            let mode = inner.lock().unwrap_or_else(|e| e.into_inner()).pod_mode;
                            if mode == Mode::Normal {
                                continue;
                            }
                            return None;
                        }
                    };
                    match next {
                        Ok((rv, line)) if rv > last => {
                            return Some((Ok(format!("{line}\n")), (rx, rv)));
                        }
                        Ok(_) => continue,
                        // Lagged or closed: end the watch; the client re-lists.
                        Err(_) => return None,
                    }
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
    let inner = app.lock();
    let items: Vec<Value> = inner
        .pods
        .values()
        .filter(|p| p["spec"]["nodeName"] == inner.node.as_str())
        .cloned()
        .collect();
    let list = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    });
    drop(inner);
    answer(app, seq, Ok(Reply::Served(StatusCode::OK, list)))
}

/// Which Event API a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `/api/v1/namespaces/NS/events`
    Core,
    /// `/apis/events.k8s.io/v1/namespaces/NS/events`
    Events,
}

/// An Event create (`name` None) or patch.
async fn event_write(
    app: &App,
    seq: usize,
    api: Api,
    ns: &str,
    name: Option<String>,
    body: Value,
) -> Response {
    let mode = app.lock().event_mode;
    if let Some(faulted) = fault(app, seq, mode).await {
        return faulted;
    }
    answer(app, seq, write_event(app, api, ns, name, body))
}

fn write_event(
    app: &App,
    api: Api,
    ns: &str,
    name: Option<String>,
    body: Value,
) -> Result<Reply, Refusal> {
    if body.is_null() {
        return Err(Refusal::bad_request("the body is not JSON"));
    }
    let mut guard = app.lock();
    let inner = &mut *guard;
    let node = inner.node.clone();
    let refused = |why: String| {
        if why == NAMESPACE_MISMATCH {
            Refusal::bad_request(why)
        } else {
            Refusal::invalid(why)
        }
    };
    match name {
        None => {
            let mut event = body;
            validate(api, ns, &node, &mut event).map_err(refused)?;
            let name = event["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = (ns.to_string(), name.clone());
            let event = inner
                .events
                .create(&mut inner.rv, key, "events", &name, "event", event)?;
            Ok(Reply::Stored(StatusCode::CREATED, event))
        }
        Some(name) => {
            let key = (ns.to_string(), name.clone());
            let old = inner.events.get(&key, "events", &name)?.clone();
            let mut merged = old.clone();
            merge_patch(&mut merged, &body);
            let invalid = validate(api, ns, &node, &mut merged).err().or_else(|| {
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
                return Err(Refusal::invalid(why));
            }
            let merged = inner.events.replace(&mut inner.rv, key, merged)?;
            Ok(Reply::Stored(StatusCode::OK, merged))
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

fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// v1.20.2's 400 for a body whose namespace is not the path's.
const NAMESPACE_MISMATCH: &str =
    "the namespace of the provided object does not match the namespace sent on the request";

/// Answers of the real kube-apiserver v1.20.2 (the real-node bed, `tests/realnode/up.sh
/// --no-kubelet`; curl with the admin and agent tokens, the agent bound to this branch's
/// `manifests/clusterrole.yaml`) to the requests `crates/nodeguard-kube/tests/events.rs`
/// `the_fake_refuses_what_a_real_api_server_refuses` sends; the fake answers the same.
///
/// | request | real answer |
/// | --- | --- |
/// | agent: core/v1 Pod Event in `shop` | 201 |
/// | agent: core/v1 Node Event (no eventTime) in `default` | 201 |
/// | admin: events.k8s.io/v1 Node Event in `default` | 422 `Event "node-a.1" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace` |
/// | admin: events.k8s.io/v1 Node Event in `kube-system` | 201 |
/// | admin: core/v1 Node Event in `kube-system` | 422 `Event "x.ks" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace` |
/// | admin: core/v1 Event about Pod `shop/web-0` in `other` | 422 `Event "x.other" is invalid: involvedObject.namespace: Invalid value: "shop": does not match event.namespace` |
/// | admin: core/v1 Node Event with eventTime in `default` | 422 `Event "x.timed" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace` |
/// | admin: core/v1 Event without a name | 422 `Event "" is invalid: metadata.name: Required value: name or generateName is required` |
/// | admin: body namespace `other`, path `shop` | 400 `the namespace of the provided object does not match the namespace sent on the request` |
/// | agent: events.k8s.io/v1 create in `shop` | 403 `events.events.k8s.io is forbidden: User "nodeguard-agent" cannot create resource "events" in API group "events.k8s.io" in the namespace "shop"` |
/// | agent: list core events, all namespaces | 403 `events is forbidden: User "nodeguard-agent" cannot list resource "events" in API group "" at the cluster scope` |
///
/// And `kubectl describe node` (v1.20.2) lists only Node Events whose `involvedObject.uid` is
/// the node's name (kubelet's convention): with the real uid or none they do not show.
pub const REAL_V1_20_2_ANSWERS: () = ();

/// What v1.20.2 checks of an Event (`ValidateEventCreate` after conversion to the internal
/// type, where `regarding` is `involvedObject` and `note` is `message`), then nodeguard's
/// contract. Fills in metadata.namespace from the path as the server does. The message is
/// the server's: `Event "NAME" is invalid: FIELD: ...`.
fn validate(api: Api, path_ns: &str, node: &str, ev: &mut Value) -> Result<(), String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let name = s(&ev["metadata"]["name"]).unwrap_or_default();
    // The real one says `Event "NAME"` for both APIs (the internal kind).
    let kind_name = format!("Event {name:?}");
    let invalid = |why: String| format!("{kind_name} is invalid: {why}");
    let (want_version, involved_field, message_field) = match api {
        Api::Core => ("v1", "involvedObject", "message"),
        Api::Events => ("events.k8s.io/v1", "regarding", "note"),
    };
    if s(&ev["apiVersion"]).as_deref() != Some(want_version) {
        return Err(format!(
            "apiVersion {} is not {want_version}",
            ev["apiVersion"]
        ));
    }
    if s(&ev["kind"]).as_deref() != Some("Event") {
        return Err(format!("kind {} is not Event", ev["kind"]));
    }
    if name.is_empty() {
        return Err(invalid(
            "metadata.name: Required value: name or generateName is required".into(),
        ));
    }
    match s(&ev["metadata"]["namespace"]) {
        None => ev["metadata"]["namespace"] = json!(path_ns),
        Some(ns) if ns == path_ns => {}
        Some(_) => return Err(NAMESPACE_MISMATCH.into()),
    }
    let involved = ev[involved_field].clone();
    let involved_ns = s(&involved["namespace"]).unwrap_or_default();
    let event_time = s(&ev["eventTime"]).filter(|t| !t.is_empty());
    // legacyValidateEvent: the namespace rule depends on whether the Event is new-style.
    if event_time.is_none() {
        let ok = if involved_ns.is_empty() {
            path_ns.is_empty() || path_ns == "default"
        } else {
            path_ns == involved_ns
        };
        if !ok {
            return Err(invalid(format!(
                "involvedObject.namespace: Invalid value: {involved_ns:?}: does not match event.namespace"
            )));
        }
    } else {
        // Before 1.20.12 / 1.21.6 / 1.22.3: kube-system only (kubernetes/kubernetes#100125).
        if involved_ns.is_empty() && path_ns != "kube-system" {
            return Err(invalid(
                "involvedObject.namespace: Invalid value: \"\": does not match event.namespace"
                    .into(),
            ));
        }
        for (field, key, max) in [
            ("reportingController", "reportingController", 0),
            ("reportingInstance", "reportingInstance", 128),
            ("action", "action", 128),
            ("reason", "reason", 128),
        ] {
            let value = s(&ev[key]).unwrap_or_default();
            if value.is_empty() {
                return Err(invalid(format!("{field}: Required value")));
            }
            if max > 0 && value.len() > max {
                return Err(invalid(format!(
                    "{field}: Invalid value: \"\": can have at most {max} characters"
                )));
            }
        }
        if let Some(note) = ev[message_field].as_str() {
            if note.len() > 1024 {
                return Err(invalid(
                    "message: Invalid value: \"\": can have at most 1024 characters".into(),
                ));
            }
        }
    }
    if !is_dns_subdomain(path_ns) {
        return Err(invalid(format!("namespace: Invalid value: {path_ns:?}")));
    }
    if api == Api::Events {
        // The strict checks a request to events.k8s.io/v1 adds.
        if !is_dns_subdomain(&name) {
            return Err(invalid(format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'")));
        }
        if event_time.is_none() {
            return Err(invalid("eventTime: Required value".into()));
        }
        let type_ = s(&ev["type"]).unwrap_or_default();
        if type_ != "Normal" && type_ != "Warning" {
            return Err(invalid(format!(
                "type: Invalid value: \"\": has invalid value: {type_}"
            )));
        }
        for (unset, field) in [
            ("deprecatedFirstTimestamp", "firstTimestamp"),
            ("deprecatedLastTimestamp", "lastTimestamp"),
            ("deprecatedCount", "count"),
            ("deprecatedSource", "source"),
        ] {
            if !ev[unset].is_null() {
                return Err(invalid(format!(
                    "{field}: Invalid value: \"\": needs to be unset"
                )));
            }
        }
        if !ev["series"].is_null() {
            if ev["series"]["count"].as_i64().unwrap_or(0) < 2 {
                return Err(invalid(
                    "series.count: Invalid value: \"\": should be at least 2".into(),
                ));
            }
            if s(&ev["series"]["lastObservedTime"]).is_none_or(|t| t.is_empty()) {
                return Err(invalid("series.lastObservedTime: Required value".into()));
            }
        }
    }
    contract(api, path_ns, node, ev).map_err(|why| format!("nodeguard contract: {why}"))
}

/// What nodeguard promises of its Events beyond what the API server checks: a real server
/// would take an Event that breaks these, the tests would not.
fn contract(api: Api, path_ns: &str, node: &str, ev: &Value) -> Result<(), String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let name = s(&ev["metadata"]["name"]).unwrap_or_default();
    if !is_dns_subdomain(&name) {
        return Err(format!("metadata.name {name:?} is not a DNS subdomain"));
    }
    let (controller_key, involved_key, note_key) = match api {
        Api::Core => ("reportingComponent", "involvedObject", "message"),
        Api::Events => ("reportingController", "regarding", "note"),
    };
    let controller = s(&ev[controller_key]).unwrap_or_default();
    if controller != "nodeguard" {
        return Err(format!("{controller_key} {controller:?} is not nodeguard"));
    }
    let instance = s(&ev["reportingInstance"]).unwrap_or_default();
    if instance != node {
        return Err(format!(
            "reportingInstance {instance:?} is not the node's name {node:?}"
        ));
    }
    if api == Api::Core {
        if !ev["eventTime"].is_null() {
            return Err("eventTime is set: nodeguard sends legacy core/v1 Events".into());
        }
        if s(&ev["source"]["component"]).as_deref() != Some("nodeguard")
            || s(&ev["source"]["host"]).as_deref() != Some(node)
        {
            return Err(format!(
                "source {} is not nodeguard on {node}",
                ev["source"]
            ));
        }
        if ev["count"].as_i64().unwrap_or(0) < 1
            || s(&ev["firstTimestamp"]).is_none()
            || s(&ev["lastTimestamp"]).is_none()
        {
            return Err("count, firstTimestamp and lastTimestamp are kubelet's shape".into());
        }
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
    match &ev[note_key] {
        Value::String(note) if note.len() > 1024 => {
            return Err(format!(
                "{note_key}: Too long: may not be longer than 1024, has {} bytes",
                note.len()
            ))
        }
        Value::String(_) | Value::Null => {}
        _ => return Err(format!("{note_key} is not a string")),
    }
    let regarding = &ev[involved_key];
    for field in ["kind", "name", "apiVersion"] {
        if s(&regarding[field]).is_none_or(|v| v.is_empty()) {
            return Err(format!("{involved_key}.{field}: Required value"));
        }
    }
    let regarding_ns = s(&regarding["namespace"]).unwrap_or_default();
    match s(&regarding["kind"]).unwrap_or_default().as_str() {
        "Pod" => {
            if regarding_ns != path_ns || !is_dns_label(&regarding_ns) {
                return Err(format!(
                    "{involved_key}.namespace {regarding_ns:?} is not the Event's namespace {path_ns:?}"
                ));
            }
            if s(&regarding["uid"]).is_none_or(|u| u.is_empty()) {
                return Err(format!("{involved_key}.uid of a Pod is missing"));
            }
        }
        "Node" => {
            if !regarding_ns.is_empty() {
                return Err(format!("{involved_key}.namespace: a Node has no namespace"));
            }
            if path_ns != "default" {
                return Err(format!(
                    "a Node's Event belongs in namespace default (where `kubectl describe node` reads), not {path_ns:?}"
                ));
            }
        }
        other => {
            return Err(format!(
                "{involved_key}.kind {other:?}: nodeguard regards Pods and Nodes only"
            ))
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

/// The user the shipped DaemonSet's ServiceAccount authenticates as.
pub const SHIPPED_USER: &str = "system:serviceaccount:nodeguard:nodeguard";
/// The token [`FakeApi::shipped`] expects.
pub const SHIPPED_TOKEN: &str = "nodeguard-test-token";

impl FakeApi {
    /// A server for `node` that grants exactly the shipped `manifests/clusterrole.yaml`.
    pub fn shipped(node: &str) -> FakeApi {
        let role = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../manifests/clusterrole.yaml");
        FakeApi::start(
            node,
            SHIPPED_TOKEN,
            Authorizer::from_cluster_role_file(&role, SHIPPED_USER),
        )
    }
}
