//! `nodeguard fleet query` against the real kube-apiserver (v1.20.2) of the real-node bed and
//! three real agents on distinct loopback addresses (127.0.0.2-4, the InternalIPs of three
//! Node objects made here), plus a Node with no agent and a TLS stand-in (`openssl s_server`)
//! whose certificate differs from its Lease.
//!
//! What is checked, each against what a real component says:
//! - the token minted by TokenRequest (audience `nodeguard`, 10 minutes) is refused by the
//!   API server (`kubectl --token` gets 401) and accepted by the agents;
//! - `fleet query processes --sha256` finds a binary running on the two agents that see it
//!   (the third runs in a pid namespace of its own), with the digest `sha256sum` gives;
//! - a Node with no agent is listed as such, and the exit status says the answer is
//!   incomplete;
//! - a Lease whose endpoint points elsewhere changes nothing: the listener there sees no
//!   connection and the agent at the Node's address answers;
//! - a certificate that differs from the Lease's fingerprint is refused before anything is
//!   sent (the stand-in prints every byte it receives: none);
//! - a responder ServiceAccount without the reader role gets 403 from every agent, reported
//!   per node;
//! - run through a `kubectl-nodeguard` symlink on `PATH`, `kubectl nodeguard` works and its
//!   help says so.
//!
//! The Leases are written here with kubectl, in the annotation contract the agent's Lease
//! writer follows (issue 23), so this test checks the reader alone.
//!
//! The bed: `REALNODE_ENV`, else an API-server-only bed brought up here (see
//! tests/support/api_bed.rs). Without one, and without root, `openssl` or `unshare`, the
//! test is skipped loudly, and fails when `CI` is set.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::api_bed::ApiBed;

const BIN: &str = env!("CARGO_BIN_EXE_nodeguard");

fn skip(reason: &str) {
    support::skip("the fleet query test", reason);
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// A child killed (with its process group) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn new_group(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    command.process_group(0)
}

/// A real agent listening on `ip`, TLS with a self-signed certificate written to
/// `served_cert`, checking tokens with the bed's API server as node `node`.
struct Agent {
    _child: Killed,
    port: u16,
    served_cert: PathBuf,
}

fn start_agent(bed: &ApiBed, dir: &Path, ip: &str, node: &str, own_pid_ns: bool) -> Agent {
    let port = free_port(ip);
    let probes = free_port(ip);
    let served_cert = dir.join(format!("{node}.crt"));
    let mut command = if own_pid_ns {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    command
        .args([
            "run",
            "--kube",
            "on",
            "--auth",
            "on",
            "--no-events",
            "--tls",
            "on",
        ])
        .args([
            "--interval",
            "2s",
            "--fs-interval",
            "10m",
            "--log-format",
            "json",
        ])
        .arg("--tls-served-cert-file")
        .arg(&served_cert)
        .arg("--listen")
        .arg(format!("{ip}:{port}"))
        .arg("--probe-listen")
        .arg(format!("{ip}:{probes}"))
        .env("KUBECONFIG", bed.var("REALNODE_AGENT_KUBECONFIG"))
        .env("NODE_NAME", node)
        .stdout(Stdio::null())
        .stderr(File::create(dir.join(format!("{node}.log"))).unwrap());
    let child = Killed(
        new_group(&mut command)
            .spawn()
            .expect("start nodeguard run"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if plain_get(&format!("{ip}:{probes}"), "/readyz").is_some_and(|s| s == 200)
            && served_cert.exists()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent on {ip} never became ready: {}",
            std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    Agent {
        _child: child,
        port,
        served_cert,
    }
}

use std::fs::File;

/// Status of a plain-HTTP GET, `None` when nothing answers.
fn plain_get(addr: &str, path: &str) -> Option<u16> {
    let addr: SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// SHA-256 of a PEM certificate's DER, as openssl and sha256sum compute it.
fn cert_sha256(pem: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -in \"$0\" -outform DER | sha256sum")
        .arg(pem)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn sha256sum(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn node_object(name: &str, ip: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"ng-fleet-test": "1"}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": name}
        ]}
    })
    .to_string()
}

fn lease_object(ns: &str, node: &str, port: u16, fingerprint: &str, endpoint: &str) -> String {
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": format!("nodeguard-{node}"),
            "namespace": ns,
            "annotations": {
                "nodeguard.io/node": node,
                "nodeguard.io/api-port": port.to_string(),
                "nodeguard.io/api-endpoint": endpoint,
                "nodeguard.io/cert-sha256": fingerprint,
                "nodeguard.io/version": env!("CARGO_PKG_VERSION"),
                "nodeguard.io/interval-seconds": "2"
            }
        },
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 6}
    })
    .to_string()
}

/// `nodeguard fleet query ARGS -o json` as the bed's admin.
fn fleet_query(bed: &ApiBed, ns: &str, args: &[&str]) -> (Output, Vec<Value>) {
    let out = Command::new(BIN)
        .args(["fleet", "query", "-n", ns, "-o", "json", "--timeout", "10s"])
        .args(args)
        .env("KUBECONFIG", bed.var("REALNODE_ADMIN_KUBECONFIG"))
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "not a JSON line ({e}): {l}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect();
    (out, lines)
}

/// The bed's admin kubeconfig, impersonating `user` (kubeconfig's `as`): what `user`'s own
/// RBAC allows, nothing more.
fn impersonating_kubeconfig(bed: &ApiBed, dir: &Path, user: &str) -> PathBuf {
    let mut config = bed.kubectl_json(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "json",
    ]);
    for entry in config["users"].as_array_mut().unwrap() {
        entry["user"]["as"] = Value::from(user);
    }
    let file = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&file, config.to_string()).unwrap();
    file
}

/// `nodeguard fleet ARGS --kubeconfig KUBECONFIG`, no other cluster configuration.
fn as_responder(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("fleet")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("KUBECONFIG")
        .env_remove("NODEGUARD_KUBECONFIG")
        .output()
        .unwrap()
}

fn unanswered<'a>(lines: &'a [Value], node: &str) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["node"] == node && l.get("unanswered").is_some())
        .map(|l| &l["unanswered"])
}

fn rows<'a>(lines: &'a [Value], node: &str, key: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["node"] == node)
        .filter_map(|l| l.get(key))
        .collect()
}

fn prerequisites() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (agents on 127.0.0.2-4, a pid namespace)".into());
    }
    for tool in ["openssl", "unshare", "sha256sum"] {
        if support::which(tool).is_none() {
            return Err(format!("{tool} is not installed"));
        }
    }
    Ok(())
}

#[test]
fn a_fleet_query_asks_every_nodes_agent_with_a_narrow_token_at_the_nodes_own_address() {
    if let Err(reason) = prerequisites() {
        return skip(&reason);
    }
    let bed = match ApiBed::find("fleetq") {
        Ok(bed) => bed,
        Err(reason) => return skip(&reason),
    };
    let tag = format!("ngfq{}", std::process::id());
    let ns = tag.clone();
    let dir = tempfile::tempdir().unwrap();

    // The agents' identity may review tokens; the responder ServiceAccount reads the API.
    bed.apply_agent_clusterrole();
    bed.apply_manifest("clusterrole-api-reader.yaml");
    bed.kubectl(&["create", "namespace", &ns], None);
    for file in ["responder-serviceaccount.yaml", "responder-binding.yaml"] {
        let text = std::fs::read_to_string(support::repo().join("manifests").join(file)).unwrap();
        let text = text
            .replace("namespace: nodeguard\n", &format!("namespace: {ns}\n"))
            .replace(
                "name: nodeguard-responder\n  labels",
                &format!("name: {tag}-responder\n  labels"),
            );
        bed.kubectl(&["apply", "-f", "-"], Some(&text));
    }
    // A second responder that holds no reader role.
    bed.kubectl(
        &["-n", &ns, "create", "serviceaccount", "unbound-responder"],
        None,
    );

    // A binary only two of the three agents see running.
    let marker = dir.path().join(format!("{tag}-marker"));
    std::fs::copy("/bin/sleep", &marker).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&marker)
        .unwrap()
        .write_all(tag.as_bytes())
        .unwrap();
    let digest = sha256sum(&marker);
    let _marker = Killed(new_group(Command::new(&marker).arg("600")).spawn().unwrap());

    let names: Vec<String> = ["a", "b", "c", "missing", "impostor"]
        .iter()
        .map(|s| format!("{tag}-{s}"))
        .collect();
    let ips = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ];
    for (name, ip) in names.iter().zip(ips) {
        bed.kubectl(&["create", "-f", "-"], Some(&node_object(name, ip)));
    }
    let a = start_agent(&bed, dir.path(), ips[0], &names[0], false);
    let b = start_agent(&bed, dir.path(), ips[1], &names[1], false);
    let c = start_agent(&bed, dir.path(), ips[2], &names[2], true);
    // b's Lease names another endpoint, where a listener counts connections.
    let decoy = TcpListener::bind((ips[4], b.port)).unwrap();
    decoy.set_nonblocking(true).unwrap();
    for (i, agent) in [&a, &b, &c].into_iter().enumerate() {
        let (name, ip) = (&names[i], ips[i]);
        let endpoint = if i == 1 {
            format!("{}:{}", ips[4], b.port)
        } else {
            format!("{ip}:{}", agent.port)
        };
        let lease = lease_object(
            &ns,
            name,
            agent.port,
            &cert_sha256(&agent.served_cert),
            &endpoint,
        );
        bed.kubectl(&["apply", "-f", "-"], Some(&lease));
    }
    // The impostor: a TLS server whose certificate is not the one its Lease names; it
    // prints every byte it receives.
    let impostor_port = free_port(ips[4]);
    let key = dir.path().join("impostor.key");
    let cert = dir.path().join("impostor.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=impostor", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let received = dir.path().join("impostor.out");
    let _impostor = Killed(
        new_group(
            Command::new("openssl")
                .args(["s_server", "-quiet", "-accept"])
                .arg(format!("{}:{impostor_port}", ips[4]))
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(Stdio::piped())
                .stdout(File::create(&received).unwrap())
                .stderr(Stdio::null()),
        )
        .spawn()
        .unwrap(),
    );
    let lease = lease_object(
        &ns,
        &names[4],
        impostor_port,
        &cert_sha256(&a.served_cert),
        "x:1",
    );
    bed.kubectl(&["apply", "-f", "-"], Some(&lease));
    // A stuck agent: the kernel completes the connection into the listener's backlog and
    // nobody ever answers it (what a stopped or wedged agent process looks like from outside).
    let stuck_name = format!("{tag}-stuck");
    let stuck_ip = "127.0.0.7";
    let stuck = TcpListener::bind((stuck_ip, 0)).unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    bed.kubectl(
        &["create", "-f", "-"],
        Some(&node_object(&stuck_name, stuck_ip)),
    );
    let lease = lease_object(
        &ns,
        &stuck_name,
        stuck_port,
        &cert_sha256(&a.served_cert),
        "x:1",
    );
    bed.kubectl(&["apply", "-f", "-"], Some(&lease));
    std::thread::sleep(Duration::from_millis(500));

    // Where does this binary run?
    let (out, lines) = fleet_query(&bed, &ns, &["processes", "--sha256", &digest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "some node did not answer: {stderr}"
    );
    for name in &names[..2] {
        let found = rows(&lines, name, "process");
        assert!(
            !found.is_empty(),
            "{name} must see the marker: {lines:#?}\n{stderr}"
        );
        for process in found {
            assert_eq!(process["sha256"], digest.as_str(), "{process}");
        }
        assert!(unanswered(&lines, name).is_none());
    }
    assert!(
        rows(&lines, &names[2], "process").is_empty(),
        "c runs in its own pid namespace"
    );
    assert!(
        unanswered(&lines, &names[2]).is_none(),
        "c answered (with no rows)"
    );
    assert_eq!(unanswered(&lines, &names[3]).unwrap()["reason"], "no-lease");
    let impostor = unanswered(&lines, &names[4]).unwrap();
    assert_eq!(impostor["reason"], "certificate-mismatch", "{impostor}");
    assert!(
        impostor["message"]
            .as_str()
            .unwrap()
            .contains(&cert_sha256(&cert)),
        "names the served fingerprint: {impostor}"
    );
    // Given up at the connect timeout (2 s by default), not after the whole --timeout (10 s
    // here), and said so.
    let stuck_why = unanswered(&lines, &stuck_name).unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(stuck_why["reason"], "timeout", "{stuck_why}");
    assert!(
        stuck_why["message"]
            .as_str()
            .unwrap()
            .contains("no connection and TLS handshake within 2s"),
        "{stuck_why}"
    );
    drop(stuck);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read(&received).unwrap(),
        b"",
        "the impostor received application data"
    );
    assert!(
        decoy.accept().is_err(),
        "the endpoint named in a Lease was dialled"
    );
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["answered"], 3, "{summary}");

    // A responder holding only the shipped fleet roles: the reader ClusterRole and Role give
    // `fleet status`; a query is refused its token until the query Role is bound too, then
    // asks every agent as the admin's query did.
    let oncall = format!("{tag}-oncall");
    let kubeconfig = impersonating_kubeconfig(&bed, dir.path(), &oncall);
    for file in [
        "clusterrole-fleet-reader.yaml",
        "role-fleet-reader.yaml",
        "responder-role.yaml",
    ] {
        let text = std::fs::read_to_string(support::repo().join("manifests").join(file)).unwrap();
        let text = text
            .replace("namespace: nodeguard\n", &format!("namespace: {ns}\n"))
            .replace(
                "name: nodeguard-fleet-reader\n",
                &format!("name: {tag}-fleet-reader\n"),
            );
        bed.kubectl(&["apply", "-f", "-"], Some(&text));
    }
    let reader = format!("{tag}-fleet-reader");
    bed.kubectl(
        &[
            "create",
            "clusterrolebinding",
            &oncall,
            "--clusterrole",
            &reader,
            "--user",
            &oncall,
        ],
        None,
    );
    bed.kubectl(
        &[
            "-n",
            &ns,
            "create",
            "rolebinding",
            &oncall,
            "--role",
            &reader,
            "--user",
            &oncall,
        ],
        None,
    );
    let status = as_responder(&kubeconfig, &["status", "-n", &ns, "-o", "json"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "fleet status with the reader roles: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let coverage = |node: &str| {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["node"] == node)
            .map(|row| row["coverage"].clone())
    };
    for name in &names {
        assert!(coverage(name).is_some(), "{name} is listed: {status}");
    }
    assert_eq!(coverage(&names[3]).unwrap(), "missing", "{status}");
    let refused = as_responder(&kubeconfig, &["query", "-n", &ns, "findings"]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{why}");
    assert!(why.contains("mint a token"), "{why}");
    bed.kubectl(
        &[
            "-n",
            &ns,
            "create",
            "rolebinding",
            &format!("{oncall}-query"),
            "--role",
            "nodeguard-fleet-query",
            "--user",
            &oncall,
        ],
        None,
    );
    let mut answered = Value::Null;
    for _ in 0..20 {
        let out = as_responder(&kubeconfig, &["query", "-n", &ns, "-o", "json", "findings"]);
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok());
        if let Some(summary) = last.map(|l| l["summary"].clone()) {
            answered = summary["answered"].clone();
            if answered == 3 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(answered, 3, "the responder's query with the shipped roles");

    // The minted token: the API server refuses it, the agents accept it.
    let request = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": ["nodeguard"], "expirationSeconds": 600}
    });
    let minted = bed.kubectl(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/nodeguard-responder/token"),
            "-f",
            "-",
        ],
        Some(&request.to_string()),
    );
    let minted: Value = serde_json::from_str(&minted).unwrap();
    let token = minted["status"]["token"].as_str().unwrap().to_string();
    let refused = Command::new(bed.var("REALNODE_KUBECTL"))
        .arg("--kubeconfig")
        .arg(bed.var("REALNODE_STRANGER_KUBECONFIG"))
        .args(["--token", &token, "get", "--raw", "/api"])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("Unauthorized"),
        "the API server must refuse a token minted for the agents: {why}"
    );
    let accepted = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&a.served_cert)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("https://{}:{}/v1/findings", ips[0], a.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&accepted.stdout), "200");

    // Without the reader role every agent says 403, node by node.
    let (out, lines) = fleet_query(
        &bed,
        &ns,
        &["--service-account", "unbound-responder", "findings"],
    );
    assert_eq!(out.status.code(), Some(4));
    for name in &names[..3] {
        let why = unanswered(&lines, name).unwrap_or_else(|| panic!("{name}: {lines:#?}"));
        assert_eq!(why["reason"], "403", "{why}");
        assert!(
            why["message"]
                .as_str()
                .unwrap()
                .contains("unbound-responder"),
            "{why}"
        );
    }
    assert!(lines.iter().all(|l| l.get("finding").is_none()));

    for name in &names {
        let _ = bed.kubectl(&["delete", "node", name, "--wait=false"], None);
    }
    let _ = bed.kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
    let _ = bed.kubectl(
        &[
            "delete",
            "clusterrolebinding",
            &format!("{tag}-responder"),
            "--wait=false",
        ],
        None,
    );
    let _ = bed.kubectl(
        &[
            "delete",
            "clusterrolebinding",
            &format!("{tag}-oncall"),
            "--wait=false",
        ],
        None,
    );
    let _ = bed.kubectl(
        &[
            "delete",
            "clusterrole",
            &format!("{tag}-fleet-reader"),
            "--wait=false",
        ],
        None,
    );
}

#[test]
fn as_a_kubectl_plugin_the_help_says_kubectl_nodeguard() {
    let kubectl = std::env::var_os("REALNODE_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/nodeguard-realnode/v1.20.2/bin/kubectl"));
    if !kubectl.exists() {
        return skip(&format!(
            "no kubectl at {} (tests/realnode/build.sh builds it)",
            kubectl.display()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, dir.path().join("kubectl-nodeguard")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(&kubectl)
        .args(["nodeguard", "fleet", "query", "--help"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        help.contains("Usage: kubectl nodeguard fleet query"),
        "{help}"
    );
    let listed = Command::new(&kubectl)
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("kubectl-nodeguard"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
}
