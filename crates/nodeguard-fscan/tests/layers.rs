//! Overlay mode across many containers: each image layer walked once, cached while unchanged,
//! upper layers walked every scan.

mod common;

use common::*;
use nodeguard_fscan::{ContainerRoot, FsScanner, WalkBudget};
use nodeguard_model::Layer;
use std::path::{Path, PathBuf};

struct Node {
    _dir: tempfile::TempDir,
    base: PathBuf,
    os: PathBuf,
    app: PathBuf,
    tools: PathBuf,
}

fn suid(path: &Path) {
    write(path, b"#!/bin/sh\n");
    chmod(path, 0o4755);
}

/// Three image layers: `os` used by all containers, `app` by even ones, `tools` by odd ones.
fn node() -> Node {
    let dir = tempdir();
    let base = dir.path().to_path_buf();
    let os = base.join("snapshots/1/fs");
    let app = base.join("snapshots/2/fs");
    let tools = base.join("snapshots/3/fs");
    suid(&os.join("usr/bin/passwd"));
    suid(&os.join("usr/bin/su"));
    for i in 0..300 {
        write(&os.join(format!("usr/share/f{i}")), b"x");
    }
    suid(&app.join("app/helper"));
    write(&tools.join("usr/bin/ping"), b"ping");
    setcap("cap_net_raw+ep", &tools.join("usr/bin/ping"));
    Node {
        _dir: dir,
        base,
        os,
        app,
        tools,
    }
}

fn containers(node: &Node, n: usize) -> Vec<ContainerRoot> {
    (0..n)
        .map(|i| {
            let upper = node.base.join(format!("c{i}/upper"));
            std::fs::create_dir_all(&upper).unwrap();
            let top = if i % 2 == 0 { &node.app } else { &node.tools };
            overlay(&format!("c{i:02}"), &[top, &node.os], Some(&upper))
        })
        .collect()
}

#[test]
fn image_layers_are_walked_once_and_cached_while_unchanged() {
    require_root!();
    let node = node();
    let roots = containers(&node, 40);
    let mut scanner = FsScanner::new(budget(), 2);

    let first = scanner.scan(&roots);
    assert_eq!(first.stats.layers_walked, 3 + 40);
    assert_eq!(first.stats.layers_cached, 0);
    // 40 containers × (passwd, su, and helper or ping).
    assert_eq!(first.files.len(), 120);
    assert!(first.files.iter().all(|f| f.layer == Layer::Image));
    let c1: Vec<&str> = first
        .files
        .iter()
        .filter(|f| f.container_id == "c01")
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(c1, ["/usr/bin/passwd", "/usr/bin/ping", "/usr/bin/su"]);
    assert_eq!(scanner.cached_layers(), 3);
    // The image was read once for 40 containers: about one walk of each layer.
    assert!(
        first.stats.files_walked < 400,
        "{}",
        first.stats.files_walked
    );

    let second = scanner.scan(&roots);
    assert_eq!(second.stats.layers_cached, 3);
    assert_eq!(second.stats.layers_walked, 40);
    assert_eq!(second.files, first.files);

    // A container drops a setuid file into its writable layer: seen on the next scan, there
    // only, as upper.
    suid(&node.base.join("c7/upper/tmp/x"));
    let third = scanner.scan(&roots);
    let new: Vec<_> = third
        .files
        .iter()
        .filter(|f| !first.files.contains(f))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(
        (
            new[0].container_id.as_str(),
            new[0].path.as_str(),
            new[0].layer
        ),
        ("c07", "/tmp/x", Layer::Upper)
    );
    assert_eq!(third.stats.layers_cached, 3);

    // A layer directory whose mtime changed is walked again.
    suid(&node.tools.join("new-tool"));
    let fourth = scanner.scan(&roots);
    assert_eq!(fourth.stats.layers_cached, 2);
    assert_eq!(fourth.stats.layers_walked, 41);
    assert_eq!(
        fourth
            .files
            .iter()
            .filter(|f| f.path == "/new-tool")
            .count(),
        20
    );
    // By design, a change deep inside a layer that leaves its root's mtime alone is not
    // seen while the layer is cached (image layers are immutable; clear_cache() forces it).
    suid(&node.os.join("usr/bin/sneaky"));
    let fifth = scanner.scan(&roots);
    assert!(!fifth.files.iter().any(|f| f.path == "/usr/bin/sneaky"));
    scanner.clear_cache();
    let sixth = scanner.scan(&roots);
    assert_eq!(
        sixth
            .files
            .iter()
            .filter(|f| f.path == "/usr/bin/sneaky")
            .count(),
        40
    );

    // Layers no container uses leave the cache.
    scanner.scan(&roots[..1]);
    assert_eq!(scanner.cached_layers(), 2);
}

#[test]
fn upper_digests_are_reused_between_scans() {
    require_root!();
    let node = node();
    let roots = containers(&node, 4);
    for i in 0..4 {
        suid(&node.base.join(format!("c{i}/upper/usr/local/bin/dropped")));
    }
    let mut scanner = FsScanner::new(budget(), 2);
    let first = scanner.scan(&roots);
    // passwd, su, helper, ping once each, and the four dropped files.
    assert_eq!(first.stats.files_hashed, 4 + 4);
    let second = scanner.scan(&roots);
    assert_eq!(second.stats.files_hashed, 0);
    assert_eq!(second.stats.hash_cache_hits, 4);
    assert_eq!(second.files, first.files);
    // Rewritten content: hashed again.
    suid(&node.base.join("c2/upper/usr/local/bin/dropped"));
    std::fs::write(node.base.join("c2/upper/usr/local/bin/dropped"), b"changed").unwrap();
    let third = scanner.scan(&roots);
    assert_eq!(third.stats.files_hashed, 1);
    let changed = third
        .files
        .iter()
        .find(|f| f.container_id == "c02" && f.path == "/usr/local/bin/dropped")
        .unwrap();
    assert_eq!(
        changed.sha256.as_deref(),
        Some(sha256sum(&node.base.join("c2/upper/usr/local/bin/dropped")).as_str())
    );
}

#[test]
fn truncated_or_missing_layers_are_reported_and_not_cached() {
    require_root!();
    let node = node();
    let mut roots = containers(&node, 2);
    roots.push(overlay(
        "broken",
        &[&node.base.join("snapshots/404/fs"), &node.app],
        None,
    ));
    let budget = WalkBudget {
        max_files: 100,
        ..WalkBudget::default()
    };
    let mut scanner = FsScanner::new(budget, 2);
    for scan in 0..2 {
        let out = scanner.scan(&roots);
        // The os layer (300+ files) is cut short each time and never cached; app and tools
        // are cached after the first scan.
        assert_eq!(out.stats.walks_truncated, 1);
        assert_eq!(out.stats.layers_cached, if scan == 0 { 0 } else { 2 });
        assert!(out
            .warnings
            .iter()
            .any(|w| w.contains("snapshots/1/fs") && w.contains("c00") && w.contains("truncated")));
        assert!(out
            .warnings
            .iter()
            .any(|w| w.contains("snapshots/404/fs") && w.contains("broken")));
        assert_eq!(out.stats.errors.get("root_open"), Some(&1));
        // The broken container still gets what its reachable layer has.
        assert!(out
            .files
            .iter()
            .any(|f| f.container_id == "broken" && f.path == "/app/helper"));
    }
    assert_eq!(scanner.cached_layers(), 2);
}
