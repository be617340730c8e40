//! `wgpolicyk8s.io/v1alpha2` PolicyReports and ClusterPolicyReports in the fake API server.
//!
//! Checked as kube-apiserver v1.20.2 checks custom resources of the CRDs in
//! `manifests/crds/` (read from there, so the fake and the shipped CRDs cannot drift):
//! - the structural schema: types, enums, required fields (422 `Invalid`); fields the schema
//!   does not know are pruned silently, as the real server prunes them;
//! - `metadata.name` a DNS subdomain (422), the namespace of a namespaced object that of the
//!   path (400), none for a cluster-scoped one;
//! - create of an existing name: 409 `AlreadyExists`; update without `resourceVersion`: 422;
//!   with a stale one: 409 `Conflict`; update or delete of a missing object: 404;
//! - a body over 3 MiB: 413 (the API server's request limit); a stored object over 1.5 MiB:
//!   500 `etcdserver: request is too large` (etcd's default request limit);
//! - list (cluster-wide or in a namespace) by equality `labelSelector`.
//!
//! [`ReportsMode::NotInstalled`] answers every request as a server without the CRDs does:
//! 404 with `the server could not find the requested resource`.

use super::answer::{answer, fail500, hang, Refusal, Reply, NAMESPACE_MISMATCH};
use super::names::is_dns_subdomain;
use super::{App, Attributes, FakeApi, Mode};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// How report requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportsMode {
    Normal,
    /// The CRDs are not installed: 404 for everything.
    NotInstalled,
    /// Like [`Mode`]: 500 without looking, or hang until the mode changes.
    Fail(Mode),
}

const MAX_BODY: usize = 3 * 1024 * 1024;

fn crd_schema(resource: &str) -> Value {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../manifests/crds")
        .join(format!("{resource}.yaml"));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let crd: Value = serde_yaml::from_str(&text).expect("the CRD is YAML");
    let version = crd["spec"]["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "v1alpha2"))
        .expect("the CRD serves v1alpha2")
        .clone();
    version["schema"]["openAPIV3Schema"].clone()
}

/// Validates `value` against a structural schema and prunes what it does not know.
fn check(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) -> Value {
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        _ => true,
    };
    if !ok {
        errors.push(format!(
            "{at}: Invalid value: {value}: {at} in body must be of type {ty}"
        ));
        return value.clone();
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!(
                "{at}: Unsupported value: {value}: supported values: {}",
                allowed
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    match value {
        Value::Object(map)
            if at == "metadata" || schema["x-kubernetes-preserve-unknown-fields"] == true =>
        {
            Value::Object(map.clone())
        }
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = required.as_str() {
                    if !map.contains_key(name) {
                        errors.push(format!("{at}.{name}: Required value"));
                    }
                }
            }
            let mut out = Map::new();
            for (k, v) in map {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if let Some(sub) = schema["properties"].get(k) {
                    out.insert(k.clone(), check(sub, v, &here, errors));
                } else if let Some(sub) = schema.get("additionalProperties") {
                    out.insert(k.clone(), check(sub, v, &here, errors));
                }
                // Unknown: pruned.
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| check(&schema["items"], v, &format!("{at}[{i}]"), errors))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn label_matches(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => object["metadata"]["labels"][k.trim_end_matches('=')] == v,
        None => false,
    })
}

const NOT_INSTALLED: &str = "the server could not find the requested resource";

pub(super) async fn handle(
    app: &App,
    seq: usize,
    a: &Attributes,
    query: &BTreeMap<String, String>,
    body_len: usize,
    body: Value,
) -> Response {
    let mode = app.lock().reports_mode;
    let outcome = match mode {
        ReportsMode::Normal => serve(app, a, query, body_len, body),
        ReportsMode::NotInstalled => Err(Refusal::not_found(NOT_INSTALLED)),
        ReportsMode::Fail(Mode::Hang) => return hang(app, seq).await,
        ReportsMode::Fail(_) => return fail500(app, seq),
    };
    answer(app, seq, outcome)
}

fn serve(
    app: &App,
    a: &Attributes,
    query: &BTreeMap<String, String>,
    body_len: usize,
    body: Value,
) -> Result<Reply, Refusal> {
    let resource = a.resource.clone();
    let cluster = resource == "clusterpolicyreports";
    if cluster && a.namespace.is_some() {
        return Err(Refusal::not_found(NOT_INSTALLED));
    }
    let kind = if cluster {
        "ClusterPolicyReport"
    } else {
        "PolicyReport"
    };
    let qualified = format!("{resource}.wgpolicyk8s.io");
    let ns = a.namespace.clone().unwrap_or_default();
    match a.verb.as_str() {
        "list" => {
            let inner = app.lock();
            let items: Vec<Value> = inner
                .reports
                .0
                .iter()
                .filter(|((r, n, _), _)| *r == resource && (a.namespace.is_none() || *n == ns))
                .map(|(_, v)| v.clone())
                .filter(|v| label_matches(v, query.get("labelSelector")))
                .collect();
            Ok(Reply::Served(
                StatusCode::OK,
                json!({
                    "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": format!("{kind}List"),
                    "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items,
                }),
            ))
        }
        "create" | "update" => {
            if body_len > MAX_BODY {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    format!("Request entity too large: limit is {MAX_BODY}"),
                ));
            }
            if body.is_null() {
                return Err(Refusal::bad_request("the body is not JSON"));
            }
            if body["apiVersion"] != "wgpolicyk8s.io/v1alpha2" || body["kind"] != kind {
                return Err(Refusal::bad_request(format!(
                    "the API version or kind in the body ({}, {}) does not match the request",
                    body["apiVersion"], body["kind"]
                )));
            }
            let body_ns = body["metadata"]["namespace"].as_str().unwrap_or("");
            if !cluster && !body_ns.is_empty() && body_ns != ns {
                return Err(Refusal::bad_request(NAMESPACE_MISMATCH));
            }
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            let mut errors = Vec::new();
            if !is_dns_subdomain(&name) {
                errors.push(format!(
                    "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain"
                ));
            }
            if a.verb == "update" && a.name.as_deref() != Some(name.as_str()) {
                return Err(Refusal::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            let mut object = check(&crd_schema(&resource), &body, "", &mut errors);
            if !errors.is_empty() {
                return Err(Refusal::invalid(format!(
                    "{kind}.wgpolicyk8s.io \"{name}\" is invalid: {}",
                    errors.join(", ")
                )));
            }
            if !cluster {
                object["metadata"]["namespace"] = json!(ns);
            }
            let key = (
                resource.clone(),
                if cluster { String::new() } else { ns.clone() },
                name.clone(),
            );
            let mut guard = app.lock();
            let inner = &mut *guard;
            if a.verb == "create" {
                object["metadata"]["creationTimestamp"] = json!("2026-11-26T00:00:00Z");
                let object = inner.reports.create(
                    &mut inner.rv,
                    key,
                    &qualified,
                    &name,
                    "report",
                    object,
                )?;
                return Ok(Reply::Stored(StatusCode::CREATED, object));
            }
            let old = inner.reports.get(&key, &qualified, &name)?;
            let sent = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if sent.is_empty() {
                return Err(Refusal::invalid(
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            if old["metadata"]["resourceVersion"] != sent {
                return Err(Refusal::new(StatusCode::CONFLICT, "Conflict",
                    format!("Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again")));
            }
            object["metadata"]["uid"] = old["metadata"]["uid"].clone();
            object["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            let object = inner.reports.replace(&mut inner.rv, key, object)?;
            Ok(Reply::Stored(StatusCode::OK, object))
        }
        "delete" => {
            let name = a.name.clone().unwrap_or_default();
            let key = (
                resource.clone(),
                if cluster { String::new() } else { ns },
                name.clone(),
            );
            let mut inner = app.lock();
            let object = inner.reports.remove(&key, &qualified, &name)?;
            Ok(Reply::Served(StatusCode::OK, object))
        }
        other => Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the fake does not serve {other} on reports"),
        )),
    }
}

impl FakeApi {
    pub fn set_reports_mode(&self, mode: ReportsMode) {
        self.lock().reports_mode = mode;
        self.release.send_modify(|n| *n += 1);
    }

    /// Stored reports (both kinds), ordered by resource, namespace, name.
    pub fn reports(&self) -> Vec<Value> {
        self.lock().reports.0.values().cloned().collect()
    }

    /// Someone else changes a stored report (a new `resourceVersion`), as another controller
    /// or `kubectl edit` would.
    pub fn touch_report(
        &self,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) {
        let mut inner = self.lock();
        let resource = if namespace.is_some() {
            "policyreports"
        } else {
            "clusterpolicyreports"
        };
        let key = (
            resource.to_string(),
            namespace.unwrap_or("").to_string(),
            name.to_string(),
        );
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(object) = inner.reports.0.get_mut(&key) {
            change(object);
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
    }

    /// Report writes (create, update, delete) the fake accepted, in order.
    pub fn accepted_report_writes(&self) -> Vec<super::Request> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.attributes.as_ref().is_some_and(|a| {
                    a.group == "wgpolicyk8s.io"
                        && matches!(a.verb.as_str(), "create" | "update" | "delete")
                }) && (200..300).contains(&r.status)
            })
            .collect()
    }
}
