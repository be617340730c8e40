//! Measures what the exec history (`/v1/execs`) holds in memory at its caps: this node's
//! processes are read once as exec-driven passes read them, then their observations are
//! recorded over and over until the history has pushed out three times its entry cap. Prints
//! the entries and approximate bytes the history counts, the heap it really holds (a counting
//! allocator), and their ratio. A measurement aid, not a test.
//!
//! ```text
//! cargo run -p nodeguard-scan --example exec_history
//! ```

use nodeguard_model::{ExecHistory, Timestamp};
use nodeguard_policy::Policy;
use nodeguard_scan::{NoPods, ScanOptions, Scanner};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let options = ScanOptions::new("/proc".into(), "/sys/fs/cgroup".into(), "bench".into());
    let mut scanner = Scanner::new(options, Arc::new(Policy::default()));
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for batch in pids.chunks(512) {
        if let Err(e) = scanner.read_execs(batch, &NoPods) {
            eprintln!("read_execs: {e}");
        }
    }
    let read =
        scanner
            .exec_history()
            .since(Timestamp(std::time::UNIX_EPOCH), Timestamp::now(), |_| true);
    if read.is_empty() {
        eprintln!("no process could be read");
        return;
    }
    let with_findings = read.iter().filter(|o| !o.findings.is_empty()).count();
    let cmdline_bytes: usize = read.iter().map(|o| o.process.cmdline.len()).sum();

    let before = LIVE.load(Ordering::Relaxed);
    let history = ExecHistory::default();
    let mut recorded = 0usize;
    while recorded < 4 * ExecHistory::DEFAULT_ENTRIES {
        for o in &read {
            let mut o = o.clone();
            o.observed_at = Timestamp::now();
            history.record(o);
            recorded += 1;
        }
    }
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let s = history.stats();
    println!(
        "processes read: {} ({} with findings, mean command line {} B)",
        read.len(),
        with_findings,
        cmdline_bytes / read.len()
    );
    println!(
        "recorded {recorded}: held {} of {} entries, counted {} of {} bytes, dropped {}",
        s.entries, s.max_entries, s.bytes, s.max_bytes, s.dropped
    );
    println!(
        "heap held: {:.2} MiB; heap / counted bytes = {:.2}",
        heap as f64 / (1 << 20) as f64,
        heap as f64 / s.bytes.max(1) as f64
    );
}
