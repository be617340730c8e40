//! Scans container roots and prints what it found as JSON (used by bench/fscan_vs_find.sh).
//!
//! ```text
//! fscan [--threads N] [--max-files N] [--max-secs S] [--repeat N] [--quiet]
//!       [--writable] [--incremental on|off] SPEC...
//!   SPEC = merged:ID=PATH | overlay:ID=LOWER1,LOWER2[+UPPER]
//! ```
//!
//! `--writable`: runs after the first are `scan_writable` (what a process scan does);
//! `--incremental off` walks writable layers in full (the old way). Each run reports its
//! wall time and the process's CPU time (`getrusage`) in `cpu_ms`.

use nodeguard_fscan::{ContainerRoot, FsScanner, RootSpec, WalkBudget};
use nodeguard_model::OverlayLayers;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut budget = WalkBudget::default();
    let mut repeat = 1usize;
    let mut quiet = false;
    let mut writable = false;
    let mut incremental = true;
    let mut roots = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--threads" => threads = value("--threads").parse().expect("--threads N"),
            "--max-files" => budget.max_files = value("--max-files").parse().expect("N"),
            "--max-secs" => {
                budget.max_duration =
                    Duration::from_secs_f64(value("--max-secs").parse().expect("S"))
            }
            "--repeat" => repeat = value("--repeat").parse().expect("N"),
            "--quiet" => quiet = true,
            "--writable" => writable = true,
            "--incremental" => incremental = value("--incremental") != "off",
            spec => roots.push(parse_spec(spec)),
        }
    }
    let mut scanner = FsScanner::new(budget, threads);
    scanner.set_incremental(incremental);
    let mut runs = Vec::new();
    let mut last = None;
    for run in 0..repeat.max(1) {
        let start = Instant::now();
        let cpu = cpu_time();
        let out = if writable && run > 0 {
            scanner.scan_writable(&roots).0
        } else {
            scanner.scan(&roots)
        };
        runs.push(serde_json::json!({
            "elapsed_ms": start.elapsed().as_secs_f64() * 1000.0,
            "cpu_ms": (cpu_time() - cpu).as_secs_f64() * 1000.0,
            "stats": out.stats,
        }));
        last = Some(out);
    }
    let out = last.expect("at least one run");
    let json = serde_json::json!({
        "runs": runs,
        "files": if quiet { serde_json::Value::Null } else { serde_json::to_value(&out.files).expect("json") },
        "file_count": out.files.len(),
        "warnings": out.warnings,
    });
    println!("{}", serde_json::to_string_pretty(&json).expect("json"));
}

fn parse_spec(spec: &str) -> ContainerRoot {
    let (kind, rest) = spec
        .split_once(':')
        .expect("SPEC is merged:ID=PATH or overlay:ID=L1,L2[+UPPER]");
    let (id, target) = rest.split_once('=').expect("SPEC needs ID=...");
    let spec = match kind {
        "merged" => RootSpec::Merged {
            root: PathBuf::from(target),
        },
        "overlay" => {
            let (lowers, upper) = match target.split_once('+') {
                Some((l, u)) => (l, Some(PathBuf::from(u))),
                None => (target, None),
            };
            RootSpec::Overlay(OverlayLayers {
                lower_dirs: lowers
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect(),
                upper_dir: upper,
            })
        }
        other => panic!("unknown root kind {other}"),
    };
    ContainerRoot {
        container_id: id.to_string(),
        spec,
    }
}

/// User and system CPU time of this process (all threads).
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: a valid out-pointer for one `struct rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
