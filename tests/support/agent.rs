//! `nodeguard run` as a child process, for tests that watch the daemon: its own loopback
//! port, its log in a temp dir (printed on a failing test), killed on drop.
//!
//! [`Agent::start_in`] can start it under a wrapper (e.g. `unshare -n` for a network
//! namespace of its own); [`Agent::get`] then reaches its loopback from inside that
//! namespace.

use super::http::{free_port, HttpResponse};
use serde_json::Value;
use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Agent {
    child: RefCell<Child>,
    pub port: u16,
    log: PathBuf,
    pub command: String,
    /// Set when the agent lives in a network namespace of its own.
    netns: bool,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// `nodeguard run --listen 127.0.0.1:PORT --kube off --log-format json ARGS...`.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_in(&[], args)
    }

    /// The same, run by `wrapper` (a command whose last word execs the rest, e.g.
    /// `["unshare", "-n", "--", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""]`).
    /// A wrapper that makes a network namespace must keep the agent's pid (exec, no fork).
    pub fn start_in(wrapper: &[&str], args: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-agent-")
            .tempdir()
            .expect("create agent tempdir");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut full: Vec<String> = [
            "run",
            "--listen",
            &listen,
            "--kube",
            "off",
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        full.extend(args.iter().map(|s| s.to_string()));
        if !args.contains(&"--host-root") && !super::host_pid1_readable() {
            full.extend(["--host-root".to_string(), "/".to_string()]);
        }
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let (program, rest): (String, Vec<String>) = match wrapper.split_first() {
            Some((first, more)) => {
                let mut rest: Vec<String> = more.iter().map(|s| s.to_string()).collect();
                rest.push(super::nodeguard_bin().to_string());
                rest.extend(full);
                (first.to_string(), rest)
            }
            None => (super::nodeguard_bin().to_string(), full),
        };
        let command = super::cmd::display(&program, &rest);
        let child = Command::new(&program)
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
            netns: !wrapper.is_empty(),
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.borrow().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET PATH` on the agent's loopback (from inside its network namespace when it has
    /// one of its own). Fails at once if the agent exited.
    pub fn get(&self, path: &str) -> Result<HttpResponse, String> {
        if let Ok(Some(status)) = self.child.borrow_mut().try_wait() {
            panic!("the agent exited ({status})\n  command: {}", self.command);
        }
        let port = self.port;
        let path_owned = path.to_string();
        let fetch = move || {
            super::http::get(port, &path_owned, None, Duration::from_secs(30))
                .map_err(|e| format!("GET {path_owned}: {e}"))
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
            r.status, 200,
            "GET {path} answered {}: {}",
            r.status, r.body
        );
        r.json(path)
    }

    /// `/v1/findings?QUERY` → the findings array.
    pub fn findings(&self, query: &str) -> Vec<Value> {
        let answer = self.get_json(&format!("/v1/findings?{query}"));
        answer["findings"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("/v1/findings?{query} has no findings array: {answer}"))
    }

    /// The `/metrics` text (0.0.4 format).
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "/metrics: {}", r.body);
        r.body
    }

    /// The value of one series of `/metrics` (e.g. `nodeguard_exec_events_total` or
    /// `nodeguard_exec_events_source{source="netlink"}`), `None` when absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// Waits until `/readyz` answers 200 (the first scan completed).
    pub fn wait_ready(&self, timeout: Duration) {
        super::wait_for("the agent's /readyz to answer 200", timeout, || {
            let r = self.get("/readyz")?;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("status {}: {}", r.status, r.body))
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
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            let _ = writeln!(
                std::io::stderr(),
                "--- agent: {}\n--- agent log (last 60 lines):\n{tail}\n--- end of agent log",
                self.command
            );
        }
    }
}
