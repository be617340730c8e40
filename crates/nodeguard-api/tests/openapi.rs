//! docs/openapi.json against the real router: every response the API gives, over real HTTP,
//! validates against the documented schema; every documented path is served and every
//! served path documented; every documented field appears in some answer.

mod common;

use common::{context, node_state, raw_get, Server, DROPPER_SHA, NGINX_ID};
use nodeguard_api::{ContainersQuery, ExecsQuery, FindingsQuery, ProcessesQuery};
use nodeguard_model::{FindingKind, Severity, Timestamp};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Validates JSON values against the subset of OpenAPI 3.0 schemas the spec uses: `$ref`,
/// `allOf`, `nullable`, `type`, `format` (date-time, int32), `enum`, `minimum`, `maximum`,
/// `minLength`, `pattern` (hex and `CAP_` forms), `required`, `properties`,
/// `additionalProperties`, `items`.
///
/// It is stricter than OpenAPI on one point, on purpose: a property that the schema does not
/// document is an error, so the spec cannot fall behind the code. It also records which
/// documented properties it saw, so the spec cannot document fields the code never sends.
struct Checker<'a> {
    spec: &'a Value,
    seen: BTreeSet<(String, String)>,
    errors: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(spec: &'a Value) -> Checker<'a> {
        Checker {
            spec,
            seen: BTreeSet::new(),
            errors: Vec::new(),
        }
    }

    fn resolve(&self, reference: &str) -> (&'a Value, String) {
        let pointer = reference.strip_prefix('#').expect("local $ref");
        let target = self
            .spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"));
        let name = reference.rsplit('/').next().unwrap().to_string();
        (target, name)
    }

    fn error(&mut self, at: &str, message: String) {
        self.errors.push(format!("{at}: {message}"));
    }

    /// Documented property names of a schema, through `$ref` and `allOf`.
    fn property_names(&self, schema: &'a Value) -> BTreeSet<String> {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            return self.property_names(self.resolve(r).0);
        }
        let mut names: BTreeSet<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for sub in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.extend(self.property_names(sub));
        }
        names
    }

    fn check(&mut self, schema: &'a Value, value: &Value, at: &str, owner: &str) {
        self.check_strict(schema, value, at, owner, true);
    }

    fn check_strict(
        &mut self,
        schema: &'a Value,
        value: &Value,
        at: &str,
        owner: &str,
        strict: bool,
    ) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let (target, name) = self.resolve(r);
            return self.check_strict(target, value, at, &name, strict);
        }
        if value.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) {
                self.error(at, "null where the schema is not nullable".into());
            }
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check_strict(sub, value, at, owner, false);
            }
            if strict {
                if let Some(object) = value.as_object() {
                    let known = self.property_names(schema);
                    for key in object.keys().filter(|k| !known.contains(*k)) {
                        self.error(at, format!("undocumented property {key:?}"));
                    }
                }
            }
        }
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            let ok = match expected {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "boolean" => value.is_boolean(),
                "number" => value.is_number(),
                "integer" => value.is_i64() || value.is_u64(),
                other => panic!("unsupported type {other}"),
            };
            if !ok {
                return self.error(at, format!("expected {expected}, got {value}"));
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if !values.contains(value) {
                self.error(at, format!("{value} is not one of {values:?}"));
            }
        }
        match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => {
                if let Err(err) = Timestamp::parse(value.as_str().unwrap_or_default()) {
                    self.error(at, err);
                }
            }
            Some("int32") => {
                if value.as_i64().and_then(|n| i32::try_from(n).ok()).is_none() {
                    self.error(at, format!("{value} is not an int32"));
                }
            }
            Some("int64") | None => {}
            Some(other) => panic!("unsupported format {other}"),
        }
        if let (Some(min), Some(n)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if n < min {
                self.error(at, format!("{n} is below the minimum {min}"));
            }
        }
        if let (Some(max), Some(n)) = (
            schema.get("maximum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if n > max {
                self.error(at, format!("{n} is above the maximum {max}"));
            }
        }
        if let Some(text) = value.as_str() {
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if (text.chars().count() as u64) < min {
                    self.error(at, format!("{text:?} is shorter than {min}"));
                }
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                if !matches_pattern(pattern, text) {
                    self.error(at, format!("{text:?} does not match {pattern}"));
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"), owner);
            }
        }
        let Some(object) = value.as_object() else {
            return;
        };
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                self.error(at, format!("required property {name:?} is missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, item) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => {
                    self.seen.insert((owner.to_string(), key.clone()));
                    self.check(sub, item, &format!("{at}.{key}"), owner);
                }
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        self.error(at, format!("property {key:?} is not allowed"))
                    }
                    Some(Value::Bool(true)) => {}
                    Some(sub) => self.check(sub, item, &format!("{at}.{key}"), owner),
                    None if strict && schema.get("allOf").is_none() => {
                        self.error(at, format!("undocumented property {key:?}"))
                    }
                    None => {}
                },
            }
        }
    }

    /// Checks one HTTP answer against what the spec says `GET path` answers with `status`.
    fn check_response(&mut self, path: &str, status: u16, content_type: &str, body: &[u8]) {
        let at = format!("GET {path} -> {status}");
        let responses = &self.spec["paths"][path]["get"]["responses"];
        let mut response = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{at}: status not documented"));
        if let Some(r) = response.get("$ref").and_then(Value::as_str) {
            response = self.resolve(r).0;
        }
        let essence = content_type
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_ascii_lowercase();
        let Some(media) = response["content"].get(&essence) else {
            return self.error(&at, format!("content type {content_type:?} not documented"));
        };
        self.check_body(&media["schema"], &essence, body, &at);
    }

    fn check_body(&mut self, schema: &'a Value, essence: &str, body: &[u8], at: &str) {
        if essence == "application/json" {
            match serde_json::from_slice::<Value>(body) {
                Ok(value) => self.check(schema, &value, at, "(inline)"),
                Err(err) => self.error(at, format!("not JSON: {err}")),
            }
        } else if std::str::from_utf8(body).is_err() {
            self.error(at, "text body is not UTF-8".into());
        }
    }
}

/// The few regular expressions the spec uses, matched by hand.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    let hex_run = |lower_only: bool, len: usize| {
        text.len() == len
            && text.bytes().all(|b| {
                b.is_ascii_digit()
                    || (b'a'..=b'f').contains(&b)
                    || (!lower_only && (b'A'..=b'F').contains(&b))
            })
    };
    match pattern {
        "^[0-9a-f]{16}$" => hex_run(true, 16),
        "^[0-9a-f]{64}$" => hex_run(true, 64),
        "^[0-9a-fA-F]{64}$" => hex_run(false, 64),
        "^CAP_[A-Z0-9_]+$" => text.strip_prefix("CAP_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }),
        other => panic!("the checker does not know the pattern {other}"),
    }
}

/// Every (schema, property) the spec documents, nested inline objects included.
fn documented_properties(spec: &Value) -> BTreeSet<(String, String)> {
    fn walk(owner: &str, schema: &Value, out: &mut BTreeSet<(String, String)>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in props {
                out.insert((owner.to_string(), key.clone()));
                walk(owner, sub, out);
            }
        }
        for sub in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(owner, sub, out);
        }
    }
    let mut out = BTreeSet::new();
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        walk(name, schema, &mut out);
    }
    out
}

fn spec_paths(spec: &Value) -> BTreeSet<String> {
    spec["paths"].as_object().unwrap().keys().cloned().collect()
}

fn documented_parameters(spec: &Value, path: &str) -> Vec<String> {
    spec["paths"][path]["get"]["parameters"]
        .as_array()
        .map(|params| {
            params
                .iter()
                .map(|p| {
                    let r = p["$ref"].as_str().unwrap().strip_prefix('#').unwrap();
                    spec.pointer(r).unwrap()["name"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_served_path_is_documented_and_every_documented_path_served() {
    let spec = spec();
    let served: BTreeSet<String> = nodeguard_api::paths()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(served, spec_paths(&spec));
    for path in spec_paths(&spec) {
        let methods: Vec<&String> = spec["paths"][&path].as_object().unwrap().keys().collect();
        assert_eq!(methods, ["get"], "{path}: the API is read-only");
    }
}

#[test]
fn documented_parameters_are_exactly_the_ones_each_endpoint_accepts() {
    let spec = spec();
    assert_eq!(
        documented_parameters(&spec, "/v1/findings"),
        FindingsQuery::PARAMETERS
    );
    assert_eq!(
        documented_parameters(&spec, "/v1/containers"),
        ContainersQuery::PARAMETERS
    );
    assert_eq!(
        documented_parameters(&spec, "/v1/processes"),
        ProcessesQuery::PARAMETERS
    );
    assert_eq!(
        documented_parameters(&spec, "/v1/execs"),
        ExecsQuery::PARAMETERS
    );
    for path in ["/healthz", "/readyz", "/metrics", "/v1/report"] {
        assert!(documented_parameters(&spec, path).is_empty(), "{path}");
    }
}

#[test]
fn documented_enums_match_the_model() {
    let spec = spec();
    let names = |schema: &str| -> Vec<String> {
        spec["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let kinds: Vec<String> = FindingKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(names("FindingKind"), kinds);
    let severities: Vec<String> = Severity::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(names("Severity"), severities);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_over_http_validates_against_the_spec() {
    let spec = spec();
    let mut checker = Checker::new(&spec);

    let ready = Server::start(context(Some(node_state("node-a"))).0).await;
    let short = &NGINX_ID[..12];
    let cases: Vec<(&str, String, u16)> = vec![
        ("/healthz", String::new(), 200),
        ("/readyz", String::new(), 200),
        ("/metrics", String::new(), 200),
        ("/v1/report", String::new(), 200),
        ("/v1/findings", String::new(), 200),
        ("/v1/findings", "namespace=shop&pod=web-7d9f8".into(), 200),
        (
            "/v1/findings",
            format!("container={short}&severity=high"),
            200,
        ),
        (
            "/v1/findings",
            "container=host&kind=denied_binary".into(),
            200,
        ),
        ("/v1/findings", "since=2026-11-22T09:30:00Z".into(), 200),
        ("/v1/findings", "kind=not_a_kind".into(), 400),
        ("/v1/findings", "severity=urgent".into(), 400),
        ("/v1/findings", "since=yesterday".into(), 400),
        ("/v1/findings", "colour=red".into(), 400),
        ("/v1/containers", String::new(), 200),
        ("/v1/containers", "namespace=shop".into(), 200),
        (
            "/v1/containers",
            "pod=web-7d9f8&container=nginx".into(),
            200,
        ),
        ("/v1/containers", "node=x".into(), 400),
        ("/v1/processes", String::new(), 200),
        ("/v1/processes", format!("sha256={DROPPER_SHA}"), 200),
        ("/v1/processes", "container=host".into(), 200),
        ("/v1/processes", "pid=4242".into(), 200),
        ("/v1/processes", "sha256=abc".into(), 400),
        ("/v1/processes", "pid=abc".into(), 400),
        ("/v1/execs", String::new(), 200),
        ("/v1/execs", "since=10m".into(), 200),
        (
            "/v1/execs",
            "since=2026-11-22T09:30:00Z&namespace=shop".into(),
            200,
        ),
        ("/v1/execs", "container=host".into(), 200),
        ("/v1/execs", "since=yesterday".into(), 400),
        ("/v1/execs", "sha256=abc".into(), 400),
    ];
    for (path, query, want) in &cases {
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let (status, head, body) = raw_get(ready.addr, "GET", &target).await;
        assert_eq!(
            status,
            *want,
            "GET {target}: {}",
            String::from_utf8_lossy(&body)
        );
        checker.check_response(path, status, &content_type(&head), &body);
    }

    // Unknown paths and methods are not in `paths`: their bodies are the Error schema.
    let error_schema = &spec["components"]["schemas"]["Error"];
    for (method, target, want) in [
        ("GET", "/v2/findings", 404),
        ("POST", "/v1/findings", 405),
        ("DELETE", "/healthz", 405),
    ] {
        let (status, head, body) = raw_get(ready.addr, method, target).await;
        assert_eq!(status, want, "{method} {target}");
        assert_eq!(content_type(&head), "application/json", "{method} {target}");
        checker.check_body(
            error_schema,
            "application/json",
            &body,
            &format!("{method} {target}"),
        );
    }
    ready.shutdown().await.unwrap();

    // Before the first scan.
    let not_ready = Server::start(context(None).0).await;
    for (path, want) in [
        ("/healthz", 200),
        ("/readyz", 503),
        ("/v1/report", 503),
        ("/v1/findings", 503),
        ("/v1/containers", 503),
        ("/v1/processes", 503),
        ("/v1/execs", 503),
        ("/metrics", 200),
    ] {
        let (status, head, body) = raw_get(not_ready.addr, "GET", path).await;
        assert_eq!(status, want, "GET {path} before the first scan");
        checker.check_response(path, status, &content_type(&head), &body);
    }
    not_ready.shutdown().await.unwrap();

    // A metrics renderer that fails.
    let (mut ctx, _tx) = context(Some(node_state("node-a")));
    ctx.metrics = Arc::new(|_| Err("registry poisoned".to_string()));
    let broken = Server::start(ctx).await;
    let (status, head, body) = raw_get(broken.addr, "GET", "/metrics").await;
    assert_eq!(status, 500);
    checker.check_response("/metrics", status, &content_type(&head), &body);
    broken.shutdown().await.unwrap();

    // With authentication: 401 without a token, 403 without the permission.
    struct OnlyOk;
    impl nodeguard_api::Authorizer for OnlyOk {
        fn authorize<'a>(
            &'a self,
            token: &'a str,
            _: &'a str,
        ) -> nodeguard_api::DecisionFuture<'a> {
            Box::pin(async move {
                if token == "ok" {
                    nodeguard_api::AccessDecision::Allowed { user: "ok".into() }
                } else {
                    nodeguard_api::AccessDecision::Forbidden {
                        user: "someone".into(),
                        reason: "no grant".into(),
                    }
                }
            })
        }
    }
    let router = nodeguard_api::router_with_auth(
        context(Some(node_state("node-a"))).0,
        nodeguard_api::RequestLimits::default(),
        Some(nodeguard_api::AuthOptions::new(Arc::new(OnlyOk))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(nodeguard_api::serve(listener, router, async move {
        let _ = stopped.await;
    }));
    for path in [
        "/metrics",
        "/v1/report",
        "/v1/findings",
        "/v1/containers",
        "/v1/processes",
        "/v1/execs",
    ] {
        let (status, head, body) = raw_get(addr, "GET", path).await;
        assert_eq!(status, 401, "GET {path} without a token");
        checker.check_response(path, status, &content_type(&head), &body);
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&bytes[..split]).to_string();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(status, 403, "GET {path} with a token lacking the grant");
        checker.check_response(path, status, &content_type(&head), &bytes[split + 4..]);
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    assert!(
        checker.errors.is_empty(),
        "answers that do not match docs/openapi.json:\n{}",
        checker.errors.join("\n")
    );
    let unseen: Vec<String> = documented_properties(&spec)
        .difference(&checker.seen)
        .map(|(schema, prop)| format!("{schema}.{prop}"))
        .collect();
    assert!(unseen.is_empty(), "documented but never sent: {unseen:?}");
}

#[test]
fn the_checker_rejects_what_the_spec_does_not_allow() {
    // The validator itself must fail on wrong answers, or the test above proves nothing.
    let spec = spec();
    let schema = &spec["components"]["schemas"]["TrackedFinding"];
    let good = serde_json::to_value(&node_state("n").findings[0]).unwrap();
    let mut checker = Checker::new(&spec);
    checker.check(schema, &good, "good", "TrackedFinding");
    assert!(checker.errors.is_empty(), "{:?}", checker.errors);

    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "missing required",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("first_seen");
            }),
        ),
        (
            "undocumented",
            Box::new(|v| {
                v["colour"] = "red".into();
            }),
        ),
        (
            "bad enum",
            Box::new(|v| {
                v["severity"] = "urgent".into();
            }),
        ),
        (
            "null not nullable",
            Box::new(|v| {
                v["subject"] = Value::Null;
            }),
        ),
        (
            "wrong type",
            Box::new(|v| {
                v["pid"] = "42".into();
            }),
        ),
        (
            "bad time",
            Box::new(|v| {
                v["last_seen"] = "yesterday".into();
            }),
        ),
        (
            "bad pattern",
            Box::new(|v| {
                v["id"] = "XYZ".into();
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        let mut checker = Checker::new(&spec);
        checker.check(schema, &bad, what, "TrackedFinding");
        assert!(!checker.errors.is_empty(), "{what} was accepted");
    }
}

fn content_type(head: &str) -> String {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default()
}
