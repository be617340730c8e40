//! Plain aligned tables of API answers, for terminals. Every cell is escaped, so a process
//! name or path with control characters (`\n`, ANSI escapes) cannot forge lines or colors.

use crate::types::ProcessEntry;
use nodeguard_model::{escape_path, Container, Report, Severity, TrackedFinding};
use std::cmp::Reverse;
use std::fmt::Write as _;

/// One line per finding, most severe first, then oldest first.
pub fn findings_table(findings: &[TrackedFinding]) -> String {
    let mut sorted: Vec<&TrackedFinding> = findings.iter().collect();
    sorted.sort_by_key(|t| {
        (
            Reverse(t.finding.severity),
            t.first_seen,
            t.finding.id.as_str(),
        )
    });
    let mut table = Table::new(&[
        "ID",
        "SEVERITY",
        "KIND",
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "PID",
        "FIRST SEEN",
        "SUBJECT",
    ]);
    for t in sorted {
        let f = &t.finding;
        table.row(vec![
            f.id.clone(),
            f.severity.to_string(),
            f.kind.to_string(),
            opt(f.namespace.as_deref()),
            opt(f.pod.as_deref()),
            container_cell(f.container_id.as_deref(), f.container_name.as_deref()),
            opt(f.pid.map(|p| p.to_string()).as_deref()),
            t.first_seen.to_string(),
            f.subject.clone(),
        ]);
    }
    table.render()
}

/// One line per container, with its pod and the limits that bind it.
pub fn containers_table(containers: &[Container]) -> String {
    let mut table = Table::new(&[
        "CONTAINER",
        "NAMESPACE",
        "POD",
        "NAME",
        "RUNTIME",
        "QOS",
        "PROCS",
        "MEMORY",
        "CPU",
        "PIDS",
        "IMAGE",
    ]);
    for c in containers {
        let pod = c.pod.as_ref();
        let limits = c.effective_limits;
        table.row(vec![
            short_id(&c.id).to_string(),
            opt(pod.map(|p| p.namespace.as_str())),
            opt(pod.map(|p| p.name.as_str())),
            opt(pod.and_then(|p| p.container_name.as_deref())),
            c.runtime.as_str().to_string(),
            opt(c.qos.map(|q| q.as_str())),
            c.pids.len().to_string(),
            limits.memory_bytes.map_or_else(unlimited, bytes),
            limits.cpu_cores.map_or_else(unlimited, |c| format!("{c}")),
            limits.pids.map_or_else(unlimited, |p| p.to_string()),
            opt(pod.and_then(|p| p.image.as_deref())),
        ]);
    }
    table.render()
}

/// One line per process, with its container and pod.
pub fn processes_table(processes: &[ProcessEntry]) -> String {
    let mut table = Table::new(&[
        "PID",
        "PPID",
        "CONTAINER",
        "NAMESPACE",
        "POD",
        "UID",
        "COMMAND",
        "SHA256",
        "EXE",
    ]);
    for entry in processes {
        let p = &entry.process;
        let pod = entry.pod.as_ref();
        let exe = match (&p.exe, p.exe_deleted) {
            (Some(exe), true) => format!("{exe} (deleted)"),
            (Some(exe), false) => exe.clone(),
            (None, _) => "-".to_string(),
        };
        table.row(vec![
            p.pid.to_string(),
            p.ppid.to_string(),
            container_cell(
                p.container_id.as_deref(),
                pod.and_then(|p| p.container_name.as_deref()),
            ),
            opt(pod.map(|p| p.namespace.as_str())),
            opt(pod.map(|p| p.name.as_str())),
            p.uid.to_string(),
            p.command.clone(),
            opt(p.sha256.as_deref().map(short_id)),
            exe,
        ]);
    }
    table.render()
}

/// A few lines about a report: node, time, counts, findings by severity.
pub fn report_summary(report: &Report) -> String {
    let mut by_severity = [0usize; 4];
    for f in &report.findings {
        by_severity[f.severity as usize] += 1;
    }
    let severities = Severity::ALL
        .iter()
        .rev()
        .map(|s| format!("{s} {}", by_severity[*s as usize]))
        .collect::<Vec<_>>()
        .join(", ");
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
            format!("{} ({severities})", report.findings.len()),
        ),
        ("warnings", report.warnings.len().to_string()),
    ];
    for (name, value) in rows {
        table.row(vec![format!("{name}:"), value]);
    }
    table.render()
}

fn unlimited() -> String {
    "unlimited".to_string()
}

/// Bytes in binary units, as Kubernetes spells them (`256Mi`).
fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
        if n >= size {
            return format!("{:.1}{unit}", n as f64 / size as f64);
        }
    }
    n.to_string()
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn container_cell(id: Option<&str>, name: Option<&str>) -> String {
    match (name, id) {
        (Some(name), _) => name.to_string(),
        (None, Some(id)) => short_id(id).to_string(),
        (None, None) => "host".to_string(),
    }
}

fn opt(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// Columns separated by two spaces, each as wide as its widest cell; the last column is not
/// padded, so no line ends in spaces.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .map(|c| {
                if c.is_empty() {
                    "-".to_string()
                } else {
                    escape_path(c.as_bytes())
                }
            })
            .collect();
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = std::iter::once(&self.header)
            .filter(|h| !h.is_empty())
            .chain(&self.rows)
            .collect();
        let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in &lines {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in lines {
            for (i, cell) in line.iter().enumerate() {
                if i + 1 == line.len() {
                    out.push_str(cell);
                } else {
                    let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{Finding, FindingKind, Timestamp};

    fn tracked(kind: FindingKind, severity: Severity, subject: &str, at: &str) -> TrackedFinding {
        let ts = Timestamp::parse(at).unwrap();
        TrackedFinding {
            finding: Finding::new(kind, severity, Some(&"ab".repeat(32)), subject, "m"),
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
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID "));
        assert!(lines[1].contains("critical") && lines[1].contains("binary_drift"));
        assert!(
            lines[1].ends_with("/tmp/evil\\n\\x1b[32mOK"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("medium"));
        assert!(!text.contains('\x1b'));
        // Columns line up: SEVERITY starts at the same offset on every line.
        let col = lines[0].find("SEVERITY").unwrap();
        assert!(lines[1][col..].starts_with("critical"));
        assert!(lines[2][col..].starts_with("medium"));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
        // The container has no name: its short id stands in.
        assert!(lines[1].contains(&"ab".repeat(6)));
        assert!(!lines[1].contains(&"ab".repeat(7)));
    }

    #[test]
    fn empty_lists_still_print_the_header() {
        assert_eq!(findings_table(&[]).lines().count(), 1);
        assert!(containers_table(&[]).starts_with("CONTAINER  NAMESPACE"));
    }

    #[test]
    fn sizes_use_kubernetes_units() {
        assert_eq!(bytes(256 << 20), "256Mi");
        assert_eq!(bytes(1536 << 20), "1.5Gi");
        assert_eq!(bytes(512), "512");
    }
}
