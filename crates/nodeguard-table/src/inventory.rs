//! The inventories: containers, processes, and setuid/setgid/capability files.

use super::cells::{bytes, container_cell, cores, opt, unlimited, Table};
use nodeguard_model::{short_id, Container, FileEntry, ProcessEntry};
use std::collections::BTreeMap;

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

/// One line per setuid/setgid/file-capability file.
pub(crate) fn files_table(files: &[FileEntry], containers: &[Container], width: usize) -> String {
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
