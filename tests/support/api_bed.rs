//! An API-server-only real-node bed (`tests/realnode/up.sh --no-kubelet`), for tests that need
//! a real kube-apiserver but no kubelet: the one set in `REALNODE_ENV`, or one brought up here
//! and taken down on drop.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The bed's variables, and the bed to take down when this test brought it up.
pub struct ApiBed {
    env: BTreeMap<String, String>,
    own_dir: Option<PathBuf>,
}

impl ApiBed {
    /// The bed of `REALNODE_ENV`, else a new one in a temp dir named after `tag`.
    pub fn find(tag: &str) -> Result<ApiBed, String> {
        if let Some(file) = std::env::var_os("REALNODE_ENV") {
            return Ok(ApiBed {
                env: read_env(Path::new(&file))?,
                own_dir: None,
            });
        }
        let up = super::repo().join("tests/realnode/up.sh");
        if !up.exists() {
            return Err(format!(
                "no REALNODE_ENV and no {} to bring a bed up",
                up.display()
            ));
        }
        let dir = std::env::temp_dir().join(format!("ng-{tag}-{}", std::process::id()));
        let out = Command::new(&up)
            .arg("--no-kubelet")
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", up.display()))?;
        if !out.status.success() {
            let _ = Command::new(super::repo().join("tests/realnode/down.sh"))
                .arg(&dir)
                .output();
            return Err(format!(
                "{} --no-kubelet failed (build the bed with tests/realnode/build.sh): {}",
                up.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(ApiBed {
            env: read_env(&dir.join("env"))?,
            own_dir: Some(dir),
        })
    }

    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("the bed's env has no {name}"))
    }

    /// `kubectl --kubeconfig ADMIN ARGS` with `stdin`; its stdout, or a panic with stderr.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new(self.var("REALNODE_KUBECTL"))
            .arg("--kubeconfig")
            .arg(self.var("REALNODE_ADMIN_KUBECONFIG"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(text) = stdin {
            let mut input = child.stdin.take().expect("piped stdin");
            input.write_all(text.as_bytes()).expect("write to kubectl");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("kubectl ran");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The ClusterRole this tree ships (`manifests/clusterrole.yaml`, with its TokenReview and
    /// SubjectAccessReview grants), applied under the name up.sh bound to the agent's
    /// identity: a bed of `REALNODE_ENV` may have been brought up from an older tree.
    pub fn apply_agent_clusterrole(&self) {
        let role = std::fs::read_to_string(super::repo().join("manifests/clusterrole.yaml"))
            .expect("the shipped ClusterRole");
        let role = role.replace(
            "name: nodeguard\n",
            &format!("name: {}\n", self.var("REALNODE_AGENT_CLUSTERROLE")),
        );
        self.kubectl(&["apply", "-f", "-"], Some(&role));
    }

    /// `kubectl apply -f repo/manifests/NAME` as shipped.
    pub fn apply_manifest(&self, name: &str) {
        let file = super::repo().join("manifests").join(name);
        self.kubectl(&["apply", "-f", &file.to_string_lossy()], None);
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let text = self.kubectl(args, None);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("kubectl {args:?} is not JSON ({e}): {text}"))
    }
}

impl Drop for ApiBed {
    fn drop(&mut self) {
        if let Some(dir) = &self.own_dir {
            let _ = Command::new(super::repo().join("tests/realnode/down.sh"))
                .arg(dir)
                .output();
        }
    }
}

fn read_env(file: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the bed's env {}: {e}", file.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export ").or(Some(l.trim())))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
        .collect())
}
