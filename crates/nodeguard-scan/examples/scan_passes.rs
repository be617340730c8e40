//! Times warm process scans of one `Scanner` on this node, as the daemon runs them with exec
//! events watched at a 10 s interval (full reads every 18 scans): the whole scan, from
//! `/proc` to `Report`, which is what the daemon's `duration_ms` logs, and the median of each
//! of its phases (`Scanner::last_phases`). A measurement aid, not a test; compare with
//! `nodeguard-collect`'s `passes` example for the collection alone.
//!
//! ```text
//! cargo run --release -p nodeguard-scan --example scan_passes -- [SCANS] [PAUSE_SECONDS]
//! ```
//!
//! With a pause, the scans are that far apart as the daemon's are (caches cool meanwhile);
//! without one, back to back.

use nodeguard_policy::Policy;
use nodeguard_scan::{NoPods, ScanOptions, ScanPhases, ScanScope, Scanner};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts allocations, to see how much a scan churns the allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

/// User and system time of the whole process so far.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> Result<(), nodeguard_scan::Error> {
    let mut args = std::env::args().skip(1);
    let scans: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let pause = args
        .next()
        .and_then(|a| a.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let mut options = ScanOptions::new("/proc".into(), "/sys/fs/cgroup".into(), "bench".into());
    options.collect.host_root = PathBuf::from("/");
    let mut scanner = Scanner::new(options, Arc::new(Policy::default()));
    scanner.collector().watch_execs(true);
    scanner.collector().set_full_read_every_watched(18);
    let t = Instant::now();
    let first = scanner.scan(ScanScope::ProcessesAndFilesystems, &NoPods)?;
    println!(
        "first scan (with filesystems): {:.1} ms, {} processes, {} findings",
        t.elapsed().as_secs_f64() * 1e3,
        first.processes.len(),
        first.findings.len()
    );
    drop(first);
    let scans = scans.max(1);
    let mut times = Vec::with_capacity(scans);
    let mut allocations = Vec::with_capacity(scans);
    let mut cpu = Vec::with_capacity(scans);
    let mut phases: Vec<ScanPhases> = Vec::with_capacity(scans);
    for _ in 0..scans {
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let cpu_before = cpu_time();
        let t = Instant::now();
        let report = scanner.scan(ScanScope::Processes, &NoPods)?;
        times.push(t.elapsed());
        allocations.push(ALLOCATIONS.load(Ordering::Relaxed) - before);
        cpu.push(cpu_time() - cpu_before);
        phases.push(scanner.last_phases());
        drop(report);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    times.sort();
    println!(
        "warm process scan, events watched: {:.2} ms median, {:.2} ms max over {scans}",
        ms(times[scans / 2]),
        ms(times[scans - 1])
    );
    let median = |f: fn(&ScanPhases) -> Duration| {
        let mut v: Vec<Duration> = phases.iter().map(f).collect();
        v.sort();
        ms(v[v.len() / 2])
    };
    println!(
        "  phases (median ms): list {:.2}, read {:.2}, containers {:.2}, layers {:.2} \
         (collection {:.2}); redact {:.2}, hash {:.2}, filesystems {:.2}, evaluate {:.2}",
        median(|p| p.collect.list),
        median(|p| p.collect.read),
        median(|p| p.collect.containers),
        median(|p| p.collect.layers),
        median(|p| p.collected),
        median(|p| p.redact),
        median(|p| p.hash),
        median(|p| p.filesystems),
        median(|p| p.evaluate),
    );
    let mut full: Vec<usize> = phases.iter().map(|p| p.collect.read_in_full).collect();
    full.sort();
    allocations.sort();
    cpu.sort();
    println!(
        "  processes read in full: {} median per scan; allocations: {} median per scan; CPU \
         time (all threads): {:.2} ms median per scan",
        full[full.len() / 2],
        allocations[allocations.len() / 2],
        ms(cpu[cpu.len() / 2])
    );
    Ok(())
}
