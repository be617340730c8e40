//! The JSON bodies the API answers with, as the client reads them. The server writes the
//! same shapes from borrowed data; `docs/openapi.json` documents them.

use nodeguard_model::{
    Container, ExecHistoryStats, ExecObservation, ScanKind, ScanRun, Timestamp, TrackedFinding,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for humans.
    pub error: String,
    /// The HTTP status, repeated.
    pub status: u16,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz` once a scan completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    pub node: String,
    /// When the report being served was made.
    pub last_scan: Timestamp,
    /// When each kind of scan last completed.
    pub scans: BTreeMap<ScanKind, ScanRun>,
}

/// `GET /v1/findings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingsResponse {
    pub node: String,
    /// When the report these findings come from was made.
    pub scanned_at: Timestamp,
    /// Number of findings that passed the filters.
    pub count: usize,
    /// Open findings, ordered by id.
    pub findings: Vec<TrackedFinding>,
}

/// `GET /v1/containers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainersResponse {
    pub node: String,
    pub scanned_at: Timestamp,
    pub count: usize,
    pub containers: Vec<Container>,
}

/// `GET /v1/processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessesResponse {
    pub node: String,
    pub scanned_at: Timestamp,
    pub count: usize,
    pub processes: Vec<ProcessEntry>,
}

/// `GET /v1/execs`: what exec-time reads saw, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecsResponse {
    pub node: String,
    /// The start of the window asked for (the agent's clock).
    pub since: Option<Timestamp>,
    /// Number of observations that passed the filters.
    pub count: usize,
    /// What the history holds and what its caps dropped since the agent started.
    pub history: ExecHistoryStats,
    pub execs: Vec<ExecObservation>,
}

/// A process and the pod of its container (plain data the table renderer prints too).
pub use nodeguard_model::ProcessEntry;
