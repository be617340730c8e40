//! Times warm process scans of one `Scanner` on this node, as the daemon runs them with exec
//! events watched at a 10 s interval (full reads every 18 scans): the whole scan, from
//! `/proc` to `Report`, which is what the daemon's `duration_ms` logs. A measurement aid, not
//! a test; compare with `nodeguard-collect`'s `passes` example for the collection's share.
//!
//! ```text
//! cargo run --release -p nodeguard-scan --example scan_passes -- [SCANS]
//! ```

use nodeguard_policy::Policy;
use nodeguard_scan::{NoPods, ScanOptions, ScanScope, Scanner};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), nodeguard_scan::Error> {
    let scans: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let mut options = ScanOptions::new("/proc".into(), "/sys/fs/cgroup".into(), "bench".into());
    options.collect.host_root = PathBuf::from("/");
    let mut scanner = Scanner::new(options, Arc::new(Policy::default()));
    scanner.watch_execs(true);
    scanner.set_full_read_every_watched(18);
    let t = Instant::now();
    let first = scanner.scan(ScanScope::ProcessesAndFilesystems, &NoPods)?;
    println!(
        "first scan (with filesystems): {:.1} ms, {} processes, {} findings",
        t.elapsed().as_secs_f64() * 1e3,
        first.processes.len(),
        first.findings.len()
    );
    let mut times = Vec::with_capacity(scans);
    for _ in 0..scans {
        let t = Instant::now();
        scanner.scan(ScanScope::Processes, &NoPods)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "warm process scan, events watched: {:.2} ms median, {:.2} ms max over {scans}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}
