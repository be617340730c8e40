//! Policy tests are data: every `testdata/cases/NAME/` holds
//!
//! - `policy.yaml` — the policy (may be empty: the defaults),
//! - `evidence.json` — `{ "cap_last_cap": 40, "processes": [..], "containers": [..], "files": [..],
//!   "gaps": [{container_id, reason, files_omitted}] }` in the model's JSON format; fields a case leaves out are filled from the benign
//!   templates below (so a process is a non-root, seccomp-filtered, image-layer container
//!   process unless the case says otherwise, and a container has every limit set),
//! - `expected.json` — the findings, `[{kind, severity, container_id, subject}]`, compared
//!   exactly and in any order; an entry may also pin `pid`, `message_contains` (a list)
//!   and the pod metadata the finding carries (`namespace`, `pod`, `container_name`).
//!
//! One helper runs them all and also checks, for every case, what must hold of any
//! output: sorted, one line per message, ids derived from (kind, container, subject), and
//! the same findings whatever the order of the evidence.

use nodeguard_model::{finding_id, Container, FileEntry, Finding, Process};
use nodeguard_policy::{evaluate, Evidence, FsGap, Policy};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::path::{Path, PathBuf};

fn process_template() -> Value {
    let ids = json!({"real": 1000, "effective": 1000, "saved": 1000, "filesystem": 1000});
    let none = "0000000000000000";
    json!({
        "pid": 0, "ppid": 1, "command": "app", "cmdline": "/app", "container_id": null,
        "exe": "/app", "exe_deleted": false, "exe_layer": "image", "sha256": null,
        "uid": 1000, "gid": 1000, "uids": ids, "gids": ids,
        "capabilities": {"effective": [], "permitted": [], "inheritable": [], "bounding": [], "ambient": []},
        "capability_masks": {"effective": none, "permitted": none, "inheritable": none,
                             "bounding": "00000000a80425fb", "ambient": none},
        "no_new_privs": true, "seccomp": "filter",
        "namespaces": {"pid": null, "net": null, "ipc": null, "uts": null, "mnt": null,
                       "user": null, "cgroup": null, "shared_with_host": []},
        "kernel_thread": false
    })
}

fn container_template() -> Value {
    json!({
        "runtime": "containerd", "pod_uid": null, "qos": "burstable",
        "cgroup": "/kubepods/burstable/pod0/cri-containerd-0", "cgroup_driver": "cgroupfs",
        "cgroup_version": "v2",
        "limits": {"memory_bytes": 268435456, "cpu_cores": 0.5, "pids": 1024},
        "pod_limits": null,
        "effective_limits": {"memory_bytes": 268435456, "cpu_cores": 0.5, "pids": 1024},
        "pids": [], "rootfs": null, "pod": null
    })
}

fn file_template() -> Value {
    json!({
        "setuid": false, "setgid": false, "capabilities": null, "mode": 493,
        "uid": 0, "gid": 0, "size": 1024, "sha256": null, "layer": "image"
    })
}

/// Fills the keys `value` lacks from `template`, recursively through objects.
fn fill(value: &mut Value, template: &Value) {
    if let (Value::Object(obj), Value::Object(tpl)) = (value, template) {
        for (key, tval) in tpl {
            match obj.get_mut(key) {
                Some(v) => fill(v, tval),
                None => {
                    obj.insert(key.clone(), tval.clone());
                }
            }
        }
    }
}

fn items<T: serde::de::DeserializeOwned>(
    evidence: &Value,
    key: &str,
    template: &Value,
    case: &str,
) -> Vec<T> {
    let list = evidence.get(key).cloned().unwrap_or(json!([]));
    let Value::Array(list) = list else {
        panic!("{case}: evidence.{key} is not an array")
    };
    list.into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            fill(&mut item, template);
            serde_json::from_value(item)
                .unwrap_or_else(|e| panic!("{case}: evidence.{key}[{i}]: {e}"))
        })
        .collect()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    kind: String,
    severity: String,
    container_id: Option<String>,
    subject: String,
    #[serde(default)]
    pid: Option<i32>,
    #[serde(default)]
    message_contains: Vec<String>,
    /// Pod metadata the finding must carry, when given.
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    container_name: Option<String>,
}

type Key = (String, String, Option<String>, String);

fn key_of(f: &Finding) -> Key {
    (
        f.kind.to_string(),
        f.severity.to_string(),
        f.container_id.clone(),
        f.subject.clone(),
    )
}

/// Runs one case; returns what went wrong, if anything.
fn run_case(dir: &Path) -> Result<usize, String> {
    let case = dir.file_name().unwrap().to_string_lossy().to_string();
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{case}/{name}: {e}"))
    };
    // Loaded from its file, so a case's relative `digest_bundles` paths are its own files.
    let policy = Policy::load(&dir.join("policy.yaml"))
        .map_err(|e| format!("{case}: policy refused: {e}"))?;
    let evidence: Value = serde_json::from_str(&read("evidence.json"))
        .unwrap_or_else(|e| panic!("{case}/evidence.json: {e}"));
    let expected: Vec<Expected> = serde_json::from_str(&read("expected.json"))
        .unwrap_or_else(|e| panic!("{case}/expected.json: {e}"));

    let processes: Vec<Process> = items(&evidence, "processes", &process_template(), &case);
    let containers: Vec<Container> = items(&evidence, "containers", &container_template(), &case);
    let files: Vec<FileEntry> = items(&evidence, "files", &file_template(), &case);
    let cap_last_cap = evidence
        .get("cap_last_cap")
        .and_then(Value::as_u64)
        .unwrap_or(40) as u32;
    let gaps: Vec<FsGap> = evidence
        .get("gaps")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|g| FsGap {
                    container_id: g["container_id"].as_str().unwrap_or_default().to_string(),
                    reason: g["reason"].as_str().unwrap_or_default().to_string(),
                    files_omitted: g["files_omitted"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    // The host's bounding set, as 16 hex digits like `/proc/1/status` prints it.
    let host_bounding = evidence
        .get("host_bounding")
        .and_then(Value::as_str)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
    let findings = evaluate(
        &policy,
        &Evidence {
            processes: &processes,
            containers: &containers,
            files: &files,
            cap_last_cap,
            gaps: &gaps,
            host_bounding,
        },
    );

    let mut problems = Vec::new();
    let mut got: Vec<Key> = findings.iter().map(key_of).collect();
    let mut want: Vec<Key> = expected
        .iter()
        .map(|e| {
            (
                e.kind.clone(),
                e.severity.clone(),
                e.container_id.clone(),
                e.subject.clone(),
            )
        })
        .collect();
    got.sort();
    want.sort();
    if got != want {
        let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).collect();
        let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).collect();
        problems.push(format!(
            "findings differ\n    missing: {missing:?}\n    unexpected: {extra:?}"
        ));
    }
    for e in &expected {
        let Some(f) = findings.iter().find(|f| {
            f.kind.as_str() == e.kind && f.container_id == e.container_id && f.subject == e.subject
        }) else {
            continue;
        };
        if e.pid.is_some() && f.pid != e.pid {
            problems.push(format!(
                "{} {}: pid {:?}, want {:?}",
                e.kind, e.subject, f.pid, e.pid
            ));
        }
        let meta = [
            ("namespace", &e.namespace, &f.namespace),
            ("pod", &e.pod, &f.pod),
            ("container_name", &e.container_name, &f.container_name),
        ];
        for (what, want, got) in meta {
            if want.is_some() && want != got {
                problems.push(format!(
                    "{} {}: {what} {got:?}, want {want:?}",
                    e.kind, e.subject
                ));
            }
        }
        for part in &e.message_contains {
            if !f.message.contains(part.as_str()) {
                problems.push(format!(
                    "{} {}: message {:?} lacks {part:?}",
                    e.kind, e.subject, f.message
                ));
            }
        }
    }

    // What holds of every evaluation.
    let order = |f: &Finding| {
        (
            Reverse(f.severity),
            f.kind,
            f.container_id.clone(),
            f.subject.clone(),
        )
    };
    if !findings.windows(2).all(|w| order(&w[0]) < order(&w[1])) {
        problems.push(
            "findings are not sorted (severity desc, kind, container, subject) or repeat a key"
                .into(),
        );
    }
    for f in &findings {
        if f.id != finding_id(f.kind, f.container_id.as_deref(), &f.subject) {
            problems.push(format!(
                "{}: id is not derived from kind/container/subject",
                f.message
            ));
        }
        if f.message.chars().any(char::is_control) {
            problems.push(format!("{:?}: message is not one line", f.message));
        }
        if let Some(id) = f.container_id.as_deref() {
            if !f.message.contains(&id[..12.min(id.len())]) {
                problems.push(format!(
                    "{:?}: message does not name the container",
                    f.message
                ));
            }
        }
        if let Some(pid) = f.pid {
            if !f.message.contains(&pid.to_string()) {
                problems.push(format!("{:?}: message does not name pid {pid}", f.message));
            }
        }
    }
    let (mut rp, mut rc, mut rf) = (processes.clone(), containers.clone(), files.clone());
    rp.reverse();
    rc.reverse();
    rf.reverse();
    let again = evaluate(
        &policy,
        &Evidence {
            processes: &rp,
            containers: &rc,
            files: &rf,
            cap_last_cap,
            gaps: &gaps,
            host_bounding,
        },
    );
    if again != findings {
        problems.push("findings change with the order of the evidence".into());
    }

    if problems.is_empty() {
        Ok(findings.len())
    } else {
        let dump: Vec<String> = findings
            .iter()
            .map(|f| {
                format!(
                    "    {} {} {:?} {:?} pid={:?}: {}",
                    f.severity, f.kind, f.container_id, f.subject, f.pid, f.message
                )
            })
            .collect();
        Err(format!(
            "{case}:\n  {}\n  got:\n{}",
            problems.join("\n  "),
            dump.join("\n")
        ))
    }
}

#[test]
fn policy_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "only {} cases under {}",
        dirs.len(),
        root.display()
    );
    let failures: Vec<String> = dirs.iter().filter_map(|d| run_case(d).err()).collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
