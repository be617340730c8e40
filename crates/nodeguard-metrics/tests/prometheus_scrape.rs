//! A real Prometheus (2.42, Debian's `prometheus` package) scrapes the encoded series over
//! HTTP: the OpenMetrics exposition is what it asks for and must parse without error, and
//! the series must be stored under the names the alert rules query. promtool 2.42 cannot
//! lint OpenMetrics, so this is the check of that format. Skipped loudly without
//! `prometheus`; a failure when `CI` is set.

mod common;

use common::*;
use nodeguard_metrics::{encode_as, Format, Registry};
use nodeguard_model::{EventStats, ScanKind};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Serves `registry` on /metrics, negotiating the format like the agent should; records
/// which format each scrape got.
fn serve(registry: Arc<Registry>) -> (SocketAddr, Arc<Mutex<Vec<Format>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut accept = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("accept") {
                        accept = Some(value.trim().to_string());
                    }
                }
            }
            let format = Format::negotiate(accept.as_deref());
            log.lock().unwrap().push(format);
            let body = encode_as(&registry, format).unwrap();
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                format.content_type(),
                body.len()
            );
        }
    });
    (addr, served)
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(binary: &std::path::Path, target: SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    // The target labels a ServiceMonitor gives the agent's own pod, and honor_labels as
    // recommended for nodeguard, so that its namespace/pod/container labels win.
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: nodeguard\n    honor_labels: true\n    static_configs:\n      - targets: ['{target}']\n        labels: {{namespace: nodeguard, pod: nodeguard-x7k2p, container: agent, node: node-1}}\n"
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Prometheus {
        child,
        addr,
        _dir: dir,
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from Prometheus' HTTP API; None while it is not listening yet.
fn api(prometheus: &Prometheus, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(prometheus.addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn query(prometheus: &Prometheus, promql: &str) -> Vec<Value> {
    let path = format!("/api/v1/query?query={}", percent_encode(promql));
    let answer = api(prometheus, &path).unwrap_or_else(|| panic!("no answer to {promql}"));
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn single_value(prometheus: &Prometheus, promql: &str) -> String {
    let result = query(prometheus, promql);
    assert_eq!(result.len(), 1, "{promql}: {result:?}");
    result[0]["value"][1].as_str().unwrap().to_string()
}

#[test]
fn prometheus_scrapes_the_openmetrics_exposition_under_the_documented_names() {
    let Some(binary) = tool("prometheus", "prometheus_scrape") else {
        return;
    };
    let (registry, metrics) = setup();
    let mut state = three_containers(1_700_000_000);
    scan_finished(
        &mut state,
        ScanKind::Processes,
        Duration::from_millis(30),
        true,
    );
    state.totals.policy_reloads.record(false);
    metrics.state_changed(&Arc::new(state));
    metrics.set_event_stats(event_stats(EventStats {
        sent: 4,
        queued: 2,
        ..EventStats::default()
    }));
    let (target, served) = serve(Arc::new(registry));
    let prometheus = start_prometheus(&binary, target);

    // Wait for a completed scrape of the target.
    let deadline = Instant::now() + Duration::from_secs(60);
    let target_state = loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape {target} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
        let Some(targets) = api(&prometheus, "/api/v1/targets") else {
            continue;
        };
        let t = &targets["data"]["activeTargets"][0];
        if t["health"] == "up" || t["health"] == "down" {
            break t.clone();
        }
    };
    assert_eq!(
        target_state["health"], "up",
        "scrape failed: {target_state}"
    );
    assert_eq!(target_state["lastError"], "", "{target_state}");
    assert_eq!(
        served.lock().unwrap().first(),
        Some(&Format::OpenMetrics),
        "Prometheus asks for OpenMetrics"
    );

    // Samples of the first scrape are queryable once the scrape is committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while query(&prometheus, "nodeguard_build_info").is_empty() {
        assert!(Instant::now() < deadline, "no samples stored");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        single_value(
            &prometheus,
            r#"nodeguard_findings_detected_total{kind="deleted_executable",severity="critical"}"#
        ),
        "1"
    );
    assert_eq!(
        single_value(
            &prometheus,
            r#"nodeguard_findings{namespace="shop",pod="web-1",container="nginx",kind="dangerous_capability"}"#
        ),
        "2"
    );
    // The host finding: its empty labels are not stored, and (honor_labels) they are not
    // replaced by the agent pod's own target labels either.
    let host = query(&prometheus, r#"nodeguard_findings{container=""}"#);
    assert_eq!(host.len(), 1, "{host:?}");
    let labels = &host[0]["metric"];
    assert_eq!(labels["kind"], "deleted_executable");
    assert!(
        labels.get("pod").is_none() && labels.get("namespace").is_none(),
        "{host:?}"
    );
    assert_eq!(labels["node"], "node-1", "{host:?}");
    // Series without those labels carry the agent pod's.
    let containers = query(&prometheus, "nodeguard_containers");
    assert_eq!(
        containers[0]["metric"]["pod"], "nodeguard-x7k2p",
        "{containers:?}"
    );
    assert_eq!(
        single_value(
            &prometheus,
            r#"nodeguard_scan_duration_seconds_bucket{scan_type="processes",le="0.05"}"#
        ),
        "1"
    );
    assert_eq!(
        single_value(
            &prometheus,
            r#"nodeguard_last_scan_timestamp_seconds{scan_type="processes"}"#
        ),
        "1700000000"
    );
    assert_eq!(
        single_value(
            &prometheus,
            r#"nodeguard_policy_reloads_total{result="failure"}"#
        ),
        "1"
    );
    assert_eq!(
        single_value(&prometheus, r#"nodeguard_events_total{result="sent"}"#),
        "4"
    );
    assert_eq!(
        single_value(&prometheus, "nodeguard_hashed_bytes_total"),
        "1000"
    );
    assert_eq!(
        single_value(&prometheus, r#"up{job="nodeguard"}"#),
        "1",
        "the job the alert rules look for"
    );
}
