//! `nodeguard run` authenticates its API against a real kube-apiserver (v1.20.2, static
//! tokens, RBAC) from the real-node test bed (`tests/realnode/README.md`): TokenReview and
//! SubjectAccessReview as the shipped ClusterRoles grant them, for an admin, the agent's own
//! identity and a stranger, over plain HTTP on loopback and over TLS (`nodeguard query
//! --ca-file`); and secrets in command lines never reach the API.
//!
//! The bed is found through `REALNODE_ENV` (the `env` file `tests/realnode/up.sh DIR`
//! writes); without it, the test brings up an API-server-only bed itself (`up.sh
//! --no-kubelet`) when the bed's binaries are built, and takes it down afterwards. Without
//! either it is skipped loudly — and fails when `CI` is set.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::api_bed::ApiBed;

const BIN: &str = env!("CARGO_BIN_EXE_nodeguard");

fn skip(reason: &str) {
    support::skip("the real API server test", reason);
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// One GET with an optional bearer token: (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: agent\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of head")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, body.to_string()))
}

struct Agent {
    child: Child,
    port: u16,
    probes: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(bed: &ApiBed, extra: &[&str]) -> Agent {
    let port = free_port();
    let probes = free_port();
    let child = Command::new(BIN)
        .args(["run", "--kube", "on", "--auth", "on", "--no-events"])
        .args(extra)
        .args([
            "--interval",
            "2s",
            "--fs-interval",
            "10m",
            "--log-format",
            "json",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--probe-listen")
        .arg(format!("127.0.0.1:{probes}"))
        .env("KUBECONFIG", bed.var("REALNODE_AGENT_KUBECONFIG"))
        .env("NODE_NAME", bed.var("REALNODE_NODE"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nodeguard run");
    let agent = Agent {
        child,
        port,
        probes,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = get(agent.probes, "/readyz", None) {
            return agent;
        }
        assert!(Instant::now() < deadline, "the agent never became ready");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_api_asks_the_real_api_server_who_may_read_it() {
    let bed = match ApiBed::find("apiauth") {
        Ok(bed) => bed,
        Err(reason) => return skip(&reason),
    };
    // The agent's identity holds the ClusterRole this branch ships (with the review grants),
    // and the reader roles exist.
    bed.apply_agent_clusterrole();
    bed.apply_manifest("clusterrole-metrics-reader.yaml");

    // A process whose command line holds secrets, as in the issue.
    let mut secretive = Command::new("sh")
        .args([
            "-c",
            "sleep 120; true",
            "ng-apiauth",
            "--password=hunter2-apiauth",
            "--db=postgres://u:pw-apiauth@db/x",
        ])
        .spawn()
        .unwrap();

    let agent = start_agent(&bed, &[]);
    let admin = bed.var("REALNODE_ADMIN_TOKEN").to_string();
    let agent_token = bed.var("REALNODE_AGENT_TOKEN").to_string();
    let stranger = bed.var("REALNODE_STRANGER_TOKEN").to_string();

    // The agent runs in this test's network namespace, which is pid 1's (the host's) or
    // cannot be told apart from it (pid 1's link unreadable): either way its loopback counts
    // as the node's, and a loopback caller needs a token like anyone else. Only in a
    // namespace of its own (the DaemonSet's pod) is loopback trusted.
    let own_netns = std::fs::read_link("/proc/self/ns/net");
    let host_netns = std::fs::read_link("/proc/1/ns/net");
    assert!(
        !matches!((&own_netns, &host_netns), (Ok(own), Ok(host)) if own != host),
        "this test must not run in a network namespace of its own: {own_netns:?} {host_netns:?}"
    );
    let (status, body) = get(agent.port, "/v1/findings", None).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(agent.port, "/v1/findings", Some("not-a-token")).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"status\":401"), "{body}");

    let (status, body) = get(agent.port, "/v1/findings", Some(&admin)).unwrap();
    assert_eq!(status, 200, "admin (system:masters): {body}");
    assert!(body.contains("\"findings\""), "{body}");
    assert_eq!(get(agent.port, "/metrics", Some(&admin)).unwrap().0, 200);

    for (who, token) in [
        ("the agent's own identity", &agent_token),
        ("a stranger", &stranger),
    ] {
        for path in ["/v1/findings", "/v1/processes", "/v1/report", "/metrics"] {
            let (status, body) = get(agent.port, path, Some(token)).unwrap();
            assert_eq!(status, 403, "{who} on {path}: {body}");
            assert!(!body.contains("hunter2"), "{body}");
        }
    }
    // The probes need no token.
    assert_eq!(get(agent.probes, "/healthz", None).unwrap().0, 200);
    assert_eq!(get(agent.port, "/healthz", None).unwrap().0, 200);

    // Bound to the metrics reader role, the stranger reads /metrics and still nothing else.
    let binding = format!("ng-apiauth-{}", std::process::id());
    bed.kubectl(
        &[
            "create",
            "clusterrolebinding",
            &binding,
            "--clusterrole",
            "nodeguard-metrics-reader",
            "--user",
            "stranger",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = get(agent.port, "/metrics", Some(&stranger)).unwrap();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the binding never took effect: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, body) = get(agent.port, "/v1/report", Some(&stranger)).unwrap();
    assert_eq!(status, 403, "metrics reader on /v1/report: {body}");
    bed.kubectl(&["delete", "clusterrolebinding", &binding], None);

    // Command lines reach the API redacted.
    let pid = secretive.id();
    let (status, body) = get(
        agent.port,
        &format!("/v1/processes?pid={pid}"),
        Some(&admin),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("--password=***"), "{body}");
    assert!(body.contains("postgres://***@db/x"), "{body}");
    assert!(
        !body.contains("hunter2") && !body.contains("pw-apiauth"),
        "{body}"
    );

    // `nodeguard query` sends the token it is given, and says why it was refused.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{admin}\n")).unwrap();
    let url = format!("http://127.0.0.1:{}", agent.port);
    let ok = Command::new(BIN)
        .args(["query", "--url", &url, "--token-file"])
        .arg(&token_file)
        .args(["-o", "json", "findings"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = Command::new(BIN)
        .args(["query", "--url", &url, "--token", &stranger, "findings"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("stranger"),
        "{stderr}"
    );
    // With only a kubeconfig, its user's token is not sent over plain http (anything
    // holding the port would collect it): the agent answers 401 and the CLI says why.
    let via_kubeconfig = Command::new(BIN)
        .args(["query", "--url", &url, "findings"])
        .env("KUBECONFIG", bed.var("REALNODE_STRANGER_KUBECONFIG"))
        .env_remove("NODEGUARD_TOKEN")
        .env_remove("NODEGUARD_TOKEN_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&via_kubeconfig.stderr);
    assert!(
        stderr.contains("not sending the kubeconfig user's token") && stderr.contains("401"),
        "{stderr}"
    );

    // Over TLS (what the DaemonSet serves beyond loopback) the same tokens get the same
    // answers, and `nodeguard query` verifies the agent with the certificate it serves.
    let served = dir.path().join("serving.crt");
    let tls_agent = start_agent(
        &bed,
        &[
            "--tls",
            "on",
            "--tls-served-cert-file",
            served.to_str().unwrap(),
        ],
    );
    let https = format!("https://127.0.0.1:{}", tls_agent.port);
    let query = |token: &str| {
        Command::new(BIN)
            .args(["query", "--url", &https, "--ca-file"])
            .arg(&served)
            .args(["--token", token, "-o", "json", "findings"])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    };
    let ok = query(&admin);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"findings\""));
    let refused = query(&stranger);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("403") && stderr.contains("stranger"),
        "{stderr}"
    );
    // To an agent it verifies, the kubeconfig user's token is sent.
    let via_kubeconfig = Command::new(BIN)
        .args(["query", "--url", &https, "--ca-file"])
        .arg(&served)
        .arg("findings")
        .env("KUBECONFIG", bed.var("REALNODE_STRANGER_KUBECONFIG"))
        .env_remove("NODEGUARD_TOKEN")
        .env_remove("NODEGUARD_TOKEN_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&via_kubeconfig.stderr);
    assert!(stderr.contains("stranger may not get"), "{stderr}");
    let no_token = Command::new(BIN)
        .args(["query", "--url", &https, "--ca-file"])
        .arg(&served)
        .arg("findings")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert!(
        !no_token.status.success() && stderr.contains("401"),
        "{stderr}"
    );
    // Plain HTTP to the TLS port is answered 400 whatever token it carries: no data.
    let (status, body) = get(tls_agent.port, "/v1/findings", Some(&admin)).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("findings\""), "{body}");

    let _ = secretive.kill();
    let _ = secretive.wait();
}
