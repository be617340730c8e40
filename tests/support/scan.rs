//! Running `nodeguard scan --output json` and reading its report as plain JSON (the contract a
//! user's `jq` sees, not the Rust types).

use super::cmd::{self, Output};
use super::container::Container;
use serde_json::Value;
use std::fmt::Write as _;

/// Runs the `nodeguard` binary under test with `args`.
pub fn nodeguard(args: &[&str]) -> Output {
    cmd::run(super::nodeguard_bin(), args)
}

/// One run of `nodeguard scan --output json ARGS...` and its parsed report.
#[derive(Debug)]
pub struct Scan {
    pub output: Output,
    pub report: Value,
}

impl Scan {
    /// Runs a scan; panics (showing the command and its stderr) unless it exits 0 or 3 (the
    /// `--fail-on` exit) with a JSON report on stdout.
    ///
    /// When the host's pid 1 cannot be looked into here ([`super::host_pid1_readable`]) and the
    /// caller chose no roots, `--host-root /` is added: the test runs in the host's mount
    /// namespace, so host paths are reachable as they are.
    pub fn run(extra: &[&str]) -> Scan {
        let mut args = vec!["scan", "--output", "json"];
        args.extend_from_slice(extra);
        let roots_given = extra
            .iter()
            .any(|a| *a == "--proc-root" || *a == "--host-root");
        if !roots_given && !super::host_pid1_readable() {
            args.extend_from_slice(&["--host-root", "/"]);
        }
        let output = nodeguard(&args);
        if !matches!(output.code, Some(0) | Some(3)) {
            panic!("nodeguard scan failed\n{output}");
        }
        let report: Value = serde_json::from_str(&output.stdout).unwrap_or_else(|e| {
            panic!("nodeguard scan did not print a JSON report: {e}\n{output}")
        });
        Scan { output, report }
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.output.code
    }

    pub fn containers(&self) -> &[Value] {
        self.report["containers"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    pub fn processes(&self) -> &[Value] {
        self.report["processes"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    pub fn findings(&self) -> &[Value] {
        self.report["findings"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    pub fn files(&self) -> &[Value] {
        self.report["files"].as_array().map_or(&[], Vec::as_slice)
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.report["stats"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("stats.{name} missing or not a number\n{}", self.summary()))
    }

    /// The report's entry for container `id`, if the scan saw it.
    pub fn find_container(&self, id: &str) -> Option<&Value> {
        self.containers().iter().find(|c| c["id"] == id)
    }

    /// The report's entry for `c`; panics listing what the scan did see.
    pub fn container(&self, c: &Container) -> &Value {
        self.find_container(&c.id).unwrap_or_else(|| {
            panic!(
                "the scan did not report {}\n{}",
                c.describe(),
                self.summary()
            )
        })
    }

    pub fn find_process(&self, pid: i32) -> Option<&Value> {
        self.processes().iter().find(|p| p["pid"] == pid)
    }

    /// The report's entry for `pid`; panics with what the scan saw of `c`.
    pub fn process(&self, c: &Container, pid: i32) -> &Value {
        self.find_process(pid)
            .unwrap_or_else(|| panic!("the scan did not report pid {pid}\n{}", self.seen(c)))
    }

    /// Findings about container `id`.
    pub fn findings_for(&self, id: &str) -> Vec<&Value> {
        self.findings()
            .iter()
            .filter(|f| f["container_id"] == id)
            .collect()
    }

    /// Findings of `kind` about container `id` (with `subject`, when given).
    pub fn findings_of(&self, id: &str, kind: &str, subject: Option<&str>) -> Vec<&Value> {
        self.findings_for(id)
            .into_iter()
            .filter(|f| f["kind"] == kind && subject.is_none_or(|s| f["subject"] == s))
            .collect()
    }

    pub fn has_finding(&self, c: &Container, kind: &str, subject: Option<&str>) -> bool {
        !self.findings_of(&c.id, kind, subject).is_empty()
    }

    /// Kinds of the findings about `c`, sorted, for messages.
    pub fn finding_kinds(&self, c: &Container) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .findings_for(&c.id)
            .iter()
            .map(|f| {
                format!(
                    "{}:{}",
                    f["kind"].as_str().unwrap_or("?"),
                    f["subject"].as_str().unwrap_or("?")
                )
            })
            .collect();
        kinds.sort();
        kinds
    }

    /// The highest severity among all findings, as a rank (low=1 .. critical=4; 0 when none).
    pub fn max_severity_rank(&self) -> u8 {
        self.findings()
            .iter()
            .map(|f| severity_rank(f["severity"].as_str().unwrap_or("")))
            .max()
            .unwrap_or(0)
    }

    /// What the scan saw of one container — its entry, its processes, its findings — plus the
    /// scan's warnings, stats and stderr, for assertion messages. Also saves the whole report.
    pub fn seen(&self, c: &Container) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "--- expected: {}", c.describe());
        let _ = writeln!(out, "--- scan: {}", self.output.command);
        match self.find_container(&c.id) {
            Some(entry) => {
                let _ = writeln!(out, "--- container entry:\n{}", pretty(entry));
            }
            None => {
                let _ = writeln!(out, "--- container NOT in the report");
            }
        }
        let pids = c.pids();
        let _ = writeln!(out, "--- processes (runc ps says {pids:?}):");
        for p in self.processes() {
            let ours = p["container_id"] == c.id.as_str()
                || p["pid"]
                    .as_i64()
                    .is_some_and(|pid| pids.contains(&(pid as i32)));
            if ours {
                let _ = writeln!(out, "{}", pretty(p));
            }
        }
        let _ = writeln!(out, "--- findings about it:");
        for f in self.findings_for(&c.id) {
            let _ = writeln!(out, "{}", serde_json::to_string(f).unwrap());
        }
        out.push_str(&self.summary());
        out
    }

    /// Containers seen, stats, warnings, stderr, and where the full report was saved.
    pub fn summary(&self) -> String {
        let ids: Vec<&str> = self
            .containers()
            .iter()
            .filter_map(|c| c["id"].as_str())
            .collect();
        let saved = super::artifacts_dir().join(format!("report-{}.json", super::random_hex(4)));
        let _ = std::fs::write(&saved, &self.output.stdout);
        format!(
            "--- containers seen: {ids:?}\n--- stats: {}\n--- warnings: {}\n--- exit: {:?}\n--- stderr: {}\n--- full report: {}\n",
            self.report["stats"],
            self.report["warnings"],
            self.output.code,
            self.output.stderr.trim(),
            saved.display()
        )
    }
}

pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "critical" => 4,
        other => panic!("unknown severity {other:?}"),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Strings of a JSON array, sorted (capability sets, pid lists as text).
pub fn sorted_strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Integers of a JSON array, sorted.
pub fn sorted_pids(v: &Value) -> Vec<i32> {
    let mut out: Vec<i32> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_i64().map(|p| p as i32))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}
