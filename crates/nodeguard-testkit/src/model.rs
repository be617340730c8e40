//! Builders for the model values tests type again and again: a field added to `Container`,
//! `PodRef`, `Report` or `NodeState` is then added here once, not in every test that needs
//! one.

use nodeguard_model::{
    CgroupDriver, CgroupVersion, Confinement, Container, DeviceAccess, Finding, Limits, NodeState,
    PodRef, QosClass, Report, RootFs, Runtime, ScanStats, Timestamp, TrackedFinding,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The daemon's state after one scan of `node` at `seen` that saw `containers` (no
/// processes, no files) and `findings`, all open since `seen`; no scan runs recorded, no
/// totals.
pub fn state(
    node: &str,
    containers: Vec<Container>,
    findings: &[Finding],
    seen: Timestamp,
) -> NodeState {
    let report = Report {
        schema_version: 1,
        node: node.into(),
        scanned_at: seen,
        duration_ms: 1,
        containers,
        processes: vec![],
        files: vec![],
        findings: findings.to_vec(),
        stats: ScanStats::default(),
        warnings: vec![],
    };
    NodeState {
        report: Arc::new(report),
        findings: findings
            .iter()
            .map(|f| TrackedFinding {
                finding: f.clone(),
                first_seen: seen,
                last_seen: seen,
            })
            .collect(),
        last_scans: BTreeMap::new(),
        policy_loaded_at: seen,
        policy_weakened: vec![],
        totals: Default::default(),
        exec_events: Default::default(),
    }
}

/// A pod's container as the pod watch fills it in: `namespace/name`, container `container`,
/// no image.
pub fn pod_ref(namespace: &str, name: &str, container: &str) -> PodRef {
    PodRef {
        namespace: namespace.into(),
        name: name.into(),
        container_name: Some(container.into()),
        image: None,
        image_id: None,
    }
}

/// Builds a [`Container`]: by default a containerd container outside any pod, cgroupfs v1,
/// cgroup `/kubepods/<id>`, one process (pid 1), no limits (all read), not a sandbox, no
/// root filesystem.
#[derive(Debug, Clone)]
pub struct ContainerBuilder(Container);

/// Starts a [`ContainerBuilder`] for container `id`.
pub fn container(id: &str) -> ContainerBuilder {
    ContainerBuilder(Container {
        image: None,
        id: id.into(),
        runtime: Runtime::Containerd,
        pod_uid: None,
        qos: None,
        cgroup: format!("/kubepods/{id}"),
        cgroup_driver: CgroupDriver::Cgroupfs,
        cgroup_version: CgroupVersion::V1,
        limits: Limits::default(),
        pod_limits: None,
        effective_limits: Limits::default(),
        unknown_limits: Vec::new(),
        node_allocatable: None,
        sandbox: false,
        exited: false,
        pids: vec![1],
        rootfs: None,
        pod: None,
        confinement: Default::default(),
    })
}

impl ContainerBuilder {
    /// A container of pod `uid` (from its cgroup path: `/kubepods/burstable/pod<uid>/<id>`),
    /// with the pod watch's metadata when `pod` is given.
    pub fn in_pod(mut self, uid: &str, pod: Option<PodRef>) -> Self {
        self.0.cgroup = format!("/kubepods/burstable/pod{uid}/{}", self.0.id);
        self.0.pod_uid = Some(uid.into());
        self.0.pod = pod;
        self
    }

    /// The pod uid and metadata as given, the cgroup path left alone.
    pub fn pod(mut self, uid: Option<&str>, pod: Option<PodRef>) -> Self {
        self.0.pod_uid = uid.map(str::to_string);
        self.0.pod = pod;
        self
    }

    pub fn cgroup(mut self, path: &str) -> Self {
        self.0.cgroup = path.into();
        self
    }

    pub fn cgroup_version(mut self, version: CgroupVersion) -> Self {
        self.0.cgroup_version = version;
        self
    }

    pub fn pids(mut self, pids: &[i32]) -> Self {
        self.0.pids = pids.to_vec();
        self
    }

    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.0.runtime = runtime;
        self
    }

    pub fn qos(mut self, qos: QosClass) -> Self {
        self.0.qos = Some(qos);
        self
    }

    pub fn cgroup_driver(mut self, driver: CgroupDriver) -> Self {
        self.0.cgroup_driver = driver;
        self
    }

    /// The container's own cgroup limits, its pod's (if any), and the effective ones the
    /// collector derives from both.
    pub fn limits(mut self, own: Limits, pod: Option<Limits>, effective: Limits) -> Self {
        self.0.limits = own;
        self.0.pod_limits = pod;
        self.0.effective_limits = effective;
        self
    }

    pub fn rootfs(mut self, rootfs: RootFs) -> Self {
        self.0.rootfs = Some(rootfs);
        self
    }

    /// What confines the container besides its capabilities (default: nothing known).
    pub fn confinement(mut self, devices: DeviceAccess, masked_paths: Option<&[&str]>) -> Self {
        self.0.confinement = Confinement {
            devices,
            masked_paths: masked_paths.map(|p| p.iter().map(|s| s.to_string()).collect()),
        };
        self
    }

    pub fn build(self) -> Container {
        self.0
    }
}
