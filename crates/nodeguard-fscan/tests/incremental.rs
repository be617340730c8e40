//! Writable layers kept as directory trees between scans: a process scan (`scan_writable`)
//! lists only the directories whose times changed, a full scan re-checks the rest within a
//! budget, and what either reports equals a full walk of the same tree (`set_incremental(false)`),
//! except a `chmod`/xattr change on an existing file before the re-check reaches it.
//! Real directories on the test machine's filesystem; counters say what was listed.

mod common;

use common::*;
use nodeguard_fscan::{ContainerRoot, FsScanOutput, FsScanner};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Layers {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
}

/// An image layer with one setuid file and a writable layer of `dirs` directories (nested
/// four deep in groups) of `files` plain files each.
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
    fs::create_dir_all(&upper).unwrap();
    Layers {
        _dir: dir,
        lower,
        upper,
    }
}

fn root(l: &Layers) -> ContainerRoot {
    overlay("c1", &[&l.lower], Some(&l.upper))
}

/// Lets the kernel's coarse clock move past what was just written, so directories listed now
/// count as settled (`incremental.rs` lists a directory changed in the last 100 ms again).
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

/// What a full walk of the same roots reports: the oracle the trees must equal.
fn full_walk(roots: &[ContainerRoot]) -> Vec<(String, u32, Option<String>)> {
    let mut scanner = FsScanner::new(budget(), 2);
    scanner.set_incremental(false);
    files(&scanner.scan(roots))
}

fn files(out: &FsScanOutput) -> Vec<(String, u32, Option<String>)> {
    out.files
        .iter()
        .map(|f| (f.path.clone(), f.mode, f.sha256.clone()))
        .collect()
}

fn scan_writable(scanner: &mut FsScanner, roots: &[ContainerRoot]) -> FsScanOutput {
    let (out, covered) = scanner.scan_writable(roots);
    assert_eq!(
        covered.len(),
        roots.len(),
        "every root covered: {covered:?}"
    );
    out
}

fn suid(path: &Path) {
    write(path, b"#!/bin/sh\nid\n");
    chmod(path, 0o4755);
}

/// 241 directories (240 + the groups above them + the root) of 20 files.
const DIRS: usize = 240;
const TREE_DIRS: u64 = 1 + 4 + 12 + DIRS as u64;

#[test]
fn an_unchanged_writable_layer_is_stat_ed_per_directory_and_not_listed() {
    let l = layers(DIRS, 20);
    let roots = [root(&l)];
    let mut scanner = FsScanner::new(budget(), 2);
    settle();
    let first = scanner.scan(&roots);
    assert_eq!(first.stats.layers_incremental, 1);
    assert_eq!(
        first.stats.dirs_walked,
        TREE_DIRS + 3,
        "upper and lower listed"
    );
    assert_eq!(files(&first), full_walk(&roots));

    let second = scan_writable(&mut scanner, &roots);
    assert_eq!(second.stats.dirs_walked, 0, "{:?}", second.stats);
    assert_eq!(second.stats.files_walked, 0);
    assert_eq!(second.stats.dirs_unchanged, TREE_DIRS);
    assert_eq!(files(&second), full_walk(&roots));
    assert_eq!(scanner.cached_upper_dirs(), TREE_DIRS as usize);
}

#[test]
fn a_new_setuid_file_deep_in_the_layer_is_found_by_listing_its_directory_only() {
    let l = layers(DIRS, 20);
    let roots = [root(&l)];
    let mut scanner = FsScanner::new(budget(), 2);
    settle();
    scanner.scan(&roots);
    scan_writable(&mut scanner, &roots);

    suid(&l.upper.join("g1/h1/d37/planted"));
    let out = scan_writable(&mut scanner, &roots);
    let found = paths(&out);
    assert!(
        found.contains(&"/g1/h1/d37/planted".to_string()),
        "{found:?}"
    );
    assert_eq!(out.stats.dirs_walked, 1, "only d37 listed: {:?}", out.stats);
    assert_eq!(out.stats.files_walked, 21);
    assert_eq!(files(&out), full_walk(&roots));

    // A new subtree is walked whole, the rest stays unlisted (d37, listed within a clock
    // tick of its change, is listed once more first).
    settle();
    scan_writable(&mut scanner, &roots);
    suid(&l.upper.join("g2/new/a/b/deeper"));
    let out = scan_writable(&mut scanner, &roots);
    assert!(paths(&out).contains(&"/g2/new/a/b/deeper".to_string()));
    assert_eq!(out.stats.dirs_walked, 4, "g2, new, a, b: {:?}", out.stats);
    assert_eq!(files(&out), full_walk(&roots));
}

#[test]
fn removals_renames_and_replaced_directories_match_a_full_walk() {
    let l = layers(DIRS, 5);
    let roots = [root(&l)];
    suid(&l.upper.join("g0/h0/d0/s1"));
    suid(&l.upper.join("g1/h1/d1/s2"));
    suid(&l.upper.join("g2/h2/d2/s3"));
    let mut scanner = FsScanner::new(budget(), 2);
    settle();
    let first = scanner.scan(&roots);
    assert_eq!(first.files.len(), 4, "{:?}", paths(&first));

    // A file renamed across directories, a directory with a setuid file removed, and a
    // directory replaced by another of the same name holding a setuid file.
    fs::rename(l.upper.join("g0/h0/d0/s1"), l.upper.join("g3/h0/moved")).unwrap();
    fs::remove_dir_all(l.upper.join("g1/h1/d1")).unwrap();
    fs::remove_dir_all(l.upper.join("g2/h2/d2")).unwrap();
    suid(&l.upper.join("g2/h2/d2/other"));
    let out = scan_writable(&mut scanner, &roots);
    assert_eq!(
        paths(&out),
        ["/g2/h2/d2/other", "/g3/h0/moved", "/usr/bin/passwd"]
    );
    assert_eq!(files(&out), full_walk(&roots));
    assert_eq!(
        scanner.cached_upper_dirs(),
        TREE_DIRS as usize - 1,
        "d1 is gone, d2 replaced"
    );
}

#[test]
fn a_candidate_changed_in_place_is_seen_every_pass() {
    let l = layers(20, 5);
    let roots = [root(&l)];
    suid(&l.upper.join("g0/h0/d0/tool"));
    let mut scanner = FsScanner::new(budget(), 2);
    settle();
    scanner.scan(&roots);
    scan_writable(&mut scanner, &roots);
    // Rewritten in place (same inode) and its setuid bit dropped: no directory changes.
    fs::write(l.upper.join("g0/h0/d0/tool"), b"#!/bin/sh\nechoed\n").unwrap();
    chmod(&l.upper.join("g0/h0/d0/tool"), 0o2755);
    let out = scan_writable(&mut scanner, &roots);
    assert_eq!(out.stats.dirs_walked, 0);
    let tool = out
        .files
        .iter()
        .find(|f| f.path == "/g0/h0/d0/tool")
        .unwrap();
    assert!(!tool.setuid && tool.setgid, "{tool:?}");
    assert_eq!(
        tool.sha256.as_deref(),
        Some(sha256sum(&l.upper.join("g0/h0/d0/tool")).as_str())
    );
    chmod(&l.upper.join("g0/h0/d0/tool"), 0o755);
    let out = scan_writable(&mut scanner, &roots);
    assert_eq!(paths(&out), ["/usr/bin/passwd"]);
}

#[test]
fn a_chmod_on_an_existing_file_waits_for_the_recheck_of_a_full_scan() {
    let l = layers(DIRS, 20);
    let roots = [root(&l)];
    let mut scanner = FsScanner::new(budget(), 2);
    settle();
    scanner.scan(&roots);
    scan_writable(&mut scanner, &roots);
    chmod(&l.upper.join("g3/h2/d11/f7"), 0o4755);
    // Only the file's ctime changed: a process scan does not see it (documented trade).
    let out = scan_writable(&mut scanner, &roots);
    assert_eq!(paths(&out), ["/usr/bin/passwd"]);
    assert_eq!(out.stats.dirs_walked, 0);
    // The full scan's re-check lists every directory again and finds it.
    let out = scanner.scan(&roots);
    assert!(paths(&out).contains(&"/g3/h2/d11/f7".to_string()));
    assert_eq!(files(&out), full_walk(&roots));
    assert_eq!(out.stats.dirs_walked, TREE_DIRS, "{:?}", out.stats);
}

#[test]
fn a_recheck_budget_spreads_the_recheck_over_full_scans_and_reports_its_age() {
    let l = layers(DIRS, 20);
    let roots = [root(&l)];
    let mut scanner = FsScanner::new(budget(), 2);
    settle();
    scanner.scan(&roots);
    // About a quarter of the layer's 5,000 entries per full scan.
    scanner.set_recheck_files(1_200);
    chmod(&l.upper.join("g3/h2/d239/f19"), 0o4755);
    let mut listed = Vec::new();
    let mut found_at = None;
    for scan in 1..=8 {
        let out = scanner.scan(&roots);
        listed.push(out.stats.dirs_walked);
        assert!(out.stats.recheck_age_seconds <= 30, "{:?}", out.stats);
        if found_at.is_none() && paths(&out).contains(&"/g3/h2/d239/f19".to_string()) {
            found_at = Some(scan);
            assert_eq!(files(&out), full_walk(&roots));
        }
    }
    // Each scan lists about a quarter; one round (every directory) takes four or five.
    assert!(listed.iter().all(|n| *n <= 90), "{listed:?}");
    assert!(listed[..3].iter().sum::<u64>() < TREE_DIRS, "{listed:?}");
    assert!(listed.iter().sum::<u64>() >= TREE_DIRS, "{listed:?}");
    let found_at = found_at.expect("the chmod found within the round");
    assert!(found_at <= 6, "found at scan {found_at}: {listed:?}");
}

#[test]
fn a_directory_mtime_set_back_does_not_hide_a_new_file() {
    let l = layers(20, 5);
    let roots = [root(&l)];
    let mut scanner = FsScanner::new(budget(), 1);
    settle();
    scanner.scan(&roots);
    scan_writable(&mut scanner, &roots);
    let dir = l.upper.join("g0/h0/d0");
    let before = fs::metadata(&dir).unwrap();
    suid(&dir.join("hidden"));
    // Put the directory's mtime back exactly as it was (`touch -m -r`): its ctime moves.
    set_mtime(&dir, &before);
    let after = fs::metadata(&dir).unwrap();
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    let out = scan_writable(&mut scanner, &roots);
    assert!(paths(&out).contains(&"/g0/h0/d0/hidden".to_string()));
}

#[test]
fn a_layer_past_the_depth_bound_falls_back_to_a_full_walk_and_still_finds_files() {
    let l = layers(4, 2);
    let roots = [root(&l)];
    let mut deep = l.upper.join("deep");
    for i in 0..60 {
        deep.push(format!("l{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    suid(&deep.join("bottom"));
    let mut scanner = FsScanner::new(budget(), 2);
    let out = scanner.scan(&roots);
    assert_eq!(out.stats.incremental_fallbacks, 1);
    assert_eq!(files(&out), full_walk(&roots));
    assert_eq!(
        scanner.cached_upper_dirs(),
        0,
        "no tree kept past the bound"
    );
    let again = scan_writable(&mut scanner, &roots);
    assert_eq!(again.stats.incremental_fallbacks, 0, "not tried again");
    assert_eq!(files(&again), full_walk(&roots));
}

#[test]
fn trees_of_containers_gone_are_dropped() {
    let a = layers(30, 1);
    let b = layers(10, 1);
    let both = [
        overlay("a", &[&a.lower], Some(&a.upper)),
        overlay("b", &[&b.lower], Some(&b.upper)),
    ];
    let mut scanner = FsScanner::new(budget(), 2);
    scanner.scan(&both);
    assert_eq!(
        scanner.cached_upper_dirs(),
        (1 + 4 + 12 + 30) + (1 + 4 + 10 + 10)
    );
    scanner.scan_writable(&both[1..]);
    assert_eq!(scanner.cached_upper_dirs(), 1 + 4 + 10 + 10);
}

#[test]
fn turned_off_every_scan_walks_the_writable_layer() {
    let l = layers(DIRS, 5);
    let roots = [root(&l)];
    let mut scanner = FsScanner::new(budget(), 2);
    scanner.set_incremental(false);
    settle();
    scanner.scan(&roots);
    let out = scan_writable(&mut scanner, &roots);
    assert_eq!(out.stats.layers_incremental, 0);
    assert_eq!(out.stats.dirs_walked, TREE_DIRS);
    assert_eq!(scanner.cached_upper_dirs(), 0);
}

/// A sequence of changes of every kind, each followed by a process-scan pass that must equal
/// a full walk (changes to existing files' modes excepted: they are rechecked by full scans,
/// checked at the end).
#[test]
fn after_any_sequence_of_changes_a_pass_equals_a_full_walk() {
    let l = layers(60, 3);
    let roots = [root(&l)];
    let mut scanner = FsScanner::new(budget(), 2);
    scanner.scan(&roots);
    let mut seed = 0x5eed_u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for step in 0..60 {
        let d = format!("g{}/h{}/d{}", next(4), next(3), next(60));
        let dir = l.upper.join(&d);
        match next(6) {
            0 => suid(&dir.join(format!("s{step}"))),
            1 => {
                let _ = fs::remove_dir_all(&dir);
            }
            2 => suid(&dir.join(format!("n{step}/m/s"))),
            3 => {
                let to = l.upper.join(format!("g{}/r{step}", next(4)));
                let _ = fs::create_dir_all(to.parent().unwrap());
                let _ = fs::rename(&dir, &to);
            }
            4 => {
                if let Ok(entries) = fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            _ => {
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join(format!("plain{step}")), b"x").unwrap();
            }
        }
        let out = scan_writable(&mut scanner, &roots);
        assert_eq!(files(&out), full_walk(&roots), "after step {step} ({d})");
    }
    let out = scanner.scan(&roots);
    assert_eq!(files(&out), full_walk(&roots));
}

fn set_mtime(path: &Path, like: &fs::Metadata) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: like.mtime(),
            tv_nsec: like.mtime_nsec(),
        },
    ];
    // SAFETY: valid path string and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
}
