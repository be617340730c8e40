//! Cells and their layout: Kubernetes units, escaped text, lines cut to a width, and the
//! aligned table every part prints through.

use nodeguard_model::{escape_path, short_id};
use std::fmt::Write as _;

pub(crate) fn unlimited() -> String {
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

pub(crate) fn container_cell(id: Option<&str>, name: Option<&str>) -> String {
    match (name, id) {
        (Some(name), _) => name.to_string(),
        (None, Some(id)) => short_id(id).to_string(),
        (None, None) => "host".to_string(),
    }
}

pub(crate) fn opt(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// Appends `text` as one line of at most `width` characters (escaped, cut with `…`).
pub(crate) fn push_line(out: &mut String, text: &str, width: usize) {
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

pub(crate) enum Line {
    Cells(Vec<String>),
    /// A line outside the columns (a group header).
    Text(String),
}

/// Columns separated by two spaces, each as wide as its widest cell; the last column is not
/// padded, so no line ends in spaces. Lines are cut at the width given to `render`.
pub(crate) struct Table {
    header: Vec<String>,
    lines: Vec<Line>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            lines: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
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

    pub(crate) fn text(&mut self, text: String) {
        self.lines.push(Line::Text(escape_path(text.as_bytes())));
    }

    /// Whether nothing was added but the header.
    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(crate) fn render(&self, width: usize) -> String {
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
