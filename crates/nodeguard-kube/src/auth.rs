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
//! slow, 5xx) are never cached. The cache holds no token: its key is the SHA-256 of the
//! token and path (32 bytes whatever their length), and it is bounded in entries
//! ([`AuthConfig::max_cache_entries`]) and in bytes ([`AuthConfig::max_cache_bytes`]),
//! evicting the oldest entries first, so made-up tokens cannot grow it. A token longer than
//! [`MAX_TOKEN_BYTES`] is refused without a review. Each review has a timeout ([`AuthConfig::review_timeout`]),
//! and at most [`AuthConfig::max_concurrent_reviews`] run at once, so a flood of made-up
//! tokens cannot turn the agent into an amplifier against the API server.
//!
//! **Audiences:** a token is accepted for the API server's own audiences (what Prometheus and
//! `nodeguard query` send) and for [`FLEET_AUDIENCE`] (the narrow tokens `nodeguard fleet
//! query` mints, which the API server itself refuses); see `audiences.rs`. The accepted set
//! is the same for every request, so the cache key stays (token, path).
//!
//! The agent needs `authentication.k8s.io tokenreviews create` and `authorization.k8s.io
//! subjectaccessreviews create` (manifests/clusterrole.yaml).

use crate::audiences::{ReviewPlan, ServerAudiences, FLEET_AUDIENCE};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;
use nodeguard_model::MAX_TOKEN_BYTES;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What the API server said about one request (the model's type, so the API crate's router
/// takes it as it is).
pub use nodeguard_model::AccessDecision;

/// Tuning of [`KubeAuthorizer`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// How long an allowed (token, path) is remembered.
    pub allowed_ttl: Duration,
    /// How long a denied (token, path) or an invalid token is remembered.
    pub denied_ttl: Duration,
    /// Most (token, path) decisions remembered; the oldest go first when full.
    pub max_cache_entries: usize,
    /// Most bytes the remembered decisions take (key, bookkeeping and the decision's
    /// texts); the oldest go first when full.
    pub max_cache_bytes: usize,
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
            max_cache_bytes: 256 * 1024,
            review_timeout: Duration::from_secs(3),
            max_concurrent_reviews: 8,
        }
    }
}

/// Authorizes API requests against the Kubernetes API server.
pub struct KubeAuthorizer {
    client: kube::Client,
    config: AuthConfig,
    cache: Mutex<DecisionCache>,
    reviews: Arc<Semaphore>,
    audiences: ServerAudiences,
}

/// The cache key: SHA-256 of the token, a separator and the path.
type Key = [u8; 32];

fn cache_key(token: &str, path: &str) -> Key {
    nodeguard_hash::sha256_of(&[token.as_bytes(), &[0], path.as_bytes()])
}

struct Cached {
    decision: AccessDecision,
    expires: Instant,
    /// Insertion number: matches the `order` entry that is this one's.
    seq: u64,
    bytes: usize,
}

/// Decisions by key, bounded in entries and bytes; `order` lists keys oldest first (with
/// stale items for keys since removed or replaced, skipped when met).
#[derive(Default)]
struct DecisionCache {
    map: HashMap<Key, Cached>,
    order: VecDeque<(u64, Key)>,
    next_seq: u64,
    bytes: usize,
}

/// What one entry costs: its key and bookkeeping in the map and the queue, and its texts.
fn entry_bytes(decision: &AccessDecision) -> usize {
    let texts = match decision {
        AccessDecision::Allowed { user } => user.len(),
        AccessDecision::Unauthenticated { reason } | AccessDecision::Unavailable { reason } => {
            reason.len()
        }
        AccessDecision::Forbidden { user, reason } => user.len() + reason.len(),
    };
    std::mem::size_of::<(Key, Cached)>() + std::mem::size_of::<(u64, Key)>() + texts
}

impl DecisionCache {
    fn get(&mut self, key: &Key, now: Instant) -> Option<AccessDecision> {
        match self.map.get(key) {
            Some(entry) if entry.expires > now => Some(entry.decision.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.map.remove(key) {
            self.bytes -= entry.bytes;
        }
    }

    /// Drops the oldest entry (and stale queue items before it); `false` when empty.
    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    fn insert(
        &mut self,
        key: Key,
        decision: AccessDecision,
        expires: Instant,
        config: &AuthConfig,
    ) {
        let now = Instant::now();
        let bytes = entry_bytes(&decision);
        self.remove(&key);
        if bytes > config.max_cache_bytes || config.max_cache_entries == 0 {
            return;
        }
        // The oldest first: expired ones at the front go whatever the fill.
        while let Some((seq, front)) = self.order.front().copied() {
            match self.map.get(&front) {
                Some(e) if e.seq == seq && e.expires > now => break,
                Some(e) if e.seq == seq => self.remove(&front),
                _ => {}
            }
            self.order.pop_front();
        }
        while self.map.len() >= config.max_cache_entries
            || self.bytes + bytes > config.max_cache_bytes
        {
            if !self.evict_oldest() {
                break;
            }
        }
        // Stale queue items left between live ones: rebuild before the queue outgrows the
        // map by much.
        if self.order.len() >= 2 * config.max_cache_entries.max(16) {
            let mut live: Vec<(u64, Key)> = self.map.iter().map(|(k, e)| (e.seq, *k)).collect();
            live.sort_unstable();
            self.order = live.into();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, key));
        self.bytes += bytes;
        self.map.insert(
            key,
            Cached {
                decision,
                expires,
                seq,
                bytes,
            },
        );
    }
}

impl KubeAuthorizer {
    pub fn new(client: kube::Client, config: AuthConfig) -> KubeAuthorizer {
        KubeAuthorizer {
            client,
            reviews: Arc::new(Semaphore::new(config.max_concurrent_reviews.max(1))),
            config,
            cache: Mutex::new(DecisionCache::default()),
            audiences: ServerAudiences::default(),
        }
    }

    fn cached(&self, key: &Key) -> Option<AccessDecision> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(key, Instant::now())
    }

    fn remember(&self, key: Key, decision: &AccessDecision) {
        let ttl = match decision {
            AccessDecision::Allowed { .. } => self.config.allowed_ttl,
            AccessDecision::Unauthenticated { .. } | AccessDecision::Forbidden { .. } => {
                self.config.denied_ttl
            }
            AccessDecision::Unavailable { .. } => return,
        };
        let expires = Instant::now() + ttl;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.insert(key, decision.clone(), expires, &self.config);
    }

    /// Reviews one request without the cache.
    async fn review(&self, token: &str, path: &str) -> AccessDecision {
        let Ok(_permit) = self.reviews.acquire().await else {
            return unavailable("the review queue is closed");
        };
        let user = match self.token_review(token).await {
            Ok(user) => user,
            Err(decision) => return decision,
        };
        self.access_review(user, path).await
    }

    /// Authenticates `token` for the API server's own audiences or [`FLEET_AUDIENCE`]
    /// (`audiences.rs` says why and how).
    async fn token_review(&self, token: &str) -> Result<UserInfo, AccessDecision> {
        match self.audiences.plan() {
            ReviewPlan::Once(audiences) => self
                .token_review_for(token, Some(audiences))
                .await
                .map(|(user, _)| user),
            ReviewPlan::DefaultThenFleet => match self.token_review_for(token, None).await {
                Ok((user, named)) => {
                    self.audiences.learn(&named);
                    Ok(user)
                }
                Err(AccessDecision::Unauthenticated { .. }) => self
                    .token_review_for(token, Some(vec![FLEET_AUDIENCE.to_string()]))
                    .await
                    .map(|(user, _)| user),
                Err(other) => Err(other),
            },
        }
    }

    /// One TokenReview: the user and the audiences the answer names.
    async fn token_review_for(
        &self,
        token: &str,
        audiences: Option<Vec<String>>,
    ) -> Result<(UserInfo, Vec<String>), AccessDecision> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences,
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
            return Err(AccessDecision::Unauthenticated { reason });
        }
        let named = status.audiences.unwrap_or_default();
        status
            .user
            .map(|user| (user, named))
            .ok_or_else(|| AccessDecision::Unauthenticated {
                reason: "the TokenReview named no user".to_string(),
            })
    }

    async fn access_review(&self, user: UserInfo, path: &str) -> AccessDecision {
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
            return AccessDecision::Allowed { user: name };
        }
        let reason = status
            .reason
            .filter(|r| !r.is_empty())
            .or(status.evaluation_error.filter(|e| !e.is_empty()))
            .unwrap_or_else(|| format!("RBAC grants no get on the non-resource URL {path}"));
        AccessDecision::Forbidden { user: name, reason }
    }

    /// Runs one review call within the review timeout; failures become `Unavailable`.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, AccessDecision> {
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

fn unavailable(reason: &str) -> AccessDecision {
    AccessDecision::Unavailable {
        reason: reason.to_string(),
    }
}

impl KubeAuthorizer {
    /// Whether the bearer `token` may `get` `path`: from the cache, else a TokenReview and a
    /// SubjectAccessReview.
    pub async fn authorize(&self, token: &str, path: &str) -> AccessDecision {
        if token.len() > MAX_TOKEN_BYTES {
            return AccessDecision::Unauthenticated {
                reason: format!(
                    "the bearer token is {} bytes, more than any Kubernetes token ({MAX_TOKEN_BYTES} at most)",
                    token.len()
                ),
            };
        }
        let key = cache_key(token, path);
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

#[cfg(test)]
mod tests {
    //! Against a fake API server that answers TokenReview and SubjectAccessReview as
    //! kube-apiserver does (and rejects what it rejects), plus its fault modes: down, slow,
    //! failing. `tests/api_auth.rs` runs the same path against the real kube-apiserver.

    use super::*;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::{json, Value};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Normal,
        Slow,
        Failing,
    }

    #[derive(Clone)]
    struct Fake {
        mode: Arc<Mutex<Mode>>,
        calls: Arc<AtomicUsize>,
        /// TokenReviews that named audiences.
        reviews_with_audiences: Arc<AtomicUsize>,
    }

    async fn token_review(
        State(fake): State<Fake>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        fake.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *fake.mode.lock().unwrap();
        match mode {
            Mode::Slow => tokio::time::sleep(Duration::from_secs(30)).await,
            Mode::Failing => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(status_body(500, "etcd down")),
                )
            }
            Mode::Normal => {}
        }
        if body["apiVersion"] != "authentication.k8s.io/v1" || body["kind"] != "TokenReview" {
            return (
                StatusCode::BAD_REQUEST,
                Json(status_body(400, "not a TokenReview")),
            );
        }
        let Some(token) = body["spec"]["token"].as_str().filter(|t| !t.is_empty()) else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(status_body(422, "spec.token: Required value")),
            );
        };
        // As kube-apiserver: a token is valid for the audiences it was minted for (the API
        // server's own by default); asked for none, the API server's are checked. The answer
        // names the intersection.
        const SERVER: &str = "https://kubernetes.default.svc";
        let asked: Vec<String> = match body["spec"]["audiences"].as_array() {
            Some(list) => {
                fake.reviews_with_audiences.fetch_add(1, Ordering::SeqCst);
                list.iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            }
            None => vec![SERVER.to_string()],
        };
        let (user, minted_for) = match token {
            "admin-token" => (
                json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]}),
                SERVER,
            ),
            "prom-token" => (
                json!({"username": "prom", "uid": "u-1", "groups": ["system:authenticated"]}),
                SERVER,
            ),
            "fleet-token" => (
                json!({"username": "system:serviceaccount:nodeguard:nodeguard-responder", "groups": ["system:masters"]}),
                "nodeguard",
            ),
            // kube-apiserver leaves `authenticated` out and says why.
            _ => (Value::Null, ""),
        };
        let status = if user.is_null() {
            json!({"user": {}, "error": "invalid bearer token"})
        } else if asked.iter().any(|a| a == minted_for) {
            json!({"authenticated": true, "user": user, "audiences": [minted_for]})
        } else {
            json!({"user": {}, "error": "token audiences [\"x\"] is invalid for the target audiences"})
        };
        let mut answer = body.clone();
        answer["status"] = status;
        (StatusCode::CREATED, Json(answer))
    }

    async fn access_review(
        State(fake): State<Fake>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        fake.calls.fetch_add(1, Ordering::SeqCst);
        let spec = &body["spec"];
        if body["kind"] != "SubjectAccessReview" {
            return (
                StatusCode::BAD_REQUEST,
                Json(status_body(400, "not a SubjectAccessReview")),
            );
        }
        if spec["user"].as_str().unwrap_or("").is_empty()
            && spec["groups"].as_array().is_none_or(|g| g.is_empty())
        {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(status_body(
                    422,
                    "at least one of user or group must be specified",
                )),
            );
        }
        let non_resource = &spec["nonResourceAttributes"];
        if non_resource.is_null() == spec["resourceAttributes"].is_null() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(status_body(
                    422,
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )),
            );
        }
        let user = spec["user"].as_str().unwrap_or("");
        let path = non_resource["path"].as_str().unwrap_or("");
        let allowed = non_resource["verb"] == "get"
            && (spec["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == "system:masters"))
                || (user == "prom" && spec["uid"] == "u-1" && path == "/metrics"));
        let mut answer = body.clone();
        answer["status"] = if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed"})
        } else {
            json!({"allowed": false})
        };
        (StatusCode::CREATED, Json(answer))
    }

    fn status_body(code: u16, message: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code})
    }

    async fn fake_server() -> (Fake, String) {
        let fake = Fake {
            mode: Arc::new(Mutex::new(Mode::Normal)),
            calls: Arc::new(AtomicUsize::new(0)),
            reviews_with_audiences: Arc::new(AtomicUsize::new(0)),
        };
        let router = Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .route(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                post(access_review),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (fake, url)
    }

    fn authorizer(url: &str, config: AuthConfig) -> KubeAuthorizer {
        let config_kube = kube::Config::new(url.parse().unwrap());
        KubeAuthorizer::new(kube::Client::try_from(config_kube).unwrap(), config)
    }

    fn quick() -> AuthConfig {
        AuthConfig {
            review_timeout: Duration::from_millis(500),
            denied_ttl: Duration::from_millis(300),
            ..AuthConfig::default()
        }
    }

    #[tokio::test]
    async fn tokens_are_reviewed_then_the_non_resource_url_is_authorized() {
        let (_fake, url) = fake_server().await;
        let auth = authorizer(&url, quick());
        assert_eq!(
            auth.authorize("admin-token", "/v1/report").await,
            AccessDecision::Allowed {
                user: "admin".into()
            }
        );
        assert_eq!(
            auth.authorize("prom-token", "/metrics").await,
            AccessDecision::Allowed {
                user: "prom".into()
            }
        );
        match auth.authorize("prom-token", "/v1/processes").await {
            AccessDecision::Forbidden { user, reason } => {
                assert_eq!(user, "prom");
                assert!(reason.contains("/v1/processes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match auth.authorize("stolen", "/v1/report").await {
            AccessDecision::Unauthenticated { reason } => {
                assert!(reason.contains("invalid bearer token"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn fleet_tokens_and_the_api_servers_own_are_both_accepted_in_one_review_once_learned() {
        let (fake, url) = fake_server().await;
        let auth = authorizer(&url, quick());
        // Before any answer named the API server's audiences: the default review refuses
        // the fleet token, the one for the fleet audience accepts it.
        assert_eq!(
            auth.authorize("fleet-token", "/v1/processes").await,
            AccessDecision::Allowed {
                user: "system:serviceaccount:nodeguard:nodeguard-responder".into()
            }
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3, "two reviews, one SAR");
        assert_eq!(fake.reviews_with_audiences.load(Ordering::SeqCst), 1);
        // An ordinary token teaches the API server's audience …
        assert!(matches!(
            auth.authorize("admin-token", "/v1/report").await,
            AccessDecision::Allowed { .. }
        ));
        // … after which each token takes one review naming both.
        fake.calls.store(0, Ordering::SeqCst);
        fake.reviews_with_audiences.store(0, Ordering::SeqCst);
        for (token, path) in [("fleet-token", "/v1/findings"), ("prom-token", "/metrics")] {
            assert!(
                matches!(
                    auth.authorize(token, path).await,
                    AccessDecision::Allowed { .. }
                ),
                "{token}"
            );
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert_eq!(fake.reviews_with_audiences.load(Ordering::SeqCst), 2);
        assert!(matches!(
            auth.authorize("stolen", "/v1/report").await,
            AccessDecision::Unauthenticated { .. }
        ));
    }

    #[tokio::test]
    async fn decisions_are_cached_briefly_and_failures_never() {
        let (fake, url) = fake_server().await;
        let auth = authorizer(&url, quick());
        auth.authorize("admin-token", "/v1/report").await;
        let after_first = fake.calls.load(Ordering::SeqCst);
        assert_eq!(
            after_first, 2,
            "one TokenReview and one SubjectAccessReview"
        );
        auth.authorize("admin-token", "/v1/report").await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "an allowed decision is cached"
        );
        auth.authorize("admin-token", "/v1/findings").await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4, "per path");

        auth.authorize("stolen", "/v1/report").await;
        auth.authorize("stolen", "/v1/report").await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            5,
            "an invalid token is cached too"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        auth.authorize("stolen", "/v1/report").await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            6,
            "and expires after denied_ttl"
        );

        *fake.mode.lock().unwrap() = Mode::Failing;
        assert!(matches!(
            auth.authorize("prom-token", "/metrics").await,
            AccessDecision::Unavailable { .. }
        ));
        *fake.mode.lock().unwrap() = Mode::Normal;
        assert_eq!(
            auth.authorize("prom-token", "/metrics").await,
            AccessDecision::Allowed {
                user: "prom".into()
            },
            "a failure is not remembered"
        );
    }

    #[tokio::test]
    async fn the_cache_is_bounded_in_entries_and_bytes_and_holds_no_token() {
        let (_fake, url) = fake_server().await;
        let auth = authorizer(
            &url,
            AuthConfig {
                max_cache_entries: 8,
                ..quick()
            },
        );
        for i in 0..50 {
            auth.authorize(&format!("made-up-{i}"), "/v1/report").await;
        }
        assert!(auth.cache.lock().unwrap().map.len() <= 8);

        // Tokens just under the size bound, on long paths: the keys stay 32 bytes and the
        // bytes bound holds, however many distinct ones come.
        let config = AuthConfig {
            max_cache_bytes: 16 * 1024,
            ..quick()
        };
        let auth = authorizer(&url, config.clone());
        let long_path = format!("/v1/{}", "p".repeat(4000));
        for i in 0..200 {
            let token = format!("{i:04}{}", "t".repeat(MAX_TOKEN_BYTES - 4));
            assert!(matches!(
                auth.authorize(&token, &long_path).await,
                AccessDecision::Unauthenticated { .. }
            ));
            let cache = auth.cache.lock().unwrap();
            assert!(
                cache.bytes <= config.max_cache_bytes,
                "{} bytes cached",
                cache.bytes
            );
            let counted: usize = cache.map.values().map(|e| e.bytes).sum();
            assert_eq!(counted, cache.bytes);
            assert!(cache.order.len() <= 2 * config.max_cache_entries);
        }
        let cache = auth.cache.lock().unwrap();
        assert!(!cache.map.is_empty(), "small decisions are still cached");
        for entry in cache.map.values() {
            if let AccessDecision::Unauthenticated { reason } = &entry.decision {
                assert!(!reason.contains("tttt"), "the token is not kept: {reason}");
            }
        }
    }

    #[tokio::test]
    async fn the_oldest_decisions_are_evicted_first() {
        let (fake, url) = fake_server().await;
        let auth = authorizer(
            &url,
            AuthConfig {
                max_cache_entries: 4,
                denied_ttl: Duration::from_secs(60),
                ..quick()
            },
        );
        // A known token first teaches the API server's audiences (one review per token
        // from then on); its entry is the oldest, and goes first.
        auth.authorize("admin-token", "/v1/report").await;
        for i in 0..4 {
            auth.authorize(&format!("made-up-{i}"), "/v1/report").await;
        }
        // A fifth pushes out the first made-up one, and only it.
        auth.authorize("made-up-4", "/v1/report").await;
        let before = fake.calls.load(Ordering::SeqCst);
        for i in 1..5 {
            auth.authorize(&format!("made-up-{i}"), "/v1/report").await;
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            before,
            "the four newest are cached"
        );
        auth.authorize("made-up-0", "/v1/report").await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            before + 1,
            "the oldest was evicted"
        );
    }

    #[tokio::test]
    async fn an_oversized_token_is_refused_without_a_review() {
        let (fake, url) = fake_server().await;
        let auth = authorizer(&url, quick());
        // Audiences learned first, so the token at the bound takes one review.
        auth.authorize("admin-token", "/v1/report").await;
        fake.calls.store(0, Ordering::SeqCst);
        let token = "x".repeat(MAX_TOKEN_BYTES + 1);
        match auth.authorize(&token, "/v1/report").await {
            AccessDecision::Unauthenticated { reason } => {
                assert!(reason.contains("bytes"), "{reason}");
                assert!(!reason.contains("xxxx"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        assert_eq!(auth.cache.lock().unwrap().map.len(), 1, "only the admin's");
        // At the bound it is reviewed as any other.
        auth.authorize(&"x".repeat(MAX_TOKEN_BYTES), "/v1/report")
            .await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_down_slow_or_failing_api_server_is_unavailable_not_a_hang() {
        // Down: nothing listens on the port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        match authorizer(&url, quick())
            .authorize("admin-token", "/v1/report")
            .await
        {
            AccessDecision::Unavailable { reason } => {
                assert!(reason.contains("TokenReview"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let (fake, url) = fake_server().await;
        let auth = authorizer(&url, quick());
        *fake.mode.lock().unwrap() = Mode::Slow;
        match tokio::time::timeout(
            Duration::from_secs(20),
            auth.authorize("admin-token", "/v1/report"),
        )
        .await
        {
            Ok(AccessDecision::Unavailable { reason }) => {
                assert!(reason.contains("within"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        *fake.mode.lock().unwrap() = Mode::Failing;
        match auth.authorize("admin-token", "/v1/report").await {
            AccessDecision::Unavailable { reason } => {
                assert!(reason.contains("etcd down"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
