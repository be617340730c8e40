//! Who may read the API: a bearer token, checked by an [`Authorizer`] for each request.
//!
//! The agent's authorizer lives in the kube crate (a TokenReview, then a SubjectAccessReview
//! for the request's path and verb `get`, cached briefly); this crate only knows the trait,
//! so tests can put any authorizer in front of the router.
//!
//! - `/healthz` and `/readyz` are never authenticated (the kubelet has no token);
//! - `/v1/*` always is (and so is every other path, even one that is not served);
//! - `/metrics` is unless [`AuthOptions::protect_metrics`] is `false`.
//!
//! Answers: no or malformed `Authorization: Bearer` header, or a token the authorizer does
//! not accept → 401 with `WWW-Authenticate: Bearer`; a valid token without the permission →
//! 403; an authorizer that cannot decide (API server down, slow, failing) → 503. All three
//! in the API's JSON error shape.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What an [`Authorizer`] decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The token is valid and its user may `get` the path; `user` is logged.
    Allowed { user: String },
    /// The token is not valid (unknown, expired, wrong audience): 401.
    Unauthenticated { reason: String },
    /// The token is valid but its user may not read the path: 403.
    Forbidden { user: String, reason: String },
    /// No decision could be made (the API server is down, slow or failing): 503.
    Unavailable { reason: String },
}

/// A boxed future, so the trait stays object-safe without extra crates.
pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

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
}

impl AuthOptions {
    pub fn new(authorizer: Arc<dyn Authorizer>) -> AuthOptions {
        AuthOptions {
            authorizer,
            protect_metrics: true,
            timeout: Duration::from_secs(8),
        }
    }

    /// Whether a request to `path` needs a token: everything but the two probes (and
    /// `/metrics` when it is not protected), so an odd spelling of a path (`//v1/report`)
    /// never slips past.
    pub fn protects(&self, path: &str) -> bool {
        !(path == "/healthz" || path == "/readyz" || (!self.protect_metrics && path == "/metrics"))
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
}
