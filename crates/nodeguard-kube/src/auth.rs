//! Who may read the agent's API: a TokenReview authenticates the bearer token, a
//! SubjectAccessReview authorizes the request, as kube-rbac-proxy does in front of
//! node-exporter.
//!
//! **The attribute checked** is the non-resource URL of the request with verb `get`: a user
//! may read `/v1/findings` when RBAC grants `nonResourceURLs: ["/v1/*"]` (or the exact path)
//! `verbs: ["get"]`, and `/metrics` when it grants `nonResourceURLs: ["/metrics"]` — exactly
//! what Prometheus's usual ClusterRole already holds. (A non-resource URL is cluster-wide:
//! a grant covers every node's agent. Per-node grants would need a resource attribute such
//! as `nodes/proxy`, which also opens the kubelet's exec API, so it is not used.)
//!
//! Decisions are cached per (token, path) in a bounded map: allowed for
//! [`AuthConfig::allowed_ttl`] (1 min), denied and invalid for [`AuthConfig::denied_ttl`]
//! (10 s), like the API server's own webhook caches but shorter. Failures (API server down,
//! slow, 5xx) are never cached. Each review has a timeout ([`AuthConfig::review_timeout`]),
//! and at most [`AuthConfig::max_concurrent_reviews`] run at once, so a flood of made-up
//! tokens cannot turn the agent into an amplifier against the API server.
//!
//! The agent needs `authentication.k8s.io tokenreviews create` and `authorization.k8s.io
//! subjectaccessreviews create` (manifests/clusterrole.yaml).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What the API server said about one request. (The agent maps it onto the API crate's
/// `Decision`: sinks do not depend on each other.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The token is valid and `user` may `get` the path.
    Allowed { user: String },
    /// The token is not valid: 401.
    Unauthenticated { reason: String },
    /// The token is valid but `user` may not `get` the path: 403.
    Forbidden { user: String, reason: String },
    /// No decision (API server down, slow, failing, or the agent lacks the grants): 503.
    Unavailable { reason: String },
}

/// Tuning of [`KubeAuthorizer`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// How long an allowed (token, path) is remembered.
    pub allowed_ttl: Duration,
    /// How long a denied (token, path) or an invalid token is remembered.
    pub denied_ttl: Duration,
    /// Most (token, path) decisions remembered; the oldest go first when full.
    pub max_cache_entries: usize,
    /// Longest one TokenReview or SubjectAccessReview may take.
    pub review_timeout: Duration,
    /// Reviews sent at once; further requests wait (within the API's request timeout).
    pub max_concurrent_reviews: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allowed_ttl: Duration::from_secs(60),
            denied_ttl: Duration::from_secs(10),
            max_cache_entries: 1024,
            review_timeout: Duration::from_secs(3),
            max_concurrent_reviews: 8,
        }
    }
}

/// Authorizes API requests against the Kubernetes API server.
pub struct KubeAuthorizer {
    client: kube::Client,
    config: AuthConfig,
    cache: Mutex<HashMap<(String, String), (Decision, Instant)>>,
    reviews: Arc<Semaphore>,
}

impl KubeAuthorizer {
    pub fn new(client: kube::Client, config: AuthConfig) -> KubeAuthorizer {
        KubeAuthorizer {
            client,
            reviews: Arc::new(Semaphore::new(config.max_concurrent_reviews.max(1))),
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<Decision> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.get(key) {
            Some((decision, expires)) if *expires > Instant::now() => Some(decision.clone()),
            _ => None,
        }
    }

    fn remember(&self, key: (String, String), decision: &Decision) {
        let ttl = match decision {
            Decision::Allowed { .. } => self.config.allowed_ttl,
            Decision::Unauthenticated { .. } | Decision::Forbidden { .. } => self.config.denied_ttl,
            Decision::Unavailable { .. } => return,
        };
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.config.max_cache_entries {
            cache.retain(|_, (_, expires)| *expires > now);
        }
        while cache.len() >= self.config.max_cache_entries.max(1) {
            let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            cache.remove(&oldest);
        }
        cache.insert(key, (decision.clone(), now + ttl));
    }

    /// Reviews one request without the cache.
    async fn review(&self, token: &str, path: &str) -> Decision {
        let Ok(_permit) = self.reviews.acquire().await else {
            return unavailable("the review queue is closed");
        };
        let user = match self.token_review(token).await {
            Ok(user) => user,
            Err(decision) => return decision,
        };
        self.access_review(user, path).await
    }

    async fn token_review(&self, token: &str) -> Result<UserInfo, Decision> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = self
            .bounded("TokenReview", api.create(&PostParams::default(), &review))
            .await?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let reason = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the API server does not know this token".to_string());
            return Err(Decision::Unauthenticated { reason });
        }
        status.user.ok_or_else(|| Decision::Unauthenticated {
            reason: "the TokenReview named no user".to_string(),
        })
    }

    async fn access_review(&self, user: UserInfo, path: &str) -> Decision {
        let name = user.username.clone().unwrap_or_default();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some("get".to_string()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = match self
            .bounded(
                "SubjectAccessReview",
                api.create(&PostParams::default(), &review),
            )
            .await
        {
            Ok(answer) => answer,
            Err(decision) => return decision,
        };
        let status = answer.status.unwrap_or_default();
        if status.allowed {
            return Decision::Allowed { user: name };
        }
        let reason = status
            .reason
            .filter(|r| !r.is_empty())
            .or(status.evaluation_error.filter(|e| !e.is_empty()))
            .unwrap_or_else(|| format!("RBAC grants no get on the non-resource URL {path}"));
        Decision::Forbidden { user: name, reason }
    }

    /// Runs one review call within the review timeout; failures become `Unavailable`.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Decision> {
        match tokio::time::timeout(self.config.review_timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(unavailable(&format!("the {what} failed: {err}"))),
            Err(_) => Err(unavailable(&format!(
                "the API server did not answer the {what} within {:?}",
                self.config.review_timeout
            ))),
        }
    }
}

fn unavailable(reason: &str) -> Decision {
    Decision::Unavailable {
        reason: reason.to_string(),
    }
}

impl KubeAuthorizer {
    /// Whether the bearer `token` may `get` `path`: from the cache, else a TokenReview and a
    /// SubjectAccessReview.
    pub async fn authorize(&self, token: &str, path: &str) -> Decision {
        let key = (token.to_string(), path.to_string());
        if let Some(decision) = self.cached(&key) {
            return decision;
        }
        let decision = self.review(token, path).await;
        self.remember(key, &decision);
        decision
    }
}

/// The bearer token of the current kubeconfig user (`KUBECONFIG` or `~/.kube/config`): its
/// `token`, else the contents of its `tokenFile`. `None` when there is no kubeconfig or its
/// user authenticates otherwise (client certificates, exec plugins).
pub fn kubeconfig_token() -> Option<String> {
    let config = kube::config::Kubeconfig::read().ok()?;
    let context_name = config.current_context.as_deref()?;
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .as_ref()?;
    let user_name = context.user.as_deref()?;
    let user = config
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)?
        .auth_info
        .as_ref()?;
    if let Some(token) = &user.token {
        use secrecy::ExposeSecret;
        return Some(token.expose_secret().trim().to_string()).filter(|t| !t.is_empty());
    }
    let file = user.token_file.as_deref()?;
    std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}
