//! `nodeguard run` as a child process, for the integration tests that watch the daemon: its
//! own loopback port, its log in a temp dir or where the test says (the last 80 lines
//! printed on a failing test), killed on drop; [`Agent::wait_ready`] is the one readiness
//! wait (`/readyz` 200: the first scan completed).
//!
//! [`Agent::start_in`] can start it under a wrapper (e.g. `unshare -n` for a network
//! namespace of its own); [`Agent::get`] then reaches its loopback from inside that
//! namespace. [`Agent::launch`] points it at a cluster (`--kube on` with a kubeconfig), with a
//! state directory a restarted agent finds again: every integration test starts its agents
//! here.

use super::http::{free_port, HttpResponse};
use serde_json::Value;
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a request to the agent may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the agent's log printed when a test fails.
const LOG_TAIL: usize = 80;

pub struct Agent {
    child: RefCell<Child>,
    pub port: u16,
    log: PathBuf,
    pub command: String,
    /// Set when the agent lives in a network namespace of its own.
    netns: bool,
    http_timeout: Duration,
    _dir: tempfile::TempDir,
}

/// How [`Agent::launch`] starts the agent, beyond its arguments. The default: no cluster
/// (`--kube off`), no state directory, the log in the agent's temp dir.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Run by this command (see [`Agent::start_in`]).
    pub wrapper: Vec<String>,
    /// `--kube on` against the cluster of this kubeconfig (`KUBECONFIG=...`).
    pub kubeconfig: Option<PathBuf>,
    pub state_dir: StateDir,
    /// The log here (kept after the agent is gone, e.g. for a restarted agent's test to
    /// read) rather than in the agent's temp dir.
    pub log: Option<PathBuf>,
    /// Bound on each request to the agent (30 s without).
    pub http_timeout: Option<Duration>,
    /// More environment, as the DaemonSet's downward API gives it (`POD_NAMESPACE`, ...).
    pub env: Vec<(String, String)>,
}

/// The agent's `--state-dir`.
#[derive(Debug, Clone, Default)]
pub enum StateDir {
    #[default]
    None,
    /// A directory of its own, in the agent's temp dir.
    Own,
    /// This directory (one a restarted agent finds again).
    At(PathBuf),
}

impl Agent {
    /// `nodeguard run --listen 127.0.0.1:PORT --kube off --log-format json ARGS...`.
    pub fn start(args: &[&str]) -> Agent {
        Agent::launch(args, Launch::default())
    }

    /// The same with `--state-dir` a directory of its own (in the agent's temp dir).
    pub fn start_with_state(args: &[&str]) -> Agent {
        Agent::launch(
            args,
            Launch {
                state_dir: StateDir::Own,
                ..Launch::default()
            },
        )
    }

    /// The same, run by `wrapper` (a command whose last word execs the rest, e.g.
    /// `["unshare", "-n", "--", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""]`).
    /// A wrapper that makes a network namespace must keep the agent's pid (exec, no fork).
    pub fn start_in(wrapper: &[&str], args: &[&str]) -> Agent {
        Agent::launch(
            args,
            Launch {
                wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
                ..Launch::default()
            },
        )
    }

    /// `[KUBECONFIG=...] [WRAPPER...] nodeguard run --listen 127.0.0.1:PORT --kube off|on
    /// --log-format json [--state-dir DIR] ARGS... [--host-root /]`, at `RUST_LOG=info` (or
    /// `NODEGUARD_TEST_LOG`), without the test environment's `NODE_NAME` or in-cluster
    /// variables, stdout and stderr in the log. Returns at once: [`Agent::wait_ready`] waits
    /// for the first scan.
    pub fn launch(args: &[&str], how: Launch) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-agent-")
            .tempdir()
            .expect("create agent tempdir");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let kube = if how.kubeconfig.is_some() {
            "on"
        } else {
            "off"
        };
        let mut full: Vec<String> = [
            "run",
            "--listen",
            &listen,
            "--kube",
            kube,
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let state = match how.state_dir {
            StateDir::None => None,
            StateDir::Own => {
                let state = dir.path().join("state");
                std::fs::create_dir_all(&state).expect("create the agent's state dir");
                Some(state)
            }
            StateDir::At(state) => Some(state),
        };
        if let Some(state) = state {
            full.extend(["--state-dir".to_string(), state.display().to_string()]);
        }
        // With a cluster, the agent asks for tokens on the host's loopback too (issue 19): the
        // tests that read its API here are the node's own tooling, not an auth check
        // (`api_auth`, `api_flood` and `hardening` are), so they say so unless told otherwise.
        if how.kubeconfig.is_some() && !args.iter().any(|a| a.starts_with("--auth")) {
            full.extend(["--auth".to_string(), "off".to_string()]);
        }
        full.extend(args.iter().map(|s| s.to_string()));
        // As for `nodeguard scan` in the harness: where pid 1 cannot be looked into, host
        // paths are reached through this (the host's) mount namespace.
        if !args.contains(&"--host-root") && !super::host_pid1_readable() {
            full.extend(["--host-root".to_string(), "/".to_string()]);
        }
        let log = how.log.unwrap_or_else(|| dir.path().join("agent.log"));
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let (program, rest): (String, Vec<String>) = match how.wrapper.split_first() {
            Some((first, more)) => {
                let mut rest: Vec<String> = more.to_vec();
                rest.push(super::nodeguard_bin().to_string());
                rest.extend(full);
                (first.to_string(), rest)
            }
            None => (super::nodeguard_bin().to_string(), full),
        };
        let mut command = super::cmd::display(&program, &rest);
        let mut child = Command::new(&program);
        if let Some(kubeconfig) = &how.kubeconfig {
            command = format!("KUBECONFIG={} {command}", kubeconfig.display());
            child.env("KUBECONFIG", kubeconfig);
        }
        for (name, value) in &how.env {
            command = format!("{name}={value} {command}");
            child.env(name, value);
        }
        let child = child
            .args(&rest)
            .env(
                "RUST_LOG",
                std::env::var("NODEGUARD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("NODE_NAME")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        Agent {
            child: RefCell::new(child),
            port,
            log,
            command,
            netns: !how.wrapper.is_empty(),
            http_timeout: how.http_timeout.unwrap_or(HTTP_TIMEOUT),
            _dir: dir,
        }
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends `kill -s SIGNAL` to the agent.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let out = super::cmd::run("kill", &["-s", signal, &pid]);
        assert!(out.success(), "kill -s {signal} {pid} failed\n{out}");
    }

    /// Sends SIGTERM and waits at most `within` for the exit.
    pub fn terminate(&self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(within).unwrap_or_else(|| {
            panic!(
                "the agent did not stop within {within:?} of SIGTERM\n  command: {}",
                self.command
            )
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.borrow().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT`, the agent's API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails at once, with the agent's log, if the agent is no longer running.
    pub fn assert_running(&self) {
        if let Ok(Some(status)) = self.child.borrow_mut().try_wait() {
            panic!(
                "the agent exited ({status}) while it should run\n  command: {}",
                self.command
            );
        }
    }

    /// Waits at most `timeout` for the agent to exit; `None` when it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.borrow_mut().try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET PATH` on the agent's loopback (from inside its network namespace when it has
    /// one of its own). Fails at once if the agent exited.
    pub fn get(&self, path: &str) -> Result<HttpResponse, String> {
        self.get_accept(path, None)
    }

    /// [`Agent::get`] with an `Accept` header.
    pub fn get_accept(&self, path: &str, accept: Option<&str>) -> Result<HttpResponse, String> {
        self.request(path, accept, self.http_timeout)
    }

    /// [`Agent::get`] that gives up after `timeout`.
    pub fn get_within(&self, path: &str, timeout: Duration) -> Result<HttpResponse, String> {
        self.request(path, None, timeout)
    }

    fn request(
        &self,
        path: &str,
        accept: Option<&str>,
        timeout: Duration,
    ) -> Result<HttpResponse, String> {
        self.assert_running();
        let port = self.port;
        let path_owned = path.to_string();
        let accept = accept.map(str::to_string);
        let url = self.url();
        let fetch = move || {
            super::http::get(port, &path_owned, accept.as_deref(), timeout)
                .map_err(|e| format!("GET {url}{path_owned} (within {timeout:?}): {e}"))
        };
        if !self.netns {
            return fetch();
        }
        let ns = format!("/proc/{}/ns/net", self.pid());
        std::thread::spawn(move || {
            let file = std::fs::File::open(&ns).map_err(|e| format!("{ns}: {e}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a valid namespace fd moves only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
            }
            fetch()
        })
        .join()
        .unwrap_or_else(|_| Err("the request thread panicked".into()))
    }

    /// `GET PATH`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.status,
            200,
            "GET {path} answered {}: {}",
            r.status,
            super::excerpt(&r.body, 3000)
        );
        r.json(path)
    }

    /// `/v1/findings?QUERY` → the findings array (whose length must be the answer's
    /// `count`).
    pub fn findings(&self, query: &str) -> Vec<Value> {
        let answer = self.get_json(&format!("/v1/findings?{query}"));
        let findings = answer["findings"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("/v1/findings?{query} has no findings array: {answer}"));
        assert_eq!(
            answer["count"].as_u64(),
            Some(findings.len() as u64),
            "count must equal the number of findings: {answer}"
        );
        findings
    }

    /// The `/metrics` text in its default form (the 0.0.4 text format without an Accept
    /// header).
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "/metrics: {}", super::excerpt(&r.body, 3000));
        r.body
    }

    /// `nodeguard query ARGS... --url URL -o json`, which must exit 0 and print JSON.
    pub fn query_cli(&self, args: &[&str]) -> Value {
        let url = self.url();
        let mut full = vec!["query", "--url", url.as_str(), "-o", "json"];
        full.extend_from_slice(args);
        let out = super::scan::nodeguard(&full).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("nodeguard query did not print JSON ({e})\n{out}"))
    }

    /// The value of one series of `/metrics` (e.g. `nodeguard_exec_events_total` or
    /// `nodeguard_exec_events_source{source="netlink"}`), `None` when absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// Waits until `/readyz` answers 200 (the first scan completed); returns its body.
    pub fn wait_ready(&self, timeout: Duration) -> Value {
        super::wait_for("the agent's /readyz to answer 200", timeout, || {
            let r = self.get("/readyz")?;
            if r.status == 200 {
                Ok(r.json("/readyz"))
            } else {
                Err(format!(
                    "status {}: {}",
                    r.status,
                    super::excerpt(&r.body, 3000)
                ))
            }
        })
    }
}

/// The value of `series` (name with labels, exactly as printed) in a metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

impl Drop for Agent {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            let _ = writeln!(
                std::io::stderr(),
                "--- agent: {}\n--- agent log (last {LOG_TAIL} lines):\n{tail}\n--- end of agent log",
                self.command
            );
        }
    }
}
