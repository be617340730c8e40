//! Encoding cost under many concurrent scrapers. Timing depends on the machine, so this is
//! ignored by default; run it in release:
//!
//! ```text
//! cargo test -p nodeguard-metrics --release --test scrape_latency -- --ignored --nocapture
//! ```

mod common;

use common::*;
use nodeguard_metrics::{encode_as, Format, Metrics};
use nodeguard_model::{Finding, FindingKind, ScanKind, Severity};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTAINERS: usize = 60;
const SCRAPERS: usize = 50;
const ROUNDS: usize = 200;

/// 60 containers with 5 processes and 12 findings each (some sharing a label set), 10 host
/// processes and 2 host findings.
fn busy_node(scanned_at: u64) -> nodeguard_model::NodeState {
    let mut containers = Vec::new();
    let mut processes = Vec::new();
    let mut findings = Vec::new();
    for c in 0..CONTAINERS {
        let id = format!("{c:064x}");
        let pod = format!("app-{c}");
        containers.push(container(&id, Some(("prod", pod.as_str(), "main"))));
        for p in 0..5 {
            processes.push(process((1000 + c * 10 + p) as i32, Some(&id), false));
        }
        for (i, kind) in FindingKind::ALL.iter().take(12).enumerate() {
            let severity = Severity::ALL[i % 4];
            findings.push(Finding::new(
                *kind,
                severity,
                Some(&id),
                format!("s{i}"),
                "m",
            ));
        }
    }
    for p in 0..10 {
        processes.push(process(p + 1, None, false));
    }
    findings.push(Finding::new(
        FindingKind::DeletedExecutable,
        Severity::Critical,
        None,
        "/x",
        "m",
    ));
    findings.push(Finding::new(
        FindingKind::DeniedBinary,
        Severity::Critical,
        None,
        "/y",
        "m",
    ));
    let mut r = report(scanned_at, containers, processes);
    r.findings = findings;
    state_of(r)
}

/// 50 scrapers ask at the same moment, as many workers as cores answer them (what an HTTP
/// server on a 2-core agent does); a scrape's latency is its wait plus its encoding. The
/// daemon keeps publishing new states meanwhile.
#[test]
#[ignore = "timing; run in release with --ignored"]
fn fifty_simultaneous_scrapes_are_answered_within_ten_milliseconds_at_p99() {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    metrics.state_changed(&Arc::new(busy_node(1000)));
    let registry = Arc::new(registry);
    let openmetrics = encode_as(&registry, Format::OpenMetrics).unwrap();
    let samples = openmetrics.lines().filter(|l| !l.starts_with('#')).count();

    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let (metrics, stop) = (metrics.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut t = 1000;
            while !stop.load(Ordering::Relaxed) {
                t += 1;
                metrics.state_changed(&Arc::new(busy_node(t)));
                metrics.scan_finished(ScanKind::Processes, Duration::from_millis(20), true);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut latencies = Vec::with_capacity(ROUNDS * SCRAPERS);
    let mut encode_times = Vec::with_capacity(ROUNDS * SCRAPERS);
    for _ in 0..ROUNDS {
        let next = AtomicUsize::new(0);
        let arrived = Instant::now();
        let results: Vec<(Duration, Duration)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        while next.fetch_add(1, Ordering::Relaxed) < SCRAPERS {
                            let format = if done.len() % 2 == 0 {
                                Format::OpenMetrics
                            } else {
                                Format::Text
                            };
                            let start = Instant::now();
                            let body = encode_as(&registry, format).unwrap();
                            assert!(body.len() > 1000);
                            done.push((arrived.elapsed(), start.elapsed()));
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        for (latency, encode) in results {
            latencies.push(latency);
            encode_times.push(encode);
        }
    }
    stop.store(true, Ordering::Relaxed);
    updater.join().unwrap();

    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    let p99 = pct(&mut latencies, 0.99);
    println!(
        "{ROUNDS} rounds of {SCRAPERS} simultaneous scrapes on {workers} workers, {samples} samples, {} bytes: \
         latency p50 {:?} p99 {p99:?} max {:?}; one encode p50 {:?} p99 {:?}",
        openmetrics.len(),
        pct(&mut latencies, 0.50),
        latencies[latencies.len() - 1],
        pct(&mut encode_times, 0.50),
        pct(&mut encode_times, 0.99),
    );
    assert!(p99 < Duration::from_millis(10), "p99 {p99:?}");
}
