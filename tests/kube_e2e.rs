//! End-to-end: `nodeguard run` against real runc containers and a fake Kubernetes API server.
//!
//! The agent is the real binary, started as the DaemonSet starts it but pointed at a fake API
//! server (`nodeguard_testkit::fake`) through a kubeconfig file (`KUBECONFIG`, a plain-HTTP server and
//! a bearer token). The fake serves this node's pods (list and watch) with the containers'
//! real ids and pod uids, authorizes every request with the shipped ClusterRole
//! (`manifests/clusterrole.yaml`, 403 otherwise), and validates each Event as the API server
//! does (422 otherwise). What a cluster operator would notice is asserted:
//!
//! 1. the real containers' findings, containers and metrics carry the pods' namespace, name,
//!    container name, image and imageID;
//! 2. each new finding becomes exactly one Warning Event with its kind's reason, regarding the
//!    right Pod (uid included), never repeated over later scans, even though the first pod
//!    list answered only after the first scans (a busy API server at start-up); a host
//!    process's finding regards this Node, without a uid (the ClusterRole grants no nodes get);
//! 3. a stopped container's findings, and the stopped host process's, resolve, each with one
//!    Normal `<Reason>Resolved` Event;
//! 4. a restarted agent with the same `--state-dir` does not announce them again, and sends
//!    the Resolved Events of a container that stopped while no agent ran;
//! 5. while Event writes fail (500) and then hang, scans, the API and `/metrics` go on,
//!    `nodeguard_events_total{result="failed"}` rises, and a finding that appeared meanwhile
//!    is announced once the API server answers again.
//!
//! Every wait is a bounded polling loop that fails with what it last saw, the agent's log and
//! the fake's requests. Nothing asserts how long anything took.
//!
//! Needs root, runc, busybox-static and capsh; without them the test says why it skipped, and
//! with `CI` set it fails instead. Run: `cargo test -p nodeguard --test kube_e2e`.

mod support;

use nodeguard_testkit::fake::{Authorizer, FakeApi, Mode, Request};
use support::agent::{Launch, StateDir};
use support::wait_for;

fn excerpt(text: &str) -> String {
    support::excerpt(text, 2000)
}
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::container::{Container, ContainerSpec};
use support::image::Image;

const NODE: &str = "test-node";
/// The user the fake maps the token to: the DaemonSet's ServiceAccount.
const USER: &str = "system:serviceaccount:nodeguard:nodeguard";

/// Longest wait for the agent's first scan (a debug build hashing the node's executables on a
/// machine other tests load too).
const FIRST_SCAN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for what takes a few scans or a few Events (the node-wide Event budget is
/// 20 at once, then one a second, and other tests' containers on this machine use it too).
const EVENTS_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait for a few scans.
const SCANS_TIMEOUT: Duration = Duration::from_secs(30);
/// What the agent promises for SIGTERM ("within a few seconds").
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one request to the agent: the API and /metrics never wait for the API server.
const AGENT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the fake takes to answer pod lists and watches when the first agent starts.
const SLOW_POD_LIST: Duration = Duration::from_secs(5);
/// Bound on `/metrics` while Event writes fail or hang: less than the agent's 10 s Event
/// request timeout, so a scrape that waited for the API server would not pass.
const METRICS_DURING_OUTAGE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Prometheus text format: just enough to read one series.

/// `(name, labels, value)` of each sample line.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.trim().parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, BTreeMap::new()),
            };
            Some((name.to_string(), labels, value))
        })
        .collect()
}

/// `a="x",b="y\"z"` → map.
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim_start_matches(',').to_string(), value);
        text = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// `nodeguard_events_total{result="RESULT"}`, 0 when absent.
fn events_total(metrics: &str, result: &str) -> f64 {
    samples(metrics)
        .into_iter()
        .find(|(name, labels, _)| {
            name == "nodeguard_events_total"
                && labels.get("result").map(String::as_str) == Some(result)
        })
        .map_or(0.0, |(_, _, v)| v)
}

// ---------------------------------------------------------------------------------------------
// The agent under test.

/// A running `nodeguard run --kube on` pointed at the fake (support::agent runs it: killed
/// on drop, its log printed when the test failed), with this test's bounds and questions.
struct Agent(support::agent::Agent);

impl std::ops::Deref for Agent {
    type Target = support::agent::Agent;
    fn deref(&self) -> &support::agent::Agent {
        &self.0
    }
}

impl Agent {
    /// `KUBECONFIG=KUBECONFIG nodeguard run --kube on --node-name test-node --state-dir
    /// STATE_DIR --listen 127.0.0.1:PORT --interval 2s --fs-interval 30s --log-format json`,
    /// its log in `log_dir`.
    fn start(kubeconfig: &Path, state_dir: &Path, log_dir: &Path, name: &str) -> Agent {
        Agent::start_with(kubeconfig, state_dir, log_dir, name, &[])
    }

    /// [`Agent::start`] with `extra` args after the others.
    fn start_with(
        kubeconfig: &Path,
        state_dir: &Path,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> Agent {
        let mut args = vec![
            "--node-name",
            NODE,
            "--interval",
            "2s",
            "--fs-interval",
            "30s",
            // The fake serves no Leases: the heartbeat Lease is tested against the real API
            // server with the shipped Role (tests/fleet_status.rs).
            "--lease=false",
        ];
        args.extend_from_slice(extra);
        Agent(support::agent::Agent::launch(
            &args,
            Launch {
                kubeconfig: Some(kubeconfig.to_path_buf()),
                state_dir: StateDir::At(state_dir.to_path_buf()),
                log: Some(log_dir.join(format!("{name}.log"))),
                http_timeout: Some(AGENT_HTTP_TIMEOUT),
                ..Launch::default()
            },
        ))
    }

    fn wait_ready(&self) {
        self.0.wait_ready(FIRST_SCAN_TIMEOUT);
    }

    /// `/metrics`, which must answer 200 within `timeout`.
    fn metrics_within(&self, timeout: Duration) -> String {
        let r = self
            .get_within("/metrics", timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "/metrics: {}", excerpt(&r.body));
        r.body
    }

    /// `scanned_at` of the report the agent serves.
    fn scanned_at(&self) -> String {
        let report = self.get_json("/v1/report");
        report["scanned_at"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "/v1/report has no scanned_at: {}",
                    excerpt(&report.to_string())
                )
            })
            .to_string()
    }

    /// Waits until the agent has published `n` more reports than when called (the last of
    /// them made by a scan that started after this call when `n >= 2`).
    fn wait_scans(&self, n: usize, why: &str) {
        let mut seen = self.scanned_at();
        for round in 1..=n {
            seen = wait_for(
                &format!("scan {round} of {n} after {seen} ({why})"),
                SCANS_TIMEOUT,
                || {
                    let now = self.scanned_at();
                    if now != seen {
                        Ok(now)
                    } else {
                        Err(format!("scanned_at still {now}"))
                    }
                },
            );
        }
    }

    /// Every open finding (`/v1/findings`).
    fn findings(&self) -> Vec<Value> {
        self.0.findings("")
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&self) -> ExitStatus {
        self.0.terminate(STOP_TIMEOUT)
    }
}

/// What each test's agents run against: the fake API server granting the shipped ClusterRole
/// to a fresh token, and a temp dir holding a kubeconfig for it and an empty state directory.
struct Cluster {
    fake: FakeApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    state_dir: PathBuf,
}

impl Cluster {
    fn new(prefix: &str) -> Cluster {
        let clusterrole =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/clusterrole.yaml");
        let token = support::random_hex(16);
        let fake = FakeApi::start(
            NODE,
            &token,
            Authorizer::from_cluster_role_file(&clusterrole, USER),
        );
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create the test's tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
        let state_dir = dir.path().join("state");
        fs::create_dir_all(&state_dir).unwrap();
        Cluster {
            fake,
            dir,
            kubeconfig,
            state_dir,
        }
    }
}

/// Prints the fake API server's requests when the test fails.
struct DumpOnPanic<'a>(&'a FakeApi);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "{}", self.0.dump(250));
        }
    }
}

/// A host process (in no container) running an executable that was deleted after it
/// started: a `deleted_executable` finding of the host, whose Events regard the Node.
struct Ghost {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Ghost {
    fn start() -> Ghost {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-kube-e2e-ghost-")
            .tempdir()
            .expect("create the ghost's tempdir");
        // busybox acts as the multi-call binary under a name that starts with `busybox`.
        let exe = dir.path().join("busybox-ghost");
        let busybox = support::image::busybox_binary().expect("busybox (checked by the harness)");
        fs::copy(&busybox, &exe).unwrap_or_else(|e| panic!("copy {}: {e}", busybox.display()));
        let child = Command::new(&exe)
            .args(["sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let link = format!("/proc/{}/exe", child.id());
        wait_for(
            &format!("{link} to be {}", exe.display()),
            SCANS_TIMEOUT,
            || match fs::read_link(&link) {
                Ok(target) if target == exe => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        fs::remove_file(&exe).unwrap();
        Ghost { child, _dir: dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its open finding among `all`.
    fn finding_in(&self, all: &[Value]) -> Option<Value> {
        all.iter()
            .find(|f| {
                f["kind"] == "deleted_executable"
                    && f["container_id"].is_null()
                    && f["pid"] == self.pid()
            })
            .cloned()
    }
}

impl Drop for Ghost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Containers of pods.

/// A real container and the pod the fake says it belongs to.
struct Workload {
    namespace: &'static str,
    pod: &'static str,
    container_name: &'static str,
    image: &'static str,
    image_id: String,
    id: String,
    pod_uid: String,
    container: Option<Container>,
}

impl Workload {
    /// Puts the pod on the fake (as the scheduler and kubelet would, with the container's
    /// real id in its status), then starts the container.
    fn start(
        fake: &FakeApi,
        spec: ContainerSpec,
        namespace: &'static str,
        pod: &'static str,
        container_name: &'static str,
        image: &'static str,
    ) -> Workload {
        let repository = match image.split_once(':') {
            Some((repo, _tag)) if !repo.contains('/') => format!("docker.io/library/{repo}"),
            Some((repo, _tag)) => repo.to_string(),
            None => image.to_string(),
        };
        let image_id = format!("{repository}@sha256:{}", support::random_hex(32));
        let w = Workload {
            namespace,
            pod,
            container_name,
            image,
            image_id,
            id: spec.id.clone(),
            pod_uid: spec.pod_uid.clone(),
            container: None,
        };
        fake.put_pod(w.pod_json());
        Workload {
            container: Some(spec.start()),
            ..w
        }
    }

    fn pod_json(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.pod,
                "namespace": self.namespace,
                "uid": self.pod_uid,
                "labels": {"app": self.pod},
                "annotations": {"kubectl.kubernetes.io/default-container": self.container_name},
                "creationTimestamp": "2026-11-22T10:00:00Z",
            },
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": self.container_name, "image": self.image}],
            },
            "status": {
                "phase": "Running",
                "qosClass": "Burstable",
                "containerStatuses": [{
                    "name": self.container_name,
                    "containerID": format!("containerd://{}", self.id),
                    "image": self.image,
                    "imageID": self.image_id,
                    "ready": true,
                    "started": true,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-11-22T10:00:01Z"}},
                }],
            },
        })
    }

    /// Stops the container (the kubelet killing it), then deletes the pod.
    fn stop(&mut self, fake: &FakeApi) {
        drop(self.container.take());
        fake.delete_pod(self.namespace, self.pod);
    }

    fn describe(&self) -> String {
        format!(
            "{}/{} container {} ({}, pod uid {})",
            self.namespace, self.pod, self.container_name, self.id, self.pod_uid
        )
    }

    /// This container's open findings among `all`.
    fn findings_in(&self, all: &[Value]) -> Vec<Value> {
        all.iter()
            .filter(|f| f["container_id"].as_str() == Some(self.id.as_str()))
            .cloned()
            .collect()
    }

    /// Waits until the agent reports findings of this container that carry the pod's
    /// metadata, and `must_have` kinds among them; returns them.
    fn wait_enriched_findings(&self, agent: &Agent, must_have: &[&str]) -> Vec<Value> {
        wait_for(
            &format!("enriched findings of {}", self.describe()),
            EVENTS_TIMEOUT,
            || {
                let mine = self.findings_in(&agent.findings());
                let kinds: BTreeSet<&str> =
                    mine.iter().filter_map(|f| f["kind"].as_str()).collect();
                let missing: Vec<&&str> =
                    must_have.iter().filter(|k| !kinds.contains(**k)).collect();
                let bare: Vec<&Value> = mine
                    .iter()
                    .filter(|f| {
                        f["namespace"] != self.namespace
                            || f["pod"] != self.pod
                            || f["container_name"] != self.container_name
                    })
                    .collect();
                if mine.is_empty() || !missing.is_empty() || !bare.is_empty() {
                    return Err(format!(
                        "{} findings, kinds {kinds:?} (missing {missing:?}), without the pod's metadata: {}",
                        mine.len(),
                        excerpt(&format!("{bare:?}"))
                    ));
                }
                Ok(mine)
            },
        )
    }
}

/// The findings the agent sends Events for by default (`--event-min-severity medium`), by id
/// → kind: low ones stay in the API, metrics and PolicyReports.
fn ids_of(findings: &[Value]) -> BTreeMap<String, String> {
    findings
        .iter()
        .filter(|f| f["severity"] != "low")
        .map(|f| {
            (
                f["id"].as_str().unwrap_or("?").to_string(),
                f["kind"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// `dangerous_capability` → `DangerousCapability`: the Event reason the README's table gives
/// each finding kind.
fn camel(kind: &str) -> String {
    kind.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What reached the fake.

/// Accepted Event creates about finding `id`.
fn writes_for<'a>(writes: &'a [Request], id: &str) -> Vec<&'a Request> {
    writes
        .iter()
        .filter(|r| r.finding_id() == Some(id))
        .collect()
}

/// Checks that finding `id` (of kind `kind`, in workload `w`) got exactly one Event of type
/// `type_` and reason `reason`, created, regarding `w`'s Pod.
fn assert_one_event(
    writes: &[Request],
    w: &Workload,
    id: &str,
    kind: &str,
    type_: &str,
    reason: &str,
) {
    let all = writes_for(writes, id);
    let matching: Vec<&&Request> = all.iter().filter(|r| r.type_() == type_).collect();
    let shown: Vec<String> = all.iter().map(|r| r.line()).collect();
    assert_eq!(
        matching.len(),
        1,
        "finding {id} ({kind}) of {} must have exactly one {type_} Event; it has:\n  {}",
        w.describe(),
        shown.join("\n  ")
    );
    let ev = matching[0];
    assert_eq!(
        ev.method,
        "POST",
        "a first announcement is a create: {}",
        ev.line()
    );
    assert_eq!(ev.reason(), reason, "{}", ev.line());
    let regarding = ev.regarding();
    assert_eq!(regarding["kind"], "Pod", "{}", ev.line());
    assert_eq!(regarding["namespace"], w.namespace, "{}", ev.line());
    assert_eq!(regarding["name"], w.pod, "{}", ev.line());
    assert_eq!(regarding["uid"], w.pod_uid.as_str(), "{}", ev.line());
    assert_eq!(
        regarding["fieldPath"],
        format!("spec.containers{{{}}}.findings{{{id}}}", w.container_name),
        "{}",
        ev.line()
    );
    assert_eq!(
        ev.body["metadata"]["namespace"],
        w.namespace,
        "{}",
        ev.line()
    );
}

/// Checks that host finding `id` got exactly one Event of type `type_` and reason `reason`,
/// regarding this Node (uid = its name, as kubelet writes it), in namespace `default`.
fn assert_one_node_event(writes: &[Request], id: &str, type_: &str, reason: &str) {
    let all = writes_for(writes, id);
    let matching: Vec<&&Request> = all.iter().filter(|r| r.type_() == type_).collect();
    let shown: Vec<String> = all.iter().map(|r| r.line()).collect();
    assert_eq!(
        matching.len(),
        1,
        "host finding {id} must have exactly one {type_} Event; it has:\n  {}",
        shown.join("\n  ")
    );
    let ev = matching[0];
    assert_eq!(ev.method, "POST", "{}", ev.line());
    assert_eq!(ev.reason(), reason, "{}", ev.line());
    let regarding = ev.regarding();
    assert_eq!(regarding["kind"], "Node", "{}", ev.line());
    assert_eq!(regarding["name"], NODE, "{}", ev.line());
    assert!(
        regarding["uid"] == NODE && regarding["namespace"].is_null(),
        "the node's name as uid, as kubelet sets it (`kubectl describe node` matches on it): {}",
        ev.line()
    );
    assert_eq!(
        regarding["fieldPath"],
        format!("findings{{{id}}}"),
        "{}",
        ev.line()
    );
    assert_eq!(ev.body["metadata"]["namespace"], "default", "{}", ev.line());
}

/// Invariants over every Event the fake accepted (other tests' containers included):
/// nothing was refused; a finding is never announced twice without a Resolved between;
/// Node Events carry no uid (the ClusterRole grants nothing on nodes).
fn assert_event_invariants(fake: &FakeApi) {
    let refused = fake.refused();
    assert!(
        refused.is_empty(),
        "the fake refused requests a correct agent within its ClusterRole never makes:\n  {}",
        refused
            .iter()
            .map(Request::line)
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let writes = fake.accepted_event_writes();
    let mut last: BTreeMap<&str, &Request> = BTreeMap::new();
    for w in &writes {
        if let Some(id) = w.finding_id() {
            if let Some(prev) = last.get(id) {
                assert!(
                    prev.type_() != w.type_(),
                    "finding {id}: two {} Events in a row:\n  {}\n  {}",
                    w.type_(),
                    prev.line(),
                    w.line()
                );
            } else {
                assert_eq!(
                    w.type_(),
                    "Warning",
                    "a finding's first Event: {}",
                    w.line()
                );
            }
            last.insert(id, w);
        }
        if w.regarding()["kind"] == "Node" {
            assert!(
                w.regarding()["uid"] == NODE && w.regarding()["name"] == NODE,
                "Node Events regard this node, its name as uid: {}",
                w.line()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn pods_enrich_findings_and_each_finding_is_announced_once_through_restarts_and_outages() {
    require_containers!();
    let started = Instant::now();
    let Cluster {
        fake,
        dir,
        kubeconfig,
        state_dir,
    } = Cluster::new("nodeguard-kube-e2e-");
    let _dump = DumpOnPanic(&fake);

    let image = Image::busybox();
    // CAP_SYS_ADMIN on top of the runtime's defaults: a finding whose subject is a capability.
    let web = Workload::start(
        &fake,
        ContainerSpec::new(image).add_capability("CAP_SYS_ADMIN"),
        "shop",
        "web-1",
        "nginx",
        "nginx:1.27",
    );
    let mut ledger = Workload::start(
        &fake,
        ContainerSpec::new(image),
        "billing",
        "ledger-0",
        "app",
        "registry.example.com/billing/ledger:2.3.1",
    );
    // Stopped while no agent runs (phase 4).
    let mut batch = Workload::start(
        &fake,
        ContainerSpec::new(image),
        "batch",
        "report-0",
        "report",
        "registry.example.com/batch/report:7",
    );
    let mut ghost = Some(Ghost::start());
    // A busy API server: the first pod list takes seconds, so the first scans run before the
    // agent knows any pod. Their findings must wait for the pods, not regard the Node.
    fake.set_pod_delay(SLOW_POD_LIST);
    let mut agent = Agent::start(&kubeconfig, &state_dir, dir.path(), "agent-1");
    agent.wait_ready();

    // --- 1. Pod metadata reaches findings, containers and metrics. ---------------------------
    // Ground truth: each container runs as root without limits or seccomp, the web container
    // with CAP_SYS_ADMIN.
    let common = ["runs_as_root", "missing_memory_limit", "seccomp_disabled"];
    let mut web_kinds = common.to_vec();
    web_kinds.push("dangerous_capability");
    let web_findings = web.wait_enriched_findings(&agent, &web_kinds);
    let ledger_findings = ledger.wait_enriched_findings(&agent, &common);
    let batch_findings = batch.wait_enriched_findings(&agent, &common);
    fake.set_pod_delay(Duration::ZERO);
    assert!(
        web_findings
            .iter()
            .any(|f| f["kind"] == "dangerous_capability" && f["subject"] == "CAP_SYS_ADMIN"),
        "{web_findings:?}"
    );

    let containers = agent.get_json("/v1/containers");
    for w in [&web, &ledger, &batch] {
        let c = containers["containers"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["id"] == w.id.as_str()))
            .unwrap_or_else(|| panic!("/v1/containers lacks {}: {containers}", w.describe()));
        let pod = &c["pod"];
        assert_eq!(pod["namespace"], w.namespace, "{c}");
        assert_eq!(pod["name"], w.pod, "{c}");
        assert_eq!(pod["container_name"], w.container_name, "{c}");
        assert_eq!(pod["image"], w.image, "{c}");
        assert_eq!(pod["image_id"], w.image_id.as_str(), "{c}");
        assert_eq!(c["pod_uid"], w.pod_uid.as_str(), "{c}");
    }

    let metrics = agent.metrics();
    let web_series: Vec<BTreeMap<String, String>> = samples(&metrics)
        .into_iter()
        .filter(|(name, labels, _)| {
            name == "nodeguard_findings"
                && labels.get("container").map(String::as_str) == Some("nginx")
        })
        .map(|(_, labels, _)| labels)
        .collect();
    let web_series_kinds: BTreeSet<&str> = web_series
        .iter()
        .filter_map(|l| l.get("kind").map(String::as_str))
        .collect();
    for kind in &web_kinds {
        assert!(
            web_series_kinds.contains(kind),
            "no nodeguard_findings{{container=\"nginx\",kind=\"{kind}\"}} series: {web_series:?}"
        );
    }
    for labels in &web_series {
        assert_eq!(
            (
                labels.get("namespace").map(String::as_str),
                labels.get("pod").map(String::as_str)
            ),
            (Some("shop"), Some("web-1")),
            "{labels:?}"
        );
    }
    // The container label is the Kubernetes name, not the short id, once the pod is known.
    assert!(
        !metrics.contains(&format!("container=\"{}\"", &web.id[..12])),
        "a nodeguard_findings series still names the web container by its id"
    );

    // --- 2. One Warning per new finding, regarding the right Pod, never repeated. -----------
    let announced: Vec<(&Workload, BTreeMap<String, String>)> = vec![
        (&web, ids_of(&web_findings)),
        (&ledger, ids_of(&ledger_findings)),
        (&batch, ids_of(&batch_findings)),
    ];
    let all_ids = |set: &[(&Workload, BTreeMap<String, String>)]| -> Vec<String> {
        set.iter()
            .flat_map(|(_, ids)| ids.keys().cloned())
            .collect()
    };
    wait_for(
        "a Warning Event for each finding of both containers",
        EVENTS_TIMEOUT,
        || {
            let writes = fake.accepted_event_writes();
            let missing: Vec<String> = all_ids(&announced)
                .into_iter()
                .filter(|id| {
                    !writes_for(&writes, id)
                        .iter()
                        .any(|r| r.type_() == "Warning")
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("no Warning yet for {missing:?}"))
            }
        },
    );
    // Low findings (no CPU or pids limit, no_new_privs) get no Event by default.
    let lows: Vec<&str> = web_findings
        .iter()
        .chain(&ledger_findings)
        .chain(&batch_findings)
        .filter(|f| f["severity"] == "low")
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert!(
        !lows.is_empty(),
        "containers without limits have low findings"
    );
    let writes = fake.accepted_event_writes();
    for id in &lows {
        assert!(
            writes_for(&writes, id).is_empty(),
            "low finding {id} got an Event"
        );
    }
    let ghost_id = {
        let g = ghost.as_ref().unwrap();
        let finding = wait_for(
            &format!("the deleted_executable finding of host pid {}", g.pid()),
            SCANS_TIMEOUT,
            || {
                g.finding_in(&agent.findings())
                    .ok_or("not reported yet".to_string())
            },
        );
        finding["id"].as_str().unwrap().to_string()
    };
    wait_for(
        "a Warning Event for the host finding",
        EVENTS_TIMEOUT,
        || {
            let writes = fake.accepted_event_writes();
            if writes_for(&writes, &ghost_id).is_empty() {
                Err(format!("no Event yet for {ghost_id}"))
            } else {
                Ok(())
            }
        },
    );
    // Several more scans see the same findings: none may be announced again.
    agent.wait_scans(3, "repeats would show up by now");
    let writes = fake.accepted_event_writes();
    assert_one_node_event(&writes, &ghost_id, "Warning", "DeletedExecutable");
    for (w, ids) in &announced {
        for (id, kind) in ids {
            assert_one_event(&writes, w, id, kind, "Warning", &camel(kind));
            assert!(
                writes_for(&writes, id)
                    .iter()
                    .all(|r| r.type_() == "Warning"),
                "finding {id} is still open: nothing but its Warning is due"
            );
        }
    }
    let note_of = |id: &str| -> String {
        writes_for(&writes, id)
            .first()
            .map(|r| r.note())
            .unwrap_or("")
            .to_string()
    };
    let cap_id = web_findings
        .iter()
        .find(|f| f["kind"] == "dangerous_capability")
        .and_then(|f| f["id"].as_str())
        .unwrap();
    let note = note_of(cap_id);
    for part in [
        "container=nginx",
        "CAP_SYS_ADMIN",
        "image=nginx:1.27",
        &format!("finding={cap_id}"),
    ] {
        assert!(note.contains(part), "the note should name {part}: {note:?}");
    }
    // Events about these Pods are about these findings only.
    for r in &writes {
        let uid = r.regarding()["uid"].as_str();
        if [&web, &ledger, &batch]
            .iter()
            .any(|w| uid == Some(w.pod_uid.as_str()))
        {
            let id = r.finding_id().unwrap_or("");
            assert!(
                announced.iter().any(|(_, ids)| ids.contains_key(id)),
                "an Event about a finding the agent does not report: {}",
                r.line()
            );
        }
    }
    assert_event_invariants(&fake);

    // --- 3. A stopped container's findings resolve, one Normal Event each. ----------------
    let ledger_ids = ids_of(&ledger_findings);
    ledger.stop(&fake);
    drop(ghost.take());
    wait_for(
        "Resolved Events for the stopped container's findings",
        EVENTS_TIMEOUT,
        || {
            let still_open = ledger.findings_in(&agent.findings());
            let writes = fake.accepted_event_writes();
            let unresolved: Vec<&String> = ledger_ids
                .keys()
                .filter(|id| {
                    !writes_for(&writes, id)
                        .iter()
                        .any(|r| r.type_() == "Normal")
                })
                .collect();
            let ghost_resolved = writes_for(&writes, &ghost_id)
                .iter()
                .any(|r| r.type_() == "Normal");
            if still_open.is_empty() && unresolved.is_empty() && ghost_resolved {
                Ok(())
            } else {
                Err(format!(
                    "{} findings still open; no Resolved Event yet for {unresolved:?} \
                     (host finding resolved: {ghost_resolved})",
                    still_open.len()
                ))
            }
        },
    );
    agent.wait_scans(2, "a repeated Resolved would show up by now");
    let writes = fake.accepted_event_writes();
    for (id, kind) in &ledger_ids {
        assert_one_event(
            &writes,
            &ledger,
            id,
            kind,
            "Normal",
            &format!("{}Resolved", camel(kind)),
        );
        assert_one_event(&writes, &ledger, id, kind, "Warning", &camel(kind));
    }
    assert_one_node_event(&writes, &ghost_id, "Normal", "DeletedExecutableResolved");
    assert_one_node_event(&writes, &ghost_id, "Warning", "DeletedExecutable");
    for id in ids_of(&web_findings)
        .keys()
        .chain(ids_of(&batch_findings).keys())
    {
        assert!(
            writes_for(&writes, id)
                .iter()
                .all(|r| r.type_() == "Warning"),
            "the web and batch containers still run; their finding {id} must not resolve"
        );
    }
    assert_event_invariants(&fake);

    // --- 4. A restart with the same state directory announces nothing again, and resolves ---
    // what went away while no agent ran.
    let before_restart = fake.accepted_event_writes();
    let status = agent.terminate();
    assert!(
        status.success(),
        "SIGTERM should end the agent with 0, got {status}"
    );
    assert!(
        state_dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "the agent left nothing in --state-dir {}",
        state_dir.display()
    );
    let batch_ids = ids_of(&batch_findings);
    batch.stop(&fake);
    agent = Agent::start(&kubeconfig, &state_dir, dir.path(), "agent-2");
    agent.wait_ready();
    web.wait_enriched_findings(&agent, &web_kinds);
    wait_for(
        "the restarted agent to resolve what stopped while no agent ran",
        EVENTS_TIMEOUT,
        || {
            let writes = fake.accepted_event_writes();
            let unresolved: Vec<&String> = batch_ids
                .keys()
                .filter(|id| {
                    !writes_for(&writes, id)
                        .iter()
                        .any(|r| r.type_() == "Normal")
                })
                .collect();
            if unresolved.is_empty() {
                Ok(())
            } else {
                Err(format!("no Resolved Event yet for {unresolved:?}"))
            }
        },
    );
    agent.wait_scans(3, "a repeated announcement would show up by now");
    let after_restart = fake.accepted_event_writes();
    for (id, kind) in &batch_ids {
        assert_one_event(&after_restart, &batch, id, kind, "Warning", &camel(kind));
        assert_one_event(
            &after_restart,
            &batch,
            id,
            kind,
            "Normal",
            &format!("{}Resolved", camel(kind)),
        );
    }
    for id in ids_of(&web_findings).keys() {
        assert_eq!(
            writes_for(&after_restart, id).len(),
            writes_for(&before_restart, id).len(),
            "the restarted agent announced the web container's finding {id} again:\n  {}",
            writes_for(&after_restart, id)
                .iter()
                .map(|r| r.line())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    assert_event_invariants(&fake);

    // --- 5a. Event writes fail with 500: everything else goes on; the backlog is announced. -
    let failed_before = events_total(&agent.metrics(), "failed");
    fake.set_event_mode(Mode::Fail500);
    let cart = Workload::start(
        &fake,
        ContainerSpec::new(image),
        "shop",
        "cart-1",
        "cart",
        "registry.example.com/shop/cart:1.0",
    );
    ride_out_outage(&agent, &fake, &cart, failed_before, "500s");
    fake.set_event_mode(Mode::Normal);
    let cart_ids = ids_of(&cart.findings_in(&agent.findings()));
    wait_announced(&fake, &cart, &cart_ids, "after the 500s stopped");

    // --- 5b. Event writes hang: the same, through the client's request timeout. -----------
    let failed_before = events_total(&agent.metrics(), "failed");
    fake.set_event_mode(Mode::Hang);
    let search = Workload::start(
        &fake,
        ContainerSpec::new(image),
        "shop",
        "search-1",
        "search",
        "registry.example.com/shop/search:4.2",
    );
    ride_out_outage(&agent, &fake, &search, failed_before, "hanging requests");
    fake.set_event_mode(Mode::Normal);
    let search_ids = ids_of(&search.findings_in(&agent.findings()));
    wait_announced(
        &fake,
        &search,
        &search_ids,
        "after the requests stopped hanging",
    );

    // Nothing was announced twice over the whole run, and the earlier findings stayed quiet.
    agent.wait_scans(2, "late repeats would show up by now");
    let writes = fake.accepted_event_writes();
    for (w, ids) in [
        (&web, ids_of(&web_findings)),
        (&cart, cart_ids),
        (&search, search_ids),
    ] {
        for (id, kind) in &ids {
            assert_one_event(&writes, w, id, kind, "Warning", &camel(kind));
        }
    }
    assert_event_invariants(&fake);
    let saved = support::artifacts_dir().join("kube_e2e-requests.log");
    fs::write(&saved, fake.dump(usize::MAX)).unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "kube_e2e: {} requests to the fake ({}), {} Event writes accepted, in {:.1?}",
        fake.requests().len(),
        saved.display(),
        writes.len(),
        started.elapsed()
    );
}

/// While the fake fails Event writes: a new container's findings appear (enriched: the pod
/// watch is unaffected), none of them is announced, scans go on, the API and /metrics answer,
/// and `nodeguard_events_total{result="failed"}` rises above `failed_before`.
fn ride_out_outage(agent: &Agent, fake: &FakeApi, w: &Workload, failed_before: f64, outage: &str) {
    let findings = w.wait_enriched_findings(agent, &["runs_as_root"]);
    let ids = ids_of(&findings);
    let mut scans = BTreeSet::new();
    let failed = wait_for(
        &format!("failed Event writes to be counted during {outage} while scans go on"),
        EVENTS_TIMEOUT,
        || {
            scans.insert(agent.scanned_at());
            let failed = events_total(&agent.metrics_within(METRICS_DURING_OUTAGE), "failed");
            if failed > failed_before && scans.len() >= 3 {
                Ok(failed)
            } else {
                Err(format!(
                    "nodeguard_events_total{{result=\"failed\"}} {failed} (was {failed_before}); {} reports seen",
                    scans.len()
                ))
            }
        },
    );
    let writes = fake.accepted_event_writes();
    for id in ids.keys() {
        assert!(
            writes_for(&writes, id).is_empty(),
            "finding {id} was announced during {outage}: {:?}",
            writes_for(&writes, id)
                .iter()
                .map(|r| r.line())
                .collect::<Vec<_>>()
        );
    }
    let attempted = fake
        .requests()
        .into_iter()
        .filter(|r| r.is_event_write() && !(200..300).contains(&r.status))
        .count();
    assert!(
        attempted > 0,
        "no Event write reached the fake during {outage}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "kube_e2e: during {outage}: {} reports, failed Events {failed_before} -> {failed}, {attempted} failed writes so far",
        scans.len()
    );
}

/// Waits until each of `ids` (findings of `w`) has a Warning Event.
fn wait_announced(fake: &FakeApi, w: &Workload, ids: &BTreeMap<String, String>, when: &str) {
    assert!(
        !ids.is_empty(),
        "{} has no findings to announce",
        w.describe()
    );
    wait_for(
        &format!("Warnings for the findings of {} {when}", w.describe()),
        EVENTS_TIMEOUT,
        || {
            let writes = fake.accepted_event_writes();
            let missing: Vec<&String> = ids
                .keys()
                .filter(|id| {
                    !writes_for(&writes, id)
                        .iter()
                        .any(|r| r.type_() == "Warning")
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("no Warning yet for {missing:?}"))
            }
        },
    );
}

/// `--policy-reports=false` (as an operator without the CRDs, or without the wish, sets it)
/// turns PolicyReports off: the agent sends no request to `wgpolicyk8s.io` and exports no
/// `nodeguard_policy_report*` series, while pods are still watched. Without the flag the same
/// agent lists its reports as soon as it has scanned. Needs no containers: the switch is about
/// requests, and the host's own processes make the state.
#[test]
fn the_policy_reports_switch_turns_them_off() {
    let Cluster {
        fake,
        dir,
        kubeconfig,
        state_dir,
    } = Cluster::new("nodeguard-kube-e2e-switch-");
    let _dump = DumpOnPanic(&fake);
    let to_reports = |fake: &FakeApi| {
        fake.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/apis/wgpolicyk8s.io/"))
            .count()
    };

    let off = Agent::start_with(
        &kubeconfig,
        &state_dir,
        dir.path(),
        "reports-off",
        &["--policy-reports=false"],
    );
    off.wait_ready();
    off.wait_scans(2, "a publisher would have listed its reports by now");
    let metrics = off.metrics();
    assert!(
        !metrics.contains("nodeguard_policy_report"),
        "{}",
        excerpt(&metrics)
    );
    assert!(
        fake.requests().iter().any(|r| r.path == "/api/v1/pods"),
        "the agent did talk to the API server (pods)"
    );
    assert_eq!(to_reports(&fake), 0, "{}", fake.dump(20));
    off.terminate();

    let on = Agent::start_with(&kubeconfig, &state_dir, dir.path(), "reports-on", &[]);
    on.wait_ready();
    wait_for("the agent to list its reports", SCANS_TIMEOUT, || {
        let metrics = on.metrics();
        if to_reports(&fake) > 0 && metrics.contains("nodeguard_policy_report_crds_installed 1") {
            Ok(())
        } else {
            Err(format!(
                "{} report requests; metrics: {}",
                to_reports(&fake),
                excerpt(&metrics)
            ))
        }
    });
    on.terminate();
}

/// Peak resident memory of a process (`VmHWM` of its status), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// Issue 19, items 5 and 6: what is planted in `--state-dir` neither redirects the agent's
/// writes nor bloats it. A symlink at the ledger's temporary name points at a file root
/// would overwrite, and the ledger itself is a 512 MiB sparse file: the agent refuses the
/// ledger with a line saying why (and starts with an empty announced set), stays small,
/// announces the host's deleted-executable finding and saves its ledger around the link,
/// whose target is untouched.
#[test]
fn a_planted_state_dir_neither_redirects_the_ledger_nor_bloats_the_agent() {
    require_containers!();
    let Cluster {
        fake,
        dir,
        kubeconfig,
        state_dir,
    } = Cluster::new("nodeguard-kube-e2e-statedir-");
    let _dump = DumpOnPanic(&fake);
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let tmp = state_dir.join(".announced-events.json.tmp");
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let ledger = state_dir.join("announced-events.json");
    fs::File::create(&ledger)
        .and_then(|f| f.set_len(512 << 20))
        .unwrap();

    let ghost = Ghost::start();
    let agent = Agent::start(&kubeconfig, &state_dir, dir.path(), "agent-statedir");
    agent.wait_ready();
    let id = wait_for("the ghost's finding", EVENTS_TIMEOUT, || {
        ghost
            .finding_in(&agent.findings())
            .and_then(|f| f["id"].as_str().map(str::to_string))
            .ok_or_else(|| "not open yet".to_string())
    });
    let saved = wait_for(
        "the announced set saved with the ghost's finding",
        EVENTS_TIMEOUT,
        || {
            let meta = fs::symlink_metadata(&ledger).map_err(|e| e.to_string())?;
            if !meta.is_file() || meta.len() > 1 << 20 {
                return Err(format!("still {} bytes", meta.len()));
            }
            let text = fs::read_to_string(&ledger).map_err(|e| e.to_string())?;
            if text.contains(&id) {
                Ok(text)
            } else {
                Err(format!("no {id} in {}", excerpt(&text)))
            }
        },
    );
    assert!(saved.contains("\"announced\""), "{}", excerpt(&saved));
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the agent wrote through the planted link"
    );
    assert!(
        fs::symlink_metadata(&tmp).is_err(),
        "the planted link (or a temporary file) is left at {}",
        tmp.display()
    );
    let log = agent.log_text();
    assert!(
        log.contains("ignoring the announced-findings file")
            && log.contains("536870912 bytes, more than the"),
        "the refusal is not logged with its reason:\n{}",
        excerpt(&log)
    );
    assert!(
        log.contains("removed a symlink planted"),
        "{}",
        excerpt(&log)
    );
    // Reading the ledger whole took the agent to 530 MiB; refused, it never gets near.
    let peak = peak_rss_kib(agent.pid());
    eprintln!(
        "agent peak RSS with a 512 MiB sparse ledger planted: {} MiB",
        peak / 1024
    );
    assert!(
        peak < 200 * 1024,
        "peak RSS {} MiB: the planted ledger was read",
        peak / 1024
    );
    agent.terminate();
}
