//! Warm passes of a `Collector` against the real kernel: what a process changes without an
//! exec is seen, an exec in place is read afresh, a reused pid is a new process, gone
//! processes are forgotten, and a warm pass says what a cold one says.
//!
//! Most tests run their processes in a private pid namespace (`unshare --pid --fork
//! --mount-proc`) and point the collector at that namespace's proc, so the proc root holds
//! only the test's processes and counts are exact; pids there are small and can be reused on
//! purpose (`ns_last_pid`). The ground truth is the kernel's own files under that proc root,
//! read here without nodeguard's parsers.
//!
//! They need root, `unshare` (util-linux) and `perl` (perl-base). Without them each test says
//! why it skipped; with `CI` set it fails instead.

use nodeguard_collect::{CollectOptions, CollectedProcess, Collector, Snapshot};
use nodeguard_model::SeccompMode;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

fn skip(why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so this test may not skip: {why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

fn missing_prerequisite() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (a private pid namespace, setuid in a child)");
    }
    for tool in ["unshare", "perl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return skip(&format!("{tool} not found"));
        }
    }
    false
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A private pid namespace whose init is a shell running the lines written to it.
struct PidNs {
    unshare: Child,
    stdin: ChildStdin,
    dir: tempfile::TempDir,
    /// `/proc/<host pid of the namespace's init>/root/proc`: the namespace's own proc.
    proc_root: PathBuf,
}

impl PidNs {
    fn start() -> PidNs {
        let dir = tempfile::tempdir().unwrap();
        let mut unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
            .arg("while read -r line; do eval \"$line\"; done")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare runs");
        let stdin = unshare.stdin.take().unwrap();
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let init: i32 = wait_until("unshare's child", || {
            fs::read_to_string(&children)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        let proc_root = PathBuf::from(format!("/proc/{init}/root/proc"));
        let mut ns = PidNs {
            unshare,
            stdin,
            dir,
            proc_root,
        };
        // The namespace's proc is mounted once its init runs commands.
        // Pid 2 is taken by a process of no interest: the collector takes a pid 2 (and its
        // children) for kthreadd, which it is on a host's proc.
        let ready = ns.path("ready");
        ns.run(&format!("sleep 100000 & echo ready > {}", ready.display()));
        wait_until("the namespace's init", || {
            ns.path("ready").exists().then_some(())
        });
        assert!(
            ns.proc_root.join("1").is_dir(),
            "{} has no pid 1",
            ns.proc_root.display()
        );
        ns
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs one line in the namespace's init shell (`&` for a background process).
    fn run(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Starts `command` in the background and returns its pid in the namespace.
    fn spawn(&mut self, name: &str, command: &str) -> i32 {
        let file = self.path(&format!("{name}.pid"));
        // `echo` is the shell's own: no helper process that a pass could catch.
        self.run(&format!("{command} & echo $! > {}", file.display()));
        let pid = wait_until(&format!("{name} to start"), || {
            let text = fs::read_to_string(&file).ok()?;
            text.strip_suffix('\n')?.parse().ok()
        });
        // `$!` is known at the fork, before the child execs: until then it is a copy of init.
        // Mid-exec the command line already reads empty (the new address space has no
        // arguments yet) and the image addresses in `stat` are still being set: a pass then
        // remembers an identity the finished exec no longer has, and the next pass rightly
        // reads the process afresh. Wait for the exec to be complete.
        let init = self.cmdline(1);
        wait_until(&format!("{name} to exec"), || {
            let cmdline = self.cmdline(pid);
            (!cmdline.is_empty() && cmdline != init && self.exec_complete(pid)).then_some(())
        });
        pid
    }

    /// The pid of the process running `cmdline` in the namespace, once its exec is complete
    /// (a child a shell forks for a command line, which no `spawn` waited for).
    fn wait_for_command(&self, cmdline: &str) -> i32 {
        wait_until(&format!("`{cmdline}` to run"), || {
            fs::read_dir(&self.proc_root)
                .ok()?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .find(|pid| {
                    fs::read(self.proc_root.join(pid.to_string()).join("cmdline")).is_ok_and(
                        |raw| {
                            String::from_utf8_lossy(&raw)
                                .trim_end_matches('\0')
                                .replace('\0', " ")
                                == cmdline
                        },
                    ) && self.exec_complete(*pid)
                })
        })
    }

    /// Whether the image addresses `stat` shows for `pid` (start and end of code, start of
    /// stack, start and end of arguments: what the collector tells one exec from the next
    /// by) are all set, as they are once `execve` has returned.
    fn exec_complete(&self, pid: i32) -> bool {
        let Ok(raw) = fs::read(self.proc_root.join(pid.to_string()).join("stat")) else {
            return false;
        };
        let text = String::from_utf8_lossy(&raw);
        let Some((_, rest)) = text.rsplit_once(')') else {
            return false;
        };
        // `rest` starts at field 3 (state).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        [26, 27, 28, 48, 49]
            .iter()
            .all(|n| fields.get(n - 3).is_some_and(|v| *v != "0"))
    }

    fn fifo(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    fn options(&self) -> CollectOptions {
        CollectOptions {
            proc_root: self.proc_root.clone(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            host_root: PathBuf::from("/"),
        }
    }

    /// A collector whose turn for a full read of a process never comes in a test's few
    /// passes: what it sees after the first pass, it sees through the warm path alone.
    fn collector(&self) -> Collector {
        Collector::with_full_read_every(self.options(), u32::MAX)
    }

    /// A file of process `pid` under the namespace's proc, as the kernel wrote it.
    fn proc_file(&self, pid: i32, file: &str) -> Vec<u8> {
        fs::read(self.proc_root.join(pid.to_string()).join(file)).unwrap()
    }

    fn exe(&self, pid: i32) -> Option<PathBuf> {
        fs::read_link(self.proc_root.join(pid.to_string()).join("exe")).ok()
    }

    /// `/proc/PID/cmdline` joined as a user reads it (NULs to spaces).
    fn cmdline(&self, pid: i32) -> String {
        let raw = self.proc_file(pid, "cmdline");
        let text = String::from_utf8(raw).unwrap();
        text.trim_end_matches('\0').replace('\0', " ")
    }

    /// A `/proc/PID/status` line's value.
    fn status(&self, pid: i32, key: &str) -> String {
        let text = String::from_utf8(self.proc_file(pid, "status")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in status of {pid}"))
            .trim()
            .to_string()
    }
}

impl Drop for PidNs {
    fn drop(&mut self) {
        // The namespace dies with its init: every process in it is killed.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn process(snapshot: &Snapshot, pid: i32) -> &CollectedProcess {
    snapshot
        .processes
        .iter()
        .find(|p| p.process.pid == pid)
        .unwrap_or_else(|| {
            let pids: Vec<i32> = snapshot.processes.iter().map(|p| p.process.pid).collect();
            panic!("pid {pid} not collected; saw {pids:?}")
        })
}

fn release(fifo: &Path) {
    // Opening for writing waits for the reader, which is already blocked opening it.
    fs::write(fifo, b"go\n").unwrap();
}

#[test]
fn exec_in_place_is_read_again() {
    if missing_prerequisite() {
        return;
    }
    let mut ns = PidNs::start();
    let other = ns.fifo("other");
    let same = ns.fifo("same");
    // One shell execs another program, one execs itself with other arguments: pid and start
    // time stay the same (and, for the second, the executable and comm too).
    let to_sleep = ns.spawn(
        "to-sleep",
        &format!("sh -c 'read x < {}; exec sleep 1001'", other.display()),
    );
    let to_self = ns.spawn(
        "to-self",
        &format!(
            "sh -c 'read x < {}; exec sh -c \"sleep 1002; :\"'",
            same.display()
        ),
    );
    let mut collector = ns.collector();
    wait_until("both shells to run sh", || {
        (ns.cmdline(to_sleep).starts_with("sh -c read")
            && ns.cmdline(to_self).starts_with("sh -c read"))
        .then_some(())
    });
    let before = collector.collect().unwrap();
    let sh_exe = ns.exe(to_sleep).unwrap();
    assert_eq!(
        process(&before, to_sleep).process.exe.as_deref(),
        sh_exe.to_str()
    );
    assert!(process(&before, to_self).process.cmdline.contains("read x"));

    release(&other);
    release(&same);
    wait_until("the execs", || {
        (ns.exe(to_sleep).is_some_and(|e| e != sh_exe)
            && ns.cmdline(to_self).starts_with("sh -c sleep 1002"))
        .then_some(())
    });
    let after = collector.collect().unwrap();

    let slept = process(&after, to_sleep);
    assert_eq!(
        slept.process.exe.as_deref(),
        ns.exe(to_sleep).unwrap().to_str(),
        "the new executable"
    );
    assert_eq!(slept.process.cmdline, ns.cmdline(to_sleep));
    assert_eq!(slept.process.cmdline, "sleep 1001");
    assert_eq!(slept.process.command, "sleep");
    let running = nix::sys::stat::stat(&ns.proc_root.join(format!("{to_sleep}/exe"))).unwrap();
    let identity = slept.exe_identity.expect("an identity");
    assert_eq!(
        (identity.dev, identity.ino),
        (running.st_dev, running.st_ino),
        "the identity (digest cache key) of the new executable"
    );

    // Same executable, same comm: the new address space gives the exec away.
    let itself = process(&after, to_self);
    assert_eq!(itself.process.exe.as_deref(), sh_exe.to_str());
    assert_eq!(itself.process.cmdline, ns.cmdline(to_self));
    assert_eq!(itself.process.cmdline, "sh -c sleep 1002; :");
    // Only the namespace's init was served from the first pass.
    assert_eq!(after.processes_reused, 1, "{:?}", after.processes);
}

/// With exec events watched, a pass trusts them: an exec reported (`execs_seen`) is read
/// afresh, one into another program is seen by its `exe` link and name anyway, and after a
/// loss (`execs_lost`) every process is re-checked as without events — which catches the
/// exec that changes neither (a shell exec'ing itself), as the pass before, trusting the
/// events, could not.
#[test]
fn with_exec_events_watched_reported_execs_are_read_afresh_and_a_loss_rechecks_all() {
    if missing_prerequisite() {
        return;
    }
    let mut ns = PidNs::start();
    let fifos = [ns.fifo("reported"), ns.fifo("unreported"), ns.fifo("other")];
    let itself = |fifo: &Path, n: u32| {
        format!(
            "sh -c 'read x < {}; exec sh -c \"sleep {n}; :\"'",
            fifo.display()
        )
    };
    let reported = ns.spawn("reported", &itself(&fifos[0], 1001));
    let unreported = ns.spawn("unreported", &itself(&fifos[1], 1002));
    let other = ns.spawn(
        "other",
        &format!("sh -c 'read x < {}; exec sleep 1003'", fifos[2].display()),
    );
    wait_until("the shells to read", || {
        [reported, unreported, other]
            .iter()
            .all(|p| ns.cmdline(*p).starts_with("sh -c read"))
            .then_some(())
    });
    let mut collector = ns.collector();
    collector.watch_execs(true);
    // The first pass after watching starts re-checks everything (and keeps the handles).
    let first = collector.collect().unwrap();
    assert_eq!(first.processes_watched, 0);
    assert!(collector.held_dirs() >= 5, "{}", collector.held_dirs());
    let quiet = collector.collect().unwrap();
    assert_eq!(
        quiet.processes_watched,
        user_processes(&quiet),
        "nothing exec'd: every process read the short way"
    );

    for fifo in &fifos {
        release(fifo);
    }
    wait_until("the execs", || {
        (ns.cmdline(reported).starts_with("sh -c sleep 1001")
            && ns.cmdline(unreported).starts_with("sh -c sleep 1002")
            && ns.cmdline(other) == "sleep 1003")
            .then_some(())
    });
    // The shells fork their sleeps: a pass that caught one between fork and exec would
    // rightly read it afresh the next time, which the counts below do not expect.
    ns.wait_for_command("sleep 1001");
    ns.wait_for_command("sleep 1002");
    collector.execs_seen(&[reported]);
    let trusted = collector.collect().unwrap();
    assert_eq!(
        process(&trusted, reported).process.cmdline,
        ns.cmdline(reported)
    );
    let slept = &process(&trusted, other).process;
    assert_eq!(
        (slept.cmdline.as_str(), slept.command.as_str()),
        ("sleep 1003", "sleep")
    );
    assert_eq!(slept.exe.as_deref(), ns.exe(other).unwrap().to_str());
    // Same executable, same name, no event: the pass took the events' word for it.
    assert!(
        process(&trusted, unreported)
            .process
            .cmdline
            .contains("read x"),
        "without an event or a loss the short read cannot tell this exec: {:?}",
        process(&trusted, unreported).process
    );

    collector.execs_lost();
    let rechecked = collector.collect().unwrap();
    assert_eq!(
        rechecked.processes_watched, 0,
        "a loss: nothing read the short way"
    );
    assert_eq!(
        process(&rechecked, unreported).process.cmdline,
        ns.cmdline(unreported)
    );
    assert_eq!(
        process(&rechecked, unreported).process.cmdline,
        "sh -c sleep 1002; :"
    );
    // And the pass after that trusts the events again.
    let again = collector.collect().unwrap();
    assert_eq!(again.processes_watched, user_processes(&again));
    assert_eq!(
        process(&again, unreported).process.cmdline,
        "sh -c sleep 1002; :"
    );

    // Without handles to keep (no budget), nothing is read the short way.
    let mut unheld = ns.collector();
    unheld.set_dir_budget(0);
    unheld.watch_execs(true);
    unheld.collect().unwrap();
    let pass = unheld.collect().unwrap();
    assert_eq!((pass.processes_watched, unheld.held_dirs()), (0, 0));
    assert_eq!(pass.processes_reused, user_processes(&pass));
}

/// While exec events are watched the full reads follow their own period (the daemon
/// stretches it to about three minutes): between them every known process is read the short
/// way; a loss brings back the re-check of every process at once.
#[test]
fn with_exec_events_watched_full_reads_follow_their_own_period() {
    if missing_prerequisite() {
        return;
    }
    let mut ns = PidNs::start();
    for i in 0..8 {
        ns.spawn(&format!("sleeper{i}"), &format!("sleep {}", 2000 + i));
    }
    let mut collector = Collector::with_full_read_every(ns.options(), 2);
    collector.watch_execs(true);
    collector.collect().unwrap();
    // At the period given at construction (2), about half are read in full each pass.
    let halved = collector.collect().unwrap();
    let all = user_processes(&halved);
    assert!(all >= 9, "{all} processes in the namespace");
    assert!(
        halved.processes_watched > 0 && halved.processes_watched < all,
        "{} of {all} read the short way",
        halved.processes_watched
    );
    collector.set_full_read_every_watched(u32::MAX);
    for _ in 0..3 {
        let pass = collector.collect().unwrap();
        assert_eq!(pass.processes_watched, user_processes(&pass));
    }
    collector.execs_lost();
    assert_eq!(collector.collect().unwrap().processes_watched, 0);
    let resumed = collector.collect().unwrap();
    assert_eq!(resumed.processes_watched, user_processes(&resumed));
}

/// With exec events watched, processes running the same file share one `exe` link read per
/// pass: deleting the file must still show on every one of them in the next pass, and not
/// on a process running another copy. Ground truth: each process's `exe` link as the
/// kernel shows it.
#[test]
fn with_exec_events_watched_a_deleted_executable_shows_on_every_process_running_it() {
    if missing_prerequisite() {
        return;
    }
    let mut ns = PidNs::start();
    let sleep = Command::new("sh")
        .args(["-c", "command -v sleep"])
        .output()
        .unwrap();
    let sleep = PathBuf::from(String::from_utf8(sleep.stdout).unwrap().trim());
    let (doomed, kept) = (ns.path("doomed-sleep"), ns.path("kept-sleep"));
    fs::copy(&sleep, &doomed).unwrap();
    fs::copy(&sleep, &kept).unwrap();
    let runners: Vec<i32> = (0..3)
        .map(|i| {
            ns.spawn(
                &format!("doomed{i}"),
                &format!("{} {}", doomed.display(), 3000 + i),
            )
        })
        .collect();
    let other = ns.spawn("kept", &format!("{} 3100", kept.display()));
    let mut collector = ns.collector();
    collector.watch_execs(true);
    collector.collect().unwrap();
    let before = collector.collect().unwrap();
    assert_eq!(before.processes_watched, user_processes(&before));
    for pid in runners.iter().chain([&other]) {
        assert!(!process(&before, *pid).process.exe_deleted);
    }
    fs::remove_file(&doomed).unwrap();
    let after = collector.collect().unwrap();
    for pid in &runners {
        let link = ns.exe(*pid).unwrap();
        assert!(link.to_string_lossy().ends_with(" (deleted)"), "{link:?}");
        let seen = &process(&after, *pid).process;
        assert!(seen.exe_deleted, "pid {pid}: {seen:?}");
        assert_eq!(seen.exe.as_deref(), doomed.to_str());
    }
    assert!(!process(&after, other).process.exe_deleted);
    assert_eq!(
        process(&after, other).process.exe.as_deref(),
        ns.exe(other).unwrap().to_str()
    );
}

/// With exec events watched, a process that becomes a zombie is reported without an
/// executable at the next pass, although its parent runs the same file under the same link
/// (their `exe` links share one read). Ground truth: the kernel's `stat` state and `exe` link.
#[test]
fn with_exec_events_watched_a_zombie_is_reported_without_its_executable() {
    if missing_prerequisite() {
        return;
    }
    let mut ns = PidNs::start();
    // The parent execs `sleep`, which never reaps its child: the child stays a zombie.
    let parent = ns.spawn("parent", "sh -c 'sleep 1001 & exec sleep 1002'");
    let children = ns
        .proc_root
        .join(format!("{parent}/task/{parent}/children"));
    let child: i32 = wait_until("the child sleep and the parent's exec", || {
        if ns.cmdline(parent) != "sleep 1002" {
            return None;
        }
        let child: i32 = fs::read_to_string(&children)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        (ns.cmdline(child) == "sleep 1001").then_some(child)
    });
    let mut collector = ns.collector();
    collector.watch_execs(true);
    collector.collect().unwrap();
    let before = collector.collect().unwrap();
    assert_eq!(before.processes_watched, user_processes(&before));
    assert_eq!(
        process(&before, child).process.exe,
        process(&before, parent).process.exe
    );
    ns.run(&format!("kill {child}"));
    let state = |pid: i32| {
        let stat = String::from_utf8(ns.proc_file(pid, "stat")).unwrap();
        let after_comm = stat.rsplit_once(") ").unwrap().1.to_string();
        after_comm.chars().next().unwrap()
    };
    wait_until("the child to be a zombie", || {
        (state(child) == 'Z').then_some(())
    });
    assert!(ns.exe(child).is_none(), "a zombie has no exe link");
    let after = collector.collect().unwrap();
    assert_eq!(process(&after, child).process.exe, None);
    assert_eq!(
        process(&after, parent).process.exe.as_deref(),
        ns.exe(parent).unwrap().to_str()
    );
}

/// Processes other than the one at pid 2, which the collector takes for kthreadd.
fn user_processes(s: &Snapshot) -> u64 {
    s.processes
        .iter()
        .filter(|p| !p.process.kernel_thread)
        .count() as u64
}

#[test]
fn ids_capabilities_nnp_and_seccomp_changed_without_exec_are_seen() {
    privileges_dropped_without_exec_are_seen(false);
}

/// With exec events watched a known process is read the short way (`status` and the `exe`
/// link): what it changes on itself without an exec is still seen, because `status` is
/// still read every pass.
#[test]
fn with_exec_events_watched_a_setuid_without_exec_is_still_seen() {
    privileges_dropped_without_exec_are_seen(true);
}

fn privileges_dropped_without_exec_are_seen(watched: bool) {
    if missing_prerequisite() {
        return;
    }
    let sys_prctl = match std::env::consts::ARCH {
        "x86_64" => 157,
        "aarch64" => 167,
        other => {
            skip(&format!("no prctl syscall number for {other} here"));
            return;
        }
    };
    let mut ns = PidNs::start();
    let go = ns.fifo("go");
    // A process that drops to nobody, sets no_new_privs and installs an allow-all seccomp
    // filter on itself, all without an exec (perl's setreuid and a raw prctl(2)).
    let script = ns.path("drop.pl");
    fs::write(
        &script,
        format!(
            r#"open(my $go, '<', $ARGV[0]) or die; my $l = <$go>;
($<, $>) = (65534, 65534);
syscall({sys_prctl}, 38, 1, 0, 0, 0) == 0 or die "PR_SET_NO_NEW_PRIVS: $!";
my $filter = pack("SCCL", 0x06, 0, 0, 0x7fff0000);
my $prog = pack("Sx![P]P", 1, $filter);
syscall({sys_prctl}, 22, 2, unpack("J", pack("P", $prog)), 0, 0) == 0 or die "PR_SET_SECCOMP: $!";
sleep 1000;
"#
        ),
    )
    .unwrap();
    let pid = ns.spawn(
        "perl",
        &format!("perl {} {}", script.display(), go.display()),
    );
    wait_until("perl to run", || {
        ns.exe(pid)
            .is_some_and(|e| e.ends_with("perl"))
            .then_some(())
    });
    let mut collector = ns.collector();
    collector.watch_execs(watched);
    let before = collector.collect().unwrap();
    let p = &process(&before, pid).process;
    assert_eq!(p.uid, 0);
    assert_eq!(&*p.capability_masks.effective, ns.status(pid, "CapEff"));
    assert_ne!(&*p.capability_masks.effective, "0000000000000000");
    assert_eq!(p.no_new_privs, Some(false));
    assert_eq!(p.seccomp, Some(SeccompMode::Disabled));

    release(&go);
    // Its last step: the filter.
    wait_until("perl to drop its privileges", || {
        (ns.status(pid, "Seccomp") == "2").then_some(())
    });
    let after = collector.collect().unwrap();
    let p = &process(&after, pid).process;
    let uids: Vec<u32> = ns
        .status(pid, "Uid")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(p.uid, 65534);
    assert_eq!(
        [
            p.uids.real,
            p.uids.effective,
            p.uids.saved,
            p.uids.filesystem
        ],
        uids[..]
    );
    assert_eq!(&*p.capability_masks.effective, ns.status(pid, "CapEff"));
    assert_eq!(&*p.capability_masks.effective, "0000000000000000");
    assert_eq!(&*p.capability_masks.permitted, ns.status(pid, "CapPrm"));
    assert_eq!(p.no_new_privs, Some(true));
    assert_eq!(ns.status(pid, "Seccomp"), "2");
    assert_eq!(p.seccomp, Some(SeccompMode::Filter));
    // And it was a warm pass: both processes (init and perl) reused, not read afresh; with
    // events watched, both the short way.
    assert_eq!(after.processes_reused, 2);
    assert_eq!(after.processes_watched, if watched { 2 } else { 0 });
}

#[test]
fn a_reused_pid_is_a_new_process_and_gone_ones_are_forgotten() {
    reused_pid(false);
}

/// With exec events watched and the new process's exec not reported: the `/proc/PID`
/// handle kept from the first pass reaches only the first process, so the second one at
/// the same pid is still read as new.
#[test]
fn with_exec_events_watched_a_reused_pid_is_still_a_new_process() {
    reused_pid(true);
}

fn reused_pid(watched: bool) {
    if missing_prerequisite() {
        return;
    }
    let mut ns = PidNs::start();
    let first = ns.spawn("first", "sleep 1000");
    let mut collector = ns.collector();
    collector.watch_execs(watched);
    let one = collector.collect().unwrap();
    assert_eq!(process(&one, first).process.cmdline, "sleep 1000");
    // Pid 2 is taken for kthreadd, and kernel threads are remembered too.
    assert_eq!(collector.remembered(), 3, "init, pid 2 and the sleep");

    // The same program again under the same pid: kill it, wind the namespace's last pid back
    // and start the next one after a clock tick.
    ns.run(&format!(
        "kill {first}; wait {first}; sleep 0.05; echo {} > /proc/sys/kernel/ns_last_pid",
        first - 1
    ));
    let second = ns.spawn("second", "sleep 2000");
    assert_eq!(second, first, "ns_last_pid should hand out the same pid");
    let two = collector.collect().unwrap();
    let p = &process(&two, second).process;
    assert_eq!(p.cmdline, "sleep 2000");
    assert_eq!(p.cmdline, ns.cmdline(second));
    assert_eq!(two.processes_reused, 1, "only init is the same process");

    ns.run(&format!("kill {second}; wait {second}"));
    wait_until("the second sleep to be gone", || {
        (!ns.proc_root.join(second.to_string()).exists()).then_some(())
    });
    let three = collector.collect().unwrap();
    assert_eq!(three.processes.len(), 2, "init and the sleep at pid 2");
    assert_eq!(collector.remembered(), 2, "the gone process is forgotten");
}

/// The node's processes and containers by key, for comparing passes.
fn by_pid(s: &Snapshot) -> BTreeMap<i32, &CollectedProcess> {
    s.processes.iter().map(|p| (p.process.pid, p)).collect()
}

#[test]
fn a_warm_pass_equals_a_cold_pass_on_this_node() {
    warm_equals_cold(false);
}

/// The short read (exec events watched) gives the same processes as a full one. Nothing
/// reports this node's execs to the collector here, but a process that exec'd between the
/// passes differs between the two cold ones and is not compared.
#[test]
fn with_exec_events_watched_a_warm_pass_equals_a_cold_pass_on_this_node() {
    warm_equals_cold(true);
}

fn warm_equals_cold(watched: bool) {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root to read every process");
        return;
    }
    let opts = CollectOptions {
        host_root: PathBuf::from("/"),
        ..CollectOptions::default()
    };
    // A fresh CI machine runs few processes that hold still between passes: start some
    // that do, so the comparison below always has something to compare.
    let sleepers = Sleepers::start(12);
    let mut collector = Collector::new(opts.clone());
    collector.watch_execs(watched);
    collector.collect().unwrap();
    // Other work runs on this node: compare what did not change from a cold pass before the
    // warm one to a cold pass after it.
    let cold_before = nodeguard_collect::collect(&opts).unwrap();
    let warm = collector.collect().unwrap();
    if watched {
        assert!(
            warm.processes_watched * 2 > warm.processes_reused,
            "most reused processes read the short way: {} of {}",
            warm.processes_watched,
            warm.processes_reused
        );
    }
    let cold_after = nodeguard_collect::collect(&opts).unwrap();
    let user_processes = warm.processes.len() as u64 - warm.stats.kernel_threads;
    assert!(
        warm.processes_reused * 2 > user_processes,
        "a warm pass reuses most processes (kernel threads have nothing to reuse): {} of {}",
        warm.processes_reused,
        user_processes
    );
    let (before, after, warm_pids) = (by_pid(&cold_before), by_pid(&cold_after), by_pid(&warm));
    let mut compared = 0;
    for (pid, cold) in &before {
        // Kernel threads keep nothing between passes, and a kworker's comm names whatever
        // work it does at the moment: it may change and change back between the cold passes.
        if after.get(pid) != Some(cold) || cold.process.kernel_thread {
            continue;
        }
        let seen = warm_pids
            .get(pid)
            .unwrap_or_else(|| panic!("pid {pid} is in both cold passes, not in the warm one"));
        assert_eq!(seen, cold, "pid {pid}: warm vs cold");
        compared += 1;
    }
    for pid in sleepers.pids() {
        assert!(
            before.contains_key(&pid) && before.get(&pid) == after.get(&pid),
            "our sleeping process {pid} held still and was compared"
        );
    }
    assert!(
        compared >= sleepers.pids().len(),
        "only {compared} processes held still"
    );
    let containers = |s: &Snapshot| {
        s.containers
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (before, after, warm) = (
        containers(&cold_before),
        containers(&cold_after),
        containers(&warm),
    );
    for (id, cold) in &before {
        if after.get(id) == Some(cold) {
            assert_eq!(warm.get(id), Some(cold), "container {id}: warm vs cold");
        }
    }
    assert_eq!(warm_host(&cold_before), warm_host(&cold_after));
}

/// Idle children on the host, killed and reaped when dropped.
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn start(n: usize) -> Sleepers {
        Sleepers(
            (0..n)
                .map(|_| {
                    Command::new("sleep")
                        .arg("600")
                        .spawn()
                        .expect("sleep runs")
                })
                .collect(),
        )
    }

    fn pids(&self) -> Vec<i32> {
        self.0.iter().map(|c| c.id() as i32).collect()
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn warm_host(s: &Snapshot) -> (u32, Option<u64>) {
    (s.cap_last_cap, s.host_namespaces.net)
}

/// The unified (v2) cgroup hierarchy: `/sys/fs/cgroup` or, on a hybrid host, its `unified`.
fn unified_hierarchy() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// A process moved into another cgroup (no exec: a write to `cgroup.procs`) is attributed to
/// the container of its new cgroup within the full-read period of a default collector.
#[test]
fn a_process_moved_into_a_container_cgroup_is_seen_within_the_full_read_period() {
    if missing_prerequisite() {
        return;
    }
    let Some(unified) = unified_hierarchy() else {
        skip("no cgroup2 hierarchy mounted");
        return;
    };
    let top = unified.join(format!("nodeguard-reconcile-{}", std::process::id()));
    // Declared before the namespace, so dropped after it: a cgroup goes once it is empty.
    let cleanup = Cleanup(top.clone());
    let mut ns = PidNs::start();
    let pid = ns.spawn("mover", "sleep 1000");
    let id = format!("{:064x}", u128::from(std::process::id()) << 64 | 0xfeed);
    let cgroup = top
        .join("kubepods/burstable/pod1234abcd-5678-90ef-1234-567890abcdef")
        .join(&id);
    fs::create_dir_all(&cgroup).unwrap();
    let mut collector = Collector::new(ns.options());
    let before = collector.collect().unwrap();
    assert_eq!(process(&before, pid).process.container_id, None);

    ns.run(&format!(
        "echo {pid} > {}",
        cgroup.join("cgroup.procs").display()
    ));
    wait_until("the move", || {
        String::from_utf8(ns.proc_file(pid, "cgroup"))
            .ok()?
            .contains(&id)
            .then_some(())
    });
    let mut seen_after = None;
    for pass in 1..=Collector::FULL_READ_EVERY {
        let s = collector.collect().unwrap();
        if process(&s, pid).process.container_id.as_deref() == Some(id.as_str()) {
            let container = s
                .containers
                .iter()
                .find(|c| c.id == id)
                .expect("its container");
            assert_eq!(container.pids, [pid]);
            seen_after = Some(pass);
            break;
        }
    }
    assert!(
        seen_after.is_some(),
        "not attributed to {id} within {} passes",
        Collector::FULL_READ_EVERY
    );
    drop(ns);
    drop(cleanup);
}

/// Removes a cgroup tree, leaves first, once its processes are gone.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        fn remove(dir: &Path) {
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            for _ in 0..100 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("warning: could not remove cgroup {}", dir.display());
        }
        remove(&self.0);
    }
}
