//! What reading containers' confinement costs beside a warm collection pass on this node:
//! the median warm pass of one `Collector`; one `devices.list` read per container (what a
//! pass pays for every new or privileged container, and for the others once in
//! `FULL_READ_EVERY` passes), with the warm pass's expected share; and the masks searched in
//! mount tables already parsed (what a full read of a container's first process adds to the
//! `mountinfo` parse it does anyway). Prints the ratios. A measurement aid, not a test.
//!
//! ```text
//! cargo run --release -p nodeguard-collect --example confinement_cost -- [PASSES]
//! ```

use nodeguard_collect::confinement::{devices_hierarchy, masked_paths, read_device_access};
use nodeguard_collect::{parse_cgroup_file, parse_mountinfo, CollectOptions, Collector};
use nodeguard_model::DeviceAccess;
use std::path::PathBuf;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<(), nodeguard_collect::Error> {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30)
        .max(1);
    let opts = CollectOptions {
        host_root: PathBuf::from("/"),
        ..CollectOptions::with_proc_root("/proc")
    };
    let mut collector = Collector::new(opts.clone());
    let mut snapshot = collector.collect()?;
    let mut warm = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        snapshot = collector.collect()?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // What a pass has in hand already: each container's first cgroup file and mount table.
    let inputs: Vec<_> = snapshot
        .containers
        .iter()
        .filter_map(|c| {
            let pid = *c.pids.first()?;
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let mountinfo = std::fs::read(format!("/proc/{pid}/mountinfo")).ok()?;
            Some((
                c.id.clone(),
                parse_cgroup_file(&cgroup),
                parse_mountinfo(&mountinfo).0,
            ))
        })
        .collect();
    let n = inputs.len().max(1) as f64;
    let (mut devices, mut masks) = (Vec::new(), Vec::new());
    let (mut all, mut unmasked) = (0usize, 0usize);
    for _ in 0..passes {
        let t = Instant::now();
        let hierarchy = devices_hierarchy(&opts.cgroup_root);
        all = inputs
            .iter()
            .filter(|(id, file, _)| {
                matches!(
                    read_device_access(hierarchy.as_deref(), file, id),
                    Ok(DeviceAccess::All)
                )
            })
            .count();
        devices.push(t.elapsed().as_secs_f64() * 1e6 / n);
        let t = Instant::now();
        unmasked = inputs
            .iter()
            .filter(|(_, _, mounts)| masked_paths(mounts).is_some_and(|m| m.is_empty()))
            .count();
        masks.push(t.elapsed().as_secs_f64() * 1e6 / n);
    }
    let (warm, devices, masks) = (median(warm), median(devices), median(masks));
    let every = f64::from(Collector::FULL_READ_EVERY);
    let per_pass = (all as f64 + (inputs.len() - all) as f64 / every) * devices / 1e3;
    println!(
        "{} processes, {} containers ({all} with every device, {unmasked} unmasked), {passes} passes",
        snapshot.processes.len(),
        inputs.len(),
    );
    println!("warm pass (median):              {warm:.2} ms");
    println!("devices.list, one container:     {devices:.1} us");
    println!(
        "  a warm pass reads {all} + {}/{every}: {per_pass:.3} ms = {:.2} % of the warm pass",
        inputs.len() - all,
        100.0 * per_pass / warm
    );
    println!("masks of a parsed mount table:   {masks:.2} us per container (full reads only)");
    Ok(())
}
