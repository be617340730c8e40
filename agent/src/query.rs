//! `nodeguard query`: asks a running agent and prints tables or JSON.

use crate::cli::{OutputFormat, QueryArgs, QueryWhat};
use anyhow::{Context, Result};
use nodeguard_api::client;
use nodeguard_api::{FindingsQuery, ProcessesQuery};
use nodeguard_model::{FindingKind, Timestamp};
use serde::Serialize;

/// Where the in-cluster service-account token is mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The token to send: `--token`, else `--token-file`, else the in-cluster service-account
/// token, else the current kubeconfig user's token; `None` when there is none (an agent on
/// loopback without a cluster asks for none).
fn token(args: &QueryArgs) -> Result<Option<String>> {
    if let Some(token) = &args.token {
        return Ok(Some(token.trim().to_string()));
    }
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?;
        return Ok(Some(token.trim().to_string()));
    }
    if let Ok(token) = std::fs::read_to_string(SERVICE_ACCOUNT_TOKEN) {
        if !token.trim().is_empty() {
            return Ok(Some(token.trim().to_string()));
        }
    }
    Ok(nodeguard_kube::kubeconfig_token())
}

/// How to check an https agent: `--insecure-skip-tls-verify` (warned), else `--ca-file`.
fn client_tls(args: &QueryArgs) -> Result<client::ClientTls> {
    if args.insecure_skip_tls_verify {
        eprintln!(
            "nodeguard: warning: --insecure-skip-tls-verify: the agent's certificate is not checked; anyone on the path can pose as the agent and read the token sent"
        );
        return Ok(client::ClientTls::InsecureSkipVerify);
    }
    match &args.ca_file {
        Some(path) => Ok(client::ClientTls::from_ca_file(path).context("--ca-file")?),
        None => Ok(client::ClientTls::NoCa),
    }
}

/// Warns when a token would cross the network in clear: plain http to an address that is
/// not loopback.
fn warn_if_token_in_clear(url: &str, token: Option<&str>) {
    let Some(rest) = url.trim().strip_prefix("http://") else {
        return;
    };
    if token.is_none() {
        return;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        eprintln!(
            "nodeguard: warning: sending a bearer token over plain http to {authority}: anyone on the path can read it (use https://)"
        );
    }
}

pub fn run(args: QueryArgs) -> Result<()> {
    let token = token(&args)?;
    warn_if_token_in_clear(&args.url, token.as_deref());
    let endpoint = client::Endpoint::new(args.url.clone(), token).with_tls(client_tls(&args)?);
    let base = &endpoint;
    let width = crate::output::width();
    match args.what {
        QueryWhat::Findings {
            namespace,
            pod,
            container,
            kind,
            severity,
            since,
        } => {
            let query = FindingsQuery {
                namespace,
                pod,
                container,
                kind: kind
                    .map(|k| k.parse::<FindingKind>())
                    .transpose()
                    .context("--kind")?,
                min_severity: severity.map(crate::severity),
                since: since
                    .map(|s| Timestamp::parse(&s))
                    .transpose()
                    .map_err(anyhow::Error::msg)
                    .context("--since")?,
            };
            let answer = client::findings(base, &query)?;
            // Asked for low findings: list them; otherwise they are counted (the table's
            // default).
            let listing = match query.min_severity {
                Some(nodeguard_model::Severity::Low) => client::Listing::ALL,
                _ => client::Listing::QUERY,
            };
            print(args.output, &answer, || {
                client::findings_report_with(&answer.findings, listing, width)
            })
        }
        QueryWhat::Containers { namespace, pod } => {
            let answer = client::containers(base, namespace.as_deref(), pod.as_deref())?;
            print(args.output, &answer, || {
                client::containers_table_width(&answer.containers, width)
            })
        }
        QueryWhat::Processes {
            container,
            sha256,
            pid,
        } => {
            let query = ProcessesQuery {
                container,
                sha256,
                pid,
                namespace: None,
                pod: None,
            };
            let answer = client::processes_matching(base, &query)?;
            print(args.output, &answer, || {
                client::processes_table_width(&answer.processes, width)
            })
        }
        QueryWhat::Report => {
            let report = client::report(base)?;
            print(args.output, &report, || {
                client::report_table(&report, client::Inventory::default(), width)
            })
        }
    }
}

fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)? + "\n",
        OutputFormat::Table => table(),
    };
    crate::output::print(&text).context("cannot write the answer")?;
    Ok(())
}
