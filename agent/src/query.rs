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

pub fn run(args: QueryArgs) -> Result<()> {
    let endpoint = client::Endpoint::new(args.url.clone(), token(&args)?);
    let base = &endpoint;
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
            print(args.output, &answer, || {
                client::findings_table(&answer.findings)
            })
        }
        QueryWhat::Containers { namespace, pod } => {
            let answer = client::containers(base, namespace.as_deref(), pod.as_deref())?;
            print(args.output, &answer, || {
                client::containers_table(&answer.containers)
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
                client::processes_table(&answer.processes)
            })
        }
        QueryWhat::Report => {
            let report = client::report(base)?;
            print(args.output, &report, || client::report_summary(&report))
        }
    }
}

fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Table => print!("{}", table()),
    }
    Ok(())
}
