//! `nodeguard query`: asks a running agent and prints tables or JSON.

use crate::cli::{OutputFormat, QueryArgs, QueryWhat};
use anyhow::{Context, Result};
use nodeguard_api::client;
use nodeguard_api::{FindingsQuery, ProcessesQuery};
use nodeguard_model::{FindingKind, Timestamp};
use serde::Serialize;

pub fn run(args: QueryArgs) -> Result<()> {
    let base = args.url.as_str();
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
            print(args.output, &answer, || {
                client::findings_report(&answer.findings, width)
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
