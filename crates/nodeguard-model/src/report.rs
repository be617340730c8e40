//! The report of one scan: the JSON contract documented in docs/json-report.md.

use crate::finding::{Finding, Severity};
use crate::rootfs::RootFs;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Version of the JSON contract; bumped only on incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A point in time, serialized as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }

    pub fn unix_seconds(self) -> f64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    }

    /// Parses RFC 3339 (`2026-11-22T10:00:00Z`, fractions allowed).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        humantime::parse_rfc3339_weak(text.trim())
            .map(Timestamp)
            .map_err(|e| format!("not an RFC 3339 time {text:?}: {e}"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One scan of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// The node's name (`NODE_NAME`, else the hostname).
    pub node: String,
    pub scanned_at: Timestamp,
    pub duration_ms: u64,
    pub containers: Vec<Container>,
    pub processes: Vec<Process>,
    /// setuid/setgid/file-capability files found in container filesystems (empty when the
    /// filesystem scan did not run).
    #[serde(default)]
    pub files: Vec<FileEntry>,
    pub findings: Vec<Finding>,
    pub stats: ScanStats,
    /// Things that went wrong without stopping the scan, one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Report {
    /// The highest severity among the findings.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    pub fn container(&self, id: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.id == id)
    }
}

/// The runtime that created a container, as told by its cgroup name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
    /// A Kubernetes pod container whose cgroup name does not say which runtime made it.
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// Kubernetes QoS class, from the kubepods cgroup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    Besteffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::Besteffort => "besteffort",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Resource limits of a cgroup. `None` (JSON null) means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU quota in cores (quota / period).
    pub cpu_cores: Option<f64>,
    pub pids: Option<u64>,
}

impl Limits {
    /// The tighter of two limits, field by field (a cgroup is bounded by its ancestors too).
    pub fn tightest(self, other: Limits) -> Limits {
        fn min_opt<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(if b < a { b } else { a }),
                (a, None) => a,
                (None, b) => b,
            }
        }
        Limits {
            memory_bytes: min_opt(self.memory_bytes, other.memory_bytes),
            cpu_cores: min_opt(self.cpu_cores, other.cpu_cores),
            pids: min_opt(self.pids, other.pids),
        }
    }
}

/// Kubernetes identity of a container, filled in when the agent watches the API server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub container_name: Option<String>,
    /// The image reference from the pod spec.
    pub image: Option<String>,
    /// The image digest the kubelet reports (`status.containerStatuses[].imageID`). This is
    /// the registry manifest digest, not the digest of any binary.
    pub image_id: Option<String>,
}

/// One container seen on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// The 64-hex container id.
    pub id: String,
    pub runtime: Runtime,
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    /// The container's cgroup path (the v2 path, else the v1 memory controller's path).
    pub cgroup: String,
    pub cgroup_driver: CgroupDriver,
    pub cgroup_version: CgroupVersion,
    /// The container cgroup's own limits.
    pub limits: Limits,
    /// The pod-level parent cgroup's limits, for pod containers.
    pub pod_limits: Option<Limits>,
    /// The tightest of the container's own limits and its pod's: what binds the container.
    /// For a pod container the levels above the pod cgroup (the kubelet's `kubepods` and QoS
    /// cgroups: node allocatable) are left out, see `node_allocatable`; for another container
    /// every level up to the root counts. A limit named in `unknown_limits` is null here
    /// because it could not be read, not because there is none.
    pub effective_limits: Limits,
    /// Limits that could not be read (`memory`, `cpu`, `pids`): the cgroup file was missing,
    /// unreadable or garbage, or the cgroup root is not a cgroup filesystem. Unknown, not
    /// unlimited: no `missing_*_limit` finding is raised for them.
    #[serde(default)]
    pub unknown_limits: Vec<String>,
    /// For pod containers, the tightest limits of the kubelet's node-level cgroups above the
    /// pod (`kubepods` — node allocatable — and the QoS class level): a bound the node puts
    /// on all pods, not a limit of this container. Null when not a pod container.
    #[serde(default)]
    pub node_allocatable: Option<Limits>,
    /// The pod's sandbox (pause) container, not one of the pod's containers: it is reported
    /// but gets no findings (it shares the pod's namespaces, so it would repeat the real
    /// containers' findings under a name no pod spec has).
    #[serde(default)]
    pub sandbox: bool,
    /// No longer running: the container is reported only because a process read at its exec
    /// is kept for the exec retention window after it exited (docs/exec-detection.md, "Exec-time
    /// detection"). Its limits are not evaluated (they bound nothing any more).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
    /// Processes of the container, ascending.
    pub pids: Vec<i32>,
    pub rootfs: Option<RootFs>,
    pub pod: Option<PodRef>,
    /// What confines the container besides its capabilities: the devices it may use and
    /// the paths its runtime masked. With a full bounding set, their absence is what makes a
    /// container privileged (`privileged_container`).
    #[serde(default)]
    pub confinement: Confinement,
    /// The image the container runs and how far its verification is (README "Image
    /// verification"); absent when image verification is off or the image is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::ContainerImage>,
}

/// Which devices a container's cgroup lets it open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceAccess {
    /// Every device (cgroup v1 `devices.list` is `a *:* rwm`): what a privileged container
    /// gets.
    All,
    /// Some devices only (any other `devices.list`).
    Restricted,
    /// Not known: on cgroup v2 a BPF program attached to the cgroup decides, and runtimes
    /// attach one for privileged containers too (an allow-all one), which only
    /// CAP_SYS_ADMIN could read back; or the devices controller or file was not readable.
    #[default]
    Unknown,
}

impl DeviceAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceAccess::All => "all",
            DeviceAccess::Restricted => "restricted",
            DeviceAccess::Unknown => "unknown",
        }
    }
}

/// What confines a container apart from its capabilities, as the host shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Devices the container's cgroup allows.
    pub devices: DeviceAccess,
    /// The paths runtimes mask or make read-only that the container's own mount table shows
    /// masked (`/proc/kcore` covered by `/dev/null`, `/sys/firmware` by an empty tmpfs) or
    /// read-only (`/proc/sys`, `/sys`), sorted. Empty: none is, as in a privileged container.
    /// Null when unknown (no process of the container showed its mount table with a
    /// `/proc`, e.g. all chrooted).
    pub masked_paths: Option<Vec<String>>,
}

/// Effective/real ids of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub filesystem: u32,
}

/// Capability sets of a process, as `CAP_*` names. A name the kernel's table knows is
/// borrowed from it, and a set is shared ([`CapabilitySet`]): most of a node's processes
/// have one of a few sets, and a scan builds five for every process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub effective: CapabilitySet,
    pub permitted: CapabilitySet,
    pub inheritable: CapabilitySet,
    pub bounding: CapabilitySet,
    pub ambient: CapabilitySet,
}

/// A capability's name: `CAP_SYS_ADMIN`, or `CAP_41` for a bit newer than the table.
pub type CapabilityName = std::borrow::Cow<'static, str>;

/// One capability set by name, shared between the processes that have it (a JSON array).
pub type CapabilitySet = std::sync::Arc<[CapabilityName]>;

/// The raw masks behind [`Capabilities`], as 16 hex digits like `/proc/PID/status` prints
/// (shared like the sets; JSON strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityMasks {
    pub effective: std::sync::Arc<str>,
    pub permitted: std::sync::Arc<str>,
    pub inheritable: std::sync::Arc<str>,
    pub bounding: Option<std::sync::Arc<str>>,
    pub ambient: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    Disabled,
    Strict,
    Filter,
}

/// Namespace inode numbers of a process (`/proc/PID/ns/*`), and which it shares with the host
/// (the proc root's pid 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub pid: Option<u64>,
    pub net: Option<u64>,
    pub ipc: Option<u64>,
    pub uts: Option<u64>,
    pub mnt: Option<u64>,
    pub user: Option<u64>,
    pub cgroup: Option<u64>,
    /// Names of the namespaces equal to pid 1's, e.g. `["net", "user"]`.
    pub shared_with_host: Vec<Cow<'static, str>>,
}

/// Which layer of a container's filesystem a file lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The image (an overlay lower layer).
    Image,
    /// The container's writable layer: written after the container started.
    Upper,
    /// Not an overlay, or the layers could not be reached.
    Unknown,
}

/// One process seen on the node. `Default` is an empty record (pid 0, nothing read), for
/// building one field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// `comm` from `/proc/PID/stat`.
    pub command: String,
    /// The command line, arguments joined by spaces, capped at 4 KiB.
    pub cmdline: String,
    /// The container, or null for a host process.
    pub container_id: Option<String>,
    /// Path of the executable as the process's own mount namespace sees it, without a
    /// trailing ` (deleted)`. Null for kernel threads.
    pub exe: Option<String>,
    /// The executable was deleted or is anonymous (memfd) while running.
    #[serde(default)]
    pub exe_deleted: bool,
    /// Which layer the executable lives in, when the root is an overlay.
    pub exe_layer: Option<Layer>,
    /// SHA-256 of `/proc/PID/exe`, lowercase hex.
    pub sha256: Option<String>,
    /// SHA-512 of `/proc/PID/exe`, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Why the executable was not hashed, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_error: Option<String>,
    /// Effective uid/gid (as `ps -o uid` shows), and the full sets.
    pub uid: u32,
    pub gid: u32,
    pub uids: Ids,
    pub gids: Ids,
    pub capabilities: Capabilities,
    pub capability_masks: CapabilityMasks,
    pub no_new_privs: Option<bool>,
    pub seccomp: Option<SeccompMode>,
    pub namespaces: Namespaces,
    pub kernel_thread: bool,
    /// Read at its exec and no longer running: reported as it was read, with its findings,
    /// for the exec retention window (docs/exec-detection.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
    /// The writable mount other than the container's root the executable lives on (a tmpfs,
    /// an `emptyDir`, a `hostPath`): neither the image nor the writable layer. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_mount: Option<MountRef>,
    /// The script an interpreter process (`sh`, `python3`, …) runs, when it is not in the
    /// image: in the writable layer or on a writable mount. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Script>,
    /// Whether the executable's bytes are the image's file at that path (README "Image
    /// verification"). Absent for host processes, kernel threads, and when image
    /// verification is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_verdict: Option<crate::ImageVerdict>,
}

/// A writable mount of a container other than its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRef {
    /// Where it is mounted, as the container sees it (escaped like paths).
    pub mount_point: String,
    /// `tmpfs`, `ext4`, `xfs`, `nfs`, …
    pub fstype: String,
}

/// A script an interpreter process runs from outside its container's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// As the container sees it (escaped like paths).
    pub path: String,
    /// The writable mount it is on; absent: the container's writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountRef>,
    /// SHA-256 of the script, lowercase hex.
    pub sha256: Option<String>,
    /// Why it was not hashed, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_error: Option<String>,
}

/// How many characters of a container id name a container that has no Kubernetes name.
pub const SHORT_ID_LEN: usize = 12;

/// The first [`SHORT_ID_LEN`] characters of a container id (or a digest), as `docker ps` and
/// `crictl ps` show.
pub fn short_id(id: &str) -> &str {
    id.char_indices()
        .nth(SHORT_ID_LEN)
        .map_or(id, |(end, _)| &id[..end])
}

#[cfg(test)]
mod short_id_tests {
    use super::short_id;

    #[test]
    fn short_ids_are_twelve_characters() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(short_id(id), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
    }
}

/// A setuid/setgid/file-capability file inside a container filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub container_id: String,
    /// Path inside the container, bytes that are not UTF-8 and control characters escaped
    /// (see [`crate::escape_path`]).
    pub path: String,
    pub setuid: bool,
    pub setgid: bool,
    /// `getcap`-style text, e.g. `cap_net_raw=ep`, when the file carries capabilities.
    pub capabilities: Option<String>,
    /// Permission bits, e.g. `0o4755` as 2541.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<String>,
    /// SHA-512, lowercase hex, when the scan computes it (`--hash sha512|both`, or a policy
    /// that pins SHA-512 digests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    pub layer: Layer,
    /// For a file in an image layer: whether its bytes are the image's file at that path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_verdict: Option<crate::ImageVerdict>,
}

/// Counters of one scan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanStats {
    pub processes_seen: u64,
    pub kernel_threads: u64,
    /// Processes that exited while being read.
    pub processes_vanished: u64,
    /// Processes the agent was not allowed to read.
    pub processes_denied: u64,
    pub containers_seen: u64,
    pub bytes_hashed: u64,
    pub files_hashed: u64,
    pub hash_cache_hits: u64,
    pub hash_cache_misses: u64,
    pub files_walked: u64,
    pub layers_walked: u64,
    pub layers_cached: u64,
    /// Roots whose walk a file or time budget cut short.
    pub walks_truncated: u64,
    /// How long ago every entry of the containers' writable layers was last looked at, at
    /// the latest (the oldest layer's re-check): a `chmod` or an xattr change on an existing
    /// file there shows within this age (docs/writable-layers.md).
    #[serde(default)]
    pub fs_recheck_age_seconds: u64,
    /// Writable layers walked in full because their directory cache would pass its bound.
    #[serde(default)]
    pub fs_incremental_fallbacks: u64,
    /// The writable-layer event source (`--fs-events`, docs/writable-layers.md).
    #[serde(default)]
    pub fs_events: FsEventStats,
    /// Errors by kind (`hash`, `cgroup`, `mountinfo`, `walk`, ...).
    pub errors: BTreeMap<String, u64>,
}

/// Where a `chmod`/xattr change on an existing file of a writable layer is learnt of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsEventSource {
    /// No event source (`--fs-events off`): the filesystem scan's re-check finds it.
    #[default]
    Off,
    /// fanotify marks on the filesystems holding the layers: the next process scan finds it.
    Fanotify,
    /// Asked for, but it could not be had (no `CAP_SYS_ADMIN`, nothing markable): as `off`.
    Unavailable,
}

impl FsEventSource {
    pub const ALL: [FsEventSource; 3] = [
        FsEventSource::Off,
        FsEventSource::Fanotify,
        FsEventSource::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FsEventSource::Off => "off",
            FsEventSource::Fanotify => "fanotify",
            FsEventSource::Unavailable => "unavailable",
        }
    }
}

/// The writable-layer event source: its state, counters since the agent started, and the
/// layers it does not watch now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEventStats {
    pub source: FsEventSource,
    /// Attribute-change events read from the kernel.
    pub events: u64,
    /// Directories of writable layers listed again because an event named them.
    pub dirs_listed: u64,
    /// Times events were lost (queue overflow, too many directories between two scans, a
    /// read error); each starts a re-check round of every writable layer at once.
    pub lost: u64,
    /// Writable layers on a filesystem without a mark (seen at the re-check only).
    pub unmarked_layers: u64,
}

impl ScanStats {
    pub fn count_error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightest_limits_take_the_smaller_of_each() {
        let own = Limits {
            memory_bytes: Some(100),
            cpu_cores: None,
            pids: Some(50),
        };
        let pod = Limits {
            memory_bytes: Some(200),
            cpu_cores: Some(0.5),
            pids: None,
        };
        assert_eq!(
            own.tightest(pod),
            Limits {
                memory_bytes: Some(100),
                cpu_cores: Some(0.5),
                pids: Some(50)
            }
        );
        assert_eq!(
            Limits::default().tightest(Limits::default()),
            Limits::default()
        );
    }

    #[test]
    fn timestamps_round_trip_as_rfc3339() {
        let ts = Timestamp::parse("2026-11-22T10:00:00.250Z").unwrap();
        assert_eq!(ts.to_string(), "2026-11-22T10:00:00.250Z");
        let json = serde_json::to_string(&ts).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), ts);
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
