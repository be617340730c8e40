//! What an authorizer decided about one request to the agent's API. Defined here, in the crate
//! every other depends on, so the kube crate's TokenReview/SubjectAccessReview authorizer and
//! the API crate's router speak one type without depending on each other.

/// What an authorizer decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDecision {
    /// The token is valid and its user may `get` the path; `user` is logged.
    Allowed { user: String },
    /// The token is not valid (unknown, expired, wrong audience): 401.
    Unauthenticated { reason: String },
    /// The token is valid but its user may not read the path: 403.
    Forbidden { user: String, reason: String },
    /// No decision could be made (the API server is down, slow or failing, or the agent lacks
    /// the review grants): 503.
    Unavailable { reason: String },
}
