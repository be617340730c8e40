//! Integration tests of `nodeguard scan` against real runc containers.
//!
//! Every assertion compares the report with ground truth taken independently of nodeguard:
//! `runc ps`/`runc state`, `sha256sum /proc/PID/exe`, `capsh --decode` of `/proc/PID/status`,
//! the cgroup files runc wrote, `find`/`getcap` on the container's root. The machine may run
//! other containers and processes: the tests only assert about their own, or run the scan on a
//! proc root holding only their own processes (`support::fakeproc`).
//!
//! They need root, runc, busybox-static and capsh. Without them each test says why it skipped;
//! with `CI` set they fail instead. Run: `cargo test -p nodeguard --test scan_runc`.

mod support;

use serde_json::Value;
use support::container::{
    cgroup_mounts, v1_controller_mount, CgroupNaming, Container, ContainerSpec, Qos, RuntimeNaming,
};
use support::fakeproc::FakeProc;
use support::image::Image;
use support::oracle;
use support::scan::{severity_rank, sorted_pids, sorted_strings, Scan};

use std::path::Path;

const MIB: i64 = 1024 * 1024;

/// The cgroup version the container's limits live in: v1 when the memory controller is on a v1
/// hierarchy (this includes hybrid hosts, whose v2 mount has no controllers).
fn expected_cgroup_version() -> &'static str {
    if v1_controller_mount("memory").is_some() {
        "v1"
    } else {
        "v2"
    }
}

/// Asserts what every container entry must say, whatever its settings: identity, pod, QoS,
/// cgroup, and its pids equal to `runc ps`.
fn assert_identity(scan: &Scan, c: &Container, runtime: &str, qos: &str, driver: &str) {
    let entry = scan.container(c);
    let seen = || scan.seen(c);
    assert_eq!(c.id.len(), 64, "test ids are 64 hex");
    assert_eq!(entry["id"], c.id.as_str(), "{}", seen());
    assert_eq!(entry["runtime"], runtime, "runtime\n{}", seen());
    assert_eq!(entry["pod_uid"], c.pod_uid.as_str(), "pod uid\n{}", seen());
    assert_eq!(entry["qos"], qos, "qos\n{}", seen());
    assert_eq!(entry["cgroup_driver"], driver, "cgroup driver\n{}", seen());
    assert_eq!(
        entry["cgroup_version"],
        expected_cgroup_version(),
        "cgroup version: where the container's limits live (on a hybrid host the memory \
         controller is on v1 and the v2 hierarchy has no controllers)\n{}",
        seen()
    );
    let cgroup = entry["cgroup"].as_str().unwrap_or_default();
    assert!(
        cgroup.ends_with(&c.cgroups_path),
        "cgroup {cgroup:?} should end with {}\n{}",
        c.cgroups_path,
        seen()
    );
    let pids = c.pids();
    assert!(pids.contains(&c.init_pid), "runc ps {pids:?} lacks init");
    assert_eq!(
        sorted_pids(&entry["pids"]),
        pids,
        "pids vs runc ps\n{}",
        seen()
    );
}

/// Asserts each process of `c` against the kernel's own view of it.
fn assert_processes(scan: &Scan, c: &Container) {
    for pid in c.pids() {
        let p = scan.process(c, pid);
        let seen = || format!("pid {pid}: {}\n{}", p, scan.seen(c));
        assert_eq!(
            p["container_id"],
            c.id.as_str(),
            "container of pid\n{}",
            seen()
        );
        let exe = format!("/proc/{pid}/exe");
        assert_eq!(
            p["sha256"],
            oracle::sha256sum(Path::new(&exe)).as_str(),
            "sha256 vs sha256sum {exe}\n{}",
            seen()
        );
        for (field, set) in [
            ("effective", "CapEff"),
            ("permitted", "CapPrm"),
            ("bounding", "CapBnd"),
        ] {
            assert_eq!(
                sorted_strings(&p["capabilities"][field]),
                oracle::capabilities(pid, set),
                "capabilities.{field} vs capsh --decode of {set}\n{}",
                seen()
            );
        }
        assert_eq!(
            p["uid"],
            oracle::effective_uid(pid),
            "uid vs /proc/{pid}/status\n{}",
            seen()
        );
        assert_eq!(
            p["no_new_privs"],
            oracle::no_new_privs(pid),
            "no_new_privs vs NoNewPrivs\n{}",
            seen()
        );
    }
}

fn assert_limits(
    scan: &Scan,
    c: &Container,
    memory: Option<u64>,
    cpu: Option<f64>,
    pids: Option<u64>,
) {
    let entry = scan.container(c);
    for field in ["limits", "effective_limits"] {
        let limits = &entry[field];
        assert_eq!(
            limits["memory_bytes"].as_u64(),
            memory,
            "{field}.memory_bytes\n{}",
            scan.seen(c)
        );
        match (limits["cpu_cores"].as_f64(), cpu) {
            (Some(got), Some(want)) => assert!(
                (got - want).abs() < 1e-9,
                "{field}.cpu_cores {got} != {want}\n{}",
                scan.seen(c)
            ),
            (got, want) => assert_eq!(got, want, "{field}.cpu_cores\n{}", scan.seen(c)),
        }
        assert_eq!(
            limits["pids"].as_u64(),
            pids,
            "{field}.pids\n{}",
            scan.seen(c)
        );
    }
}

fn assert_finding(scan: &Scan, c: &Container, kind: &str, subject: Option<&str>, present: bool) {
    assert_eq!(
        scan.has_finding(c, kind, subject),
        present,
        "expected {}{kind}{} finding; it has {:?}\n{}",
        if present { "a " } else { "no " },
        subject.map(|s| format!(" ({s})")).unwrap_or_default(),
        scan.finding_kinds(c),
        scan.seen(c)
    );
}

/// `--fail-on SEVERITY` exits 3 exactly when that scan's own report has a finding at or above it.
fn assert_fail_on_consistent(scan: &Scan, threshold: &str) {
    let expected = if scan.max_severity_rank() >= severity_rank(threshold) {
        3
    } else {
        0
    };
    assert_eq!(
        scan.exit_code(),
        Some(expected),
        "--fail-on {threshold}: exit code vs the report's findings (max rank {})\n{}",
        scan.max_severity_rank(),
        scan.summary()
    );
}

/// The harness itself: the containers are what the spec says, seen from the kernel. If this
/// fails, the other tests' ground truth is wrong, not nodeguard.
#[test]
fn harness_containers_match_their_spec() {
    require_containers!();
    let image = Image::busybox();
    let c = ContainerSpec::new(image)
        .memory_limit(48 * MIB)
        .cpu_limit(25_000, 100_000)
        .pids_limit(32)
        .add_capability("CAP_SYS_ADMIN")
        .user(1000, 1000)
        .no_new_privs(true)
        .seccomp_filter()
        .exec(&["/bin/tail", "-f", "/dev/null"])
        .start();
    let memory = c.cgroup_dir("memory");
    assert!(memory.starts_with("/sys/fs/cgroup"), "{}", memory.display());
    assert_eq!(
        oracle::read_trimmed(&memory.join(if expected_cgroup_version() == "v1" {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        })),
        (48 * MIB).to_string()
    );
    if expected_cgroup_version() == "v1" {
        let cpu = c.cgroup_dir("cpu");
        assert_eq!(oracle::read_trimmed(&cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(
            oracle::read_trimmed(&cpu.join("cpu.cfs_period_us")),
            "100000"
        );
        assert_eq!(
            oracle::read_trimmed(&c.cgroup_dir("pids").join("pids.max")),
            "32"
        );
    }
    let mut want: Vec<String> = support::container::RUNTIME_DEFAULT_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .chain(["CAP_SYS_ADMIN".to_string()])
        .collect();
    want.sort();
    let pids = c.pids();
    assert_eq!(pids.len(), 2, "init and the exec'd process: {pids:?}");
    assert_eq!(c.exec_pids.len(), 1);
    for pid in &pids {
        // A non-root process loses its permitted and effective capabilities when it execs a
        // binary without file capabilities (no ambient set): only the bounding set remains.
        assert!(oracle::capabilities(*pid, "CapEff").is_empty(), "pid {pid}");
        assert!(oracle::capabilities(*pid, "CapPrm").is_empty(), "pid {pid}");
        assert_eq!(oracle::capabilities(*pid, "CapBnd"), want, "pid {pid}");
        assert_eq!(oracle::effective_uid(*pid), 1000);
        assert!(oracle::no_new_privs(*pid));
        assert_eq!(oracle::seccomp_mode(*pid), 2);
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroup.lines().any(|l| l.ends_with(&c.cgroups_path)),
            "{cgroup}"
        );
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .unwrap();
        assert!(root.contains(" - overlay "), "{root}");
        assert!(
            root.contains(&format!("lowerdir={}", image.dir.display())),
            "{root}"
        );
    }
    // As root, the configured set is what the process holds.
    let root = ContainerSpec::new(image)
        .add_capability("CAP_SYS_ADMIN")
        .start();
    assert_eq!(oracle::capabilities(root.init_pid, "CapEff"), want);
    assert_eq!(oracle::capabilities(root.init_pid, "CapPrm"), want);
    assert!(oracle::capabilities(root.init_pid, "CapInh").is_empty());
    assert!(oracle::capabilities(root.init_pid, "CapAmb").is_empty());
    assert_eq!(oracle::effective_uid(root.init_pid), 0);
    assert!(!oracle::no_new_privs(root.init_pid));
    assert_eq!(oracle::seccomp_mode(root.init_pid), 0);
    drop(root);

    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", c.init_pid)).unwrap(),
        Path::new("/bin/sleep")
    );
    assert_eq!(
        oracle::sha256sum(Path::new(&format!("/proc/{}/exe", c.init_pid))),
        image.sha256("/bin/busybox")
    );

    // Teardown leaves nothing: no cgroup directory, no mount, no temp dir.
    let (leaf, pod, rootfs) = (
        memory.clone(),
        memory.parent().unwrap().to_path_buf(),
        c.rootfs.clone(),
    );
    drop(c);
    assert!(!leaf.exists(), "{} left behind", leaf.display());
    assert!(!pod.exists(), "{} left behind", pod.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(rootfs.to_str().unwrap()),
        "overlay still mounted"
    );
    assert!(!rootfs.exists(), "{} left behind", rootfs.display());
}

/// Several containers, each differing in one security-relevant setting, in one scan.
#[test]
fn scan_reports_each_container_as_the_kernel_sees_it() {
    require_containers!();
    let image = Image::busybox();
    let limited = ContainerSpec::new(image)
        .memory_limit(64 * MIB)
        .cpu_limit(50_000, 100_000)
        .pids_limit(64)
        .exec(&["/bin/tail", "-f", "/dev/null"])
        .start();
    let unlimited = ContainerSpec::new(image).start();
    let sys_admin = ContainerSpec::new(image)
        .add_capability("CAP_SYS_ADMIN")
        .start();
    let nnp = ContainerSpec::new(image)
        .user(1000, 1000)
        .no_new_privs(true)
        .start();
    let all = [&limited, &unlimited, &sys_admin, &nnp];

    let scan = Scan::run(&[]);
    for c in all {
        assert_identity(&scan, c, "containerd", "burstable", "cgroupfs");
        assert_processes(&scan, c);
    }

    assert_limits(&scan, &limited, Some(64 * 1024 * 1024), Some(0.5), Some(64));
    for kind in [
        "missing_memory_limit",
        "missing_cpu_limit",
        "missing_pids_limit",
    ] {
        assert_finding(&scan, &limited, kind, None, false);
        for c in [&unlimited, &sys_admin, &nnp] {
            assert_finding(&scan, c, kind, None, true);
        }
    }
    assert_limits(&scan, &unlimited, None, None, None);

    assert_finding(
        &scan,
        &sys_admin,
        "dangerous_capability",
        Some("CAP_SYS_ADMIN"),
        true,
    );
    for c in [&limited, &unlimited, &nnp] {
        assert_finding(&scan, c, "dangerous_capability", None, false);
    }

    let nnp_process = scan.process(&nnp, nnp.init_pid);
    assert_eq!(nnp_process["no_new_privs"], true, "{}", scan.seen(&nnp));
    assert_eq!(nnp_process["uid"], 1000, "{}", scan.seen(&nnp));
    assert_eq!(nnp_process["gid"], 1000, "{}", scan.seen(&nnp));
    assert_finding(&scan, &nnp, "no_new_privs_disabled", None, false);
    assert_finding(&scan, &nnp, "runs_as_root", None, false);
    for c in [&limited, &unlimited, &sys_admin] {
        assert_finding(&scan, c, "no_new_privs_disabled", None, true);
        assert_finding(&scan, c, "runs_as_root", None, true);
    }
    // runc spec's containers have no seccomp filter, and a namespace of their own for each kind.
    for c in all {
        assert_finding(&scan, c, "seccomp_disabled", None, true);
        for kind in [
            "host_pid_namespace",
            "host_network_namespace",
            "host_ipc_namespace",
            "host_uts_namespace",
        ] {
            assert_finding(&scan, c, kind, None, false);
        }
    }

    // --fail-on: each run's exit code agrees with its own report (on the whole machine, and on
    // a proc root of these four containers); the CAP_SYS_ADMIN finding's severity as threshold
    // must fail.
    let gated = Scan::run(&["--no-fs", "--fail-on", "high"]);
    assert_fail_on_consistent(&gated, "high");
    let pids: Vec<i32> = all.iter().flat_map(|c| c.pids()).collect();
    let proc_root = FakeProc::with_pids(&pids);
    let ours = ["--no-fs", "--proc-root", proc_root.path_str(), "--fail-on"];
    let gated = Scan::run(&[&ours[..], &["critical"]].concat());
    assert_fail_on_consistent(&gated, "critical");
    let sys_admin_finding =
        scan.findings_of(&sys_admin.id, "dangerous_capability", Some("CAP_SYS_ADMIN"))[0];
    let severity = sys_admin_finding["severity"].as_str().unwrap().to_string();
    let gated = Scan::run(&[&ours[..], &[severity.as_str()]].concat());
    assert!(
        gated.has_finding(&sys_admin, "dangerous_capability", Some("CAP_SYS_ADMIN")),
        "{}",
        gated.seen(&sys_admin)
    );
    assert_eq!(
        gated.exit_code(),
        Some(3),
        "--fail-on {severity}\n{}",
        gated.summary()
    );
}

/// A container that follows the Kubernetes "restricted" profile and has limits: nothing to
/// report about it, and on a proc root holding only it, `--fail-on` passes.
#[test]
fn hardened_container_has_no_findings() {
    require_containers!();
    let c = ContainerSpec::new(Image::busybox())
        .memory_limit(32 * MIB)
        .cpu_limit(10_000, 100_000)
        .pids_limit(16)
        .user(65534, 65534)
        .no_new_privs(true)
        .capabilities(&["CAP_NET_BIND_SERVICE"])
        .seccomp_filter()
        .readonly_root()
        .start();
    let proc_root = FakeProc::with_pids(&[c.init_pid]);
    let mut exits = Vec::new();
    for threshold in ["low", "medium", "high", "critical"] {
        let scan = Scan::run(&["--proc-root", proc_root.path_str(), "--fail-on", threshold]);
        assert_identity(&scan, &c, "containerd", "burstable", "cgroupfs");
        assert_processes(&scan, &c);
        let p = scan.process(&c, c.init_pid);
        assert_eq!(p["seccomp"], "filter", "{}", scan.seen(&c));
        assert!(
            scan.findings_for(&c.id).is_empty(),
            "a hardened container has findings: {:?}\n{}",
            scan.finding_kinds(&c),
            scan.seen(&c)
        );
        let mut pids: Vec<i32> = scan
            .processes()
            .iter()
            .filter_map(|p| p["pid"].as_i64())
            .map(|p| p as i32)
            .collect();
        pids.sort_unstable();
        assert_eq!(
            pids,
            [1, c.init_pid],
            "--proc-root is honoured\n{}",
            scan.summary()
        );
        assert_fail_on_consistent(&scan, threshold);
        exits.push(scan.exit_code());
    }
    // Only the host's pid 1 besides the hardened container: nothing on it is critical.
    assert_eq!(
        exits.last(),
        Some(&Some(0)),
        "--fail-on critical exits: {exits:?}"
    );
}

#[test]
fn hash_both_matches_sha256sum_and_sha512sum() {
    require_containers!();
    let c = ContainerSpec::new(Image::busybox())
        .exec(&["/bin/tail", "-f", "/dev/null"])
        .start();
    let proc_root = FakeProc::with_pids(&c.pids());
    let scan = Scan::run(&[
        "--hash",
        "both",
        "--no-fs",
        "--proc-root",
        proc_root.path_str(),
    ]);
    for pid in c.pids() {
        let p = scan.process(&c, pid);
        let exe = format!("/proc/{pid}/exe");
        assert_eq!(
            p["sha256"],
            oracle::sha256sum(Path::new(&exe)).as_str(),
            "{}",
            scan.seen(&c)
        );
        assert_eq!(
            p["sha512"],
            oracle::sha512sum(Path::new(&exe)).as_str(),
            "{}",
            scan.seen(&c)
        );
    }
    // Without --hash both there is no sha512 field at all.
    let plain = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);
    assert!(
        plain
            .process(&c, c.init_pid)
            .get("sha512")
            .is_none_or(Value::is_null),
        "{}",
        plain.seen(&c)
    );
}

/// Two containers of one image run the same file of the same lower layer: it is hashed once,
/// although each overlay mount gives it a different (st_dev, st_ino).
#[test]
fn shared_image_binary_is_hashed_once_across_containers() {
    require_containers!();
    let image = Image::busybox();
    let a = ContainerSpec::new(image).start();
    let b = ContainerSpec::new(image).start();
    let image_digest = image.sha256("/bin/busybox");

    // On a proc root with only these two processes (and pid 1) the counters are all ours.
    let proc_root = FakeProc::with_pids(&[a.init_pid, b.init_pid]);
    let scan = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);
    let pid1_hashed = scan
        .find_process(1)
        .is_some_and(|p| p["sha256"].is_string());
    for c in [&a, &b] {
        assert_eq!(
            scan.process(c, c.init_pid)["sha256"],
            image_digest.as_str(),
            "{}",
            scan.seen(c)
        );
    }
    assert_eq!(
        scan.stat("files_hashed"),
        1 + u64::from(pid1_hashed),
        "busybox must be read once for both containers\n{}",
        scan.summary()
    );
    assert!(scan.stat("hash_cache_hits") >= 1, "{}", scan.summary());
}

/// Names of the systemd cgroup driver and of other runtimes, as the cgroupfs shows them.
#[test]
fn cgroup_names_of_other_drivers_and_runtimes() {
    require_containers!();
    let image = Image::busybox();
    let systemd_containerd = ContainerSpec::new(image)
        .naming(CgroupNaming::Systemd)
        .qos(Qos::BestEffort)
        .start();
    assert!(
        systemd_containerd.cgroups_path.contains(&format!(
            "kubepods-besteffort-pod{}.slice/cri-containerd-",
            systemd_containerd.pod_uid.replace('-', "_")
        )),
        "{}",
        systemd_containerd.cgroups_path
    );
    let systemd_crio = ContainerSpec::new(image)
        .naming(CgroupNaming::Systemd)
        .runtime(RuntimeNaming::Crio)
        .memory_limit(16 * MIB)
        .start();
    let guaranteed_bare = ContainerSpec::new(image)
        .qos(Qos::Guaranteed)
        .runtime(RuntimeNaming::Bare)
        .memory_limit(16 * MIB)
        .cpu_limit(20_000, 100_000)
        .start();

    let all = [&systemd_containerd, &systemd_crio, &guaranteed_bare];
    let proc_root = FakeProc::with_pids(&all.iter().flat_map(|c| c.pids()).collect::<Vec<_>>());
    let scan = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);
    assert_identity(
        &scan,
        &systemd_containerd,
        "containerd",
        "besteffort",
        "systemd",
    );
    assert_identity(&scan, &systemd_crio, "crio", "burstable", "systemd");
    assert_identity(&scan, &guaranteed_bare, "unknown", "guaranteed", "cgroupfs");
    assert_limits(&scan, &systemd_crio, Some(16 * 1024 * 1024), None, None);
    assert_limits(
        &scan,
        &guaranteed_bare,
        Some(16 * 1024 * 1024),
        Some(0.2),
        None,
    );
    for c in [&systemd_containerd, &systemd_crio, &guaranteed_bare] {
        assert_processes(&scan, c);
    }
}

#[test]
fn host_network_and_privileged_containers_are_flagged() {
    require_containers!();
    let image = Image::busybox();
    let host_net = ContainerSpec::new(image).host_network().start();
    let own_net = ContainerSpec::new(image).start();
    // Privileged: every capability the runtime itself holds (on a node, all the kernel knows).
    let privileged = ContainerSpec::new(image).privileged().start();

    // Scan a proc root of these containers only: its pid 1 is one the scan can look into.
    let proc_root =
        FakeProc::with_pids(&[host_net.init_pid, own_net.init_pid, privileged.init_pid]);
    let scan = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);
    let net_ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let host_ns = net_ns(std::process::id() as i32);
    assert_eq!(net_ns(host_net.init_pid), host_ns);
    assert_ne!(net_ns(own_net.init_pid), host_ns);
    let shared = |c: &Container| {
        sorted_strings(&scan.process(c, c.init_pid)["namespaces"]["shared_with_host"])
    };
    assert!(
        shared(&host_net).contains(&"net".to_string()),
        "{}",
        scan.seen(&host_net)
    );
    assert!(
        !shared(&own_net).contains(&"net".to_string()),
        "{}",
        scan.seen(&own_net)
    );
    for ns in ["pid", "ipc", "uts", "mnt"] {
        assert!(
            !shared(&host_net).contains(&ns.to_string()),
            "{ns}\n{}",
            scan.seen(&host_net)
        );
    }
    assert_finding(&scan, &host_net, "host_network_namespace", None, true);
    assert_finding(&scan, &own_net, "host_network_namespace", None, false);

    assert_processes(&scan, &privileged);
    // Privileged means "everything the host has", measured against the host's bounding set
    // (pid 1's), which on this machine lacks CAP_SYS_RESOURCE: runc grants what it holds.
    assert_eq!(
        oracle::proc_status(privileged.init_pid, "CapBnd"),
        oracle::proc_status(1, "CapBnd"),
        "harness: a privileged container gets the host's bounding set\n{}",
        scan.seen(&privileged)
    );
    assert_finding(&scan, &privileged, "privileged_container", None, true);
    assert_finding(&scan, &own_net, "privileged_container", None, false);
    // The capabilities a privileged container holds are named in its one privileged finding,
    // not repeated as a finding each (15 with the default list).
    let said = scan.findings_of(&privileged.id, "privileged_container", None)[0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for cap in ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE"] {
        assert!(said.contains(cap), "{cap} not named in: {said}");
        assert_finding(&scan, &privileged, "dangerous_capability", Some(cap), false);
    }
}

/// A binary copied into the container after it started runs from the writable layer.
#[test]
fn binary_written_after_start_is_drift() {
    require_containers!();
    let image = Image::busybox();
    let c = ContainerSpec::new(image)
        .exec(&[
            "/bin/sh",
            "-c",
            "cp /bin/busybox /tmp/busybox && exec /tmp/busybox sleep 3600",
        ])
        .start();
    let drifted = c.exec_pids[0];
    c.wait_for_exact_exe(drifted, "/tmp/busybox");
    assert!(
        c.upper_dir.join("tmp/busybox").is_file(),
        "the copy lands in the upper layer"
    );

    let proc_root = FakeProc::with_pids(&c.pids());
    let scan = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);
    assert_processes(&scan, &c);
    let entry = scan.container(&c);
    assert_eq!(entry["rootfs"]["fstype"], "overlay", "{}", scan.seen(&c));
    assert_eq!(
        sorted_strings(&entry["rootfs"]["lower_dirs"]),
        [image.dir.to_string_lossy().into_owned()],
        "{}",
        scan.seen(&c)
    );
    assert_eq!(
        entry["rootfs"]["upper_dir"],
        c.upper_dir.to_str().unwrap(),
        "{}",
        scan.seen(&c)
    );

    let p = scan.process(&c, drifted);
    assert_eq!(p["exe"], "/tmp/busybox", "{}", scan.seen(&c));
    assert_eq!(p["exe_layer"], "upper", "{}", scan.seen(&c));
    let init = scan.process(&c, c.init_pid);
    assert_eq!(init["exe"], "/bin/sleep", "{}", scan.seen(&c));
    assert_eq!(init["exe_layer"], "image", "{}", scan.seen(&c));
    let drift: Vec<&Value> = scan.findings_of(&c.id, "binary_drift", None);
    assert_eq!(
        drift.len(),
        1,
        "one drift finding, for /tmp/busybox\n{}",
        scan.seen(&c)
    );
    assert_eq!(drift[0]["path"], "/tmp/busybox", "{}", scan.seen(&c));
    assert_eq!(drift[0]["pid"], drifted, "{}", scan.seen(&c));
}

/// setuid/setgid files of the image and a file capability set after start, against `find` and
/// `getcap` on the container's root.
#[test]
fn setuid_setgid_and_file_capability_files_are_found() {
    require_containers!();
    let image = Image::busybox_owned("suid");
    let busybox = std::fs::read(image.path("/bin/busybox")).unwrap();
    image.add_file("/usr/bin/suidtool", &busybox, 0o4755);
    image.add_file("/usr/bin/sgidtool", b"#!/bin/sh\necho hi\n", 0o2755);
    let c = ContainerSpec::new(&image).start();
    let capped = c.rootfs.join("usr/bin/pinger");
    std::fs::copy(image.path("/bin/busybox"), &capped).unwrap();
    support::cmd::run_ok("setcap", &["cap_net_raw+ep", capped.to_str().unwrap()]);

    // Ground truth: find + getcap over the container's root as the host sees it.
    let root = format!("{}/.", c.rootfs.display());
    let special = support::cmd::run_ok(
        "find",
        &[
            root.as_str(),
            "-xdev",
            "-type",
            "f",
            "(",
            "-perm",
            "-4000",
            "-o",
            "-perm",
            "-2000",
            ")",
        ],
    );
    let all_files = support::cmd::run_ok("find", &[root.as_str(), "-xdev", "-type", "f"]);
    let files: Vec<&str> = all_files.stdout.lines().collect();
    let getcap = support::cmd::run_ok("getcap", &files);
    let strip = |p: &str| p.trim_start_matches(&root).to_string();
    let mut want: Vec<String> = special.stdout.lines().map(strip).collect();
    let mut want_caps = Vec::new();
    for line in getcap.stdout.lines() {
        let (path, caps) = line.rsplit_once(' ').unwrap();
        want.push(strip(path));
        want_caps.push((strip(path), caps.to_string()));
    }
    want.sort();
    want.dedup();
    assert_eq!(
        want,
        ["/usr/bin/pinger", "/usr/bin/sgidtool", "/usr/bin/suidtool"]
    );

    let proc_root = FakeProc::with_pids(&c.pids());
    let scan = Scan::run(&["--proc-root", proc_root.path_str()]);
    let ours: Vec<&Value> = scan
        .files()
        .iter()
        .filter(|f| f["container_id"] == c.id.as_str())
        .collect();
    let mut got: Vec<String> = ours
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    got.sort();
    assert_eq!(got, want, "files[] vs find/getcap\n{}", scan.seen(&c));
    let file = |path: &str| *ours.iter().find(|f| f["path"] == path).unwrap();
    assert_eq!(file("/usr/bin/suidtool")["setuid"], true);
    assert_eq!(
        file("/usr/bin/suidtool")["layer"],
        "image",
        "{}",
        scan.seen(&c)
    );
    assert_eq!(file("/usr/bin/sgidtool")["setgid"], true);
    assert_eq!(
        file("/usr/bin/pinger")["layer"],
        "upper",
        "{}",
        scan.seen(&c)
    );
    for (path, caps) in &want_caps {
        assert_eq!(
            file(path)["capabilities"],
            caps.as_str(),
            "{path}\n{}",
            scan.seen(&c)
        );
    }
    for (kind, path) in [
        ("setuid_file", "/usr/bin/suidtool"),
        ("setgid_file", "/usr/bin/sgidtool"),
        ("file_capability", "/usr/bin/pinger"),
    ] {
        let about_it = scan
            .findings_of(&c.id, kind, None)
            .iter()
            .any(|f| f["path"] == path || f["subject"] == path);
        assert!(about_it, "no {kind} finding for {path}\n{}", scan.seen(&c));
    }
    drop(c);
    drop(image);
}

/// kubelet's node-level cgroups for a `--cgroup-root` of the test's own: `<root>/kubepods`
/// with node allocatable written into it (memory, pids), as kubelet does before any pod
/// starts. Removed on drop, after the containers (declare it first).
struct NodeCgroups {
    /// `<mount>/<root>` and `<mount>/<root>/kubepods`, per hierarchy, created here.
    dirs: Vec<std::path::PathBuf>,
    /// The kubepods directory of the memory and the pids controller.
    memory: std::path::PathBuf,
    pids: std::path::PathBuf,
}

impl NodeCgroups {
    fn create(root: &str, memory_bytes: u64, pids: u64) -> NodeCgroups {
        let v2 = v1_controller_mount("memory").is_none();
        let mut node = NodeCgroups {
            dirs: Vec::new(),
            memory: Default::default(),
            pids: Default::default(),
        };
        let mut make = |mount: &Path| {
            let top = mount.join(root);
            let kubepods = top.join("kubepods");
            std::fs::create_dir_all(&kubepods)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", kubepods.display()));
            node.dirs.push(top.clone());
            node.dirs.push(kubepods.clone());
            (top, kubepods)
        };
        if v2 {
            let mount = cgroup_mounts()
                .into_iter()
                .find(|m| m.join("cgroup.controllers").is_file())
                .expect("a cgroup v2 mount");
            let (top, kubepods) = make(&mount);
            for dir in [&mount, &top] {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids");
            }
            std::fs::write(kubepods.join("memory.max"), memory_bytes.to_string()).unwrap();
            std::fs::write(kubepods.join("pids.max"), pids.to_string()).unwrap();
            node.memory = kubepods.clone();
            node.pids = kubepods;
        } else {
            let (_, memory) = make(&v1_controller_mount("memory").unwrap());
            std::fs::write(
                memory.join("memory.limit_in_bytes"),
                memory_bytes.to_string(),
            )
            .unwrap();
            let pids_mount = v1_controller_mount("pids").expect("a pids hierarchy");
            let (_, pids_dir) = make(&pids_mount);
            std::fs::write(pids_dir.join("pids.max"), pids.to_string()).unwrap();
            node.memory = memory;
            node.pids = pids_dir;
        }
        node
    }

    /// What the kernel says the node-level memory limit is (v1 rounds to pages).
    fn memory_limit(&self) -> u64 {
        let file = if self.memory.join("memory.max").exists() {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        oracle::read_trimmed(&self.memory.join(file))
            .parse()
            .unwrap()
    }

    fn pids_limit(&self) -> u64 {
        oracle::read_trimmed(&self.pids.join("pids.max"))
            .parse()
            .unwrap()
    }
}

impl Drop for NodeCgroups {
    fn drop(&mut self) {
        // Every hierarchy runc made the path in: the containers' teardown removed what they
        // created; the levels made here go last, deepest first.
        for mount in cgroup_mounts() {
            for rel in ["kubepods", ""] {
                let Some(top) = self.dirs.first() else { return };
                let name = top.file_name().unwrap_or_default();
                let dir = mount.join(name).join(rel);
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// The value of a container's own cgroup file for `controller`.
fn cgroup_value(c: &Container, controller: &str, file: &str) -> u64 {
    oracle::read_trimmed(&c.cgroup_dir(controller).join(file))
        .parse()
        .unwrap_or_else(|e| panic!("{controller}/{file} of {}: {e}", c.describe()))
}

/// On a kubelet node the `kubepods` cgroup holds node allocatable, so every container has a
/// memory and pids bound somewhere up its tree. A BestEffort pod with no limits must still
/// get `missing_memory_limit` and `missing_pids_limit`, and `effective_limits` must not show
/// the node's numbers (they go to `node_allocatable`). The pods sit under a kubelet
/// `--cgroup-root` prefix and are named by bare ids (containerd's CRI, cgroupfs driver).
#[test]
fn node_allocatable_on_kubepods_is_no_container_limit() {
    require_containers!();
    let root = format!("ng-alloc-{}", support::random_hex(4));
    let node = NodeCgroups::create(&root, 1 << 30, 4096);
    let image = Image::busybox();
    let besteffort = ContainerSpec::new(image)
        .cgroup_root(&root)
        .qos(Qos::BestEffort)
        .runtime(RuntimeNaming::Bare)
        .start();
    let guaranteed = ContainerSpec::new(image)
        .cgroup_root(&root)
        .qos(Qos::Guaranteed)
        .runtime(RuntimeNaming::Bare)
        .memory_limit(64 * MIB)
        .cpu_limit(50_000, 100_000)
        .pids_limit(64)
        .start();
    assert!(
        besteffort
            .cgroups_path
            .starts_with(&format!("/{root}/kubepods/besteffort/pod")),
        "{}",
        besteffort.cgroups_path
    );
    let scan = Scan::run(&["--no-fs"]);

    // The prefix attributes like /kubepods: pod, QoS, driver.
    for (c, qos) in [(&besteffort, "besteffort"), (&guaranteed, "guaranteed")] {
        let entry = scan.container(c);
        assert_eq!(entry["pod_uid"], c.pod_uid.as_str(), "{}", scan.seen(c));
        assert_eq!(entry["qos"], qos, "{}", scan.seen(c));
        assert_eq!(entry["cgroup_driver"], "cgroupfs", "{}", scan.seen(c));
        assert!(
            entry["cgroup"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&c.cgroups_path),
            "{}",
            scan.seen(c)
        );
        assert_eq!(
            entry["unknown_limits"],
            serde_json::json!([]),
            "{}",
            scan.seen(c)
        );
        // Node allocatable, as the kernel holds it in kubepods.
        assert_eq!(
            entry["node_allocatable"]["memory_bytes"].as_u64(),
            Some(node.memory_limit()),
            "node_allocatable vs {}\n{}",
            node.memory.display(),
            scan.seen(c)
        );
        assert_eq!(
            entry["node_allocatable"]["pids"].as_u64(),
            Some(node.pids_limit()),
            "{}",
            scan.seen(c)
        );
    }

    let be = scan.container(&besteffort);
    assert_eq!(
        be["effective_limits"]["memory_bytes"],
        Value::Null,
        "{}",
        scan.seen(&besteffort)
    );
    assert_eq!(
        be["effective_limits"]["pids"],
        Value::Null,
        "{}",
        scan.seen(&besteffort)
    );
    assert_finding(&scan, &besteffort, "missing_memory_limit", None, true);
    assert_finding(&scan, &besteffort, "missing_pids_limit", None, true);

    let memory_file = if expected_cgroup_version() == "v1" {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    let g = scan.container(&guaranteed);
    assert_eq!(
        g["effective_limits"]["memory_bytes"].as_u64(),
        Some(cgroup_value(&guaranteed, "memory", memory_file)),
        "{}",
        scan.seen(&guaranteed)
    );
    assert_eq!(
        g["effective_limits"]["pids"].as_u64(),
        Some(cgroup_value(&guaranteed, "pids", "pids.max")),
        "{}",
        scan.seen(&guaranteed)
    );
    assert_finding(&scan, &guaranteed, "missing_memory_limit", None, false);
    assert_finding(&scan, &guaranteed, "missing_pids_limit", None, false);
    drop((besteffort, guaranteed));
    drop(node);
}

/// A cgroup root that is no cgroup filesystem: every limit is unknown, said once, and no
/// container is reported missing a limit it may well have.
#[test]
fn unreadable_limits_are_unknown_not_missing() {
    require_containers!();
    let image = Image::busybox();
    let c = ContainerSpec::new(image).start();
    let nowhere = tempfile::tempdir().unwrap();
    let scan = Scan::run(&["--no-fs", "--cgroup-root", nowhere.path().to_str().unwrap()]);
    let entry = scan.container(&c);
    assert_eq!(
        sorted_strings(&entry["unknown_limits"]),
        ["cpu", "memory", "pids"],
        "{}",
        scan.seen(&c)
    );
    for kind in [
        "missing_memory_limit",
        "missing_cpu_limit",
        "missing_pids_limit",
    ] {
        assert_finding(&scan, &c, kind, None, false);
    }
    let warnings: Vec<&str> = scan.report["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let about_root: Vec<&&str> = warnings
        .iter()
        .filter(|w| w.contains(nowhere.path().to_str().unwrap()))
        .collect();
    assert_eq!(
        about_root.len(),
        1,
        "one warning about the cgroup root: {warnings:#?}"
    );
}

/// A pod's sandbox (the pause container) sits in the pod's cgroup beside the real container
/// and shares its namespaces. With hostNetwork both share the host's network namespace; only
/// the real container may be named in findings, once.
#[test]
fn pause_sandbox_is_not_a_container_of_the_pod() {
    require_containers!();
    let Some(pause) = build_pause() else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set, but gcc cannot build a static pause binary");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED pause_sandbox_is_not_a_container_of_the_pod: gcc cannot build a static pause binary\n"
        );
        return;
    };
    let image = Image::busybox_owned("sandbox");
    image.add_file("/pause", &std::fs::read(&pause).unwrap(), 0o755);
    let sandbox = ContainerSpec::new(&image)
        .qos(Qos::BestEffort)
        .runtime(RuntimeNaming::Bare)
        .host_network()
        .args(&["/pause"])
        .start();
    let app = ContainerSpec::new(&image)
        .qos(Qos::BestEffort)
        .runtime(RuntimeNaming::Bare)
        .pod_uid(&sandbox.pod_uid)
        .host_network()
        .start();
    let proc_root = FakeProc::with_pids(&[sandbox.init_pid, app.init_pid]);
    let scan = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);

    // Ground truth: one pod cgroup, both in the host's network namespace, the sandbox's one
    // process is /pause.
    assert_eq!(
        Path::new(&sandbox.cgroups_path).parent(),
        Path::new(&app.cgroups_path).parent()
    );
    let net = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let host = net(std::process::id() as i32);
    assert_eq!(net(sandbox.init_pid), host);
    assert_eq!(net(app.init_pid), host);
    assert_eq!(sandbox.pids(), [sandbox.init_pid]);
    assert_eq!(
        std::fs::read(format!("/proc/{}/cmdline", sandbox.init_pid)).unwrap(),
        b"/pause\0"
    );

    assert_eq!(
        scan.container(&sandbox)["sandbox"],
        true,
        "{}",
        scan.seen(&sandbox)
    );
    assert_eq!(
        scan.container(&app)["sandbox"],
        false,
        "{}",
        scan.seen(&app)
    );
    assert!(
        scan.findings_for(&sandbox.id).is_empty(),
        "no finding may name the sandbox: {:?}",
        scan.finding_kinds(&sandbox)
    );
    assert_eq!(
        scan.findings_of(&app.id, "host_network_namespace", None)
            .len(),
        1,
        "{}",
        scan.seen(&app)
    );
    let named_pod: Vec<&Value> = scan
        .findings()
        .iter()
        .filter(|f| f["kind"] == "host_network_namespace")
        .filter(|f| {
            [&sandbox.id, &app.id]
                .iter()
                .any(|id| f["container_id"] == id.as_str())
        })
        .collect();
    assert_eq!(
        named_pod.len(),
        1,
        "the pod's hostNetwork, once: {named_pod:#?}"
    );
}

/// kubelet's pause: a static binary that only waits for signals (as `build/pause` does).
fn build_pause() -> Option<std::path::PathBuf> {
    let dir = support::artifacts_dir();
    let bin = dir.join("pause");
    if bin.exists() {
        return Some(bin);
    }
    let src = dir.join(format!("pause-{}.c", std::process::id()));
    std::fs::write(
        &src,
        "#include <unistd.h>\nint main(void){for(;;)pause();}\n",
    )
    .ok()?;
    let tmp = dir.join(format!("pause-{}", std::process::id()));
    let out = support::cmd::run(
        "gcc",
        &["-static", "-Os", "-o", tmp.to_str()?, src.to_str()?],
    );
    let _ = std::fs::remove_file(&src);
    if !out.success() {
        eprintln!("cannot build pause:\n{out}");
        return None;
    }
    std::fs::rename(&tmp, &bin).ok()?;
    Some(bin)
}

/// A `Scanner` that scanned before (a daemon's warm state: command lines, namespaces, layers
/// kept per pid and start time) reports a container as a fresh one does, and sees a process
/// that execs in place. In the busybox image the shell's `exec sleep` keeps pid, start time
/// and even the `exe` link (`/bin/sh`: busybox re-executes itself for the applet); only what
/// the kernel replaces on every exec (the address space, `comm`) tells.
#[test]
fn a_warm_scanner_reports_what_a_fresh_one_does_after_an_exec_in_place() {
    use nodeguard_scan::{NoPods, ScanOptions, ScanScope, Scanner};
    require_containers!();
    let c = ContainerSpec::new(Image::busybox())
        .exec(&[
            "/bin/sh",
            "-c",
            "mkfifo /tmp/go && read x < /tmp/go && exec sleep 3600",
        ])
        .start();
    let shell = c.exec_pids[0];
    let cmdline = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
            })
            .unwrap_or_default()
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    // Through the container's root: overlayfs gives the fifo an inode (and pipe) of its own.
    let fifo = format!("/proc/{shell}/root/tmp/go");
    wait_until("the shell's fifo", &|| Path::new(&fifo).exists());

    let proc_root = FakeProc::with_pids(&c.pids());
    let mut options = ScanOptions::new(
        proc_root.path().to_path_buf(),
        "/sys/fs/cgroup".into(),
        "reconcile-test".into(),
    );
    if !support::host_pid1_readable() {
        options.collect.host_root = "/".into();
    }
    let policy = std::sync::Arc::new(nodeguard_policy::Policy::default());
    let scan = |scanner: &mut Scanner| {
        let report = scanner.scan(ScanScope::Processes, &NoPods).expect("a scan");
        serde_json::to_value(&report).expect("a report is JSON")
    };
    let process = |report: &Value, pid: i32| {
        report["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == pid).cloned())
            .unwrap_or_else(|| panic!("pid {pid} not in the report\n{report:#}"))
    };
    let mut warm = Scanner::new(options.clone(), std::sync::Arc::clone(&policy));
    let before = scan(&mut warm);
    assert!(
        process(&before, shell)["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains("mkfifo")),
        "{:#}",
        process(&before, shell)
    );

    std::fs::write(&fifo, b"go\n").unwrap();
    wait_until("the exec of sleep", &|| cmdline(shell) == "sleep 3600");
    let after = scan(&mut warm);
    let fresh = scan(&mut Scanner::new(options, policy));

    let p = process(&after, shell);
    let exe_after = std::fs::read_link(format!("/proc/{shell}/exe")).unwrap();
    assert_eq!(p["cmdline"], "sleep 3600", "{p:#}");
    assert_eq!(p["command"], "sleep", "{p:#}");
    assert_eq!(p["exe"], exe_after.to_str().unwrap(), "{p:#}");
    assert_eq!(
        p["sha256"],
        oracle::sha256sum(Path::new(&format!("/proc/{shell}/exe"))).as_str(),
        "{p:#}"
    );
    for part in ["processes", "containers", "findings"] {
        assert_eq!(
            after[part], fresh[part],
            "{part}: warm scan vs a fresh scanner"
        );
    }
}

/// Waits until `pid`'s command line (NUL-separated words joined by spaces) is `want`: a shell
/// that execs again keeps its executable, so `wait_for_exe` cannot tell.
fn wait_for_cmdline(pid: i32, want: &str) {
    support::wait_for(
        &format!("pid {pid} to run `{want}`"),
        std::time::Duration::from_secs(15),
        || {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ");
            if text == want {
                Ok(())
            } else {
                Err(format!("cmdline is {text:?}"))
            }
        },
    )
}

/// The fstype and per-mount options of the mount at `point` in `pid`'s mountinfo (the
/// kernel's word on it, not nodeguard's).
fn mount_at(pid: i32, point: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    text.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields.get(4) == Some(&point))
            .then(|| (fields[sep + 1].to_string(), fields[5].to_string()))
    })
}

/// What runs from outside the image besides the writable layer's executables is drift too:
/// a binary copied to a writable tmpfs (exec allowed) and run from there, and scripts dropped
/// in the writable layer or on the tmpfs and run through the image's shell (`sh PATH`, and
/// `./x.sh` with a shebang). Each is one `binary_drift` naming the file, with the digest
/// `sha256sum` gives for it. A script of the image run through sh, and `sh -c` (inline code,
/// no file), raise nothing.
#[test]
fn tmpfs_executables_and_dropped_scripts_are_drift() {
    require_containers!();
    let image = Image::busybox_owned("scripts");
    image.add_file(
        "/usr/local/bin/image.sh",
        b"#!/bin/sh\nsleep 3600\necho done\n",
        0o755,
    );
    let c = ContainerSpec::new(&image).tmpfs("/scratch").start();

    let tmpfs_exe = c.exec_detached(&[
        "/bin/sh",
        "-c",
        "cp /bin/busybox /scratch/busybox && exec /scratch/busybox sleep 3600",
    ]);
    c.wait_for_exact_exe(tmpfs_exe, "/scratch/busybox");
    let layer_script = c.exec_detached(&[
        "/bin/sh",
        "-c",
        "printf 'sleep 3600\\necho done\\n' > /tmp/x.sh && exec sh /tmp/x.sh",
    ]);
    wait_for_cmdline(layer_script, "sh /tmp/x.sh");
    let shebang = c.exec_detached(&[
        "/bin/sh",
        "-c",
        "mkdir -p /opt/run && printf '#!/bin/sh\\nsleep 3600\\necho done\\n' > /opt/run/y.sh \
         && chmod 755 /opt/run/y.sh && cd /opt/run && exec ./y.sh",
    ]);
    wait_for_cmdline(shebang, "/bin/sh ./y.sh");
    let tmpfs_script = c.exec_detached(&[
        "/bin/sh",
        "-c",
        "printf 'sleep 3600\\necho done\\n' > /scratch/z.sh && exec sh -e /scratch/z.sh",
    ]);
    wait_for_cmdline(tmpfs_script, "sh -e /scratch/z.sh");
    let image_script = c.exec_detached(&["/bin/sh", "/usr/local/bin/image.sh"]);
    wait_for_cmdline(image_script, "/bin/sh /usr/local/bin/image.sh");
    let inline = c.exec_detached(&["/bin/sh", "-c", "sleep 3600; echo done"]);
    wait_for_cmdline(inline, "/bin/sh -c sleep 3600; echo done");

    // The kernel's view: /scratch is a writable tmpfs in the container, not noexec.
    let (fstype, options) = mount_at(tmpfs_exe, "/scratch").expect("/scratch is mounted");
    assert_eq!(fstype, "tmpfs");
    assert!(
        options.split(',').any(|o| o == "rw") && !options.contains("noexec"),
        "{options}"
    );

    let proc_root = FakeProc::with_pids(&c.pids());
    let scan = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);
    let root_of = |pid: i32, path: &str| format!("/proc/{pid}/root{path}");
    // Ground truth digests: the files as the container sees them, and the writable layer's
    // copies as the host sees them.
    let expected = [
        (
            "/scratch/busybox",
            tmpfs_exe,
            oracle::sha256sum(Path::new(&format!("/proc/{tmpfs_exe}/exe"))),
        ),
        (
            "/tmp/x.sh",
            layer_script,
            oracle::sha256sum(&c.upper_dir.join("tmp/x.sh")),
        ),
        (
            "/opt/run/y.sh",
            shebang,
            oracle::sha256sum(&c.upper_dir.join("opt/run/y.sh")),
        ),
        (
            "/scratch/z.sh",
            tmpfs_script,
            oracle::sha256sum(Path::new(&root_of(tmpfs_script, "/scratch/z.sh"))),
        ),
    ];
    let drift = scan.findings_of(&c.id, "binary_drift", None);
    let mut paths: Vec<&str> = drift.iter().filter_map(|f| f["path"].as_str()).collect();
    paths.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|(p, ..)| *p).collect();
    want.sort_unstable();
    assert_eq!(
        paths,
        want,
        "one drift per file run from outside the image, none for the image's script or \
         `sh -c`\n{}",
        scan.seen(&c)
    );
    for (path, pid, digest) in &expected {
        let f = drift.iter().find(|f| f["path"] == *path).unwrap();
        assert_eq!(f["pid"], *pid, "{path}\n{}", scan.seen(&c));
        assert_eq!(f["severity"], "high", "{path}\n{}", scan.seen(&c));
        assert_eq!(f["sha256"], digest.as_str(), "{path}\n{}", scan.seen(&c));
    }
    let message = |path: &str| {
        drift.iter().find(|f| f["path"] == path).unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(message("/scratch/busybox").contains("writable tmpfs mount at /scratch"));
    assert!(message("/tmp/x.sh").contains("script /tmp/x.sh from the container's writable layer"));
    assert!(message("/scratch/z.sh").contains("writable tmpfs mount at /scratch"));

    // The process entries say where each came from.
    let p = scan.process(&c, tmpfs_exe);
    assert_eq!(
        p["exe_mount"]["mount_point"],
        "/scratch",
        "{}",
        scan.seen(&c)
    );
    assert_eq!(p["exe_mount"]["fstype"], "tmpfs", "{}", scan.seen(&c));
    let p = scan.process(&c, shebang);
    assert_eq!(p["script"]["path"], "/opt/run/y.sh", "{}", scan.seen(&c));
    assert!(p["script"].get("mount").is_none(), "{}", scan.seen(&c));
    let p = scan.process(&c, tmpfs_script);
    assert_eq!(
        p["script"]["mount"]["mount_point"],
        "/scratch",
        "{}",
        scan.seen(&c)
    );
    for quiet in [image_script, inline] {
        let p = scan.process(&c, quiet);
        assert!(p.get("script").is_none(), "pid {quiet}\n{}", scan.seen(&c));
        assert!(
            p.get("exe_mount").is_none(),
            "pid {quiet}\n{}",
            scan.seen(&c)
        );
    }

    // With only the DaemonSet's capabilities (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH: the
    // bounding set of its pod), the same files and digests are found.
    let mut args = vec![
        "--bounding-set=-all,+sys_ptrace,+dac_read_search",
        "--inh-caps=-all",
        "--",
        support::nodeguard_bin(),
        "scan",
        "-o",
        "json",
        "--no-fs",
        "--proc-root",
        proc_root.path_str(),
    ];
    if !support::host_pid1_readable() {
        args.extend_from_slice(&["--host-root", "/"]);
    }
    let narrow = support::cmd::run("setpriv", &args);
    assert!(matches!(narrow.code, Some(0 | 3)), "{narrow}");
    let report: Value = serde_json::from_str(&narrow.stdout).unwrap();
    let mut got: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "binary_drift" && f["container_id"] == c.id.as_str())
        .map(|f| (f["path"].to_string(), f["sha256"].to_string()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(p, _, d)| (format!("{p:?}"), format!("{d:?}")))
        .collect();
    want.sort();
    assert_eq!(got, want, "{narrow}");
    drop(c);
    drop(image);
}

/// A hostile container cannot point the script lookup outside itself or make it block: a
/// script reached through a symlink to an absolute path is the container's file at that path
/// (not the host's file of the same name, whose digest differs), and a shell reading a FIFO
/// named as its script neither hangs the scan nor is reported.
#[test]
fn script_lookup_stays_in_the_container_and_never_opens_a_fifo() {
    require_containers!();
    let host_dir = tempfile::Builder::new()
        .prefix("nodeguard-hostscript-")
        .tempdir()
        .unwrap();
    let host_file = host_dir.path().join("x.sh");
    std::fs::write(&host_file, "echo host file, not the container's\n").unwrap();
    let target = host_file.to_str().unwrap().to_string();

    let image = Image::busybox_owned("hostile-scripts");
    let c = ContainerSpec::new(&image).start();
    let linked = c.exec_detached(&[
        "/bin/sh",
        "-c",
        &format!(
            "mkdir -p {dir} && printf 'sleep 3600\\necho container\\n' > {target} \
             && ln -s {target} /tmp/link.sh && exec sh /tmp/link.sh",
            dir = host_dir.path().display()
        ),
    ]);
    wait_for_cmdline(linked, "sh /tmp/link.sh");
    let fifo = c.exec_detached(&["/bin/sh", "-c", "mkfifo /tmp/f.sh && exec sh /tmp/f.sh"]);
    wait_for_cmdline(fifo, "sh /tmp/f.sh");

    let proc_root = FakeProc::with_pids(&c.pids());
    let scan = Scan::run(&["--no-fs", "--proc-root", proc_root.path_str()]);
    let in_layer = c.upper_dir.join(target.trim_start_matches('/'));
    let want = oracle::sha256sum(&in_layer);
    assert_ne!(want, oracle::sha256sum(&host_file));
    let drift = scan.findings_of(&c.id, "binary_drift", None);
    assert_eq!(drift.len(), 1, "only the linked script\n{}", scan.seen(&c));
    assert_eq!(drift[0]["path"], target.as_str(), "{}", scan.seen(&c));
    assert_eq!(drift[0]["sha256"], want.as_str(), "{}", scan.seen(&c));
    assert_eq!(drift[0]["pid"], linked, "{}", scan.seen(&c));
    assert!(
        scan.process(&c, fifo).get("script").is_none(),
        "{}",
        scan.seen(&c)
    );
    drop(c);
    drop(image);
}
