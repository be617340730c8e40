//! The one text renderer of nodeguard: `nodeguard scan` and `nodeguard query` both print
//! through it, so a finding, a container or a size reads the same in both.
//!
//! What a responder reads first comes first: a summary (findings per severity, per kind, per
//! pod), then the findings worst first, grouped by pod and container, one line each. The
//! inventories (containers, processes, files) come only when asked for. Every line fits the
//! given width and ends in `…` when cut; JSON output keeps everything. Every cell is escaped,
//! so a process name or path with control characters (`\n`, ANSI escapes) cannot forge lines
//! or colours.

use nodeguard_model::{
    escape_path, short_id, Container, FileEntry, Finding, FindingKind, ProcessEntry, Report,
    Severity, Timestamp, TrackedFinding,
};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt::Write as _;

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

/// Open findings as `nodeguard query findings` prints them: the summary, then the list
/// (low findings counted, not listed: [`Listing::QUERY`]).
pub fn findings_report(findings: &[TrackedFinding], width: usize) -> String {
    findings_report_with(findings, Listing::QUERY, width)
}

/// [`findings_report`] listing the findings `listing` says.
pub fn findings_report_with(findings: &[TrackedFinding], listing: Listing, width: usize) -> String {
    let lines = tracked_lines(findings);
    let mut out = summary(&lines, 0, width);
    out.push('\n');
    out.push_str(&findings_list(&lines, listing, width));
    out
}

/// Findings worst first, grouped by pod and container, without the summary and unlimited in
/// width (for library users; the CLI uses [`findings_report`]).
pub fn findings_table(findings: &[TrackedFinding]) -> String {
    findings_list(&tracked_lines(findings), Listing::ALL, usize::MAX)
}

fn tracked_lines(findings: &[TrackedFinding]) -> Vec<FindingLine<'_>> {
    findings
        .iter()
        .map(|t| FindingLine {
            finding: &t.finding,
            first_seen: Some(t.first_seen),
        })
        .collect()
}

/// Counts per severity, per kind and per pod (the worst [`SUMMARY_PODS`]), and the number of
/// warnings when there are any.
pub fn summary(findings: &[FindingLine], warnings: usize, width: usize) -> String {
    let mut out = String::new();
    let total = counts(findings.iter().map(|l| l.finding.severity));
    push_line(
        &mut out,
        &format!(
            "FINDINGS {}: {}{}",
            findings.len(),
            severity_counts(&total),
            if warnings > 0 {
                format!("; {warnings} warnings (listed at the end)")
            } else {
                String::new()
            }
        ),
        width,
    );
    if findings.is_empty() {
        return out;
    }

    let mut by_kind: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut by_pod: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for line in findings {
        let f = line.finding;
        by_kind.entry(f.kind.as_str()).or_default()[f.severity as usize] += 1;
        by_pod.entry(pod_label(f)).or_default()[f.severity as usize] += 1;
    }
    let header = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];
    let mut kinds: Vec<(&str, [usize; 4])> = by_kind.into_iter().collect();
    kinds.sort_by_key(|(name, c)| (Reverse(worst_first(c)), *name));
    let mut table = Table::new(&["BY KIND", header[0], header[1], header[2], header[3]]);
    for (kind, c) in &kinds {
        table.row(count_row(kind, c));
    }
    out.push('\n');
    out.push_str(&table.render(width));

    let mut pods: Vec<(String, [usize; 4])> = by_pod.into_iter().collect();
    pods.sort_by(|(a, ca), (b, cb)| {
        (Reverse(worst_first(ca)), a).cmp(&(Reverse(worst_first(cb)), b))
    });
    let title = if pods.len() > SUMMARY_PODS {
        format!("BY POD (worst {SUMMARY_PODS} of {})", pods.len())
    } else {
        "BY POD".to_string()
    };
    let mut table = Table::new(&[&title, header[0], header[1], header[2], header[3]]);
    for (pod, c) in pods.iter().take(SUMMARY_PODS) {
        table.row(count_row(pod, c));
    }
    out.push('\n');
    out.push_str(&table.render(width));
    out
}

/// Findings worst first: one header line per pod and container (worst group first), then one
/// line per finding at or above `listing.min_severity`, one process's `dangerous_capability`
/// findings of one severity folded into one line. A group with nothing listed is left out;
/// the last line counts what was not listed. The group headers count every finding.
fn findings_list(findings: &[FindingLine], listing: Listing, width: usize) -> String {
    let mut groups: BTreeMap<(String, String), Vec<FindingLine>> = BTreeMap::new();
    for line in findings {
        let f = line.finding;
        groups
            .entry((pod_label(f), container_label(f)))
            .or_default()
            .push(*line);
    }
    let mut groups: Vec<((String, String), Vec<FindingLine>)> = groups.into_iter().collect();
    for (_, lines) in &mut groups {
        lines.sort_by(|a, b| {
            let key = |l: &FindingLine| {
                (
                    Reverse(l.finding.severity),
                    l.finding.kind,
                    l.finding.pid,
                    l.finding.subject.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
    }
    let group_counts = |lines: &[FindingLine]| counts(lines.iter().map(|l| l.finding.severity));
    groups.sort_by(|(ka, a), (kb, b)| {
        (Reverse(worst_first(&group_counts(a))), ka)
            .cmp(&(Reverse(worst_first(&group_counts(b))), kb))
    });

    let listed = |l: &&FindingLine| l.finding.severity >= listing.min_severity;
    let with_seen = findings.iter().any(|l| l.first_seen.is_some());
    let mut header = vec!["  SEVERITY", "KIND", "PID"];
    if with_seen {
        header.push("FIRST SEEN");
    }
    header.push("DETAIL");
    // Rows first without their detail, so a folded line's capabilities can be split over as
    // many lines as it takes to show every one within the width.
    let mut pending: Vec<(Vec<String>, Detail)> = Vec::new();
    let mut group_at: Vec<(usize, String)> = Vec::new();
    let mut not_listed = [0usize; 4];
    for ((pod, container), lines) in &groups {
        let shown: Vec<&FindingLine> = lines.iter().filter(listed).collect();
        for l in lines.iter().filter(|l| !listed(l)) {
            not_listed[l.finding.severity as usize] += 1;
        }
        if shown.is_empty() {
            continue;
        }
        group_at.push((
            pending.len(),
            format!(
                "{pod}{container}: {}",
                severity_counts(&group_counts(lines))
            ),
        ));
        for run in folded(&shown) {
            let f = run[0].finding;
            let mut cells = vec![
                format!("  {}", f.severity.as_str().to_uppercase()),
                f.kind.to_string(),
                f.pid.map_or("-".to_string(), |p| p.to_string()),
            ];
            if with_seen {
                // The earliest of the folded findings.
                let first = run.iter().filter_map(|l| l.first_seen).min();
                cells.push(first.map_or("-".to_string(), |t| t.to_string()));
            }
            pending.push((cells, folded_detail(&run)));
        }
    }
    // What is left of the width for the detail column.
    let mut used = 0usize;
    for col in 0..header.len() - 1 {
        let widest = pending
            .iter()
            .map(|(cells, _)| cells[col].chars().count())
            .chain(std::iter::once(header[col].chars().count()))
            .max()
            .unwrap_or(0);
        used = used.saturating_add(widest + 2);
    }
    let room = width.saturating_sub(used);
    let mut table = Table::new(&header);
    let mut groups_left = group_at.into_iter().peekable();
    for (i, (cells, detail)) in pending.into_iter().enumerate() {
        while let Some((_, text)) = groups_left.next_if(|(at, _)| *at == i) {
            table.text(text);
        }
        for text in detail.lines(room) {
            let mut row = cells.clone();
            row.push(text);
            table.row(row);
        }
    }
    if table.lines.is_empty() {
        table.text("(none)".to_string());
    }
    let mut out = table.render(width);
    let hidden: usize = not_listed.iter().sum();
    if hidden > 0 {
        let names: Vec<String> = Severity::ALL
            .iter()
            .rev()
            .filter(|s| not_listed[**s as usize] > 0)
            .map(|s| format!("{} {s}", not_listed[*s as usize]))
            .collect();
        push_line(
            &mut out,
            &format!(
                "not listed: {} (counted above; {} lists them, -o json has everything)",
                names.join(", "),
                listing.hint
            ),
            width,
        );
    }
    out
}

/// Runs of `lines` (sorted by severity, kind, pid) that print as one line: one process's
/// `dangerous_capability` findings of one severity; every other finding alone.
fn folded<'a>(lines: &[&'a FindingLine<'a>]) -> Vec<Vec<&'a FindingLine<'a>>> {
    let foldable = |f: &Finding| {
        f.kind == FindingKind::DangerousCapability && f.pid.is_some() && f.aggregate.is_none()
    };
    let mut runs: Vec<Vec<&FindingLine>> = Vec::new();
    for line in lines {
        let f = line.finding;
        if let Some(run) = runs.last_mut() {
            let head = run[0].finding;
            if foldable(f) && foldable(head) && (head.severity, head.pid) == (f.severity, f.pid) {
                run.push(line);
                continue;
            }
        }
        runs.push(vec![line]);
    }
    runs
}

/// The detail of a listed line: one finding's text, or the text of folded findings whose
/// subjects (capability names) stand where the first one's stood.
enum Detail {
    Plain(String),
    Folded {
        before: String,
        names: Vec<String>,
        after: String,
    },
}

impl Detail {
    /// The lines it takes within `room` characters: one, or for folded names as many as it
    /// takes to show every name (each line a whole sentence naming some of them).
    fn lines(self, room: usize) -> Vec<String> {
        match self {
            Detail::Plain(text) => vec![text],
            Detail::Folded {
                before,
                names,
                after,
            } => {
                let frame = before.chars().count() + after.chars().count();
                let mut out = Vec::new();
                let mut chunk: Vec<&str> = Vec::new();
                let mut len = frame;
                for name in &names {
                    let sep = if chunk.is_empty() { 0 } else { 2 };
                    if !chunk.is_empty() && len + sep + name.chars().count() > room {
                        out.push(format!("{before}{}{after}", chunk.join(", ")));
                        chunk.clear();
                        len = frame;
                    }
                    len += name.chars().count() + if chunk.is_empty() { 0 } else { 2 };
                    chunk.push(name);
                }
                if !chunk.is_empty() {
                    out.push(format!("{before}{}{after}", chunk.join(", ")));
                }
                out
            }
        }
    }
}

/// A run's detail: the one finding's message, or for a process's folded capabilities their
/// names (the PID column says whose), as few per line as the width needs.
fn folded_detail(run: &[&FindingLine]) -> Detail {
    if run.len() == 1 {
        return Detail::Plain(detail(run[0].finding));
    }
    Detail::Folded {
        before: String::new(),
        names: run.iter().map(|l| l.finding.subject.clone()).collect(),
        after: " in its effective set".to_string(),
    }
}

/// The finding's message without the `container 4f3c1a2b3c4d: ` / `host: ` prefix its group
/// header already says.
fn detail(f: &Finding) -> String {
    let message = f.message.as_str();
    let prefix = match f.container_id.as_deref() {
        Some(id) => format!("container {}: ", short_id(id)),
        None => "host: ".to_string(),
    };
    message.strip_prefix(&prefix).unwrap_or(message).to_string()
}

/// The pod a finding belongs to: `namespace/pod`; a container without pod metadata stands
/// for itself (`container 4f3c1a2b3c4d`), and host findings are `host`.
fn pod_label(f: &Finding) -> String {
    match (&f.namespace, &f.pod, &f.container_id) {
        (Some(ns), Some(pod), _) => format!("{ns}/{pod}"),
        (_, _, Some(id)) => format!("container {}", short_id(id)),
        (_, _, None) => "host".to_string(),
    }
}

/// What a group header adds to [`pod_label`]: the container within the pod.
fn container_label(f: &Finding) -> String {
    match (&f.pod, &f.container_name, &f.container_id) {
        (Some(_), Some(name), Some(id)) => format!(" container {name} ({})", short_id(id)),
        (Some(_), None, Some(id)) => format!(" container {}", short_id(id)),
        (None, _, Some(_)) => " (no pod metadata)".to_string(),
        (_, _, None) => " processes".to_string(),
    }
}

fn counts(severities: impl Iterator<Item = Severity>) -> [usize; 4] {
    let mut c = [0usize; 4];
    for s in severities {
        c[s as usize] += 1;
    }
    c
}

/// Sort key: more criticals first, then more highs, and so on.
fn worst_first(c: &[usize; 4]) -> [usize; 4] {
    [c[3], c[2], c[1], c[0]]
}

/// `critical 2, high 1, medium 1, low 2`
fn severity_counts(c: &[usize; 4]) -> String {
    Severity::ALL
        .iter()
        .rev()
        .map(|s| format!("{s} {}", c[*s as usize]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count_row(name: &str, c: &[usize; 4]) -> Vec<String> {
    let mut row = vec![name.to_string()];
    row.extend(worst_first(c).iter().map(|n| n.to_string()));
    row
}

/// One line per container, with its pod and the limits that bind it.
pub fn containers_table(containers: &[Container]) -> String {
    containers_table_width(containers, usize::MAX)
}

/// [`containers_table`] with lines cut at `width`.
pub fn containers_table_width(containers: &[Container], width: usize) -> String {
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
            limits.cpu_cores.map_or_else(unlimited, cores),
            limits.pids.map_or_else(unlimited, |p| p.to_string()),
            opt(pod.and_then(|p| p.image.as_deref())),
        ]);
    }
    table.render(width)
}

/// One line per process, with its container and pod.
pub fn processes_table(processes: &[ProcessEntry]) -> String {
    processes_table_width(processes, usize::MAX)
}

/// [`processes_table`] with lines cut at `width`.
pub fn processes_table_width(processes: &[ProcessEntry], width: usize) -> String {
    let mut table = Table::new(&[
        "PID",
        "PPID",
        "CONTAINER",
        "NAMESPACE",
        "POD",
        "UID",
        "COMMAND",
        "SHA256",
        "IMAGE",
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
            if p.exited {
                format!("{} (exited)", p.command)
            } else {
                p.command.clone()
            },
            opt(p.sha256.as_deref().map(short_id)),
            image_cell(p.image_verdict.as_ref()),
            exe,
        ]);
    }
    table.render(width)
}

/// The IMAGE cell of a process: its image verdict in a word (`MISMATCH` shouts: it is a
/// critical finding), `-` when not judged (host processes, verification off).
fn image_cell(verdict: Option<&nodeguard_model::ImageVerdict>) -> String {
    use nodeguard_model::ImageVerdict;
    match verdict {
        None => "-",
        Some(ImageVerdict::Verified { .. }) => "verified",
        Some(ImageVerdict::Mismatch { .. }) => "MISMATCH",
        Some(ImageVerdict::NotFromImage) => "not-image",
        Some(ImageVerdict::Unverifiable { .. }) => "unverifiable",
    }
    .to_string()
}

/// One line per setuid/setgid/file-capability file.
fn files_table(files: &[FileEntry], containers: &[Container], width: usize) -> String {
    let names: BTreeMap<&str, Option<&str>> = containers
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                c.pod.as_ref().and_then(|p| p.container_name.as_deref()),
            )
        })
        .collect();
    let mut table = Table::new(&["CONTAINER", "LAYER", "MODE", "UID", "CAPS", "PATH"]);
    for f in files {
        let name = names.get(f.container_id.as_str()).copied().flatten();
        table.row(vec![
            container_cell(Some(&f.container_id), name),
            format!("{:?}", f.layer).to_lowercase(),
            format!("{:04o}", f.mode & 0o7777),
            f.uid.to_string(),
            f.capabilities.clone().unwrap_or_else(|| "-".into()),
            f.path.clone(),
        ]);
    }
    table.render(width)
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

fn unlimited() -> String {
    "unlimited".to_string()
}

/// Bytes in binary units, as Kubernetes spells them (`256Mi`, `1.5Gi`): the one unit style of
/// every table.
pub fn bytes(n: u64) -> String {
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

/// CPU cores as Kubernetes writes a quantity: whole cores plain, fractions in millicores.
pub fn cores(c: f64) -> String {
    let milli = (c * 1000.0).round();
    if milli % 1000.0 == 0.0 {
        format!("{}", milli / 1000.0)
    } else {
        format!("{milli}m")
    }
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

/// Appends `text` as one line of at most `width` characters (escaped, cut with `…`).
fn push_line(out: &mut String, text: &str, width: usize) {
    out.push_str(&fit(&escape_path(text.as_bytes()), width));
    out.push('\n');
}

/// `line` cut to `width` characters, the last one `…` when something was cut.
pub fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

enum Line {
    Cells(Vec<String>),
    /// A line outside the columns (a group header).
    Text(String),
}

/// Columns separated by two spaces, each as wide as its widest cell; the last column is not
/// padded, so no line ends in spaces. Lines are cut at the width given to `render`.
struct Table {
    header: Vec<String>,
    lines: Vec<Line>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            lines: Vec::new(),
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
        self.lines.push(Line::Cells(cells));
    }

    fn text(&mut self, text: String) {
        self.lines.push(Line::Text(escape_path(text.as_bytes())));
    }

    fn render(&self, width: usize) -> String {
        let header = Line::Cells(self.header.clone());
        let lines: Vec<&Line> = std::iter::once(&header)
            .filter(|_| !self.header.is_empty())
            .chain(&self.lines)
            .collect();
        let mut widths: Vec<usize> = Vec::new();
        for line in &lines {
            if let Line::Cells(cells) = line {
                if widths.len() < cells.len() {
                    widths.resize(cells.len(), 0);
                }
                for (i, cell) in cells.iter().enumerate() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        for line in lines {
            let text = match line {
                Line::Text(text) => text.clone(),
                Line::Cells(cells) => {
                    let mut text = String::new();
                    for (i, cell) in cells.iter().enumerate() {
                        if i + 1 == cells.len() {
                            text.push_str(cell);
                        } else {
                            let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
                        }
                    }
                    text
                }
            };
            out.push_str(&fit(&text, width));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{FindingKind, Timestamp};

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
