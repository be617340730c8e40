//! The one text renderer of nodeguard: `nodeguard scan` and `nodeguard query` both print
//! through it, so a finding, a container or a size reads the same in both.
//!
//! What a responder reads first comes first: a summary (findings per severity, per kind, per
//! pod), then the findings worst first, grouped by pod and container, one line each. The
//! inventories (containers, processes, files) come only when asked for. Every line fits the
//! given width and ends in `…` when cut; JSON output keeps everything. Every cell is escaped,
//! so a process name or path with control characters (`\n`, ANSI escapes) cannot forge lines
//! or colours.
//!
//! `findings.rs` prints the summary and the finding list, `inventory.rs` the containers,
//! processes and files, and `cells.rs` holds the cells (units, escaping) and the table
//! layout every part uses.

mod cells;
mod findings;
mod inventory;

pub use cells::{bytes, cores, fit};
pub use findings::{findings_report, findings_report_with, findings_table, summary};
pub use inventory::{
    containers_table, containers_table_width, processes_table, processes_table_width,
};

use cells::{push_line, Table};
use findings::{counts, findings_list, severity_counts};
use inventory::files_table;
use nodeguard_model::{escape_path, Container, Finding, ProcessEntry, Report, Severity, Timestamp};
use std::collections::BTreeMap;

/// Width of a line when the output is not a terminal.
pub const DEFAULT_WIDTH: usize = 120;

/// How many pods the summary lists (the worst ones) before saying how many more there are.
pub const SUMMARY_PODS: usize = 10;

/// How many warnings a table shows before pointing at the JSON output for the rest.
pub const SHOWN_WARNINGS: usize = 20;

/// What to print besides the summary and the findings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inventory {
    pub containers: bool,
    pub processes: bool,
    pub files: bool,
}

impl Inventory {
    /// Every inventory table.
    pub const ALL: Inventory = Inventory {
        containers: true,
        processes: true,
        files: true,
    };
}

/// Which findings the list shows. The summary above it always counts every finding, and a
/// footer line counts the ones left out and names `hint`, the flag that lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    /// The least severity listed one per line.
    pub min_severity: Severity,
    /// What lists the rest, for the footer (`scan --show-low`).
    pub hint: &'static str,
}

impl Listing {
    /// `nodeguard scan`'s default: medium and up, low counted.
    pub const SCAN: Listing = Listing {
        min_severity: Severity::Medium,
        hint: "scan --show-low",
    };
    /// `nodeguard query findings`' default: medium and up, low counted.
    pub const QUERY: Listing = Listing {
        min_severity: Severity::Medium,
        hint: "query findings --severity low",
    };
    /// Every finding.
    pub const ALL: Listing = Listing {
        min_severity: Severity::Low,
        hint: "",
    };
}

/// One finding to show, with when it was first seen when the agent tracks that.
#[derive(Debug, Clone, Copy)]
pub struct FindingLine<'a> {
    pub finding: &'a Finding,
    pub first_seen: Option<Timestamp>,
}

/// A whole report, as `nodeguard scan` and `nodeguard query report` print it: a header line,
/// the summary, the findings worst first, the inventories asked for, the warnings and a
/// footer of scan statistics. Lines are at most `width` characters. Low findings are counted,
/// not listed ([`Listing::SCAN`]; [`report_table_with`] chooses).
pub fn report_table(report: &Report, inventory: Inventory, width: usize) -> String {
    report_table_with(report, inventory, Listing::SCAN, width)
}

/// [`report_table`] listing the findings `listing` says.
pub fn report_table_with(
    report: &Report,
    inventory: Inventory,
    listing: Listing,
    width: usize,
) -> String {
    let mut out = String::new();
    let in_containers = report
        .processes
        .iter()
        .filter(|p| p.container_id.is_some())
        .count();
    push_line(
        &mut out,
        &format!(
            "node {}  scanned {} ({} ms): {} containers, {} processes ({} in containers), \
             {} setuid/setgid/capability files",
            report.node,
            report.scanned_at,
            report.duration_ms,
            report.containers.len(),
            report.processes.len(),
            in_containers,
            report.files.len()
        ),
        width,
    );
    let lines: Vec<FindingLine> = report
        .findings
        .iter()
        .map(|finding| FindingLine {
            finding,
            first_seen: None,
        })
        .collect();
    out.push('\n');
    out.push_str(&summary(&lines, report.warnings.len(), width));
    out.push('\n');
    out.push_str(&findings_list(&lines, listing, width));

    if inventory.containers {
        out.push_str("\nCONTAINERS\n");
        out.push_str(&containers_table_width(&report.containers, width));
    }
    if inventory.processes {
        let pods: BTreeMap<&str, &Container> = report
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c))
            .collect();
        let entries: Vec<ProcessEntry> = report
            .processes
            .iter()
            .filter(|p| p.container_id.is_some())
            .map(|p| ProcessEntry {
                process: p.clone(),
                pod: p
                    .container_id
                    .as_deref()
                    .and_then(|id| pods.get(id))
                    .and_then(|c| c.pod.clone()),
            })
            .collect();
        out.push_str("\nCONTAINER PROCESSES\n");
        out.push_str(&processes_table_width(&entries, width));
    }
    if inventory.files {
        out.push_str("\nFILES (setuid / setgid / file capabilities)\n");
        out.push_str(&files_table(&report.files, &report.containers, width));
    }

    let shown = report.warnings.len().min(SHOWN_WARNINGS);
    if shown > 0 {
        out.push_str("\nWARNINGS\n");
        for warning in &report.warnings[..shown] {
            push_line(&mut out, &escape_path(warning.as_bytes()), width);
        }
        if report.warnings.len() > shown {
            push_line(
                &mut out,
                &format!(
                    "… {} more warnings (-o json lists them all)",
                    report.warnings.len() - shown
                ),
                width,
            );
        }
    }

    let s = &report.stats;
    let warnings = if report.warnings.len() > shown {
        format!("{shown} of {} warnings shown", report.warnings.len())
    } else {
        format!("{shown} warnings")
    };
    let hidden: Vec<&str> = [
        (!inventory.containers, "containers"),
        (!inventory.processes, "processes"),
        (!inventory.files, "files"),
    ]
    .iter()
    .filter(|(hidden, _)| *hidden)
    .map(|(_, name)| *name)
    .collect();
    out.push('\n');
    push_line(
        &mut out,
        &format!(
            "{} hashed ({} files, cache {} hits / {} misses); {} vanished, {} denied; {warnings}",
            bytes(s.bytes_hashed),
            s.files_hashed,
            s.hash_cache_hits,
            s.hash_cache_misses,
            s.processes_vanished,
            s.processes_denied,
        ),
        width,
    );
    if !hidden.is_empty() {
        push_line(
            &mut out,
            &format!(
                "not shown: {} (scan --show {} or --inventory; -o json has everything)",
                hidden.join(", "),
                hidden.join(",")
            ),
            width,
        );
    }
    out
}

/// A few lines about a report: node, time, counts, findings by severity.
pub fn report_summary(report: &Report) -> String {
    let by_severity = counts(report.findings.iter().map(|f| f.severity));
    let mut table = Table::new(&[]);
    let rows: [(&str, String); 8] = [
        ("node", report.node.clone()),
        ("scanned at", report.scanned_at.to_string()),
        ("duration", format!("{} ms", report.duration_ms)),
        ("containers", report.containers.len().to_string()),
        (
            "processes",
            format!(
                "{} ({} kernel threads)",
                report.processes.len(),
                report.processes.iter().filter(|p| p.kernel_thread).count()
            ),
        ),
        (
            "files",
            format!("{} setuid/setgid/capability files", report.files.len()),
        ),
        (
            "findings",
            format!(
                "{} ({})",
                report.findings.len(),
                severity_counts(&by_severity)
            ),
        ),
        ("warnings", report.warnings.len().to_string()),
    ];
    for (name, value) in rows {
        table.row(vec![format!("{name}:"), value]);
    }
    table.render(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{FindingKind, Timestamp, TrackedFinding};

    fn tracked(kind: FindingKind, severity: Severity, subject: &str, at: &str) -> TrackedFinding {
        let ts = Timestamp::parse(at).unwrap();
        TrackedFinding {
            finding: Finding::new(kind, severity, Some(&"ab".repeat(32)), subject, subject),
            first_seen: ts,
            last_seen: ts,
        }
    }

    #[test]
    fn findings_are_aligned_most_severe_first_and_escaped() {
        let rows = [
            tracked(
                FindingKind::RunsAsRoot,
                Severity::Medium,
                "uid 0",
                "2026-01-01T00:00:00Z",
            ),
            tracked(
                FindingKind::BinaryDrift,
                Severity::Critical,
                "/tmp/evil\n\x1b[32mOK",
                "2026-01-02T00:00:00Z",
            ),
        ];
        let text = findings_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "header, group, two findings:\n{text}");
        assert!(lines[0].trim_start().starts_with("SEVERITY "));
        assert!(lines[1].contains(&"ab".repeat(6)) && !lines[1].contains(&"ab".repeat(7)));
        assert!(lines[2].contains("CRITICAL") && lines[2].contains("binary_drift"));
        assert!(
            lines[2].ends_with("/tmp/evil\\n\\x1b[32mOK"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("MEDIUM"));
        assert!(!text.contains('\x1b'));
        // Columns line up: KIND starts at the same offset on every finding line.
        let col = lines[0].find("KIND").unwrap();
        assert!(lines[2][col..].starts_with("binary_drift"));
        assert!(lines[3][col..].starts_with("runs_as_root"));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn the_summary_counts_per_severity_kind_and_pod() {
        let mut a = tracked(
            FindingKind::RunsAsRoot,
            Severity::Medium,
            "uid 0",
            "2026-01-01T00:00:00Z",
        );
        a.finding.namespace = Some("shop".into());
        a.finding.pod = Some("web-1".into());
        let b = tracked(
            FindingKind::SetuidFile,
            Severity::Low,
            "/usr/bin/su",
            "2026-01-01T00:00:00Z",
        );
        let c = tracked(
            FindingKind::SetuidFile,
            Severity::High,
            "/tmp/x",
            "2026-01-01T00:00:00Z",
        );
        let text = findings_report(&[a, b, c], DEFAULT_WIDTH);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "FINDINGS 3: critical 0, high 1, medium 1, low 1",
            "{text}"
        );
        let kind = lines.iter().find(|l| l.starts_with("setuid_file")).unwrap();
        assert_eq!(
            kind.split_whitespace().collect::<Vec<_>>(),
            ["setuid_file", "0", "1", "0", "1"]
        );
        // The worst kind and the worst pod come first.
        let first_kind = lines
            .iter()
            .position(|l| l.starts_with("setuid_file"))
            .unwrap();
        let root_kind = lines
            .iter()
            .position(|l| l.starts_with("runs_as_root"))
            .unwrap();
        assert!(first_kind < root_kind, "{text}");
        assert!(text.contains("shop/web-1"), "{text}");
    }

    fn capability(name: &str, severity: Severity, pid: i32) -> TrackedFinding {
        let mut t = tracked(
            FindingKind::DangerousCapability,
            severity,
            name,
            "2026-01-01T00:00:00Z",
        );
        t.finding.message = format!(
            "container {}: pid {pid} (app) has {name} in its effective set",
            "abababababab"
        );
        t.finding.pid = Some(pid);
        t
    }

    #[test]
    fn low_findings_are_counted_not_listed_unless_asked() {
        let mut rows = vec![tracked(
            FindingKind::BinaryDrift,
            Severity::High,
            "/tmp/miner",
            "2026-01-01T00:00:00Z",
        )];
        for i in 0..30 {
            rows.push(tracked(
                FindingKind::SetuidFile,
                Severity::Low,
                &format!("/usr/bin/tool{i}"),
                "2026-01-01T00:00:00Z",
            ));
        }
        // A container with nothing but low findings gets no group header either.
        let mut only_low = tracked(
            FindingKind::MissingCpuLimit,
            Severity::Low,
            "cpu",
            "2026-01-01T00:00:00Z",
        );
        only_low.finding.container_id = Some("cd".repeat(32));
        rows.push(only_low);

        let text = findings_report(&rows, DEFAULT_WIDTH);
        assert!(text.starts_with("FINDINGS 32: critical 0, high 1, medium 0, low 31"));
        assert!(text.contains("/tmp/miner"), "{text}");
        assert!(!text.contains("/usr/bin/tool"), "{text}");
        // (The summary's table by pod still counts it.)
        assert!(!text.contains("cdcdcdcdcdcd (no pod metadata)"), "{text}");
        let last = text.lines().last().unwrap();
        assert_eq!(
            last,
            "not listed: 31 low (counted above; query findings --severity low lists them, -o json has everything)"
        );
        // Asked for, every one is listed and nothing is said to be missing.
        let all = findings_report_with(&rows, Listing::ALL, DEFAULT_WIDTH);
        assert_eq!(all.matches("/usr/bin/tool").count(), 30, "{all}");
        assert!(all.contains("cdcdcdcdcdcd (no pod metadata)"), "{all}");
        assert!(!all.contains("not listed"), "{all}");
        // Nothing at medium or above is ever left out, and without low findings there is no
        // footer.
        let text = findings_report(&rows[..1], DEFAULT_WIDTH);
        assert!(!text.contains("not listed"), "{text}");
    }

    #[test]
    fn one_process_capabilities_fold_into_one_line_per_severity() {
        let rows = [
            capability("CAP_SYS_ADMIN", Severity::Critical, 7),
            capability("CAP_SYS_MODULE", Severity::Critical, 7),
            capability("CAP_NET_ADMIN", Severity::High, 7),
            capability("CAP_SYS_PTRACE", Severity::High, 7),
            capability("CAP_BPF", Severity::High, 7),
            // Another process's capability stays on a line of its own.
            capability("CAP_SYSLOG", Severity::High, 9),
        ];
        let text = findings_report(&rows, usize::MAX);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("dangerous_capability") && l.starts_with("  "))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("CRITICAL"), "{text}");
        assert!(
            lines[0].ends_with("  CAP_SYS_ADMIN, CAP_SYS_MODULE in its effective set"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("  CAP_BPF, CAP_NET_ADMIN, CAP_SYS_PTRACE in its effective set"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("pid 9 (app) has CAP_SYSLOG in its effective set"),
            "{text}"
        );
        // The summary still counts each finding.
        assert!(text.starts_with("FINDINGS 6: critical 2, high 4"), "{text}");
    }

    #[test]
    fn folded_capabilities_take_more_lines_rather_than_be_cut() {
        let names = [
            "CAP_BPF",
            "CAP_DAC_READ_SEARCH",
            "CAP_LINUX_IMMUTABLE",
            "CAP_MAC_ADMIN",
            "CAP_MAC_OVERRIDE",
            "CAP_NET_ADMIN",
            "CAP_PERFMON",
            "CAP_SYSLOG",
            "CAP_SYS_BOOT",
            "CAP_SYS_PTRACE",
            "CAP_SYS_RAWIO",
            "CAP_SYS_TIME",
        ];
        let rows: Vec<TrackedFinding> = names
            .iter()
            .map(|n| capability(n, Severity::High, 4242))
            .collect();
        let text = findings_report(&rows, DEFAULT_WIDTH);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("dangerous_capability") && l.starts_with("  "))
            .collect();
        assert!(lines.len() > 1 && lines.len() < names.len(), "{text}");
        assert!(
            text.lines().all(|l| l.chars().count() <= DEFAULT_WIDTH),
            "{text}"
        );
        assert!(lines.iter().all(|l| !l.ends_with('…')), "{text}");
        for name in names {
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.contains(&format!("{name},")) || l.contains(&format!("{name} ")))
                    .count(),
                1,
                "{name} on exactly one line\n{text}"
            );
        }
    }

    #[test]
    fn lines_are_cut_at_the_width_with_an_ellipsis() {
        let long = "x".repeat(500);
        let rows = [tracked(
            FindingKind::SetuidFile,
            Severity::High,
            &long,
            "2026-01-01T00:00:00Z",
        )];
        let text = findings_report(&rows, 80);
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.lines().any(|l| l.ends_with('…')), "{text}");
        assert_eq!(fit("abc", 3), "abc");
        assert_eq!(fit("abcd", 3), "ab…");
    }

    #[test]
    fn empty_lists_still_print_the_header() {
        assert_eq!(findings_table(&[]).lines().count(), 2);
        assert!(containers_table(&[]).starts_with("CONTAINER  NAMESPACE"));
    }

    #[test]
    fn sizes_and_cores_use_kubernetes_units() {
        assert_eq!(bytes(256 << 20), "256Mi");
        assert_eq!(bytes(1536 << 20), "1.5Gi");
        assert_eq!(bytes(512), "512");
        assert_eq!(cores(0.5), "500m");
        assert_eq!(cores(2.0), "2");
    }
}
