//! The real `promtool` (Prometheus 2.42 from Debian's `prometheus` package) on the encoded
//! series and on the alert rules in `manifests/`. Skipped loudly without promtool; a failure
//! when `CI` is set.

mod common;

use common::*;
use nodeguard_metrics::{encode_text, Metrics};
use nodeguard_model::{EventStats, ScanKind};
use prometheus_client::registry::Registry;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn run(promtool: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", promtool.display()));
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "promtool {}: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every series nodeguard can expose, with values.
fn full_exposition() -> String {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    metrics.state_changed(&Arc::new(three_containers(1_700_000_000)));
    metrics.scan_finished(ScanKind::Processes, Duration::from_millis(30), true);
    metrics.scan_finished(ScanKind::Filesystems, Duration::from_secs(4), false);
    metrics.policy_reload(true);
    metrics.set_event_stats_source(Arc::new(|| EventStats {
        sent: 3,
        queued: 1,
        ..EventStats::default()
    }));
    encode_text(&registry).unwrap()
}

#[test]
fn promtool_check_metrics_is_clean_on_the_text_exposition() {
    let Some(promtool) = tool("promtool", "promtool_check_metrics") else {
        return;
    };
    let text = full_exposition();
    let args = ["check", "metrics"];
    let out = run(&promtool, &args, Some(&text));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{}\ninput:\n{text}",
        describe(&args, &out)
    );
}
