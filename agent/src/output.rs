//! The human-readable report: three tables a responder can read on a terminal.

use nodeguard_model::{escape_controls, Limits, Report};
use std::io::{self, Write};

/// Writes containers, container processes and findings as aligned tables.
pub fn write_table(out: &mut impl Write, report: &Report) -> io::Result<()> {
    writeln!(
        out,
        "node {}  scanned {}  in {} ms: {} processes ({} in containers), {} containers, {} findings",
        report.node,
        report.scanned_at,
        report.duration_ms,
        report.processes.len(),
        report
            .processes
            .iter()
            .filter(|p| p.container_id.is_some())
            .count(),
        report.containers.len(),
        report.findings.len()
    )?;

    writeln!(out, "\nCONTAINERS")?;
    let mut rows = vec![row([
        "CONTAINER",
        "RUNTIME",
        "POD",
        "QOS",
        "MEMORY",
        "CPU",
        "PIDS",
        "PROCS",
    ])];
    for c in &report.containers {
        let pod = match &c.pod {
            Some(p) => format!("{}/{}", p.namespace, p.name),
            None => c.pod_uid.clone().unwrap_or_else(|| "-".into()),
        };
        let Limits {
            memory_bytes,
            cpu_cores,
            pids,
        } = c.effective_limits;
        rows.push(vec![
            short(&c.id).to_string(),
            c.runtime.as_str().to_string(),
            pod,
            c.qos.map_or("-", |q| q.as_str()).to_string(),
            memory_bytes.map_or("unlimited".into(), human_bytes),
            cpu_cores.map_or("unlimited".into(), |c| format!("{c:.2}")),
            pids.map_or("unlimited".into(), |p| p.to_string()),
            c.pids.len().to_string(),
        ]);
    }
    write_rows(out, &rows)?;

    writeln!(out, "\nCONTAINER PROCESSES")?;
    let mut rows = vec![row([
        "PID",
        "CONTAINER",
        "UID",
        "EXE",
        "SHA256",
        "CAPS(EFF)",
        "NNP",
        "SECCOMP",
    ])];
    for p in report.processes.iter().filter(|p| p.container_id.is_some()) {
        rows.push(vec![
            p.pid.to_string(),
            p.container_id.as_deref().map_or("-", short).to_string(),
            p.uid.to_string(),
            p.exe.clone().unwrap_or_else(|| "-".into())
                + if p.exe_deleted { " (deleted)" } else { "" },
            p.sha256
                .as_deref()
                .map_or_else(|| "-".to_string(), |d| d[..16.min(d.len())].to_string()),
            p.capabilities.effective.len().to_string(),
            p.no_new_privs
                .map_or("?", |b| if b { "yes" } else { "no" })
                .to_string(),
            p.seccomp
                .map_or("?".to_string(), |s| format!("{s:?}").to_lowercase()),
        ]);
    }
    write_rows(out, &rows)?;

    if !report.files.is_empty() {
        writeln!(out, "\nFILES (setuid / setgid / capabilities)")?;
        let mut rows = vec![row(["CONTAINER", "LAYER", "MODE", "UID", "CAPS", "PATH"])];
        for f in &report.files {
            rows.push(vec![
                short(&f.container_id).to_string(),
                format!("{:?}", f.layer).to_lowercase(),
                format!("{:04o}", f.mode & 0o7777),
                f.uid.to_string(),
                f.capabilities.clone().unwrap_or_else(|| "-".into()),
                f.path.clone(),
            ]);
        }
        write_rows(out, &rows)?;
    }

    writeln!(out, "\nFINDINGS")?;
    let mut rows = vec![row(["SEVERITY", "KIND", "CONTAINER", "PID", "MESSAGE"])];
    for f in &report.findings {
        rows.push(vec![
            f.severity.as_str().to_uppercase(),
            f.kind.as_str().to_string(),
            f.container_id.as_deref().map_or("host", short).to_string(),
            f.pid.map_or("-".to_string(), |p| p.to_string()),
            f.message.clone(),
        ]);
    }
    write_rows(out, &rows)?;

    let s = &report.stats;
    writeln!(
        out,
        "\n{} hashed ({} files, cache {} hits / {} misses); {} vanished, {} denied; {} warnings",
        human_bytes(s.bytes_hashed),
        s.files_hashed,
        s.hash_cache_hits,
        s.hash_cache_misses,
        s.processes_vanished,
        s.processes_denied,
        report.warnings.len()
    )
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Writes rows with columns padded to their widest cell; the last column is not padded.
/// Control characters in cells are escaped so a hostile name cannot forge table lines or
/// colour the terminal. Paths arrive already escaped by the scan; nothing is escaped twice.
fn write_rows(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape_controls(c)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    if rows.len() == 1 {
        writeln!(out, "(none)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 * 1024 * 1024), "64.0 MiB");
    }

    #[test]
    fn hostile_cells_cannot_break_lines() {
        let mut out = Vec::new();
        write_rows(
            &mut out,
            &[
                vec!["A".into(), "B".into()],
                vec!["x".into(), "evil\nFAKE ROW".into()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
