//! Trees an attacker controls: links, special files, mounts, loops, odd names, churn, budgets.

mod common;

use common::*;
use nodeguard_fscan::{FsScanner, WalkBudget, MAX_CANDIDATES_PER_ROOT};
use nodeguard_model::unescape_path;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn suid(path: &Path) {
    write(path, b"#!/bin/sh\necho owned\n");
    chmod(path, 0o4755);
}

#[test]
fn symlinks_are_never_followed_nor_read() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    // Outside the root: a setuid file and a "secret"; the root links to them and to host dirs.
    suid(&outside.join("setuid-target"));
    write(&outside.join("shadow"), b"root:$6$secret");
    chmod(&outside.join("shadow"), 0o4640);
    suid(&root.join("real"));
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink(outside.join("setuid-target"), root.join("usr/bin/passwd")).unwrap();
    std::os::unix::fs::symlink("../../../outside/setuid-target", root.join("usr/bin/su")).unwrap();
    std::os::unix::fs::symlink(outside.join("shadow"), root.join("usr/bin/sudo")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/passwd", root.join("usr/bin/chsh")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("outside-dir")).unwrap();
    std::os::unix::fs::symlink("/usr/bin", root.join("hostbin")).unwrap();
    std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
    std::os::unix::fs::symlink("self", root.join("self")).unwrap();

    let watch = OpenWatch::new(&[&outside.join("setuid-target"), &outside.join("shadow")]);
    let out = scan_merged(&root, 2);
    assert_eq!(paths(&out), ["/real"], "warnings: {:?}", out.warnings);
    assert_eq!(watch.events(), 0, "a link target was opened or read");
    assert_eq!(find_special(&root), ["/real"]);
    // The watch does see an open through the link.
    std::fs::read(root.join("usr/bin/sudo")).unwrap();
    assert!(watch.events() > 0);
}

#[test]
fn fifos_sockets_and_devices_are_never_opened() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let fifo = root.join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    run(Command::new("mknod")
        .arg(root.join("chardev"))
        .args(["c", "1", "3"]));
    run(Command::new("mknod")
        .arg(root.join("blockdev"))
        .args(["b", "7", "200"]));
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    for name in ["fifo", "chardev", "blockdev", "sock"] {
        chmod(&root.join(name), 0o6755);
    }
    suid(&root.join("real"));
    let watch = OpenWatch::new(&[&fifo, &root.join("chardev"), &root.join("blockdev")]);
    let root2 = root.clone();
    let out = within(30, move || scan_merged(&root2, 2));
    assert_eq!(paths(&out), ["/real"]);
    assert_eq!(watch.events(), 0, "a FIFO or device was opened");
    assert_eq!(find_special(&root), ["/real"]);
    std::fs::File::open(root.join("chardev")).unwrap();
    assert!(watch.events() > 0);
}

#[test]
fn other_filesystems_are_not_entered() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    suid(&root.join("usr/bin/real"));
    // A volume (tmpfs) and /proc mounted inside the root: not entered.
    let tmpfs = Mounted::tmpfs(&root.join("mnt/volume"));
    suid(&root.join("mnt/volume/on-tmpfs"));
    std::fs::create_dir_all(root.join("proc")).unwrap();
    run(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(root.join("proc")));
    let proc = Mounted {
        target: root.join("proc"),
    };
    // A single setuid file bind-mounted from another filesystem is a file the container sees:
    // find -xdev reports it (-xdev only stops descent into directories), and so does the scan.
    let other = Mounted::tmpfs(&dir.path().join("other-fs"));
    suid(&dir.path().join("other-fs/tool"));
    write(&root.join("etc/bound-tool"), b"");
    let bound = Mounted::bind(
        &dir.path().join("other-fs/tool"),
        &root.join("etc/bound-tool"),
    );
    let out = scan_merged(&root, 2);
    assert_eq!(paths(&out), ["/etc/bound-tool", "/usr/bin/real"]);
    assert_eq!(paths(&out), find_special(&root));
    assert_eq!(out.stats.mounts_skipped, 2);
    drop((bound, other, proc, tmpfs));
}

#[test]
fn bind_mount_loops_terminate() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    suid(&root.join("a/x"));
    std::fs::create_dir_all(root.join("a/b/loop")).unwrap();
    std::fs::create_dir_all(root.join("a/b/c/rootloop")).unwrap();
    let _l1 = Mounted::bind(&root.join("a"), &root.join("a/b/loop"));
    let _l2 = Mounted::bind(&root, &root.join("a/b/c/rootloop"));
    let root2 = root.clone();
    let out = within(30, move || scan_merged(&root2, 2));
    assert_eq!(paths(&out), ["/a/x"]);
    assert_eq!(
        out.stats.errors.get("walk_loop"),
        Some(&2),
        "{:?}",
        out.stats
    );
    assert!(
        out.warnings.iter().any(|w| w.contains("/a/b/loop")),
        "{:?}",
        out.warnings
    );
    // find agrees (it also reports the loops, on stderr, and exits 1).
    assert_eq!(find_special(&root), ["/a/x"]);
}

#[test]
fn hostile_names_are_reported_losslessly() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let names: [&[u8]; 6] = [
        b"evil\nname",
        b"\xff\xfe-not-utf8",
        b"back\\slash",
        b"\x1b[31mred",
        b"-rf --no-preserve-root",
        b"sp ace",
    ];
    use std::os::unix::ffi::OsStrExt;
    for name in names {
        let sub = root.join(std::ffi::OsStr::from_bytes(b"dir\n\xff"));
        suid(&sub.join(std::ffi::OsStr::from_bytes(name)));
    }
    let out = scan_merged(&root, 1);
    let mut got: Vec<Vec<u8>> = out
        .files
        .iter()
        .map(|f| {
            assert!(!f.path.contains('\n'), "{}", f.path);
            assert!(f.sha256.is_some());
            unescape_path(&f.path).expect("escaped path")
        })
        .collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = names
        .iter()
        .map(|n| [b"/dir\n\xff/".as_slice(), n].concat())
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_hundred_thousand_files_in_one_directory() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    let big = root.join("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(big.join(format!("f{i:06}"))).unwrap();
    }
    for i in [7, 50_000, 99_999] {
        chmod(&big.join(format!("f{i:06}")), 0o4755);
    }
    let start = Instant::now();
    let out = scan_merged(&root, 2);
    let took = start.elapsed();
    assert_eq!(
        paths(&out),
        ["/big/f000007", "/big/f050000", "/big/f099999"]
    );
    assert!(out.stats.files_walked >= 100_000);
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn files_vanishing_mid_walk_are_skipped_not_errors() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    suid(&root.join("stable/keep"));
    let churn = root.join("churn");
    std::fs::create_dir_all(&churn).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let churn2 = churn.clone();
    // Setuid files and directories appear and disappear while the scans run.
    let churner = std::thread::spawn(move || {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o4755);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for j in 0..300 {
                let f = churn2.join(format!("f{j}"));
                if std::fs::write(&f, b"x").is_ok() {
                    let _ = std::fs::set_permissions(&f, mode.clone());
                }
                let _ = std::fs::create_dir(churn2.join(format!("d{j}")));
            }
            for j in 0..300 {
                let _ = std::fs::remove_file(churn2.join(format!("f{j}")));
                let _ = std::fs::remove_dir(churn2.join(format!("d{j}")));
            }
        }
    });
    let mut vanished = 0;
    let start = Instant::now();
    let mut scans = 0;
    while scans < 5 || (vanished == 0 && start.elapsed() < Duration::from_secs(20)) {
        let out = scan_merged(&root, 2);
        scans += 1;
        vanished += out.stats.vanished;
        assert!(paths(&out).contains(&"/stable/keep".to_string()));
        assert_eq!(out.stats.error_count(), 0, "{:?}", out.stats.errors);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churner.join().unwrap();
    eprintln!("entries vanished mid-walk over {scans} scans: {vanished}");
    assert!(vanished > 0, "no race was hit in {scans} scans");
}

/// Permission errors only happen without CAP_DAC_READ_SEARCH: run the scan in a child
/// process (this test binary again) as nobody.
#[test]
fn permission_errors_are_counted() {
    if let Some(root) = std::env::var_os("FSCAN_TEST_CHILD_ROOT") {
        let out = scan_merged(Path::new(&root), 1);
        println!(
            "RESULT {} {}",
            out.stats
                .errors
                .get("walk_permission")
                .copied()
                .unwrap_or(0),
            paths(&out).join(",")
        );
        return;
    }
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    suid(&root.join("open/visible"));
    suid(&root.join("closed/hidden"));
    chmod(&root.join("closed"), 0o700);
    chmod(&root, 0o755);
    // A copy of this test binary that nobody may execute.
    let exe = dir.path().join("test-exe");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    chmod(&exe, 0o755);
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe)
        .args(["--exact", "permission_errors_are_counted", "--nocapture"])
        .env("FSCAN_TEST_CHILD_ROOT", &root));
    let out = String::from_utf8_lossy(&out);
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("child printed no result: {out}"));
    assert_eq!(line, "RESULT 1 /open/visible");
}

#[test]
fn budgets_truncate_and_say_which_container() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    for i in 0..2_000 {
        write(&root.join(format!("d{}/f{i}", i % 20)), b"x");
    }
    suid(&root.join("d0/special"));
    let budget = WalkBudget {
        max_files: 100,
        ..WalkBudget::default()
    };
    let out = FsScanner::new(budget, 2).scan(&[merged("ctr-budget", &root)]);
    assert_eq!(out.stats.walks_truncated, 1);
    // The container is named as incomplete, so the policy turns it into a finding.
    assert_eq!(out.incomplete.len(), 1, "{:?}", out.incomplete);
    assert_eq!(out.incomplete[0].container_id, "ctr-budget");
    assert!(
        out.incomplete[0].reason.contains("max_files"),
        "{:?}",
        out.incomplete
    );
    assert!(out.stats.files_walked <= 110, "{}", out.stats.files_walked);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("ctr-budget") && w.contains("max_files")),
        "{:?}",
        out.warnings
    );
    let budget = WalkBudget {
        max_duration: Duration::ZERO,
        ..WalkBudget::default()
    };
    let out = FsScanner::new(budget, 1).scan(&[merged("ctr-slow", &root)]);
    assert_eq!(out.stats.walks_truncated, 1);
    assert_eq!(out.incomplete[0].container_id, "ctr-slow");
    assert!(out.incomplete[0].reason.contains("max_duration"));
    assert!(out
        .warnings
        .iter()
        .any(|w| w.contains("ctr-slow") && w.contains("max_duration")));
    // Within budget: nothing truncated.
    let out = FsScanner::new(WalkBudget::default(), 1).scan(&[merged("ok", &root)]);
    assert_eq!(out.stats.walks_truncated, 0);
    assert!(out.incomplete.is_empty());
    assert_eq!(paths(&out), ["/d0/special"]);
}

#[test]
fn setuid_floods_are_counted_past_the_bound_not_kept() {
    require_root!();
    let dir = tempdir();
    let upper = dir.path().join("upper");
    let lower = dir.path().join("lower");
    write(&lower.join("usr/bin/su"), b"su");
    chmod(&lower.join("usr/bin/su"), 0o4755);
    let extra = 2_500;
    for i in 0..extra {
        let p = upper.join(format!("flood/{}/f{i}", i % 7));
        write(&p, b"");
        chmod(&p, 0o4755);
    }
    let mut scanner = FsScanner::new(budget(), 2);
    for round in 0..2 {
        let out = scanner.scan(&[overlay("ctr-flood", &[&lower], Some(&upper))]);
        let upper_files = out
            .files
            .iter()
            .filter(|f| f.layer == nodeguard_model::Layer::Upper)
            .count();
        assert_eq!(upper_files, MAX_CANDIDATES_PER_ROOT, "round {round}");
        assert!(paths(&out).contains(&"/usr/bin/su".to_string()));
        assert_eq!(out.incomplete.len(), 1, "{:?}", out.incomplete);
        let gap = &out.incomplete[0];
        assert_eq!(gap.container_id, "ctr-flood");
        assert_eq!(gap.files_omitted, (extra - MAX_CANDIDATES_PER_ROOT) as u64);
        assert!(gap.reason.contains("writable layer"), "{}", gap.reason);
        assert_eq!(out.stats.walks_truncated, 0);
    }
}

#[test]
fn big_and_sparse_files_are_not_read_in_full() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    write(&root.join("two-mib"), &vec![7u8; 2 << 20]);
    chmod(&root.join("two-mib"), 0o4755);
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 << 30).unwrap();
    drop(sparse);
    chmod(&root.join("sparse"), 0o4755);
    suid(&root.join("small"));
    let budget = WalkBudget {
        max_hash_bytes: 1 << 20,
        ..WalkBudget::default()
    };
    let watch = OpenWatch::new(&[&root.join("sparse"), &root.join("two-mib")]);
    let start = Instant::now();
    let out = FsScanner::new(budget, 1).scan(&[merged("c", &root)]);
    assert!(start.elapsed() < Duration::from_secs(5));
    let by: std::collections::HashMap<&str, &nodeguard_model::FileEntry> =
        out.files.iter().map(|f| (f.path.as_str(), f)).collect();
    assert_eq!(by["/sparse"].sha256, None);
    assert_eq!(by["/sparse"].size, 64 << 30);
    assert_eq!(by["/two-mib"].sha256, None);
    assert_eq!(
        by["/small"].sha256.as_deref(),
        Some(sha256sum(&root.join("small")).as_str())
    );
    assert_eq!(out.stats.errors.get("hash_too_large"), Some(&2));
    assert_eq!(watch.events(), 0, "an over-cap file was opened");
    std::fs::File::open(root.join("sparse")).unwrap();
    assert!(watch.events() > 0);
    assert_eq!(
        out.warnings
            .iter()
            .filter(|w| w.contains("hash cap"))
            .count(),
        2
    );
}

#[test]
fn thread_counts_agree_and_share_work() {
    require_root!();
    let dir = tempdir();
    let root = dir.path().join("root");
    for d in 0..100 {
        for f in 0..30 {
            write(&root.join(format!("a{d}/b{}/f{f}", f % 3)), b"x");
        }
        if d % 7 == 0 {
            suid(&root.join(format!("a{d}/b1/special")));
        }
    }
    let one = scan_merged(&root, 1);
    let four = scan_merged(&root, 4);
    assert_eq!(one.files, four.files);
    assert_eq!(one.stats.files_walked, four.stats.files_walked);
    assert_eq!(paths(&one), find_special(&root));
    assert!(four.stats.subtrees_shared > 0, "{:?}", four.stats);
}

mod xattr_fuzz {
    //! `security.capability` is a value a container writes; the decoder must refuse or
    //! decode any bytes, never panic.
    use nodeguard_fscan::decode_file_capability;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(512),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_values_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(caps) = decode_file_capability(&b) {
                let _ = caps.to_string();
            }
        }

        /// A valid header (v1, v2, v3, with and without the effective flag) and random
        /// words: reaches the decoding of every mask bit.
        #[test]
        fn valid_headers_with_random_masks_never_panic(
            magic in prop_oneof![Just(0x0100_0000u32), Just(0x0200_0000), Just(0x0300_0000)],
            effective in any::<bool>(),
            words in proptest::collection::vec(any::<u32>(), 0..6),
        ) {
            let mut b = (magic | u32::from(effective)).to_le_bytes().to_vec();
            for w in words {
                b.extend_from_slice(&w.to_le_bytes());
            }
            if let Ok(caps) = decode_file_capability(&b) {
                let _ = caps.to_string();
            }
        }
    }
}
