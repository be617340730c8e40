//! Writable-layer cost follows change (issue 20), against a real runc container on overlayfs
//! and the daemon (`nodeguard run`):
//!
//! - a container whose writable layer holds 20,000 files in 400 directories: a setuid file
//!   created deep in it is in the daemon's report within a process interval or two, though
//!   the filesystem interval is far away (only the directories whose times changed are
//!   listed again);
//! - `chmod u+s` on one of its existing files (which changes only that file's ctime) is in
//!   the report once the filesystem interval has passed (the re-check), and
//!   `nodeguard_fs_recheck_age_seconds` says how stale the inventory may be.
//!
//! Ground truth is what the kernel says of the upper directory (`find -perm -4000`), never
//! what nodeguard computed. Needs root, runc and busybox-static; skips loudly without them,
//! fails under `CI`. Run: `cargo test -p nodeguard --test writable_layer_runc`.

mod support;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::container::ContainerSpec;
use support::image::Image;

/// Directories and files per directory planted in the writable layer.
const DIRS: usize = 400;
const FILES_PER_DIR: usize = 50;
/// The process interval the agent runs with.
const INTERVAL_SECS: u64 = 1;
/// The filesystem interval (the re-check of unchanged directories).
const FS_INTERVAL_SECS: u64 = 12;

/// `find UPPER -perm -4000 -type f` relative paths: what the kernel says is setuid there.
fn setuid_in(upper: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(upper)
        .args(["-xdev", "-perm", "-4000", "-type", "f"])
        .output()
        .expect("run find");
    assert!(out.status.success(), "find failed: {out:?}");
    let prefix = upper.to_string_lossy().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
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
    Ok(report["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["container_id"] == container && f["setuid"] == true)
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect())
}

fn plant_setuid(path: &Path) {
    fs::write(path, b"#!/bin/sh\nid\n").expect("write the planted file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o4755)).expect("chmod 4755");
}

#[test]
fn setuid_files_in_a_large_writable_layer_are_found_new_within_an_interval_and_chmod_at_the_recheck(
) {
    require_containers!();
    let image = Image::busybox_owned("bigupper");
    let c = ContainerSpec::new(&image).start();
    // The container's own writes, through its overlay mount: they land in the upper dir.
    for d in 0..DIRS {
        let dir = c.rootfs.join(format!("data/a{}/b{}/c{d}", d % 8, d % 5));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            fs::write(dir.join(format!("f{f}")), b"plain").unwrap();
        }
    }
    assert!(
        setuid_in(&c.upper_dir).is_empty(),
        "ground truth: no setuid file yet"
    );

    let interval = format!("{INTERVAL_SECS}s");
    let fs_interval = format!("{FS_INTERVAL_SECS}s");
    let agent = Agent::start(&[
        "--interval",
        &interval,
        "--fs-interval",
        &fs_interval,
        "--exec-events",
        "off",
    ]);
    agent.wait_ready(Duration::from_secs(120));
    support::wait_for("the first filesystem scan", Duration::from_secs(60), || {
        reported_setuid(&agent, &c.id)
    });

    // A new setuid file deep in the layer: within a process interval (a few under load).
    let deep = c.rootfs.join("data/a3/b3/c123/planted-suid");
    plant_setuid(&deep);
    let truth = setuid_in(&c.upper_dir);
    assert_eq!(truth, ["/data/a3/b3/c123/planted-suid"], "ground truth");
    let planted = Instant::now();
    support::wait_for(
        "the new setuid file in the daemon's report",
        Duration::from_secs(8 * INTERVAL_SECS),
        || {
            let seen = reported_setuid(&agent, &c.id)?;
            seen.contains(&truth[0])
                .then_some(())
                .ok_or_else(|| format!("{seen:?}"))
        },
    );
    eprintln!("new setuid file reported after {:?}", planted.elapsed());

    // `chmod u+s` on an existing file: only its ctime changes; the re-check of the next
    // filesystem scan finds it.
    let existing = c.rootfs.join("data/a5/b0/c205/f17");
    let mode = fs::metadata(&existing).unwrap().permissions().mode();
    fs::set_permissions(&existing, fs::Permissions::from_mode(mode | 0o4000)).unwrap();
    let truth = setuid_in(&c.upper_dir);
    assert!(
        truth.contains(&"/data/a5/b0/c205/f17".to_string()),
        "ground truth: {truth:?}"
    );
    let chmodded = Instant::now();
    support::wait_for(
        "the chmod u+s in the daemon's report",
        Duration::from_secs(FS_INTERVAL_SECS * 3),
        || {
            let seen = reported_setuid(&agent, &c.id)?;
            let mut want = truth.clone();
            want.sort();
            let mut seen_sorted = seen.clone();
            seen_sorted.sort();
            (seen_sorted == want)
                .then_some(())
                .ok_or_else(|| format!("{seen:?}"))
        },
    );
    eprintln!("chmod u+s reported after {:?}", chmodded.elapsed());

    // How stale the inventory may be is exported, and bounded by the filesystem interval.
    let age = agent
        .metric("nodeguard_fs_recheck_age_seconds")
        .expect("nodeguard_fs_recheck_age_seconds in /metrics");
    assert!(
        age <= (FS_INTERVAL_SECS * 3) as f64,
        "recheck age {age} s with a {FS_INTERVAL_SECS} s filesystem interval"
    );
    let report = agent.get_json("/v1/report");
    assert_eq!(
        report["stats"]["fs_incremental_fallbacks"], 0,
        "{}",
        report["stats"]
    );
    drop(agent);
    drop(c);
    drop(image);
}
