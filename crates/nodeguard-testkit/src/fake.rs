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
//!
//! The parts: `rbac` (request attributes and the ClusterRole authorizer), `routes` (the one
//! handler: authentication, authorization, dispatch; pods), `events` (Event validation as
//! v1.20.2 does it, then nodeguard's contract), `reports` (PolicyReports), `answer` (the
//! handler shape: `Refusal`, `Reply`, `Store`, faults), `names` (Kubernetes name rules) and
//! `query` (query strings).

mod answer;
mod events;
mod names;
mod query;
mod rbac;
mod reports;
mod routes;

pub use events::REAL_V1_20_2_ANSWERS;
pub use names::is_camel_reason;
pub use query::query_map;
pub use rbac::{attributes, Attributes, Authorizer};
pub use reports::ReportsMode;

use answer::Store;
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
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
        let router = Router::new().fallback(routes::handle).with_state(app);
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
