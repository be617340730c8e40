//! Times collection passes on this node: one cold pass, then warm passes of one `Collector`,
//! then the same with exec events watched (`Collector::watch_execs`), with full reads every 6
//! passes and then every 18 (`Collector::set_full_read_every_watched`), then cold passes
//! (`collect`) for comparison. A measurement aid, not a test.
//!
//! ```text
//! cargo run --release -p nodeguard-collect --example passes -- [PASSES] [COLD_PASSES] [PROC_ROOT]
//! ```

use nodeguard_collect::{CollectOptions, Collector};
use std::path::PathBuf;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), nodeguard_collect::Error> {
    let mut args = std::env::args().skip(1);
    let passes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let cold_passes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(passes);
    let proc_root = args.next().unwrap_or_else(|| "/proc".into());
    let opts = CollectOptions {
        host_root: PathBuf::from("/"),
        ..CollectOptions::with_proc_root(proc_root)
    };
    let mut collector = Collector::new(opts.clone());
    let t = Instant::now();
    let first = collector.collect()?;
    println!(
        "first pass: {:.1} ms, {} processes, {} containers",
        t.elapsed().as_secs_f64() * 1e3,
        first.processes.len(),
        first.containers.len()
    );
    let (mut warm, mut reused) = (Vec::new(), 0);
    for _ in 0..passes {
        let t = Instant::now();
        let s = collector.collect()?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        reused = s.processes_reused;
    }
    // As with exec events on and none lost: nothing reports an exec here, so this is the
    // floor of a watched pass (the first one re-checks everything, as after a loss).
    collector.watch_execs(true);
    collector.collect()?;
    let (mut watched, mut watched_reused) = (Vec::new(), 0);
    for _ in 0..passes {
        let t = Instant::now();
        let s = collector.collect()?;
        watched.push(t.elapsed().as_secs_f64() * 1e3);
        watched_reused = s.processes_reused;
    }
    println!(
        "warm pass with exec events watched: {:.2} ms median ({watched_reused} processes reused, {} /proc/PID handles held)",
        median(watched),
        collector.held_dirs()
    );
    // As the daemon runs it at a 10 s interval: full reads about every 3 minutes.
    collector.set_full_read_every_watched(18);
    let mut stretched = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        collector.collect()?;
        stretched.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "warm pass with exec events watched, full reads every 18 passes (the daemon at 10 s): {:.2} ms median",
        median(stretched)
    );
    let mut cold = Vec::new();
    for _ in 0..cold_passes.max(1) {
        let t = Instant::now();
        nodeguard_collect::collect(&opts)?;
        cold.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (w, c) = (median(warm), median(cold));
    println!(
        "warm pass: {w:.2} ms median ({reused} processes reused); cold pass: {c:.2} ms median; {:.1}x",
        c / w
    );
    Ok(())
}
