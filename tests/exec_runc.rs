//! Exec-time detection against real runc containers: with the scan interval at an hour, a
//! denied binary exec'd in a container is on `/v1/findings` within two seconds, a process
//! that lives 200 ms is caught and stays reported after it exits, and when the kernel's
//! process-events connector refuses the agent (a network namespace of its own) the agent says
//! so once, exports `nodeguard_exec_events_source{source="polling"} 1`, and its scans still
//! find things. An exec storm against a small socket buffer loses events: they are counted,
//! a full scan follows, and what the storm left running is reported.
//!
//! Ground truth comes from outside nodeguard: `sha256sum` of the binary in the image, the pid
//! `runc exec --pid-file` wrote, `/proc` after the process exited.
//!
//! Needs root, runc, busybox-static, capsh, overlayfs (and `unshare`, `ip` for the fallback
//! test). Without them each test says why it skipped; with `CI` set it fails instead.
//! Run: `cargo test -p nodeguard --test exec_runc`.

mod support;

use serde_json::Value;
use std::fs;
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use support::agent::Agent;
use support::container::{Container, ContainerSpec};
use support::image::Image;
use support::{wait_for, wait_for_every};

/// The storm floods every subscriber of the kernel's connector on the machine, not only its
/// own agent: the other tests' agents would lose events (and bring full scans forward) or
/// fall behind their own execs. It runs alone; the others may run together.
static HOST_EXECS: RwLock<()> = RwLock::new(());

fn calm() -> RwLockReadGuard<'static, ()> {
    HOST_EXECS.read().unwrap_or_else(|e| e.into_inner())
}

fn storming() -> RwLockWriteGuard<'static, ()> {
    HOST_EXECS.write().unwrap_or_else(|e| e.into_inner())
}

/// The promise for an exec while the interval is an hour.
const EXEC_TO_FINDING: Duration = Duration::from_secs(2);
/// The first scans of a busy test machine.
const FIRST_SCAN_TIMEOUT: Duration = Duration::from_secs(120);

/// An image with `/bin/busybox-evil`: busybox with bytes after it, so no other process on the
/// node has its digest (busybox runs as the multi-call binary under a name starting with
/// `busybox`). Returns the image, the path in the container and its SHA-256 by `sha256sum`.
fn image_with_denied_binary() -> (Image, String, String) {
    let image = Image::busybox_owned("execev");
    let busybox = support::image::busybox_binary().expect("busybox (checked by the harness)");
    let mut bytes = fs::read(&busybox).expect("read busybox");
    bytes.extend_from_slice(format!("exec-time {}", support::random_hex(8)).as_bytes());
    let path = "/bin/busybox-evil".to_string();
    image.add_file(&path, &bytes, 0o755);
    let digest = image.sha256(&path);
    (image, path, digest)
}

/// A policy file denying `digest`, in a temp dir the caller keeps.
fn denying_policy(digest: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("nodeguard-execev-policy-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("policy.yaml");
    fs::write(
        &path,
        format!(
            "version: 1\ndenied_binaries:\n  - sha256: {digest}\n    reason: \"planted by exec_runc\"\n"
        ),
    )
    .unwrap();
    (dir, path)
}

/// Waits until the agent finished its first process scan and the filesystem scan that
/// follows it; returns how many process scans it has run then.
fn wait_first_scans(agent: &Agent) -> f64 {
    agent.wait_ready(FIRST_SCAN_TIMEOUT);
    let fs_done = "nodeguard_scans_total{scan_type=\"filesystems\",result=\"success\"}";
    wait_for(
        "the first filesystem scan",
        FIRST_SCAN_TIMEOUT,
        || match agent.metric(fs_done) {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{fs_done} = {other:?}")),
        },
    );
    process_scans(agent)
}

fn process_scans(agent: &Agent) -> f64 {
    agent
        .metric("nodeguard_scans_total{scan_type=\"processes\",result=\"success\"}")
        .expect("nodeguard_scans_total{scan_type=\"processes\"} is exported")
}

/// The `denied_binary` findings of container `id` whose digest is `digest`.
fn denied(agent: &Agent, id: &str, digest: &str) -> Vec<Value> {
    agent
        .findings(&format!("kind=denied_binary&container={id}"))
        .into_iter()
        .filter(|f| f["sha256"].as_str() == Some(digest))
        .collect()
}

/// Waits at most `timeout` for a `denied_binary` finding of `planted`'s binary in its
/// container (of process `pid` when given), polling every 50 ms.
fn wait_denied(agent: &Agent, planted: &Planted, pid: Option<i32>, timeout: Duration) -> Value {
    let what = match pid {
        Some(pid) => format!("denied_binary for pid {pid} on /v1/findings"),
        None => "denied_binary on /v1/findings".to_string(),
    };
    wait_for_every(Duration::from_millis(50), &what, timeout, || {
        let found = denied(agent, &planted.container.id, &planted.digest);
        found
            .iter()
            .find(|f| pid.is_none_or(|pid| f["pid"].as_i64() == Some(i64::from(pid))))
            .cloned()
            .ok_or_else(|| format!("findings of the container: {found:?}"))
    })
}

/// What each test starts from: a runc container of [`image_with_denied_binary`] and a
/// policy denying that binary. Fields drop in order: the container before its image.
struct Planted {
    container: Container,
    _image: Image,
    _policy_dir: tempfile::TempDir,
    policy: PathBuf,
    /// The binary's path in the container.
    evil: String,
    digest: String,
}

fn planted() -> Planted {
    let (image, evil, digest) = image_with_denied_binary();
    let (policy_dir, policy) = denying_policy(&digest);
    Planted {
        container: ContainerSpec::new(&image).start(),
        _image: image,
        _policy_dir: policy_dir,
        policy,
        evil,
        digest,
    }
}

/// An agent with `planted`'s policy and an hour's intervals, after its first scans and
/// hearing execs over the connector; the process scans it had run then.
fn hourly_agent(planted: &Planted) -> (Agent, f64) {
    hourly_agent_with(planted, &[])
}

/// [`hourly_agent`] with more arguments.
fn hourly_agent_with(planted: &Planted, extra: &[&str]) -> (Agent, f64) {
    let mut args = vec![
        "--interval",
        "1h",
        "--fs-interval",
        "1h",
        "--config",
        planted.policy.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let agent = as_deployed(&args);
    let scans_before = wait_first_scans(&agent);
    require_netlink(&agent);
    (agent, scans_before)
}

/// The agent as the DaemonSet runs it: root with only the manifest's capabilities and
/// no_new_privs (`support::deployment::as_deployed`), in the host's namespaces.
fn as_deployed(args: &[&str]) -> Agent {
    let wrapper = support::deployment::as_deployed();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    Agent::start_in(&wrapper, args)
}

fn require_netlink(agent: &Agent) {
    let source = "nodeguard_exec_events_source{source=\"netlink\"}";
    assert_eq!(
        agent.metric(source),
        Some(1.0),
        "the connector must work for the agent with the DaemonSet's capabilities in the host's namespaces"
    );
}

#[test]
fn a_denied_binary_execd_in_a_container_is_found_within_two_seconds_with_an_hour_interval() {
    require_containers!();
    let _host_execs = calm();
    let planted = planted();
    let (container, evil, digest) = (&planted.container, &planted.evil, &planted.digest);
    let (agent, scans_before) = hourly_agent(&planted);
    assert!(
        denied(&agent, &container.id, digest).is_empty(),
        "nothing denied runs yet"
    );

    let pid = container.exec_detached(&[evil, "sleep", "600"]);
    let found = wait_denied(&agent, &planted, Some(pid), EXEC_TO_FINDING);
    assert_eq!(found["severity"], "critical");
    assert_eq!(found["path"].as_str(), Some(evil.as_str()), "{found}");
    // No scan ran meanwhile: the exec itself brought the finding.
    assert_eq!(
        process_scans(&agent),
        scans_before,
        "a process scan ran; the finding must come from the exec"
    );
    // /metrics renders at most once a second (docs/metrics.md): the series follows within
    // that second.
    let short = &container.id[..12];
    let open = format!(
        "nodeguard_findings{{kind=\"denied_binary\",severity=\"critical\",namespace=\"\",pod=\"\",container=\"{short}\"}}"
    );
    let metrics = wait_for_every(
        Duration::from_millis(50),
        &format!("{open} on /metrics"),
        EXEC_TO_FINDING,
        || {
            let metrics = agent.metrics();
            match support::agent::metric_value(&metrics, &open) {
                Some(n) if n >= 1.0 => Ok(metrics),
                other => Err(format!("{other:?}")),
            }
        },
    );
    for series in ["nodeguard_exec_events_total", "nodeguard_exec_passes_total"] {
        let v = support::agent::metric_value(&metrics, series);
        assert!(v.is_some_and(|v| v >= 1.0), "{series} = {v:?}");
    }
    // runc's init runs from a memfd copy of runc until it execs the user's program: reading
    // at exec time must not turn that moment into a fileless-executable alarm.
    let transient = agent.findings(&format!(
        "kind=deleted_executable&container={}",
        container.id
    ));
    assert!(transient.is_empty(), "{transient:?}");
    let processes = agent.get_json(&format!("/v1/processes?container={}", container.id));
    let listed = processes["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["pid"].as_i64() == Some(i64::from(pid)) && p["sha256"] == digest.as_str());
    assert!(
        listed,
        "pid {pid} with its digest is not in /v1/processes: {processes}"
    );
}

#[test]
fn a_process_living_200ms_is_caught_and_stays_reported_after_it_exits() {
    require_containers!();
    let _host_execs = calm();
    let planted = planted();
    let (container, evil, digest) = (&planted.container, &planted.evil, &planted.digest);
    let (agent, scans_before) = hourly_agent(&planted);

    // `runc exec` without -d returns when the process has exited.
    let out = container.runc(&["exec", &container.id, evil, "sleep", "0.2"]);
    assert!(out.success(), "runc exec failed\n{out}");
    let found = wait_denied(&agent, &planted, None, EXEC_TO_FINDING);
    let pid = found["pid"].as_i64().expect("the finding names the pid");
    // It is gone (or its pid was reused by something else).
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
    assert!(
        exe.as_deref()
            .map(|e| e.to_string_lossy().contains("busybox-evil"))
            != Some(true),
        "pid {pid} still runs {exe:?}"
    );
    assert_eq!(
        process_scans(&agent),
        scans_before,
        "no scan may have helped"
    );

    // A full scan (a policy reload brings one forward) no longer sees the process running:
    // it stays reported, as it was read, within the retention window.
    let scans = process_scans(&agent);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP failed");
    wait_for("a scan after SIGHUP", Duration::from_secs(60), || {
        let now = process_scans(&agent);
        if now > scans {
            Ok(())
        } else {
            Err(format!("process scans still {now}"))
        }
    });
    let still = denied(&agent, &container.id, digest);
    assert_eq!(
        still.first().map(|f| f["id"].clone()),
        Some(found["id"].clone()),
        "the exited process's finding must stay open within the retention window"
    );
    // ... and the process is listed as exited, so nobody takes it for what runs now; its
    // container still runs, so it is not marked.
    let listed = agent.get_json(&format!("/v1/processes?container={}", container.id));
    let gone = listed["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pid"] == found["pid"])
        .unwrap_or_else(|| panic!("pid {pid} is not in /v1/processes: {listed}"));
    assert_eq!(gone["exited"], true, "{gone}");
    let containers = agent.get_json("/v1/containers");
    let ours = containers["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == container.id.as_str())
        .unwrap_or_else(|| panic!("{} is not in /v1/containers: {containers}", container.id));
    assert!(
        ours.get("exited").is_none(),
        "a running container is not exited: {ours}"
    );
}

/// The command line of host process `pid` as a user reads it, `None` when it is gone.
fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .trim_end_matches('\0')
            .replace('\0', " "),
    )
}

/// The storm: execs faster than a small socket buffer (`--exec-buffer 4096`, the
/// smallest the agent accepts) can hold. The kernel drops events; the agent counts them in
/// `nodeguard_exec_events_lost_total`, says so, and brings a full scan forward (the interval
/// is an hour, so any scan after the first ones is that); and every denied process started
/// during the storm that still runs after it is reported, whether its own event arrived or
/// was lost.
#[test]
fn an_exec_storm_that_overruns_the_buffer_is_counted_and_a_full_scan_reports_what_it_left_running()
{
    require_containers!();
    let _host_execs = storming();
    let planted = planted();
    let (container, evil, digest) = (&planted.container, &planted.evil, &planted.digest);
    let (agent, scans_before) = hourly_agent_with(&planted, &["--exec-buffer", "4096"]);
    let lost_before = agent
        .metric("nodeguard_exec_events_lost_total")
        .unwrap_or(0.0);

    // Four shells exec `true` 3,000 times each; each also starts three long-lived denied
    // processes early on (`exec` of busybox-evil from a subshell: no shell left above it),
    // while the storm still has most of its way to go.
    const LOOPS: usize = 4;
    const EXECS: usize = 3000;
    let storm = format!(
        "i=0; while [ $i -lt {EXECS} ]; do /bin/true; case $i in 200|400|600) (exec {evil} sleep 600) & ;; esac; i=$((i+1)); done"
    );
    let shells: Vec<i32> = (0..LOOPS)
        .map(|_| container.exec_detached(&["/bin/sh", "-c", &storm]))
        .collect();
    wait_for_every(
        Duration::from_millis(100),
        "the storm shells to finish",
        Duration::from_secs(180),
        || match shells.iter().filter(|p| cmdline(**p).is_some()).count() {
            0 => Ok(()),
            n => Err(format!("{n} storm shells still run")),
        },
    );
    let lost = agent
        .metric("nodeguard_exec_events_lost_total")
        .unwrap_or(0.0)
        - lost_before;
    assert!(
        lost >= 1.0,
        "{} execs against an 8 KiB socket buffer lost no event: the storm did not overrun it",
        LOOPS * EXECS
    );
    assert!(
        agent.log_text().contains("exec events were lost"),
        "the agent must say that events were lost"
    );
    // What the storm left running, by the kernel's word.
    let want = format!("{evil} sleep 600");
    let running: Vec<i32> = container
        .pids()
        .into_iter()
        .filter(|p| cmdline(*p).as_deref() == Some(want.as_str()))
        .collect();
    assert_eq!(running.len(), LOOPS * 3, "sleepers by runc ps: {running:?}");
    assert!(
        process_scans(&agent) > scans_before,
        "no full scan followed the lost events (interval 1h)"
    );
    // One denied_binary finding per container and digest; the processes behind it are on
    // /v1/processes, each with its digest.
    wait_for_every(
        Duration::from_millis(100),
        "every sleeper the storm left reported with the denied digest",
        Duration::from_secs(10),
        || {
            if denied(&agent, &container.id, digest).is_empty() {
                return Err("no denied_binary finding".into());
            }
            let listed = agent.get_json(&format!("/v1/processes?container={}", container.id));
            let listed = listed["processes"].as_array().cloned().unwrap_or_default();
            let missing: Vec<&i32> = running
                .iter()
                .filter(|pid| {
                    !listed.iter().any(|p| {
                        p["pid"].as_i64() == Some(i64::from(**pid))
                            && p["sha256"] == digest.as_str()
                    })
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not on /v1/processes with the digest: {missing:?}"))
            }
        },
    );
}

#[test]
fn in_a_network_namespace_of_its_own_the_agent_says_polling_and_still_finds_by_scanning() {
    require_containers!();
    let _host_execs = calm();
    for tool in ["unshare", "ip"] {
        if support::which(tool).is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {tool} is missing"
            );
            eprintln!("\n!!! SKIPPED: {tool} not found (apt-get install util-linux iproute2)\n");
            return;
        }
    }
    let planted = planted();
    let pid = planted
        .container
        .exec_detached(&[&planted.evil, "sleep", "600"]);
    // A pod without hostNetwork: a network namespace of its own, then the DaemonSet's
    // capabilities (unshare needs CAP_SYS_ADMIN, so it comes first; setpriv execs the agent).
    let mut wrapper = vec![
        "unshare".to_string(),
        "--net".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        "ip link set lo up && exec \"$0\" \"$@\"".into(),
    ];
    wrapper.extend(support::deployment::as_deployed());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = Agent::start_in(
        &wrapper,
        &[
            "--interval",
            "2s",
            "--config",
            planted.policy.to_str().unwrap(),
        ],
    );
    agent.wait_ready(FIRST_SCAN_TIMEOUT);
    // The agent really is in a namespace of its own.
    let own = fs::read_link(format!("/proc/{}/ns/net", agent.pid())).unwrap();
    let ours = fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        own, ours,
        "the wrapper did not give the agent a network namespace"
    );

    assert_eq!(
        agent.metric("nodeguard_exec_events_source{source=\"polling\"}"),
        Some(1.0)
    );
    assert_eq!(
        agent.metric("nodeguard_exec_events_source{source=\"netlink\"}"),
        Some(0.0)
    );
    assert_eq!(agent.metric("nodeguard_exec_events_total"), Some(0.0));
    let log = agent.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("exec events unavailable"))
        .collect();
    assert_eq!(said.len(), 1, "said once, not {}:\n{log}", said.len());
    assert!(
        said[0].contains("refused"),
        "the reason names the refused subscribe: {}",
        said[0]
    );
    // By a scan: no exec event reaches this agent.
    let found = wait_denied(&agent, &planted, Some(pid), FIRST_SCAN_TIMEOUT);
    assert_eq!(found["severity"], "critical");
}

/// `nodeguard_findings_detected_total` summed over severities, for one kind.
fn detected(agent: &Agent, kind: &str) -> f64 {
    let prefix = format!("nodeguard_findings_detected_total{{kind=\"{kind}\"");
    agent
        .metrics()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn containers_started_while_execs_are_read_get_no_findings_from_runcs_own_set_up() {
    require_containers!();
    let _host_execs = calm();
    // runc runs `runc init` in the new container's cgroup with runc's own capabilities and
    // the host's pid namespace before it execs the entrypoint. An exec read of that moment
    // made a new pod's sandbox look like a privileged container sharing the host's pid
    // namespace on the real node. These containers are neither (runc's config: the runtime
    // default capabilities, a pid namespace of their own), so no such finding may appear,
    // not even for a moment (the detected counters count every appearance).
    let image = Image::busybox_owned("execinit");
    let agent = as_deployed(&["--interval", "1h", "--fs-interval", "1h"]);
    let scans_before = wait_first_scans(&agent);
    require_netlink(&agent);
    let kinds = ["privileged_container", "host_pid_namespace"];
    let before: Vec<f64> = kinds.iter().map(|k| detected(&agent, k)).collect();

    let containers: Vec<_> = (0..10)
        .map(|_| ContainerSpec::new(&image).start())
        .collect();
    for c in &containers {
        let config: Value =
            serde_json::from_slice(&fs::read(c.bundle.join("config.json")).unwrap()).unwrap();
        let namespaces = config["linux"]["namespaces"].to_string();
        assert!(namespaces.contains("\"pid\""), "{}: {namespaces}", c.id);
    }
    // Every container is known from the exec of its entrypoint, and whatever runc's set-up
    // left held back has been read.
    wait_for(
        "the new containers on /v1/containers",
        EXEC_TO_FINDING * 5,
        || {
            let listed = agent.get_json("/v1/containers").to_string();
            match containers.iter().find(|c| !listed.contains(&c.id)) {
                None => Ok(()),
                Some(c) => Err(format!("{} not listed", c.id)),
            }
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        process_scans(&agent),
        scans_before,
        "a process scan ran; the containers must come from exec reads"
    );
    let after: Vec<f64> = kinds.iter().map(|k| detected(&agent, k)).collect();
    assert_eq!(after, before, "{kinds:?} detected while containers started");
    for c in &containers {
        for kind in kinds {
            let found = agent.findings(&format!("kind={kind}&container={}", c.id));
            assert!(found.is_empty(), "{}: {found:?}", c.id);
        }
    }
}

/// The tester's finding: the DaemonSet's pod without CAP_NET_ADMIN could not join the
/// connector and polled. Granted everything the manifest grants but NET_ADMIN, the agent says
/// polling, once, naming the missing capability, and the metric agrees; with the manifest's
/// set it reads execs and then holds no CAP_NET_ADMIN in any thread (the kernel's view:
/// `/proc/PID/task/TID/status`), bounding set aside.
#[test]
fn without_net_admin_the_agent_polls_and_names_it_and_with_it_drops_it_once_subscribed() {
    require_containers!();
    let _host_execs = calm();
    let added = support::deployment::added_capabilities();
    assert!(
        added.iter().any(|c| c == "NET_ADMIN"),
        "the DaemonSet grants NET_ADMIN: {added:?}"
    );
    let net_admin = 1u64 << support::deployment::capability_number("NET_ADMIN");
    let caps: Vec<String> = added
        .iter()
        .filter(|c| *c != "NET_ADMIN")
        .map(|c| format!("+{}", c.to_ascii_lowercase()))
        .collect();
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    let without = Agent::start_in(
        &[
            "setpriv",
            &bounding,
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--no-new-privs",
            "--",
        ],
        &["--interval", "1h", "--fs-interval", "1h"],
    );
    without.wait_ready(FIRST_SCAN_TIMEOUT);
    assert_eq!(
        without.metric("nodeguard_exec_events_source{source=\"polling\"}"),
        Some(1.0)
    );
    let log = without.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("exec events unavailable"))
        .collect();
    assert_eq!(said.len(), 1, "said once, not {}:\n{log}", said.len());
    assert!(
        said[0].contains("\"source\":\"polling\"") && said[0].contains("CAP_NET_ADMIN"),
        "the start-up line names the source and the missing capability: {}",
        said[0]
    );
    drop(without);

    let with = as_deployed(&["--interval", "1h", "--fs-interval", "1h"]);
    with.wait_ready(FIRST_SCAN_TIMEOUT);
    require_netlink(&with);
    let log = with.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("exec events") && l.contains("\"source\":\"netlink\"")),
        "the start-up log names netlink:\n{log}"
    );
    let threads = support::oracle::thread_statuses(with.pid());
    assert!(threads.len() > 1, "{threads:?}");
    for (status, text) in &threads {
        let field = |name: &str| support::oracle::status_mask(text, name);
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert_eq!(field(set) & net_admin, 0, "{set} of {}", status.display());
        }
        assert_ne!(field("CapBnd") & net_admin, 0, "{}", status.display());
    }
}

/// A script dropped in the writable layer and run through the image's shell for a third of a
/// second is drift as it execs, with the script's digest (`sha256sum` of the writable layer's
/// file), before any scan.
#[test]
fn a_dropped_script_run_briefly_is_drift_within_two_seconds() {
    require_containers!();
    let _host_execs = calm();
    let image = Image::busybox_owned("execscript");
    let container = ContainerSpec::new(&image).start();
    let script = container.upper_dir.join("tmp/quick.sh");
    fs::create_dir_all(script.parent().unwrap()).unwrap();
    fs::write(
        &script,
        format!("sleep 0.3; echo {}\n", support::random_hex(8)),
    )
    .unwrap();
    let digest = support::oracle::sha256sum(&script);
    let agent = as_deployed(&["--interval", "1h", "--fs-interval", "1h"]);
    let scans_before = wait_first_scans(&agent);
    require_netlink(&agent);

    // `runc exec` without -d returns when the shell has exited.
    let out = container.runc(&["exec", &container.id, "/bin/sh", "/tmp/quick.sh"]);
    assert!(out.success(), "runc exec failed\n{out}");
    let found = wait_for_every(
        Duration::from_millis(50),
        "binary_drift of /tmp/quick.sh on /v1/findings",
        EXEC_TO_FINDING,
        || {
            let all = agent.findings(&format!("kind=binary_drift&container={}", container.id));
            all.into_iter()
                .find(|f| f["path"] == "/tmp/quick.sh")
                .ok_or_else(|| "not yet".to_string())
        },
    );
    assert_eq!(found["sha256"], digest.as_str(), "{found}");
    assert_eq!(found["severity"], "high", "{found}");
    assert_eq!(
        process_scans(&agent),
        scans_before,
        "no scan may have helped"
    );
    drop(agent);
    drop(container);
    drop(image);
}

/// A static binary built from `tests/support/short_lived/NAME.c` (cached under the test
/// artifacts), or `None` with the compiler's complaint when gcc cannot build it.
fn static_helper(name: &str, source: &str) -> Option<PathBuf> {
    let dir = support::artifacts_dir();
    let bin = dir.join(format!("short-lived-{name}"));
    if bin.exists() {
        return Some(bin);
    }
    let src = dir.join(format!("{name}-{}.c", std::process::id()));
    fs::write(&src, source).ok()?;
    let tmp = dir.join(format!("{name}-{}", std::process::id()));
    let out = support::cmd::run(
        "gcc",
        &["-static", "-Os", "-o", tmp.to_str()?, src.to_str()?],
    );
    let _ = fs::remove_file(&src);
    if !out.success() {
        eprintln!("cannot build {name}:\n{out}");
        return None;
    }
    fs::rename(&tmp, &bin).ok()?;
    Some(bin)
}

/// Runs of a millisecond process the short-lived test allows per kind.
const SHORT_LIVED_ATTEMPTS: usize = 3;

/// `runc exec` of `args` (waiting for the process to exit), then `found` polled every 50 ms
/// for [`EXEC_TO_FINDING`]; again, up to [`SHORT_LIVED_ATTEMPTS`] runs in all.
fn run_until_found(
    container: &Container,
    args: &[&str],
    found: impl Fn() -> Option<Value>,
) -> Option<Value> {
    for _ in 0..SHORT_LIVED_ATTEMPTS {
        let mut full = vec!["exec", container.id.as_str()];
        full.extend_from_slice(args);
        let out = container.runc(&full);
        assert!(out.success(), "runc exec failed\n{out}");
        let deadline = std::time::Instant::now() + EXEC_TO_FINDING;
        while std::time::Instant::now() < deadline {
            if let Some(f) = found() {
                return Some(f);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    None
}

/// `bytes` with a random tag after them: a static binary that still runs, with a digest no
/// other file on the node has.
fn tagged(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.extend_from_slice(format!("short-lived {}", support::random_hex(8)).as_bytes());
    out
}

/// Issue 20: processes living a millisecond were missed (the exec event arrived, the read
/// came too late). A binary dropped in the writable layer and run once, and a program run
/// from a memfd, each exiting after 1 ms (`runc exec` has returned, so both are gone and
/// reaped before anything is asked), are on `/v1/findings` — `binary_drift` with the
/// dropped file's digest, `deleted_executable` for the memfd — and the memfd process is on
/// `/v1/processes` with the digest of the program copied into it, both digests by
/// `sha256sum`. No scan helped (interval an hour).
///
/// Whether a process living 1 ms is held depends on the event thread getting a CPU within
/// that millisecond: the agent runs with `--exec-hold realtime` (the event thread under
/// SCHED_FIFO, CAP_SYS_NICE added to the DaemonSet's set). Each kind still gets up to
/// [`SHORT_LIVED_ATTEMPTS`] runs (each a new process, the same file) and the test runs alone.
#[test]
fn a_dropped_binary_and_a_memfd_exec_living_a_millisecond_are_read_with_their_digests() {
    require_containers!();
    let _host_execs = storming();
    let helpers = (
        static_helper("brief", include_str!("support/short_lived/brief.c")),
        static_helper(
            "memfd-exec",
            include_str!("support/short_lived/memfd_exec.c"),
        ),
    );
    let (Some(brief), Some(memfd_exec)) = helpers else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set, but gcc cannot build the static helpers (apt-get install gcc libc6-dev)"
        );
        eprintln!(
            "\n!!! SKIPPED: gcc cannot build static helpers (apt-get install gcc libc6-dev)\n"
        );
        return;
    };
    let brief = fs::read(brief).unwrap();
    let image = Image::busybox_owned("exechold");
    image.add_file("/bin/memfd-exec", &fs::read(memfd_exec).unwrap(), 0o755);
    image.add_file("/payload", &tagged(&brief), 0o755);
    let payload_digest = image.sha256("/payload");
    let container = ContainerSpec::new(&image).start();
    let dropped = container.upper_dir.join("tmp/brief");
    fs::create_dir_all(dropped.parent().unwrap()).unwrap();
    fs::write(&dropped, tagged(&brief)).unwrap();
    fs::set_permissions(
        &dropped,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dropped_digest = support::oracle::sha256sum(&dropped);
    // The DaemonSet with SYS_NICE added, for `--exec-hold realtime`: with `on`, at load 20 on
    // the shared 2-core machine about half the holds came too late (the event thread waited
    // 3-40 ms for a CPU; `bench/short_lived_bench.sh`), with `realtime` 100 of 100.
    let wrapper: Vec<String> = support::deployment::as_deployed()
        .into_iter()
        .map(|a| match a.strip_prefix("--bounding-set=") {
            Some(set) => format!("--bounding-set={set},+sys_nice"),
            None => a,
        })
        .collect();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = Agent::start_in(
        &wrapper,
        &[
            "--interval",
            "1h",
            "--fs-interval",
            "1h",
            "--exec-hold",
            "realtime",
        ],
    );
    let scans_before = wait_first_scans(&agent);
    require_netlink(&agent);
    assert!(
        !agent.log_text().contains("runs with ordinary scheduling"),
        "the event thread did not get SCHED_FIFO with CAP_SYS_NICE:\n{}",
        agent.log_text()
    );

    // `runc exec` without -d returns when the process has exited and was reaped.
    let drift = run_until_found(&container, &["/tmp/brief"], || {
        agent
            .findings(&format!("kind=binary_drift&container={}", container.id))
            .into_iter()
            .find(|f| f["path"] == "/tmp/brief")
    })
    .unwrap_or_else(|| {
        panic!(
            "no binary_drift of /tmp/brief after {SHORT_LIVED_ATTEMPTS} runs; log:\n{}",
            agent.log_text()
        )
    });
    assert_eq!(drift["sha256"], dropped_digest.as_str(), "{drift}");

    let fileless = run_until_found(&container, &["/bin/memfd-exec", "/payload"], || {
        agent
            .findings(&format!(
                "kind=deleted_executable&container={}",
                container.id
            ))
            .into_iter()
            .find(|f| {
                f["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/memfd:payload"))
            })
    })
    .unwrap_or_else(|| {
        panic!(
            "no deleted_executable of the memfd after {SHORT_LIVED_ATTEMPTS} runs; log:\n{}",
            agent.log_text()
        )
    });
    let pid = fileless["pid"].as_i64().expect("the finding names the pid");
    let listed = wait_for_every(
        Duration::from_millis(50),
        "the memfd process on /v1/processes",
        EXEC_TO_FINDING,
        || {
            let answer = agent.get_json(&format!("/v1/processes?container={}", container.id));
            answer["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["pid"].as_i64() == Some(pid))
                .cloned()
                .ok_or_else(|| format!("pid {pid} not listed: {answer}"))
        },
    );
    assert_eq!(listed["sha256"], payload_digest.as_str(), "{listed}");
    assert_eq!(listed["exe_deleted"], true, "{listed}");
    assert_eq!(
        process_scans(&agent),
        scans_before,
        "a process scan ran; the reads must come from the execs"
    );
    // /metrics renders at most once a second.
    wait_for(
        "nodeguard_exec_processes_held_total >= 2",
        Duration::from_secs(3),
        || match agent.metric("nodeguard_exec_processes_held_total") {
            Some(n) if n >= 2.0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}
