//! The fake's one handler: records the request, authenticates and authorizes it, and
//! dispatches by (group, resource, verb); pod lists and watches are served here.

use super::answer::{answer, fault, record, refuse, set_status, Refusal, Reply};
use super::events::{event_write, Api};
use super::query::{percent_decode, query_map};
use super::rbac::attributes;
use super::{reports, App, Mode, Request};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query_map(uri.query());
    let attrs = attributes(method.as_str(), uri.path(), &query);
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let seq = record(
        &app,
        Request {
            seq: 0,
            at: app.started.elapsed(),
            method: method.to_string(),
            path: uri.path().to_string(),
            query: percent_decode(uri.query().unwrap_or("")),
            attributes: attrs.clone(),
            status: 0,
            body: body_json.clone(),
            why: String::new(),
        },
    );
    let token = app.lock().token.clone();
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token.as_str()) {
        return refuse(
            &app,
            seq,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            &format!("no valid bearer token (got {presented:?})"),
        );
    }
    let Some(a) = attrs else {
        return refuse(
            &app,
            seq,
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("non-resource URL {} is not granted", uri.path()),
        );
    };
    if !app.authorizer.allows(&a) {
        let scope = match &a.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        // As the real one words it: the group-qualified resource first.
        let qualified = if a.group.is_empty() {
            a.resource.clone()
        } else {
            format!("{}.{}", a.resource, a.group)
        };
        let message = format!(
            "{qualified} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            app.authorizer.user, a.verb, a.resource, a.group
        );
        return refuse(&app, seq, StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    match (a.group.as_str(), a.resource.as_str(), a.verb.as_str()) {
        ("", "pods", "list" | "watch") if a.namespace.is_none() && a.name.is_none() => {
            let delay = app.lock().pod_delay;
            tokio::time::sleep(delay).await;
            let mode = app.lock().pod_mode;
            match fault(&app, seq, mode).await {
                Some(faulted) => faulted,
                None => pods(&app, seq, &a.verb, &query),
            }
        }
        ("", "nodes", "get") => {
            let inner = app.lock();
            let outcome = if a.name.as_deref() != Some(inner.node.as_str()) {
                let name = a.name.clone().unwrap_or_default();
                Err(Refusal::not_found(format!("nodes \"{name}\" not found")))
            } else {
                Ok(Reply::Served(
                    StatusCode::OK,
                    json!({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": inner.node, "uid": inner.node_uid, "resourceVersion": "1"},
                    }),
                ))
            };
            drop(inner);
            answer(&app, seq, outcome)
        }
        ("", "events", "create") if a.name.is_none() => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, Api::Core, &ns, None, body_json).await
        }
        ("events.k8s.io", "events", "create") if a.name.is_none() => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, Api::Events, &ns, None, body_json).await
        }
        ("events.k8s.io", "events", "patch") => {
            let ns = a.namespace.clone().unwrap_or_default();
            event_write(&app, seq, Api::Events, &ns, a.name.clone(), body_json).await
        }
        ("wgpolicyk8s.io", "policyreports" | "clusterpolicyreports", _) => {
            reports::handle(&app, seq, &a, &query, body.len(), body_json).await
        }
        _ => refuse(
            &app,
            seq,
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake does not serve {} {uri}", method),
        ),
    }
}

fn pods(app: &App, seq: usize, verb: &str, query: &BTreeMap<String, String>) -> Response {
    let node = app.lock().node.clone();
    let want = format!("spec.nodeName={node}");
    if query.get("fieldSelector") != Some(&want) {
        return refuse(
            app,
            seq,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "this node's agent must select fieldSelector {want}, got {:?}",
                query.get("fieldSelector")
            ),
        );
    }
    if verb == "watch" {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Subscribe before reading the history: no change falls between the two.
        let rx = app.pod_watch.subscribe();
        let backlog: Vec<(u64, String)> = app
            .lock()
            .history
            .iter()
            .filter(|(rv, _)| *rv > from)
            .cloned()
            .collect();
        let last = backlog.last().map_or(from, |(rv, _)| *rv);
        let backlog = futures::stream::iter(
            backlog
                .into_iter()
                .map(|(_, line)| Ok::<_, std::io::Error>(format!("{line}\n"))),
        );
        // A pod mode other than Normal (an outage) ends open watches, as a restarting API
        // server does.
        let mut release = app.release.clone();
        release.borrow_and_update();
        let inner = app.inner.clone();
        let live = futures::stream::unfold((rx, last), move |(mut rx, last)| {
            let mut release = release.clone();
            let inner = inner.clone();
            async move {
                loop {
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        _ = release.changed() => {
                            let mode = inner.lock().unwrap_or_else(|e| e.into_inner()).pod_mode;
                            if mode == Mode::Normal {
                                continue;
                            }
                            return None;
                        }
                    };
                    match next {
                        Ok((rv, line)) if rv > last => {
                            return Some((Ok(format!("{line}\n")), (rx, rv)));
                        }
                        Ok(_) => continue,
                        // Lagged or closed: end the watch; the client re-lists.
                        Err(_) => return None,
                    }
                }
            }
        });
        use futures::StreamExt;
        set_status(app, seq, 200, "", None);
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(backlog.chain(live)))
            .unwrap();
    }
    let inner = app.lock();
    let items: Vec<Value> = inner
        .pods
        .values()
        .filter(|p| p["spec"]["nodeName"] == inner.node.as_str())
        .cloned()
        .collect();
    let list = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    });
    drop(inner);
    answer(app, seq, Ok(Reply::Served(StatusCode::OK, list)))
}
