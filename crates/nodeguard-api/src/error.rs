use std::fmt;

/// Everything that can go wrong in this crate: a query the server refuses, or a client call
/// that fails. Every variant names the parameter or the URL involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query parameter the endpoint does not know.
    #[error("unknown query parameter{} {} (allowed: {})", plural(.names.len()), quoted(.names), .allowed.join(", "))]
    UnknownParameters {
        names: Vec<String>,
        allowed: &'static [&'static str],
    },
    /// A known query parameter with a value that cannot be used.
    #[error("query parameter {parameter:?}: {reason}")]
    InvalidParameter {
        parameter: &'static str,
        reason: String,
    },
    /// The client was given a base URL it cannot use.
    #[error("invalid API base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    /// The request did not get an answer (refused, timed out, cut short).
    #[error("GET {url} failed")]
    Transport {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered with an error status; `message` is its JSON `error` text.
    #[error("GET {url}: the agent answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    /// A TLS certificate, key or CA file that cannot be used, or TLS set-up that failed.
    #[error("TLS: {what}: {reason}")]
    Tls { what: String, reason: String },
    /// The agent's certificate is not one the client trusts (no `--ca-file`, another CA, a
    /// name the certificate does not hold, expired).
    #[error("GET {url}: the agent's certificate is not trusted ({reason}). Give --ca-file the CA that signed it or the agent's own certificate (the DaemonSet's agent writes it to /run/nodeguard/tls/serving.crt), or skip the check with --insecure-skip-tls-verify")]
    Untrusted { url: String, reason: String },
    /// One side speaks TLS and the other plain HTTP.
    #[error("GET {url}: {hint}")]
    WrongScheme { url: String, hint: &'static str },
    /// The server answered 200 with a body that is not the documented JSON.
    #[error("GET {url}: the answer is not the expected JSON")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn quoted(names: &[String]) -> impl fmt::Display + '_ {
    struct Quoted<'a>(&'a [String]);
    impl fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (i, name) in self.0.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{name:?}")?;
            }
            Ok(())
        }
    }
    Quoted(names)
}
