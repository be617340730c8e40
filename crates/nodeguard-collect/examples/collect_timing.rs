//! Times `collect()` over a proc root: `cargo run --release -p nodeguard-collect --example
//! collect_timing -- [PROC_ROOT] [ROUNDS]`.

use nodeguard_collect::{collect, CollectOptions};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let proc_root = args.next().unwrap_or_else(|| "/proc".to_string());
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(20);
    let opts = CollectOptions {
        host_root: "/".into(),
        ..CollectOptions::with_proc_root(&proc_root)
    };
    let mut times = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let start = Instant::now();
        let snap = collect(&opts)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        last = Some(snap);
    }
    times.sort_by(f64::total_cmp);
    if let Some(snap) = last {
        println!(
            "{} processes ({} kernel threads), {} containers, vanished {}, denied {}, errors {:?}",
            snap.stats.processes_seen,
            snap.stats.kernel_threads,
            snap.stats.containers_seen,
            snap.stats.processes_vanished,
            snap.stats.processes_denied,
            snap.stats.errors
        );
        for w in snap.warnings.iter().take(5) {
            println!("warning: {w}");
        }
    }
    println!(
        "collect(): min {:.2} ms, median {:.2} ms, max {:.2} ms over {rounds} rounds",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}
