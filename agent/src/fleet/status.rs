//! `nodeguard fleet status`: a table (or JSON) of every Node and its agent's Lease, and
//! exit status 3 under `--fail-on uncovered` when a node is stale or missing.

use super::EXIT_UNCOVERED;
use crate::cli::{FleetFailOn, FleetStatusArgs, OutputFormat};
use anyhow::{Context, Result};
use nodeguard_kube::fleet::{Coverage, FleetStatus, NodeStatus};
use nodeguard_model::clean;
use std::fmt::Write as _;
use std::process::ExitCode;

/// Widest a cell from a Lease (written by an agent, so hostile) may be.
const CELL: usize = 40;

pub async fn run(args: FleetStatusArgs) -> Result<ExitCode> {
    let client = nodeguard_kube::fleet::client(args.kubeconfig.as_deref())
        .await
        .context("cannot build a Kubernetes client")?;
    let status = nodeguard_kube::fleet::status(&client, &args.namespace, env!("CARGO_PKG_VERSION"))
        .await
        .context("fleet status needs list on nodes and on leases in the agents' namespace")?;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&status)? + "\n",
        OutputFormat::Table => table(&status, crate::output::width()),
    };
    crate::output::print(&text).context("cannot write the status")?;
    let fail = match args.fail_on {
        Some(FleetFailOn::Uncovered) => status.any_uncovered(),
        None => false,
    };
    Ok(if fail {
        ExitCode::from(EXIT_UNCOVERED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The table: one line per node (orphaned Leases last), then what does not add up, then
/// the summary.
pub fn table(status: &FleetStatus, width: usize) -> String {
    let header = [
        "NODE",
        "STATUS",
        "VERSION",
        "CRIT",
        "HIGH",
        "MED",
        "LOW",
        "LAST SCAN",
        "RENEWED",
        "ADDRESS",
    ];
    let rows: Vec<[String; 10]> = status.nodes.iter().map(|r| cells(r, status)).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(&nodeguard_table::fit(text.trim_end(), width));
        out.push('\n');
    };
    line(&header, &mut out);
    for row in &rows {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&refs, &mut out);
    }
    for r in status.nodes.iter().filter(|r| !r.problems.is_empty()) {
        for p in &r.problems {
            let _ = writeln!(out, "note: {}: {}", clean(&r.node, CELL), clean(p, 200));
        }
    }
    let s = &status.summary;
    let _ = writeln!(
        out,
        "\n{} nodes: {} covered, {} stale, {} missing; {} orphaned Lease{}; {} on another version than {} (this CLI: {}); open findings: {}",
        s.nodes,
        s.covered,
        s.stale,
        s.missing,
        s.orphaned,
        if s.orphaned == 1 { "" } else { "s" },
        s.version_skew,
        clean(&status.reference_version, CELL),
        status.cli_version,
        s.findings,
    );
    out
}

fn cells(r: &NodeStatus, status: &FleetStatus) -> [String; 10] {
    let count = |f: fn(&nodeguard_model::fleet::SeverityCounts) -> u64| {
        r.findings
            .map_or_else(|| "-".to_string(), |c| f(&c).to_string())
    };
    let version = match &r.version {
        Some(v) if r.version_skew => format!("{} (skew)", clean(v, CELL)),
        Some(v) => clean(v, CELL),
        None => "-".to_string(),
    };
    let age = |t: Option<nodeguard_model::Timestamp>| {
        t.map_or_else(
            || "-".to_string(),
            |t| {
                let secs = status
                    .generated_at
                    .0
                    .duration_since(t.0)
                    .map_or(0, |d| d.as_secs());
                format!("{} ago", short_age(secs))
            },
        )
    };
    [
        clean(&r.node, 63),
        r.coverage.as_str().to_string(),
        version,
        count(|c| c.critical),
        count(|c| c.high),
        count(|c| c.medium),
        count(|c| c.low),
        age(r.last_scan),
        if r.coverage == Coverage::Missing {
            "-".to_string()
        } else {
            age(r.renewed)
        },
        r.address
            .as_deref()
            .map_or_else(|| "-".to_string(), |a| clean(a, CELL)),
    ]
}

/// `42s`, `5m`, `3h`, `2d`.
fn short_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_kube::fleet::{classify, LeaseView, NodeView};
    use nodeguard_model::fleet::{lease_name, HeartbeatClaims, SeverityCounts};
    use nodeguard_model::Timestamp;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> Timestamp {
        Timestamp(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn the_table_shows_each_node_its_coverage_and_escapes_what_agents_wrote() {
        let nodes = ["a", "b"].map(|n| NodeView {
            name: n.into(),
            address: Some("10.0.0.1".into()),
        });
        let lease = LeaseView {
            name: lease_name("a"),
            holder: Some("pod".into()),
            renew_time: Some(at(990)),
            duration_seconds: Some(30),
            claims: HeartbeatClaims {
                version: Some("9.9\u{1b}[31m".into()),
                findings: Some(SeverityCounts {
                    critical: 4,
                    ..Default::default()
                }),
                last_scan: Some(at(700)),
                interval_seconds: Some(10),
                ..Default::default()
            },
        };
        let status = classify("nodeguard", &nodes, vec![lease], at(1000), "0.1.0");
        let text = table(&status, 200);
        assert!(!text.contains('\u{1b}'), "{text}");
        let a = text.lines().find(|l| l.starts_with("a ")).unwrap();
        assert!(
            a.contains("covered") && a.contains(" 4 ") && a.contains("5m ago"),
            "{a}"
        );
        assert!(a.contains("10s ago"), "{a}");
        let b = text.lines().find(|l| l.starts_with("b ")).unwrap();
        assert!(b.contains("missing"), "{b}");
        assert!(
            text.contains("2 nodes: 1 covered, 0 stale, 1 missing"),
            "{text}"
        );
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(short_age(5), "5s");
        assert_eq!(short_age(600), "10m");
        assert_eq!(short_age(3 * 3600), "3h");
        assert_eq!(short_age(3 * 86_400), "3d");
    }
}
