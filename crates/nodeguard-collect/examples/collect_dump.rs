//! Prints what `collect()` sees, one line per container and per container process:
//! `cargo run -p nodeguard-collect --example collect_dump -- [PROC_ROOT] [HOST_ROOT] [CGROUP_ROOT]`.

use nodeguard_collect::{collect, CollectOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut opts = CollectOptions::with_proc_root(args.next().unwrap_or_else(|| "/proc".into()));
    if let Some(host) = args.next() {
        opts.host_root = host.into();
    }
    if let Some(cgroup) = args.next() {
        opts.cgroup_root = cgroup.into();
    }
    let snap = collect(&opts)?;
    for c in &snap.containers {
        println!(
            "container {} runtime={:?} pod={:?} qos={:?} driver={:?} version={:?} cgroup={}",
            c.id, c.runtime, c.pod_uid, c.qos, c.cgroup_driver, c.cgroup_version, c.cgroup
        );
        println!(
            "  limits={:?} pod_limits={:?} effective={:?}",
            c.limits, c.pod_limits, c.effective_limits
        );
        println!("  rootfs={:?} pids={:?}", c.rootfs, c.pids);
    }
    for p in snap
        .processes
        .iter()
        .filter(|p| p.process.container_id.is_some())
    {
        let q = &p.process;
        println!(
            "pid {} {:?} exe={:?} deleted={} layer={:?} uid={} caps={} nnp={:?} seccomp={:?} shared={:?} identity={:?}",
            q.pid,
            q.command,
            q.exe,
            q.exe_deleted,
            q.exe_layer,
            q.uid,
            q.capability_masks.effective,
            q.no_new_privs,
            q.seccomp,
            q.namespaces.shared_with_host,
            p.exe_identity.map(|i| (i.dev, i.ino, i.size))
        );
    }
    println!("stats: {:?}", snap.stats);
    for w in &snap.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
