//! A small blocking client of the API, for `nodeguard query`. It re-exports the table
//! renderer of `nodeguard-table` ([`report_table`], [`findings_report`], …), which
//! `nodeguard scan` uses directly.
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
//! print!("{}", client::findings_report(&answer.findings, client::DEFAULT_WIDTH));
//! # Ok::<(), nodeguard_api::Error>(())
//! ```
//!
//! The functions block; call them from async code through `spawn_blocking`.

pub use nodeguard_table::{
    bytes, containers_table, containers_table_width, cores, findings_report, findings_report_with,
    findings_table, fit, processes_table, processes_table_width, report_summary, report_table,
    report_table_with, summary, FindingLine, Inventory, Listing, DEFAULT_WIDTH,
};

use crate::query::{ContainersQuery, ExecsQuery, FindingsQuery, ProcessesQuery};
use crate::types::{
    ContainersResponse, ErrorBody, ExecsResponse, FindingsResponse, ProcessesResponse,
};
use crate::Error;
use nodeguard_model::Report;
use serde::de::DeserializeOwned;
use std::sync::Arc;
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
    /// How an `https://` agent is verified.
    pub tls: ClientTls,
}

/// How the client checks an `https://` agent's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientTls {
    /// Only certificates that chain to one of these (DER) certificates, for the URL's host
    /// name or address. A self-signed certificate given here trusts exactly itself. Empty:
    /// nothing is trusted, and the error says to give a CA file.
    #[default]
    NoCa,
    Trust(Vec<Vec<u8>>),
    /// No check at all (`--insecure-skip-tls-verify`): the connection is encrypted, but
    /// anyone on the path can pose as the agent and read the token sent.
    InsecureSkipVerify,
}

impl ClientTls {
    /// Trusts the PEM certificates of `path` (a CA bundle, or the agent's own certificate).
    pub fn from_ca_file(path: &std::path::Path) -> Result<ClientTls, Error> {
        use rustls_pki_types::pem::PemObject;
        let bytes = crate::tls::read_pem_file(path)?;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls {
                what: path.display().to_string(),
                reason: format!("not PEM certificates: {e}"),
            })?;
        if certs.is_empty() {
            return Err(Error::Tls {
                what: path.display().to_string(),
                reason: "holds no PEM certificate".into(),
            });
        }
        Ok(ClientTls::Trust(certs))
    }
}

impl Endpoint {
    pub fn new(base: impl Into<String>, token: Option<String>) -> Endpoint {
        Endpoint {
            base: base.into(),
            token,
            tls: ClientTls::default(),
        }
    }

    /// The same endpoint, checking an `https://` agent as `tls` says.
    pub fn with_tls(mut self, tls: ClientTls) -> Endpoint {
        self.tls = tls;
        self
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

/// `GET /v1/execs`: what exec-time reads saw, oldest first.
pub fn execs(base: impl Into<Endpoint>, query: &ExecsQuery) -> Result<ExecsResponse, Error> {
    get(base, "/v1/execs", &query.to_query_string())
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
        return Err(invalid("expected https://HOST:PORT or http://HOST:PORT"));
    };
    let scheme = match trimmed[..scheme_end].to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return Err(invalid("expected https://HOST:PORT or http://HOST:PORT")),
    };
    let rest = &trimmed[scheme_end + 3..];
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "must not contain a query, a fragment, spaces or control characters",
        ));
    }
    if rest
        .split('/')
        .next()
        .is_some_and(|authority| authority.contains('@'))
    {
        return Err(invalid("must not contain a user or password"));
    }
    let mut url = format!("{scheme}://{}{path}", rest.trim_end_matches('/'));
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
    let tls = match &endpoint.tls {
        ClientTls::InsecureSkipVerify => ureq::tls::TlsConfig::builder().disable_verification(true),
        ClientTls::NoCa => ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(Vec::new()))),
        ClientTls::Trust(certs) => {
            let certs: Vec<ureq::tls::Certificate<'static>> = certs
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                .collect();
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
        }
    }
    .provider(ureq::tls::TlsProvider::Rustls)
    .unversioned_rustls_crypto_provider(crate::tls::provider())
    .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
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
    let mut response = request
        .call()
        .map_err(|e| classify(&url, &endpoint.tls, e))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .map_err(transport)?;
    if status == 400 && body.starts_with(PLAIN_HTTP_BODY.as_bytes()) {
        return Err(Error::WrongScheme {
            url,
            hint: "the agent serves https on this port: use --url https://…",
        });
    }
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

/// What the TLS port answers to plain HTTP (the body of [`crate::PLAIN_HTTP_TO_TLS_ANSWER`]).
const PLAIN_HTTP_BODY: &str = "Client sent an HTTP request to an HTTPS server.";

/// A transport error, with the TLS failures a user can fix said plainly.
fn classify(url: &str, tls: &ClientTls, error: ureq::Error) -> Error {
    let tls_error = match &error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    if let Some(tls_error) = tls_error {
        match tls_error {
            rustls::Error::InvalidCertificate(reason) => {
                let reason = match (reason, tls) {
                    (rustls::CertificateError::UnknownIssuer, ClientTls::NoCa) => {
                        "no --ca-file given".to_string()
                    }
                    (rustls::CertificateError::UnknownIssuer, _) => {
                        "not signed by a certificate of --ca-file".to_string()
                    }
                    (other, _) => format!("{other:?}"),
                };
                return Error::Untrusted {
                    url: url.to_string(),
                    reason,
                };
            }
            rustls::Error::InvalidMessage(_) => {
                return Error::WrongScheme {
                    url: url.to_string(),
                    hint: "the agent did not answer TLS: it may serve plain HTTP (an agent on loopback without --tls-cert-file does): use --url http://…",
                };
            }
            _ => {}
        }
    }
    Error::Transport {
        url: url.to_string(),
        source: Box::new(error),
    }
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
        assert_eq!(
            endpoint_url("https://[::1]:9717", "/metrics", "").unwrap(),
            "https://[::1]:9717/metrics"
        );
        for bad in [
            "127.0.0.1:9717",
            "https://user:pw@node:9717",
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
