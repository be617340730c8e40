//! Open file descriptors stay bounded during a walk of a deep, hostile tree and none leak.
//! One test in its own binary, so no other test's fds disturb the count.

mod common;

use common::*;
use nodeguard_fscan::FsScanner;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn deep_hostile_tree_keeps_fds_bounded_and_leaks_none() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    // 1,000 nested directories with a setuid file at the bottom, and one on the way.
    let mut deep = root.clone();
    for i in 0..1000 {
        deep.push("d");
        if i == 500 {
            std::fs::create_dir_all(&deep).unwrap();
            write(&deep.join("middle"), b"x");
            chmod(&deep.join("middle"), 0o4755);
        }
    }
    std::fs::create_dir_all(&deep).unwrap();
    write(&deep.join("bottom"), b"x");
    chmod(&deep.join("bottom"), 0o2755);
    // Siblings all along a second deep branch, so the walk pops back through many levels.
    let mut wide: PathBuf = root.join("w");
    for i in 0..200 {
        wide.push(format!("l{i}"));
        std::fs::create_dir_all(wide.join("sibling")).unwrap();
    }
    // Hostile bits: links, a FIFO, a bind-mount loop.
    std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
    run(Command::new("mkfifo").arg(root.join("fifo")));
    std::fs::create_dir_all(root.join("loop/inner")).unwrap();
    let _loop = Mounted::bind(&root.join("loop"), &root.join("loop/inner"));

    let before = fd_count();
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(fd_count(), Ordering::Relaxed);
            }
        })
    };
    let threads = 2;
    let mut scanner = FsScanner::new(budget(), threads);
    let out = scanner.scan(&[merged("deep", &root)]);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let after = fd_count();

    let mut want = vec![
        format!("/{}/middle", vec!["d"; 501].join("/")),
        format!("/{}/bottom", vec!["d"; 1000].join("/")),
    ];
    want.sort();
    assert_eq!(paths(&out), want);
    assert_eq!(paths(&out), find_special(&root));
    assert_eq!(before, after, "fds leaked");
    let peak = peak.load(Ordering::Relaxed);
    // Per thread: 24 directory fds + a root fd + a file being hashed; +1 for the sampler's
    // own read_dir fd.
    assert!(
        peak <= before + threads * 26 + 1,
        "peak {peak} fds (before {before})"
    );
    assert!(out.stats.dirs_reopened > 0, "{:?}", out.stats);
    assert_eq!(out.stats.errors.get("walk_loop"), Some(&1));
    eprintln!(
        "fds before {before}, peak {peak}, after {after}; dirs re-opened {}",
        out.stats.dirs_reopened
    );
}
