//! Who may read the API: a bearer token, checked by an [`Authorizer`] for each request.
//!
//! The agent's authorizer lives in the kube crate (a TokenReview, then a SubjectAccessReview
//! for the request's path and verb `get`, cached briefly); this crate only knows the trait,
//! so tests can put any authorizer in front of the router.
//!
//! - `/healthz` and `/readyz` are never authenticated (the kubelet has no token);
//! - `/v1/*` always is (and so is every other path, even one that is not served);
//! - `/metrics` is unless [`AuthOptions::protect_metrics`] is `false`;
//! - nothing is for a loopback peer when [`AuthOptions::loopback_is_pod_private`] is `true`
//!   (the agent runs in a network namespace of its own, so only `kubectl exec`/`port-forward`
//!   into its pod reaches loopback). The serve loop hands each request its connection's peer
//!   as [`axum::extract::ConnectInfo`]; a request without one is authenticated.
//!
//! Answers: no or malformed `Authorization: Bearer` header, or a token the authorizer does
//! not accept → 401 with `WWW-Authenticate: Bearer`; a valid token without the permission →
//! 403; an authorizer that cannot decide (API server down, slow, failing) → 503. All three
//! in the API's JSON error shape. A token longer than [`MAX_TOKEN_BYTES`] is answered 401
//! before the authorizer is asked: no real token is that long, and a made-up one must not
//! cost a review or a cache entry.
//!
//! Refusals are counted by reason in [`AuthOptions::denials`] (the metric
//! `nodeguard_api_denials_total`) and logged through [`DenialLog`]: the first refusal of
//! each interval in full, the rest as one summary line, so a flood of bad requests cannot
//! fill the log and rotate the findings out of it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use nodeguard_model::{DenialCounters, DenialReason, MAX_TOKEN_BYTES};

/// What an [`Authorizer`] decided: the model's type, which the kube crate's authorizer
/// answers with too.
pub use nodeguard_model::AccessDecision;

/// A boxed future, so the trait stays object-safe without extra crates.
pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = AccessDecision> + Send + 'a>>;

/// Decides whether a bearer token may `GET` a path.
pub trait Authorizer: Send + Sync {
    /// `token` is the bearer token without the `Bearer ` prefix; `path` the request's path
    /// (no query). Must answer within its own timeout; the router also gives up after
    /// [`AuthOptions::timeout`] and answers 503.
    fn authorize<'a>(&'a self, token: &'a str, path: &'a str) -> DecisionFuture<'a>;
}

/// How the router authenticates.
#[derive(Clone)]
pub struct AuthOptions {
    pub authorizer: Arc<dyn Authorizer>,
    /// Whether `/metrics` needs a token too (default `true`; `--metrics-auth=false` turns it
    /// off for scrapers that cannot send one).
    pub protect_metrics: bool,
    /// Longest the router waits for a decision before it answers 503.
    pub timeout: Duration,
    /// Whether a loopback peer is inside the agent's pod and needs no token (default
    /// `false`). Only true when the agent does not share the host's network namespace:
    /// with `hostNetwork` every process of the node reaches loopback.
    pub loopback_is_pod_private: bool,
    /// Refused requests by reason, for the metrics (shared with whoever renders them).
    pub denials: Arc<DenialCounters>,
    /// Where refusals are logged, at most a few lines per interval.
    pub denial_log: Arc<DenialLog>,
}

impl AuthOptions {
    pub fn new(authorizer: Arc<dyn Authorizer>) -> AuthOptions {
        AuthOptions {
            authorizer,
            protect_metrics: true,
            timeout: Duration::from_secs(8),
            loopback_is_pod_private: false,
            denials: Arc::new(DenialCounters::default()),
            denial_log: Arc::new(DenialLog::new(DenialLog::DEFAULT_INTERVAL)),
        }
    }

    /// Counts a refused request and logs it through [`AuthOptions::denial_log`].
    pub fn deny(&self, denial: Denial<'_>) {
        self.denials.add(denial.reason);
        self.denial_log.record(&denial);
    }

    /// Whether a request from `peer` (its connection's peer, if known) skips authentication:
    /// only a loopback peer, and only when loopback is private to the agent's pod.
    pub fn trusts_peer(&self, peer: Option<SocketAddr>) -> bool {
        self.loopback_is_pod_private && peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
    }

    /// Whether a request to `path` needs a token: everything but the two probes (and
    /// `/metrics` when it is not protected), so an odd spelling of a path (`//v1/report`)
    /// never slips past.
    pub fn protects(&self, path: &str) -> bool {
        !(path == "/healthz" || path == "/readyz" || (!self.protect_metrics && path == "/metrics"))
    }
}

/// One refused request, as the log describes it.
#[derive(Debug, Clone, Copy)]
pub struct Denial<'a> {
    pub reason: DenialReason,
    pub path: &'a str,
    pub peer: Option<std::net::SocketAddr>,
    /// The user of a valid token, when known.
    pub user: Option<&'a str>,
    /// What the authorizer (or the router) said.
    pub detail: &'a str,
}

/// Logs refused requests without letting them flood the log: the first refusal of each
/// interval is logged in full (so a misconfigured scraper is seen at once), the others of
/// the interval are only counted, and the next refusal after it logs their number by reason
/// in one line. At most two lines per interval, whatever the request rate; the exact
/// totals are in `nodeguard_api_denials_total`.
#[derive(Debug)]
pub struct DenialLog {
    interval: Duration,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    suppressed: [u64; 5],
}

/// Longest path or reason a denial line quotes: both can come from the client.
const LOGGED_CHARS: usize = 200;

impl DenialLog {
    /// One full line per minute.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

    pub fn new(interval: Duration) -> DenialLog {
        DenialLog {
            interval,
            window: Mutex::new(Window::default()),
        }
    }

    /// Writes the summary of the refusals counted but not logged, once their interval is
    /// over, so a flood that stops is still summed up without waiting for the next refusal.
    /// Call it every interval or so (the agent does).
    pub fn flush(&self) {
        let now = Instant::now();
        let suppressed = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let over = window
                .started
                .is_some_and(|started| now.duration_since(started) >= self.interval);
            if !over || window.suppressed.iter().all(|n| *n == 0) {
                return;
            }
            // The next refusal opens a new interval and is logged in full.
            window.started = None;
            std::mem::take(&mut window.suppressed)
        };
        self.summarize(suppressed);
    }

    fn summarize(&self, suppressed: [u64; 5]) {
        let total: u64 = suppressed.iter().sum();
        if total == 0 {
            return;
        }
        let by_reason: Vec<String> = DenialReason::ALL
            .iter()
            .zip(suppressed)
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| format!("{}={n}", reason.as_str()))
            .collect();
        tracing::warn!(
            denied = total,
            by_reason = %by_reason.join(","),
            interval = ?self.interval,
            "API requests refused without a log line each (the first of each interval is logged in full; totals in nodeguard_api_denials_total)"
        );
    }

    /// Logs `denial`, or only counts it when a line was written within the interval.
    pub fn record(&self, denial: &Denial<'_>) {
        let now = Instant::now();
        let suppressed = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let open = window
                .started
                .is_some_and(|started| now.duration_since(started) < self.interval);
            if open {
                window.suppressed[denial.reason as usize] += 1;
                return;
            }
            window.started = Some(now);
            std::mem::take(&mut window.suppressed)
        };
        self.summarize(suppressed);
        let path = clip(denial.path);
        let detail = clip(denial.detail);
        let peer = denial.peer.map(|p| p.to_string()).unwrap_or_default();
        let user = denial.user.unwrap_or("");
        let reason = denial.reason.as_str();
        if denial.reason == DenialReason::Unavailable {
            tracing::warn!(%reason, %path, %peer, %detail, "cannot authorize an API request");
        } else {
            tracing::info!(%reason, %path, %peer, %user, %detail, "API request refused");
        }
    }
}

/// `text` cut to [`LOGGED_CHARS`] characters, with a mark when it was cut.
fn clip(text: &str) -> String {
    match text.char_indices().nth(LOGGED_CHARS) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_graphic()))
    .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header_and_nothing_else() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer a b"), None);
    }

    struct Never;
    impl Authorizer for Never {
        fn authorize<'a>(&'a self, _: &'a str, _: &'a str) -> DecisionFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    #[test]
    fn probes_are_open_v1_is_protected_and_metrics_as_configured() {
        let mut options = AuthOptions::new(Arc::new(Never));
        assert!(!options.protects("/healthz"));
        assert!(!options.protects("/readyz"));
        assert!(options.protects("/v1/report"));
        assert!(options.protects("/v1/unknown"));
        assert!(options.protects("//v1/report"));
        assert!(options.protects("/healthz/"));
        assert!(options.protects("/metrics"));
        options.protect_metrics = false;
        assert!(!options.protects("/metrics"));
        assert!(options.protects("/v1/findings"));
    }

    #[test]
    fn only_loopback_peers_are_trusted_and_only_when_loopback_is_pod_private() {
        let peer = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let mut options = AuthOptions::new(Arc::new(Never));
        for p in ["127.0.0.1:4000", "[::1]:4000", "10.0.0.7:4000"] {
            assert!(!options.trusts_peer(peer(p)), "{p} trusted by default");
        }
        options.loopback_is_pod_private = true;
        assert!(options.trusts_peer(peer("127.0.0.1:4000")));
        assert!(options.trusts_peer(peer("127.9.8.7:4000")));
        assert!(options.trusts_peer(peer("[::1]:4000")));
        // A dual-stack listener sees IPv4 loopback as an IPv4-mapped address.
        assert!(options.trusts_peer(peer("[::ffff:127.0.0.1]:4000")));
        for p in [
            "10.0.0.7:4000",
            "0.0.0.0:4000",
            "[::ffff:10.0.0.7]:4000",
            "[fe80::1]:4000",
        ] {
            assert!(!options.trusts_peer(peer(p)), "{p} trusted");
        }
        assert!(
            !options.trusts_peer(None),
            "an unknown peer is never trusted"
        );
    }
}
