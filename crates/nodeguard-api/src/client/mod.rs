//! A small blocking client of the API, for `nodeguard query`, and table renderers for what
//! it returns.
//!
//! Each function takes the API's base URL (default [`DEFAULT_BASE_URL`]; a path prefix such
//! as a `kubectl proxy` URL works too), asks one endpoint, and returns typed values. Errors
//! name the URL and carry the agent's own error message:
//!
//! ```no_run
//! use nodeguard_api::{client, FindingsQuery};
//! use nodeguard_model::Severity;
//!
//! let query = FindingsQuery { min_severity: Some(Severity::High), ..Default::default() };
//! let answer = client::findings(client::DEFAULT_BASE_URL, &query)?;
//! print!("{}", client::findings_table(&answer.findings));
//! # Ok::<(), nodeguard_api::Error>(())
//! ```
//!
//! The functions block; call them from async code through `spawn_blocking`.

mod table;

pub use table::{containers_table, findings_table, processes_table, report_summary};

use crate::query::{ContainersQuery, FindingsQuery, ProcessesQuery};
use crate::types::{ContainersResponse, ErrorBody, FindingsResponse, ProcessesResponse};
use crate::Error;
use nodeguard_model::Report;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Where the agent serves the API when nothing else is said.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:9717";

/// How long one call may take, connecting and reading included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer the client reads (a full report of a busy node is a few MiB).
pub const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// Where to ask and with which bearer token. A plain `&str` base URL converts into one
/// without a token, so `client::report("http://127.0.0.1:9717")` works as before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub base: String,
    /// Sent as `Authorization: Bearer TOKEN` (never printed).
    pub token: Option<String>,
}

impl Endpoint {
    pub fn new(base: impl Into<String>, token: Option<String>) -> Endpoint {
        Endpoint {
            base: base.into(),
            token,
        }
    }
}

impl From<&str> for Endpoint {
    fn from(base: &str) -> Endpoint {
        Endpoint::new(base, None)
    }
}

impl From<&String> for Endpoint {
    fn from(base: &String) -> Endpoint {
        Endpoint::new(base.as_str(), None)
    }
}

impl From<&Endpoint> for Endpoint {
    fn from(endpoint: &Endpoint) -> Endpoint {
        endpoint.clone()
    }
}

/// `GET /v1/findings`: open findings that pass every filter of `query`.
pub fn findings(
    base: impl Into<Endpoint>,
    query: &FindingsQuery,
) -> Result<FindingsResponse, Error> {
    get(base, "/v1/findings", &query.to_query_string())
}

/// `GET /v1/containers`, optionally only those of a namespace and/or pod.
pub fn containers(
    base: impl Into<Endpoint>,
    namespace: Option<&str>,
    pod: Option<&str>,
) -> Result<ContainersResponse, Error> {
    let query = ContainersQuery {
        namespace: namespace.map(str::to_string),
        pod: pod.map(str::to_string),
        container: None,
    };
    containers_matching(base, &query)
}

/// `GET /v1/containers` with every filter.
pub fn containers_matching(
    base: impl Into<Endpoint>,
    query: &ContainersQuery,
) -> Result<ContainersResponse, Error> {
    get(base, "/v1/containers", &query.to_query_string())
}

/// `GET /v1/processes`, optionally only those of a container (id, short id, name or
/// `host`) and/or running an executable with a SHA-256 digest.
pub fn processes(
    base: impl Into<Endpoint>,
    container: Option<&str>,
    sha256: Option<&str>,
) -> Result<ProcessesResponse, Error> {
    let query = ProcessesQuery {
        container: container.map(str::to_string),
        sha256: sha256.map(str::to_string),
        ..ProcessesQuery::default()
    };
    processes_matching(base, &query)
}

/// `GET /v1/processes` with every filter.
pub fn processes_matching(
    base: impl Into<Endpoint>,
    query: &ProcessesQuery,
) -> Result<ProcessesResponse, Error> {
    get(base, "/v1/processes", &query.to_query_string())
}

/// `GET /v1/report`: the last full report.
pub fn report(base: impl Into<Endpoint>) -> Result<Report, Error> {
    get(base, "/v1/report", "")
}

/// The URL of `path` under `base`, with `query` (already encoded) when not empty.
pub fn endpoint_url(base: &str, path: &str, query: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::BaseUrl {
        url: base.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = base.trim();
    let Some(scheme_end) = trimmed.find("://") else {
        return Err(invalid("expected http://HOST:PORT"));
    };
    match trimmed[..scheme_end].to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            return Err(invalid(
                "https is not supported: the agent serves plain HTTP (use http://)",
            ))
        }
        _ => return Err(invalid("expected http://HOST:PORT")),
    }
    let rest = &trimmed[scheme_end + 3..];
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "must not contain a query, a fragment, spaces or control characters",
        ));
    }
    let mut url = format!("http://{}{path}", rest.trim_end_matches('/'));
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

fn get<T: DeserializeOwned>(
    endpoint: impl Into<Endpoint>,
    path: &str,
    query: &str,
) -> Result<T, Error> {
    let endpoint = endpoint.into();
    let url = endpoint_url(&endpoint.base, path, query)?;
    let transport = |source: ureq::Error| Error::Transport {
        url: url.clone(),
        source: Box::new(source),
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A proxy from the environment would send node-local queries elsewhere.
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(TIMEOUT))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut request = agent.get(&url).header("Accept", "application/json");
    if let Some(token) = endpoint.token.as_deref() {
        request = request.header("Authorization", &format!("Bearer {}", token.trim()));
    }
    let mut response = request.call().map_err(transport)?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .map_err(transport)?;
    if status != 200 {
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => err.error,
            Err(_) => body_excerpt(&body),
        };
        return Err(Error::Status {
            url,
            status,
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|source| Error::Decode { url, source })
}

/// The start of a body that is not the API's JSON (a proxy's error page), printable.
fn body_excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    if body.is_empty() {
        return "(no body)".to_string();
    }
    let mut text = nodeguard_model::escape_path(&body[..body.len().min(MAX)]);
    if body.len() > MAX {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_keep_prefixes_and_refuse_what_cannot_work() {
        assert_eq!(
            endpoint_url(DEFAULT_BASE_URL, "/v1/report", "").unwrap(),
            "http://127.0.0.1:9717/v1/report"
        );
        assert_eq!(
            endpoint_url("HTTP://node:9717/", "/v1/findings", "kind=runs_as_root").unwrap(),
            "http://node:9717/v1/findings?kind=runs_as_root"
        );
        assert_eq!(
            endpoint_url(
                "http://127.0.0.1:8001/api/v1/namespaces/ng/pods/ng-x:9717/proxy/",
                "/v1/report",
                ""
            )
            .unwrap(),
            "http://127.0.0.1:8001/api/v1/namespaces/ng/pods/ng-x:9717/proxy/v1/report"
        );
        for bad in [
            "127.0.0.1:9717",
            "https://node:9717",
            "ftp://node",
            "http://",
            "http://node:9717/?x=1",
            "http://no de",
        ] {
            let err = endpoint_url(bad, "/v1/report", "").unwrap_err();
            assert!(err.to_string().contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn non_json_error_bodies_are_quoted_safely() {
        assert_eq!(body_excerpt(b""), "(no body)");
        assert_eq!(
            body_excerpt(b"bad\x1b[31m gateway\n"),
            "bad\\x1b[31m gateway\\n"
        );
        let long = vec![b'a'; 500];
        assert_eq!(body_excerpt(&long).chars().count(), 201);
    }
}
