//! The opt-in writable-layer event source (`--fs-events fanotify`, issue 20), against a real
//! runc container on overlayfs and the daemon (`nodeguard run`):
//!
//! - with it, `chmod u+s` on a file that already exists deep in a 20,000-file writable layer
//!   (which changes only that file's ctime) is in the report within a process interval or
//!   two, with the filesystem interval far away; the agent holds no `CAP_SYS_ADMIN` once it
//!   runs; events lost in a storm (more distinct directories than the agent keeps between
//!   two scans) are counted and bring the re-check forward, so a change made in the storm is
//!   still seen within a few process intervals;
//! - without the grant (no `CAP_SYS_ADMIN`), the agent says so once, exports
//!   `nodeguard_fs_events_source{source="unavailable"}`, and the same change waits for the
//!   filesystem interval, as with `--fs-events off`.
//!
//! Ground truth is what the kernel says: `find -perm -4000` on the upper directory and the
//! `Cap*` lines of `/proc/PID/status`. Needs root, runc, busybox-static and setpriv; skips
//! loudly without them, fails under `CI`. Run:
//! `CI=true cargo test -p nodeguard --test writable_layer_fanotify`.

mod support;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::container::{Container, ContainerSpec};
use support::image::Image;

/// Directories and files per directory planted in the writable layer.
const DIRS: usize = 400;
const FILES_PER_DIR: usize = 50;
/// The process interval the agents run with.
const INTERVAL_SECS: u64 = 1;
/// Distinct directories the agent keeps between two scans (`--fs-events-max-dirs`, lower
/// than the default 16,384 so that a storm past it fits in one process interval on a loaded
/// machine).
const MAX_DIRS: usize = 1_000;
/// Directories chmod-ed outside the container in the storm.
const STORM_DIRS: usize = 4 * MAX_DIRS;
/// `CAP_SYS_ADMIN`'s bit in the `Cap*` lines.
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// `find UPPER -perm -4000 -type f` relative paths: what the kernel says is setuid there.
fn setuid_in(upper: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(upper)
        .args(["-xdev", "-perm", "-4000", "-type", "f"])
        .output()
        .expect("run find");
    assert!(out.status.success(), "find failed: {out:?}");
    let prefix = upper.to_string_lossy().to_string();
    let mut paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect();
    paths.sort();
    paths
}

/// The container's setuid paths in the agent's latest report, once a filesystem scan ran.
fn reported_setuid(agent: &Agent, container: &str) -> Result<Vec<String>, String> {
    let r = agent.get("/v1/report")?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    let report: Value = r.json("/v1/report");
    if report["stats"]["files_walked"].as_u64().unwrap_or(0) == 0 {
        return Err("no filesystem scan yet".into());
    }
    let mut paths: Vec<String> = report["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["container_id"] == container && f["setuid"] == true)
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    paths.sort();
    Ok(paths)
}

/// A running container whose writable layer holds `DIRS` × `FILES_PER_DIR` plain files.
fn big_layer(image: &Image) -> Container {
    let c = ContainerSpec::new(image).start();
    for d in 0..DIRS {
        let dir = c.rootfs.join(format!("data/a{}/b{}/c{d}", d % 8, d % 5));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            fs::write(dir.join(format!("f{f}")), b"plain").unwrap();
        }
    }
    assert!(setuid_in(&c.upper_dir).is_empty(), "ground truth: none yet");
    c
}

/// `chmod u+s` through the container's mount (it lands in the upper dir); returns the
/// kernel's view of the layer afterwards.
fn chmod_suid(c: &Container, rel: &str) -> Vec<String> {
    let path = c.rootfs.join(rel.trim_start_matches('/'));
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o4000)).unwrap();
    let truth = setuid_in(&c.upper_dir);
    assert!(truth.contains(&rel.to_string()), "ground truth: {truth:?}");
    truth
}

/// Waits until the report's setuid files of `c` are `truth`; how long it took.
fn wait_reported(agent: &Agent, c: &Container, truth: &[String], within: Duration) -> Duration {
    let started = Instant::now();
    support::wait_for("the chmod u+s in the daemon's report", within, || {
        let seen = reported_setuid(agent, &c.id)?;
        (seen == truth)
            .then_some(())
            .ok_or_else(|| format!("{seen:?}, want {truth:?}"))
    });
    started.elapsed()
}

/// The `CapEff` and `CapPrm` masks of `pid`, as the kernel reports them.
fn capabilities(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("CapEff:"), field("CapPrm:"))
}

/// Waits until `metric` is above `floor`. The metrics come from the latest published scan,
/// and `/metrics` is rendered at most once a second: on a loaded machine the page can be a
/// scan behind what `/v1/report` already shows (CI saw it), so a few intervals are given.
fn wait_metric_above(agent: &Agent, metric: &str, floor: f64, what: &str) {
    support::wait_for(what, Duration::from_secs(10 * INTERVAL_SECS), || {
        let value = agent.metric(metric).unwrap_or(0.0);
        if value > floor {
            Ok(())
        } else {
            Err(format!(
                "{metric} {value}, want above {floor}\n{}",
                agent.metrics()
            ))
        }
    });
}

fn wait_first_fs_scan(agent: &Agent, c: &Container) {
    agent.wait_ready(Duration::from_secs(120));
    support::wait_for("the first filesystem scan", Duration::from_secs(60), || {
        reported_setuid(agent, &c.id)
    });
    // Then two process scans more (one of them whole), so the layer's tree is kept and a
    // change after this point is one the walk alone cannot see (on a loaded machine the first
    // process scans may still be building it).
    let processes = "nodeguard_scans_total{scan_type=\"processes\",result=\"success\"}";
    let before = agent.metric(processes).unwrap_or(0.0);
    support::wait_for("two more process scans", Duration::from_secs(60), || {
        let now = agent.metric(processes).unwrap_or(0.0);
        if now >= before + 2.0 {
            Ok(())
        } else {
            Err(format!("{now} process scans"))
        }
    });
}

#[test]
fn with_fanotify_a_chmod_on_an_existing_file_is_seen_within_a_process_interval_and_a_storm_rechecks_at_once(
) {
    require_containers!();
    let image = Image::busybox_owned("fanotify");
    let c = big_layer(&image);
    let upper = c.upper_dir.to_str().expect("utf-8 path").to_string();
    let interval = format!("{INTERVAL_SECS}s");
    // The filesystem scan's re-check is 10 minutes away: only events can explain a chmod
    // seen within seconds.
    let max_dirs = MAX_DIRS.to_string();
    let agent = Agent::start(&[
        "--fs-events-max-dirs",
        &max_dirs,
        "--interval",
        &interval,
        "--fs-interval",
        "600s",
        "--exec-events",
        "off",
        "--fs-events",
        "fanotify",
        "--fs-events-paths",
        &upper,
    ]);
    wait_first_fs_scan(&agent, &c);
    assert_eq!(
        agent.metric("nodeguard_fs_events_source{source=\"fanotify\"}"),
        Some(1.0),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        agent.metric("nodeguard_fs_events_unmarked_layers"),
        Some(0.0)
    );
    let (effective, permitted) = capabilities(agent.pid());
    assert_eq!(
        (effective | permitted) & CAP_SYS_ADMIN,
        0,
        "CAP_SYS_ADMIN is dropped once the filesystems are marked (CapEff {effective:x}, CapPrm {permitted:x})"
    );

    let truth = chmod_suid(&c, "/data/a5/b0/c205/f17");
    let took = wait_reported(&agent, &c, &truth, Duration::from_secs(6 * INTERVAL_SECS));
    eprintln!("chmod u+s with fanotify reported after {took:?}");
    // The chmod's event is read and its directory listed again.
    wait_metric_above(
        &agent,
        "nodeguard_fs_events_dirs_listed_total",
        0.0,
        "the chmod's event read and its directory listed",
    );

    // A storm of attribute changes in more distinct directories than the agent keeps between
    // two scans (outside the container, on the same filesystem), with a chmod in the
    // container in the middle of it: the batch is lost, counted, and the re-check of every
    // layer runs at the next process scan, which finds the chmod.
    let storm = tempfile::Builder::new()
        .prefix("nodeguard-storm-")
        .tempdir_in(c.upper_dir.parent().expect("upper has a parent"))
        .expect("storm dir");
    for d in 0..STORM_DIRS {
        let dir = storm.path().join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f"), b"x").unwrap();
    }
    let lost_before = agent
        .metric("nodeguard_fs_events_lost_total")
        .unwrap_or(0.0);
    let mut truth = Vec::new();
    for d in 0..STORM_DIRS {
        let f = storm.path().join(format!("d{d}/f"));
        fs::set_permissions(
            &f,
            fs::Permissions::from_mode(0o600 | ((d as u32 % 2) * 0o40)),
        )
        .unwrap();
        if d == STORM_DIRS / 2 {
            truth = chmod_suid(&c, "/data/a2/b2/c322/f3");
        }
    }
    let took = wait_reported(&agent, &c, &truth, Duration::from_secs(10 * INTERVAL_SECS));
    eprintln!("chmod u+s in a storm reported after {took:?}");
    wait_metric_above(
        &agent,
        "nodeguard_fs_events_lost_total",
        lost_before,
        "the storm's loss counted",
    );
    let report = agent.get_json("/v1/report");
    assert_eq!(report["stats"]["fs_events"]["source"], "fanotify");
    drop(agent);
    drop(storm);
    drop(c);
    drop(image);
}

#[test]
fn without_cap_sys_admin_the_agent_says_so_once_and_a_chmod_waits_for_the_filesystem_interval() {
    require_containers!();
    if Command::new("setpriv").arg("--version").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set, so this test must run, but setpriv is missing");
        }
        eprintln!("SKIP: setpriv (util-linux) is needed to start the agent without CAP_SYS_ADMIN");
        return;
    }
    let image = Image::busybox_owned("nofanotify");
    let c = big_layer(&image);
    const FS_INTERVAL_SECS: u64 = 15;
    let interval = format!("{INTERVAL_SECS}s");
    let fs_interval = format!("{FS_INTERVAL_SECS}s");
    let upper = c.upper_dir.to_str().expect("utf-8 path").to_string();
    // Root with every capability but CAP_SYS_ADMIN (gone from the bounding set, so from
    // what the exec'd agent is given).
    let agent = Agent::start_in(
        &["setpriv", "--bounding-set=-sys_admin", "--"],
        &[
            "--interval",
            &interval,
            "--fs-interval",
            &fs_interval,
            "--exec-events",
            "off",
            "--fs-events",
            "fanotify",
            "--fs-events-paths",
            &upper,
        ],
    );
    wait_first_fs_scan(&agent, &c);
    let (effective, _) = capabilities(agent.pid());
    assert_eq!(
        effective & CAP_SYS_ADMIN,
        0,
        "ground truth: started without it"
    );
    assert_eq!(
        agent.metric("nodeguard_fs_events_source{source=\"unavailable\"}"),
        Some(1.0),
        "{}",
        agent.metrics()
    );
    let log = agent.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("writable-layer events unavailable"))
        .collect();
    assert_eq!(said.len(), 1, "said once, not {}:\n{log}", said.len());
    assert!(
        said[0].contains("CAP_SYS_ADMIN"),
        "names the capability: {}",
        said[0]
    );

    // Let a filesystem scan pass, so the next one is a full interval away.
    let first = agent.get_json("/v1/report")["stats"]["files_walked"].clone();
    support::wait_for(
        "a filesystem scan after the first",
        Duration::from_secs(3 * FS_INTERVAL_SECS),
        || {
            let now = agent.get_json("/v1/report")["stats"]["files_walked"].clone();
            (now != first).then_some(()).ok_or("same".to_string())
        },
    );
    let truth = chmod_suid(&c, "/data/a5/b0/c205/f17");
    let chmodded = Instant::now();
    // Not within a few process intervals: only the re-check finds it.
    std::thread::sleep(Duration::from_secs(4 * INTERVAL_SECS));
    let seen = reported_setuid(&agent, &c.id).expect("report");
    assert!(
        !seen.contains(&truth[0]),
        "seen after {:?} although nothing watches the layer: {seen:?}",
        chmodded.elapsed()
    );
    let took = wait_reported(
        &agent,
        &c,
        &truth,
        Duration::from_secs(3 * FS_INTERVAL_SECS),
    );
    eprintln!(
        "chmod u+s without fanotify reported after {:?}",
        took + Duration::from_secs(4 * INTERVAL_SECS)
    );
    drop(agent);
    drop(c);
    drop(image);
}
