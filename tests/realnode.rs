//! The real-node tier: `nodeguard` against a stock kubelet v1.20.2 driving containerd 1.6's CRI
//! (cgroupfs driver), podman 4.3 and a real kube-apiserver v1.20.2 with RBAC, all brought up on
//! this machine by `tests/realnode/up.sh` (see `tests/realnode/README.md`).
//!
//! Every expectation comes from what those components say themselves: `kubectl get pod -o json`
//! (containerStatuses ids, qosClass, uid, the spec's limits), `podman inspect`, `ctr`, the cgroup
//! files the runtimes wrote, `/proc/PID/status`, and the Events the API server stored. Never
//! from nodeguard's own code.
//!
//! One bed serves the whole test binary: the first test that needs it builds it
//! (`tests/realnode/build.sh`, cached) and brings it up; it is torn down (`down.sh`) when the
//! test binary exits. The scan tests share one `nodeguard scan -o json`; the agent test runs
//! `nodeguard run` with the agent's token, bound only to `manifests/clusterrole.yaml`. Both run
//! as the DaemonSet runs the agent: root with only the capabilities `manifests/daemonset.yaml`
//! adds, and no_new_privs (`support::deployment::as_deployed`). One test runs the DaemonSet's
//! own pod on the kubelet, from the static binary as a one-file image.
//!
//! Needs root and what `build.sh` installs; otherwise each test says why it skipped, and with
//! `CI` set it fails instead. Run: `cargo test -p nodeguard --test realnode`.

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use support::agent::{Launch, StateDir};
use support::cmd::{self, Output};
use support::scan::Scan;
use support::wait_for;

/// Longest the build may take (cold: ~5 min on 2 idle cores; much more on a loaded machine).
const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Longest bringing the bed up may take (~30 s when idle).
const UP_TIMEOUT: Duration = Duration::from_secs(6 * 60);
/// The agent's process-scan interval in these tests.
const INTERVAL_SECS: u64 = 5;
/// Longest wait for the agent's first scan and first Events (a debug build, a loaded machine).
const FIRST_SCAN_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for something that takes a few scans.
const SCANS_TIMEOUT: Duration = Duration::from_secs(90);
/// The value cgroup v1 shows for "no memory limit" (PAGE_COUNTER_MAX pages of 4 KiB).
const V1_MEMORY_UNLIMITED: u64 = 9_223_372_036_854_771_712;

fn excerpt(text: &str) -> String {
    support::excerpt(text, 3000)
}

fn say(text: &str) {
    // Straight to stderr: libtest captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The bed.

/// A bed brought up by `up.sh`: its directory and the `REALNODE_*` variables of `DIR/env`.
struct Bed {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

static BED: OnceLock<Result<Bed, String>> = OnceLock::new();
/// The bed's directory, for the teardown at exit.
static BED_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/realnode")
        .join(name)
}

extern "C" fn teardown_at_exit() {
    let dir = BED_DIR.lock().ok().and_then(|mut d| d.take());
    if let Some(dir) = dir {
        let keep = std::env::var_os("NODEGUARD_REALNODE_KEEP").is_some();
        let mut command = Command::new("bash");
        command.arg(script("down.sh"));
        if keep {
            command.arg("--keep");
        }
        command.arg(&dir);
        let shown = format!("tests/realnode/down.sh {}", dir.display());
        let out = cmd::run_command(command, shown, Duration::from_secs(180));
        say(&format!(
            "realnode: bed at {} torn down (exit {:?}){}",
            dir.display(),
            out.code,
            out.stderr.trim()
        ));
    }
}

/// The bed, brought up on first use. Returns `None` (after saying why) when it cannot be had
/// here; panics instead when `CI` is set.
fn bed() -> Option<&'static Bed> {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test").to_string();
    match BED.get_or_init(bring_up) {
        Ok(bed) => Some(bed),
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set, so the real-node tests must run, but: {reason}");
            }
            say(&format!(
                "\n!!! SKIPPED {test}: {reason}\n!!! (with CI set this is a failure)\n"
            ));
            None
        }
    }
}

macro_rules! require_bed {
    () => {
        match bed() {
            Some(bed) => bed,
            None => return,
        }
    };
}

/// Tests that only look at the bed share it; tests that change it (pods created and deleted,
/// agents publishing Events) have it alone, so what one asserts is not another's doing.
static BED_USE: RwLock<()> = RwLock::new(());

fn looking() -> RwLockReadGuard<'static, ()> {
    BED_USE.read().unwrap_or_else(|e| e.into_inner())
}

fn changing() -> RwLockWriteGuard<'static, ()> {
    BED_USE.write().unwrap_or_else(|e| e.into_inner())
}

fn bring_up() -> Result<Bed, String> {
    let uid = support::oracle::status_field(Path::new("/proc/self/status"), "Uid")
        .ok_or("cannot read /proc/self/status")?;
    if uid.split_whitespace().nth(1) != Some("0") {
        return Err("not root (kubelet, containerd and podman need root)".into());
    }
    let start = Instant::now();
    let mut build = Command::new("bash");
    build.arg(script("build.sh"));
    let out = cmd::run_command(build, "tests/realnode/build.sh".into(), BUILD_TIMEOUT);
    if !out.success() {
        return Err(format!("the bed could not be built:\n{out}"));
    }
    say(&format!("realnode: build.sh took {:.1?}", start.elapsed()));
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("realnode");
    fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let dir = parent.join(format!("bed-{}", support::random_hex(4)));
    *BED_DIR.lock().unwrap() = Some(dir.clone());
    // SAFETY: registers a plain extern "C" function; libtest leaves through process::exit,
    // which runs atexit handlers, so the bed goes down after the last test, failed or not.
    unsafe {
        libc::atexit(teardown_at_exit);
    }
    let start = Instant::now();
    let mut up = Command::new("bash");
    up.arg(script("up.sh")).arg(&dir);
    let out = cmd::run_command(
        up,
        format!("tests/realnode/up.sh {}", dir.display()),
        UP_TIMEOUT,
    );
    if !out.success() {
        let logs = ["kubelet", "containerd", "apiserver", "etcd"]
            .iter()
            .map(|n| {
                let text = fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {n}.log (last 15 lines):\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        return Err(format!("the bed did not come up:\n{out}\n{logs}"));
    }
    say(&format!("realnode: up.sh took {:.1?}", start.elapsed()));
    let text = fs::read_to_string(dir.join("env")).map_err(|e| format!("read env: {e}"))?;
    let env = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    Ok(Bed { dir, env })
}

impl Bed {
    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {}/env", self.dir.display()))
    }

    fn node(&self) -> &str {
        self.var("REALNODE_NODE")
    }

    /// What the DaemonSet's downward API gives an agent: its namespace (where up.sh bound the
    /// shipped Lease Role to the agent's identity), so agents here keep their heartbeat Lease
    /// as deployed.
    fn agent_env(&self) -> Vec<(String, String)> {
        vec![(
            "POD_NAMESPACE".to_string(),
            self.var("REALNODE_AGENT_NAMESPACE").to_string(),
        )]
    }

    /// kubectl as the admin.
    fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = vec!["--kubeconfig", self.var("REALNODE_ADMIN_KUBECONFIG")];
        all.extend_from_slice(args);
        cmd::run(self.var("REALNODE_KUBECTL"), &all)
    }

    fn kubectl_json(&self, args: &[&str]) -> Value {
        let out = self.kubectl(args).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("kubectl printed no JSON ({e})\n{out}"))
    }

    fn kubectl_apply(&self, manifest: &Value) {
        let path = self
            .dir
            .join(format!("apply-{}.json", support::random_hex(4)));
        fs::write(&path, manifest.to_string()).unwrap();
        self.kubectl(&["apply", "-f", path.to_str().unwrap()]).ok();
    }

    /// Notes a pod's uid for `down.sh`, which removes the logs kubelet keeps of it in
    /// `/var/log/pods` (for pods deleted before the bed goes down).
    fn remember_pod_uid(&self, name: &str) {
        let uid = self.pod(name)["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pod-uids"))
            .expect("open pod-uids");
        let _ = writeln!(file, "{uid}");
    }

    fn pod(&self, name: &str) -> Value {
        self.kubectl_json(&["get", "pod", "-n", "realnode", name, "-o", "json"])
    }

    /// Every pod of the workload namespace, as the API server has them.
    /// The pods the shared [`scan`] could see: not being deleted, every container running
    /// since a second before the scan or earlier. A test that creates pods (`changing()`)
    /// deletes them without waiting, and one that runs after the shared scan starts pods it
    /// did not see: neither is the workload the scan is checked against.
    fn pods_seen_by(&self, scan: &Scan) -> Vec<Value> {
        let scanned_at = scan.report["scanned_at"].as_str().unwrap_or_default();
        // RFC 3339 in UTC, compared to the second.
        let second = |t: &str| t.get(..19).map(str::to_string);
        let scanned = second(scanned_at).expect("the report's scanned_at");
        self.pods()
            .into_iter()
            .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
            .filter(|pod| {
                let statuses = pod["status"]["containerStatuses"].as_array();
                statuses.is_some_and(|all| {
                    !all.is_empty()
                        && all.iter().all(|c| {
                            c["state"]["running"]["startedAt"]
                                .as_str()
                                .and_then(second)
                                .is_some_and(|started| started < scanned)
                        })
                })
            })
            .collect()
    }

    fn pods(&self) -> Vec<Value> {
        self.kubectl_json(&["get", "pods", "-n", "realnode", "-o", "json"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `podman ARGS...` with the bed's storage and configuration.
    fn podman(&self, args: &[&str]) -> Output {
        let mut command = Command::new("podman");
        let base: Vec<&str> = self.var("REALNODE_PODMAN_ARGS").split(' ').collect();
        command
            .args(&base)
            .args(args)
            .env(
                "CONTAINERS_CONF",
                self.var("REALNODE_PODMAN_CONTAINERS_CONF"),
            )
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.var("REALNODE_PODMAN_STORAGE_CONF"),
            );
        let mut all = base.clone();
        all.extend_from_slice(args);
        cmd::run_command(command, cmd::display("podman", &all), cmd::DEFAULT_TIMEOUT)
    }

    fn podman_inspect(&self, name: &str) -> Value {
        let out = self.podman(&["inspect", name]).ok();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("podman inspect printed no JSON ({e})\n{out}"));
        v[0].clone()
    }

    /// `ctr -n k8s.io ARGS...` against the bed's containerd.
    /// `ctr tasks exec --exec-id EXEC_ID ID COMMAND…`: runs `command` in the container's
    /// task, as `kubectl exec` does through containerd; returns when it exits.
    fn ctr_exec(&self, exec_id: &str, id: &str, command: &[&str]) -> Output {
        let mut args = vec!["tasks", "exec", "--exec-id", exec_id, id];
        args.extend_from_slice(command);
        self.ctr(&args)
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--address",
            self.var("REALNODE_CONTAINERD_SOCK"),
            "-n",
            "k8s.io",
        ];
        all.extend_from_slice(args);
        cmd::run("ctr", &all)
    }

    /// containerd's tasks: id → pid (`ctr tasks ls`), sandboxes included.
    fn ctr_tasks(&self) -> BTreeMap<String, i32> {
        let out = self.ctr(&["tasks", "ls"]).ok();
        out.stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let id = w.next()?.to_string();
                let pid = w.next()?.parse().ok()?;
                Some((id, pid))
            })
            .collect()
    }

    /// Ids of the pod sandboxes containerd runs (label `io.cri-containerd.kind=sandbox`).
    fn ctr_sandboxes(&self) -> BTreeSet<String> {
        let out = self
            .ctr(&[
                "containers",
                "ls",
                "-q",
                "labels.\"io.cri-containerd.kind\"==sandbox",
            ])
            .ok();
        out.stdout.lines().map(str::to_string).collect()
    }

    /// The podman workload's names, as `workload.sh` made them.
    fn podman_names(&self) -> [String; 2] {
        let prefix = self.var("REALNODE_PREFIX");
        [format!("{prefix}-pm-limits"), format!("{prefix}-pm-user")]
    }

    /// Whether a cgroup path (as /proc/PID/cgroup shows it) belongs to this bed.
    fn owns_cgroup(&self, cgroup: &str) -> bool {
        let prefix = self.var("REALNODE_PREFIX");
        cgroup.starts_with(&format!("/{prefix}/"))
            || cgroup.starts_with(&format!("/{prefix}-podman/"))
    }

    /// The containers of the report that live in this bed's cgroups (other engineers' runc
    /// containers may run on this machine too).
    fn report_containers<'a>(&self, scan: &'a Scan) -> Vec<&'a Value> {
        scan.containers()
            .iter()
            .filter(|c| c["cgroup"].as_str().is_some_and(|g| self.owns_cgroup(g)))
            .collect()
    }
}

/// `containerd://<id>` → `<id>` of every containerStatus of `pod`, by container name.
fn container_ids(pod: &Value) -> BTreeMap<String, String> {
    pod["status"]["containerStatuses"]
        .as_array()
        .map(|statuses| {
            statuses
                .iter()
                .filter_map(|s| {
                    let id = s["containerID"].as_str()?;
                    let id = id.strip_prefix("containerd://").unwrap_or_else(|| {
                        panic!(
                            "containerID {id} is not containerd's (pod {})",
                            pod["metadata"]["name"]
                        )
                    });
                    Some((s["name"].as_str()?.to_string(), id.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The only container id of pod `name`.
fn only_container_id(pod: &Value) -> String {
    let ids = container_ids(pod);
    assert_eq!(
        ids.len(),
        1,
        "expected one container in {}",
        pod["metadata"]["name"]
    );
    ids.into_values().next().unwrap()
}

/// Finds the directory `/sys/fs/cgroup/<controller>/<prefix>/...` named `leaf`.
fn cgroup_dir(controller: &str, top: &str, leaf: &str) -> Option<PathBuf> {
    fn walk(dir: &Path, leaf: &str, depth: usize) -> Option<PathBuf> {
        if depth > 5 {
            return None;
        }
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if !entry.file_type().ok()?.is_dir() {
                continue;
            }
            if entry.file_name().to_string_lossy() == leaf {
                return Some(path);
            }
            if let Some(found) = walk(&path, leaf, depth + 1) {
                return Some(found);
            }
        }
        None
    }
    walk(
        &Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(top.trim_start_matches('/')),
        leaf,
        0,
    )
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Limits the runtime wrote into cgroup directory `leaf` (v1 layout: memory, cpu, pids), as
/// the report writes them: bytes, cores, count; `None` = unlimited.
fn cgroup_limits(top: &str, leaf: &str) -> (Option<u64>, Option<f64>, Option<u64>) {
    let mem_dir = cgroup_dir("memory", top, leaf)
        .unwrap_or_else(|| panic!("no memory cgroup {leaf} under {top}"));
    let mem = read_u64(&mem_dir.join("memory.limit_in_bytes")).filter(|&m| m < V1_MEMORY_UNLIMITED);
    let cpu = cgroup_dir("cpu", top, leaf).and_then(|d| {
        let quota: i64 = fs::read_to_string(d.join("cpu.cfs_quota_us"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let period = read_u64(&d.join("cpu.cfs_period_us"))?;
        (quota > 0).then(|| quota as f64 / period as f64)
    });
    let pids = cgroup_dir("pids", top, leaf).and_then(|d| {
        let text = fs::read_to_string(d.join("pids.max")).ok()?;
        text.trim().parse().ok()
    });
    (mem, cpu, pids)
}

/// A Kubernetes quantity as bytes (`48Mi`, `64M`, plain) or cores (`100m`, `1`).
fn quantity(q: &str) -> f64 {
    let units: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("m", 1e-3),
        ("", 1.0),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            if let Ok(n) = n.parse::<f64>() {
                return n * factor;
            }
        }
    }
    panic!("unparsable quantity {q}")
}

// ---------------------------------------------------------------------------------------------
// One scan, shared.

static SCAN: OnceLock<Scan> = OnceLock::new();

/// `nodeguard scan -o json` of the bed with its workload running (one scan for all tests).
fn scan(bed: &Bed) -> &'static Scan {
    SCAN.get_or_init(|| {
        let _ = bed;
        deployed_scan(&["--no-fs"])
    })
}

/// `nodeguard scan --output json EXTRA...` run as the DaemonSet runs the agent (root with only
/// the manifest's capabilities, no_new_privs: `support::deployment::as_deployed`), so what
/// these tests see is what the shipped pod can see. Panics unless it exits 0 or 3 with a report.
fn deployed_scan(extra: &[&str]) -> Scan {
    let mut args = support::deployment::as_deployed();
    args.push(support::nodeguard_bin().to_string());
    args.extend(["scan", "--output", "json"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    if !extra.contains(&"--host-root") && !support::host_pid1_readable() {
        args.extend(["--host-root", "/"].map(String::from));
    }
    let output = cmd::run(&args[0], &args[1..]);
    if !matches!(output.code, Some(0) | Some(3)) {
        panic!("nodeguard scan failed\n{output}");
    }
    let report: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("nodeguard scan did not print a JSON report: {e}\n{output}"));
    Scan { output, report }
}

/// The report's entry for container `id`; panics with the bed's containers seen.
fn entry<'a>(bed: &Bed, scan: &'a Scan, id: &str, what: &str) -> &'a Value {
    scan.find_container(id).unwrap_or_else(|| {
        let seen: Vec<String> = bed
            .report_containers(scan)
            .iter()
            .map(|c| format!("{} {}", c["id"], c["cgroup"]))
            .collect();
        panic!(
            "the scan did not report {what} ({id}); this bed's containers in the report: {seen:#?}\n{}",
            scan.summary()
        )
    })
}

fn kinds_of(scan: &Scan, id: &str) -> Vec<String> {
    let mut kinds: Vec<String> = scan
        .findings_for(id)
        .iter()
        .map(|f| format!("{}:{}", f["kind"].as_str().unwrap_or("?"), f["subject"]))
        .collect();
    kinds.sort();
    kinds
}

// ---------------------------------------------------------------------------------------------
// Scan tests: attribution, runtime, pod, QoS, limits, sandboxes, privileged.

#[test]
fn cri_containers_are_attributed_to_containerd_with_their_pod_uid_and_qos() {
    let bed = require_bed!();
    let _shared = looking();
    let scan = scan(bed);
    let mut checked = 0;
    for pod in bed.pods_seen_by(scan) {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let qos = pod["status"]["qosClass"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        for (cname, id) in container_ids(&pod) {
            let c = entry(bed, scan, &id, &format!("pod {name} container {cname}"));
            let why = format!("pod {name} container {cname} ({id}): {c:#}");
            assert_eq!(c["runtime"], "containerd", "{why}");
            assert_eq!(c["pod_uid"], uid, "{why}");
            assert_eq!(c["qos"], qos.as_str(), "{why}");
            assert_eq!(c["cgroup_driver"], "cgroupfs", "{why}");
            checked += 1;
        }
    }
    assert!(
        checked >= 7,
        "only {checked} CRI containers in the workload"
    );
}

#[test]
fn pod_sandboxes_are_not_reported_as_containers() {
    let bed = require_bed!();
    let _shared = looking();
    let scan = scan(bed);
    let mut expected: BTreeSet<String> = bed
        .pods()
        .iter()
        .flat_map(|p| container_ids(p).into_values())
        .collect();
    for name in bed.podman_names() {
        let inspect = bed.podman_inspect(&name);
        expected.insert(inspect["Id"].as_str().unwrap().to_string());
    }
    // README: a sandbox is kept in `containers` with `"sandbox": true`; the rest are the
    // pods' and podman's containers.
    let ids_where = |sandbox: bool| -> BTreeSet<String> {
        bed.report_containers(scan)
            .iter()
            .filter(|c| c["sandbox"].as_bool() == Some(sandbox))
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect()
    };
    let reported = ids_where(false);
    let sandboxes = bed.ctr_sandboxes();
    assert!(!sandboxes.is_empty(), "ctr lists no sandboxes");
    let reported_sandboxes: Vec<&String> = sandboxes.intersection(&reported).collect();
    assert!(
        reported_sandboxes.is_empty(),
        "pod sandboxes (pause) reported as containers: {reported_sandboxes:?}\n{}",
        scan.summary()
    );
    assert_eq!(
        ids_where(true),
        sandboxes,
        "the report's containers marked sandbox (left) are not the sandboxes ctr lists (right)\n{}",
        scan.summary()
    );
    let sandbox_findings: Vec<&Value> = scan
        .findings()
        .iter()
        .filter(|f| {
            f["container_id"]
                .as_str()
                .is_some_and(|id| sandboxes.contains(id))
        })
        .collect();
    assert!(
        sandbox_findings.is_empty(),
        "findings about sandboxes: {}",
        excerpt(&format!("{sandbox_findings:#?}"))
    );
    assert_eq!(
        reported,
        expected,
        "the report's containers in this bed (left) are not the containerStatuses ids plus \
         podman's (right)\n{}",
        scan.summary()
    );
}

#[test]
fn limits_are_the_containers_and_pods_own_as_written_in_the_cgroups_and_the_spec() {
    let bed = require_bed!();
    let _shared = looking();
    let scan = scan(bed);
    let top = bed.var("REALNODE_CGROUP_PREFIX");
    for pod in bed.pods_seen_by(scan) {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let specs = pod["spec"]["containers"].as_array().unwrap();
        let ids = container_ids(&pod);
        let (pod_mem, pod_cpu, pod_pids) = cgroup_limits(top, &format!("pod{uid}"));
        for spec in specs {
            let cname = spec["name"].as_str().unwrap();
            let id = &ids[cname];
            let c = entry(bed, scan, id, &format!("pod {name} container {cname}"));
            let why = format!("pod {name} container {cname} ({id}): {c:#}");
            let (mem, cpu, pids) = cgroup_limits(top, id);
            // The oracle agrees with itself: the spec's limit is what containerd wrote.
            let spec_mem = spec["resources"]["limits"]["memory"].as_str().map(quantity);
            assert_eq!(
                mem.map(|m| m as f64),
                spec_mem,
                "cgroup vs spec memory: {why}"
            );
            assert_eq!(c["limits"]["memory_bytes"].as_u64(), mem, "memory: {why}");
            assert_eq!(c["limits"]["pids"].as_u64(), pids, "pids: {why}");
            match (c["limits"]["cpu_cores"].as_f64(), cpu) {
                (None, None) => {}
                (Some(a), Some(b)) if (a - b).abs() < 1e-3 => {}
                (a, b) => panic!("cpu_cores {a:?}, cgroup says {b:?}: {why}"),
            }
            assert_eq!(
                c["pod_limits"]["memory_bytes"].as_u64(),
                pod_mem,
                "pod memory: {why}"
            );
            assert_eq!(
                c["pod_limits"]["pids"].as_u64(),
                pod_pids,
                "pod pids: {why}"
            );
            let _ = pod_cpu;
            // Effective: the tighter of the container's and the pod's own, never the node's
            // allocatable on kubepods or the QoS-class cgroup.
            let effective = [mem, pod_mem].into_iter().flatten().min();
            assert_eq!(
                c["effective_limits"]["memory_bytes"].as_u64(),
                effective,
                "effective memory: {why}"
            );
        }
    }
}

#[test]
fn a_best_effort_pod_is_missing_its_memory_and_pids_limits() {
    let bed = require_bed!();
    let _shared = looking();
    let scan = scan(bed);
    let pod = bed.pod("besteffort");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    let id = only_container_id(&pod);
    let top = bed.var("REALNODE_CGROUP_PREFIX");
    // What kubelet wrote above the pod: node allocatable on kubepods.
    let (node_mem, _, _) = cgroup_limits(top, "kubepods");
    assert!(
        node_mem.is_some(),
        "kubelet set no memory limit on {top}/kubepods"
    );
    let c = entry(bed, scan, &id, "the besteffort container");
    assert!(
        c["effective_limits"]["memory_bytes"].is_null(),
        "node allocatable ({node_mem:?} on kubepods) counted as the container's limit: {c:#}"
    );
    for kind in ["missing_memory_limit", "missing_pids_limit"] {
        assert!(
            !scan.findings_of(&id, kind, None).is_empty(),
            "no {kind} for the BestEffort pod's container {id}; its findings: {:?}\n{c:#}",
            kinds_of(scan, &id)
        );
    }
    // And the Guaranteed pod, whose limits are set, is not missing its memory limit.
    let g = only_container_id(&bed.pod("guaranteed"));
    assert!(
        scan.findings_of(&g, "missing_memory_limit", None)
            .is_empty(),
        "missing_memory_limit for the Guaranteed pod: {:?}",
        kinds_of(scan, &g)
    );
}

#[test]
fn a_privileged_pod_gets_privileged_container_and_added_capabilities_are_dangerous() {
    let bed = require_bed!();
    let _shared = looking();
    let scan = scan(bed);
    let tasks = bed.ctr_tasks();
    let privileged = only_container_id(&bed.pod("privileged"));
    // The oracle: the container's process's bounding set equals pid 1's (the node's own).
    let pid = tasks[&privileged];
    let bnd = support::oracle::status_field(Path::new(&format!("/proc/{pid}/status")), "CapBnd");
    let host_bnd = support::oracle::status_field(Path::new("/proc/self/status"), "CapBnd");
    assert_eq!(
        bnd, host_bnd,
        "the privileged container's bounding set is not the host's"
    );
    assert!(
        !scan
            .findings_of(&privileged, "privileged_container", None)
            .is_empty(),
        "no privileged_container for the privileged: true pod ({privileged}); its findings: {:?}",
        kinds_of(scan, &privileged)
    );
    for other in ["besteffort", "netadmin", "guaranteed"] {
        let id = only_container_id(&bed.pod(other));
        assert!(
            scan.findings_of(&id, "privileged_container", None)
                .is_empty(),
            "privileged_container for the unprivileged pod {other}"
        );
    }
    let netadmin = only_container_id(&bed.pod("netadmin"));
    let eff = support::oracle::status_field(
        Path::new(&format!("/proc/{}/status", tasks[&netadmin])),
        "CapEff",
    )
    .unwrap();
    let decoded = support::oracle::capsh_decode(&eff);
    for cap in ["CAP_NET_ADMIN", "CAP_SYS_TIME"] {
        assert!(decoded.contains(&cap.to_string()), "capsh says {decoded:?}");
        assert!(
            !scan
                .findings_of(&netadmin, "dangerous_capability", Some(cap))
                .is_empty(),
            "no dangerous_capability {cap} for the netadmin pod; its findings: {:?}",
            kinds_of(scan, &netadmin)
        );
    }
}

#[test]
fn a_two_container_pod_is_two_containers_of_one_pod() {
    let bed = require_bed!();
    let _shared = looking();
    let scan = scan(bed);
    let pod = bed.pod("two");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let ids = container_ids(&pod);
    assert_eq!(ids.len(), 2, "{pod:#}");
    for (cname, id) in &ids {
        let c = entry(bed, scan, id, &format!("container {cname} of pod two"));
        assert_eq!(c["pod_uid"], uid, "{c:#}");
        let procs: Vec<&Value> = scan
            .processes()
            .iter()
            .filter(|p| p["container_id"] == id.as_str())
            .collect();
        let pid = bed.ctr_tasks()[id];
        assert!(
            procs.iter().any(|p| p["pid"] == pid),
            "container {cname}: ctr says pid {pid}; the report's processes of it: {procs:?}"
        );
    }
}

#[test]
fn podman_containers_are_attributed_to_podman_with_their_limits_capabilities_and_user() {
    let bed = require_bed!();
    let _shared = looking();
    let scan = scan(bed);
    let top = bed.var("REALNODE_PODMAN_CGROUP_PARENT");
    for name in bed.podman_names() {
        let inspect = bed.podman_inspect(&name);
        let id = inspect["Id"].as_str().unwrap();
        let c = entry(bed, scan, id, &format!("podman container {name}"));
        let why = format!("podman {name} ({id}): {c:#}");
        assert_eq!(c["runtime"], "podman", "{why}");
        assert!(c["pod_uid"].is_null(), "{why}");
        let hc = &inspect["HostConfig"];
        let (mem, cpu, pids) = cgroup_limits(top, &format!("libpod-{id}"));
        assert_eq!(
            mem,
            hc["Memory"].as_u64(),
            "podman inspect vs cgroup memory: {why}"
        );
        assert_eq!(c["limits"]["memory_bytes"].as_u64(), mem, "memory: {why}");
        assert_eq!(c["limits"]["pids"].as_u64(), pids, "pids: {why}");
        assert_eq!(
            pids,
            hc["PidsLimit"].as_u64(),
            "podman inspect vs cgroup pids: {why}"
        );
        if let Some(nano) = hc["NanoCpus"].as_u64().filter(|&n| n > 0) {
            let cores = c["limits"]["cpu_cores"].as_f64().unwrap_or(-1.0);
            assert!((cores - nano as f64 / 1e9).abs() < 1e-3, "cpu: {why}");
            assert!(
                (cpu.unwrap() - nano as f64 / 1e9).abs() < 1e-3,
                "cgroup cpu vs inspect"
            );
        }
        let pid = inspect["State"]["Pid"].as_i64().unwrap();
        let p = scan
            .find_process(pid as i32)
            .unwrap_or_else(|| panic!("podman's pid {pid} of {name} not in the report"));
        assert_eq!(p["container_id"], id, "{p:#}");
        let user = inspect["Config"]["User"].as_str().unwrap_or("");
        let status_uid =
            support::oracle::status_field(Path::new(&format!("/proc/{pid}/status")), "Uid")
                .and_then(|u| u.split_whitespace().nth(1).map(str::to_string))
                .unwrap();
        assert_eq!(p["uid"].to_string(), status_uid, "{p:#}");
        let root_findings = scan.findings_of(id, "runs_as_root", None);
        if user.starts_with("1000") {
            assert_eq!(status_uid, "1000");
            assert!(
                root_findings.is_empty(),
                "runs_as_root for --user {user}: {why}"
            );
        } else {
            assert!(
                !root_findings.is_empty(),
                "no runs_as_root for a root podman container: {why}"
            );
        }
        let added: Vec<String> = inspect["HostConfig"]["CapAdd"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for cap in added {
            let cap = if cap.starts_with("CAP_") {
                cap
            } else {
                format!("CAP_{cap}")
            };
            assert!(
                !scan
                    .findings_of(id, "dangerous_capability", Some(&cap))
                    .is_empty(),
                "no dangerous_capability {cap} for podman --cap-add: {:?}",
                kinds_of(scan, id)
            );
        }
    }
}

#[test]
fn a_cgroup_root_pointing_at_nothing_raises_no_missing_limit_findings() {
    let bed = require_bed!();
    let _shared = looking();
    let nothing = bed.dir.join("no-cgroups-here");
    let scan = deployed_scan(&["--no-fs", "--cgroup-root", nothing.to_str().unwrap()]);
    let ours: BTreeSet<String> = bed
        .pods()
        .iter()
        .flat_map(|p| container_ids(p).into_values())
        .collect();
    let missing: Vec<&Value> = scan
        .findings()
        .iter()
        .filter(|f| {
            f["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("missing_"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "limits that could not be read were reported missing: {}",
        excerpt(&format!("{missing:#?}"))
    );
    // Still a scan of the bed's containers, not an empty report.
    let seen = scan
        .containers()
        .iter()
        .filter(|c| c["id"].as_str().is_some_and(|i| ours.contains(i)))
        .count();
    assert_eq!(seen, ours.len(), "{}", scan.summary());
}

// ---------------------------------------------------------------------------------------------
// The agent against the real API server.

/// `KUBECONFIG=<agent kubeconfig> setpriv <the DaemonSet's capabilities> nodeguard run --kube
/// on ...` (support::agent runs it: killed on drop, its log printed when the test failed), with
/// this test's questions.
struct Agent(support::agent::Agent);

impl std::ops::Deref for Agent {
    type Target = support::agent::Agent;
    fn deref(&self) -> &support::agent::Agent {
        &self.0
    }
}

impl Agent {
    /// Started, and its first scan done.
    fn start(bed: &Bed, name: &str, state_dir: Option<&Path>) -> Agent {
        Agent::start_every(bed, name, state_dir, &format!("{INTERVAL_SECS}s"))
    }

    /// [`Agent::start`] with a process scan every `interval`.
    fn start_every(bed: &Bed, name: &str, state_dir: Option<&Path>, interval: &str) -> Agent {
        let args = [
            "--node-name",
            bed.node(),
            "--interval",
            interval,
            "--fs-interval",
            "10m",
            // A process's image verdict moves once from `indexing` to its final state, which
            // rewrites reports these tests hold must stay unchanged; image verification has
            // its own tests on this bed (tests/realnode/image_verification.rs).
            "--image-verify=false",
        ];
        let mut how = Launch {
            kubeconfig: Some(PathBuf::from(bed.var("REALNODE_AGENT_KUBECONFIG"))),
            state_dir: state_dir.map_or(StateDir::None, |d| StateDir::At(d.to_path_buf())),
            log: Some(bed.dir.join(format!("agent-{name}.log"))),
            http_timeout: Some(Duration::from_secs(10)),
            env: bed.agent_env(),
            ..Launch::default()
        };
        // Root with only the capabilities the DaemonSet grants, no_new_privs: what these
        // tests claim is what the shipped pod does.
        how.wrapper = support::deployment::as_deployed();
        let agent = Agent(support::agent::Agent::launch(&args, how));
        agent.wait_ready(FIRST_SCAN_TIMEOUT);
        agent
    }

    fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.0.get(path).map(|r| (r.status, r.body))
    }

    fn findings(&self) -> Result<Vec<Value>, String> {
        let (status, body) = self.get("/v1/findings")?;
        if status != 200 {
            return Err(format!("/v1/findings: {status}"));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(v["findings"].as_array().cloned().unwrap_or_default())
    }

    /// Full process scans completed, from `nodeguard_scans_total`. Not the report's
    /// `scanned_at`: exec-driven passes publish new reports between scans too.
    fn full_scans(&self) -> Result<u64, String> {
        let (_, body) = self.get("/metrics")?;
        let sample = "nodeguard_scans_total{scan_type=\"processes\",result=\"success\"} ";
        body.lines()
            .find_map(|l| l.strip_prefix(sample))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| format!("no {sample}in /metrics"))
    }

    /// Waits for `n` more full process scans.
    fn wait_scans(&self, n: usize) {
        let start = self.full_scans().unwrap_or(0);
        wait_for(&format!("{n} more full scans"), SCANS_TIMEOUT, || {
            let now = self.full_scans()?;
            if now >= start + n as u64 {
                Ok(now)
            } else {
                Err(format!("{} of {n} so far", now.saturating_sub(start)))
            }
        });
    }

    /// Waits (up to [`SCANS_TIMEOUT`]) until the agent's Event queue is empty; whether it was.
    fn drain_events(&self) -> bool {
        let deadline = Instant::now() + SCANS_TIMEOUT;
        while Instant::now() < deadline {
            if self.events_queued() == Ok(0) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// Events the agent has queued, from its `nodeguard_events_queued` gauge.
    fn events_queued(&self) -> Result<u64, String> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix("nodeguard_events_queued "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "no nodeguard_events_queued".to_string())
    }

    fn stop(self) {
        self.0.terminate(Duration::from_secs(15));
    }
}

/// A host process running an executable deleted after it started: a host finding
/// (`deleted_executable`) whose Events regard the Node.
struct Ghost {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Ghost {
    fn start() -> Ghost {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-realnode-ghost-")
            .tempdir()
            .unwrap();
        let exe = dir.path().join("busybox-ghost");
        let busybox = support::image::busybox_binary().expect("busybox (build.sh installs it)");
        fs::copy(&busybox, &exe).unwrap();
        let child = Command::new(&exe)
            .args(["sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let link = format!("/proc/{}/exe", child.id());
        wait_for(
            "the ghost to exec",
            Duration::from_secs(10),
            || match fs::read_link(&link) {
                Ok(t) if t == exe => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        fs::remove_file(&exe).unwrap();
        Ghost { child, _dir: dir }
    }
}

impl Drop for Ghost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stored Event as `events.k8s.io/v1` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    namespace: String,
    name: String,
    reason: String,
    type_: String,
    kind: String,
    regarding: String,
    uid: String,
    /// `regarding.fieldPath`: nodeguard puts the finding id there (`...findings{ID}`).
    field: String,
    count: u64,
    note: String,
}

/// nodeguard's Events stored by the API server (all namespaces).
fn nodeguard_events(bed: &Bed) -> Vec<Ev> {
    let v = bed.kubectl_json(&["get", "events.v1.events.k8s.io", "-A", "-o", "json"]);
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["reportingController"] == "nodeguard")
        .map(|e| Ev {
            namespace: e["metadata"]["namespace"].as_str().unwrap_or("").into(),
            name: e["metadata"]["name"].as_str().unwrap_or("").into(),
            reason: e["reason"].as_str().unwrap_or("").into(),
            type_: e["type"].as_str().unwrap_or("").into(),
            kind: e["regarding"]["kind"].as_str().unwrap_or("").into(),
            regarding: e["regarding"]["name"].as_str().unwrap_or("").into(),
            uid: e["regarding"]["uid"].as_str().unwrap_or("").into(),
            field: e["regarding"]["fieldPath"].as_str().unwrap_or("").into(),
            // A core/v1 Event's `count` shows as `deprecatedCount` (no `series`): adding
            // the two counted every Event twice.
            count: e["series"]["count"]
                .as_u64()
                .or_else(|| e["deprecatedCount"].as_u64())
                .unwrap_or(1),
            note: e["note"].as_str().unwrap_or("").into(),
        })
        .collect()
}

fn show(events: &[Ev]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{}/{} {} {} {}/{} x{}: {}",
                e.namespace, e.name, e.type_, e.reason, e.kind, e.regarding, e.count, e.note
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn pod_manifest(bed: &Bed, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "realnode"},
        "spec": {
            "nodeName": bed.node(), "hostNetwork": true, "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "main", "image": bed.var("REALNODE_BUSYBOX_IMAGE"),
                "imagePullPolicy": "Never", "command": ["sleep", "86400"],
                "resources": {"limits": {"memory": "32Mi", "cpu": "50m"}},
            }],
        },
    })
}

/// Log lines telling of an RBAC denial. The API server's 403 always says `Forbidden`; a bare
/// "403" would also match finding ids, digests and pids.
fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .collect()
}

/// Failures of the steps of one long test, collected so that one broken step does not hide
/// the others; the test fails at its end with all of them.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let msg = msg();
            say(&format!("realnode: FAILED CHECK: {msg}"));
            self.failed.push(msg);
        }
    }

    /// Polls `probe` like [`wait_for`], but records the failure instead of panicking.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            match probe() {
                Ok(v) => return Some(v),
                Err(last) if Instant::now() >= deadline => {
                    self.check(false, || {
                        format!("gave up after {timeout:?} waiting for {what}; last seen: {last}")
                    });
                    return None;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn finish(self, agent_logs: &[&Path]) {
        if self.failed.is_empty() {
            return;
        }
        for log in agent_logs {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            say(&format!(
                "--- {} (last 40 lines):\n{}",
                log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
        panic!(
            "{} check(s) failed:\n\n{}",
            self.failed.len(),
            self.failed.join("\n\n")
        );
    }
}

/// Waits until `pred` holds for nodeguard's Events (recording a failure when it does not).
fn wait_events(
    checks: &mut Checks,
    bed: &Bed,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Ev]) -> bool,
) -> Option<Vec<Ev>> {
    checks.wait(what, timeout, || {
        let events = nodeguard_events(bed);
        if pred(&events) {
            Ok(events)
        } else {
            Err(format!("nodeguard's Events:\n{}", show(&events)))
        }
    })
}

#[test]
fn the_agent_publishes_events_the_real_api_server_accepts_and_stays_quiet_across_restarts() {
    let bed = require_bed!();
    let _alone = changing();
    let state = bed.dir.join("agent-state");
    fs::create_dir_all(&state).unwrap();
    let mut checks = Checks::default();
    let ghost = Ghost::start();
    let agent = Agent::start(bed, "first", Some(&state));
    let first_log = agent.log_path().to_path_buf();
    let privileged = bed.pod("privileged");
    let privileged_uid = privileged["metadata"]["uid"].as_str().unwrap().to_string();

    // 1. Pods' findings reach Events regarding the right Pod (uid included), which
    //    `kubectl describe pod` shows. Every pod is hostNetwork, so each has findings.
    let workload = [
        "besteffort",
        "burstable",
        "guaranteed",
        "privileged",
        "netadmin",
        "two",
    ];
    let events = wait_events(
        &mut checks,
        bed,
        "Warning Events regarding each of the workload's pods",
        FIRST_SCAN_TIMEOUT,
        |evs| {
            workload.iter().all(|p| {
                evs.iter()
                    .any(|e| e.kind == "Pod" && e.regarding == *p && e.type_ == "Warning")
            })
        },
    )
    .unwrap_or_else(|| nodeguard_events(bed));
    let of_privileged: Vec<&Ev> = events
        .iter()
        .filter(|e| e.regarding == "privileged")
        .collect();
    for e in &of_privileged {
        checks.check(e.uid == privileged_uid && e.namespace == "realnode", || {
            format!("an Event about pod privileged names uid {} in {} (the pod: {privileged_uid} in realnode)", e.uid, e.namespace)
        });
    }
    let reasons: BTreeSet<&str> = of_privileged.iter().map(|e| e.reason.as_str()).collect();
    let described = bed
        .kubectl(&["describe", "pod", "-n", "realnode", "privileged"])
        .ok();
    for reason in &reasons {
        checks.check(described.stdout.contains(reason), || {
            format!("kubectl describe pod privileged does not show {reason}\n{described}")
        });
    }
    checks.check(!reasons.is_empty(), || {
        "no Event about pod privileged to look for in kubectl describe".into()
    });
    checks.check(reasons.contains("PrivilegedContainer"), || {
        format!(
            "no PrivilegedContainer Event for the privileged: true pod; its reasons: {reasons:?}"
        )
    });

    // The agent runs as deployed, Lease included: with POD_NAMESPACE and the shipped Lease
    // Role bound in it (up.sh), its heartbeat Lease is in the real API server.
    let lease_ns = bed.var("REALNODE_AGENT_NAMESPACE");
    let lease_name = format!("nodeguard-{}", bed.node());
    let lease = bed.kubectl(&["-n", lease_ns, "get", "lease", &lease_name, "-o", "json"]);
    let lease: Value = serde_json::from_str(&lease.stdout).unwrap_or(Value::Null);
    checks.check(
        lease["metadata"]["annotations"]["nodeguard.io/node"] == bed.node()
            && lease["spec"]["renewTime"].is_string(),
        || {
            format!(
                "no renewed Lease {lease_ns}/{lease_name} naming node {}: {lease}",
                bed.node()
            )
        },
    );
    // No Event names a container that is not in the pod's spec (a sandbox's id).
    let names: BTreeSet<String> = bed
        .pods()
        .iter()
        .flat_map(|p| container_ids(p).into_values())
        .map(|id| id[..12].to_string())
        .collect();
    for sandbox in bed.ctr_sandboxes() {
        let short = &sandbox[..12];
        let about: Vec<&Ev> = events.iter().filter(|e| e.note.contains(short)).collect();
        checks.check(about.is_empty(), || {
            format!(
                "Events name the sandbox {short} (containers: {names:?}):\n{}",
                show(&about.into_iter().cloned().collect::<Vec<_>>())
            )
        });
    }

    // 2. Host findings (the ghost's deleted executable) reach Events regarding the Node.
    let node = bed.node().to_string();
    let node_events = wait_events(
        &mut checks,
        bed,
        "an Event regarding the Node",
        SCANS_TIMEOUT,
        |evs| evs.iter().any(|e| e.kind == "Node" && e.regarding == node),
    );
    if node_events.is_some() {
        let core = bed.kubectl_json(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.kind=Node,involvedObject.name={node}"),
            "-o",
            "json",
        ]);
        checks.check(core["items"].as_array().is_some_and(|a| !a.is_empty()), || {
            format!("kubectl get events --field-selector involvedObject.kind=Node shows none: {core}")
        });
    }

    // 3. A pod created while the agent runs gets its Event within two intervals.
    bed.kubectl_apply(&pod_manifest(bed, "late"));
    bed.remember_pod_uid("late");
    wait_for("pod late Running", Duration::from_secs(90), || {
        let pod = bed.pod("late");
        pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            .as_str()
            .map(|_| ())
            .ok_or_else(|| format!("{}", pod["status"]))
    });
    // Two intervals (+10% jitter), plus the time of one scan and one Event write.
    let bound = Duration::from_secs(INTERVAL_SECS * 2 + INTERVAL_SECS / 5 + 15);
    wait_events(
        &mut checks,
        bed,
        "a Warning Event regarding the pod created while the agent runs",
        bound,
        |evs| {
            evs.iter()
                .any(|e| e.regarding == "late" && e.type_ == "Warning")
        },
    );

    // 4. A deleted pod's findings resolve (kubelet stops its containers; the Resolved Event
    //    does not wait for the API object to go): once its container is gone, at the next
    //    full scan, exec-read processes included (their history stays in /v1/execs).
    // The start-up backlog (every workload pod's and the node's findings, sent at the
    // node-wide 1/s) is let drain too, so that what is timed is the resolution, not the
    // queue: step 3 showed a new pod's Events do not wait behind it.
    agent.wait_scans(1);
    if !agent.drain_events() {
        say("realnode: the first agent's Event queue did not drain before the pod was deleted");
    }
    bed.kubectl(&["delete", "pod", "-n", "realnode", "late", "--wait=false"])
        .ok();
    wait_events(
        &mut checks,
        bed,
        "a ...Resolved Event regarding the deleted pod",
        SCANS_TIMEOUT,
        |evs| {
            evs.iter().any(|e| {
                e.regarding == "late" && e.type_ == "Normal" && e.reason.ends_with("Resolved")
            })
        },
    );

    // 5. The agent needs no RBAC beyond the ClusterRole.
    let log = agent.log_text();
    let denied = forbidden_lines(&log);
    checks.check(denied.is_empty(), || {
        format!(
            "the agent (with --state-dir) met 403s:\n{}",
            denied.join("\n")
        )
    });

    // 6. Quiet after a restart: no finding's Event is sent again. Findings the first agent
    //    had not announced yet (its queue drains at the node-wide 1/s; other beds on this
    //    machine add findings regarding the Node) are owed, not repeats: let the queue drain
    //    first, and judge repeats by finding id.
    if !agent.drain_events() {
        say("realnode: the first agent's Event queue did not drain; the restart check counts only repeats");
    }
    agent.stop();
    let before = nodeguard_events(bed);
    let agent = Agent::start(bed, "restarted", Some(&state));
    let restarted_log = agent.log_path().to_path_buf();
    agent.wait_scans(3);
    std::thread::sleep(Duration::from_secs(2));
    let after = nodeguard_events(bed);
    // One finding's Event: the object, the reason and the field path naming the finding id.
    let about = |e: &Ev| {
        (
            e.namespace.clone(),
            e.regarding.clone(),
            e.reason.clone(),
            e.field.clone(),
        )
    };
    let announced: BTreeSet<_> = before
        .iter()
        .filter(|e| e.field.contains("findings{"))
        .map(about)
        .collect();
    let repeated: Vec<Ev> = after
        .iter()
        .filter(|e| !before.contains(e) && announced.contains(&about(e)))
        .cloned()
        .collect();
    checks.check(repeated.is_empty(), || {
        format!(
            "a restarted agent (same --state-dir) sent findings' Events again:\n{}",
            show(&repeated)
        )
    });
    let owed: Vec<Ev> = after
        .iter()
        .filter(|e| !before.contains(e) && !announced.contains(&about(e)))
        .cloned()
        .collect();
    if !owed.is_empty() {
        // Not announced before the restart (queued, waiting for pod metadata, or summaries
        // not yet due): sent once, by the restarted agent.
        say(&format!(
            "realnode: the restarted agent sent what its predecessor still owed:\n{}",
            show(&owed)
        ));
    }
    agent.stop();

    // 7. Without --state-dir: no 403 either (no cluster-wide Event list), also while it
    //    announces a new pod's findings and their resolution.
    let agent = Agent::start(bed, "stateless", None);
    let stateless_log = agent.log_path().to_path_buf();
    bed.kubectl_apply(&pod_manifest(bed, "late2"));
    bed.remember_pod_uid("late2");
    wait_events(
        &mut checks,
        bed,
        "a Warning Event regarding a pod created while the agent without --state-dir runs",
        SCANS_TIMEOUT,
        |evs| {
            evs.iter()
                .any(|e| e.regarding == "late2" && e.type_ == "Warning")
        },
    );
    // As in step 4: a full scan has seen it, and this agent's start-up backlog (it has no
    // state, so it announces everything again) has drained.
    agent.wait_scans(1);
    if !agent.drain_events() {
        say("realnode: the stateless agent's Event queue did not drain before late2 was deleted");
    }
    bed.kubectl(&["delete", "pod", "-n", "realnode", "late2", "--wait=false"])
        .ok();
    wait_events(
        &mut checks,
        bed,
        "a ...Resolved Event regarding late2 from the agent without --state-dir",
        SCANS_TIMEOUT,
        |evs| {
            evs.iter().any(|e| {
                e.regarding == "late2" && e.type_ == "Normal" && e.reason.ends_with("Resolved")
            })
        },
    );
    agent.wait_scans(2);
    let log = agent.log_text();
    let denied = forbidden_lines(&log);
    checks.check(denied.is_empty(), || {
        format!(
            "the agent without --state-dir met 403s:\n{}",
            denied.join("\n")
        )
    });
    agent.stop();
    drop(ghost);
    checks.finish(&[&first_log, &restarted_log, &stateless_log]);
}

#[test]
fn a_setuid_file_planted_in_a_running_containers_writable_layer_is_seen_within_a_scan_interval() {
    let bed = require_bed!();
    let _alone = changing();
    let id = only_container_id(&bed.pod("burstable"));
    let agent = Agent::start(bed, "setuid", None);
    let planted = format!("/tmp/planted-{}", support::random_hex(3));
    bed.ctr_exec(
        "plant",
        &id,
        &[
            "sh",
            "-c",
            &format!("cp /bin/busybox {planted} && chmod 4755 {planted}"),
        ],
    )
    .ok();
    let seen = |f: &Value| {
        f["kind"] == "setuid_file"
            && f["container_id"] == id.as_str()
            && f["path"] == planted.as_str()
    };
    // Two process-scan intervals; the filesystem interval is 10 minutes.
    let bound = Duration::from_secs(INTERVAL_SECS * 3 + 10);
    wait_for(&format!("setuid_file {planted} in {id}"), bound, || {
        let all = agent.findings()?;
        if all.iter().any(seen) {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                all.iter()
                    .filter(|f| f["container_id"] == id.as_str())
                    .map(|f| format!("{}:{}", f["kind"], f["subject"]))
                    .collect::<Vec<_>>()
            ))
        }
    });
    bed.ctr_exec("unplant", &id, &["rm", "-f", &planted]).ok();
    wait_for(&format!("setuid_file {planted} to resolve"), bound, || {
        let all = agent.findings()?;
        if all.iter().any(seen) {
            Err("still open".into())
        } else {
            Ok(())
        }
    });
    agent.stop();
}

/// Exec-time detection on the real node: with process scans an hour apart, a binary copied
/// into a pod's writable layer and run there (through containerd, as `kubectl exec` does) is
/// `binary_drift` on `/v1/findings` within seconds, named by the pod kubelet runs it in, and
/// stays reported after it exits. Ground truth: the container id and pod names from
/// `kubectl get pod -o json`, the path the test chose.
#[test]
fn a_binary_dropped_and_run_in_a_pod_is_drift_at_its_exec_named_by_its_pod() {
    let bed = require_bed!();
    let _alone = changing();
    let pod = bed.pod("burstable");
    let id = only_container_id(&pod);
    let agent = Agent::start_every(bed, "exec", None, "1h");
    let exec_source = "nodeguard_exec_events_source{source=\"netlink\"}";
    assert_eq!(agent.metric(exec_source), Some(1.0), "exec events on");
    // A full scan can also find the binary; one runs only after lost exec events (interval
    // 1h). On a loaded machine the kernel's socket can overrun: then the attempt cannot tell
    // which path found it and is made again with a new binary. A full scan without a loss
    // fails the test.
    let lost = || {
        agent
            .metric("nodeguard_exec_events_lost_total")
            .unwrap_or(0.0)
    };
    for attempt in 1..=3 {
        // `/metrics` is rendered at most once a second (CachedEncoder): the counts below are
        // read from a page rendered after this point.
        std::thread::sleep(Duration::from_millis(1100));
        let scans_before = agent.full_scans().expect("scans counted");
        let lost_before = lost();
        // busybox runs the applet named by argv[1] when its own name starts with `busybox`.
        let dropped = format!("/tmp/busybox-dropped-{}", support::random_hex(3));
        let exec_id = format!("drop-{}", support::random_hex(3));
        let script = format!("cp /bin/busybox {dropped} && exec {dropped} sleep 1");
        // The exec returns when the process exits: run it beside the polling.
        let runner = {
            let (exec_id, id) = (exec_id.clone(), id.clone());
            let ctr = move || bed.ctr_exec(&exec_id, &id, &["sh", "-c", &script]);
            std::thread::spawn(ctr)
        };
        let drift = |f: &Value| {
            f["kind"] == "binary_drift"
                && f["container_id"] == id.as_str()
                && f["path"] == dropped.as_str()
        };
        let found = wait_for(
            &format!("binary_drift of {dropped} in {id}"),
            Duration::from_secs(10),
            || {
                let all = agent.findings()?;
                all.iter().find(|f| drift(f)).cloned().ok_or_else(|| {
                    format!(
                        "{:?}",
                        all.iter()
                            .filter(|f| f["container_id"] == id.as_str())
                            .map(|f| format!("{}:{}", f["kind"], f["subject"]))
                            .collect::<Vec<_>>()
                    )
                })
            },
        );
        assert_eq!(found["namespace"], pod["metadata"]["namespace"], "{found}");
        assert_eq!(found["pod"], pod["metadata"]["name"], "{found}");
        assert_eq!(
            found["container_name"], pod["spec"]["containers"][0]["name"],
            "{found}"
        );
        let scans_after = agent.full_scans().expect("scans counted");
        let out = runner.join().expect("the exec thread");
        assert!(out.success(), "ctr tasks exec failed\n{out}");
        // Gone now, still reported as it was read (exec retention).
        let still = agent.findings().expect("findings");
        assert!(still.iter().any(drift), "{still:?}");
        bed.ctr_exec(&format!("{exec_id}-rm"), &id, &["rm", "-f", &dropped])
            .ok();
        if scans_after == scans_before {
            agent.stop();
            return;
        }
        let lost_after = lost();
        assert!(
            lost_after > lost_before,
            "a full scan ran ({scans_before} -> {scans_after}) with no exec event lost: the finding may not have come from the exec"
        );
        eprintln!(
            "attempt {attempt}: exec events were lost ({lost_before} -> {lost_after}) and a full scan ran: trying again"
        );
    }
    panic!("every attempt met lost exec events and a full scan: the exec path was not shown");
}

/// A pod created and deleted while the agent runs: a short-lived binary dropped and run in it
/// (drift, read at its exec) keeps its finding open while the pod runs, and once `kubectl`
/// says the pod is gone, every finding of its container leaves `/v1/findings` at the next
/// full scan, not `--exec-retention` (5 minutes) later. What the process was and raised is
/// still answered by the exec history (`/v1/execs?since=10m`), named by the pod kubelet ran
/// it in. Ground truth: the container id and names from `kubectl get pod -o json`, the path
/// the test chose, and kubectl saying the pod is gone.
#[test]
fn a_deleted_pods_findings_resolve_at_the_next_scan_and_its_execs_stay_in_the_history() {
    let bed = require_bed!();
    let _alone = changing();
    let agent = Agent::start(bed, "fleeting", None);
    let name = format!("fleeting-{}", support::random_hex(3));
    bed.kubectl_apply(&pod_manifest(bed, &name));
    bed.remember_pod_uid(&name);
    wait_for(
        &format!("pod {name} Running"),
        Duration::from_secs(90),
        || {
            let pod = bed.pod(&name);
            pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                .as_str()
                .map(|_| ())
                .ok_or_else(|| format!("{}", pod["status"]))
        },
    );
    let pod = bed.pod(&name);
    let id = only_container_id(&pod);
    let dropped = format!("/tmp/busybox-brief-{}", support::random_hex(3));
    let script = format!("cp /bin/busybox {dropped} && exec {dropped} sleep 1");
    let out = bed.ctr_exec(
        &format!("brief-{}", support::random_hex(3)),
        &id,
        &["sh", "-c", &script],
    );
    assert!(out.success(), "ctr tasks exec failed\n{out}");
    let drift = |f: &Value| {
        f["kind"] == "binary_drift" && f["container_id"] == id.as_str() && f["path"] == dropped
    };
    // The process has exited; a full scan later its finding is still open (the pod runs).
    agent.wait_scans(1);
    let open = agent.findings().expect("findings");
    assert!(
        open.iter().any(drift),
        "the exited process's drift while its pod runs: {open:?}"
    );

    bed.kubectl(&["delete", "pod", "-n", "realnode", &name, "--wait=false"])
        .ok();
    wait_for(
        &format!("kubectl to say pod {name} is gone"),
        Duration::from_secs(90),
        || {
            let out = bed.kubectl(&["get", "pod", "-n", "realnode", &name, "-o", "name"]);
            if !out.success() && out.stderr.contains("NotFound") {
                Ok(())
            } else {
                Err(format!("{out}"))
            }
        },
    );
    // The next full scan (one that started after the pod went: the second to complete).
    agent.wait_scans(2);
    let left: Vec<Value> = agent
        .findings()
        .expect("findings")
        .into_iter()
        .filter(|f| f["container_id"] == id.as_str())
        .collect();
    assert!(
        left.is_empty(),
        "findings of the deleted pod's container are still open: {left:?}"
    );

    let history = agent.get_json("/v1/execs?since=10m");
    let execs = history["execs"].as_array().cloned().unwrap_or_default();
    let seen = execs
        .iter()
        .find(|o| o["exe"] == dropped.as_str() && o["container_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no observation of {dropped} in /v1/execs: {history}"));
    assert_eq!(seen["pod"]["name"], pod["metadata"]["name"], "{seen}");
    assert_eq!(
        seen["pod"]["namespace"], pod["metadata"]["namespace"],
        "{seen}"
    );
    assert!(
        seen["findings"]
            .as_array()
            .is_some_and(|fs| fs.iter().any(|f| f["kind"] == "binary_drift")),
        "the history says what it raised: {seen}"
    );
    assert_eq!(
        history["count"].as_u64(),
        Some(execs.len() as u64),
        "{history}"
    );
    // The same through the CLI, filtered by the pod.
    let cli = agent.query_cli(&["execs", "--since", "10m", "--pod", &name]);
    let cli_execs = cli["execs"].as_array().cloned().unwrap_or_default();
    assert!(
        cli_execs.iter().any(|o| o["exe"] == dropped.as_str()),
        "nodeguard query execs --pod {name}: {cli}"
    );
    assert!(
        cli_execs.iter().all(|o| o["pod"]["name"] == name.as_str()),
        "only the pod's: {cli}"
    );
    agent.stop();
}

/// The operator's node: hundreds of open low findings waiting for the node-wide Event budget
/// (one a second) when a high one appears. Twelve pods each with 20 setuid files planted in
/// their writable layers (a policy makes every kind low but `binary_drift`, and the agent
/// sends Events for low findings too, `--event-min-severity low`), so their Events queue up;
/// then a binary dropped and run in the first pod, whose 25 Events of budget the lows took,
/// is `binary_drift` (high). Its Event is stored by the real API server within an interval
/// or two, while hundreds still wait. Ground truth: the Events the API server stored
/// (`kubectl get events`), the pod names kubectl gave, the agent's own queue gauge only to
/// show how much was waiting.
#[test]
fn a_new_high_finding_reaches_the_api_server_before_hundreds_of_waiting_low_ones() {
    let bed = require_bed!();
    let _alone = changing();
    let mut checks = Checks::default();
    let crowd: Vec<String> = (0..12)
        .map(|i| format!("crowd-{i:02}-{}", support::random_hex(2)))
        .collect();
    for name in &crowd {
        bed.kubectl_apply(&pod_manifest(bed, name));
        bed.remember_pod_uid(name);
    }
    let mut ids = BTreeMap::new();
    for name in &crowd {
        let pod = wait_for(
            &format!("pod {name} Running"),
            Duration::from_secs(120),
            || {
                let pod = bed.pod(name);
                pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                    .as_str()
                    .map(|_| pod.clone())
                    .ok_or_else(|| format!("{}", pod["status"]))
            },
        );
        let id = only_container_id(&pod);
        let plant = "for i in $(seq 1 20); do cp /bin/busybox /tmp/suid-$i && chmod 4755 /tmp/suid-$i; done";
        let out = bed.ctr_exec(
            &format!("plant-{}", support::random_hex(3)),
            &id,
            &["sh", "-c", plant],
        );
        assert!(out.success(), "planting in {name} failed\n{out}");
        ids.insert(name.clone(), id);
    }
    let kinds = [
        "dangerous_capability",
        "privileged_container",
        "missing_memory_limit",
        "missing_cpu_limit",
        "missing_pids_limit",
        "runs_as_root",
        "no_new_privs_disabled",
        "seccomp_disabled",
        "host_pid_namespace",
        "host_network_namespace",
        "host_ipc_namespace",
        "host_uts_namespace",
        "deleted_executable",
        "setuid_file",
        "setgid_file",
        "file_capability",
        "unexpected_binary_hash",
        "denied_binary",
        "unverifiable_binary",
        "filesystem_scan_incomplete",
    ];
    let policy = bed
        .dir
        .join(format!("policy-crowd-{}.yaml", support::random_hex(3)));
    let overrides: String = kinds.iter().map(|k| format!("    {k}: low\n")).collect();
    fs::write(
        &policy,
        format!("version: 1\nchecks:\n  severity:\n{overrides}"),
    )
    .unwrap();
    let args = [
        "--node-name",
        bed.node(),
        "--interval",
        "5s",
        "--fs-interval",
        "10m",
        "--event-min-severity",
        "low",
        "--config",
        policy.to_str().unwrap(),
    ];
    let agent = Agent(support::agent::Agent::launch(
        &args,
        Launch {
            kubeconfig: Some(PathBuf::from(bed.var("REALNODE_AGENT_KUBECONFIG"))),
            log: Some(bed.dir.join("agent-crowd.log")),
            http_timeout: Some(Duration::from_secs(10)),
            env: bed.agent_env(),
            ..Launch::default()
        },
    ));
    agent.wait_ready(FIRST_SCAN_TIMEOUT);

    // The backlog: every crowd pod's setuid files open, hundreds of Events queued.
    let queued = checks.wait("hundreds of Events queued", SCANS_TIMEOUT, || {
        let open = agent.findings()?;
        let planted = open
            .iter()
            .filter(|f| f["kind"] == "setuid_file" && f["severity"] == "low")
            .filter(|f| ids.values().any(|id| f["container_id"] == id.as_str()))
            .count();
        let queued = agent.events_queued()?;
        if planted >= 12 * 20 && queued >= 200 {
            Ok(queued)
        } else {
            Err(format!(
                "{planted} planted setuid findings open, {queued} Events queued"
            ))
        }
    });
    say(&format!(
        "realnode: {queued:?} Events queued before the high finding"
    ));

    // A binary dropped and run in the first crowd pod: high, on a pod whose budget is spent.
    let first = &crowd[0];
    let id = ids[first].clone();
    let dropped = format!("/tmp/busybox-crowd-{}", support::random_hex(3));
    let script = format!("cp /bin/busybox {dropped} && exec {dropped} sleep 60");
    let runner = {
        let (id, exec_id) = (id.clone(), format!("drift-{}", support::random_hex(3)));
        std::thread::spawn(move || bed.ctr_exec(&exec_id, &id, &["sh", "-c", &script]))
    };
    let planted_at = Instant::now();
    let bound = Duration::from_secs(INTERVAL_SECS * 2 + 5);
    let seen = wait_events(
        &mut checks,
        bed,
        &format!("a BinaryDrift Event regarding pod {first}"),
        bound,
        |evs| {
            evs.iter()
                .any(|e| e.reason == "BinaryDrift" && e.regarding == *first && e.type_ == "Warning")
        },
    );
    if let Some(events) = seen {
        let waited = planted_at.elapsed();
        let still = agent.events_queued().unwrap_or(0);
        say(&format!(
            "realnode: BinaryDrift stored {waited:?} after the exec, {} of nodeguard's Events stored, {still} still queued",
            events.len()
        ));
        checks.check(still >= 100, || {
            format!("the backlog should still wait behind the high finding: {still} queued")
        });
        checks.check(
            events
                .iter()
                .all(|e| e.reason != "SetuidFile" || e.type_ == "Warning"),
            || "no setuid file resolved meanwhile".into(),
        );
    }
    for name in &crowd {
        bed.kubectl(&["delete", "pod", "-n", "realnode", name, "--wait=false"])
            .ok();
    }
    let _ = runner.join();
    agent.stop();
    checks.finish(&[&bed.dir.join("agent-crowd.log")]);
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet's own pod on the real kubelet.

/// A Pod made from the DaemonSet's pod template in `manifests/daemonset.yaml`, changed only where
/// this bed forces it: the node (no scheduler), the image (imported, never pulled), the two
/// ports (hostNetwork shares the machine's ports with concurrent beds and tests), the
/// service-account token by hostPath and the API server's address (no token controller), the
/// state hostPath (a temp dir), and the AppArmor setting as the annotation v1.20 reads (it
/// predates `securityContext.appArmorProfile`; this kernel has no AppArmor anyway).
/// securityContext, capabilities, hostPID, hostNetwork, probes, resources and args are the
/// template's.
fn daemonset_pod(
    bed: &Bed,
    name: &str,
    image: &str,
    ports: [u16; 2],
    token_dir: &Path,
    state_dir: &Path,
) -> Value {
    let ds = support::deployment::daemonset();
    let template = &ds["spec"]["template"];
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": template["metadata"].clone(),
        "spec": template["spec"].clone(),
    });
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = ds["metadata"]["namespace"].clone();
    let spec = &mut pod["spec"];
    spec["nodeName"] = json!(bed.node());
    let container = &mut spec["containers"][0];
    let container_name = container["name"].as_str().unwrap().to_string();
    container["image"] = json!(image);
    container["imagePullPolicy"] = json!("Never");
    let shipped: Vec<u64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(shipped.len(), 2, "the API and probe ports: {shipped:?}");
    let moved = |text: &str| {
        let mut text = text.to_string();
        for (old, new) in shipped.iter().zip(ports) {
            text = text.replace(&format!(":{old}"), &format!(":{new}"));
        }
        text
    };
    for (port, new) in container["ports"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(ports)
    {
        port["containerPort"] = json!(new);
    }
    for arg in container["args"].as_array_mut().expect("args") {
        *arg = json!(moved(arg.as_str().unwrap()));
    }
    let api = bed.var("REALNODE_APISERVER");
    let api_port = api.rsplit(':').next().unwrap().to_string();
    let env = container["env"].as_array_mut().expect("env");
    for var in env.iter_mut() {
        if let Some(value) = var["value"].as_str() {
            var["value"] = json!(moved(value));
        }
    }
    env.push(json!({"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}));
    env.push(json!({"name": "KUBERNETES_SERVICE_PORT", "value": api_port}));
    container["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "bed-token", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        }));
    let sc = &mut container["securityContext"];
    let apparmor = sc["appArmorProfile"]["type"].as_str().map(str::to_string);
    sc.as_object_mut().unwrap().remove("appArmorProfile");
    if let Some(profile) = apparmor {
        assert_eq!(
            profile, "Unconfined",
            "teach this test the annotation for {profile}"
        );
        pod["metadata"]["annotations"] = json!({
            format!("container.apparmor.security.beta.kubernetes.io/{container_name}"): "unconfined"
        });
    }
    let volumes = pod["spec"]["volumes"].as_array_mut().expect("volumes");
    for volume in volumes.iter_mut() {
        if volume["name"] == "state" {
            volume["hostPath"]["path"] = json!(state_dir);
        }
    }
    volumes.push(json!({
        "name": "bed-token",
        "hostPath": {"path": token_dir, "type": "Directory"},
    }));
    pod
}

/// `curl` as a client the agent has never seen: TLS verified against the certificate the
/// agent serves, the bed's admin token. Returns the body of a 200.
fn curl_agent(port: u16, cert: &Path, token: &str, path: &str) -> Result<String, String> {
    let url = format!("https://127.0.0.1:{port}{path}");
    let header = format!("Authorization: Bearer {token}");
    let out = cmd::run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            cert.to_str().unwrap(),
            "-H",
            &header,
            &url,
        ],
    );
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(format!("curl {url}: {}", out.stderr.trim()))
    }
}

/// Deletes the DaemonSet pod (and what its agent published about its own namespace) when
/// the test ends, failed or not.
struct DaemonSetPod<'a> {
    bed: &'a Bed,
    namespace: String,
    name: String,
}

impl Drop for DaemonSetPod<'_> {
    fn drop(&mut self) {
        let ns = self.namespace.as_str();
        let _ = self.bed.kubectl(&[
            "delete",
            "pod",
            "-n",
            ns,
            &self.name,
            "--wait=true",
            "--timeout=60s",
        ]);
        let _ = self.bed.kubectl(&[
            "delete",
            "policyreports.wgpolicyk8s.io",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/managed-by=nodeguard",
        ]);
    }
}

/// The shipped DaemonSet's pod on the real kubelet, with the capabilities its manifest grants
/// and nothing else changed that the bed does not force: it is Ready, its start-up log (the
/// file kubelet wrote) and `nodeguard_exec_events_source` (over TLS, as a client with the
/// admin token) both say netlink, the kernel's own view of the agent process
/// (`/proc/PID/status` of every thread) shows CAP_NET_ADMIN only in the bounding set, and a
/// binary dropped and run in another pod is `binary_drift` on its `/v1/findings` with no
/// process scan between the exec and the finding. Ground truth: `kubectl get pod -o json`,
/// `ctr tasks ls` (the pid), `/proc`, `/var/log/pods`, the path the test chose.
#[test]
fn the_daemonsets_own_pod_reads_execs_as_they_happen_holding_only_what_it_needs() {
    let bed = require_bed!();
    let _alone = changing();
    let dir = bed
        .dir
        .join(format!("daemonset-{}", support::random_hex(3)));
    fs::create_dir_all(&dir).unwrap();

    // The image: the static binary as its only file, as the Dockerfile's final stage has it.
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let binary = support::deployment::static_binary();
    fs::copy(binary, rootfs.join("nodeguard")).expect("copy the static binary");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(rootfs.join("nodeguard"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let image = format!("localhost/{}/nodeguard:test", bed.var("REALNODE_PREFIX"));
    let tarball = dir.join("nodeguard-image.tar");
    cmd::run(
        "python3",
        &[
            script("oci-image.py").to_str().unwrap(),
            rootfs.to_str().unwrap(),
            &image,
            tarball.to_str().unwrap(),
            "/nodeguard",
        ],
    )
    .ok();
    bed.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        tarball.to_str().unwrap(),
    ])
    .ok();

    // What the pod mounts: the ConfigMap (applied as shipped), a token dir, a state dir.
    let namespace = support::deployment::daemonset()["metadata"]["namespace"]
        .as_str()
        .expect("the DaemonSet's namespace")
        .to_string();
    if !bed.kubectl(&["get", "namespace", &namespace]).success() {
        bed.kubectl(&["create", "namespace", &namespace]).ok();
    }
    let configmap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/configmap.yaml");
    bed.kubectl(&["apply", "-f", configmap.to_str().unwrap()])
        .ok();
    let token_dir = dir.join("serviceaccount");
    fs::create_dir_all(&token_dir).unwrap();
    fs::write(token_dir.join("token"), bed.var("REALNODE_AGENT_TOKEN")).unwrap();
    fs::copy(bed.var("REALNODE_CA"), token_dir.join("ca.crt")).unwrap();
    fs::write(token_dir.join("namespace"), &namespace).unwrap();
    let state_dir = dir.join("state");
    let ports = [support::http::free_port(), support::http::free_port()];
    let name = format!("nodeguard-{}", support::random_hex(3));
    let manifest = daemonset_pod(bed, &name, &image, ports, &token_dir, &state_dir);
    bed.kubectl_apply(&manifest);
    let _pod = DaemonSetPod {
        bed,
        namespace: namespace.clone(),
        name: name.clone(),
    };

    // 1. Running and Ready, as the API server has it, never restarted.
    let pod = wait_for(
        &format!("pod {namespace}/{name} Ready"),
        Duration::from_secs(180),
        || {
            let pod = bed.kubectl_json(&["get", "pod", "-n", &namespace, &name, "-o", "json"]);
            let ready = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                Ok(pod)
            } else {
                Err(format!("{}", pod["status"]))
            }
        },
    );
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(bed.dir.join("pod-uids"))
            .expect("open pod-uids");
        let _ = writeln!(file, "{uid}");
    }
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(pod["status"]["phase"], "Running", "{}", pod["status"]);
    assert_eq!(status["restartCount"], 0, "{status}");
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true, "{spec}");
    assert_eq!(spec["hostNetwork"], true, "{spec}");
    let template = &support::deployment::daemonset()["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["securityContext"]["capabilities"],
        template["containers"][0]["securityContext"]["capabilities"],
        "the pod's capabilities are the manifest's"
    );
    let id = status["containerID"]
        .as_str()
        .and_then(|c| c.strip_prefix("containerd://"))
        .unwrap_or_else(|| panic!("no containerd id: {status}"))
        .to_string();
    let pid = *bed
        .ctr_tasks()
        .get(&id)
        .unwrap_or_else(|| panic!("containerd runs no task {id}"));

    // 2. The kernel's view of every thread of the agent: the manifest's capabilities bound it,
    //    and CAP_NET_ADMIN, used to subscribe, is gone from every set it could act with.
    let added = support::deployment::added_capabilities();
    let bounding = support::deployment::capability_mask(&added);
    let kept: Vec<&String> = added.iter().filter(|c| *c != "NET_ADMIN").collect();
    let running = support::deployment::capability_mask(&kept);
    assert_ne!(
        bounding, running,
        "the manifest grants NET_ADMIN: {added:?}"
    );
    let threads = support::oracle::thread_statuses(pid);
    assert!(
        threads.len() > 1,
        "a running agent has threads: {threads:?}"
    );
    for (status, text) in &threads {
        let field = |name: &str| support::oracle::status_mask(text, name);
        let at = format!("{}\n{text}", status.display());
        assert_eq!(field("CapBnd"), bounding, "{at}");
        assert_eq!(field("CapPrm"), running, "{at}");
        assert_eq!(field("CapEff"), running, "{at}");
        assert_eq!(field("CapInh"), 0, "{at}");
        assert_eq!(field("CapAmb"), 0, "{at}");
        assert_eq!(field("NoNewPrivs"), 1, "{at}");
    }

    // 3. The start-up log kubelet keeps names the source.
    let container_name = spec["containers"][0]["name"].as_str().unwrap();
    let log_path = PathBuf::from(format!(
        "/var/log/pods/{namespace}_{name}_{uid}/{container_name}/0.log"
    ));
    let log =
        fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
    let source_line = log
        .lines()
        .find(|l| l.contains("exec events"))
        .unwrap_or_else(|| {
            panic!(
                "no exec-events line in {}:\n{}",
                log_path.display(),
                excerpt(&log)
            )
        });
    assert!(
        source_line.contains(r#""source":"netlink""#),
        "the agent in the DaemonSet's pod does not read execs from netlink:\n{source_line}"
    );

    // 4. Its /metrics over TLS, as a client that trusts exactly the certificate it serves.
    let cert = PathBuf::from(format!("/proc/{pid}/root/run/nodeguard/tls/serving.crt"));
    let admin = bed.var("REALNODE_ADMIN_TOKEN");
    let metrics = || curl_agent(ports[0], &cert, admin, "/metrics");
    let text = metrics().unwrap_or_else(|e| panic!("{e}"));
    let value = |text: &str, series: &str| support::agent::metric_value(text, series);
    assert_eq!(
        value(&text, r#"nodeguard_exec_events_source{source="netlink"}"#),
        Some(1.0),
        "{}",
        excerpt(&text)
    );
    assert_eq!(
        value(&text, r#"nodeguard_exec_events_source{source="polling"}"#),
        Some(0.0)
    );
    let scans_series = r#"nodeguard_scans_total{scan_type="processes",result="success"}"#;
    let scans = || -> Result<f64, String> {
        let text = metrics()?;
        value(&text, scans_series).ok_or_else(|| format!("no {scans_series}"))
    };

    // 5. A binary dropped into another pod and run there: binary_drift at its exec. The
    //    DaemonSet's --interval is kept: the drop follows a scan just finished, so the next one
    //    is an interval away, and the finding must come before it.
    let other = bed.pod("burstable");
    let other_id = only_container_id(&other);
    let seen = scans().unwrap_or_else(|e| panic!("{e}"));
    let after = wait_for("a process scan to finish", Duration::from_secs(120), || {
        let now = scans()?;
        if now > seen {
            Ok(now)
        } else {
            Err(format!("{now} scans"))
        }
    });
    let dropped = format!("/tmp/busybox-ds-{}", support::random_hex(3));
    let exec_id = format!("ds-drop-{}", support::random_hex(3));
    let script_text = format!("cp /bin/busybox {dropped} && exec {dropped} sleep 2");
    let runner = {
        let (exec_id, other_id) = (exec_id.clone(), other_id.clone());
        std::thread::spawn(move || bed.ctr_exec(&exec_id, &other_id, &["sh", "-c", &script_text]))
    };
    let found = wait_for(
        &format!("binary_drift of {dropped} in {other_id}"),
        Duration::from_secs(10),
        || {
            let body = curl_agent(ports[0], &cert, admin, "/v1/findings")?;
            let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            v["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| {
                    f["kind"] == "binary_drift"
                        && f["container_id"] == other_id.as_str()
                        && f["path"] == dropped.as_str()
                })
                .cloned()
                .ok_or_else(|| "not yet".to_string())
        },
    );
    assert_eq!(found["pod"], other["metadata"]["name"], "{found}");
    assert_eq!(
        found["namespace"], other["metadata"]["namespace"],
        "{found}"
    );
    assert_eq!(
        scans().unwrap_or_else(|e| panic!("{e}")),
        after,
        "a process scan ran before the finding showed: it does not prove exec-time detection"
    );
    let out = runner.join().expect("the exec thread");
    assert!(out.success(), "ctr tasks exec failed\n{out}");
    bed.ctr_exec(&format!("{exec_id}-rm"), &other_id, &["rm", "-f", &dropped])
        .ok();
}

// ---------------------------------------------------------------------------------------------
// PolicyReports in the real API server, with the CRDs of manifests/crds/ applied by up.sh.

/// nodeguard's reports of this node as the API server stores them: (namespace or "" for the
/// ClusterPolicyReport) → the object.
fn nodeguard_reports(bed: &Bed) -> BTreeMap<String, Value> {
    let selector = format!(
        "app.kubernetes.io/managed-by=nodeguard,nodeguard.io/node={}",
        bed.node()
    );
    let mut out = BTreeMap::new();
    for resource in ["policyreports", "clusterpolicyreports"] {
        let v = bed.kubectl_json(&["get", resource, "-A", "-l", &selector, "-o", "json"]);
        for item in v["items"].as_array().cloned().unwrap_or_default() {
            let ns = item["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            out.insert(ns, item);
        }
    }
    out
}

fn results_of(report: &Value) -> Vec<Value> {
    report["results"].as_array().cloned().unwrap_or_default()
}

/// A metric sample of the agent's `/metrics`, by its full name with labels.
fn metric(agent: &Agent, sample: &str) -> Result<f64, String> {
    let (_, body) = agent.get("/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {sample} in /metrics"))
}

#[test]
fn the_agent_keeps_policy_reports_the_real_api_server_stores_and_rewrites_nothing_unchanged() {
    let bed = require_bed!();
    let _alone = changing();
    let mut checks = Checks::default();
    let ghost = Ghost::start();
    let ghost_pid = ghost.child.id().to_string();
    let ghost_dir = ghost._dir.path().display().to_string();
    let besteffort = bed.pod("besteffort");
    let besteffort_uid = besteffort["metadata"]["uid"].as_str().unwrap().to_string();
    let report_name = format!("nodeguard-{}", bed.node());
    let agent = Agent::start(bed, "reports", None);
    let first_log = agent.log_path().to_path_buf();

    // 1. The BestEffort pod's missing limits are results of the realnode namespace's report,
    //    regarding that very pod (uid from kubectl), as `kubectl get policyreports` shows.
    let reports = checks.wait(
        "the realnode PolicyReport with the BestEffort pod's missing limits, and the ghost in the ClusterPolicyReport",
        FIRST_SCAN_TIMEOUT,
        || {
            let reports = nodeguard_reports(bed);
            let ns = reports.get("realnode").map(results_of).unwrap_or_default();
            let limits: BTreeSet<&str> = ns
                .iter()
                .filter(|r| r["resources"][0]["name"] == "besteffort")
                .filter_map(|r| r["rule"].as_str())
                .filter(|rule| rule.starts_with("missing_"))
                .collect();
            let cluster = reports.get("").map(results_of).unwrap_or_default();
            let ghost_seen = cluster.iter().any(|r| {
                r["rule"] == "deleted_executable"
                    && (r["properties"]["pid"] == ghost_pid.as_str()
                        || r["properties"]["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with(&ghost_dir)))
            });
            if limits.contains("missing_memory_limit") && limits.contains("missing_pids_limit") && ghost_seen {
                Ok(reports)
            } else {
                Err(format!("missing limits of besteffort: {limits:?}, ghost pid {ghost_pid} seen: {ghost_seen}; reports: {}",
                    excerpt(&serde_json::to_string(&reports).unwrap_or_default())))
            }
        },
    );
    if let Some(reports) = &reports {
        let ns = &reports["realnode"];
        checks.check(
            ns["kind"] == "PolicyReport" && ns["metadata"]["name"] == report_name.as_str(),
            || {
                format!(
                    "the namespace report is PolicyReport {report_name}: {}",
                    ns["metadata"]
                )
            },
        );
        for r in results_of(ns)
            .iter()
            .filter(|r| r["resources"][0]["name"] == "besteffort")
        {
            let res = &r["resources"][0];
            checks.check(
                res["kind"] == "Pod" && res["namespace"] == "realnode" && res["uid"] == besteffort_uid.as_str()
                    && r["policy"] == "nodeguard" && r["result"] == "fail"
                    && ["critical", "high", "medium", "low", "info"].contains(&r["severity"].as_str().unwrap_or(""))
                    && r["properties"]["node"] == bed.node()
                    && r["properties"]["container"].is_string()
                    && r["properties"]["finding_id"].is_string(),
                || format!("a besteffort result names the pod {besteffort_uid} and carries its properties: {r}"),
            );
        }
        let summary_fail = ns["summary"]["fail"].as_u64().unwrap_or(0) as usize;
        let fails = results_of(ns)
            .iter()
            .filter(|r| r["result"] == "fail")
            .count();
        checks.check(summary_fail == fails, || {
            format!("summary.fail {summary_fail} counts the {fails} fail results")
        });
        let cluster = &reports[""];
        checks.check(
            cluster["kind"] == "ClusterPolicyReport"
                && cluster["scope"]["kind"] == "Node"
                && cluster["scope"]["name"] == bed.node(),
            || {
                format!(
                    "the ClusterPolicyReport is scoped to the node: {}",
                    cluster["scope"]
                )
            },
        );
        // kubectl's printer columns come from the CRD.
        let table = bed
            .kubectl(&["get", "policyreports", "-n", "realnode"])
            .ok()
            .stdout;
        checks.check(
            table.contains("FAIL") && table.contains(&report_name),
            || format!("kubectl get policyreports:\n{table}"),
        );
    }

    // 2. A user without RBAC on the reports cannot read them.
    for resource in ["policyreports", "clusterpolicyreports"] {
        let out = cmd::run(
            bed.var("REALNODE_KUBECTL"),
            &[
                "--kubeconfig",
                bed.var("REALNODE_STRANGER_KUBECONFIG"),
                "get",
                resource,
                "-A",
                "-o",
                "json",
            ],
        );
        checks.check(!out.success() && out.stderr.contains("forbidden"), || {
            format!("the stranger must be refused {resource}: {out}")
        });
    }
    checks.check(forbidden_lines(&agent.log_text()).is_empty(), || {
        format!(
            "the agent met a 403: {:?}",
            forbidden_lines(&agent.log_text())
        )
    });
    agent.stop();

    // 3. A second run lists the reports and rewrites nothing unchanged: the realnode
    //    report keeps its resourceVersion (its pods did not change; the ClusterPolicyReport
    //    may change with other beds' and tests' containers on this host).
    let before = nodeguard_reports(bed);
    let rv_before = before
        .get("realnode")
        .map(|r| r["metadata"]["resourceVersion"].clone());
    let agent = Agent::start(bed, "reports-again", None);
    checks.wait("the second agent found the CRDs", SCANS_TIMEOUT, || {
        metric(&agent, "nodeguard_policy_report_crds_installed").and_then(|v| {
            if v == 1.0 {
                Ok(())
            } else {
                Err(format!("crds_installed {v}"))
            }
        })
    });
    // Pod metadata may hold writes back for up to a minute after start; wait past it.
    agent.wait_scans(3);
    std::thread::sleep(Duration::from_secs(65));
    agent.wait_scans(1);
    let after = nodeguard_reports(bed);
    let rv_after = after
        .get("realnode")
        .map(|r| r["metadata"]["resourceVersion"].clone());
    checks.check(rv_before.is_some() && rv_before == rv_after, || {
        format!("the unchanged realnode report was rewritten: resourceVersion {rv_before:?} -> {rv_after:?}")
    });
    checks.check(
        metric(&agent, "nodeguard_policy_reports").is_ok_and(|n| n >= 2.0),
        || {
            format!(
                "nodeguard_policy_reports: {:?}",
                metric(&agent, "nodeguard_policy_reports")
            )
        },
    );
    say(&format!(
        "realnode: PolicyReports: realnode report {} bytes with {} results, ClusterPolicyReport {} results; second run: writes {:?}, {:?} reports",
        after.get("realnode").map_or(0, |r| r.to_string().len()),
        after.get("realnode").map_or(0, |r| results_of(r).len()),
        after.get("").map_or(0, |r| results_of(r).len()),
        metric(&agent, "nodeguard_policy_report_writes_total{result=\"written\"}"),
        metric(&agent, "nodeguard_policy_reports"),
    ));
    let second_log = agent.log_path().to_path_buf();
    agent.stop();
    drop(ghost);
    checks.finish(&[&first_log, &second_log]);
}

// ---------------------------------------------------------------------------------------------
// Platform binaries against their release's digest bundle.

/// The pid a bed's `start NAME` recorded (`up.sh` execs the program in place, so it is the
/// program's own pid).
fn bed_pid(bed: &Bed, name: &str) -> i32 {
    let path = bed.dir.join(format!("{name}.pid"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// The bed's kubelet and kube-apiserver are real host processes. Packed into a release
/// tarball by the real `tar` and imported, their release bundle raises nothing for them; a
/// bundle of another kubelet build (`sha512sum` of a tampered copy) raises
/// `unexpected_binary_hash` for the bed's kubelet alone, naming that bundle and its line.
/// The scan sees only those two pids (a private proc root), so other beds and containers on
/// the machine cannot disturb it.
#[test]
fn the_beds_kubelet_and_apiserver_are_checked_against_release_digest_bundles() {
    let bed = require_bed!();
    let _shared = looking();
    let kubelet = bed_pid(bed, "kubelet");
    let apiserver = bed_pid(bed, "apiserver");
    let exe = |pid: i32| fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let (kubelet_exe, apiserver_exe) = (exe(kubelet), exe(apiserver));
    assert!(kubelet_exe.ends_with("kubelet"), "{kubelet_exe:?}");
    assert!(
        apiserver_exe.ends_with("kube-apiserver"),
        "{apiserver_exe:?}"
    );

    let tmp = tempfile::Builder::new()
        .prefix("nodeguard-rn-digests-")
        .tempdir()
        .unwrap();
    let bin = tmp.path().join("kubernetes/server/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(&kubelet_exe, bin.join("kubelet")).unwrap();
    fs::copy(&apiserver_exe, bin.join("kube-apiserver")).unwrap();
    let tarball = tmp.path().join("kubernetes-server-linux-amd64.tar.gz");
    let mut tar = Command::new("tar");
    tar.args(["-I", "gzip -1", "-cf"])
        .arg(&tarball)
        .arg("kubernetes")
        .current_dir(tmp.path());
    cmd::run_command(
        tar,
        "tar -I 'gzip -1' -cf … kubernetes".into(),
        BUILD_TIMEOUT,
    )
    .ok();
    let release = tmp.path().join("release.json");
    let nodeguard = support::nodeguard_bin();
    cmd::run_ok(
        nodeguard,
        &[
            "digests",
            "import",
            tarball.to_str().unwrap(),
            "-o",
            release.to_str().unwrap(),
        ],
    );

    // Another build of kubelet, known only by its sha512sum line.
    let other_dir = tmp.path().join("other");
    fs::create_dir(&other_dir).unwrap();
    let mut bytes = fs::read(bin.join("kubelet")).unwrap();
    bytes.extend_from_slice(b"\0another build");
    fs::write(other_dir.join("kubelet"), bytes).unwrap();
    let mut sum = Command::new("sha512sum");
    sum.arg("kubelet").current_dir(&other_dir);
    let sums = cmd::run_command(sum, "sha512sum kubelet".into(), BUILD_TIMEOUT).ok();
    let sums_file = tmp.path().join("other.sha512sum");
    fs::write(&sums_file, &sums.stdout).unwrap();
    let other = tmp.path().join("other.json");
    cmd::run_ok(
        nodeguard,
        &[
            "digests",
            "import",
            sums_file.to_str().unwrap(),
            "-o",
            other.to_str().unwrap(),
        ],
    );

    let scan_with = |bundle: &Path| {
        let policy = tmp.path().join("policy.yaml");
        fs::write(
            &policy,
            format!(
                "digest_bundles: [{}]\n",
                bundle.file_name().unwrap().to_str().unwrap()
            ),
        )
        .unwrap();
        let proc_root = support::fakeproc::FakeProc::with_pids(&[kubelet, apiserver]);
        deployed_scan(&[
            "--no-fs",
            "--proc-root",
            proc_root.path_str(),
            "--config",
            policy.to_str().unwrap(),
        ])
    };
    let digest_findings = |scan: &Scan, pid: i32| -> Vec<Value> {
        scan.findings()
            .iter()
            .filter(|f| f["pid"] == pid)
            .filter(|f| f["kind"] == "unexpected_binary_hash" || f["kind"] == "unverifiable_binary")
            .cloned()
            .collect()
    };

    let scan = scan_with(&release);
    for (pid, path) in [(kubelet, &kubelet_exe), (apiserver, &apiserver_exe)] {
        let p = scan
            .processes()
            .iter()
            .find(|p| p["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid} not scanned\n{}", scan.summary()));
        assert!(p["container_id"].is_null(), "a host process: {p}");
        assert_eq!(
            p["sha256"],
            support::oracle::sha256sum(Path::new(&format!("/proc/{pid}/exe"))).as_str(),
            "{}",
            path.display()
        );
        assert_eq!(
            digest_findings(&scan, pid),
            Vec::<Value>::new(),
            "the release's own binary\n{}",
            scan.summary()
        );
    }

    let scan = scan_with(&other);
    let found = digest_findings(&scan, kubelet);
    assert_eq!(found.len(), 1, "{found:#?}\n{}", scan.summary());
    assert_eq!(found[0]["kind"], "unexpected_binary_hash");
    assert!(found[0]["container_id"].is_null());
    let message = found[0]["message"].as_str().unwrap_or_default();
    let want_sha512 = support::oracle::sha512sum(&kubelet_exe);
    for part in [
        format!("host: pid {kubelet} (kubelet)"),
        format!("sha512 {want_sha512}"),
        format!(
            "not a digest of kubelet in digest bundle other.json (from {} line 1)",
            sums_file.display()
        ),
    ] {
        assert!(message.contains(&part), "message lacks {part:?}: {message}");
    }
    assert_eq!(
        digest_findings(&scan, apiserver),
        Vec::<Value>::new(),
        "kube-apiserver is not in that bundle"
    );
}

// Image verification (docs/image-verification.md): in a file of its own.
#[path = "realnode/image_verification.rs"]
mod image_verification;
