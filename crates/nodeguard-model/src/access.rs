//! What an authorizer decided about one request to the agent's API. Defined here, in the crate
//! every other depends on, so the kube crate's TokenReview/SubjectAccessReview authorizer and
//! the API crate's router speak one type without depending on each other.

/// The longest bearer token the agent's API reviews. Service-account tokens are about 1 KiB,
/// OIDC ID tokens a few; anything longer is refused with 401 before any TokenReview.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

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

/// Why the agent's API refused a request, for `nodeguard_api_denials_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenialReason {
    /// No `Authorization: Bearer` header, or a malformed one: 401.
    MissingToken,
    /// A bearer token over the size any real token has, refused before any review: 401.
    OversizedToken,
    /// A token the API server does not accept: 401.
    InvalidToken,
    /// A valid token without the permission: 403.
    Forbidden,
    /// No decision could be made (API server down, slow, failing): 503.
    Unavailable,
}

impl DenialReason {
    /// Every reason, in the order the metric lists them.
    pub const ALL: [DenialReason; 5] = [
        DenialReason::MissingToken,
        DenialReason::OversizedToken,
        DenialReason::InvalidToken,
        DenialReason::Forbidden,
        DenialReason::Unavailable,
    ];

    /// The metric's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::MissingToken => "missing_token",
            DenialReason::OversizedToken => "oversized_token",
            DenialReason::InvalidToken => "invalid_token",
            DenialReason::Forbidden => "forbidden",
            DenialReason::Unavailable => "unavailable",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Requests the API refused since the agent started, by reason: counted by the API's auth
/// layer, read by the metrics at scrape time (shared through an `Arc`, lock-free).
#[derive(Debug, Default)]
pub struct DenialCounters {
    counts: [std::sync::atomic::AtomicU64; 5],
}

impl DenialCounters {
    /// Counts one refused request.
    pub fn add(&self, reason: DenialReason) {
        self.counts[reason.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refused requests of one reason so far.
    pub fn get(&self, reason: DenialReason) -> u64 {
        self.counts[reason.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every reason's count, in [`DenialReason::ALL`] order.
    pub fn snapshot(&self) -> [u64; 5] {
        DenialReason::ALL.map(|r| self.get(r))
    }
}
