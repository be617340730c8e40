//! How a request to the API server ended, as the planners see it: plain values, so a
//! planner decides retries and give-ups without linking the client (`send.rs` sorts the
//! client's errors into these).

/// How a request ended, as far as a planner cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendError {
    /// 5xx, 429, timeouts, transport: again after a backoff.
    Retryable(String),
    /// 404: the object (or the resource: CRDs not installed) is not there.
    NotFound(String),
    /// 409: the object exists already or changed since it was read.
    Conflict(String),
    /// Refused for good (400, 403, 413, 422, ...).
    Permanent(String),
}
