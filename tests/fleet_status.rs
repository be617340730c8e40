//! The heartbeat Lease and `nodeguard fleet status` against the real kube-apiserver (v1.20.2
//! of the real-node bed, `tests/realnode/`), as in issue 23: three real agents (`nodeguard
//! run`, distinct node names and ports) keep Leases in a namespace of their own, with
//! exactly the Role of `manifests/role-lease.yaml` bound to the agent's identity; `fleet
//! status` shows them covered, a Node with no agent missing, a killed agent stale after 3
//! intervals, and a Lease whose Node is gone orphaned; a deleted Lease comes back; Lease
//! writes stay at one per interval (the agents' own metric); the agent's identity is refused
//! Leases outside its namespace. What is asserted is what the API server holds (`kubectl get
//! lease -o json`), `openssl`'s fingerprint of the served certificate, and the CLI's exit
//! status.
//!
//! The bed is found through `REALNODE_ENV` (the `env` file of `tests/realnode/up.sh DIR`);
//! without it, the test brings up an API-server-only bed itself (`up.sh --no-kubelet`) when
//! the bed's binaries are built, and takes it down afterwards. Without either, or without
//! root (the agents scan a proc root of bind mounts), it is skipped loudly — and fails when
//! `CI` is set.

mod support;

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::agent::{Agent, Launch};
use support::api_bed::ApiBed;
use support::fakeproc::FakeProc;
use support::wait_for;

/// The agents' interval: the Lease is renewed this often and is stale after 3 of them.
const INTERVAL_SECS: u64 = 2;
const READY: Duration = Duration::from_secs(120);

fn skip(reason: &str) {
    support::skip("the real API server test", reason);
}

/// `nodeguard fleet status -n NS -o json` as the admin: (exit code, JSON).
fn fleet_status(bed: &ApiBed, namespace: &str, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(support::nodeguard_bin())
        .args([
            "fleet",
            "status",
            "-n",
            namespace,
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(bed.var("REALNODE_ADMIN_KUBECONFIG"))
        .args(extra)
        .env_remove("KUBECONFIG")
        .stderr(Stdio::piped())
        .output()
        .expect("run nodeguard fleet status");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "fleet status printed no JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn row<'a>(status: &'a Value, node: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["node"] == node))
        .unwrap_or_else(|| panic!("fleet status has no row for {node}: {status:#}"))
}

/// The Leases in `namespace` as the API server holds them, by name.
fn leases(bed: &ApiBed, namespace: &str) -> Vec<Value> {
    bed.kubectl_json(&["get", "leases", "-n", namespace, "-o", "json"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn lease<'a>(all: &'a [Value], name: &str) -> Option<&'a Value> {
    all.iter().find(|l| l["metadata"]["name"] == name)
}

/// The Node objects the test makes, removed on drop.
struct Nodes<'a> {
    bed: &'a ApiBed,
    names: Vec<String>,
}

impl Drop for Nodes<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new(self.bed.var("REALNODE_KUBECTL"))
                .arg("--kubeconfig")
                .arg(self.bed.var("REALNODE_ADMIN_KUBECONFIG"))
                .args(["delete", "node", name, "--ignore-not-found", "--wait=false"])
                .output();
        }
    }
}

/// The namespace the test makes, removed on drop.
struct Namespace<'a> {
    bed: &'a ApiBed,
    name: String,
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.bed.var("REALNODE_KUBECTL"))
            .arg("--kubeconfig")
            .arg(self.bed.var("REALNODE_ADMIN_KUBECONFIG"))
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

fn start_agent(bed: &ApiBed, proc_root: &FakeProc, node: &str, ns: &str, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--node-name",
        node,
        "--lease-namespace",
        ns,
        "--lease-holder",
        node,
        "--interval",
        "2s",
        "--fs-interval",
        "1h",
        "--exec-events",
        "off",
        "--no-events",
        "--policy-reports=false",
        "--proc-root",
        proc_root.path_str(),
    ];
    args.extend_from_slice(extra);
    Agent::launch(
        &args,
        Launch {
            kubeconfig: Some(PathBuf::from(bed.var("REALNODE_AGENT_KUBECONFIG"))),
            ..Launch::default()
        },
    )
}

fn writes(agent: &Agent, result: &str) -> f64 {
    agent
        .metric(&format!(
            "nodeguard_lease_writes_total{{result=\"{result}\"}}"
        ))
        .unwrap_or_else(|| panic!("no nodeguard_lease_writes_total{{result={result:?}}}"))
}

#[test]
fn agents_keep_leases_and_fleet_status_tells_covered_stale_missing_and_orphaned() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root (the agents scan a proc root of bind mounts)");
    }
    let bed = match ApiBed::find("fleet") {
        Ok(bed) => bed,
        Err(reason) => return skip(&reason),
    };
    let id = support::random_hex(6);
    let ns = Namespace {
        bed: &bed,
        name: format!("ngfleet-{id}"),
    };
    bed.kubectl(&["create", "namespace", &ns.name], None);
    // The Role exactly as shipped, in this namespace, bound to the agent's identity.
    let role = std::fs::read_to_string(support::repo().join("manifests/role-lease.yaml")).unwrap();
    let role = role.replace(
        "namespace: nodeguard\n",
        &format!("namespace: {}\n", ns.name),
    );
    bed.kubectl(&["apply", "-f", "-"], Some(&role));
    bed.kubectl(
        &[
            "create",
            "rolebinding",
            "nodeguard-lease",
            "-n",
            &ns.name,
            "--role",
            "nodeguard-lease",
            "--user",
            bed.var("REALNODE_AGENT_USER"),
        ],
        None,
    );

    // Four Nodes: three get an agent, one never does.
    let names: Vec<String> = ["a", "b", "c", "idle"]
        .iter()
        .map(|n| format!("ngfleet-{id}-{n}"))
        .collect();
    let nodes = Nodes {
        bed: &bed,
        names: names.clone(),
    };
    for name in &nodes.names {
        bed.kubectl(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    ngfleet: \"{id}\"\n"
            )),
        );
    }
    let (a, b, c, idle) = (&names[0], &names[1], &names[2], &names[3]);

    // The agent's identity may not touch Leases elsewhere (the Role is namespaced).
    let denied = Command::new(bed.var("REALNODE_KUBECTL"))
        .arg("--kubeconfig")
        .arg(bed.var("REALNODE_AGENT_KUBECONFIG"))
        .args(["get", "lease", "-n", "kube-node-lease", "--no-headers"])
        .output()
        .unwrap();
    assert!(
        !denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "the agent's identity must be refused leases in kube-node-lease: {denied:?}"
    );

    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let proc_root = FakeProc::with_pids(&[sleeper.id() as i32]);
    let tls_dir = tempfile::tempdir().unwrap();
    let served = tls_dir.path().join("served.crt");
    let served_arg = served.display().to_string();
    let agent_a = start_agent(
        &bed,
        &proc_root,
        a,
        &ns.name,
        &["--tls", "on", "--tls-served-cert-file", &served_arg],
    );
    let agent_b = start_agent(&bed, &proc_root, b, &ns.name, &[]);
    let agent_c = start_agent(&bed, &proc_root, c, &ns.name, &[]);
    // Agent a serves https: its own probes then need the probe port; wait on b and c's API
    // and on a's Lease.
    agent_b.wait_ready(READY);
    agent_c.wait_ready(READY);

    let lease_names: Vec<String> = names[..3]
        .iter()
        .map(|n| format!("nodeguard-{n}"))
        .collect();
    let held = wait_for("three Leases with a last scan", READY, || {
        let all = leases(&bed, &ns.name);
        for name in &lease_names {
            let l = lease(&all, name).ok_or(format!("no Lease {name} yet"))?;
            if l["metadata"]["annotations"]["nodeguard.io/last-scan"].is_null() {
                return Err(format!("{name} has no last scan yet: {l}"));
            }
        }
        Ok(all)
    });
    for (node, agent) in [(a, &agent_a), (b, &agent_b), (c, &agent_c)] {
        let l = lease(&held, &format!("nodeguard-{node}")).unwrap();
        assert_eq!(l["spec"]["holderIdentity"], node.as_str(), "{l}");
        assert_eq!(l["spec"]["leaseDurationSeconds"], 3 * INTERVAL_SECS, "{l}");
        let notes = &l["metadata"]["annotations"];
        assert_eq!(notes["nodeguard.io/node"], node.as_str());
        assert_eq!(notes["nodeguard.io/api-port"], agent.port.to_string());
        assert_eq!(
            notes["nodeguard.io/interval-seconds"],
            INTERVAL_SECS.to_string()
        );
        assert_eq!(notes["nodeguard.io/version"], env!("CARGO_PKG_VERSION"));
        assert!(
            notes["nodeguard.io/findings"]
                .as_str()
                .is_some_and(|f| f.starts_with("critical=") && f.contains(",low=")),
            "{notes}"
        );
    }
    // The certificate's fingerprint as openssl computes it from the served certificate; none
    // for the agents on plain HTTP.
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in", &served_arg])
        .output()
        .expect("run openssl");
    assert!(der.status.success(), "openssl x509: {der:?}");
    let mut sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    sha.stdin.take().unwrap().write_all(&der.stdout).unwrap();
    let sum = String::from_utf8_lossy(&sha.wait_with_output().unwrap().stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let a_lease = lease(&held, &format!("nodeguard-{a}")).unwrap();
    assert_eq!(
        a_lease["metadata"]["annotations"]["nodeguard.io/cert-sha256"],
        sum
    );
    let b_lease = lease(&held, &format!("nodeguard-{b}")).unwrap();
    assert!(b_lease["metadata"]["annotations"]["nodeguard.io/cert-sha256"].is_null());

    // fleet status: three covered, the idle Node missing; the renew times are the API
    // server's.
    let (code, status) = fleet_status(&bed, &ns.name, &[]);
    assert_eq!(code, 0, "{status:#}");
    for node in [a, b, c] {
        let r = row(&status, node);
        assert_eq!(r["coverage"], "covered", "{r}");
        assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(r["version_skew"], false);
    }
    assert_eq!(row(&status, idle)["coverage"], "missing");
    // Other tests' Nodes may share the bed; ours are all there.
    let (code, _) = fleet_status(&bed, &ns.name, &["--fail-on", "uncovered"]);
    assert_eq!(code, 3, "a missing node fails --fail-on uncovered");

    // Writes: at most one per interval, counted by the agent, over 5 intervals.
    let before = writes(&agent_b, "renewed") + writes(&agent_b, "created");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5 * INTERVAL_SECS));
    let after = writes(&agent_b, "renewed") + writes(&agent_b, "created");
    let elapsed = t0.elapsed().as_secs_f64();
    let per_interval = (after - before) / (elapsed / INTERVAL_SECS as f64);
    eprintln!(
        "lease writes: {} in {elapsed:.1} s = {per_interval:.2} per {INTERVAL_SECS} s interval (target <= 1)",
        after - before
    );
    assert!(
        after > before,
        "the Lease was not renewed in {elapsed:.1} s"
    );
    assert!(
        after - before <= (elapsed / INTERVAL_SECS as f64).ceil() + 1.0,
        "{} writes in {elapsed:.1} s at one per {INTERVAL_SECS} s",
        after - before
    );
    assert_eq!(writes(&agent_b, "failed"), 0.0);

    // A deleted Lease is created again.
    bed.kubectl(
        &["delete", "lease", "-n", &ns.name, &format!("nodeguard-{b}")],
        None,
    );
    wait_for(
        "the deleted Lease to come back",
        Duration::from_secs(30),
        || {
            lease(&leases(&bed, &ns.name), &format!("nodeguard-{b}"))
                .map(|_| ())
                .ok_or_else(|| "not yet".to_string())
        },
    );
    wait_for(
        "the agent to count the second create",
        Duration::from_secs(10),
        || {
            let n = writes(&agent_b, "created");
            (n == 2.0).then_some(()).ok_or(format!("created = {n}"))
        },
    );

    // A killed agent goes stale after 3 intervals.
    drop(agent_c);
    let killed = Instant::now();
    let status = wait_for(
        "the killed agent's node to go stale",
        Duration::from_secs(60),
        || {
            let (_, status) = fleet_status(&bed, &ns.name, &[]);
            if row(&status, c)["coverage"] == "stale" {
                Ok(status)
            } else {
                Err(format!("{}", row(&status, c)))
            }
        },
    );
    eprintln!("stale {:?} after the kill", killed.elapsed());
    let renewed = lease(&leases(&bed, &ns.name), &format!("nodeguard-{c}")).unwrap()["spec"]
        ["renewTime"]
        .as_str()
        .unwrap()
        .to_string();
    let stale_row = row(&status, c);
    assert!(
        stale_row["renewed_seconds_ago"].as_u64().unwrap() >= 3 * INTERVAL_SECS,
        "{stale_row}"
    );
    assert_eq!(
        stale_row["renewed"].as_str().unwrap()[..19],
        renewed[..19],
        "the renew time is the API server's"
    );
    assert_eq!(row(&status, a)["coverage"], "covered");
    assert_eq!(row(&status, b)["coverage"], "covered");

    // Its Node removed, the Lease left behind is orphaned.
    bed.kubectl(&["delete", "node", c], None);
    let (_, status) = fleet_status(&bed, &ns.name, &[]);
    assert_eq!(row(&status, c)["coverage"], "orphaned", "{status:#}");
    assert!(status["summary"]["orphaned"].as_u64().unwrap() >= 1);

    // The table says the same.
    let table = Command::new(support::nodeguard_bin())
        .args(["fleet", "status", "-n", &ns.name, "--kubeconfig"])
        .arg(bed.var("REALNODE_ADMIN_KUBECONFIG"))
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let line = |node: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap_or_else(|| panic!("no line for {node}:\n{table}"))
            .to_string()
    };
    assert!(line(a).contains("covered"), "{table}");
    assert!(line(idle).contains("missing"), "{table}");
    assert!(line(c).contains("orphaned"), "{table}");

    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(nodes);
}
