//! Privileged containers of runtimes nobody on the team wrote, older than the kernel: Docker
//! 20.10 (Debian's `docker.io`, runc 1.1) under a `dockerd` of its own, and podman 4.3 with
//! crun 1.8. Part of the real-node tier: `tests/realnode/runtimes-up.sh` brings them up in a
//! directory of the test's (packages from `tests/realnode/build.sh`), `runtimes-down.sh`
//! removes everything when the test ends, panics included. One dockerd per test.
//!
//! `docker run --privileged` gives capabilities 0–37 only (`0000003ffeffffff`) where the
//! kernel has 0–40; the finding must still be one `privileged_container` per container, with
//! its capability and seccomp lines folded in. Expectations come from the runtimes
//! (`docker inspect` / `podman inspect`: `HostConfig.Privileged`, `State.Pid`) and the kernel
//! (`/proc/PID/status` `CapBnd`, the devices cgroup's `devices.list`, `findmnt`), never from
//! nodeguard. The scan runs with the DaemonSet's capabilities only (the bounding set of
//! `manifests/daemonset.yaml`'s securityContext, by `setpriv`), as on a node.
//!
//! Needs root and what `build.sh` installs; otherwise each test says why it skipped, and with
//! `CI` set it fails instead. Run: `cargo test -p nodeguard --test privileged_runtimes`.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::cmd::{self, Output};
use support::oracle;

fn say(text: &str) {
    // Straight to stderr: libtest captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/realnode")
        .join(name)
}

/// Why these tests cannot run here, if they cannot.
fn missing(commands: &[&str]) -> Option<String> {
    let uid = oracle::status_field(Path::new("/proc/self/status"), "Uid")?;
    if uid.split_whitespace().nth(1) != Some("0") {
        return Some("not root (dockerd, podman and runc need root)".into());
    }
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/local/sbin:/usr/sbin:/sbin";
    let absent: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|c| !path.split(':').any(|dir| Path::new(dir).join(c).is_file()))
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not installed (tests/realnode/build.sh installs them)",
            absent.join(", ")
        )
    })
}

/// Skips (or, under `CI`, fails) when `commands` cannot be had.
fn can_run(commands: &[&str]) -> bool {
    let Some(reason) = missing(commands) else {
        return true;
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so the real-node tests must run, but: {reason}");
    }
    say(&format!(
        "\n!!! SKIPPED {test}: {reason}\n!!! (with CI set this is a failure)\n"
    ));
    false
}

/// What `runtimes-up.sh` brought up; `runtimes-down.sh` on drop.
struct Runtimes {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Runtimes {
    /// `option`: `--no-podman` (Docker only) or `--no-docker` (podman/crun only).
    fn up(option: &str) -> Runtimes {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-rt-")
            .tempdir()
            .expect("tempdir");
        let mut runtimes = Runtimes {
            dir,
            env: BTreeMap::new(),
        };
        let mut command = Command::new("bash");
        command
            .arg(script("runtimes-up.sh"))
            .arg(option)
            .arg(runtimes.dir.path());
        let shown = format!(
            "tests/realnode/runtimes-up.sh {option} {}",
            runtimes.dir.path().display()
        );
        let out = cmd::run_command(command, shown, Duration::from_secs(180));
        assert!(out.success(), "bringing the runtimes up failed\n{out}");
        let text = std::fs::read_to_string(runtimes.dir.path().join("env")).expect("env");
        runtimes.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        runtimes
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from runtimes-up.sh's env"))
    }

    fn docker(&self, args: &[&str]) -> Output {
        let mut all = vec!["-H", self.var("RT_DOCKER_HOST")];
        all.extend_from_slice(args);
        cmd::run_ok("docker", &all)
    }

    fn podman(&self, args: &[&str]) -> Output {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.var("RT_PODMAN_CONTAINERS_CONF"))
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.var("RT_PODMAN_STORAGE_CONF"),
            )
            .args(self.var("RT_PODMAN_ARGS").split_whitespace())
            .args(args);
        let shown = format!("podman {} {}", self.var("RT_PODMAN_ARGS"), args.join(" "));
        cmd::run_command(command, shown, Duration::from_secs(120)).ok()
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        let mut command = Command::new("bash");
        command.arg(script("runtimes-down.sh")).arg(self.dir.path());
        let shown = format!(
            "tests/realnode/runtimes-down.sh {}",
            self.dir.path().display()
        );
        let out = cmd::run_command(command, shown, Duration::from_secs(180));
        if !out.success() {
            say(&format!("runtimes-down.sh failed\n{out}"));
        }
    }
}

/// The capabilities the DaemonSet's container adds (it drops all others), as `setpriv` spells
/// them: `sys_ptrace`.
fn daemonset_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("read manifests/daemonset.yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("daemonset.yaml is YAML");
    let container = &doc["spec"]["template"]["spec"]["containers"][0];
    let context = &container["securityContext"]["capabilities"];
    assert_eq!(
        context["drop"],
        serde_json::json!(["ALL"]),
        "the DaemonSet drops every capability it does not add"
    );
    context["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .filter_map(Value::as_str)
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// `nodeguard scan --no-fs -o json` with the DaemonSet's capabilities only.
fn scan() -> Value {
    let bounding: String = std::iter::once("-all".to_string())
        .chain(daemonset_capabilities().iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        "--bounding-set",
        &bounding,
        "--inh-caps=-all",
        support::nodeguard_bin(),
        "scan",
        "--no-fs",
        "--output",
        "json",
    ];
    if !support::host_pid1_readable() {
        args.extend_from_slice(&["--host-root", "/"]);
    }
    let out = cmd::run("setpriv", &args);
    assert!(
        matches!(out.code, Some(0) | Some(3)),
        "nodeguard scan failed\n{out}"
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("nodeguard scan printed no JSON report: {e}\n{out}"))
}

/// One container as its runtime describes it.
#[derive(Debug)]
struct Inspected {
    id: String,
    pid: i32,
    privileged: bool,
}

fn inspected(json: &str) -> Inspected {
    let v: Value = serde_json::from_str(json).expect("inspect prints JSON");
    let c = &v[0];
    Inspected {
        id: c["Id"].as_str().expect("Id").to_string(),
        pid: c["State"]["Pid"].as_i64().expect("State.Pid") as i32,
        privileged: c["HostConfig"]["Privileged"]
            .as_bool()
            .expect("HostConfig.Privileged"),
    }
}

/// The container's cgroup in the v1 devices hierarchy, from `/proc/PID/cgroup`.
fn devices_cgroup(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "devices")
            .then(|| path.to_string())
    })
}

fn findings_of<'a>(report: &'a Value, id: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .map(|all| all.iter().filter(|f| f["container_id"] == id).collect())
        .unwrap_or_default()
}

fn kinds(findings: &[&Value]) -> Vec<String> {
    findings
        .iter()
        .map(|f| format!("{}/{}", f["kind"].as_str().unwrap_or("?"), f["subject"]))
        .collect()
}

fn reported_container<'a>(report: &'a Value, c: &Inspected) -> &'a Value {
    report["containers"]
        .as_array()
        .and_then(|all| all.iter().find(|x| x["id"] == c.id.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "the scan does not report container {} (pid {}); /proc/{}/cgroup:\n{}",
                c.id,
                c.pid,
                c.pid,
                std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).unwrap_or_default()
            )
        })
}

/// What both runtimes must show: the privileged container is one `privileged_container`
/// (no capability or seccomp line of its own) and the plain one is not privileged.
fn check(report: &Value, runtime: &str, privileged: &Inspected, plain: &Inspected) {
    assert!(
        privileged.privileged && !plain.privileged,
        "{runtime} inspect: {privileged:?} {plain:?}"
    );
    let host = u64::from_str_radix(&oracle::proc_status(1, "CapBnd"), 16).unwrap_or(0);
    let held = u64::from_str_radix(&oracle::proc_status(privileged.pid, "CapBnd"), 16).unwrap_or(0);
    say(&format!(
        "{runtime}: privileged CapBnd {held:016x}, host {host:016x}"
    ));
    // Ground truth of "devices unrestricted" and "nothing masked", from the kernel.
    if let Some(path) = devices_cgroup(privileged.pid) {
        assert_eq!(
            oracle::devices_list(&path).as_deref(),
            Some("a *:* rwm"),
            "{runtime}: the privileged container's devices cgroup"
        );
        let plain_list = devices_cgroup(plain.pid)
            .and_then(|p| oracle::devices_list(&p))
            .unwrap_or_default();
        assert!(
            !plain_list.contains("a *:*"),
            "{runtime} plain: {plain_list}"
        );
        assert_eq!(
            reported_container(report, plain)["confinement"]["devices"],
            "restricted"
        );
        assert_eq!(
            reported_container(report, privileged)["confinement"]["devices"],
            "all"
        );
    }
    assert_eq!(oracle::runtime_masks(privileged.pid), Vec::<String>::new());
    let masks = oracle::runtime_masks(plain.pid);
    assert!(
        !masks.is_empty(),
        "{runtime}: the plain container shows no masks"
    );
    let reported = &reported_container(report, plain)["confinement"]["masked_paths"];
    let reported: Vec<String> = reported
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(reported, masks, "{runtime}: the plain container's masks");
    assert_eq!(
        reported_container(report, privileged)["confinement"]["masked_paths"],
        serde_json::json!([])
    );

    let found = findings_of(report, &privileged.id);
    let one: Vec<&&Value> = found
        .iter()
        .filter(|f| f["kind"] == "privileged_container")
        .collect();
    assert_eq!(
        one.len(),
        1,
        "{runtime}: one privileged_container for the --privileged container; its findings: {:?}",
        kinds(&found)
    );
    for folded in ["dangerous_capability", "seccomp_disabled"] {
        assert!(
            !found.iter().any(|f| f["kind"] == folded),
            "{runtime}: {folded} of the privileged container is not folded into its \
             privileged_container: {:?}",
            kinds(&found)
        );
    }
    let message = one[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("CAP_SYS_ADMIN") && message.contains("without a seccomp filter"),
        "{runtime}: {message}"
    );
    let missing = host & !held;
    if missing != 0 {
        for name in oracle::capsh_decode(&format!("{missing:016x}")) {
            assert!(
                message.contains(&name),
                "{runtime}: {name} not named in {message}"
            );
        }
    }
    let plain_found = findings_of(report, &plain.id);
    assert!(
        !plain_found
            .iter()
            .any(|f| f["kind"] == "privileged_container"),
        "{runtime}: the plain container is not privileged: {:?}",
        kinds(&plain_found)
    );
}

#[test]
fn docker_privileged_container_is_one_privileged_finding() {
    if !can_run(&["dockerd", "docker", "runc", "setpriv", "findmnt", "capsh"]) {
        return;
    }
    let rt = Runtimes::up("--no-podman");
    let image = rt.var("RT_IMAGE").to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-d", "--network", "none"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&image, "/bin/sleep", "3600"]);
        rt.docker(&args).stdout.trim().to_string()
    };
    let privileged = run(&["--privileged"]);
    let plain = run(&[]);
    let privileged = inspected(&rt.docker(&["inspect", &privileged]).stdout);
    let plain = inspected(&rt.docker(&["inspect", &plain]).stdout);
    // Docker 20.10 grants what it knows: 0-37, fewer than a 6.x kernel has.
    let held = oracle::proc_status(privileged.pid, "CapBnd");
    assert_eq!(
        u64::from_str_radix(&held, 16).unwrap_or(0) >> 38,
        0,
        "harness: Docker 20.10 is expected to grant no capability above CAP_AUDIT_READ ({held})"
    );
    let report = scan();
    for c in [&privileged, &plain] {
        assert_eq!(reported_container(&report, c)["runtime"], "docker");
    }
    check(&report, "docker", &privileged, &plain);
}

#[test]
fn podman_crun_privileged_container_is_one_privileged_finding() {
    if !can_run(&[
        "podman", "crun", "conmon", "unshare", "setpriv", "findmnt", "capsh",
    ]) {
        return;
    }
    let rt = Runtimes::up("--no-docker");
    let image = rt.var("RT_IMAGE").to_string();
    let parent = rt.var("RT_PODMAN_CGROUP_PARENT").to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-d", "--network", "none", "--cgroup-parent", &parent];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&image, "/bin/sleep", "3600"]);
        rt.podman(&args).stdout.trim().to_string()
    };
    let privileged = run(&["--privileged"]);
    let plain = run(&[]);
    let inspect = |id: &str| {
        let out = rt.podman(&["inspect", id]);
        let v: Value = serde_json::from_str(&out.stdout).expect("podman inspect prints JSON");
        assert_eq!(v[0]["OCIRuntime"], "crun", "{out}");
        inspected(&out.stdout)
    };
    let privileged = inspect(&privileged);
    let plain = inspect(&plain);
    let report = scan();
    for c in [&privileged, &plain] {
        assert_eq!(reported_container(&report, c)["runtime"], "podman");
    }
    check(&report, "podman/crun", &privileged, &plain);
}
