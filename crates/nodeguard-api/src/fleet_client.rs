//! One `GET` to one agent of a fleet, for `nodeguard fleet query`: TLS only, the agent's
//! certificate checked before a byte of the request (and so the token) is sent.
//!
//! The certificate is checked one of two ways ([`AgentTrust`]): **pinned**, the SHA-256 of
//! the leaf certificate's DER must equal the fingerprint the agent published in its Lease
//! (the handshake's signature then proves the peer holds that certificate's key), or
//! **against CA certificates** (`--ca-file`), for the node's address. A mismatch ends the
//! handshake: rustls sends no application data before the verifier accepts, so the token
//! never leaves. The failure says which fingerprint was served ([`AgentFailure::CertificateMismatch`]).
//!
//! The caller bounds the whole call in time (`tokio::time::timeout`); the answer is bounded
//! in bytes ([`AgentCall::max_body`]). Nothing is retried and no proxy is used.

use crate::types::ErrorBody;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// How an agent's certificate is checked.
#[derive(Debug, Clone)]
pub enum AgentTrust {
    /// The leaf's SHA-256, 64 lowercase hex digits (the Lease's `nodeguard.io/cert-sha256`).
    Pinned(String),
    /// Certificates chaining to these roots, valid for the dialled address.
    Roots(Arc<RootCertStore>),
}

impl AgentTrust {
    /// Roots from the DER certificates of a `--ca-file` ([`crate::client::ClientTls::Trust`]).
    pub fn roots(ders: &[Vec<u8>]) -> Result<AgentTrust, crate::Error> {
        let mut store = RootCertStore::empty();
        for der in ders {
            store
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| crate::Error::Tls {
                    what: "--ca-file".to_string(),
                    reason: e.to_string(),
                })?;
        }
        Ok(AgentTrust::Roots(Arc::new(store)))
    }
}

/// One request to one agent.
#[derive(Debug, Clone)]
pub struct AgentCall {
    /// The node's own address and the agent's port.
    pub addr: SocketAddr,
    pub trust: AgentTrust,
    /// `/v1/processes?sha256=…`.
    pub path_and_query: String,
    /// The largest answer read; more is [`AgentFailure::Answer`].
    pub max_body: usize,
    /// Longest wait for the TCP connection and the TLS handshake together; past it the
    /// agent is [`AgentFailure::NoHandshake`] (a node that is down, an agent that is stuck).
    pub handshake_timeout: std::time::Duration,
}

/// Why an agent gave no answer (what `nodeguard fleet query` lists per node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentFailure {
    #[error("connection refused or unreachable: {0}")]
    Refused(String),
    #[error("certificate mismatch: the agent served {served}, its Lease names {expected}; nothing was sent")]
    CertificateMismatch { expected: String, served: String },
    #[error("certificate not trusted by --ca-file: {0}; nothing was sent")]
    CertificateUntrusted(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("no connection and TLS handshake within {0:?} (the node is down or unreachable, or its agent is stuck)")]
    NoHandshake(std::time::Duration),
    #[error("401 unauthorized: {0}")]
    Unauthorized(String),
    #[error("403 forbidden: {0}")]
    Forbidden(String),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unusable answer: {0}")]
    Answer(String),
}

impl AgentFailure {
    /// A short stable word for the kind of failure (JSON `reason`, the table's REASON).
    pub fn reason(&self) -> &'static str {
        match self {
            AgentFailure::Refused(_) => "refused",
            AgentFailure::CertificateMismatch { .. } => "certificate-mismatch",
            AgentFailure::CertificateUntrusted(_) => "certificate-untrusted",
            AgentFailure::Tls(_) => "tls",
            AgentFailure::NoHandshake(_) => "timeout",
            AgentFailure::Unauthorized(_) => "401",
            AgentFailure::Forbidden(_) => "403",
            AgentFailure::Status { .. } => "http-error",
            AgentFailure::Answer(_) => "bad-answer",
        }
    }
}

/// Lowercase hex SHA-256 of a certificate's DER (the Lease's fingerprint form).
pub fn cert_sha256_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the served leaf by fingerprint or by CA, and remembers what was served.
#[derive(Debug)]
struct AgentVerifier {
    trust: AgentTrust,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    served: Mutex<Option<String>>,
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let served = cert_sha256_hex(end_entity);
        *self.served.lock().unwrap_or_else(PoisonError::into_inner) = Some(served.clone());
        match (&self.trust, &self.webpki) {
            (AgentTrust::Pinned(expected), _) if *expected == served => {
                Ok(ServerCertVerified::assertion())
            }
            (AgentTrust::Pinned(_), _) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            (AgentTrust::Roots(_), Some(webpki)) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            (AgentTrust::Roots(_), None) => Err(rustls::Error::General(
                "no CA verifier was built".to_string(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `GET call.path_and_query` with `Authorization: Bearer token`, sent only once the agent's
/// certificate passed; the body of a 200 answer, whole (see [`open_from_agent`] to read it
/// as it arrives).
pub async fn get_from_agent(call: &AgentCall, token: &str) -> Result<Vec<u8>, AgentFailure> {
    let mut answer = open_from_agent(call, token).await?;
    let mut out = Vec::with_capacity(answer.expected_len());
    while let Some(chunk) = answer.chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A 200 answer whose body is read as it arrives, at most [`AgentCall::max_body`] bytes in
/// all. Dropping it closes the connection.
pub struct AgentAnswer {
    body: hyper::body::Incoming,
    read: usize,
    max: usize,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    _sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
}

impl AgentAnswer {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<hyper::body::Bytes>, AgentFailure> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| AgentFailure::Answer(format!("cut short: {e}")))?;
            if let Ok(data) = frame.into_data() {
                self.read = self.read.saturating_add(data.len());
                if self.read > self.max {
                    return Err(AgentFailure::Answer(format!(
                        "more than {} bytes",
                        self.max
                    )));
                }
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
        }
        Ok(None)
    }

    /// The body's announced length, within the bound (0 when not announced).
    fn expected_len(&self) -> usize {
        let expected = hyper::body::Body::size_hint(&self.body)
            .exact()
            .unwrap_or(0);
        usize::try_from(expected).unwrap_or(0).min(self.max)
    }
}

impl Drop for AgentAnswer {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Error answers are read up to this many bytes (a message, not data).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// [`get_from_agent`] up to the answer's head: a 200 answer to read as it arrives, or why
/// there is none (the message of an error answer is read, bounded).
pub async fn open_from_agent(call: &AgentCall, token: &str) -> Result<AgentAnswer, AgentFailure> {
    let provider = crate::tls::provider();
    let webpki = match &call.trust {
        AgentTrust::Roots(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| AgentFailure::Tls(e.to_string()))?,
        ),
        AgentTrust::Pinned(_) => None,
    };
    let verifier = Arc::new(AgentVerifier {
        trust: call.trust.clone(),
        webpki,
        provider: provider.clone(),
        served: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentFailure::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(call.addr)
            .await
            .map_err(|e| AgentFailure::Refused(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(call.addr.ip().into());
        Ok(connector.connect(name, tcp).await)
    };
    let shaken = match tokio::time::timeout(call.handshake_timeout, handshake).await {
        Ok(shaken) => shaken?,
        Err(_) => return Err(AgentFailure::NoHandshake(call.handshake_timeout)),
    };
    let tls = match shaken {
        Ok(tls) => tls,
        Err(e) => {
            let served = verifier
                .served
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Err(match (&call.trust, served) {
                (AgentTrust::Pinned(expected), Some(served)) if *expected != served => {
                    AgentFailure::CertificateMismatch {
                        expected: expected.clone(),
                        served,
                    }
                }
                (AgentTrust::Roots(_), Some(_)) if is_certificate_error(&e) => {
                    AgentFailure::CertificateUntrusted(e.to_string())
                }
                _ => AgentFailure::Tls(e.to_string()),
            });
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| AgentFailure::Tls(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(call.path_and_query.as_str())
        .header(hyper::header::HOST, call.addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "nodeguard-fleet-query")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| AgentFailure::Answer(e.to_string()))?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            driver.abort();
            return Err(AgentFailure::Answer(format!("no answer: {e}")));
        }
    };
    let status = response.status().as_u16();
    let mut answer = AgentAnswer {
        body: response.into_body(),
        read: 0,
        max: call.max_body,
        driver,
        _sender: sender,
    };
    if status == 200 {
        return Ok(answer);
    }
    answer.max = answer.max.min(MAX_ERROR_BODY);
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| nodeguard_model::text::clean(&String::from_utf8_lossy(&body), 200));
    Err(match status {
        401 => AgentFailure::Unauthorized(message),
        403 => AgentFailure::Forbidden(message),
        _ => AgentFailure::Status { status, message },
    })
}

fn is_certificate_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
}

#[cfg(test)]
mod tests {
    //! Against the agent's own TLS server ([`crate::serve_tls`]) with a self-signed
    //! certificate: the pinned fingerprint is accepted, another is refused before the
    //! request, and a stand-in listener shows that not one byte of application data came.

    use super::*;
    use crate::tls::{CertSource, ServerTls, TlsSettings, TlsVersion};
    use tokio::io::AsyncReadExt;

    fn self_signed(dir: &std::path::Path) -> ServerTls {
        ServerTls::new(TlsSettings {
            source: CertSource::SelfSigned {
                dns_names: vec!["localhost".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
            },
            min_version: TlsVersion::Tls12,
            reload_interval: std::time::Duration::from_secs(60),
            served_cert_file: Some(dir.join("served.crt")),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_pinned_certificate_is_asked_and_another_refused_before_any_request_byte() {
        let dir = tempfile::tempdir().unwrap();
        let tls = self_signed(dir.path());
        let served = tls.served();
        let pin = served.fingerprint.replace(':', "").to_ascii_lowercase();
        // A TLS listener that records the application bytes it receives.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.acceptor();
        let received = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let sink = sink.clone();
                tokio::spawn(async move {
                    if let Ok(mut stream) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            sink.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    }
                });
            }
        });
        let call = |trust| AgentCall {
            addr,
            trust,
            path_and_query: "/v1/processes".into(),
            max_body: 1 << 20,
            handshake_timeout: std::time::Duration::from_secs(5),
        };
        let other = "00".repeat(32);
        let failure = get_from_agent(&call(AgentTrust::Pinned(other.clone())), "secret-token")
            .await
            .unwrap_err();
        assert_eq!(
            failure,
            AgentFailure::CertificateMismatch {
                expected: other,
                served: pin.clone()
            }
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            received.lock().unwrap().is_empty(),
            "bytes reached the listener"
        );
        // With the right pin the request goes out (the stand-in never answers).
        let pinned = call(AgentTrust::Pinned(pin));
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            get_from_agent(&pinned, "secret-token"),
        )
        .await;
        let text = String::from_utf8_lossy(&received.lock().unwrap()).to_string();
        assert!(
            text.starts_with("GET /v1/processes HTTP/1.1")
                && text.contains("authorization: Bearer secret-token"),
            "{text}"
        );
    }
    #[tokio::test]
    async fn an_agent_that_accepts_and_never_shakes_hands_is_given_up_at_the_handshake_timeout() {
        // The kernel accepts for a process that is stuck: the connection opens, no TLS comes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let call = AgentCall {
            addr,
            trust: AgentTrust::Pinned("00".repeat(32)),
            path_and_query: "/v1/processes".into(),
            max_body: 1 << 20,
            handshake_timeout: std::time::Duration::from_millis(200),
        };
        let failure = get_from_agent(&call, "secret-token").await.unwrap_err();
        assert_eq!(
            failure,
            AgentFailure::NoHandshake(std::time::Duration::from_millis(200))
        );
        assert_eq!(failure.reason(), "timeout");
        held.abort();
    }
}
