//! A realistic node state and a real server on a loopback port, shared by the tests.
#![allow(dead_code)]

use nodeguard_api::{ApiContext, MetricsBody, RequestLimits, ServeLimits};
use nodeguard_model::{
    Capabilities, CapabilityMasks, CapabilityName, CapabilitySet, CgroupDriver, CgroupVersion,
    ContainerImage, FileEntry, Finding, FindingKind, Ids, ImageSource, ImageVerdict, Layer, Limits,
    MountRef, Namespaces, NodeState, OverlayLayers, PodRef, Process, QosClass, Report, RootFs,
    Runtime, ScanKind, ScanRun, ScanStats, Script, SeccompMode, Severity, Timestamp,
    TrackedFinding, SCHEMA_VERSION,
};
use nodeguard_testkit::model::{container, pod_ref};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub const NGINX_ID: &str = "9c1f2e3d4c5b6a7980a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f8";
pub const SHELL_ID: &str = "0d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e";
pub const NGINX_SHA: &str = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";
pub const DROPPER_SHA: &str = "dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44";
pub const SYSTEMD_SHA: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

pub fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

fn caps(names: &[&str]) -> CapabilitySet {
    names
        .iter()
        .map(|n| CapabilityName::from(n.to_string()))
        .collect()
}

fn namespaces(base: u64, shared: &[&str]) -> Namespaces {
    Namespaces {
        pid: Some(base + 1),
        net: Some(base + 2),
        ipc: Some(base + 3),
        uts: Some(base + 4),
        mnt: Some(base + 5),
        user: Some(4026531837),
        cgroup: None,
        shared_with_host: shared.iter().map(|n| n.to_string().into()).collect(),
    }
}

fn ids(n: u32) -> Ids {
    Ids {
        real: n,
        effective: n,
        saved: n,
        filesystem: n,
    }
}

fn process(pid: i32, ppid: i32, command: &str, container: Option<&str>, uid: u32) -> Process {
    Process {
        image_verdict: None,
        pid,
        ppid,
        command: command.to_string(),
        cmdline: format!("/usr/sbin/{command} -g daemon off;"),
        container_id: container.map(str::to_string),
        exe: Some(format!("/usr/sbin/{command}")),
        exe_deleted: false,
        exe_layer: Some(Layer::Image),
        exe_mount: None,
        script: None,
        sha256: Some(NGINX_SHA.to_string()),
        sha512: None,
        hash_error: None,
        uid,
        gid: uid,
        uids: ids(uid),
        gids: ids(uid),
        capabilities: Capabilities {
            effective: caps(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]),
            permitted: caps(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]),
            inheritable: caps(&[]),
            bounding: caps(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]),
            ambient: caps(&[]),
        },
        capability_masks: CapabilityMasks {
            effective: "0000000000000401".into(),
            permitted: "0000000000000401".into(),
            inheritable: "0000000000000000".into(),
            bounding: Some("0000000000200401".into()),
            ambient: Some("0000000000000000".into()),
        },
        no_new_privs: Some(false),
        seccomp: Some(SeccompMode::Filter),
        namespaces: namespaces(4026532200, &["user"]),
        kernel_thread: false,
        exited: false,
    }
}

fn finding(
    kind: FindingKind,
    severity: Severity,
    container: Option<&str>,
    subject: &str,
    first_seen: &str,
) -> TrackedFinding {
    let mut f = Finding::new(
        kind,
        severity,
        container,
        subject,
        format!("{kind} on {subject}"),
    );
    if container == Some(NGINX_ID) {
        f.namespace = Some("shop".into());
        f.pod = Some("web-7d9f8".into());
        f.container_name = Some("nginx".into());
    }
    TrackedFinding {
        finding: f,
        first_seen: at(first_seen),
        last_seen: at("2026-11-22T10:00:00Z"),
    }
}

/// Two containers (one in a known pod, one without pod metadata), their processes, host
/// processes and a kernel thread, files, and findings of every scope. Every optional field
/// of the model is filled somewhere and left empty somewhere else.
pub fn node_state(node: &str) -> NodeState {
    let nginx = container(NGINX_ID)
        .in_pod(
            "6f1c0c3e-2b8a-4b8e-9a57-1a2b3c4d5e6f",
            Some(PodRef {
                image: Some("nginx:1.27".into()),
                image_id: Some(
                    "docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                        .into(),
                ),
                ..pod_ref("shop", "web-7d9f8", "nginx")
            }),
        )
        .qos(QosClass::Burstable)
        .limits(
            Limits {
                memory_bytes: Some(256 << 20),
                cpu_cores: Some(0.5),
                pids: None,
            },
            Some(Limits {
                memory_bytes: Some(512 << 20),
                cpu_cores: None,
                pids: Some(1024),
            }),
            Limits {
                memory_bytes: Some(256 << 20),
                cpu_cores: Some(0.5),
                pids: Some(1024),
            },
        )
        .pids(&[4242, 4243])
        .rootfs(RootFs {
            fstype: "overlay".into(),
            layers: OverlayLayers {
                lower_dirs: vec![
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs"
                        .into(),
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/11/fs"
                        .into(),
                ],
                upper_dir: Some(
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/13/fs"
                        .into(),
                ),
            },
        })
        .build();
    let mut shell = container(SHELL_ID)
        .runtime(Runtime::Crio)
        .cgroup(&format!("/kubepods.slice/crio-{SHELL_ID}.scope"))
        .cgroup_driver(CgroupDriver::Systemd)
        .cgroup_version(CgroupVersion::V2)
        .pids(&[5001])
        .build();
    // The dropper was read at its exec and is gone, and so is its container: both are kept
    // for the exec retention window.
    shell.exited = true;

    // Image verification: the nginx image is indexed; the shell's is not known.
    let mut nginx = nginx;
    nginx.image = Some(ContainerImage {
        reference: Some(
            "docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .into(),
        ),
        source: Some(ImageSource::PodStatus),
        config_digest: Some(format!("sha256:{}", "c".repeat(64))),
        layers: vec![format!("sha256:{}", "1".repeat(64))],
        unverifiable: None,
        altered_layer: Some(format!("sha256:{}", "1".repeat(64))),
    });
    shell.image = Some(ContainerImage {
        reference: None,
        source: None,
        config_digest: None,
        layers: vec![],
        unverifiable: Some("image unknown".into()),
        altered_layer: None,
    });
    let mut master = process(4242, 4200, "nginx", Some(NGINX_ID), 0);
    master.image_verdict = Some(ImageVerdict::Verified {
        layer: format!("sha256:{}", "1".repeat(64)),
    });
    let mut worker = process(4243, 4242, "nginx", Some(NGINX_ID), 101);
    worker.image_verdict = Some(ImageVerdict::Mismatch {
        layer: Some(format!("sha256:{}", "1".repeat(64))),
        expected_sha256: Some("e".repeat(64)),
        actual_sha256: "a".repeat(64),
    });
    let mut dropper = process(5001, 4990, "sh", Some(SHELL_ID), 0);
    dropper.exe = Some("/tmp/.x/dropper".into());
    dropper.exe_deleted = true;
    dropper.exe_layer = Some(Layer::Upper);
    dropper.sha256 = None;
    dropper.hash_error = Some("executable vanished while hashing".into());
    dropper.no_new_privs = None;
    dropper.seccomp = None;
    dropper.capability_masks.bounding = None;
    dropper.capability_masks.ambient = None;
    dropper.namespaces = namespaces(4026531830, &["net", "pid"]);
    dropper.exited = true;
    // A worker that runs a script dropped on a tmpfs through the image's shell, and a
    // binary from that tmpfs.
    worker.script = Some(Script {
        path: "/dev/shm/run.sh".into(),
        mount: Some(MountRef {
            mount_point: "/dev/shm".into(),
            fstype: "tmpfs".into(),
        }),
        sha256: None,
        hash_error: Some("cannot hash script /dev/shm/run.sh: changed since it was located".into()),
    });
    worker.exe_mount = Some(MountRef {
        mount_point: "/dev/shm".into(),
        fstype: "tmpfs".into(),
    });
    let mut systemd = process(1, 0, "systemd", None, 0);
    systemd.cmdline = "/sbin/init".into();
    systemd.exe = Some("/usr/lib/systemd/systemd".into());
    systemd.exe_layer = None;
    systemd.sha256 = Some(SYSTEMD_SHA.into());
    systemd.sha512 = Some("ab".repeat(64));
    let mut kthreadd = process(2, 0, "kthreadd", None, 0);
    kthreadd.cmdline = String::new();
    kthreadd.exe = None;
    kthreadd.exe_layer = None;
    kthreadd.sha256 = None;
    kthreadd.kernel_thread = true;
    let mut evil_host = process(777, 1, "kworker\n\x1b[32mok", None, 0);
    evil_host.exe = Some("/var/tmp/dropper".into());
    evil_host.sha256 = Some(DROPPER_SHA.into());

    let passwd = FileEntry {
        image_verdict: Some(ImageVerdict::unverifiable("indexing")),
        container_id: NGINX_ID.into(),
        path: "/usr/bin/passwd".into(),
        setuid: true,
        setgid: false,
        capabilities: None,
        mode: 0o4755,
        uid: 0,
        gid: 0,
        size: 68248,
        sha256: Some("bb22".repeat(16)),
        sha512: Some("cc33".repeat(32)),
        layer: Layer::Image,
    };
    let ping = FileEntry {
        image_verdict: None,
        path: "/usr/bin/ping".into(),
        setuid: false,
        capabilities: Some("cap_net_raw=ep".into()),
        mode: 0o755,
        sha256: None,
        sha512: None,
        layer: Layer::Upper,
        ..passwd.clone()
    };

    let mut findings = vec![
        finding(
            FindingKind::RunsAsRoot,
            Severity::Medium,
            Some(NGINX_ID),
            "uid 0",
            "2026-11-20T08:00:00Z",
        ),
        finding(
            FindingKind::DangerousCapability,
            Severity::High,
            Some(NGINX_ID),
            "CAP_SYS_ADMIN",
            "2026-11-21T08:00:00Z",
        ),
        finding(
            FindingKind::SetuidFile,
            Severity::Low,
            Some(NGINX_ID),
            "/usr/bin/passwd",
            "2026-11-20T08:00:00Z",
        ),
        finding(
            FindingKind::DeletedExecutable,
            Severity::Critical,
            Some(SHELL_ID),
            "/tmp/.x/dropper",
            "2026-11-22T09:55:00Z",
        ),
        finding(
            FindingKind::MissingMemoryLimit,
            Severity::Low,
            Some(SHELL_ID),
            "memory",
            "2026-11-22T09:00:00Z",
        ),
        finding(
            FindingKind::DeniedBinary,
            Severity::Critical,
            None,
            DROPPER_SHA,
            "2026-11-22T09:58:30.500Z",
        ),
    ];
    findings[0].finding.pid = Some(4242);
    findings[2].finding.path = Some("/usr/bin/passwd".into());
    // The one optional field only a flooded container fills: a count and the first subjects.
    findings[2].finding.aggregate = Some(nodeguard_model::Aggregate {
        count: 23,
        subjects: vec!["/usr/bin/passwd".into()],
    });
    findings[3].finding.pid = Some(5001);
    findings[3].finding.path = Some("/tmp/.x/dropper".into());
    findings[5].finding.pid = Some(777);
    findings[5].finding.path = Some("/var/tmp/dropper".into());
    findings[5].finding.sha256 = Some(DROPPER_SHA.into());
    findings.sort_by(|a, b| a.finding.id.cmp(&b.finding.id));

    let mut errors = BTreeMap::new();
    errors.insert("hash".to_string(), 1);
    let report = Report {
        schema_version: SCHEMA_VERSION,
        node: node.to_string(),
        scanned_at: at("2026-11-22T10:00:00Z"),
        duration_ms: 812,
        containers: vec![nginx, shell],
        processes: vec![systemd, kthreadd, evil_host, master, worker, dropper],
        files: vec![passwd, ping],
        findings: findings.iter().map(|t| t.finding.clone()).collect(),
        stats: ScanStats {
            processes_seen: 6,
            kernel_threads: 1,
            processes_vanished: 1,
            processes_denied: 0,
            containers_seen: 2,
            bytes_hashed: 5_000_000,
            files_hashed: 4,
            hash_cache_hits: 2,
            hash_cache_misses: 4,
            files_walked: 3100,
            layers_walked: 3,
            layers_cached: 1,
            walks_truncated: 0,
            fs_recheck_age_seconds: 0,
            fs_incremental_fallbacks: 0,
            fs_events: Default::default(),
            errors: errors.clone(),
        },
        warnings: vec!["pid 5001: executable vanished while hashing".into()],
    };
    let mut last_scans = BTreeMap::new();
    last_scans.insert(
        ScanKind::Processes,
        ScanRun {
            finished_at: at("2026-11-22T10:00:00.812Z"),
            duration_ms: 812,
        },
    );
    last_scans.insert(
        ScanKind::Filesystems,
        ScanRun {
            finished_at: at("2026-11-22T09:50:00Z"),
            duration_ms: 14_200,
        },
    );
    NodeState {
        report: Arc::new(report),
        findings,
        last_scans,
        policy_loaded_at: at("2026-11-22T08:00:00Z"),
        policy_weakened: vec![],
        totals: nodeguard_model::Totals {
            errors,
            ..Default::default()
        },
        exec_events: Default::default(),
    }
}

pub type StateSender = watch::Sender<Option<Arc<NodeState>>>;

pub const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exec history holding each process of `state`'s report as if read at its exec, with
/// its pod and the findings naming its pid.
pub fn exec_history_of(state: &NodeState) -> Arc<nodeguard_model::ExecHistory> {
    let history = Arc::new(nodeguard_model::ExecHistory::default());
    let report = &state.report;
    for p in &report.processes {
        let pod = p
            .container_id
            .as_deref()
            .and_then(|id| report.containers.iter().find(|c| c.id == id))
            .and_then(|c| c.pod.clone());
        history.record(nodeguard_model::ExecObservation {
            observed_at: Timestamp::now(),
            process: p.clone(),
            pod,
            findings: report
                .findings
                .iter()
                .filter(|f| f.pid == Some(p.pid))
                .cloned()
                .collect(),
        });
    }
    history
}

/// A context over a fresh watch channel and a metrics renderer that prints one line; the
/// exec history holds the state's processes.
pub fn context(state: Option<NodeState>) -> (ApiContext, StateSender) {
    let exec_history = state.as_ref().map(exec_history_of);
    let (tx, rx) = watch::channel(state.map(Arc::new));
    let ctx = ApiContext {
        state: rx,
        metrics: Arc::new(|_| {
            Ok(MetricsBody {
                text: "nodeguard_up 1\n# EOF\n".to_string(),
                content_type: METRICS_TYPE,
            })
        }),
        exec_history,
    };
    (ctx, tx)
}

/// A real server on a loopback port; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(ctx: ApiContext) -> Server {
        Server::start_with(ctx, RequestLimits::default(), ServeLimits::default()).await
    }

    pub async fn start_with(ctx: ApiContext, request: RequestLimits, serve: ServeLimits) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = nodeguard_api::router_with_limits(ctx, request);
        let task = tokio::spawn(nodeguard_api::serve_with_limits(
            listener,
            router,
            async move {
                let _ = stopped.await;
            },
            serve,
        ));
        Server {
            addr,
            base: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One plain HTTP/1.1 GET over a fresh connection: (status, headers, body).
pub async fn raw_get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
        .await
        .expect("no answer within 30 s")
        .unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
    let body = bytes[split + 4..].to_vec();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, head, body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16)
                .unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}
