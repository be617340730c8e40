//! The API port over TLS, checked with clients that verify: `curl --cacert`, `openssl
//! s_client` and `openssl x509`, never with our own TLS code.
//!
//! - the self-signed certificate the agent makes is the one it logs, writes out and serves,
//!   over TLS 1.3 and 1.2 (1.1 refused; `--tls-min-version 1.3` refuses 1.2), and curl
//!   verifies it; plain HTTP to the TLS port is answered 400 and nothing else, while the
//!   probe port stays plain HTTP;
//! - certificate files renewed on disk reach new connections without a restart (and at once
//!   on SIGHUP); a broken or mismatched pair is refused with a logged reason and the old one
//!   stays served;
//! - a peer that stalls its handshakes holds at most its per-peer share of connections, and
//!   only until the handshake timeout: `/metrics` over TLS from another address and
//!   `/healthz` answer meanwhile; a connection idle after its handshake is closed like a
//!   plain one;
//! - `nodeguard query` verifies with `--ca-file`, and without it (or with another CA) fails
//!   saying why; `--insecure-skip-tls-verify` works and warns;
//! - listening beyond loopback (in a network namespace of the test's own), the agent serves
//!   https without being told;
//! - a real Prometheus scrapes it with the scrape job of docs/api.md (`scheme: https`,
//!   `insecure_skip_verify`), verifies it when given the served certificate as CA, and fails
//!   the scrape with another CA.
//!
//! Needs curl and openssl (unshare, nsenter and ip for the namespace test, prometheus for
//! the scrape): without them each
//! test says why it skipped; with `CI` set it fails instead. Only loopback addresses are
//! ever connected to. Run: `cargo test -p nodeguard --test api_tls`.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::agent::Agent;
use support::cmd::{run, run_ok, Output};
use support::http::free_port;
use support::wait_for;

const FIRST_SCAN: Duration = Duration::from_secs(120);

/// Whether the tools are here; otherwise a loud skip (a failure under `CI`).
fn tools(needed: &[&str]) -> bool {
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|t| support::which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("api_tls: SKIPPED: missing {missing:?}");
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI must run this test)");
    }
    eprintln!("{why}");
    false
}

/// An agent serving TLS on loopback (`--tls on`), with its probes on a port of their own
/// and its served certificate written to `dir/serving.crt`.
struct TlsAgent {
    agent: Agent,
    probes: u16,
    served: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsAgent {
    fn start(extra: &[&str]) -> TlsAgent {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("serving.crt");
        let probes = free_port();
        let probe_listen = format!("127.0.0.1:{probes}");
        let mut args = vec![
            "--tls-served-cert-file",
            served.to_str().unwrap(),
            "--probe-listen",
            &probe_listen,
            "--interval",
            "2s",
            "--exec-events",
            "off",
        ];
        if !extra.contains(&"--tls-cert-file") {
            args.extend(["--tls", "on"]);
        }
        args.extend_from_slice(extra);
        let agent = Agent::start(&args);
        let tls = TlsAgent {
            agent,
            probes,
            served,
            _dir: dir,
        };
        wait_for("the agent's /readyz on the probe port", FIRST_SCAN, || {
            let r = support::http::get(tls.probes, "/readyz", None, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            (r.status == 200)
                .then_some(())
                .ok_or(format!("{}: {}", r.status, r.body))
        });
        tls
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.agent.port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.agent.port)
    }
}

/// `openssl x509 -fingerprint -sha256` of a PEM file: `AB:CD:…`.
fn file_fingerprint(pem: &Path) -> String {
    let out = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    out.stdout
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `openssl s_client` to `addr` with `extra` options (stdin is empty, so it closes at once).
fn s_client(addr: &str, extra: &[&str]) -> Output {
    let mut args = vec!["s_client", "-connect", addr, "-servername", "localhost"];
    args.extend_from_slice(extra);
    run("openssl", &args)
}

/// The fingerprint of the certificate a fresh connection to `addr` is served.
fn served_fingerprint(addr: &str, dir: &Path) -> Result<String, String> {
    let out = s_client(addr, &[]);
    let text = &out.stdout;
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| format!("no certificate in s_client's output:\n{out}"))?;
    let end = text[start..]
        .find("-----END CERTIFICATE-----")
        .ok_or("no certificate end")?
        + start
        + "-----END CERTIFICATE-----".len();
    let pem = dir.join(format!("served-{}.pem", support::random_hex(8)));
    std::fs::write(&pem, format!("{}\n", &text[start..end])).unwrap();
    let fingerprint = file_fingerprint(&pem);
    let _ = std::fs::remove_file(&pem);
    Ok(fingerprint)
}

/// A self-signed P-256 certificate for 127.0.0.1 made by openssl: (cert, key).
fn openssl_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-days",
            "2",
            "-subj",
            &format!("/CN=nodeguard-test-{name}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
    );
    (cert, key)
}

/// Replaces `to` with a copy of `from` through a rename, as the kubelet swaps a Secret's
/// files.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// `curl` with a status code on the last line of stdout.
fn curl(args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "20", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    run("curl", &all)
}

fn status_of(out: &Output) -> &str {
    out.stdout.lines().last().unwrap_or_default()
}

#[test]
fn curl_and_openssl_verify_the_self_signed_certificate_the_agent_logs_and_serves() {
    if !tools(&["curl", "openssl"]) {
        return;
    }
    let tls = TlsAgent::start(&[]);
    let served = tls.served.to_str().unwrap();
    // The file it wrote is the certificate it logged and the one a connection gets.
    let fingerprint = file_fingerprint(&tls.served);
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    let log = tls.agent.log_text();
    assert!(
        log.contains(&format!("\"sha256_fingerprint\":\"{fingerprint}\"")),
        "the log names another fingerprint than the file's {fingerprint}:\n{log}"
    );
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        served_fingerprint(&tls.addr(), dir.path()).unwrap(),
        fingerprint
    );

    // curl verifies it (chain and name) and reads /metrics.
    let out = curl(&["--cacert", served, &tls.url("/metrics")]);
    assert_eq!(status_of(&out), "200", "{out}");
    assert!(out.stdout.contains("nodeguard_scans_total"), "{out}");
    // By "localhost" too, a name the certificate holds.
    let by_name = format!("https://localhost:{}/healthz", tls.agent.port);
    let out = curl(&[
        "--cacert",
        served,
        "--resolve",
        &format!("localhost:{}:127.0.0.1", tls.agent.port),
        &by_name,
    ]);
    assert_eq!(status_of(&out), "200", "{out}");
    // Without the certificate curl trusts nothing the agent made.
    let out = curl(&[&tls.url("/metrics")]);
    assert!(
        !out.success(),
        "curl trusted a self-signed certificate: {out}"
    );
    assert!(!out.stdout.contains("nodeguard_"), "{out}");

    // TLS 1.3 by default, 1.2 when asked, 1.1 refused by the server.
    for (flag, protocol) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let out = s_client(
            &tls.addr(),
            &[flag, "-CAfile", served, "-verify_return_error"],
        );
        assert!(out.success(), "{out}");
        assert!(
            out.stdout.contains(&format!("New, {protocol}, Cipher is"))
                && out.stdout.contains("Verify return code: 0 (ok)"),
            "{out}"
        );
        assert!(!out.stdout.contains("Cipher is (NONE)"), "{out}");
    }
    let out = s_client(&tls.addr(), &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!out.success(), "TLS 1.1 was accepted: {out}");
    assert!(out.stdout.contains("Cipher is (NONE)"), "{out}");

    // Plain HTTP to the TLS port: 400 saying so, never an API answer.
    let out = curl(&[&format!("http://127.0.0.1:{}/v1/report", tls.agent.port)]);
    assert_eq!(status_of(&out), "400", "{out}");
    assert!(
        out.stdout.contains("HTTP request to an HTTPS server"),
        "{out}"
    );
    let raw =
        support::http::get(tls.agent.port, "/metrics", None, Duration::from_secs(10)).unwrap();
    assert_eq!(raw.status, 400);
    assert!(!raw.body.contains("nodeguard_"), "{}", raw.body);
    // The probe port stays plain HTTP for the kubelet.
    let probe = support::http::get(tls.probes, "/healthz", None, Duration::from_secs(10)).unwrap();
    assert_eq!(probe.status, 200, "{}", probe.body);
}

#[test]
fn tls_min_version_1_3_refuses_tls_1_2() {
    if !tools(&["openssl"]) {
        return;
    }
    let tls = TlsAgent::start(&["--tls-min-version", "1.3"]);
    let served = tls.served.to_str().unwrap();
    let out = s_client(&tls.addr(), &["-tls1_2", "-CAfile", served]);
    assert!(!out.success(), "TLS 1.2 was accepted: {out}");
    assert!(out.stdout.contains("Cipher is (NONE)"), "{out}");
    let out = s_client(
        &tls.addr(),
        &["-tls1_3", "-CAfile", served, "-verify_return_error"],
    );
    assert!(
        out.success() && out.stdout.contains("New, TLSv1.3, Cipher is"),
        "{out}"
    );
}

#[test]
fn renewed_certificate_files_reach_new_connections_and_a_broken_pair_keeps_the_old_one() {
    if !tools(&["curl", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = openssl_pair(dir.path(), "a");
    let (cert_b, key_b) = openssl_pair(dir.path(), "b");
    let (cert_c, key_c) = openssl_pair(dir.path(), "c");
    // A Secret-like directory the agent reads.
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    let (crt, key) = (secret.join("tls.crt"), secret.join("tls.key"));
    replace(&cert_a, &crt);
    replace(&key_a, &key);
    let tls = TlsAgent::start(&[
        "--tls-cert-file",
        crt.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-reload-interval",
        "1s",
    ]);
    let fp = |p: &Path| file_fingerprint(p);
    assert_eq!(
        served_fingerprint(&tls.addr(), dir.path()).unwrap(),
        fp(&cert_a)
    );
    // The served-certificate file follows the files given.
    assert_eq!(fp(&tls.served), fp(&cert_a));

    // A renewal (both files swapped): the next connection gets B, no restart.
    replace(&key_b, &key);
    replace(&cert_b, &crt);
    let want = fp(&cert_b);
    wait_for(
        "the renewed certificate to be served",
        Duration::from_secs(30),
        || {
            let got = served_fingerprint(&tls.addr(), dir.path())?;
            (got == want).then_some(()).ok_or(got)
        },
    );
    let out = curl(&["--cacert", cert_b.to_str().unwrap(), &tls.url("/metrics")]);
    assert_eq!(status_of(&out), "200", "{out}");
    let out = curl(&["--cacert", cert_a.to_str().unwrap(), &tls.url("/metrics")]);
    assert!(!out.success(), "the old certificate is still served: {out}");
    assert_eq!(fp(&tls.served), want);

    // A key file that is not a key: refused, logged, B stays.
    std::fs::write(dir.path().join("garbage"), "not a key\n").unwrap();
    replace(&dir.path().join("garbage"), &key);
    wait_for(
        "the refusal of the broken key in the log",
        Duration::from_secs(30),
        || {
            let log = tls.agent.log_text();
            (log.contains("refused the new TLS certificate files")
                && log.contains("not a PEM private key"))
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
        },
    );
    assert_eq!(served_fingerprint(&tls.addr(), dir.path()).unwrap(), want);

    // A pair that does not fit (C's certificate, B's key): refused, B stays.
    replace(&key_b, &key);
    replace(&cert_c, &crt);
    wait_for(
        "the refusal of the mismatched pair in the log",
        Duration::from_secs(30),
        || {
            tls.agent
                .log_text()
                .contains("does not fit this certificate")
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    );
    assert_eq!(served_fingerprint(&tls.addr(), dir.path()).unwrap(), want);
    let out = curl(&["--cacert", cert_b.to_str().unwrap(), &tls.url("/metrics")]);
    assert_eq!(status_of(&out), "200", "{out}");

    // Its key arrives: C is served.
    replace(&key_c, &key);
    let want = fp(&cert_c);
    wait_for(
        "the completed pair to be served",
        Duration::from_secs(30),
        || {
            let got = served_fingerprint(&tls.addr(), dir.path())?;
            (got == want).then_some(()).ok_or(got)
        },
    );
}

/// A connection from `source` to `port` that then says nothing, or only the first bytes of
/// a TLS record.
fn stalling_connection(source: Ipv4Addr, port: u16, partial_hello: bool) -> Option<TcpStream> {
    let socket = socket2_free_connect(source, port)?;
    if partial_hello {
        let mut s = &socket;
        let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    }
    Some(socket)
}

/// Connects to 127.0.0.1:`port` from `source` (any 127/8 address is this machine's).
fn socket2_free_connect(source: Ipv4Addr, port: u16) -> Option<TcpStream> {
    // std cannot bind before connect: `curl --interface` can, and so can a raw socket.
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh socket fd, owned by the TcpStream made from it (or closed on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let stream = TcpStream::from_raw_fd(fd);
        let bind = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(source).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&raw const bind).cast(), len) != 0 {
            return None;
        }
        let to = libc::sockaddr_in {
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            ..bind
        };
        if libc::connect(fd, (&raw const to).cast(), len) != 0 {
            return None;
        }
        Some(stream)
    }
}

/// Whether the server still holds `stream` open (nothing to read yet, no EOF, no reset).
fn held(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    let open =
        matches!((&*stream).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

#[test]
fn a_peer_stalling_its_handshakes_starves_neither_metrics_nor_probes() {
    if !tools(&["curl", "openssl"]) {
        return;
    }
    let tls = TlsAgent::start(&[]);
    let staller = Ipv4Addr::new(127, 0, 0, 1);
    // 200 connections that never finish a handshake: silent, or a ClientHello cut short.
    let stalls: Vec<TcpStream> = (0..200)
        .filter_map(|i| stalling_connection(staller, tls.agent.port, i % 2 == 0))
        .collect();
    assert_eq!(stalls.len(), 200, "the listen backlog refused connections");
    // The accept loop has seen them all once a request from elsewhere is answered.
    let other = "127.0.0.2";
    let out = curl(&[
        "--cacert",
        tls.served.to_str().unwrap(),
        "--interface",
        other,
        &tls.url("/metrics"),
    ]);
    assert_eq!(
        status_of(&out),
        "200",
        "/metrics from {other} while {staller} stalls: {out}"
    );
    assert!(out.stdout.contains("nodeguard_scans_total"), "{out}");
    let probe = support::http::get(tls.probes, "/healthz", None, Duration::from_secs(10)).unwrap();
    assert_eq!(probe.status, 200, "{}", probe.body);
    // The stalling peer holds at most its per-peer share (32); the rest was closed at once.
    let holding = stalls.iter().filter(|s| held(s)).count();
    assert!(
        holding <= 32,
        "{holding} stalled handshakes are held open, more than one peer's 32"
    );
    assert!(
        holding > 0,
        "no stalled handshake was held at all: was the test too slow?"
    );
    // And not for long: the handshake timeout closes every one of them.
    wait_for(
        "the server to close every stalled handshake",
        Duration::from_secs(60),
        || {
            let still = stalls.iter().filter(|s| held(s)).count();
            (still == 0)
                .then_some(())
                .ok_or(format!("{still} still open"))
        },
    );
    // The stalling address is served again once its handshakes are gone.
    let out = curl(&[
        "--cacert",
        tls.served.to_str().unwrap(),
        &tls.url("/healthz"),
    ]);
    assert_eq!(status_of(&out), "200", "{out}");
}

#[test]
fn query_verifies_https_with_a_ca_file_and_says_why_without_one() {
    if !tools(&["openssl"]) {
        return;
    }
    let tls = TlsAgent::start(&[]);
    let bin = support::nodeguard_bin();
    let url = format!("https://127.0.0.1:{}", tls.agent.port);
    let served = tls.served.to_str().unwrap();
    let query = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(bin);
        command
            .arg("query")
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("NODEGUARD_URL")
            .env_remove("NODEGUARD_CA_FILE")
            .env_remove("NODEGUARD_TOKEN");
        for (k, v) in env {
            command.env(k, v);
        }
        let shown = format!("{env:?} nodeguard query {}", args.join(" "));
        support::cmd::run_command(command, shown, Duration::from_secs(60))
    };

    let ok = query(
        &["--url", &url, "--ca-file", served, "-o", "json", "findings"],
        &[],
    );
    assert!(ok.success(), "{ok}");
    assert!(ok.stdout.contains("\"findings\""), "{ok}");

    // What the DaemonSet sets in the agent's container: no flag needed.
    let ok = query(
        &["-o", "json", "findings"],
        &[("NODEGUARD_URL", &url), ("NODEGUARD_CA_FILE", served)],
    );
    assert!(ok.success(), "{ok}");

    let refused = query(&["--url", &url, "findings"], &[]);
    assert!(!refused.success(), "{refused}");
    assert!(
        refused.stderr.contains("not trusted") && refused.stderr.contains("--ca-file"),
        "{refused}"
    );
    assert!(!refused.stdout.contains("findings"), "{refused}");

    let dir = tempfile::tempdir().unwrap();
    let (other, _) = openssl_pair(dir.path(), "other");
    let refused = query(
        &[
            "--url",
            &url,
            "--ca-file",
            other.to_str().unwrap(),
            "findings",
        ],
        &[],
    );
    assert!(!refused.success(), "{refused}");
    assert!(
        refused
            .stderr
            .contains("not signed by a certificate of --ca-file"),
        "{refused}"
    );

    let insecure = query(
        &[
            "--url",
            &url,
            "--insecure-skip-tls-verify",
            "-o",
            "json",
            "findings",
        ],
        &[],
    );
    assert!(insecure.success(), "{insecure}");
    assert!(
        insecure
            .stderr
            .contains("warning: --insecure-skip-tls-verify"),
        "{insecure}"
    );
    // In the DaemonSet's container NODEGUARD_CA_FILE is set: the flag still wins.
    let insecure = query(
        &["--url", &url, "--insecure-skip-tls-verify", "findings"],
        &[("NODEGUARD_CA_FILE", other.to_str().unwrap())],
    );
    assert!(insecure.success(), "{insecure}");

    let plain = query(
        &[
            "--url",
            &format!("http://127.0.0.1:{}", tls.agent.port),
            "findings",
        ],
        &[],
    );
    assert!(!plain.success(), "{plain}");
    assert!(plain.stderr.contains("use --url https://"), "{plain}");

    let to_plain_port = query(
        &[
            "--url",
            &format!("https://127.0.0.1:{}", tls.probes),
            "--ca-file",
            served,
            "findings",
        ],
        &[],
    );
    assert!(!to_plain_port.success(), "{to_plain_port}");
    assert!(
        to_plain_port.stderr.contains("did not answer TLS"),
        "{to_plain_port}"
    );
}

/// `nodeguard run` in a network namespace of its own, killed on drop.
struct NetnsAgent {
    child: Child,
    log: PathBuf,
}

impl Drop for NetnsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- agent log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

#[test]
fn beyond_loopback_the_api_serves_tls_without_being_told() {
    if !tools(&["curl", "openssl", "unshare", "nsenter", "ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("serving.crt");
    let log = dir.path().join("agent.log");
    // In its own network namespace 0.0.0.0 holds only its loopback: nothing is exposed.
    let log_file = std::fs::File::create(&log).unwrap();
    let mut command = Command::new("unshare");
    command
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(support::nodeguard_bin())
        .args(["run", "--kube", "off", "--listen", "0.0.0.0:9717"])
        .args([
            "--insecure-unauthenticated",
            "--exec-events",
            "off",
            "--log-format",
            "json",
        ])
        .arg("--tls-served-cert-file")
        .arg(&served)
        .env_remove("NODE_NAME")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    if !support::host_pid1_readable() {
        command.args(["--host-root", "/"]);
    }
    let agent = NetnsAgent {
        child: command.spawn().expect("start unshare"),
        log: log.clone(),
    };
    let ns = format!("--net=/proc/{}/ns/net", agent.child.id());
    let in_ns = |args: &[&str]| {
        let mut all = vec![
            ns.as_str(),
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
        ];
        all.extend_from_slice(args);
        run("nsenter", &all)
    };
    wait_for("the agent to write its certificate", FIRST_SCAN, || {
        served
            .is_file()
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    let out = wait_for(
        "/healthz over https in the agent's namespace",
        FIRST_SCAN,
        || {
            let out = in_ns(&[
                "--cacert",
                served.to_str().unwrap(),
                "https://127.0.0.1:9717/healthz",
            ]);
            (status_of(&out) == "200")
                .then_some(out.clone())
                .ok_or(out.to_string())
        },
    );
    assert!(out.success(), "{out}");
    let plain = in_ns(&["http://127.0.0.1:9717/healthz"]);
    assert_eq!(status_of(&plain), "400", "{plain}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("self-signed"), "{text}");
    assert!(text.contains(&file_fingerprint(&served)), "{text}");
}

#[test]
fn sighup_reads_the_certificate_files_at_once_and_idle_tls_connections_are_closed() {
    if !tools(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = openssl_pair(dir.path(), "a");
    let (cert_b, key_b) = openssl_pair(dir.path(), "b");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    replace(&cert_a, &crt);
    replace(&key_a, &key);
    // An interval far longer than the test: only SIGHUP can bring B in.
    let tls = TlsAgent::start(&[
        "--tls-cert-file",
        crt.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-reload-interval",
        "24h",
    ]);
    assert_eq!(
        served_fingerprint(&tls.addr(), dir.path()).unwrap(),
        file_fingerprint(&cert_a)
    );
    replace(&key_b, &key);
    replace(&cert_b, &crt);
    run_ok("kill", &["-HUP", &tls.agent.pid().to_string()]);
    let want = file_fingerprint(&cert_b);
    wait_for("B served after SIGHUP", Duration::from_secs(30), || {
        let got = served_fingerprint(&tls.addr(), dir.path())?;
        (got == want).then_some(()).ok_or(got)
    });

    // A client that completes its handshake and then sends nothing is closed like an idle
    // plain connection (5 s to send a request head): s_client, given no input, exits when
    // the server closes.
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut idle = KillOnDrop(
        Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &tls.addr()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_client"),
    );
    wait_for(
        "the server to close an idle TLS connection",
        Duration::from_secs(60),
        || match idle.0.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("still open".to_string()),
            Err(e) => Err(e.to_string()),
        },
    );
}

/// The documented Prometheus scrape job (the YAML block that starts with `scrape_configs:` in
/// docs/api.md, "TLS"), as a value.
fn documented_scrape_job() -> serde_json::Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("read docs/api.md");
    let start = doc
        .find("```yaml\nscrape_configs:")
        .expect("docs/api.md has a Prometheus scrape example")
        + "```yaml\n".len();
    let end = doc[start..].find("```").expect("the example ends") + start;
    let config: serde_json::Value =
        serde_yaml::from_str(&doc[start..end]).expect("the documented example is YAML");
    config["scrape_configs"][0].clone()
}

#[test]
fn prometheus_scrapes_over_https_as_the_docs_show_and_verifies_when_given_the_certificate() {
    if !tools(&["openssl"]) {
        return;
    }
    let Some(binary) = support::prometheus::require_prometheus() else {
        return;
    };
    let tls = TlsAgent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "not-checked-without-a-cluster\n").unwrap();
    let (other, _) = openssl_pair(dir.path(), "other");
    let documented = documented_scrape_job();
    assert_eq!(documented["scheme"], "https", "{documented}");
    assert_eq!(
        documented["tls_config"]["insecure_skip_verify"], true,
        "{documented}"
    );
    // The documented job as it is (service discovery aside: this agent is a static target),
    // then with the agent's certificate as CA (verifying), then with another CA.
    let mut jobs = String::new();
    for (name, tls_config) in [
        ("documented", documented["tls_config"].clone()),
        (
            "verified",
            serde_json::json!({"ca_file": tls.served.to_str().unwrap()}),
        ),
        (
            "wrong_ca",
            serde_json::json!({"ca_file": other.to_str().unwrap()}),
        ),
    ] {
        let mut job = documented.clone();
        let object = job.as_object_mut().unwrap();
        object.remove("kubernetes_sd_configs");
        object.remove("relabel_configs");
        object.insert("job_name".into(), name.into());
        object.insert("tls_config".into(), tls_config);
        object.insert(
            "authorization".into(),
            serde_json::json!({"credentials_file": token.to_str().unwrap()}),
        );
        object.insert(
            "static_configs".into(),
            serde_json::json!([{"targets": [tls.addr()]}]),
        );
        let yaml = serde_yaml::to_string(&serde_json::Value::Array(vec![job])).unwrap();
        for line in yaml.lines() {
            jobs.push_str("  ");
            jobs.push_str(line);
            jobs.push('\n');
        }
    }
    let prometheus = support::prometheus::Prometheus::start_with_scrape_configs(&binary, &jobs);
    let up = |job: &str| -> Result<f64, String> {
        let result = prometheus.query(&format!("up{{job=\"{job}\"}}"))?;
        result
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no up series for {job} yet"))
    };
    for job in ["documented", "verified"] {
        wait_for(
            &format!("{job} scraped over https"),
            Duration::from_secs(60),
            || {
                let value = up(job)?;
                let scans = prometheus.query(&format!("nodeguard_scans_total{{job=\"{job}\"}}"))?;
                (value == 1.0 && !scans.is_empty())
                    .then_some(())
                    .ok_or(format!("up={value}, {} scan series", scans.len()))
            },
        );
    }
    // Prometheus verifies what it is told to: another CA fails the scrape.
    let value = wait_for(
        "the wrong-CA job's first scrape",
        Duration::from_secs(60),
        || up("wrong_ca"),
    );
    assert_eq!(value, 0.0, "a scrape with another CA succeeded");
    let targets = prometheus.api("targets", "targets").unwrap();
    let wrong = targets["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["labels"]["job"] == "wrong_ca")
        .cloned()
        .unwrap_or_default();
    assert!(
        wrong["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("x509"),
        "{wrong}"
    );
}
