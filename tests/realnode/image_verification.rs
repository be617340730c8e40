//! Image verification on the real node (docs/image-verification.md): the agent's verdicts
//! against what containerd, podman, `tar` and `sha256sum` say.
//!
//! Ground truth: the pod's `imageID` from `kubectl`, the image config's `diff_ids` from
//! `ctr content get`, the layer blob in containerd's content store read by `tar -xO … |
//! sha256sum`, the overlay's `lowerdir` from the container's `/proc/PID/mountinfo` (what the
//! kernel mounted), `podman inspect`/`podman image inspect` and `podman image mount`. The
//! images altered here are dedicated ones imported by the test, never the bed's shared ones.

use super::*;

/// The agent with image verification reading the bed's own stores (containerd's root and
/// podman's graph root live under the bed's directory), through the host root as the
/// DaemonSet's `--image-stores-at` would.
fn image_agent(bed: &Bed, name: &str, state_dir: &Path) -> Agent {
    let containerd_root = bed.dir.join("containerd/root");
    let podman_root = bed.dir.join("podman/root");
    let (containerd_root, podman_root) = (
        containerd_root.display().to_string(),
        podman_root.display().to_string(),
    );
    let interval = format!("{INTERVAL_SECS}s");
    let args = [
        "--node-name",
        bed.node(),
        "--interval",
        &interval,
        "--fs-interval",
        "10m",
        "--containerd-root",
        &containerd_root,
        "--containers-storage-root",
        &podman_root,
        "--image-index-cpu",
        "1",
    ];
    let mut how = Launch {
        kubeconfig: Some(PathBuf::from(bed.var("REALNODE_AGENT_KUBECONFIG"))),
        state_dir: StateDir::At(state_dir.to_path_buf()),
        log: Some(bed.dir.join(format!("agent-{name}.log"))),
        http_timeout: Some(Duration::from_secs(10)),
        env: bed.agent_env(),
        ..Launch::default()
    };
    how.wrapper = support::deployment::as_deployed();
    let agent = Agent(support::agent::Agent::launch(&args, how));
    agent.wait_ready(FIRST_SCAN_TIMEOUT);
    agent
}

fn report(agent: &Agent) -> Result<Value, String> {
    let (status, body) = agent.get("/v1/report")?;
    if status != 200 {
        return Err(format!("/v1/report: {status}"));
    }
    serde_json::from_str(&body).map_err(|e| e.to_string())
}

/// The report's processes of container `id` (kernel threads aside).
fn processes_of(report: &Value, id: &str) -> Vec<Value> {
    report["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["container_id"] == id && p["kernel_thread"] != true)
        .cloned()
        .collect()
}

/// Waits until every process of container `id` has verdict `want` (a container first seen
/// before its pod's metadata, or before its image is indexed, is `unverifiable` until a
/// later scan), and returns them.
fn judged(agent: &Agent, id: &str, want: &str) -> Vec<Value> {
    wait_for(
        &format!("image verdicts {want} of container {id}"),
        SCANS_TIMEOUT,
        || {
            let report = report(agent)?;
            let ps = processes_of(&report, id);
            let settled = |p: &Value| {
                let reason = p["image_verdict"]["reason"].as_str().unwrap_or_default();
                p["image_verdict"]["verdict"] == want
                    && !reason.starts_with("indexing")
                    && !reason.starts_with("image unknown")
            };
            let pending = !ps.iter().all(settled);
            if ps.is_empty() || pending {
                Err(format!(
                    "{:?}",
                    ps.iter().map(|p| &p["image_verdict"]).collect::<Vec<_>>()
                ))
            } else {
                Ok(ps)
            }
        },
    )
}

/// `ctr content get DIGEST` as JSON.
fn content_json(bed: &Bed, digest: &str) -> Value {
    let out = bed.ctr(&["content", "get", digest]).ok();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ctr content get {digest} printed no JSON ({e})\n{out}"))
}

/// The pod's `imageID` (imported images: `sha256:<config digest>`) and the config's only
/// `diff_id`, as containerd holds them.
fn image_of(bed: &Bed, pod: &Value) -> (String, String) {
    let image_id = pod["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .expect("imageID")
        .to_string();
    let config = content_json(bed, &image_id);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(diff_ids.len(), 1, "one-layer images here: {config}");
    (image_id, diff_ids[0].as_str().unwrap().to_string())
}

/// The layer blob of an uncompressed layer (its digest is its diff_id) in containerd's
/// content store.
fn layer_blob(bed: &Bed, diff_id: &str) -> PathBuf {
    let hex = diff_id.strip_prefix("sha256:").expect("sha256 diff_id");
    bed.dir
        .join("containerd/root/io.containerd.content.v1.content/blobs/sha256")
        .join(hex)
}

/// `tar -xOf BLOB MEMBER | sha256sum`.
fn member_sha256(blob: &Path, member: &str) -> String {
    let script = format!("tar -xOf '{}' '{member}' | sha256sum", blob.display());
    let out = cmd::run("bash", &["-c", &script]).ok();
    out.stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn sha256sum(path: &Path) -> String {
    let out = cmd::run("sha256sum", &[path]).ok();
    out.stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A one-layer image of the bed's busybox root with a marker file of its own (so its layer,
/// snapshot and diff_id are its alone), imported into containerd as `NAME:1`.
fn dedicated_image(bed: &Bed, name: &str) -> String {
    let root = bed.dir.join(format!("images/{name}"));
    let out = cmd::run(
        "cp",
        &[
            "-a",
            bed.dir.join("images/busybox").to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    assert!(out.success(), "{out}");
    fs::write(root.join("etc/marker"), format!("{name}\n")).unwrap();
    let reference = format!("localhost/{}/{name}:1", bed.var("REALNODE_PREFIX"));
    let tar = bed.dir.join(format!("images/{name}.tar"));
    let out = cmd::run(
        "python3",
        &[
            script("oci-image.py").to_str().unwrap(),
            root.to_str().unwrap(),
            &reference,
            tar.to_str().unwrap(),
        ],
    );
    assert!(out.success(), "{out}");
    bed.ctr(&["images", "import", tar.to_str().unwrap()]).ok();
    reference
}

/// Starts pod `name` running `sleep` from `image`, and waits for it to run.
fn run_pod(bed: &Bed, name: &str, image: &str) -> Value {
    let mut manifest = pod_manifest(bed, name);
    manifest["spec"]["containers"][0]["image"] = json!(image);
    bed.kubectl_apply(&manifest);
    bed.remember_pod_uid(name);
    wait_for(
        &format!("pod {name} Running"),
        Duration::from_secs(90),
        || {
            let pod = bed.pod(name);
            pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                .as_str()
                .map(|_| pod.clone())
                .ok_or_else(|| format!("{}", pod["status"]))
        },
    )
}

fn delete_pod(bed: &Bed, name: &str) {
    bed.kubectl(&[
        "delete",
        "pod",
        "-n",
        "realnode",
        name,
        "--wait=true",
        "--timeout=90s",
    ]);
}

/// Waits until the indexer has nothing queued and at least `ready` images indexed, as its
/// `nodeguard_images{state}` gauges say (they are refreshed every few seconds).
fn wait_indexed(agent: &Agent, ready: u32) {
    wait_for("the image indexer idle", SCANS_TIMEOUT, || {
        let queued = agent.metric("nodeguard_images{state=\"queued\"}");
        let done = agent.metric("nodeguard_images{state=\"ready\"}");
        match (queued, done) {
            (Some(q), Some(r)) if q == 0.0 && r >= f64::from(ready) => Ok(()),
            other => Err(format!("queued, ready: {other:?}")),
        }
    });
}

/// Rewrites `target` as a node-side tamperer would: a copy with bytes appended, renamed
/// over it (what `cp` onto a lower layer amounts to); still a working busybox.
fn alter_in_place(target: &Path) {
    let altered = target.with_file_name(".busybox-altered");
    fs::copy(target, &altered).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&altered).unwrap();
    f.write_all(b"\0altered on the node\0").unwrap();
    drop(f);
    fs::rename(&altered, target).unwrap();
}

/// `/bin/busybox` altered in the layer `diff_id`: the image says `expected`, `sha256sum`
/// of the file says `actual`.
struct Altered<'a> {
    diff_id: &'a str,
    expected: &'a str,
    actual: &'a str,
}

impl Altered<'_> {
    /// Waits for the container `id`, running since `running_at`, to be flagged within a scan
    /// interval (and slack): critical, with the file's digest, its message naming the layer,
    /// both digests, the path and each of `also`.
    fn wait_reported(&self, agent: &Agent, id: &str, running_at: Instant, also: &[&str]) {
        let found = wait_for(
            &format!("image_content_mismatch in {id}"),
            SCANS_TIMEOUT,
            || {
                mismatch_findings(agent, id)
                    .into_iter()
                    .find(|f| f["path"] == "/bin/busybox")
                    .ok_or_else(|| format!("{:?}", agent.findings()))
            },
        );
        let took = running_at.elapsed();
        assert!(
            took <= Duration::from_secs(INTERVAL_SECS * 2 + 5),
            "found {took:?} after the container ran: more than a scan interval ({INTERVAL_SECS} s) and slack"
        );
        assert_eq!(found["severity"], "critical", "{found}");
        assert_eq!(found["sha256"], self.actual, "{found}");
        let message = found["message"].as_str().unwrap();
        let parts = [
            format!("layer {}", self.diff_id),
            format!("expected sha256 {}", self.expected),
            format!("actual sha256 {}", self.actual),
            "/bin/busybox".to_string(),
        ];
        for part in parts.iter().map(String::as_str).chain(also.iter().copied()) {
            assert!(message.contains(part), "{part} not in {message}");
        }
    }
}

fn mismatch_findings(agent: &Agent, id: &str) -> Vec<Value> {
    agent
        .findings()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["kind"] == "image_content_mismatch" && f["container_id"] == id)
        .collect()
}

#[test]
fn every_process_of_an_untouched_image_is_verified_by_the_layer_its_blob_holds() {
    let bed = require_bed!();
    let _shared = looking();
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-verified", state.path());
    let pod = bed.pod("burstable");
    let id = only_container_id(&pod);
    let (image_id, diff_id) = image_of(bed, &pod);
    let blob = layer_blob(bed, &diff_id);
    let busybox = member_sha256(&blob, "./bin/busybox");
    assert_eq!(
        busybox.len(),
        64,
        "tar -xO of {} gave no digest",
        blob.display()
    );

    let processes = judged(&agent, &id, "verified");
    for p in &processes {
        assert_eq!(p["image_verdict"]["verdict"], "verified", "{p}");
        assert_eq!(p["image_verdict"]["layer"], diff_id.as_str(), "{p}");
        if p["exe"] == "/bin/busybox" {
            assert_eq!(
                p["sha256"],
                busybox.as_str(),
                "the blob's file is the process's: {p}"
            );
        }
    }
    let report = report(&agent).unwrap();
    let container = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("the container in the report");
    assert_eq!(container["image"]["reference"], image_id.as_str());
    assert_eq!(container["image"]["config_digest"], image_id.as_str());
    assert_eq!(container["image"]["layers"], json!([diff_id]));
    assert!(container["image"]["unverifiable"].is_null(), "{container}");
    assert!(mismatch_findings(&agent, &id).is_empty());
    let verified = agent
        .metric("nodeguard_image_verdicts{verdict=\"verified\"}")
        .unwrap_or(0.0);
    assert!(verified >= processes.len() as f64, "metric: {verified}");

    // A restart with the same state directory reads no layer again.
    agent.stop();
    let agent = image_agent(bed, "imgv-restarted", state.path());
    let again = judged(&agent, &id, "verified");
    assert!(
        again
            .iter()
            .all(|p| p["image_verdict"]["verdict"] == "verified"),
        "{again:?}"
    );
    assert_eq!(
        agent.metric("nodeguard_image_layers_indexed_total"),
        Some(0.0),
        "every layer index came from disk"
    );
    // The progress reaches the metrics every few seconds.
    wait_for("layers taken from disk", Duration::from_secs(20), || {
        let n = agent
            .metric("nodeguard_image_layers_from_disk_total")
            .unwrap_or(0.0);
        if n >= 1.0 {
            Ok(n)
        } else {
            Err(format!("{n}"))
        }
    });
    agent.stop();
}

#[test]
fn a_binary_altered_in_the_unpacked_snapshot_is_an_image_content_mismatch_naming_the_layer() {
    let bed = require_bed!();
    let _alone = changing();
    let name = format!("imgv-alter-{}", support::random_hex(3));
    let image = dedicated_image(bed, &name);
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-alter", state.path());

    // Pod A shows where containerd unpacked the image: the overlay's lowerdir, as the kernel
    // mounted it.
    let first = format!("{name}-a");
    let pod = run_pod(bed, &first, &image);
    let id = only_container_id(&pod);
    let (image_id, diff_id) = image_of(bed, &pod);
    let pid = bed.ctr_tasks()[&id];
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let lower = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split("lowerdir=").nth(1))
        .and_then(|o| o.split([',', ':']).next())
        .unwrap_or_else(|| panic!("no overlay root in /proc/{pid}/mountinfo:\n{mountinfo}"))
        .to_string();
    assert!(
        lower.contains("io.containerd.snapshotter.v1.overlayfs/snapshots/"),
        "{lower}"
    );
    // Indexed and verified before anything is altered.
    let ps = judged(&agent, &id, "verified");
    assert!(
        ps.iter()
            .all(|p| p["image_verdict"]["verdict"] == "verified"),
        "{ps:?}"
    );
    delete_pod(bed, &first);

    // Rewrite busybox in the snapshot (a new file renamed over it: what `cp` onto a lower
    // layer amounts to), still a working busybox.
    let target = Path::new(&lower).join("bin/busybox");
    let expected = member_sha256(&layer_blob(bed, &diff_id), "./bin/busybox");
    alter_in_place(&target);
    let actual = sha256sum(&target);
    assert_ne!(actual, expected);

    let second = format!("{name}-b");
    let pod = run_pod(bed, &second, &image);
    let running_at = Instant::now();
    let id = only_container_id(&pod);
    let altered = Altered {
        diff_id: &diff_id,
        expected: &expected,
        actual: &actual,
    };
    altered.wait_reported(&agent, &id, running_at, &[&image, &image_id]);
    delete_pod(bed, &second);
    agent.stop();
}

#[test]
fn a_deleted_layer_blob_makes_its_containers_unverifiable_with_the_reason_and_no_finding() {
    let bed = require_bed!();
    let _alone = changing();
    let name = format!("imgv-gone-{}", support::random_hex(3));
    let image = dedicated_image(bed, &name);
    let pod = run_pod(bed, &name, &image);
    let id = only_container_id(&pod);
    let (_, diff_id) = image_of(bed, &pod);
    // What containerd's discard_unpacked_layers leaves: the snapshot, not the blob.
    let blob = layer_blob(bed, &diff_id);
    fs::remove_file(&blob).unwrap();
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-gone", state.path());
    let ps = judged(&agent, &id, "unverifiable");
    for p in &ps {
        assert_eq!(p["image_verdict"]["verdict"], "unverifiable", "{p}");
    }
    let reason = ps[0]["image_verdict"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = diff_id.trim_start_matches("sha256:");
    assert!(
        reason.contains(hex) || reason.contains("discard"),
        "{reason}"
    );
    let report = report(&agent).unwrap();
    let container = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        container["image"]["unverifiable"],
        reason.as_str(),
        "said once, per container"
    );
    agent.wait_scans(1);
    assert!(mismatch_findings(&agent, &id).is_empty());
    delete_pod(bed, &name);
    agent.stop();
}

#[test]
fn podman_containers_are_verified_from_containers_storage() {
    let bed = require_bed!();
    let _shared = looking();
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-podman", state.path());
    let [name, _] = bed.podman_names();
    let inspect = bed.podman_inspect(&name);
    let id = inspect["Id"].as_str().expect("Id").to_string();
    let image_id = inspect["Image"].as_str().expect("Image").to_string();
    let image = bed.podman(&["image", "inspect", &image_id]).ok();
    let image: Value = serde_json::from_str(&image.stdout).unwrap();
    let layers = image[0]["RootFS"]["Layers"].clone();
    let mount = bed.podman(&["image", "mount", &image_id]).ok();
    let busybox = sha256sum(&Path::new(mount.stdout.trim()).join("bin/busybox"));
    bed.podman(&["image", "unmount", &image_id]);

    let ps = judged(&agent, &id, "verified");
    for p in &ps {
        assert_eq!(json!([p["image_verdict"]["layer"]]), layers, "{p}");
        if p["exe"] == "/bin/busybox" {
            assert_eq!(p["sha256"], busybox.as_str(), "{p}");
        }
    }
    let report = report(&agent).unwrap();
    let container = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        container["image"]["source"], "containers_storage",
        "{container}"
    );
    assert_eq!(
        container["image"]["reference"],
        image_id.as_str(),
        "{container}"
    );

    // A restart with the same state directory reads no layer again: the tar-split and the
    // layer directory are not opened, the index comes from disk. (Every image of the bed,
    // containerd's too, indexed first: the restarted agent sees all their containers.)
    wait_indexed(&agent, 2);
    agent.stop();
    let agent = image_agent(bed, "imgv-podman-restarted", state.path());
    let again = judged(&agent, &id, "verified");
    for p in &again {
        assert_eq!(json!([p["image_verdict"]["layer"]]), layers, "{p}");
    }
    assert_eq!(
        agent.metric("nodeguard_image_layers_indexed_total"),
        Some(0.0),
        "every layer index came from disk"
    );
    wait_for("layers taken from disk", Duration::from_secs(20), || {
        let n = agent
            .metric("nodeguard_image_layers_from_disk_total")
            .unwrap_or(0.0);
        if n >= 1.0 {
            Ok(n)
        } else {
            Err(format!("{n}"))
        }
    });
    agent.stop();
}

/// A one-layer podman image of the bed's busybox root with a marker file of its own (its
/// layer is its alone), imported as `localhost/PREFIX-NAME:1`; (reference, image id, diff_id,
/// the layer's unpacked directory as `podman image inspect` names it).
fn dedicated_podman_image(bed: &Bed, name: &str) -> (String, String, String, PathBuf) {
    let root = bed.dir.join(format!("images/{name}"));
    let out = cmd::run(
        "cp",
        &[
            "-a",
            bed.dir.join("images/busybox").to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    assert!(out.success(), "{out}");
    fs::write(root.join("etc/marker"), format!("{name}\n")).unwrap();
    let tar = bed.dir.join(format!("images/{name}.tar"));
    let out = cmd::run(
        "tar",
        &[
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    assert!(out.success(), "{out}");
    let reference = format!("localhost/{}-{name}:1", bed.var("REALNODE_PREFIX"));
    bed.podman(&["import", "-q", tar.to_str().unwrap(), &reference])
        .ok();
    let inspect = bed.podman(&["image", "inspect", &reference]).ok();
    let inspect: Value = serde_json::from_str(&inspect.stdout).unwrap();
    let image_id = inspect[0]["Id"].as_str().expect("Id").to_string();
    let layers = inspect[0]["RootFS"]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), 1, "one-layer image: {inspect}");
    let diff_id = layers[0].as_str().unwrap().to_string();
    let upper = inspect[0]["GraphDriver"]["Data"]["UpperDir"]
        .as_str()
        .expect("GraphDriver.Data.UpperDir")
        .to_string();
    (reference, image_id, diff_id, PathBuf::from(upper))
}

/// `podman run -d` of `sleep` from `image` as the bed's workload runs its containers; the
/// container id.
fn run_podman(bed: &Bed, name: &str, image: &str) -> String {
    let parent = bed.var("REALNODE_PODMAN_CGROUP_PARENT");
    let out = bed
        .podman(&[
            "run",
            "-d",
            "--network",
            "host",
            "--cgroup-parent",
            parent,
            "--name",
            name,
            image,
            "sleep",
            "86400",
        ])
        .ok();
    out.stdout.trim().to_string()
}

fn remove_podman(bed: &Bed, name: &str) {
    bed.podman(&["rm", "-f", "-t", "0", name]);
}

#[test]
fn podman_a_binary_altered_in_the_unpacked_layer_is_an_image_content_mismatch_naming_the_layer() {
    let bed = require_bed!();
    let _alone = changing();
    let name = format!("imgv-pm-alter-{}", support::random_hex(3));
    let (image, image_id, diff_id, layer_dir) = dedicated_podman_image(bed, &name);
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-pm-alter", state.path());

    // Ground truth before the change: the image as podman mounts it.
    let mount = bed.podman(&["image", "mount", &image_id]).ok();
    let expected = sha256sum(&Path::new(mount.stdout.trim()).join("bin/busybox"));
    bed.podman(&["image", "unmount", &image_id]);
    assert_eq!(expected.len(), 64, "podman image mount gave no busybox");

    // Container A: indexed and verified before anything is altered.
    let first = format!("{name}-a");
    let id = run_podman(bed, &first, &image);
    let ps = judged(&agent, &id, "verified");
    for p in &ps {
        assert_eq!(p["image_verdict"]["layer"], diff_id.as_str(), "{p}");
    }
    remove_podman(bed, &first);

    // Rewrite busybox in the layer's unpacked directory (a new file renamed over it), still
    // a working busybox; podman itself now mounts the altered file.
    alter_in_place(&layer_dir.join("bin/busybox"));
    let mount = bed.podman(&["image", "mount", &image_id]).ok();
    let actual = sha256sum(&Path::new(mount.stdout.trim()).join("bin/busybox"));
    bed.podman(&["image", "unmount", &image_id]);
    assert_ne!(actual, expected, "podman mounts the altered file");

    let second = format!("{name}-b");
    let id = run_podman(bed, &second, &image);
    let running_at = Instant::now();
    let altered = Altered {
        diff_id: &diff_id,
        expected: &expected,
        actual: &actual,
    };
    altered.wait_reported(&agent, &id, running_at, &[]);
    let ps = processes_of(&report(&agent).unwrap(), &id);
    let busybox: Vec<_> = ps.iter().filter(|p| p["exe"] == "/bin/busybox").collect();
    assert!(!busybox.is_empty(), "{ps:?}");
    for p in busybox {
        assert_eq!(p["image_verdict"]["verdict"], "mismatch", "{p}");
        assert_eq!(p["image_verdict"]["layer"], diff_id.as_str(), "{p}");
    }
    agent.stop();

    // A fresh agent (no index kept) rebuilds the layer from its tar-split and the altered
    // directory: the layer no longer hashes to its diff_id, and the container is flagged
    // naming it.
    let fresh = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-pm-alter-fresh", fresh.path());
    let found = wait_for(
        &format!("image_content_mismatch in {id} from a fresh index"),
        SCANS_TIMEOUT,
        || {
            mismatch_findings(&agent, &id)
                .into_iter()
                .next()
                .ok_or_else(|| format!("{:?}", agent.findings()))
        },
    );
    let message = found["message"].as_str().unwrap();
    assert!(message.contains(&diff_id), "{diff_id} not in {message}");
    remove_podman(bed, &second);
    agent.stop();
}

#[test]
fn podman_a_removed_tar_split_makes_its_containers_unverifiable_with_the_reason_and_no_finding() {
    let bed = require_bed!();
    let _alone = changing();
    let name = format!("imgv-pm-gone-{}", support::random_hex(3));
    let (image, _, diff_id, layer_dir) = dedicated_podman_image(bed, &name);
    let id = run_podman(bed, &name, &image);
    // containers/storage keeps `overlay-layers/<layer id>.tar-split.gz` beside
    // `overlay/<layer id>/diff`: without it nothing proves the layer.
    let layer_id = layer_dir
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .expect("overlay/<id>/diff")
        .to_string();
    let tar_split = bed.dir.join(format!(
        "podman/root/overlay-layers/{layer_id}.tar-split.gz"
    ));
    fs::remove_file(&tar_split).unwrap_or_else(|e| panic!("{}: {e}", tar_split.display()));
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-pm-gone", state.path());
    let ps = judged(&agent, &id, "unverifiable");
    let reason = ps[0]["image_verdict"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(&diff_id) || reason.contains("discard"),
        "{reason}"
    );
    for p in &ps {
        assert_eq!(p["image_verdict"]["reason"], reason.as_str(), "{p}");
    }
    let report = report(&agent).unwrap();
    let container = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        container["image"]["unverifiable"],
        reason.as_str(),
        "said once, per container"
    );
    agent.wait_scans(1);
    assert!(mismatch_findings(&agent, &id).is_empty());
    remove_podman(bed, &name);
    agent.stop();
}

/// Every image verdict of the bed's containers in one report: (container, pid, exe,
/// verdict), and each container's `image` block; none may still be `indexing` or waiting
/// for its pod. Pod sandboxes (`sandboxes`, from `ctr`) have no image of a pod's to judge.
fn bed_verdicts(bed: &Bed, report: &Value, sandboxes: &BTreeSet<String>) -> Result<Value, String> {
    let containers: Vec<&Value> = report["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["cgroup"].as_str().is_some_and(|g| bed.owns_cgroup(g)))
        .filter(|c| !c["id"].as_str().is_some_and(|id| sandboxes.contains(id)))
        .collect();
    if containers.is_empty() {
        return Err("no container of the bed in the report".into());
    }
    let mut out = Vec::new();
    for c in &containers {
        let id = c["id"].as_str().unwrap_or_default();
        let why = c["image"]["unverifiable"].as_str().unwrap_or_default();
        if why.starts_with("indexing") || why.starts_with("image unknown") {
            return Err(format!("{id}: {why}"));
        }
        let mut ps: Vec<Value> = processes_of(report, id)
            .into_iter()
            .map(|p| json!([p["pid"], p["exe"], p["image_verdict"]]))
            .collect();
        ps.sort_by_key(|p| p[0].as_i64());
        out.push(json!({"id": id, "image": c["image"], "processes": ps}));
    }
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Value::Array(out))
}

/// The agent's PolicyReports of this node, by namespace: (resourceVersion, results).
fn reports_now(bed: &Bed) -> BTreeMap<String, (Value, Value)> {
    nodeguard_reports(bed)
        .into_iter()
        .map(|(ns, r)| {
            (
                ns,
                (
                    r["metadata"]["resourceVersion"].clone(),
                    r["results"].clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn once_indexed_no_verdict_and_no_policy_report_changes_from_scan_to_scan() {
    let bed = require_bed!();
    // It publishes PolicyReports: alone.
    let _alone = changing();
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-steady", state.path());
    let sandboxes = bed.ctr_sandboxes();
    // Every container of the bed judged (containerd pods and podman), indexing finished.
    let settled = wait_for("every verdict of the bed final", SCANS_TIMEOUT, || {
        bed_verdicts(bed, &report(&agent)?, &sandboxes)
    });
    let verified = settled
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["processes"].as_array().cloned().unwrap_or_default())
        .filter(|p| p[2]["verdict"] == "verified")
        .count();
    assert!(verified >= 8, "the bed's processes are verified: {settled}");
    wait_indexed(&agent, 2);
    // The reports written once the verdicts were final (a write in flight lands within a
    // scan or two).
    let mut before = reports_now(bed);
    wait_for(
        "PolicyReports written and unchanged over a scan",
        SCANS_TIMEOUT,
        || {
            agent.wait_scans(1);
            let now = reports_now(bed);
            let same = !now.is_empty() && now == before;
            before = now;
            if same {
                Ok(())
            } else {
                Err("PolicyReports still being written".into())
            }
        },
    );
    let verdicts = bed_verdicts(bed, &report(&agent).unwrap(), &sandboxes).unwrap();
    let with_verdicts: usize = before
        .values()
        .flat_map(|(_, results)| results.as_array().cloned().unwrap_or_default())
        .filter(|r| !r["properties"]["image_verdict"].is_null())
        .count();
    assert!(
        with_verdicts > 0,
        "PolicyReport results carry image verdicts: {before:?}"
    );

    for scan in 1..=4 {
        agent.wait_scans(1);
        let now = bed_verdicts(bed, &report(&agent).unwrap(), &sandboxes).unwrap();
        assert_eq!(
            now.to_string(),
            verdicts.to_string(),
            "verdicts moved at scan {scan}"
        );
        let reports = reports_now(bed);
        assert_eq!(
            reports, before,
            "a PolicyReport was rewritten at scan {scan}"
        );
    }
    agent.stop();
}

/// The `image layers indexed` line of a one-shot scan's JSON log.
fn indexed_line(scan: &Scan) -> Value {
    scan.output
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "image layers indexed")
        .unwrap_or_else(|| panic!("no 'image layers indexed' in the log:\n{}", scan.output))
}

#[test]
fn a_one_shot_scan_verifies_podman_containers_before_it_reports_and_reuses_kept_indexes() {
    let bed = require_bed!();
    let _shared = looking();
    let [name, _] = bed.podman_names();
    let inspect = bed.podman_inspect(&name);
    let id = inspect["Id"].as_str().expect("Id").to_string();
    let image_id = inspect["Image"].as_str().expect("Image").to_string();
    let image = bed.podman(&["image", "inspect", &image_id]).ok();
    let image: Value = serde_json::from_str(&image.stdout).unwrap();
    let layers = image[0]["RootFS"]["Layers"].clone();
    let mount = bed.podman(&["image", "mount", &image_id]).ok();
    let busybox = sha256sum(&Path::new(mount.stdout.trim()).join("bin/busybox"));
    bed.podman(&["image", "unmount", &image_id]);

    let state = tempfile::tempdir().unwrap();
    let podman_root = bed.dir.join("podman/root").display().to_string();
    let containerd_root = bed.dir.join("containerd/root").display().to_string();
    let state_dir = state.path().display().to_string();
    let args = [
        "--no-fs",
        "--log-format",
        "json",
        "--containers-storage-root",
        &podman_root,
        "--containerd-root",
        &containerd_root,
        "--state-dir",
        &state_dir,
    ];
    // One scan, no agent before it: the layers are read, and the report judges from them.
    let first = Scan::run(&args);
    let ps = processes_of(&first.report, &id);
    assert!(!ps.is_empty(), "{id} in the report");
    for p in &ps {
        assert_eq!(p["image_verdict"]["verdict"], "verified", "{p}");
        assert_eq!(json!([p["image_verdict"]["layer"]]), layers, "{p}");
        if p["exe"] == "/bin/busybox" {
            assert_eq!(p["sha256"], busybox.as_str(), "{p}");
        }
    }
    let line = indexed_line(&first);
    assert!(line["layers_indexed"].as_u64() >= Some(1), "{line}");
    // A containerd (CRI) container has no pod status in a scan without a cluster.
    let pod = bed.pod("burstable");
    let cri = only_container_id(&pod);
    for p in processes_of(&first.report, &cri) {
        let reason = p["image_verdict"]["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("image unknown"), "{p}");
    }

    // The same state directory (the agent's, in the DaemonSet): no layer read again.
    let again = Scan::run(&args);
    let line = indexed_line(&again);
    assert_eq!(line["layers_indexed"], 0, "{line}");
    assert!(line["layers_from_disk"].as_u64() >= Some(1), "{line}");
    for p in processes_of(&again.report, &id) {
        assert_eq!(p["image_verdict"]["verdict"], "verified", "{p}");
    }
}

#[test]
fn a_tar_bomb_in_place_of_a_layer_blob_is_refused_and_the_agent_lives_on() {
    let bed = require_bed!();
    let _alone = changing();
    let name = format!("imgv-bomb-{}", support::random_hex(3));
    let image = dedicated_image(bed, &name);
    let pod = run_pod(bed, &name, &image);
    let id = only_container_id(&pod);
    let (_, diff_id) = image_of(bed, &pod);
    // The blob becomes a gzip tar bomb: one member of 1 GiB of zeros (about 1 MiB on disk),
    // what a hostile registry or a hand on the node could leave there.
    let blob = layer_blob(bed, &diff_id);
    let script = format!(
        "set -o pipefail; python3 -c 'import sys, tarfile; \
         i = tarfile.TarInfo(\"bin/zeros\"); i.size = 1 << 30; \
         sys.stdout.buffer.write(i.tobuf(format=tarfile.GNU_FORMAT))' > '{b}.head' && \
         (cat '{b}.head'; head -c 1G /dev/zero) | gzip -9 > '{b}.bomb' && mv '{b}.bomb' '{b}' && rm '{b}.head'",
        b = blob.display()
    );
    let out = cmd::run("bash", &["-c", &script]);
    assert!(out.success(), "{out}");
    let state = tempfile::tempdir().unwrap();
    let agent = image_agent(bed, "imgv-bomb", state.path());
    let ps = judged(&agent, &id, "unverifiable");
    let reason = ps[0]["image_verdict"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("refused") && reason.contains(&diff_id),
        "{reason}"
    );
    wait_for("the refusal counted", Duration::from_secs(20), || {
        let n = agent
            .metric("nodeguard_image_layers_refused_total")
            .unwrap_or(0.0);
        if n >= 1.0 {
            Ok(n)
        } else {
            Err(format!("{n}"))
        }
    });
    // The agent lives on: more scans, the bed's other containers verified, no finding for
    // the bomb, and its memory bounded (the 1 GiB member was never held).
    agent.wait_scans(2);
    let other = only_container_id(&bed.pod("burstable"));
    judged(&agent, &other, "verified");
    assert!(mismatch_findings(&agent, &id).is_empty());
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(hwm_kib < 200 << 10, "peak RSS {hwm_kib} KiB");
    delete_pod(bed, &name);
    agent.stop();
}
