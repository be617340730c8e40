//! How `nodeguard fleet query` writes its answer, as it arrives: a table with a NODE column
//! (fixed column widths, so a row is printed as soon as its node answers), or JSON lines.
//!
//! Rows are rendered where the answer is read ([`Render`], in each agent's task, item by item
//! as [`super::items`] cuts them out) and written here in batches, so a row costs one scan of
//! its bytes (JSON) or one parse of its item (table), and nothing holds a whole answer.
//!
//! JSON lines, one object per line:
//! - `{"node": N, "process": {…}}` (or `"finding"`, `"container"`): one row of one agent's
//!   answer, the item's bytes exactly as the agent's `/v1/…` endpoint sent them (checked to be
//!   JSON on one line, never parsed into values and written again);
//! - `{"node": N, "unanswered": {"reason": R, "message": M}}`: a node that did not answer
//!   (`reason` is one of `no-lease`, `no-address`, `no-fingerprint`, `refused`, `timeout`,
//!   `deadline`, `certificate-mismatch`, `certificate-untrusted`, `tls`, `401`, `403`,
//!   `http-error`, `bad-answer`);
//! - last, `{"summary": {"nodes": …, "answered": …, "unanswered": …, "rows": …}}`.
//!
//! Everything an agent sends is hostile: each cell goes through `text::clean` (controls and
//! bidi characters escaped, bounded), and the table cuts lines at the terminal's width.

use super::items::{checked, ItemsError};
use crate::cli::OutputFormat;
use nodeguard_model::text;
use serde::Serialize;
use std::io::{self, IsTerminal, Write};

/// Which endpoint every agent is asked, and how its answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Findings,
    Processes,
    Containers,
}

/// A node that gave no answer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    pub node: String,
    /// A short stable word (the JSON `reason`).
    pub reason: &'static str,
    pub message: String,
}

/// Writes rows as answers arrive; keeps only counts and the unanswered nodes.
pub struct Printer {
    kind: Kind,
    format: OutputFormat,
    out: io::BufWriter<io::Stdout>,
    width: usize,
    total: usize,
    answered: usize,
    rows: usize,
    header_written: bool,
    unanswered: Vec<Unanswered>,
    progress: bool,
    /// Stdout was closed (`| head`): stop writing, keep counting.
    closed: bool,
}

const NODE_WIDTH: usize = 24;

impl Kind {
    /// The key of one item in a JSON line.
    fn item_key(self) -> &'static str {
        match self {
            Kind::Processes => "process",
            Kind::Findings => "finding",
            Kind::Containers => "container",
        }
    }

    /// The key of the list in the agent's answer.
    pub fn list_key(self) -> &'static str {
        match self {
            Kind::Processes => "processes",
            Kind::Findings => "findings",
            Kind::Containers => "containers",
        }
    }
}

/// How one item becomes one output line; cheap to copy into every agent's task.
#[derive(Debug, Clone, Copy)]
pub struct Render {
    kind: Kind,
    format: OutputFormat,
    width: usize,
}

/// One node's rendered lines, waiting to be written.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: Vec<u8>,
    pub rows: usize,
}

/// What a node's lines start with: its JSON prefix, or its table cell.
pub struct NodeLead(String);

impl Render {
    /// The lead of every line of `node`.
    pub fn lead(&self, node: &str) -> NodeLead {
        NodeLead(match self.format {
            OutputFormat::Json => {
                let name = serde_json::to_string(node).unwrap_or_else(|_| "\"?\"".into());
                format!("{{\"node\":{name},\"{}\":", self.kind.item_key())
            }
            OutputFormat::Table => text::clean(node, 63),
        })
    }

    /// One item (as [`super::items::ItemSplitter`] cut it out) as one line into `batch`.
    pub fn item(&self, lead: &NodeLead, item: &[u8], batch: &mut Batch) -> Result<(), ItemsError> {
        match self.format {
            OutputFormat::Json => {
                let item = checked(item)?;
                batch.lines.extend_from_slice(lead.0.as_bytes());
                batch.lines.extend_from_slice(item.as_bytes());
                batch.lines.extend_from_slice(b"}\n");
            }
            OutputFormat::Table => {
                let bad = |e: serde_json::Error| ItemsError::BadItem(e.to_string());
                let cells = match self.kind {
                    Kind::Processes => process_cells(&serde_json::from_slice(item).map_err(bad)?),
                    Kind::Findings => finding_cells(&serde_json::from_slice(item).map_err(bad)?),
                    Kind::Containers => {
                        container_cells(&serde_json::from_slice(item).map_err(bad)?)
                    }
                };
                let line = table_line(&lead.0, cells);
                batch
                    .lines
                    .extend_from_slice(nodeguard_api::client::fit(&line, self.width).as_bytes());
                batch.lines.push(b'\n');
            }
        }
        batch.rows += 1;
        Ok(())
    }
}

impl Printer {
    pub fn new(kind: Kind, format: OutputFormat, total: usize) -> Printer {
        Printer {
            kind,
            format,
            out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
            width: crate::output::width(),
            total,
            answered: 0,
            rows: 0,
            header_written: false,
            unanswered: Vec::new(),
            progress: io::stderr().is_terminal(),
            closed: false,
        }
    }

    /// How items become lines for this output.
    pub fn render(&self) -> Render {
        Render {
            kind: self.kind,
            format: self.format,
            width: self.width,
        }
    }

    /// Lines rendered by [`Render::item`] (whole lines, of any node).
    pub fn rows(&mut self, batch: &Batch) -> io::Result<()> {
        if batch.rows == 0 {
            return Ok(());
        }
        if self.format == OutputFormat::Table && !self.header_written {
            self.header_written = true;
            let header = table_line("NODE", header_cells(self.kind));
            let header = nodeguard_api::client::fit(&header, self.width) + "\n";
            self.write(header.as_bytes());
        }
        self.rows += batch.rows;
        self.write(&batch.lines);
        self.flush_quietly()
    }

    /// A node whose whole answer was read (its rows came through [`Printer::rows`]).
    pub fn answered(&mut self) -> io::Result<()> {
        self.answered += 1;
        self.show_progress();
        self.flush_quietly()
    }

    /// A node that did not answer: streamed in JSON, listed after the rows in a table.
    pub fn unanswered(&mut self, why: Unanswered) -> io::Result<()> {
        if self.format == OutputFormat::Json {
            #[derive(Serialize)]
            struct Reason<'a> {
                reason: &'a str,
                message: &'a str,
            }
            #[derive(Serialize)]
            struct Line<'a> {
                node: &'a str,
                unanswered: Reason<'a>,
            }
            let line = Line {
                node: &why.node,
                unanswered: Reason {
                    reason: why.reason,
                    message: &why.message,
                },
            };
            self.json_line(&line);
        }
        self.unanswered.push(why);
        self.show_progress();
        self.flush_quietly()
    }

    /// Writes the summary (and, for a table, the unanswered nodes); `true` when every node
    /// answered.
    pub fn finish(mut self) -> io::Result<bool> {
        if self.progress {
            eprint!("\r\x1b[K");
        }
        let complete = self.unanswered.is_empty();
        match self.format {
            OutputFormat::Json => {
                #[derive(Serialize)]
                struct Summary {
                    nodes: usize,
                    answered: usize,
                    unanswered: usize,
                    rows: usize,
                }
                #[derive(Serialize)]
                struct Line {
                    summary: Summary,
                }
                let line = Line {
                    summary: Summary {
                        nodes: self.total,
                        answered: self.answered,
                        unanswered: self.unanswered.len(),
                        rows: self.rows,
                    },
                };
                self.json_line(&line);
            }
            OutputFormat::Table => {
                let mut text = String::new();
                if self.rows == 0 {
                    text.push_str("no rows\n");
                }
                text.push_str(&format!(
                    "{} of {} nodes answered ({} rows)",
                    self.answered, self.total, self.rows
                ));
                if complete {
                    text.push('\n');
                } else {
                    text.push_str(&format!("; {} did not:\n", self.unanswered.len()));
                    self.unanswered.sort_by(|a, b| a.node.cmp(&b.node));
                    text.push_str(&format!("{:<NODE_WIDTH$} {:<22} WHY\n", "NODE", "REASON"));
                    for u in &self.unanswered {
                        let line = format!(
                            "{:<NODE_WIDTH$} {:<22} {}",
                            text::clean(&u.node, 63),
                            u.reason,
                            text::clean(&u.message, 300)
                        );
                        text.push_str(&nodeguard_api::client::fit(&line, self.width));
                        text.push('\n');
                    }
                }
                self.write(text.as_bytes());
            }
        }
        self.flush_quietly()?;
        Ok(complete)
    }

    fn json_line<T: Serialize>(&mut self, value: &T) {
        if let Ok(mut line) = serde_json::to_vec(value) {
            line.push(b'\n');
            self.write(&line);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if self.out.write_all(bytes).is_err() {
            self.closed = true;
        }
    }

    fn flush_quietly(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.out.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }

    /// `answered/total` on stderr, only on a terminal.
    fn show_progress(&self) {
        if self.progress {
            eprint!(
                "\r\x1b[K{} of {} nodes: {} answered, {} not",
                self.answered + self.unanswered.len(),
                self.total,
                self.answered,
                self.unanswered.len()
            );
        }
    }
}

fn table_line(node: &str, cells: Vec<(String, usize)>) -> String {
    let mut line = format!("{node:<NODE_WIDTH$}");
    let last = cells.len().saturating_sub(1);
    for (i, (cell, width)) in cells.into_iter().enumerate() {
        line.push(' ');
        if i == last {
            line.push_str(&cell);
        } else {
            let cell = text::clip(&cell, width);
            line.push_str(&format!("{cell:<width$}"));
        }
    }
    line
}

fn header_cells(kind: Kind) -> Vec<(String, usize)> {
    let names: &[(&str, usize)] = match kind {
        Kind::Processes => &[
            ("PID", 8),
            ("NAMESPACE/POD", 32),
            ("CONTAINER", 16),
            ("SHA256", 12),
            ("EXE", 0),
        ],
        Kind::Findings => &[
            ("SEVERITY", 8),
            ("KIND", 26),
            ("NAMESPACE/POD/CONTAINER", 40),
            ("MESSAGE", 0),
        ],
        Kind::Containers => &[
            ("CONTAINER", 12),
            ("NAMESPACE/POD", 40),
            ("NAME", 16),
            ("RUNTIME", 10),
            ("IMAGE", 0),
        ],
    };
    names.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

fn opt(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_string(), |v| text::clean(v, 253))
}

fn process_cells(entry: &nodeguard_model::ProcessEntry) -> Vec<(String, usize)> {
    let p = &entry.process;
    let pod = entry.pod.as_ref();
    let place = pod.map_or_else(
        || "-".to_string(),
        |pod| text::clean(&format!("{}/{}", pod.namespace, pod.name), 253),
    );
    let container = pod
        .and_then(|pod| pod.container_name.as_deref())
        .map(|n| text::clean(n, 253))
        .or_else(|| {
            p.container_id
                .as_deref()
                .map(|id| text::clean(nodeguard_model::short_id(id), 64))
        })
        .unwrap_or_else(|| "host".to_string());
    vec![
        (p.pid.to_string(), 8),
        (place, 32),
        (container, 16),
        (opt(p.sha256.as_deref().map(|d| text::cut(d, 12))), 12),
        (opt(p.exe.as_deref()), 0),
    ]
}

fn finding_cells(t: &nodeguard_model::TrackedFinding) -> Vec<(String, usize)> {
    let f = &t.finding;
    let place = match (&f.namespace, &f.pod) {
        (Some(ns), Some(pod)) => {
            format!("{ns}/{pod}/{}", f.container_name.as_deref().unwrap_or("?"))
        }
        _ => f
            .container_id
            .as_deref()
            .map_or("host", nodeguard_model::short_id)
            .to_string(),
    };
    vec![
        (f.severity.to_string(), 8),
        (f.kind.to_string(), 26),
        (text::clean(&place, 253), 40),
        (text::clean(&f.message, 400), 0),
    ]
}

fn container_cells(c: &nodeguard_model::Container) -> Vec<(String, usize)> {
    let pod = c.pod.as_ref();
    vec![
        (text::clean(nodeguard_model::short_id(&c.id), 64), 12),
        (
            pod.map_or_else(
                || "-".to_string(),
                |p| text::clean(&format!("{}/{}", p.namespace, p.name), 253),
            ),
            40,
        ),
        (opt(pod.and_then(|p| p.container_name.as_deref())), 16),
        (c.runtime.as_str().to_string(), 10),
        (opt(pod.and_then(|p| p.image.as_deref())), 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_to_their_columns_and_hostile_text_is_escaped() {
        let line = table_line(
            "node-a",
            vec![
                ("42".into(), 8),
                ("evil\u{1b}[2J".to_string(), 12),
                ("last column stays whole".into(), 0),
            ],
        );
        assert!(
            line.starts_with(&format!("{:<24} {:<8} ", "node-a", "42")),
            "{line}"
        );
        assert!(line.ends_with(" last column stays whole"), "{line}");
        assert_eq!(
            text::clean("evil\u{1b}[2J", 253),
            "evil\\u{1b}[2J",
            "the escape arrives as text"
        );
    }
}
