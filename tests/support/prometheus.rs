//! A real Prometheus server scraping one agent, for the tests that check what Prometheus itself
//! makes of `/metrics` (`daemon_e2e`, `dashboard`).

use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The scrape job's name: the one the shipped ServiceMonitor gives (the Service's name).
pub const JOB: &str = "nodeguard";

const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether the `prometheus` server is installed; says why not on stderr, or panics under CI
/// (the same rule as the harness's `require_containers`).
pub fn require_prometheus() -> Option<PathBuf> {
    if let Some(path) = super::which("prometheus") {
        return Some(path);
    }
    let reason = "prometheus not found: apt-get install prometheus";
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so the Prometheus part must run, but: {reason}");
    }
    let thread = std::thread::current();
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED the Prometheus part of {}: {reason}\n!!! (with CI set this is a failure)\n",
        thread.name().unwrap_or("this test")
    );
    None
}

/// A Prometheus server on a free loopback port, scraping one agent every second with the
/// ServiceMonitor's `honor_labels` (the agent's container/pod/namespace labels are kept as they
/// are) and the target labels given. Killed on drop; its log is printed when the test failed.
pub struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(binary: &Path, agent_port: u16, target_labels: &[(&str, &str)]) -> Prometheus {
        let mut scrape = format!(
            "  - job_name: {JOB}\n    honor_labels: true\n    \
             static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
        );
        if !target_labels.is_empty() {
            scrape.push_str("        labels:\n");
            for (name, value) in target_labels {
                scrape.push_str(&format!("          {name}: {value}\n"));
            }
        }
        Prometheus::start_with_scrape_configs(binary, &scrape)
    }

    /// A Prometheus server scraping every second with the `scrape_configs` entries given
    /// (YAML list items, indented two spaces).
    pub fn start_with_scrape_configs(binary: &Path, scrape_configs: &str) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-test-prometheus-")
            .tempdir()
            .expect("create Prometheus tempdir");
        let config = dir.path().join("prometheus.yml");
        let scrape = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n{scrape_configs}"
        );
        fs::write(&config, scrape).unwrap();
        let port = super::http::free_port();
        let log = dir.path().join("prometheus.log");
        let log_file = fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut prometheus = Prometheus {
            child,
            port,
            log,
            _dir: dir,
        };
        super::wait_for("Prometheus to be ready (/-/ready)", READY_TIMEOUT, || {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                return Err(format!("Prometheus exited: {status}"));
            }
            match super::http::get(prometheus.port, "/-/ready", None, HTTP_TIMEOUT) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}: {}", r.status, r.body.trim())),
                Err(e) => Err(e.to_string()),
            }
        });
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            panic!("Prometheus exited right after start: {status}");
        }
        prometheus
    }

    /// `GET /api/v1/PATH`; the answer's `data`, which must come with `status: success`. A query
    /// Prometheus refuses as malformed (`bad_data`, about `about`) fails the test at once; other
    /// trouble is an `Err` to retry.
    pub fn api(&self, path: &str, about: &str) -> Result<Value, String> {
        let r = super::http::get(self.port, &format!("/api/v1/{path}"), None, HTTP_TIMEOUT)
            .map_err(|e| format!("GET /api/v1/{path}: {e}"))?;
        let v: Value = serde_json::from_str(&r.body).map_err(|e| {
            format!(
                "/api/v1/{path} is not JSON ({e}): {}",
                super::excerpt(&r.body, 3000)
            )
        })?;
        if v["errorType"] == "bad_data" {
            panic!("Prometheus refuses {about}: {}", v["error"]);
        }
        if r.status != 200 || v["status"] != "success" {
            return Err(format!("/api/v1/{path} answered {}: {v}", r.status));
        }
        Ok(v["data"].clone())
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(
            &format!("query?query={}", urlencode(promql)),
            &format!("the query {promql}"),
        )?;
        if data["resultType"] != "vector" {
            return Err(format!("{promql}: not a vector: {data}"));
        }
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// `/api/v1/label/LABEL/values?match[]=SELECTOR`.
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self.api(
            &format!("label/{label}/values?match[]={}", urlencode(selector)),
            &format!("the {label} values of {selector}"),
        )?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(
                std::io::stderr(),
                "--- Prometheus log (last 30 lines):\n{}\n--- end of Prometheus log",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

/// Percent-encodes a query parameter value.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
