//! The data nodeguard produces, with no I/O.
//!
//! One scan yields one immutable [`Report`]: the containers and processes seen on the node,
//! files of interest in container filesystems, and [`Finding`]s. Collectors fill it in,
//! the policy adds findings, and sinks (CLI output, metrics, HTTP API, Kubernetes Events)
//! only read it. Field names here are the JSON contract documented in docs/json-report.md.

pub mod access;
pub mod capability;
pub mod finding;
pub mod fleet;
pub mod fnv;
pub mod history;
pub mod identity;
pub mod image;
pub mod listing;
pub mod random;
pub mod redact;
pub mod report;
pub mod rootfs;
pub mod state;
pub mod text;

pub use access::{AccessDecision, DenialCounters, DenialReason, MAX_TOKEN_BYTES};
pub use capability::{capability_name, capability_number, decode_capabilities};
pub use finding::{
    finding_id, Aggregate, Finding, FindingKind, Severity, UnknownName, AGGREGATE_SAMPLES,
    AGGREGATE_SUBJECT, MAX_FINDINGS_PER_CONTAINER_KIND,
};
pub use fnv::{fnv1a, FNV_BASIS};
pub use history::{ExecHistory, ExecHistoryStats, ExecObservation};
pub use identity::FileIdentity;
pub use image::{ContainerImage, ImageIndexProgress, ImageSource, ImageVerdict};
pub use listing::ProcessEntry;
pub use random::SplitMix64;
pub use redact::{redact_cmdline, REDACTED};
pub use report::{
    short_id, Capabilities, CapabilityMasks, CapabilityName, CapabilitySet, CgroupDriver,
    CgroupVersion, Confinement, Container, DeviceAccess, FileEntry, FsEventSource, FsEventStats,
    Ids, Layer, Limits, MountRef, Namespaces, PodRef, Process, QosClass, Report, Runtime,
    ScanStats, Script, SeccompMode, Timestamp, SCHEMA_VERSION, SHORT_ID_LEN,
};
pub use rootfs::{OverlayLayers, RootFs};
pub use state::{
    DurationHistogram, EventStats, ExecEventSource, ExecEventStats, FindingChanges, FindingLedger,
    NoPods, NodeState, Outcomes, PodLookup, PolicyReportStats, ScanKind, ScanRun, ScanTotals,
    Totals, TrackedFinding, UnheldExecs, SCAN_DURATION_BUCKETS,
};
pub use text::{clean, escape_controls, escape_path, is_bidi_or_invisible, unescape_path};
