//! The real `promtool` (Prometheus 2.42 from Debian's `prometheus` package) on the encoded
//! series and on the alert rules in `manifests/`. Skipped loudly without promtool; a failure
//! when `CI` is set.

mod common;

use common::*;
use nodeguard_metrics::encode_text;
use nodeguard_model::{EventStats, ScanKind};
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
    let (registry, metrics) = setup();
    let mut state = three_containers(1_700_000_000);
    scan_finished(
        &mut state,
        ScanKind::Processes,
        Duration::from_millis(30),
        true,
    );
    scan_finished(
        &mut state,
        ScanKind::Filesystems,
        Duration::from_secs(4),
        false,
    );
    state.totals.policy_reloads.record(true);
    state.policy_weakened = vec!["exemptions"];
    metrics.state_changed(&Arc::new(state));
    metrics.set_event_stats(event_stats(EventStats {
        sent: 3,
        queued: 1,
        ..EventStats::default()
    }));
    let denials = Arc::new(nodeguard_model::DenialCounters::default());
    denials.add(nodeguard_model::DenialReason::InvalidToken);
    metrics.metrics.set_api_denials(denials);
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

const RULES: &str = "manifests/prometheus-rules.yaml";
const PROMETHEUS_RULE: &str = "manifests/prometheusrule.yaml";
const RULES_TEST: &str = "tests/promtool/rules_test.yaml";

const ALERTS: [&str; 6] = [
    "NodeguardAgentDown",
    "NodeguardAgentAbsent",
    "NodeguardScansStale",
    "NodeguardScanErrorsRising",
    "NodeguardCriticalFinding",
    "NodeguardTransientCriticalFinding",
];

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn promtool_check_rules_is_clean() {
    let Some(promtool) = tool("promtool", "promtool_check_rules") else {
        return;
    };
    let args = ["check", "rules", RULES];
    let out = run(&promtool, &args, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains(&format!("SUCCESS: {} rules found", ALERTS.len()))
            && out.stderr.is_empty(),
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let Some(promtool) = tool("promtool", "promtool_test_rules") else {
        return;
    };
    let args = ["test", "rules", RULES_TEST];
    let out = run(&promtool, &args, None);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SUCCESS"),
        "{}",
        describe(&args, &out)
    );
    // Every alert is exercised, firing at least once.
    let tests = read(RULES_TEST);
    for alert in ALERTS {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "{RULES_TEST} never expects {alert} to fire"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts: []")),
            "{RULES_TEST} never expects {alert} to stay silent"
        );
    }
}

/// `spec:` of the PrometheusRule, two spaces less deep: the plain rules file's `groups:`.
fn prometheus_rule_spec() -> String {
    let manifest = read(PROMETHEUS_RULE);
    assert!(manifest.contains("\napiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n"));
    let (_, spec) = manifest
        .split_once("\nspec:\n")
        .expect("a top-level spec: in the PrometheusRule");
    spec.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                line.strip_prefix("  ")
                    .unwrap_or_else(|| panic!("not under spec: {line:?}"))
                    .to_string()
            }
        })
        .map(|line| line + "\n")
        .collect()
}

#[test]
fn prometheus_rule_carries_the_same_groups_as_the_rules_file() {
    let rules = read(RULES);
    let groups = &rules[rules.find("\ngroups:\n").expect("top-level groups:") + 1..];
    let spec = prometheus_rule_spec();
    assert!(
        spec == groups,
        "{PROMETHEUS_RULE} is out of date: run tests/promtool/sync-prometheusrule.sh"
    );
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts, ALERTS);

    // And the operator's copy is valid on its own.
    let Some(promtool) = tool("promtool", "promtool_check_prometheus_rule") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let extracted = dir.path().join("prometheusrule-spec.yaml");
    std::fs::write(&extracted, &spec).unwrap();
    let path = extracted.to_str().unwrap();
    let args = ["check", "rules", path];
    let out = run(&promtool, &args, None);
    assert!(out.status.success(), "{}", describe(&args, &out));
}

/// Every `nodeguard_*` name the rules and their tests use is one the agent exports, so a
/// renamed series cannot silently disable an alert.
#[test]
fn rules_use_only_exported_series() {
    let exposition = full_exposition();
    let exported: Vec<&str> = exposition
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if !l.starts_with('#') => l.split(['{', ' ']).next(),
            None => None,
        })
        .collect();
    for file in [RULES, RULES_TEST] {
        let text = read(file);
        let mut rest = text.as_str();
        let mut seen = 0;
        while let Some(at) = rest.find("nodeguard_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            seen += 1;
            assert!(
                exported.contains(&name.as_str()),
                "{file} uses {name}, which nodeguard does not export"
            );
        }
        assert!(seen > 5, "{file}: found only {seen} series names");
    }
}
