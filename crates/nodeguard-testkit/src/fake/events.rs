//! Event creates and patches, validated as kube-apiserver v1.20.2 validates them, then
//! against nodeguard's own contract.

use super::answer::{answer, fault, Refusal, Reply, NAMESPACE_MISMATCH};
use super::names::{is_camel_reason, is_dns_label, is_dns_subdomain};
use super::App;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

/// Which Event API a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    /// `/api/v1/namespaces/NS/events`
    Core,
    /// `/apis/events.k8s.io/v1/namespaces/NS/events`
    Events,
}

/// An Event create (`name` None) or patch.
pub(super) async fn event_write(
    app: &App,
    seq: usize,
    api: Api,
    ns: &str,
    name: Option<String>,
    body: Value,
) -> Response {
    let mode = app.lock().event_mode;
    if let Some(faulted) = fault(app, seq, mode).await {
        return faulted;
    }
    answer(app, seq, write_event(app, api, ns, name, body))
}

fn write_event(
    app: &App,
    api: Api,
    ns: &str,
    name: Option<String>,
    body: Value,
) -> Result<Reply, Refusal> {
    if body.is_null() {
        return Err(Refusal::bad_request("the body is not JSON"));
    }
    let mut guard = app.lock();
    let inner = &mut *guard;
    let node = inner.node.clone();
    let refused = |why: String| {
        if why == NAMESPACE_MISMATCH {
            Refusal::bad_request(why)
        } else {
            Refusal::invalid(why)
        }
    };
    match name {
        None => {
            let mut event = body;
            validate(api, ns, &node, &mut event).map_err(refused)?;
            let name = event["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = (ns.to_string(), name.clone());
            let event = inner
                .events
                .create(&mut inner.rv, key, "events", &name, "event", event)?;
            Ok(Reply::Stored(StatusCode::CREATED, event))
        }
        Some(name) => {
            let key = (ns.to_string(), name.clone());
            let old = inner.events.get(&key, "events", &name)?.clone();
            let mut merged = old.clone();
            merge_patch(&mut merged, &body);
            let invalid = validate(api, ns, &node, &mut merged).err().or_else(|| {
                [
                    "reason",
                    "note",
                    "type",
                    "action",
                    "regarding",
                    "related",
                    "reportingController",
                    "reportingInstance",
                    "eventTime",
                ]
                .into_iter()
                .find(|field| old[*field] != merged[*field])
                .map(|field| format!("{field}: field is immutable"))
            });
            if let Some(why) = invalid {
                return Err(Refusal::invalid(why));
            }
            let merged = inner.events.replace(&mut inner.rv, key, merged)?;
            Ok(Reply::Stored(StatusCode::OK, merged))
        }
    }
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Answers of the real kube-apiserver v1.20.2 (the real-node bed, `tests/realnode/up.sh
/// --no-kubelet`; curl with the admin and agent tokens, the agent bound to this branch's
/// `manifests/clusterrole.yaml`) to the requests `crates/nodeguard-kube/tests/events.rs`
/// `the_fake_refuses_what_a_real_api_server_refuses` sends; the fake answers the same.
///
/// | request | real answer |
/// | --- | --- |
/// | agent: core/v1 Pod Event in `shop` | 201 |
/// | agent: core/v1 Node Event (no eventTime) in `default` | 201 |
/// | admin: events.k8s.io/v1 Node Event in `default` | 422 `Event "node-a.1" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace` |
/// | admin: events.k8s.io/v1 Node Event in `kube-system` | 201 |
/// | admin: core/v1 Node Event in `kube-system` | 422 `Event "x.ks" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace` |
/// | admin: core/v1 Event about Pod `shop/web-0` in `other` | 422 `Event "x.other" is invalid: involvedObject.namespace: Invalid value: "shop": does not match event.namespace` |
/// | admin: core/v1 Node Event with eventTime in `default` | 422 `Event "x.timed" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace` |
/// | admin: core/v1 Event without a name | 422 `Event "" is invalid: metadata.name: Required value: name or generateName is required` |
/// | admin: body namespace `other`, path `shop` | 400 `the namespace of the provided object does not match the namespace sent on the request` |
/// | agent: events.k8s.io/v1 create in `shop` | 403 `events.events.k8s.io is forbidden: User "nodeguard-agent" cannot create resource "events" in API group "events.k8s.io" in the namespace "shop"` |
/// | agent: list core events, all namespaces | 403 `events is forbidden: User "nodeguard-agent" cannot list resource "events" in API group "" at the cluster scope` |
///
/// And `kubectl describe node` (v1.20.2) lists only Node Events whose `involvedObject.uid` is
/// the node's name (kubelet's convention): with the real uid or none they do not show.
pub const REAL_V1_20_2_ANSWERS: () = ();

/// What v1.20.2 checks of an Event (`ValidateEventCreate` after conversion to the internal
/// type, where `regarding` is `involvedObject` and `note` is `message`), then nodeguard's
/// contract. Fills in metadata.namespace from the path as the server does. The message is
/// the server's: `Event "NAME" is invalid: FIELD: ...`.
fn validate(api: Api, path_ns: &str, node: &str, ev: &mut Value) -> Result<(), String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let name = s(&ev["metadata"]["name"]).unwrap_or_default();
    // The real one says `Event "NAME"` for both APIs (the internal kind).
    let kind_name = format!("Event {name:?}");
    let invalid = |why: String| format!("{kind_name} is invalid: {why}");
    let (want_version, involved_field, message_field) = match api {
        Api::Core => ("v1", "involvedObject", "message"),
        Api::Events => ("events.k8s.io/v1", "regarding", "note"),
    };
    if s(&ev["apiVersion"]).as_deref() != Some(want_version) {
        return Err(format!(
            "apiVersion {} is not {want_version}",
            ev["apiVersion"]
        ));
    }
    if s(&ev["kind"]).as_deref() != Some("Event") {
        return Err(format!("kind {} is not Event", ev["kind"]));
    }
    if name.is_empty() {
        return Err(invalid(
            "metadata.name: Required value: name or generateName is required".into(),
        ));
    }
    match s(&ev["metadata"]["namespace"]) {
        None => ev["metadata"]["namespace"] = json!(path_ns),
        Some(ns) if ns == path_ns => {}
        Some(_) => return Err(NAMESPACE_MISMATCH.into()),
    }
    let involved = ev[involved_field].clone();
    let involved_ns = s(&involved["namespace"]).unwrap_or_default();
    let event_time = s(&ev["eventTime"]).filter(|t| !t.is_empty());
    // legacyValidateEvent: the namespace rule depends on whether the Event is new-style.
    if event_time.is_none() {
        let ok = if involved_ns.is_empty() {
            path_ns.is_empty() || path_ns == "default"
        } else {
            path_ns == involved_ns
        };
        if !ok {
            return Err(invalid(format!(
                "involvedObject.namespace: Invalid value: {involved_ns:?}: does not match event.namespace"
            )));
        }
    } else {
        // Before 1.20.12 / 1.21.6 / 1.22.3: kube-system only (kubernetes/kubernetes#100125).
        if involved_ns.is_empty() && path_ns != "kube-system" {
            return Err(invalid(
                "involvedObject.namespace: Invalid value: \"\": does not match event.namespace"
                    .into(),
            ));
        }
        for (field, key, max) in [
            ("reportingController", "reportingController", 0),
            ("reportingInstance", "reportingInstance", 128),
            ("action", "action", 128),
            ("reason", "reason", 128),
        ] {
            let value = s(&ev[key]).unwrap_or_default();
            if value.is_empty() {
                return Err(invalid(format!("{field}: Required value")));
            }
            if max > 0 && value.len() > max {
                return Err(invalid(format!(
                    "{field}: Invalid value: \"\": can have at most {max} characters"
                )));
            }
        }
        if let Some(note) = ev[message_field].as_str() {
            if note.len() > 1024 {
                return Err(invalid(
                    "message: Invalid value: \"\": can have at most 1024 characters".into(),
                ));
            }
        }
    }
    if !is_dns_subdomain(path_ns) {
        return Err(invalid(format!("namespace: Invalid value: {path_ns:?}")));
    }
    if api == Api::Events {
        // The strict checks a request to events.k8s.io/v1 adds.
        if !is_dns_subdomain(&name) {
            return Err(invalid(format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'")));
        }
        if event_time.is_none() {
            return Err(invalid("eventTime: Required value".into()));
        }
        let type_ = s(&ev["type"]).unwrap_or_default();
        if type_ != "Normal" && type_ != "Warning" {
            return Err(invalid(format!(
                "type: Invalid value: \"\": has invalid value: {type_}"
            )));
        }
        for (unset, field) in [
            ("deprecatedFirstTimestamp", "firstTimestamp"),
            ("deprecatedLastTimestamp", "lastTimestamp"),
            ("deprecatedCount", "count"),
            ("deprecatedSource", "source"),
        ] {
            if !ev[unset].is_null() {
                return Err(invalid(format!(
                    "{field}: Invalid value: \"\": needs to be unset"
                )));
            }
        }
        if !ev["series"].is_null() {
            if ev["series"]["count"].as_i64().unwrap_or(0) < 2 {
                return Err(invalid(
                    "series.count: Invalid value: \"\": should be at least 2".into(),
                ));
            }
            if s(&ev["series"]["lastObservedTime"]).is_none_or(|t| t.is_empty()) {
                return Err(invalid("series.lastObservedTime: Required value".into()));
            }
        }
    }
    contract(api, path_ns, node, ev).map_err(|why| format!("nodeguard contract: {why}"))
}

/// What nodeguard promises of its Events beyond what the API server checks: a real server
/// would take an Event that breaks these, the tests would not.
fn contract(api: Api, path_ns: &str, node: &str, ev: &Value) -> Result<(), String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let name = s(&ev["metadata"]["name"]).unwrap_or_default();
    if !is_dns_subdomain(&name) {
        return Err(format!("metadata.name {name:?} is not a DNS subdomain"));
    }
    let (controller_key, involved_key, note_key) = match api {
        Api::Core => ("reportingComponent", "involvedObject", "message"),
        Api::Events => ("reportingController", "regarding", "note"),
    };
    let controller = s(&ev[controller_key]).unwrap_or_default();
    if controller != "nodeguard" {
        return Err(format!("{controller_key} {controller:?} is not nodeguard"));
    }
    let instance = s(&ev["reportingInstance"]).unwrap_or_default();
    if instance != node {
        return Err(format!(
            "reportingInstance {instance:?} is not the node's name {node:?}"
        ));
    }
    if api == Api::Core {
        if !ev["eventTime"].is_null() {
            return Err("eventTime is set: nodeguard sends legacy core/v1 Events".into());
        }
        if s(&ev["source"]["component"]).as_deref() != Some("nodeguard")
            || s(&ev["source"]["host"]).as_deref() != Some(node)
        {
            return Err(format!(
                "source {} is not nodeguard on {node}",
                ev["source"]
            ));
        }
        if ev["count"].as_i64().unwrap_or(0) < 1
            || s(&ev["firstTimestamp"]).is_none()
            || s(&ev["lastTimestamp"]).is_none()
        {
            return Err("count, firstTimestamp and lastTimestamp are kubelet's shape".into());
        }
    }
    let action = s(&ev["action"]).unwrap_or_default();
    if action != "Scan" {
        return Err(format!("action {action:?} is not Scan"));
    }
    let reason = s(&ev["reason"]).unwrap_or_default();
    if !is_camel_reason(&reason) {
        return Err(format!("reason {reason:?} is not UpperCamelCase"));
    }
    let type_ = s(&ev["type"]).unwrap_or_default();
    if type_ != "Normal" && type_ != "Warning" {
        return Err(format!("type: Unsupported value {type_:?}"));
    }
    match &ev[note_key] {
        Value::String(note) if note.len() > 1024 => {
            return Err(format!(
                "{note_key}: Too long: may not be longer than 1024, has {} bytes",
                note.len()
            ))
        }
        Value::String(_) | Value::Null => {}
        _ => return Err(format!("{note_key} is not a string")),
    }
    let regarding = &ev[involved_key];
    for field in ["kind", "name", "apiVersion"] {
        if s(&regarding[field]).is_none_or(|v| v.is_empty()) {
            return Err(format!("{involved_key}.{field}: Required value"));
        }
    }
    let regarding_ns = s(&regarding["namespace"]).unwrap_or_default();
    match s(&regarding["kind"]).unwrap_or_default().as_str() {
        "Pod" => {
            if regarding_ns != path_ns || !is_dns_label(&regarding_ns) {
                return Err(format!(
                    "{involved_key}.namespace {regarding_ns:?} is not the Event's namespace {path_ns:?}"
                ));
            }
            if s(&regarding["uid"]).is_none_or(|u| u.is_empty()) {
                return Err(format!("{involved_key}.uid of a Pod is missing"));
            }
        }
        "Node" => {
            if !regarding_ns.is_empty() {
                return Err(format!("{involved_key}.namespace: a Node has no namespace"));
            }
            if path_ns != "default" {
                return Err(format!(
                    "a Node's Event belongs in namespace default (where `kubectl describe node` reads), not {path_ns:?}"
                ));
            }
        }
        other => {
            return Err(format!(
                "{involved_key}.kind {other:?}: nodeguard regards Pods and Nodes only"
            ))
        }
    }
    Ok(())
}
