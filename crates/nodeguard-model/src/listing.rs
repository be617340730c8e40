//! Rows of the process listing that `GET /v1/processes` answers with and the text tables
//! print: plain data, shared by the API and the renderer.

use crate::report::{PodRef, Process};
use serde::{Deserialize, Serialize};

/// A process and the pod of its container, when known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEntry {
    #[serde(flatten)]
    pub process: Process,
    /// The Kubernetes identity of the process's container; null for host processes and
    /// containers the agent has no pod metadata for.
    pub pod: Option<PodRef>,
}
