//! The one shape of every handler: record the request, decide `Result<Reply, Refusal>`,
//! answer; stored objects in a `Store` that answers as the real storage does; fault modes.

use super::{App, Mode, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// Records a request; returns its sequence number.
pub(super) fn record(app: &App, request: Request) -> usize {
    let mut inner = app.lock();
    let seq = inner.requests.len();
    inner.requests.push(Request { seq, ..request });
    seq
}

pub(super) fn set_status(app: &App, seq: usize, code: u16, why: &str, body: Option<Value>) {
    let mut inner = app.lock();
    if let Some(r) = inner.requests.get_mut(seq) {
        r.status = code;
        r.why = why.to_string();
        if let Some(body) = body {
            r.body = body;
        }
    }
}

/// Answers nothing (status stays 0) until a mode changes, then a 500.
pub(super) async fn hang(app: &App, seq: usize) -> Response {
    let mut release = app.release.clone();
    release.borrow_and_update();
    let _ = release.changed().await;
    set_status(app, seq, 500, "request hung", None);
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "request hung",
    )
}

/// An error answer, recorded with its reason.
pub(super) fn refuse(app: &App, seq: usize, code: StatusCode, reason: &str, why: &str) -> Response {
    set_status(app, seq, code.as_u16(), why, None);
    status(code, reason, why)
}

// One shape for every handler that stores objects (Events, PolicyReports): it decides with
// `Result<Reply, Refusal>` (a refusal worded as kube-apiserver v1.20.2 words it), the
// objects live in a `Store` that answers as the real storage does, and `answer` records the
// outcome on the request and renders it. Faults come first, from `fault`.

/// A request refused: status code, `reason` and message of the real server's `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    code: StatusCode,
    reason: &'static str,
    why: String,
}

impl Refusal {
    pub(super) fn new(code: StatusCode, reason: &'static str, why: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason,
            why: why.into(),
        }
    }

    pub(super) fn bad_request(why: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", why)
    }

    pub(super) fn invalid(why: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why)
    }

    pub(super) fn not_found(why: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "NotFound", why)
    }
}

/// What a request that was not refused gets.
pub(super) enum Reply {
    /// An object written: recorded as the request's body (what the store holds now).
    Stored(StatusCode, Value),
    /// An object read or removed: the request keeps the body it was sent with.
    Served(StatusCode, Value),
}

/// Records the outcome on request `seq` and renders it.
pub(super) fn answer(app: &App, seq: usize, outcome: Result<Reply, Refusal>) -> Response {
    match outcome {
        Ok(Reply::Stored(code, object)) => {
            set_status(app, seq, code.as_u16(), "", Some(object.clone()));
            (code, axum::Json(object)).into_response()
        }
        Ok(Reply::Served(code, object)) => {
            set_status(app, seq, code.as_u16(), "", None);
            (code, axum::Json(object)).into_response()
        }
        Err(r) => refuse(app, seq, r.code, r.reason, &r.why),
    }
}

/// The answer of a fault mode: `None` in [`Mode::Normal`], else a 500 without looking, or
/// nothing until the mode changes.
pub(super) async fn fault(app: &App, seq: usize, mode: Mode) -> Option<Response> {
    match mode {
        Mode::Normal => None,
        Mode::Fail500 => Some(fail500(app, seq)),
        Mode::Hang => Some(hang(app, seq).await),
    }
}

/// A 500 without looking at the request.
pub(super) fn fail500(app: &App, seq: usize) -> Response {
    set_status(app, seq, 500, "", None);
    status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "down")
}

/// Stored objects of one kind by key, answering as the API server's storage does: a create
/// of a name it holds is `409 AlreadyExists`, a read, update or delete of one it lacks is
/// `404 NotFound` (both named `RESOURCE "NAME"`, the resource group-qualified as the real
/// one words it), an object over etcd's default request limit (1.5 MiB) is a `500
/// etcdserver: request is too large`, and every write takes the next resourceVersion of the
/// whole server.
pub(super) struct Store<K>(pub(super) BTreeMap<K, Value>);

/// etcd's default request limit: the largest object the API server can store.
const MAX_STORED: usize = 1024 * 1024 * 3 / 2;

fn too_large(object: &Value) -> Result<(), Refusal> {
    if object.to_string().len() > MAX_STORED {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcdserver: request is too large",
        ));
    }
    Ok(())
}

impl<K: Ord> Store<K> {
    pub(super) fn new() -> Store<K> {
        Store(BTreeMap::new())
    }

    /// Stores a new object under `key` with the next resourceVersion and a uid
    /// `<uid_prefix>-uid-<rv>`; returns it as stored.
    pub(super) fn create(
        &mut self,
        rv: &mut u64,
        key: K,
        resource: &str,
        name: &str,
        uid_prefix: &str,
        mut object: Value,
    ) -> Result<Value, Refusal> {
        if self.0.contains_key(&key) {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            ));
        }
        too_large(&object)?;
        *rv += 1;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(format!("{uid_prefix}-uid-{rv}"));
        self.0.insert(key, object.clone());
        Ok(object)
    }

    /// The stored object under `key`.
    pub(super) fn get(&self, key: &K, resource: &str, name: &str) -> Result<&Value, Refusal> {
        self.0
            .get(key)
            .ok_or_else(|| Refusal::not_found(format!("{resource} \"{name}\" not found")))
    }

    /// Replaces the object under `key` (which [`Store::get`] found) with the next
    /// resourceVersion; returns it as stored.
    pub(super) fn replace(
        &mut self,
        rv: &mut u64,
        key: K,
        mut object: Value,
    ) -> Result<Value, Refusal> {
        too_large(&object)?;
        *rv += 1;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.0.insert(key, object.clone());
        Ok(object)
    }

    pub(super) fn remove(&mut self, key: &K, resource: &str, name: &str) -> Result<Value, Refusal> {
        self.0
            .remove(key)
            .ok_or_else(|| Refusal::not_found(format!("{resource} \"{name}\" not found")))
    }
}

/// v1.20.2's 400 for a body whose namespace is not the path's.
pub(super) const NAMESPACE_MISMATCH: &str =
    "the namespace of the provided object does not match the namespace sent on the request";
