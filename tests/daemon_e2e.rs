//! End-to-end tests of `nodeguard run` against real runc containers and a real Prometheus.
//!
//! Each test starts its own containers (with the harness in `tests/support`), its own agent
//! (the debug binary, on a free loopback port, with a 2 s scan interval) and, for the metrics
//! test, its own Prometheus server scraping that agent every second. Everything is torn down on
//! drop, also when an assertion fails; the agent's (and Prometheus's) log is printed then.
//!
//! What a user would notice is asserted, against ground truth taken without nodeguard:
//! `sha256sum /proc/PID/exe`, `runc ps`, the capabilities and limits the test gave the
//! containers. Every wait is a bounded polling loop that fails with what it last saw; nothing
//! asserts how long anything took, except the documented promise that SIGTERM/SIGINT stop the
//! agent within 10 s.
//!
//! Needs root, runc, busybox-static and capsh (and `prometheus` for the metrics test). Without
//! them each test says why it skipped; with `CI` set it fails instead.
//! Run: `cargo test -p nodeguard --test daemon_e2e`.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::agent::{metric_value, Agent};
use support::container::{Container, ContainerSpec};
use support::image::Image;
use support::oracle;
use support::prometheus::{require_prometheus, Prometheus, JOB};
use support::{wait_for, wait_for_every};

const MIB: i64 = 1024 * 1024;

/// Longest wait for the agent's first scan. The debug build hashes every executable on the
/// node at about 40 MB/s the first time, on a machine other tests load too.
const FIRST_SCAN_TIMEOUT: Duration = Duration::from_secs(240);
/// Longest wait for anything that needs a few more scans or scrapes.
const SCANS_TIMEOUT: Duration = Duration::from_secs(90);
/// What the agent promises for SIGTERM/SIGINT (it says "within a few seconds").
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Accept` header Prometheus 2.42 scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Sends a signal with `kill -s SIG PID`.
fn send_signal(pid: u32, signal: &str) {
    let out = support::cmd::run("kill", &["-s", signal, &pid.to_string()]);
    assert!(out.success(), "kill -s {signal} {pid} failed\n{out}");
}

// ---------------------------------------------------------------------------------------------
// The agent under test: tests/support/agent.rs runs it (killed on drop, its log printed when
// the test failed).

/// `nodeguard run` with `--interval 2s --fs-interval 30s` and a state directory of its own,
/// then `extra`.
fn start_agent(extra: &[&str]) -> Agent {
    let mut args = vec!["--interval", "2s", "--fs-interval", "30s"];
    args.extend_from_slice(extra);
    Agent::start_with_state(&args)
}

/// `last_scan` of `/readyz`: when the report being served was made.
fn last_scan(agent: &Agent) -> String {
    agent.get_json("/readyz")["last_scan"]
        .as_str()
        .expect("/readyz has last_scan")
        .to_string()
}

/// Waits until the agent has published two more reports than it had when called: the
/// second of them was made by a scan that started after this call.
fn wait_for_fresh_scan(agent: &Agent) {
    let mut seen = last_scan(agent);
    for round in 1..=2 {
        seen = wait_for(
            &format!("scan {round} of 2 after {seen}"),
            SCANS_TIMEOUT,
            || {
                let now = last_scan(agent);
                if now != seen {
                    Ok(now)
                } else {
                    Err(format!("last_scan still {now}"))
                }
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus (tests/support/prometheus.rs runs the server).

/// `{kind: (severity, value)}` of `nodeguard_findings` series in a query result.
fn findings_by_kind(result: &[Value]) -> BTreeMap<String, (String, String)> {
    result
        .iter()
        .map(|s| {
            (
                s["metric"]["kind"].as_str().unwrap_or("?").to_string(),
                (
                    s["metric"]["severity"].as_str().unwrap_or("?").to_string(),
                    s["value"][1].as_str().unwrap_or("?").to_string(),
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Containers and files the tests share.

/// The Kubernetes default for a container without pod metadata: what `nodeguard_findings`
/// uses as the `container` label and what `--container` accepts.
fn short(c: &Container) -> &str {
    &c.id[..12]
}

/// No limits at all, and CAP_SYS_ADMIN on top of the runtime's defaults.
fn unlimited_admin(image: &Image) -> ContainerSpec {
    ContainerSpec::new(image).add_capability("CAP_SYS_ADMIN")
}

/// Memory, CPU and pids limits, the runtime's default capabilities (none of them dangerous).
fn limited(image: &Image) -> ContainerSpec {
    ContainerSpec::new(image)
        .memory_limit(64 * MIB)
        .cpu_limit(50_000, 100_000)
        .pids_limit(64)
}

/// An image holding `/bin/NAME`: busybox with `extra` bytes after it (busybox runs as the
/// multi-call binary when its name starts with `busybox`, and the kernel ignores what follows
/// the ELF segments). Gives an executable whose digest no other process on the node has.
fn image_with_tagged_busybox(name: &str, extra: &[u8], sparse_tail: u64) -> (Image, String) {
    let image = Image::busybox_owned(name);
    let busybox = support::image::busybox_binary().expect("busybox (checked by the harness)");
    let mut bytes = fs::read(&busybox).expect("read busybox");
    bytes.extend_from_slice(extra);
    let in_container = format!("/bin/{name}");
    image.add_file(&in_container, &bytes, 0o755);
    if sparse_tail > 0 {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(image.path(&in_container))
            .unwrap();
        file.set_len(bytes.len() as u64 + sparse_tail).unwrap();
    }
    (image, in_container)
}

/// Ids of findings, for set comparisons.
fn ids(findings: &[Value]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|f| f["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn kinds(findings: &[Value]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Waits until the agent reports container `c` (so its first scan saw it).
fn wait_for_container(agent: &Agent, c: &Container) {
    wait_for(
        &format!("the agent to report container {}", c.id),
        SCANS_TIMEOUT,
        || {
            let answer = agent.get_json(&format!("/v1/containers?container={}", c.id));
            match answer["count"].as_u64() {
                Some(1) => Ok(()),
                _ => Err(format!("{answer}")),
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 1. A real Prometheus scrapes the agent.

#[test]
fn prometheus_scrapes_findings_of_real_containers_and_drops_a_stopped_one() {
    require_containers!();
    let Some(prometheus_bin) = require_prometheus() else {
        return;
    };
    let image = Image::busybox();
    let admin = unlimited_admin(image).start();
    let calm = limited(image).start();
    let agent = start_agent(&[]);
    let prometheus = Prometheus::start(&prometheus_bin, agent.port, &[]);
    agent.wait_ready(FIRST_SCAN_TIMEOUT);

    // The admin container's findings, with the severities the policy documents.
    let admin_query = format!("nodeguard_findings{{container=\"{}\"}}", short(&admin));
    let admin_series = wait_for(
        "Prometheus to have missing_memory_limit and dangerous_capability of the admin container",
        SCANS_TIMEOUT,
        || {
            agent.assert_running();
            let result = prometheus.query(&admin_query)?;
            let by_kind = findings_by_kind(&result);
            if by_kind.contains_key("missing_memory_limit")
                && by_kind.contains_key("dangerous_capability")
            {
                Ok(by_kind)
            } else {
                Err(format!("{admin_query} -> {result:?}"))
            }
        },
    );
    assert_eq!(
        admin_series["missing_memory_limit"],
        ("medium".to_string(), "1".to_string()),
        "{admin_series:?}"
    );
    assert_eq!(
        admin_series["dangerous_capability"],
        ("critical".to_string(), "1".to_string()),
        "CAP_SYS_ADMIN is the only dangerous capability the container has: {admin_series:?}"
    );
    for kind in ["missing_cpu_limit", "missing_pids_limit"] {
        assert_eq!(
            admin_series.get(kind).map(|(s, _)| s.as_str()),
            Some("low"),
            "{kind}: {admin_series:?}"
        );
    }

    // The limited container: findings (it runs as root), but none about limits or caps.
    let calm_query = format!("nodeguard_findings{{container=\"{}\"}}", short(&calm));
    let calm_series = wait_for(
        "Prometheus to have the limited container's findings",
        SCANS_TIMEOUT,
        || {
            let result = prometheus.query(&calm_query)?;
            let by_kind = findings_by_kind(&result);
            if by_kind.contains_key("runs_as_root") {
                Ok(by_kind)
            } else {
                Err(format!("{calm_query} -> {result:?}"))
            }
        },
    );
    for kind in [
        "missing_memory_limit",
        "missing_cpu_limit",
        "missing_pids_limit",
        "dangerous_capability",
    ] {
        assert!(
            !calm_series.contains_key(kind),
            "the limited container with default capabilities must not have {kind}: {calm_series:?}"
        );
    }

    // The scrape itself is healthy.
    let up_query = format!("up{{job=\"{JOB}\"}}");
    wait_for("up == 1 for the agent", SCANS_TIMEOUT, || {
        let result = prometheus.query(&up_query)?;
        match result.as_slice() {
            [one] if one["value"][1] == "1" => Ok(()),
            _ => Err(format!("{up_query} -> {result:?}")),
        }
    });
    let last_scan = prometheus
        .query("nodeguard_last_scan_timestamp_seconds{scan_type=\"processes\"}")
        .unwrap_or_else(|e| panic!("{e}"));
    let seconds: f64 = last_scan
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("nodeguard_last_scan_timestamp_seconds missing: {last_scan:?}"));
    assert!(
        seconds > 1.6e9,
        "last scan timestamp is a Unix time: {seconds}"
    );
    wait_for(
        "the agent's target to be healthy with no scrape error",
        SCANS_TIMEOUT,
        || {
            let data = prometheus.api("targets?state=active", "the active targets")?;
            let target = data["activeTargets"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["labels"]["job"] == JOB))
                .cloned()
                .ok_or_else(|| format!("no active target of job {JOB}: {data}"))?;
            if target["health"] == "up" && target["lastError"] == "" {
                Ok(())
            } else {
                Err(format!("{target}"))
            }
        },
    );

    // Stop the admin container: its series go stale, the other container's stay.
    let admin_short = short(&admin).to_string();
    drop(admin);
    wait_for(
        "the stopped container's series to disappear from Prometheus",
        SCANS_TIMEOUT,
        || {
            agent.assert_running();
            let result = prometheus.query(&admin_query)?;
            if result.is_empty() {
                Ok(())
            } else {
                Err(format!("{admin_query} -> {result:?}"))
            }
        },
    );
    let metrics = agent.metrics();
    let label = format!("container=\"{admin_short}\"");
    assert!(
        !metrics.lines().any(|l| l.contains(&label)),
        "/metrics still has series of the stopped container:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains(&label))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let still = prometheus
        .query(&calm_query)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        findings_by_kind(&still).contains_key("runs_as_root"),
        "the running container's series must stay: {still:?}"
    );
    drop(calm);
}

// ---------------------------------------------------------------------------------------------
// 2. The API and `nodeguard query` against the running agent.

#[test]
fn api_and_query_cli_answer_about_real_containers() {
    require_containers!();
    let tag = support::random_hex(16);
    let (tagged_image, tagged_exe) = image_with_tagged_busybox("busybox-e2e", tag.as_bytes(), 0);
    let admin = unlimited_admin(&tagged_image)
        .args(&[&tagged_exe, "sleep", "3600"])
        .exec(&[&tagged_exe, "sleep", "3601"])
        .start();
    let calm = limited(Image::busybox()).start();
    let agent = start_agent(&[]);

    let ready = agent.wait_ready(FIRST_SCAN_TIMEOUT);
    assert_eq!(ready["status"], "ready", "{ready}");

    // "Where does this binary run?": exactly the tagged container's processes.
    let digest = oracle::sha256sum(Path::new(&format!("/proc/{}/exe", admin.init_pid)));
    let expected_pids = admin.pids();
    assert_eq!(
        expected_pids.len(),
        2,
        "runc ps of {}: {expected_pids:?}",
        admin.describe()
    );
    let processes = wait_for(
        "/v1/processes?sha256= to list exactly the tagged container's processes",
        SCANS_TIMEOUT,
        || {
            let answer = agent.get_json(&format!("/v1/processes?sha256={digest}"));
            let list = answer["processes"].as_array().cloned().unwrap_or_default();
            let mut pids: Vec<i32> = list
                .iter()
                .filter_map(|p| p["pid"].as_i64().map(|p| p as i32))
                .collect();
            pids.sort_unstable();
            if pids == expected_pids {
                Ok(list)
            } else {
                Err(format!(
                    "pids {pids:?}, runc ps says {expected_pids:?}: {answer}"
                ))
            }
        },
    );
    for p in &processes {
        assert_eq!(p["container_id"], admin.id.as_str(), "{p}");
        assert_eq!(p["sha256"], digest.as_str(), "{p}");
        assert_eq!(p["exe"], tagged_exe.as_str(), "{p}");
    }
    let cli = agent.query_cli(&["processes", "--sha256", &digest]);
    let mut cli_pids: Vec<i64> = cli["processes"]
        .as_array()
        .map(|l| l.iter().filter_map(|p| p["pid"].as_i64()).collect())
        .unwrap_or_default();
    cli_pids.sort_unstable();
    assert_eq!(
        cli_pids,
        expected_pids
            .iter()
            .map(|&p| i64::from(p))
            .collect::<Vec<_>>(),
        "nodeguard query processes --sha256: {cli}"
    );

    // Findings of one container at or above high severity.
    let high = agent.findings(&format!("container={}&severity=high", short(&admin)));
    let cap = high
        .iter()
        .find(|f| f["kind"] == "dangerous_capability" && f["subject"] == "CAP_SYS_ADMIN")
        .unwrap_or_else(|| panic!("no dangerous_capability CAP_SYS_ADMIN in {high:#?}"));
    assert_eq!(cap["severity"], "critical", "{cap}");
    for f in &high {
        assert_eq!(f["container_id"], admin.id.as_str(), "{f}");
        assert!(
            f["severity"] == "high" || f["severity"] == "critical",
            "severity=high returned {f}"
        );
    }
    let all_of_admin = agent.findings(&format!("container={}", short(&admin)));
    assert!(
        kinds(&all_of_admin).contains("missing_memory_limit"),
        "the unfiltered answer has the medium finding the severity filter left out: {all_of_admin:#?}"
    );
    assert!(!kinds(&high).contains("missing_memory_limit"), "{high:#?}");

    // `nodeguard query findings` agrees with the API.
    let cli = agent.query_cli(&["findings", "--container", short(&admin)]);
    let cli_findings = cli["findings"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        ids(&cli_findings),
        ids(&all_of_admin),
        "nodeguard query findings --container vs /v1/findings?container="
    );
    let cli = agent.query_cli(&[
        "findings",
        "--container",
        short(&admin),
        "--severity",
        "high",
    ]);
    assert_eq!(
        ids(cli["findings"].as_array().map_or(&[][..], |v| v.as_slice())),
        ids(&high),
        "nodeguard query findings --severity high vs /v1/findings?severity=high: {cli}"
    );
    assert!(
        agent
            .findings(&format!("container={}", calm.id))
            .iter()
            .all(|f| f["kind"] != "dangerous_capability"),
        "the limited container has no dangerous capability"
    );

    // A bad filter is a 400 with a JSON error that names the problem.
    let bad = agent
        .get("/v1/findings?kind=nonsense")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.content_type.starts_with("application/json"), "{bad:?}");
    let body = bad.json("/v1/findings?kind=nonsense");
    assert_eq!(body["status"], 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("nonsense")),
        "{body}"
    );

    // /metrics: OpenMetrics when asked the way Prometheus asks, else the 0.0.4 text format.
    let open = agent
        .get_accept("/metrics", Some(PROMETHEUS_ACCEPT))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        open.content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        open.content_type
    );
    assert!(
        open.body.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF"
    );
    let plain = agent.get("/metrics").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        plain.content_type.starts_with("text/plain"),
        "no Accept header: the 0.0.4 text format, as client_golang does; got {}",
        plain.content_type
    );
    let text = agent
        .get_accept("/metrics", Some("text/plain"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.content_type.starts_with("text/plain") && text.content_type.contains("0.0.4"),
        "{}",
        text.content_type
    );
    assert!(!text.body.contains("# EOF"), "the 0.0.4 text has no # EOF");
    assert!(
        text.body.lines().any(|l| {
            l.starts_with("nodeguard_findings{")
                && l.contains("kind=\"dangerous_capability\"")
                && l.contains(&format!("container=\"{}\"", short(&admin)))
        }),
        "the text form carries the same findings"
    );
    drop((admin, calm, tagged_image));
}

// ---------------------------------------------------------------------------------------------
// 3. SIGHUP reloads the policy; a broken one is refused and the old one stays.

#[test]
fn sighup_reloads_the_policy_and_keeps_the_old_one_when_the_new_is_broken() {
    require_containers!();
    let c = ContainerSpec::new(Image::busybox()).start();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let no_cpu = "version: 1\nrequired_limits:\n  cpu: false\n";
    let broken = "version: 1\nrequired_limits:\n  cpu: sometimes\n";
    let with_cpu = "version: 1\nrequired_limits:\n  cpu: true\n";
    fs::write(&policy, no_cpu).unwrap();
    // The broken policy really is broken, by the agent's own checker.
    let check_dir = tempfile::tempdir().unwrap();
    let broken_copy = check_dir.path().join("broken.yaml");
    fs::write(&broken_copy, broken).unwrap();
    let check = support::scan::nodeguard(&["policy", "check", broken_copy.to_str().unwrap()]);
    assert!(
        !check.success(),
        "policy check accepted {broken:?}\n{check}"
    );

    let agent = start_agent(&["--config", policy.to_str().unwrap()]);
    agent.wait_ready(FIRST_SCAN_TIMEOUT);
    wait_for_container(&agent, &c);
    let by_container = format!("container={}", c.id);
    let before = agent.findings(&by_container);
    assert!(
        kinds(&before).contains("missing_memory_limit"),
        "the policy is evaluated: {before:#?}"
    );
    assert!(
        !kinds(&before).contains("missing_cpu_limit"),
        "required_limits.cpu: false disables missing_cpu_limit: {before:#?}"
    );
    let failures = "nodeguard_policy_reloads_total{result=\"failure\"}";
    let successes = "nodeguard_policy_reloads_total{result=\"success\"}";
    assert_eq!(metric_value(&agent.metrics(), failures), Some(0.0));

    // Broken: refused, counted, logged; the agent keeps running with the old policy.
    fs::write(&policy, broken).unwrap();
    send_signal(agent.pid(), "HUP");
    wait_for(
        "nodeguard_policy_reloads_total{result=\"failure\"} to be 1",
        SCANS_TIMEOUT,
        || {
            let m = agent.metrics();
            match metric_value(&m, failures) {
                Some(1.0) => Ok(()),
                v => Err(format!("{v:?}")),
            }
        },
    );
    assert_eq!(metric_value(&agent.metrics(), successes), Some(0.0));
    wait_for_fresh_scan(&agent);
    agent.assert_running();
    let after = agent.findings(&by_container);
    assert_eq!(
        ids(&after),
        ids(&before),
        "a refused policy changes no finding"
    );
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("policy reload refused") && l.contains("sometimes")),
        "the log says the reload was refused and why"
    );

    // Valid again, re-enabling the check: the finding appears.
    fs::write(&policy, with_cpu).unwrap();
    send_signal(agent.pid(), "HUP");
    let found = wait_for(
        "missing_cpu_limit to appear after the reload",
        SCANS_TIMEOUT,
        || {
            let now = agent.findings(&by_container);
            match now.iter().find(|f| f["kind"] == "missing_cpu_limit") {
                Some(f) => Ok(f.clone()),
                None => Err(format!("{:?}", kinds(&now))),
            }
        },
    );
    assert_eq!(found["severity"], "low", "{found}");
    let m = agent.metrics();
    assert_eq!(metric_value(&m, successes), Some(1.0));
    assert_eq!(metric_value(&m, failures), Some(1.0));
    drop(c);
}

/// Metrics read the daemon's published state like every sink: a scan that fails and a reload
/// that is refused must still reach /metrics, with the last report still served.
#[test]
fn a_failed_scan_and_a_refused_reload_show_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // The proc root is a symlink the test can point away: the next scan cannot list processes.
    let proc_link = dir.path().join("proc");
    std::os::unix::fs::symlink("/proc", &proc_link).unwrap();
    let policy = dir.path().join("policy.yaml");
    fs::write(&policy, "version: 1\n").unwrap();
    let agent = start_agent(&[
        "--proc-root",
        proc_link.to_str().unwrap(),
        "--config",
        policy.to_str().unwrap(),
    ]);
    agent.wait_ready(FIRST_SCAN_TIMEOUT);
    let failed = "nodeguard_scans_total{scan_type=\"processes\",result=\"failure\"}";
    let ok = "nodeguard_scans_total{scan_type=\"processes\",result=\"success\"}";
    let timed = "nodeguard_scan_duration_seconds_count{scan_type=\"processes\"}";
    let scan_errors = "nodeguard_errors_total{kind=\"scan\"}";
    let refused = "nodeguard_policy_reloads_total{result=\"failure\"}";
    let m = agent.metrics();
    assert_eq!(metric_value(&m, failed), Some(0.0), "{m}");
    assert!(metric_value(&m, ok).is_some_and(|n| n >= 1.0), "{m}");

    fs::remove_file(&proc_link).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone"), &proc_link).unwrap();
    let m = wait_for("a failed process scan in /metrics", SCANS_TIMEOUT, || {
        let m = agent.metrics();
        match metric_value(&m, failed) {
            Some(n) if n >= 1.0 => Ok(m),
            v => Err(format!("{failed} is {v:?}")),
        }
    });
    assert!(
        metric_value(&m, scan_errors).is_some_and(|n| n >= 1.0),
        "a failed scan is an error of kind scan:\n{m}"
    );
    assert_eq!(
        metric_value(&m, timed),
        Some(metric_value(&m, ok).unwrap() + metric_value(&m, failed).unwrap()),
        "every scan, failed ones included, is timed:\n{m}"
    );
    assert!(
        agent.log_text().contains("scan failed"),
        "the log says the scan failed"
    );
    // Every scan from now on fails: this report stays the one served.
    let report_before = agent.get_json("/v1/report")["scanned_at"].clone();

    // While scans fail, a broken policy is refused: counted too.
    assert_eq!(metric_value(&m, refused), Some(0.0), "{m}");
    fs::write(&policy, "version: 1\nrequired_limits:\n  cpu: sometimes\n").unwrap();
    send_signal(agent.pid(), "HUP");
    wait_for("a refused reload in /metrics", SCANS_TIMEOUT, || {
        let m = agent.metrics();
        match metric_value(&m, refused) {
            Some(1.0) => Ok(()),
            v => Err(format!("{refused} is {v:?}")),
        }
    });
    agent.assert_running();
    assert_eq!(
        agent.get_json("/v1/report")["scanned_at"],
        report_before,
        "the last good report is still served"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Lifecycle: probes during a scan, SIGTERM and SIGINT.

/// Sparse tail of the big executable: 2 GiB of zeros after busybox. Hashing it keeps the
/// agent's first scan busy for a second or more (sha2 runs at about 1.5 GB/s here, optimised
/// in dev builds too), so probes and signals certainly arrive during a scan.
const BIG_TAIL: u64 = 2 << 30;
/// `--max-hash-size` that lets the agent hash it (the default cap is 512 MiB).
const BIG_HASH_LIMIT: &str = "4294967296";
/// How often the lifecycle tests probe while the first scan runs.
const FAST_POLL: Duration = Duration::from_millis(10);

#[test]
fn healthz_answers_during_a_scan_and_sigterm_exits_zero() {
    require_containers!();
    // An executable never seen before by this agent, with a big tail: the first scan hashes
    // it, so a scan is running while the probes below are asked.
    let tag = support::random_hex(16);
    let (image, exe) = image_with_tagged_busybox("busybox-big", tag.as_bytes(), BIG_TAIL);
    let c = ContainerSpec::new(&image)
        .args(&[&exe, "sleep", "3600"])
        .start();
    let agent = start_agent(&["--max-hash-size", BIG_HASH_LIMIT]);

    // /healthz answers while /readyz still says the first scan has not finished.
    let mut healthy_during_scan = 0;
    let ready = wait_for_every(
        FAST_POLL,
        "the first scan to complete",
        FIRST_SCAN_TIMEOUT,
        || {
            let health = agent.get("/healthz")?;
            let ready = agent.get("/readyz")?;
            if health.status == 200 && ready.status == 503 {
                let body = health.json("/healthz");
                assert_eq!(body["status"], "ok", "{body}");
                let not_ready = ready.json("/readyz");
                assert_eq!(not_ready["status"], 503, "{not_ready}");
                healthy_during_scan += 1;
            }
            if ready.status == 200 {
                Ok(ready.json("/readyz"))
            } else {
                Err(format!(
                    "/healthz {}, /readyz {}",
                    health.status, ready.status
                ))
            }
        },
    );
    assert!(
        healthy_during_scan > 0,
        "/healthz never answered while the first scan ran (/readyz was never 503 when asked)"
    );
    assert!(ready["scans"]["processes"].is_object(), "{ready}");
    let hashed = agent.get_json(&format!("/v1/processes?pid={}", c.init_pid));
    assert!(
        hashed["processes"][0]["sha256"].is_string(),
        "the big executable was hashed: {hashed}"
    );

    // SIGTERM: exit status 0 within the promised time.
    send_signal(agent.pid(), "TERM");
    match agent.wait_exit(STOP_TIMEOUT) {
        Some(status) => assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}"),
        None => panic!("the agent did not exit within {STOP_TIMEOUT:?} of SIGTERM"),
    }
    assert!(
        agent.log_text().contains("\"SIGTERM\""),
        "the log names the signal"
    );
    drop((c, image));
}

#[test]
fn sigint_during_the_first_scan_exits_zero() {
    require_containers!();
    let tag = support::random_hex(16);
    let (image, exe) = image_with_tagged_busybox("busybox-big", tag.as_bytes(), BIG_TAIL);
    let c = ContainerSpec::new(&image)
        .args(&[&exe, "sleep", "3600"])
        .start();
    let agent = start_agent(&["--max-hash-size", BIG_HASH_LIMIT]);
    wait_for_every(
        FAST_POLL,
        "the API to answer during the first scan",
        SCANS_TIMEOUT,
        || {
            let health = agent.get("/healthz")?;
            let ready = agent.get("/readyz")?;
            match (health.status, ready.status) {
                (200, 503) => Ok(()),
                (_, 200) => panic!(
                    "the first scan finished before it could be interrupted; this test needs a \
                 scan in progress (hashing the 2 GiB executable should take a second or more)"
                ),
                (h, r) => Err(format!("/healthz {h}, /readyz {r}")),
            }
        },
    );
    send_signal(agent.pid(), "INT");
    match agent.wait_exit(STOP_TIMEOUT) {
        Some(status) => assert_eq!(status.code(), Some(0), "exit after SIGINT: {status}"),
        None => panic!("the agent did not exit within {STOP_TIMEOUT:?} of SIGINT during a scan"),
    }
    let log = agent.log_text();
    assert!(
        log.contains("\"SIGINT\"") && log.contains("shutting down during a scan"),
        "the log says the agent stopped on SIGINT in the middle of a scan"
    );
    drop((c, image));
}

// ---------------------------------------------------------------------------------------------
// 5. First seen, last seen, resolution.

#[test]
fn findings_keep_first_seen_across_scans_and_resolve_when_the_container_stops() {
    require_containers!();
    let image = Image::busybox();
    let admin = unlimited_admin(image).start();
    let calm = limited(image).start();
    let agent = start_agent(&[]);
    agent.wait_ready(FIRST_SCAN_TIMEOUT);
    wait_for_container(&agent, &admin);
    wait_for_container(&agent, &calm);

    let cap_query = format!("container={}&kind=dangerous_capability", admin.id);
    let first = agent.findings(&cap_query);
    let [first] = first.as_slice() else {
        panic!("one dangerous_capability finding expected: {first:#?}");
    };
    let first = first.clone();
    let calm_query = format!("container={}&kind=runs_as_root", calm.id);
    let calm_first = agent.findings(&calm_query);
    assert_eq!(calm_first.len(), 1, "{calm_first:#?}");

    // Later scans: same id and first_seen, later last_seen.
    let later = wait_for("last_seen to advance", SCANS_TIMEOUT, || {
        let now = agent.findings(&cap_query);
        match now.as_slice() {
            [f] if f["last_seen"] != first["last_seen"] => Ok(f.clone()),
            _ => Err(format!("{now:?}")),
        }
    });
    assert_eq!(later["id"], first["id"]);
    assert_eq!(
        later["first_seen"], first["first_seen"],
        "first_seen stays while the finding stays open"
    );
    let (a, b) = (
        first["last_seen"].as_str().unwrap(),
        later["last_seen"].as_str().unwrap(),
    );
    assert!(b > a, "last_seen moves forward: {a} -> {b}");
    assert!(
        later["first_seen"].as_str().unwrap() <= a,
        "first_seen is not after last_seen: {later}"
    );

    // Stop the container: every finding about it is resolved.
    let admin_id = admin.id.clone();
    let finding_id = first["id"].as_str().unwrap().to_string();
    drop(admin);
    wait_for(
        "the stopped container's findings to be resolved",
        SCANS_TIMEOUT,
        || {
            let now = agent.findings(&format!("container={admin_id}"));
            if now.is_empty() {
                Ok(())
            } else {
                Err(format!("{:?}", kinds(&now)))
            }
        },
    );
    let containers = agent.get_json(&format!("/v1/containers?container={admin_id}"));
    assert_eq!(containers["count"], 0, "{containers}");
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("finding resolved") && l.contains(&finding_id)),
        "the log records the resolution of {finding_id}"
    );
    // The other container's finding is untouched.
    let calm_now = agent.findings(&calm_query);
    assert_eq!(calm_now.len(), 1, "{calm_now:#?}");
    assert_eq!(calm_now[0]["first_seen"], calm_first[0]["first_seen"]);
    drop(calm);
}

// ---------------------------------------------------------------------------------------------
// Digest bundles are part of the policy: read at every reload, a broken one refused whole.

#[test]
fn sighup_rereads_digest_bundles_and_refuses_a_broken_one() {
    require_containers!();
    let c = ContainerSpec::new(Image::busybox()).start();
    let dir = tempfile::tempdir().unwrap();
    // The container runs /bin/sleep, a hard link to busybox: a release of it named `sleep`.
    let release = dir.path().join("release");
    fs::create_dir(&release).unwrap();
    fs::copy(Image::busybox().path("/bin/busybox"), release.join("sleep")).unwrap();
    let bundle = dir.path().join("bundle.json");
    let import = |args: &[&str]| {
        let mut all = vec!["digests", "import"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", bundle.to_str().unwrap()]);
        let out = support::scan::nodeguard(&all);
        assert!(out.success(), "{out}");
    };
    import(&[release.to_str().unwrap()]);
    let policy = dir.path().join("policy.yaml");
    // The container has no pod: bundles compare it only when told to apply to all.
    fs::write(
        &policy,
        "digest_bundles: [bundle.json]\ndigest_bundles_apply_to: all\n",
    )
    .unwrap();

    let agent = start_agent(&["--config", policy.to_str().unwrap()]);
    agent.wait_ready(FIRST_SCAN_TIMEOUT);
    wait_for_container(&agent, &c);
    let by_container = format!("container={}", c.id);
    let unexpected = |findings: &[Value]| -> Vec<Value> {
        findings
            .iter()
            .filter(|f| f["kind"] == "unexpected_binary_hash")
            .cloned()
            .collect()
    };
    assert_eq!(
        unexpected(&agent.findings(&by_container)),
        Vec::<Value>::new(),
        "the release's own binary raises nothing"
    );

    // A broken bundle refuses the reload whole; the old policy (and bundle) stays.
    fs::write(&bundle, b"\x7fELF\x02\x01\x01\0not a bundle").unwrap();
    let failures = "nodeguard_policy_reloads_total{result=\"failure\"}";
    send_signal(agent.pid(), "HUP");
    wait_for(
        "the reload to be refused",
        SCANS_TIMEOUT,
        || match metric_value(&agent.metrics(), failures) {
            Some(1.0) => Ok(()),
            v => Err(format!("{v:?}")),
        },
    );
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("policy reload refused")
            && l.contains("digest_bundles[0]: digest bundle")
            && l.contains("not a JSON digest bundle")),
        "the log names the bundle and why"
    );
    wait_for_fresh_scan(&agent);
    agent.assert_running();
    assert_eq!(
        unexpected(&agent.findings(&by_container)),
        Vec::<Value>::new()
    );

    // A bundle of another build of `sleep` (sha256sum of a tampered copy): re-read at the
    // reload, the container's sleep no longer matches and the finding names the bundle.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let mut bytes = fs::read(release.join("sleep")).unwrap();
    bytes.extend_from_slice(b"\0another build");
    fs::write(other.join("sleep"), bytes).unwrap();
    let mut sum = Command::new("sha256sum");
    sum.arg("sleep").current_dir(&other);
    let sums = support::cmd::run_command(sum, "sha256sum sleep".into(), SCANS_TIMEOUT).ok();
    let sums_file = dir.path().join("SHA256SUMS");
    fs::write(&sums_file, &sums.stdout).unwrap();
    import(&[sums_file.to_str().unwrap()]);
    send_signal(agent.pid(), "HUP");
    let found = wait_for(
        "unexpected_binary_hash after the bundle changed",
        SCANS_TIMEOUT,
        || match unexpected(&agent.findings(&by_container)).first() {
            Some(f) => Ok(f.clone()),
            None => Err("none yet".into()),
        },
    );
    assert_eq!(found["subject"], "/bin/sleep", "{found}");
    assert_eq!(found["severity"], "critical", "{found}");
    let message = found["message"].as_str().unwrap_or_default();
    let want = format!(
        "digest bundle bundle.json (from {} line 1)",
        sums_file.display()
    );
    assert!(message.contains(&want), "{message} lacks {want}");
    drop(c);
}

/// A container runtime may start the agent at a soft open-file limit of 1,024 under a far
/// higher hard one; the agent raises its soft limit to the hard one (the handles it keeps
/// between scans are sized from it). Ground truth: the kernel's `/proc/PID/limits`.
#[test]
fn the_agent_raises_its_soft_open_file_limit_to_the_hard_one() {
    let agent = Agent::start_in(&["prlimit", "--nofile=1024:8192"], &[]);
    let limits = format!("/proc/{}/limits", agent.pid());
    let line = support::wait_for(
        "the agent's open-file limit to be raised",
        Duration::from_secs(30),
        || {
            let text = fs::read_to_string(&limits).map_err(|e| format!("{limits}: {e}"))?;
            let line = text
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .ok_or_else(|| format!("no open-file line in {text}"))?
                .to_string();
            let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
            if numbers == ["8192", "8192"] {
                Ok(line)
            } else {
                Err(line)
            }
        },
    );
    assert!(line.contains("files"), "{line}");
    agent.terminate(STOP_TIMEOUT);
}
