//! The thin I/O half of the publisher: turns one [`Outgoing`] Event the planner chose into a
//! request to the API server. It holds the client and nothing else that decides; a test swaps
//! the client (a fake API server, or `tower_test::mock`) and the planner never sees it.
//!
//! # Why core/v1 Events
//!
//! kube's `Recorder` writes `events.k8s.io/v1` Events and puts those about cluster-scoped
//! objects (our host findings regard the Node) in namespace `default`. API servers accept a
//! new-style Event (one with `eventTime`) about a cluster-scoped object in `default` only
//! from 1.20.12 / 1.21.6 / 1.22.3 on (kubernetes/kubernetes#100125); older ones refuse it with
//! `involvedObject.namespace: Invalid value: "": does not match event.namespace` and want
//! `kube-system` (kube-rs/kube#870), where `kubectl describe node` does not look. A core/v1
//! Event without `eventTime` (what kubelet sends) goes through the API server's legacy
//! validation, which on every version accepts an Event about a cluster-scoped object in
//! `default` (or with no namespace). So we send that: one request shape for old and new
//! servers, no per-server fallback state, Node Events where `kubectl describe node` reads, and
//! RBAC `create` on core `events` only (each Event has its own name and is never patched).
//!
//! # Names
//!
//! `<object>.<planned, ns hex>.<hash of node, object, key>`: fixed when the planner plans the
//! work, not when a request is sent, so a retry of a create whose answer was lost (a timeout
//! after the API server stored it) asks for the same name and gets `409 AlreadyExists`, which
//! is taken as success instead of leaving two Events for one finding.

use super::render;
use crate::publish::outcome::SendError;
use crate::publish::placement::{Target, TargetKind};
use crate::publish::send::{classify, SendContext};
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp as JiffTimestamp;
use kube::api::PostParams;
use kube::Api;
use nodeguard_model::{fnv1a, FNV_BASIS};
use std::time::SystemTime;

/// The `reportingComponent` and `source.component` of every Event.
pub const REPORTING_CONTROLLER: &str = "nodeguard";
/// The `action` of every Event.
pub(crate) const ACTION: &str = "Scan";
/// Where Events about cluster-scoped objects (the Node) go: where kubelet puts its Node
/// Events and `kubectl describe node` reads them.
pub(crate) const CLUSTER_SCOPED_NAMESPACE: &str = "default";
/// Longest `metadata.name` the API server accepts (a DNS subdomain).
const MAX_NAME: usize = 253;

/// `Warning` or `Normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event as the planner decided it: no client, no clock.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outgoing {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
    pub target: Target,
    pub field_path: Option<String>,
    /// When the planner planned it; with `key`, fixes the Event's name across retries.
    pub planned: SystemTime,
    /// What it announces about its object (`warning/<id>`, `resolved/<id>`, `summary`).
    pub key: String,
}

/// The namespace an Event about `target` is created in.
pub(crate) fn event_namespace(target: &Target) -> &str {
    match (&target.kind, target.namespace.as_deref()) {
        (TargetKind::Pod, Some(ns)) if !ns.is_empty() => ns,
        _ => CLUSTER_SCOPED_NAMESPACE,
    }
}

/// The core/v1 Event for `out`, as kubelet shapes its own: `involvedObject`, `source`,
/// first/last timestamp and `count: 1`, no `eventTime` (which would switch the API server to
/// the new-style validation and its namespace rule for cluster-scoped objects). The
/// `reporting*` fields and `action` are set too, so `kubectl get events -o wide` and the
/// events.k8s.io view name nodeguard.
pub(crate) fn core_event(
    out: &Outgoing,
    instance: &str,
    node_uid: Option<&str>,
    now: JiffTimestamp,
) -> CoreEvent {
    let namespace = event_namespace(&out.target).to_string();
    let suffix = name_suffix(out, instance);
    let stem = name_stem(&out.target.name, MAX_NAME - suffix.len());
    let involved: ObjectReference =
        render::reference(&out.target, out.field_path.as_deref(), node_uid);
    let time = Time(now);
    CoreEvent {
        metadata: ObjectMeta {
            name: Some(format!("{stem}{suffix}")),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(out.reason.clone()),
        message: Some(out.note.clone()),
        type_: Some(out.type_.as_str().to_string()),
        source: Some(EventSource {
            component: Some(REPORTING_CONTROLLER.to_string()),
            host: Some(instance.to_string()),
        }),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        count: Some(1),
        action: Some(ACTION.to_string()),
        reporting_component: Some(REPORTING_CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        event_time: None,
        related: None,
        series: None,
    }
}

/// `.<planned ns, hex>.<16 hex digits of FNV-1a over node, object and key>`: the same for
/// every attempt at one planned Event, different for two Events planned in the same instant
/// (a scan's findings share one planning time).
fn name_suffix(out: &Outgoing, instance: &str) -> String {
    let planned = out
        .planned
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let t = &out.target;
    let parts = [
        instance,
        t.namespace.as_deref().unwrap_or(""),
        &t.name,
        t.uid.as_deref().unwrap_or(""),
        &out.key,
    ];
    let hash = fnv1a(
        FNV_BASIS,
        parts.iter().flat_map(|part| part.bytes().chain([0u8])),
    );
    format!(".{planned:x}.{hash:016x}")
}

/// At most `max` bytes of an object's name (a DNS subdomain, so ASCII; anything else is cut
/// at a char boundary), without a trailing `-` or `.` that would spoil the Event's name.
fn name_stem(name: &str, max: usize) -> &str {
    render::cut(name, max).trim_end_matches(['-', '.'])
}

/// The client and the little it needs to address requests. Cloned into each request's future.
#[derive(Clone)]
pub(crate) struct Sender {
    ctx: SendContext,
    /// `reportingInstance` and `source.host`: the node's name, clipped to the API's 128.
    instance: String,
}

impl Sender {
    pub(crate) fn new(ctx: SendContext, node_name: &str) -> Sender {
        Sender {
            ctx,
            instance: render::clip(node_name, 128),
        }
    }

    /// Creates one Event (never patched). `409 AlreadyExists` means an earlier attempt at this
    /// very Event was stored (its name is fixed per planned Event): success, not an error.
    pub(crate) async fn create(
        &self,
        out: &Outgoing,
        node_uid: Option<&str>,
    ) -> Result<(), SendError> {
        let event = core_event(out, &self.instance, node_uid, JiffTimestamp::now());
        let api: Api<CoreEvent> =
            Api::namespaced(self.ctx.client.clone(), event_namespace(&out.target));
        self.ctx
            .within(async {
                match api.create(&PostParams::default(), &event).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status))
                        if status.code == 409 && status.reason == "AlreadyExists" =>
                    {
                        tracing::debug!(
                            name = event.metadata.name.as_deref().unwrap_or(""),
                            "the Event exists already: an earlier attempt reached the API server"
                        );
                        Ok(())
                    }
                    // Any other 409 (a conflict) is retried, a 404 refused for good: the
                    // planner reads `Conflict` as `Retryable` and `NotFound` as `Permanent`.
                    Err(e) => Err(classify(&e)),
                }
            })
            .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::publish::send::tests::{mock_context, status, Handle};
    use std::time::Duration;

    fn outgoing(target: Target) -> Outgoing {
        Outgoing {
            type_: EventType::Warning,
            reason: "SetuidFile".into(),
            note: "[high] m".into(),
            target,
            field_path: Some("findings{00ff}".into()),
            planned: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            key: "warning/00ff".into(),
        }
    }

    #[test]
    fn node_events_are_legacy_core_events_in_default() {
        let now: JiffTimestamp = "2026-11-26T00:00:00Z".parse().unwrap();
        let ev = core_event(&outgoing(Target::node("node-a")), "node-a", None, now);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["metadata"]["namespace"], "default");
        assert_eq!(json["involvedObject"]["kind"], "Node");
        assert!(json["involvedObject"].get("namespace").is_none(), "{json}");
        // No eventTime: the API server validates it the legacy way, which takes `default`.
        assert!(json.get("eventTime").is_none(), "{json}");
        assert_eq!(json["source"]["component"], "nodeguard");
        assert_eq!(json["count"], 1);
        assert_eq!(json["firstTimestamp"], "2026-11-26T00:00:00Z");
        // Named by when it was planned, not when it is sent.
        let name = json["metadata"]["name"].as_str().unwrap();
        let planned_ns = 1_795_000_000u128 * 1_000_000_000;
        assert!(
            name.starts_with(&format!("node-a.{planned_ns:x}.")),
            "{name}"
        );
        let later = core_event(
            &outgoing(Target::node("node-a")),
            "node-a",
            None,
            "2026-11-26T00:05:00Z".parse().unwrap(),
        );
        assert_eq!(later.metadata.name.as_deref(), Some(name));
        // Another finding planned in the same instant (one scan's findings): another name.
        let mut other = outgoing(Target::node("node-a"));
        other.key = "warning/00fe".into();
        let other = core_event(&other, "node-a", None, now);
        assert_ne!(other.metadata.name.as_deref(), Some(name));
    }

    #[test]
    fn pod_events_go_to_the_pods_namespace_and_names_stay_valid() {
        let pod = Target {
            kind: TargetKind::Pod,
            namespace: Some("shop".into()),
            name: "w".repeat(253),
            uid: Some("u".into()),
        };
        let ev = core_event(&outgoing(pod), "node-a", None, JiffTimestamp::now());
        assert_eq!(ev.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(ev.involved_object.namespace.as_deref(), Some("shop"));
        assert!(ev.metadata.name.unwrap().len() <= MAX_NAME);
    }

    /// The sender against a swapped-in client (`tower_test::mock`): what it asks of the API
    /// server and how it sorts the answers, with no server at all.
    #[tokio::test]
    async fn the_sender_creates_in_the_target_namespace_and_sorts_the_answers() {
        let (sender, mut handle) = mock_sender(Duration::from_secs(5));
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in [201, 422, 503, 429] {
                let (request, respond) = handle.next_request().await.expect("a request");
                let method = request.method().to_string();
                let path = request.uri().path().to_string();
                let body = request.into_body().collect_bytes().await.unwrap();
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                seen.push((method, path, event));
                respond.send_response(match answer {
                    201 => http::Response::builder()
                        .status(201)
                        .body(kube::client::Body::from(body.to_vec()))
                        .unwrap(),
                    422 => status(422, "Invalid"),
                    503 => status(503, "ServiceUnavailable"),
                    _ => status(429, "TooManyRequests"),
                });
            }
            seen
        });
        let node = outgoing(Target::node("node-a"));
        assert_eq!(sender.create(&node, Some("node-a")).await, Ok(()));
        assert!(matches!(
            sender.create(&node, Some("node-a")).await,
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            sender.create(&node, Some("node-a")).await,
            Err(SendError::Retryable(_))
        ));
        let pod = outgoing(Target {
            kind: TargetKind::Pod,
            namespace: Some("shop".into()),
            name: "web-0".into(),
            uid: Some("u".into()),
        });
        assert!(matches!(
            sender.create(&pod, Some("node-a")).await,
            Err(SendError::Retryable(_))
        ));
        let seen = server.await.unwrap();
        let paths: Vec<(&str, &str)> = seen
            .iter()
            .map(|(m, p, _)| (m.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("POST", "/api/v1/namespaces/default/events"),
                ("POST", "/api/v1/namespaces/default/events"),
                ("POST", "/api/v1/namespaces/default/events"),
                ("POST", "/api/v1/namespaces/shop/events"),
            ]
        );
        let first = &seen[0].2;
        assert_eq!(first["involvedObject"]["uid"], "node-a");
        assert_eq!(first["reportingInstance"], "node-a");
        assert!(first.get("eventTime").is_none(), "{first}");
        // Attempts at one planned Event share its name; another object's Event has its own.
        let names: Vec<&str> = seen
            .iter()
            .filter_map(|(_, _, e)| e["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names[0], names[1]);
        assert_eq!(names[0], names[2]);
        assert_ne!(names[0], names[3]);
    }

    /// A fake API server that stores creates by name and answers as kube-apiserver does:
    /// `201` for a new name, `409 AlreadyExists` for a stored one; the first request is
    /// stored but never answered (the answer lost in a timeout). Serves `n` requests and
    /// returns the stored Events' names and every requested name.
    /// A sender for node `node-a` over a mocked API server: the test answers its requests
    /// through the returned handle.
    pub(crate) fn mock_sender(timeout: Duration) -> (Sender, Handle) {
        let (ctx, handle) = mock_context(timeout);
        (Sender::new(ctx, "node-a"), handle)
    }

    pub(crate) fn storing_server(
        mut handle: Handle,
        n: usize,
    ) -> tokio::task::JoinHandle<(Vec<String>, Vec<String>)> {
        tokio::spawn(async move {
            let mut stored = std::collections::BTreeSet::new();
            let mut names = Vec::new();
            let mut unanswered = Vec::new();
            for _ in 0..n {
                let (request, respond) = handle.next_request().await.expect("a request");
                let body = request.into_body().collect_bytes().await.unwrap();
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let name = event["metadata"]["name"].as_str().unwrap().to_string();
                names.push(name.clone());
                if !stored.insert(name) {
                    respond.send_response(status(409, "AlreadyExists"));
                } else if unanswered.is_empty() && names.len() == 1 {
                    unanswered.push(respond);
                } else {
                    respond.send_response(
                        http::Response::builder()
                            .status(201)
                            .body(kube::client::Body::from(body.to_vec()))
                            .unwrap(),
                    );
                }
            }
            (stored.into_iter().collect(), names)
        })
    }

    /// A create that reached the API server but whose answer was lost is retried under the
    /// same name, and the API server's `409 AlreadyExists` counts as sent; another finding
    /// planned in the same instant is a new Event.
    #[tokio::test]
    async fn a_retried_create_that_already_succeeded_meets_already_exists_and_counts_as_sent() {
        let (sender, handle) = mock_sender(Duration::from_millis(300));
        let server = storing_server(handle, 3);
        let out = outgoing(Target::node("node-a"));
        assert!(matches!(
            sender.create(&out, None).await,
            Err(SendError::Retryable(_))
        ));
        assert_eq!(sender.create(&out, None).await, Ok(()));
        let mut other = out.clone();
        other.key = "warning/00fe".into();
        assert_eq!(sender.create(&other, None).await, Ok(()));
        let (stored, names) = server.await.unwrap();
        assert_eq!(names[0], names[1], "the retry asks for the same name");
        assert_eq!(stored.len(), 2, "one Event per finding: {names:?}");
    }
}
