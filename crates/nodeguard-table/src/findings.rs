//! The summary (findings per severity, kind and pod) and the findings worst first, grouped
//! by pod and container, one line each.

use super::cells::{push_line, Table};
use super::{FindingLine, Listing, SUMMARY_PODS};
use nodeguard_model::{short_id, Finding, FindingKind, Severity, TrackedFinding};
use std::cmp::Reverse;
use std::collections::BTreeMap;

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
pub(crate) fn findings_list(findings: &[FindingLine], listing: Listing, width: usize) -> String {
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
    if table.is_empty() {
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

pub(crate) fn counts(severities: impl Iterator<Item = Severity>) -> [usize; 4] {
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
pub(crate) fn severity_counts(c: &[usize; 4]) -> String {
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
