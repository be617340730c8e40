//! `nodeguard query`: asks a running agent and prints tables or JSON.

use crate::cli::{
    ContainersFilters, FindingsFilters, OutputFormat, ProcessesFilters, QueryArgs, QueryWhat,
};
use anyhow::{Context, Result};
use nodeguard_api::client;
use nodeguard_api::{ContainersQuery, ExecsQuery, FindingsQuery, ProcessesQuery, Since};
use nodeguard_model::{FindingKind, Timestamp};
use serde::Serialize;

/// Where the in-cluster service-account token is mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Where a token came from: given on purpose (`--token`, `--token-file`, or their
/// `NODEGUARD_TOKEN*` variables), or found lying around (the pod's service-account token,
/// the kubeconfig user's, often an admin's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Flag,
    File,
    ServiceAccount,
    Kubeconfig,
}

impl TokenSource {
    fn explicit(self) -> bool {
        matches!(self, TokenSource::Flag | TokenSource::File)
    }

    fn describe(self) -> &'static str {
        match self {
            TokenSource::Flag => "the --token",
            TokenSource::File => "the --token-file token",
            TokenSource::ServiceAccount => "the pod's service-account token",
            TokenSource::Kubeconfig => "the kubeconfig user's token",
        }
    }
}

/// The token found: `--token`, else `--token-file`, else the in-cluster service-account
/// token, else the current kubeconfig user's token; `None` when there is none (an agent on
/// loopback without a cluster asks for none). Whether it is sent is [`token_to_send`]'s call.
fn token(args: &QueryArgs) -> Result<Option<(String, TokenSource)>> {
    if let Some(token) = &args.token {
        return Ok(Some((token.trim().to_string(), TokenSource::Flag)));
    }
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?;
        return Ok(Some((token.trim().to_string(), TokenSource::File)));
    }
    if let Ok(token) = std::fs::read_to_string(SERVICE_ACCOUNT_TOKEN) {
        if !token.trim().is_empty() {
            return Ok(Some((
                token.trim().to_string(),
                TokenSource::ServiceAccount,
            )));
        }
    }
    Ok(nodeguard_kube::kubeconfig_token().map(|t| (t, TokenSource::Kubeconfig)))
}

/// The token to send, or why the one found is kept back. A token given on purpose is sent
/// as asked (plain http beyond loopback is warned about). One found lying around goes only
/// to an agent the client verifies: `https://` checked against `--ca-file`. Over plain http
/// (loopback included) anything that holds the port, say while the agent restarts, would
/// collect an admin's token; with `--insecure-skip-tls-verify` anyone on the path could.
fn token_to_send(
    found: Option<(String, TokenSource)>,
    url: &str,
    tls: &client::ClientTls,
) -> (Option<String>, Option<String>) {
    let Some((token, source)) = found else {
        return (None, None);
    };
    let https = url
        .trim()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let verified = https && matches!(tls, client::ClientTls::Trust(_));
    if source.explicit() || verified {
        return (Some(token), None);
    }
    let why = if https {
        "the agent's certificate is not checked (--insecure-skip-tls-verify)"
    } else {
        "plain http cannot tell the agent from anything else that listens on that port"
    };
    (
        None,
        Some(format!(
            "nodeguard: not sending {} to {}: {why}; give --token or --token-file to send a token anyway, or ask https:// with --ca-file",
            source.describe(),
            url.trim()
        )),
    )
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
    let tls = client_tls(&args)?;
    let (token, kept_back) = token_to_send(token(&args)?, &args.url, &tls);
    if let Some(why) = kept_back {
        eprintln!("{why}");
    }
    warn_if_token_in_clear(&args.url, token.as_deref());
    let endpoint = client::Endpoint::new(args.url.clone(), token).with_tls(tls);
    let base = &endpoint;
    let width = crate::output::width();
    match args.what {
        QueryWhat::Findings(filters) => {
            let query = findings_query(filters)?;
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
        QueryWhat::Containers(filters) => {
            let query = containers_query(filters);
            let answer = client::containers_matching(base, &query)?;
            print(args.output, &answer, || {
                client::containers_table_width(&answer.containers, width)
            })
        }
        QueryWhat::Processes(filters) => {
            let query = processes_query(filters)?;
            let answer = client::processes_matching(base, &query)?;
            print(args.output, &answer, || {
                client::processes_table_width(&answer.processes, width)
            })
        }
        QueryWhat::Execs {
            since,
            namespace,
            pod,
            container,
        } => {
            let query = ExecsQuery {
                since: since
                    .map(|s| Since::parse(&s))
                    .transpose()
                    .map_err(anyhow::Error::msg)
                    .context("--since")?,
                namespace,
                pod,
                container,
            };
            let answer = client::execs(base, &query)?;
            print(args.output, &answer, || execs_table(&answer, width))
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

/// One line per observation: when, pid, where, the executable and what it raised.
fn execs_table(answer: &nodeguard_api::types::ExecsResponse, width: usize) -> String {
    let mut out = format!(
        "{:<24} {:>7} {:<32} {:<28} FINDINGS\n",
        "OBSERVED", "PID", "POD/CONTAINER", "EXE"
    );
    for o in &answer.execs {
        let place = match (&o.pod, &o.process.container_id) {
            (Some(pod), _) => format!(
                "{}/{}/{}",
                pod.namespace,
                pod.name,
                pod.container_name.as_deref().unwrap_or("?")
            ),
            (None, Some(id)) => nodeguard_model::short_id(id).to_string(),
            (None, None) => "host".to_string(),
        };
        let findings: Vec<String> = o
            .findings
            .iter()
            .map(|f| format!("{}:{}", f.severity, f.kind))
            .collect();
        let line = format!(
            "{:<24} {:>7} {:<32} {:<28} {}",
            o.observed_at.to_string(),
            o.process.pid,
            place,
            o.process.exe.as_deref().unwrap_or("-"),
            if findings.is_empty() {
                "-".to_string()
            } else {
                findings.join(",")
            }
        );
        out.push_str(&client::fit(&line, width));
        out.push('\n');
    }
    let h = &answer.history;
    out.push_str(&format!(
        "{} shown; history holds {} of at most {} ({} of {} bytes, {} s), {} dropped by its caps\n",
        answer.count, h.entries, h.max_entries, h.bytes, h.max_bytes, h.max_age_secs, h.dropped
    ));
    out
}

// The filters of `query` and `fleet query` as the agent's query strings, each flag checked
// here (and named in its error), so a typo fails once, before any agent is asked.

/// `/v1/findings` filters (`--kind`, `--since` parsed here).
pub(crate) fn findings_query(filters: FindingsFilters) -> Result<FindingsQuery> {
    let FindingsFilters {
        namespace,
        pod,
        container,
        kind,
        severity,
        since,
    } = filters;
    Ok(FindingsQuery {
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
    })
}

/// `/v1/processes` filters, checked as the agent checks them (`--sha256`, `--container`).
pub(crate) fn processes_query(filters: ProcessesFilters) -> Result<ProcessesQuery> {
    let ProcessesFilters {
        container,
        sha256,
        pid,
    } = filters;
    let query = ProcessesQuery {
        container,
        sha256,
        pid,
        namespace: None,
        pod: None,
    };
    ProcessesQuery::parse(Some(&query.to_query_string())).map_err(anyhow::Error::from)?;
    Ok(query)
}

/// `/v1/containers` filters.
pub(crate) fn containers_query(filters: ContainersFilters) -> ContainersQuery {
    ContainersQuery {
        namespace: filters.namespace,
        pod: filters.pod,
        container: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::ClientTls;

    fn found(source: TokenSource) -> Option<(String, TokenSource)> {
        Some(("secret".to_string(), source))
    }

    #[test]
    fn a_found_token_goes_only_to_an_agent_verified_over_https() {
        let plain = "http://127.0.0.1:9717";
        let https = "https://127.0.0.1:9717";
        let trust = ClientTls::Trust(vec![vec![1]]);
        for source in [TokenSource::Kubeconfig, TokenSource::ServiceAccount] {
            for (url, tls) in [
                (plain, &ClientTls::NoCa),
                (plain, &trust),
                (https, &ClientTls::InsecureSkipVerify),
            ] {
                let (sent, why) = token_to_send(found(source), url, tls);
                assert_eq!(sent, None, "{source:?} to {url} with {tls:?}");
                let why = why.unwrap();
                assert!(
                    why.contains(source.describe()) && why.contains("--token"),
                    "{why}"
                );
            }
            let (sent, why) = token_to_send(found(source), "HTTPS://node:9717", &trust);
            assert_eq!((sent.as_deref(), why), (Some("secret"), None));
        }
        // Given on purpose: sent as asked, plain http included.
        for source in [TokenSource::Flag, TokenSource::File] {
            for (url, tls) in [
                (plain, &ClientTls::NoCa),
                (https, &ClientTls::InsecureSkipVerify),
            ] {
                let (sent, why) = token_to_send(found(source), url, tls);
                assert_eq!((sent.as_deref(), why), (Some("secret"), None));
            }
        }
        assert_eq!(token_to_send(None, plain, &ClientTls::NoCa), (None, None));
    }
}
