//! Hostile names against the real kube-apiserver (v1.20.2 of the real-node bed,
//! `tests/realnode/`): a pod whose image name holds ESC and a newline (the API server takes
//! it) must not get nodeguard Events or PolicyReport results that carry them raw, so
//! `kubectl describe` can neither clear the screen nor print a forged line under nodeguard's
//! name (issue 19, item 4). What is asserted is what the API server returns and what
//! `kubectl describe pod` prints, not what our code computed.
//!
//! The pod is made with `spec.nodeName` and its status patched as a kubelet would, naming
//! a real runc container (busybox, root, no limits: findings) in the pod's cgroup.
//!
//! The bed is found through `REALNODE_ENV` (the `env` file of `tests/realnode/up.sh DIR`);
//! without it, the test brings up an API-server-only bed itself (`up.sh --no-kubelet`) when
//! the bed's binaries are built, and takes it down afterwards. Without either, or without
//! root and runc, it is skipped loudly — and fails when `CI` is set.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::agent::{Agent, Launch, StateDir};
use support::api_bed::ApiBed;
use support::container::ContainerSpec;
use support::image::Image;
use support::wait_for;

/// What reaches the pod's Events and its namespace's PolicyReport.
const HOSTILE_IMAGE: &str = "busybox\u{1b}[2J\u{1b}[H\nWarning  Forged  nodeguard  all clear";
/// The same as every sink must write it: each control named, nothing dropped.
const ESCAPED_IMAGE: &str = "busybox\\u{1b}[2J\\u{1b}[H\\nWarning  Forged  nodeguard  all clear";
/// Longest wait for the first scan, then for Events and reports (1 Event/s node-wide).
const TIMEOUT: Duration = Duration::from_secs(120);

fn skip(reason: &str) {
    support::skip("the real API server test", reason);
}

/// A merge patch of the pod's `status` subresource (kubectl 1.20 has no
/// `--subresource`), as the kubelet would write it.
fn patch_pod_status(bed: &ApiBed, namespace: &str, pod: &str, status: &Value) {
    let url = format!(
        "{}/api/v1/namespaces/{namespace}/pods/{pod}/status",
        bed.var("REALNODE_APISERVER")
    );
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "PATCH", "--cacert"])
        .arg(bed.var("REALNODE_CA"))
        .arg("-H")
        .arg(format!(
            "Authorization: Bearer {}",
            bed.var("REALNODE_ADMIN_TOKEN")
        ))
        .args(["-H", "Content-Type: application/merge-patch+json", "--data"])
        .arg(json!({ "status": status }).to_string())
        .arg(&url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "PATCH {url}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every string in `value` (keys included) holding a character a terminal acts on: C0 and
/// C1 controls, DEL, bidi overrides and other invisible reordering characters.
fn raw_controls(value: &Value) -> Vec<String> {
    fn hostile(s: &str) -> bool {
        s.chars()
            .any(|c| c.is_control() || nodeguard_model::is_bidi_or_invisible(c))
    }
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if hostile(s) => found.push(format!("{s:?}")),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (k, v) in map {
                    if hostile(k) {
                        found.push(format!("{k:?}"));
                    }
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    found
}

#[test]
fn a_pod_whose_image_name_holds_esc_and_a_newline_gets_clean_events_and_reports() {
    require_containers!();
    let bed = match ApiBed::find("hostile") {
        Ok(bed) => bed,
        Err(reason) => return skip(&reason),
    };
    // The agent's identity holds the ClusterRole this branch ships.
    let role = std::fs::read_to_string(support::repo().join("manifests/clusterrole.yaml")).unwrap();
    let role = role.replace(
        "name: nodeguard\n",
        &format!("name: {}\n", bed.var("REALNODE_AGENT_CLUSTERROLE")),
    );
    bed.kubectl(&["apply", "-f", "-"], Some(&role));

    let namespace = "default";
    let pod = format!("ng-hostile-{}", support::random_hex(4));
    let node = bed.var("REALNODE_NODE").to_string();
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": HOSTILE_IMAGE}]},
    });
    bed.kubectl(&["create", "-f", "-"], Some(&manifest.to_string()));
    let stored = bed.kubectl_json(&["get", "pod", "-n", namespace, &pod, "-o", "json"]);
    assert_eq!(
        stored["spec"]["containers"][0]["image"], HOSTILE_IMAGE,
        "the API server took the hostile image name as it is"
    );
    let uid = stored["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_string();

    let image = Image::busybox();
    let container = ContainerSpec::new(image).pod_uid(&uid).start();
    patch_pod_status(
        &bed,
        namespace,
        &pod,
        &json!({
            "phase": "Running",
            "qosClass": "Burstable",
            "containerStatuses": [{
                "name": "app",
                "containerID": format!("containerd://{}", container.id),
                "image": "docker.io/library/busybox:1",
                "imageID": format!("sha256:{}", support::random_hex(32)),
                "ready": true,
                "restartCount": 0,
                "started": true,
                "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}},
            }],
        }),
    );

    let agent = Agent::launch(
        &[
            "--node-name",
            &node,
            "--interval",
            "2s",
            "--fs-interval",
            "10m",
        ],
        Launch {
            kubeconfig: Some(PathBuf::from(bed.var("REALNODE_AGENT_KUBECONFIG"))),
            state_dir: StateDir::Own,
            ..Launch::default()
        },
    );
    agent.wait_ready(TIMEOUT);

    // The Warning Events regarding the pod, as the API server returns them.
    let events = wait_for(
        "nodeguard Warning Events naming the pod's image",
        TIMEOUT,
        || {
            let list = bed.kubectl_json(&[
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                &format!("involvedObject.uid={uid}"),
                "-o",
                "json",
            ]);
            let ours: Vec<Value> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"] == "Warning" && e["message"].as_str().is_some())
                .cloned()
                .collect();
            if ours
                .iter()
                .any(|e| e["message"].as_str().is_some_and(|m| m.contains("image=")))
            {
                Ok(ours)
            } else {
                Err(format!("{} Warning Events so far: {list}", ours.len()))
            }
        },
    );
    for event in &events {
        let raw = raw_controls(event);
        assert!(
            raw.is_empty(),
            "an Event the API server holds carries raw controls {raw:?}: {event}"
        );
        let message = event["message"].as_str().unwrap_or_default();
        if message.contains("image=") {
            assert!(
                message.contains(&format!("image={ESCAPED_IMAGE}")),
                "the image is not named escaped, whole: {message}"
            );
        }
    }

    // What an operator runs: `kubectl describe pod` shows the Events without a byte a
    // terminal acts on, and the forged line does not stand on a line of its own.
    let described = bed.kubectl(&["describe", "pod", "-n", namespace, &pod], None);
    let events_part = described
        .split_once("Events:")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert!(
        events_part.contains("busybox\\u{1b}[2J"),
        "nodeguard's Events are not in describe's output:\n{described}"
    );
    assert!(
        !events_part.contains('\u{1b}'),
        "ESC in describe's Events:\n{events_part}"
    );
    assert!(
        !events_part
            .lines()
            .any(|l| l.trim_start().starts_with("Warning  Forged")),
        "a forged line in describe's Events:\n{events_part}"
    );

    // The namespace's PolicyReport results about the pod, as the API server returns them.
    let results = wait_for("the PolicyReport results about the pod", TIMEOUT, || {
        let list = bed.kubectl_json(&["get", "policyreports", "-n", namespace, "-o", "json"]);
        let results: Vec<Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["results"].as_array().cloned().unwrap_or_default())
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x["uid"] == uid.as_str()))
            })
            .collect();
        if results.is_empty() {
            Err(format!("none yet: {list}"))
        } else {
            Ok(results)
        }
    });
    for result in &results {
        let raw = raw_controls(result);
        assert!(
            raw.is_empty(),
            "a result carries raw controls {raw:?}: {result}"
        );
        assert_eq!(result["properties"]["image"], ESCAPED_IMAGE, "{result}");
    }
    bed.kubectl(
        &["delete", "pod", "-n", namespace, &pod, "--wait=false"],
        None,
    );
    drop(container);
    drop(agent);
}
