//! Shared by the integration tests: node states to render, the daemon's side of the
//! channel the metrics read, and finding tools on PATH.
#![allow(dead_code)]

use nodeguard_metrics::{Metrics, Registry};
use nodeguard_model::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Container ids used by the fixtures.
pub const WEB: &str = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
pub const WORKER: &str = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
pub const BARE: &str = "cccccccccccc3333333333333333333333333333333333333333333333333333";

pub fn at(secs: u64) -> Timestamp {
    Timestamp(UNIX_EPOCH + Duration::from_secs(secs))
}

pub fn container(id: &str, pod: Option<(&str, &str, &str)>) -> Container {
    nodeguard_testkit::model::container(id)
        .pod(
            None,
            pod.map(|(namespace, name, container)| {
                nodeguard_testkit::model::pod_ref(namespace, name, container)
            }),
        )
        .cgroup(&format!("/kubepods/cri-containerd-{id}"))
        .pids(&[])
        .build()
}

pub fn process(pid: i32, container_id: Option<&str>, kernel_thread: bool) -> Process {
    Process {
        image_verdict: None,
        pid,
        ppid: 1,
        command: "sh".to_string(),
        cmdline: "sh".to_string(),
        container_id: container_id.map(str::to_string),
        exe: Some("/bin/sh".to_string()),
        exe_deleted: false,
        exe_layer: None,
        exe_mount: None,
        script: None,
        sha256: None,
        sha512: None,
        hash_error: None,
        uid: 0,
        gid: 0,
        uids: Ids::default(),
        gids: Ids::default(),
        capabilities: Capabilities::default(),
        capability_masks: CapabilityMasks::default(),
        no_new_privs: None,
        seccomp: None,
        namespaces: Namespaces::default(),
        kernel_thread,
        exited: false,
    }
}

pub fn report(scanned_at: u64, containers: Vec<Container>, processes: Vec<Process>) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        node: "node-1".to_string(),
        scanned_at: at(scanned_at),
        duration_ms: 12,
        containers,
        processes,
        files: vec![],
        findings: vec![],
        stats: ScanStats::default(),
        warnings: vec![],
    }
}

pub fn tracked(finding: Finding) -> TrackedFinding {
    TrackedFinding {
        finding,
        first_seen: at(100),
        last_seen: at(200),
    }
}

/// A node with three containers:
/// - WEB, pod `shop/web-1` container `nginx` known from the report's pod metadata:
///   runs as root (medium), two dangerous capabilities (high);
/// - WORKER, whose finding carries its own Kubernetes names (`jobs/batch-7`, `worker`):
///   a setuid file (medium);
/// - BARE, no Kubernetes metadata: binary drift (high);
///
/// plus a host process running a deleted executable (critical). Two host processes (one a
/// kernel thread), two WEB processes, one WORKER process.
pub fn three_containers(scanned_at: u64) -> NodeState {
    let mut r = report(
        scanned_at,
        vec![
            container(WEB, Some(("shop", "web-1", "nginx"))),
            container(WORKER, None),
            container(BARE, None),
        ],
        vec![
            process(1, None, false),
            process(2, None, true),
            process(10, Some(WEB), false),
            process(11, Some(WEB), false),
            process(20, Some(WORKER), false),
        ],
    );
    let mut worker_file = Finding::new(
        FindingKind::SetuidFile,
        Severity::Medium,
        Some(WORKER),
        "/usr/bin/passwd",
        "setuid file",
    )
    .with_path("/usr/bin/passwd");
    worker_file.namespace = Some("jobs".to_string());
    worker_file.pod = Some("batch-7".to_string());
    worker_file.container_name = Some("worker".to_string());
    r.findings = vec![
        Finding::new(
            FindingKind::RunsAsRoot,
            Severity::Medium,
            Some(WEB),
            "uid 0",
            "root",
        )
        .with_pid(10),
        Finding::new(
            FindingKind::DangerousCapability,
            Severity::High,
            Some(WEB),
            "CAP_SYS_ADMIN",
            "cap",
        )
        .with_pid(10),
        Finding::new(
            FindingKind::DangerousCapability,
            Severity::High,
            Some(WEB),
            "CAP_NET_ADMIN",
            "cap",
        )
        .with_pid(11),
        worker_file,
        Finding::new(
            FindingKind::BinaryDrift,
            Severity::High,
            Some(BARE),
            "/tmp/x",
            "drift",
        )
        .with_path("/tmp/x")
        .with_sha256("ab".repeat(32)),
        Finding::new(
            FindingKind::DeletedExecutable,
            Severity::Critical,
            None,
            "/usr/bin/miner",
            "deleted",
        )
        .with_pid(1),
    ];
    r.stats.bytes_hashed = 1000;
    r.stats.hash_cache_hits = 3;
    r.stats.hash_cache_misses = 2;
    r.stats.processes_vanished = 1;
    state_of(r)
}

/// What the daemon holds: the sending side of the state channel that [`Feed::metrics`]
/// reads at every scrape.
pub struct Feed {
    state: tokio::sync::watch::Sender<Option<Arc<NodeState>>>,
    pub metrics: Metrics,
}

impl Feed {
    /// Publishes `state` as the daemon does after a scan.
    pub fn state_changed(&self, state: &Arc<NodeState>) {
        self.state.send_replace(Some(Arc::clone(state)));
    }

    pub fn set_event_stats(&self, stats: tokio::sync::watch::Receiver<EventStats>) {
        self.metrics.set_event_stats(stats);
    }
}

/// A registry with nodeguard's series, reading a fresh state channel (no state yet).
pub fn setup() -> (Registry, Feed) {
    let (state, receiver) = tokio::sync::watch::channel(None);
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, receiver);
    (registry, Feed { state, metrics })
}

/// Counts a scan into `state`'s totals, as the daemon does.
pub fn scan_finished(state: &mut NodeState, kind: ScanKind, duration: Duration, ok: bool) {
    let scans = state.totals.scans.entry(kind).or_default();
    scans.outcomes.record(ok);
    scans.durations.observe(duration);
}

/// An Events counters channel whose value is `stats`.
pub fn event_stats(stats: EventStats) -> tokio::sync::watch::Receiver<EventStats> {
    tokio::sync::watch::channel(stats).1
}

/// A state whose open findings are those of `report`, counted as detected once each, and
/// whose report counters are the totals (the agent's first scan).
pub fn state_of(report: Report) -> NodeState {
    let findings: Vec<TrackedFinding> = report.findings.iter().cloned().map(tracked).collect();
    let mut detected = BTreeMap::new();
    for t in &findings {
        *detected
            .entry((t.finding.kind, t.finding.severity))
            .or_insert(0) += 1;
    }
    let mut last_scans = BTreeMap::new();
    last_scans.insert(
        ScanKind::Processes,
        ScanRun {
            finished_at: report.scanned_at,
            duration_ms: 12,
        },
    );
    let mut errors = BTreeMap::new();
    errors.insert("hash".to_string(), 2);
    let stats = report.stats.clone();
    NodeState {
        report: Arc::new(report),
        findings,
        last_scans,
        policy_loaded_at: at(50),
        policy_weakened: vec![],
        totals: Totals {
            findings_detected: detected,
            errors,
            bytes_hashed: stats.bytes_hashed,
            hash_cache_hits: stats.hash_cache_hits,
            hash_cache_misses: stats.hash_cache_misses,
            processes_vanished: stats.processes_vanished,
            ..Default::default()
        },
        exec_events: Default::default(),
    }
}

/// The sample lines (no comments) of an exposition whose name starts with `prefix`.
pub fn samples<'a>(exposition: &'a str, prefix: &str) -> Vec<&'a str> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .collect()
}

/// A tool the test needs: `NODEGUARD_<NAME>` from the environment, else `name` on PATH.
/// Missing: panics when `CI` is set, otherwise says loudly that the test is skipped.
pub fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let var = format!("NODEGUARD_{}", name.to_ascii_uppercase());
    let found = std::env::var_os(&var).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: `{name}` not found (set {var} or install it: apt-get install prometheus); CI is set, so this is a failure");
        }
        // Straight to fd 2: libtest would swallow eprintln! output of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: `{name}` not found on PATH (set {var}); install the `prometheus` package to run it"
        );
    }
    found
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
