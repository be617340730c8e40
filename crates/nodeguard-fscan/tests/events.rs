//! The fanotify event source for writable layers (`events.rs`) on the test machine's real
//! filesystem, with real marks: a `chmod u+s` on an existing file is found by the next
//! writable pass with events and not without them (only by the re-check); lost events are
//! counted and start the re-check at once; a layer on a filesystem without a mark is counted.
//! Ground truth: `find -perm /6000`. Needs root (`CAP_SYS_ADMIN` for fanotify); skips loudly
//! without, fails under `CI`.

mod common;

use common::*;
use nodeguard_fscan::{mark_fs_events, ContainerRoot, FsScanOutput, FsScanner};
use nodeguard_model::FsEventSource;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn require_root_or_ci() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so the fanotify tests must run, but this is not root");
    }
    eprintln!("SKIPPED: the fanotify tests need root (CAP_SYS_ADMIN to mark a filesystem)");
    false
}

struct Layers {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
}

/// An image layer and a writable layer of `dirs` directories of `files` plain files.
fn layers(dirs: usize, files: usize) -> Layers {
    let dir = tempdir();
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    write(&lower.join("usr/bin/passwd"), b"#!/bin/sh\n");
    chmod(&lower.join("usr/bin/passwd"), 0o4755);
    for d in 0..dirs {
        let sub = upper.join(format!("g{}/h{}/d{d}", d % 4, d % 3));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..files {
            fs::write(sub.join(format!("f{f}")), b"data").unwrap();
        }
    }
    Layers {
        _dir: dir,
        lower,
        upper,
    }
}

fn root(l: &Layers) -> ContainerRoot {
    overlay("c1", &[&l.lower], Some(&l.upper))
}

fn writable(scanner: &mut FsScanner, roots: &[ContainerRoot]) -> FsScanOutput {
    let (out, covered) = scanner.scan_writable(roots);
    assert_eq!(covered.len(), roots.len(), "every root covered");
    out
}

/// Setuid files of the upper layer in a scan's output (paths inside the container).
fn setuid(out: &FsScanOutput) -> Vec<String> {
    let mut v: Vec<String> = out
        .files
        .iter()
        .filter(|f| f.setuid && f.path != "/usr/bin/passwd")
        .map(|f| f.path.clone())
        .collect();
    v.sort();
    v
}

fn scanner_with_events(marked: &Path, max_dirs: usize) -> FsScanner {
    let marks = mark_fs_events(&[marked.to_path_buf()]).expect("mark the filesystem");
    let events = marks.start(max_dirs).expect("start the reader");
    let mut scanner = FsScanner::new(budget(), 2);
    scanner.set_events(FsEventSource::Fanotify, Some(events));
    scanner
}

/// `chmod u+s` on an existing upper file; what `find` then says is special in the upper.
fn chmod_suid(l: &Layers, rel: &str) -> Vec<String> {
    chmod(&l.upper.join(rel), 0o4755);
    let truth = find_special(&l.upper);
    assert!(
        truth.contains(&format!("/{rel}")),
        "ground truth: {truth:?}"
    );
    truth
}

/// Lets the reader thread take the events and the coarse clock move on.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_chmod_on_an_existing_file_is_found_by_the_next_writable_pass_with_events_only() {
    if !require_root_or_ci() {
        return;
    }
    let l = layers(200, 20);
    let roots = [root(&l)];
    let mut with = scanner_with_events(&l.upper, nodeguard_fscan::DEFAULT_PENDING_DIRS);
    let mut without = FsScanner::new(budget(), 2);
    for s in [&mut with, &mut without] {
        s.scan(&roots);
        settle();
        assert!(setuid(&writable(s, &roots)).is_empty());
    }

    let truth = chmod_suid(&l, "g1/h1/d13/f5");
    settle();
    let out = writable(&mut with, &roots);
    assert_eq!(
        setuid(&out),
        truth,
        "with events: found by the next writable pass"
    );
    let ev = out.stats.events;
    assert_eq!(ev.source, FsEventSource::Fanotify);
    assert!(ev.events >= 1 && ev.dirs_listed >= 1, "{ev:?}");
    assert_eq!(ev.unmarked_layers, 0);
    // Only the named directory was listed, not the layer.
    assert!(out.stats.dirs_walked <= 3, "{:?}", out.stats);

    let out = writable(&mut without, &roots);
    assert!(
        setuid(&out).is_empty(),
        "without events a writable pass does not see it (only its ctime moved)"
    );
    assert_eq!(out.stats.events.source, FsEventSource::Off);
    assert_eq!(setuid(&without.scan(&roots)), truth, "the re-check does");
}

#[test]
fn lost_events_are_counted_and_start_the_recheck_at_the_next_pass() {
    if !require_root_or_ci() {
        return;
    }
    let l = layers(100, 10);
    let roots = [root(&l)];
    const MAX_DIRS: usize = 500;
    let mut scanner = scanner_with_events(&l.upper, MAX_DIRS);
    scanner.scan(&roots);
    settle();
    writable(&mut scanner, &roots);
    // More distinct directories than the reader keeps between two passes, on the same
    // filesystem, outside the layer; the chmod in the layer comes first, so its event is in
    // the batch that is lost.
    let storm = tempdir();
    let n = MAX_DIRS * 4;
    for d in 0..n {
        let dir = storm.path().join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f"), b"x").unwrap();
    }
    let truth = chmod_suid(&l, "g2/h2/d50/f3");
    for d in 0..n {
        chmod(&storm.path().join(format!("d{d}/f")), 0o600);
    }
    std::thread::sleep(Duration::from_secs(1));
    let out = writable(&mut scanner, &roots);
    assert!(out.stats.events.lost >= 1, "{:?}", out.stats.events);
    assert_eq!(setuid(&out), truth, "the re-check found it");
    // The re-check listed the layer (101 directories and more), not one directory.
    assert!(out.stats.dirs_walked > 100, "{:?}", out.stats);
}

#[test]
fn a_layer_on_a_filesystem_without_a_mark_is_counted_and_named() {
    if !require_root_or_ci() {
        return;
    }
    // Mark a tmpfs of our own; the layer is on the test machine's /tmp, another filesystem.
    let mnt = tempdir();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "nodeguard-events-test"])
        .arg(mnt.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let marks = match mark_fs_events(&[mnt.path().to_path_buf()]) {
        Ok(marks) => marks,
        Err(e) => panic!("tmpfs could not be marked on this kernel: {e}"),
    };
    let mut scanner = FsScanner::new(budget(), 2);
    scanner.set_events(FsEventSource::Fanotify, Some(marks.start(100).unwrap()));
    let l = layers(10, 2);
    let out = scanner.scan(&[root(&l)]);
    assert_eq!(
        out.stats.events.unmarked_layers, 1,
        "{:?}",
        out.stats.events
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("without a fanotify mark")
                && w.contains(&*l.upper.to_string_lossy())),
        "{:?}",
        out.warnings
    );
}
