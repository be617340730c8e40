//! `nodeguard query`: asks a running agent and prints tables or JSON.

use crate::cli::{OutputFormat, QueryArgs, QueryWhat};
use anyhow::{Context, Result};
use nodeguard_api::client;
use nodeguard_api::{FindingsQuery, ProcessesQuery};
use nodeguard_model::{FindingKind, Timestamp};
use serde::Serialize;

pub fn run(args: QueryArgs) -> Result<()> {
    let base = args.url.as_str();
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
