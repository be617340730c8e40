//! What a scraper sees: the series rendered from the daemon's state and events.

mod common;

use common::*;
use nodeguard_metrics::{encode, encode_text, Metrics};
use nodeguard_model::{EventStats, FindingKind, PolicyReportStats, ScanKind, Severity};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

fn scrape(registry: &Registry) -> String {
    encode(registry).expect("encode")
}

#[test]
fn open_findings_are_one_series_per_kind_severity_and_place() {
    let (registry, metrics) = setup();
    metrics.state_changed(&Arc::new(three_containers(1000)));
    let out = scrape(&registry);
    assert_eq!(
        samples(&out, "nodeguard_findings{"),
        [
            r#"nodeguard_findings{kind="binary_drift",severity="high",namespace="",pod="",container="cccccccccccc"} 1"#,
            r#"nodeguard_findings{kind="dangerous_capability",severity="high",namespace="shop",pod="web-1",container="nginx"} 2"#,
            r#"nodeguard_findings{kind="deleted_executable",severity="critical",namespace="",pod="",container=""} 1"#,
            r#"nodeguard_findings{kind="runs_as_root",severity="medium",namespace="shop",pod="web-1",container="nginx"} 1"#,
            r#"nodeguard_findings{kind="setuid_file",severity="medium",namespace="jobs",pod="batch-7",container="worker"} 1"#,
        ],
        "{out}"
    );
    assert!(
        !out.contains("pid=") && !out.contains("path=") && !out.contains("sha256"),
        "no per-process or per-file labels: {out}"
    );
}

#[test]
fn series_of_a_gone_container_disappear() {
    let (registry, metrics) = setup();
    let before = three_containers(1000);
    metrics.state_changed(&Arc::new(before.clone()));
    assert!(scrape(&registry).contains(r#"container="nginx""#));

    // The web pod is deleted: the next scan no longer sees its container or findings.
    let mut report = (*before.report).clone();
    report.scanned_at = at(1030);
    report.containers.retain(|c| c.id != WEB);
    report
        .processes
        .retain(|p| p.container_id.as_deref() != Some(WEB));
    report
        .findings
        .retain(|f| f.container_id.as_deref() != Some(WEB));
    let mut after = state_of(report);
    after.totals = before.totals.clone();
    metrics.state_changed(&Arc::new(after));

    let out = scrape(&registry);
    let findings = samples(&out, "nodeguard_findings{");
    assert_eq!(findings.len(), 3, "{out}");
    assert!(!out.contains("nginx") && !out.contains("web-1"), "{out}");
    assert!(out.contains(r#"container="worker""#), "{out}");
    assert_eq!(
        samples(&out, "nodeguard_containers "),
        ["nodeguard_containers 2"]
    );
    assert_eq!(
        samples(&out, "nodeguard_processes{"),
        [
            r#"nodeguard_processes{scope="container"} 1"#,
            r#"nodeguard_processes{scope="host"} 1"#,
        ],
        "kernel threads are not counted"
    );
    // The detected counter does not go down when findings resolve.
    assert!(out.contains(
        "nodeguard_findings_detected_total{kind=\"dangerous_capability\",severity=\"high\"} 2\n"
    ));

    // No finding open at all: the family is still described, with no samples.
    let mut empty = (*before.report).clone();
    empty.scanned_at = at(1060);
    empty.findings.clear();
    let mut empty = state_of(empty);
    empty.totals = before.totals.clone();
    metrics.state_changed(&Arc::new(empty));
    let out = scrape(&registry);
    assert!(out.contains("# TYPE nodeguard_findings gauge\n"));
    assert!(samples(&out, "nodeguard_findings{").is_empty(), "{out}");
}

#[test]
fn findings_detected_starts_at_zero_for_every_kind_and_severity() {
    let (registry, metrics) = setup();
    let out = scrape(&registry);
    let detected = samples(&out, "nodeguard_findings_detected_total{");
    assert_eq!(detected.len(), FindingKind::ALL.len() * Severity::ALL.len());
    assert!(detected.iter().all(|l| l.ends_with("} 0")), "{out}");
    // So that increase() sees the very first critical finding.
    assert!(out.contains(
        "nodeguard_findings_detected_total{kind=\"denied_binary\",severity=\"critical\"} 0\n"
    ));

    metrics.state_changed(&Arc::new(three_containers(1000)));
    let out = scrape(&registry);
    for line in [
        "nodeguard_findings_detected_total{kind=\"dangerous_capability\",severity=\"high\"} 2",
        "nodeguard_findings_detected_total{kind=\"deleted_executable\",severity=\"critical\"} 1",
        "nodeguard_findings_detected_total{kind=\"denied_binary\",severity=\"critical\"} 0",
    ] {
        assert!(out.contains(&format!("{line}\n")), "missing {line}:\n{out}");
    }
}

#[test]
fn report_counters_are_the_daemons_totals_rendered_as_they_are() {
    let (registry, metrics) = setup();
    let out = scrape(&registry);
    for line in [
        "nodeguard_hashed_bytes_total 0",
        "nodeguard_hash_cache_hits_total 0",
        "nodeguard_hash_cache_misses_total 0",
        "nodeguard_processes_vanished_total 0",
    ] {
        assert!(
            out.contains(&format!("{line}\n")),
            "{line} at start:\n{out}"
        );
    }

    // The same state scraped twice, and a state republished over the same report (after a
    // policy reload): the totals are the state's, never added up here.
    let first = Arc::new(three_containers(1000));
    metrics.state_changed(&first);
    assert!(scrape(&registry).contains("nodeguard_hashed_bytes_total 1000\n"));
    assert!(scrape(&registry).contains("nodeguard_hashed_bytes_total 1000\n"));
    let mut reevaluated = (*first).clone();
    reevaluated.findings.clear();
    metrics.state_changed(&Arc::new(reevaluated));
    assert!(scrape(&registry).contains("nodeguard_hashed_bytes_total 1000\n"));

    let mut next = (*first).clone();
    next.totals.bytes_hashed = 1024;
    next.totals.hash_cache_hits = 43;
    next.totals.hash_cache_misses = 2;
    next.totals.processes_vanished = 3;
    metrics.state_changed(&Arc::new(next));
    let out = scrape(&registry);
    for line in [
        "nodeguard_hashed_bytes_total 1024",
        "nodeguard_hash_cache_hits_total 43",
        "nodeguard_hash_cache_misses_total 2",
        "nodeguard_processes_vanished_total 3",
    ] {
        assert!(out.contains(&format!("{line}\n")), "{line}:\n{out}");
    }
}

#[test]
fn state_gauges_are_absent_until_the_first_state() {
    let (registry, metrics) = setup();
    let out = scrape(&registry);
    for absent in [
        "nodeguard_processes{",
        "nodeguard_containers",
        "nodeguard_last_scan_timestamp_seconds",
        "nodeguard_policy_loaded_timestamp_seconds",
        "nodeguard_findings{",
        "nodeguard_errors_total",
    ] {
        assert!(
            samples(&out, absent).is_empty(),
            "{absent} before a scan:\n{out}"
        );
    }

    let mut state = three_containers(1_700_000_000);
    Arc::make_mut(&mut state.report)
        .stats
        .fs_recheck_age_seconds = 42;
    metrics.state_changed(&Arc::new(state));
    let out = scrape(&registry);
    for line in [
        "nodeguard_fs_recheck_age_seconds 42",
        "nodeguard_containers 3",
        "nodeguard_processes{scope=\"container\"} 3",
        "nodeguard_processes{scope=\"host\"} 1",
        "nodeguard_last_scan_timestamp_seconds{scan_type=\"processes\"} 1700000000.0",
        "nodeguard_policy_loaded_timestamp_seconds 50.0",
        "nodeguard_errors_total{kind=\"hash\"} 2",
    ] {
        assert!(out.contains(&format!("{line}\n")), "{line}:\n{out}");
    }
    assert!(out.contains("# UNIT nodeguard_last_scan_timestamp_seconds seconds\n"));
}

#[test]
fn scans_are_counted_and_timed_with_snake_case_labels() {
    let (registry, metrics) = setup();
    let out = scrape(&registry);
    for line in [
        "nodeguard_scans_total{scan_type=\"processes\",result=\"success\"} 0",
        "nodeguard_scans_total{scan_type=\"filesystems\",result=\"failure\"} 0",
        "nodeguard_scan_duration_seconds_count{scan_type=\"filesystems\"} 0",
        "nodeguard_policy_reloads_total{result=\"failure\"} 0",
    ] {
        assert!(
            out.contains(&format!("{line}\n")),
            "{line} at start:\n{out}"
        );
    }

    // 1/256 s and 1/32 s: exact in binary, so the sum prints exactly.
    let mut state = three_containers(1000);
    let s = &mut state;
    scan_finished(
        s,
        ScanKind::Processes,
        Duration::from_nanos(3_906_250),
        true,
    );
    scan_finished(
        s,
        ScanKind::Processes,
        Duration::from_nanos(31_250_000),
        true,
    );
    scan_finished(s, ScanKind::Filesystems, Duration::from_secs(90), false);
    state.totals.policy_reloads.record(true);
    state.totals.policy_reloads.record(false);
    state.totals.policy_reloads.record(false);
    metrics.state_changed(&Arc::new(state));
    let out = scrape(&registry);
    for line in [
        "nodeguard_scans_total{scan_type=\"processes\",result=\"success\"} 2",
        "nodeguard_scans_total{scan_type=\"processes\",result=\"failure\"} 0",
        "nodeguard_scans_total{scan_type=\"filesystems\",result=\"failure\"} 1",
        "nodeguard_scan_duration_seconds_count{scan_type=\"processes\"} 2",
        "nodeguard_scan_duration_seconds_sum{scan_type=\"processes\"} 0.03515625",
        "nodeguard_scan_duration_seconds_bucket{le=\"0.001\",scan_type=\"processes\"} 0",
        "nodeguard_scan_duration_seconds_bucket{le=\"0.005\",scan_type=\"processes\"} 1",
        "nodeguard_scan_duration_seconds_bucket{le=\"0.05\",scan_type=\"processes\"} 2",
        "nodeguard_scan_duration_seconds_bucket{le=\"60.0\",scan_type=\"filesystems\"} 0",
        "nodeguard_scan_duration_seconds_bucket{le=\"120.0\",scan_type=\"filesystems\"} 1",
        "nodeguard_scan_duration_seconds_bucket{le=\"+Inf\",scan_type=\"filesystems\"} 1",
        "nodeguard_policy_reloads_total{result=\"success\"} 1",
        "nodeguard_policy_reloads_total{result=\"failure\"} 2",
    ] {
        assert!(out.contains(&format!("{line}\n")), "{line}:\n{out}");
    }
    for variant_name in ["Processes", "Filesystems", "Success", "Failure"] {
        assert!(
            !out.contains(&format!("\"{variant_name}\"")),
            "enum printed as its Rust name: {out}"
        );
    }
}

#[test]
fn event_counters_are_read_from_their_channel_at_scrape_time() {
    let (registry, metrics) = setup();
    assert!(
        !scrape(&registry).contains("nodeguard_events"),
        "absent without Events"
    );

    let stats = EventStats {
        sent: 5,
        failed: 1,
        rate_limited: 2,
        queue_overflow: 3,
        summaries: 4,
        queued: 7,
    };
    let (publisher, counters) = tokio::sync::watch::channel(stats);
    metrics.set_event_stats(counters);
    let out = scrape(&registry);
    assert_eq!(
        samples(&out, "nodeguard_events"),
        [
            r#"nodeguard_events_total{result="sent"} 5"#,
            r#"nodeguard_events_total{result="failed"} 1"#,
            r#"nodeguard_events_total{result="rate_limited"} 2"#,
            r#"nodeguard_events_total{result="queue_overflow"} 3"#,
            r#"nodeguard_events_total{result="summary"} 4"#,
            "nodeguard_events_queued 7",
        ]
    );
    publisher.send_replace(EventStats { sent: 9, ..stats });
    assert!(scrape(&registry).contains("nodeguard_events_total{result=\"sent\"} 9\n"));
}

#[test]
fn api_denials_are_counted_by_reason_at_scrape_time() {
    let (registry, metrics) = setup();
    assert!(
        !scrape(&registry).contains("nodeguard_api_denials"),
        "absent without the API's counters"
    );
    let denials = Arc::new(nodeguard_model::DenialCounters::default());
    metrics.metrics.set_api_denials(Arc::clone(&denials));
    for _ in 0..3 {
        denials.add(nodeguard_model::DenialReason::OversizedToken);
    }
    denials.add(nodeguard_model::DenialReason::Forbidden);
    assert_eq!(
        samples(&scrape(&registry), "nodeguard_api_denials"),
        [
            r#"nodeguard_api_denials_total{reason="missing_token"} 0"#,
            r#"nodeguard_api_denials_total{reason="oversized_token"} 3"#,
            r#"nodeguard_api_denials_total{reason="invalid_token"} 0"#,
            r#"nodeguard_api_denials_total{reason="forbidden"} 1"#,
            r#"nodeguard_api_denials_total{reason="unavailable"} 0"#,
        ]
    );
}

#[test]
fn policy_report_counters_are_read_from_their_channel_at_scrape_time() {
    let (registry, metrics) = setup();
    assert!(
        !scrape(&registry).contains("nodeguard_policy_report"),
        "absent without the PolicyReport publisher"
    );
    let stats = PolicyReportStats {
        written: 3,
        failed: 1,
        reports: 2,
        results_omitted: 4,
        crds_installed: None,
    };
    let (publisher, counters) = tokio::sync::watch::channel(stats);
    metrics.metrics.set_policy_report_stats(counters);
    let out = scrape(&registry);
    assert_eq!(
        samples(&out, "nodeguard_policy_report"),
        [
            r#"nodeguard_policy_report_writes_total{result="written"} 3"#,
            r#"nodeguard_policy_report_writes_total{result="failed"} 1"#,
            "nodeguard_policy_reports 2",
            "nodeguard_policy_report_results_omitted 4",
        ],
        "no CRD gauge before the first look"
    );
    publisher.send_replace(PolicyReportStats {
        written: 5,
        crds_installed: Some(false),
        ..stats
    });
    let out = scrape(&registry);
    assert!(
        out.contains("nodeguard_policy_report_crds_installed 0\n"),
        "{out}"
    );
    assert!(out.contains("nodeguard_policy_report_writes_total{result=\"written\"} 5\n"));
}

#[test]
fn lease_writes_are_read_from_their_channel_at_scrape_time() {
    let (registry, metrics) = setup();
    assert!(
        !scrape(&registry).contains("nodeguard_lease"),
        "absent without the Lease writer"
    );
    let stats = nodeguard_model::fleet::LeaseStats {
        created: 1,
        renewed: 7,
        failed: 2,
    };
    let (writer, counters) = tokio::sync::watch::channel(stats);
    metrics.metrics.set_lease_stats(counters);
    assert_eq!(
        samples(&scrape(&registry), "nodeguard_lease"),
        [
            r#"nodeguard_lease_writes_total{result="created"} 1"#,
            r#"nodeguard_lease_writes_total{result="renewed"} 7"#,
            r#"nodeguard_lease_writes_total{result="failed"} 2"#,
        ]
    );
    writer.send_replace(nodeguard_model::fleet::LeaseStats {
        renewed: 8,
        ..stats
    });
    assert!(scrape(&registry).contains("nodeguard_lease_writes_total{result=\"renewed\"} 8\n"));
}

#[test]
fn build_info_carries_the_version() {
    let (registry, _metrics) = setup();
    let out = scrape(&registry);
    let expected = format!(
        "nodeguard_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(out.contains("# TYPE nodeguard_build info\n"), "{out}");
    assert!(out.contains(&expected), "{out}");
    let text = encode_text(&registry).unwrap();
    assert!(
        text.contains("# TYPE nodeguard_build_info gauge\n"),
        "{text}"
    );
    assert!(text.contains(&expected), "{text}");
}

/// Checks the OpenMetrics naming rules on a full exposition: each family's samples carry its
/// name plus the suffixes its type allows, counters end in `_total` exactly once, gauges
/// never do, units are name suffixes, and `# EOF` ends the text.
#[test]
fn names_follow_openmetrics_rules() {
    let (registry, metrics) = setup();
    let mut state = three_containers(1000);
    scan_finished(
        &mut state,
        ScanKind::Processes,
        Duration::from_millis(3),
        true,
    );
    state.policy_weakened = vec!["exemptions"];
    metrics.state_changed(&Arc::new(state));
    metrics.set_event_stats(event_stats(EventStats::default()));
    metrics.metrics.set_policy_report_stats(
        tokio::sync::watch::channel(PolicyReportStats {
            crds_installed: Some(true),
            ..PolicyReportStats::default()
        })
        .1,
    );
    let out = scrape(&registry);

    assert!(out.ends_with("\n# EOF\n"), "{out}");
    assert_eq!(out.matches("# EOF").count(), 1);
    assert!(!out.contains("_total_total"), "{out}");

    let mut family: Option<(String, String)> = None;
    let mut families = 0;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                name.starts_with("nodeguard_") || name.starts_with("process_"),
                "{line}"
            );
            assert!(
                !name.ends_with("_total"),
                "family named with _total: {line}"
            );
            family = Some((name.to_string(), kind.to_string()));
            families += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').unwrap();
            assert!(name.ends_with(&format!("_{unit}")), "{line}");
            assert_eq!(Some(name), family.as_ref().map(|f| f.0.as_str()), "{line}");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, kind) = family.as_ref().expect("sample before any TYPE");
        let sample = line.split(['{', ' ']).next().unwrap();
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "info" => &["_info"],
            "histogram" => &["_bucket", "_sum", "_count"],
            other => panic!("unexpected type {other}"),
        };
        assert!(
            allowed.iter().any(|s| sample == format!("{name}{s}")),
            "{sample} in family {name} ({kind})"
        );
        assert!(
            kind == "counter" || !sample.ends_with("_total"),
            "{kind} {sample} ends in _total"
        );
    }
    // The 35 nodeguard families of the crate's table (4 of the PolicyReport publisher, 7
    // exec_*, 5 fs_events_*) and the 7 standard process_* ones.
    assert_eq!(families, 42, "{out}");
}

#[test]
fn text_format_carries_the_same_samples() {
    let (registry, metrics) = setup();
    let mut state = three_containers(1000);
    scan_finished(
        &mut state,
        ScanKind::Filesystems,
        Duration::from_secs(2),
        true,
    );
    metrics.state_changed(&Arc::new(state));
    let openmetrics = scrape(&registry);
    let text = encode_text(&registry).unwrap();
    let data = |s: &str| -> Vec<String> {
        // The agent's own process_* values move between two scrapes; compare the rest.
        s.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("process_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(data(&openmetrics), data(&text));
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(text.contains("# TYPE nodeguard_findings_detected_total counter\n"));
    assert!(text.contains("# HELP nodeguard_findings_detected_total Findings that appeared"));
}

#[test]
fn label_values_are_escaped() {
    let (registry, metrics) = setup();
    let mut state = three_containers(1000);
    let f = &mut state.findings[0].finding;
    f.namespace = Some("we\"ird".to_string());
    f.pod = Some("a\\b".to_string());
    f.container_name = Some("new\nline".to_string());
    metrics.state_changed(&Arc::new(state));
    let out = scrape(&registry);
    assert!(
        out.contains(r#"namespace="we\"ird",pod="a\\b",container="new\nline"} 1"#),
        "{out}"
    );
}

#[test]
fn scrapes_from_many_threads_see_whole_states() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Metrics>();
    let (registry, metrics) = setup();
    let registry = Arc::new(registry);
    let scrapers: Vec<_> = (0..4)
        .map(|_| {
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let out = scrape(&registry);
                    // Success and failure counts always come from one state: equal here.
                    let ok = samples(
                        &out,
                        "nodeguard_scans_total{scan_type=\"processes\",result=\"success\"}",
                    );
                    let failed = samples(
                        &out,
                        "nodeguard_scans_total{scan_type=\"processes\",result=\"failure\"}",
                    );
                    assert_eq!(
                        ok[0].rsplit(' ').next(),
                        failed[0].rsplit(' ').next(),
                        "{out}"
                    );
                }
            })
        })
        .collect();
    let mut state = three_containers(1000);
    for _ in 0..100 {
        scan_finished(
            &mut state,
            ScanKind::Processes,
            Duration::from_millis(1),
            true,
        );
        scan_finished(
            &mut state,
            ScanKind::Processes,
            Duration::from_millis(1),
            false,
        );
        metrics.state_changed(&Arc::new(state.clone()));
    }
    for h in scrapers {
        h.join().unwrap();
    }
    assert!(scrape(&registry)
        .contains("nodeguard_scans_total{scan_type=\"processes\",result=\"success\"} 100\n"));
}

#[test]
fn weakened_policy_settings_are_one_series_each_and_cleared_on_reload() {
    let (registry, metrics) = setup();
    assert!(!scrape(&registry).contains("nodeguard_policy_weakened{"));
    let mut state = three_containers(1000);
    state.policy_weakened = vec!["allowed_setuid", "exemptions"];
    metrics.state_changed(&Arc::new(state.clone()));
    let body = scrape(&registry);
    assert!(
        body.contains("nodeguard_policy_weakened{setting=\"allowed_setuid\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("nodeguard_policy_weakened{setting=\"exemptions\"} 1\n"));
    // A reload that fixes one setting drops its series.
    state.policy_weakened = vec!["exemptions"];
    metrics.state_changed(&Arc::new(state));
    let body = scrape(&registry);
    assert!(!body.contains("setting=\"allowed_setuid\""), "{body}");
    assert!(body.contains("nodeguard_policy_weakened{setting=\"exemptions\"} 1\n"));
}

/// Where execs come from and what they amounted to are state, rendered at scrape time:
/// exactly one source is 1, and the counters are the state's.
#[test]
fn exec_event_series_follow_the_state() {
    let (registry, metrics) = setup();
    let mut state = three_containers(1000);
    state.exec_events = nodeguard_model::ExecEventStats {
        source: nodeguard_model::ExecEventSource::Netlink,
        events: 120,
        lost: 3,
        unread: 7,
        passes: 40,
        held: 110,
        unheld: nodeguard_model::UnheldExecs {
            exited: 4,
            budget: 2,
            ..Default::default()
        },
    };
    metrics.state_changed(&Arc::new(state.clone()));
    let out = scrape(&registry);
    for line in [
        "nodeguard_exec_events_source{source=\"netlink\"} 1",
        "nodeguard_exec_events_source{source=\"polling\"} 0",
        "nodeguard_exec_events_total 120",
        "nodeguard_exec_events_lost_total 3",
        "nodeguard_exec_processes_unread_total 7",
        "nodeguard_exec_passes_total 40",
        "nodeguard_exec_processes_held_total 110",
        "nodeguard_exec_events_unheld_total{reason=\"exited\"} 4",
        "nodeguard_exec_events_unheld_total{reason=\"budget\"} 2",
        "nodeguard_exec_events_unheld_total{reason=\"reused\"} 0",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    state.exec_events.source = nodeguard_model::ExecEventSource::Polling;
    metrics.state_changed(&Arc::new(state));
    let out = scrape(&registry);
    assert!(out
        .lines()
        .any(|l| l == "nodeguard_exec_events_source{source=\"polling\"} 1"));
    assert!(out
        .lines()
        .any(|l| l == "nodeguard_exec_events_source{source=\"netlink\"} 0"));
}
