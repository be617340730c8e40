//! Indexes images from real stores the way the agent would, and prints what it cost:
//! uncompressed MB per CPU-second, wall time, peak RSS, index bytes on disk.
//! Used by `bench/image_index_bench.sh`.
//!
//! index_store [--containerd ROOT]... [--storage ROOT]... [--docker ROOT]... [--state DIR]
//!             [--budget FRACTION] IMAGE_REF...

use nodeguard_image::{ImageRef, ImageStatus, Indexer, IndexerOptions, Stores};
use std::time::{Duration, Instant, SystemTime};

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: getrusage filled it (or left it zeroed).
    let u = unsafe { usage.assume_init() };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut stores = Stores::default();
    let mut state = None;
    let mut budget = 1.0;
    let mut images = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--containerd" => stores.containerd.push(value().into()),
            "--storage" => stores.containers_storage.push(value().into()),
            "--docker" => stores.docker.push(value().into()),
            "--state" => state = Some(value().into()),
            "--budget" => budget = value().parse().expect("a number"),
            other => images.push(ImageRef::parse(other).expect("an image reference with a digest")),
        }
    }
    let indexer = Indexer::start(IndexerOptions {
        stores,
        state_dir: state,
        cpu_budget: budget,
        disk_budget_bytes: 1 << 30,
        ..IndexerOptions::default()
    });
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut ready = 0;
    let mut failed = 0;
    for (i, image) in images.iter().enumerate() {
        // Oldest first: the first image named is the oldest container's.
        let _ = indexer.status(
            image,
            SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64),
        );
    }
    for image in &images {
        loop {
            match indexer.status(image, SystemTime::UNIX_EPOCH) {
                ImageStatus::Ready(_) => {
                    ready += 1;
                    break;
                }
                ImageStatus::Unverifiable(why) => {
                    eprintln!("{image}: {why}");
                    failed += 1;
                    break;
                }
                ImageStatus::Pending => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let p = indexer.progress();
    let mb = p.bytes_read as f64 / 1e6;
    println!(
        "images_ready={ready} images_failed={failed} layers_indexed={} layers_from_disk={} layers_refused={} \
         uncompressed_mb={mb:.1} wall_s={wall:.2} cpu_s={cpu:.2} mb_per_cpu_s={:.0} peak_rss_mib={:.1} index_disk_bytes={}",
        p.layers_indexed,
        p.layers_from_disk,
        p.layers_refused,
        if cpu > 0.0 { mb / cpu } else { 0.0 },
        peak_rss_kib() as f64 / 1024.0,
        p.disk_bytes
    );
}
