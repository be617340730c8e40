//! `image_content_mismatch`: a container's executable, or a setuid/setgid/capability file in
//! one of its image layers, whose bytes differ from the file its image holds at that path.
//!
//! The scan judges (`crates/nodeguard-scan/src/image_verdicts.rs`: a hash-map lookup per
//! process, the digest being the one the scan already computed); this only turns a
//! `mismatch` verdict into a critical finding that names the process, the path, the image
//! (reference and digest), the layer, and the expected and actual digests. `unverifiable`
//! verdicts raise nothing here: they are counted (metric `nodeguard_image_verdicts`) and said
//! once per container (`Container.image.unverifiable`).

use nodeguard_model::{
    short_id, Container, FileEntry, Finding, FindingKind, ImageVerdict, Process, Severity,
};

/// The finding for a container process whose executable is not the image's file.
pub(crate) fn process_mismatch(
    container_id: &str,
    container: Option<&Container>,
    p: &Process,
) -> Option<Finding> {
    let verdict = p.image_verdict.as_ref()?;
    let path = p.exe.as_deref()?;
    let what = format!("pid {} ({}) runs {path}", p.pid, p.command);
    mismatch(container_id, container, path, &what, verdict).map(|f| f.with_pid(p.pid))
}

/// The finding for a setuid/setgid/capability file of an image layer that is not the
/// image's file.
pub(crate) fn file_mismatch(container: Option<&Container>, f: &FileEntry) -> Option<Finding> {
    let verdict = f.image_verdict.as_ref()?;
    let kind = match (f.setuid, f.setgid, f.capabilities.is_some()) {
        (true, _, _) => "setuid file",
        (_, true, _) => "setgid file",
        _ => "file with capabilities",
    };
    let what = format!("{kind} {}", f.path);
    mismatch(&f.container_id, container, &f.path, &what, verdict)
}

/// The finding for a container whose image has a layer that no longer hashes to its
/// `diff_id` in the runtime's store: its files were altered on the node after the pull
/// (which file, the layer alone cannot say).
pub(crate) fn altered_layer(container: &Container, pid: Option<i32>) -> Option<Finding> {
    let layer = container.image.as_ref()?.altered_layer.as_deref()?;
    let (reference, digest) = image_names(Some(container));
    let message = format!(
        "container {}: layer {layer} of image {reference} ({digest}) no longer hashes to its \
         diff_id in the runtime's store: altered on the node after the pull; no file of it can \
         be trusted",
        short_id(&container.id),
    );
    let finding = Finding::new(
        FindingKind::ImageContentMismatch,
        Severity::Critical,
        Some(&container.id),
        format!("layer {layer}"),
        message,
    );
    Some(match pid {
        Some(pid) => finding.with_pid(pid),
        None => finding,
    })
}

fn mismatch(
    container_id: &str,
    container: Option<&Container>,
    path: &str,
    what: &str,
    verdict: &ImageVerdict,
) -> Option<Finding> {
    let ImageVerdict::Mismatch {
        layer,
        expected_sha256,
        actual_sha256,
    } = verdict
    else {
        return None;
    };
    let (reference, digest) = image_names(container);
    let layer = layer
        .as_deref()
        .unwrap_or("none (no such file in the image)");
    let expected = expected_sha256
        .as_deref()
        .unwrap_or("none (not in the image)");
    let message = format!(
        "container {}: {what} whose bytes are not its image's: image {reference} ({digest}), \
         layer {layer}, expected sha256 {expected}, actual sha256 {actual_sha256}",
        short_id(container_id),
    );
    Some(
        Finding::new(
            FindingKind::ImageContentMismatch,
            Severity::Critical,
            Some(container_id),
            path,
            message,
        )
        .with_path(path)
        .with_sha256(actual_sha256.as_str()),
    )
}

/// How the finding names the image: the pod spec's reference and the kubelet's `imageID`
/// when known, else the runtime's image id and the config digest the index was built from.
fn image_names(container: Option<&Container>) -> (&str, &str) {
    let pod = container.and_then(|c| c.pod.as_ref());
    let image = container.and_then(|c| c.image.as_ref());
    let reference = pod
        .and_then(|p| p.image.as_deref())
        .or(image.and_then(|i| i.reference.as_deref()))
        .unwrap_or("unknown");
    let digest = pod
        .and_then(|p| p.image_id.as_deref())
        .or(image.and_then(|i| i.config_digest.as_deref()))
        .or(image.and_then(|i| i.reference.as_deref()))
        .unwrap_or("unknown digest");
    (reference, digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{evaluate, Evidence, Policy};
    use nodeguard_model::{ContainerImage, ImageSource, Layer, PodRef, SeccompMode};

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn container() -> Container {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "id": ID, "runtime": "containerd", "pod_uid": null, "qos": null, "cgroup": "/x",
            "cgroup_driver": "cgroupfs", "cgroup_version": "v1",
            "limits": {"memory_bytes": 1, "cpu_cores": 1.0, "pids": 1},
            "pod_limits": null,
            "effective_limits": {"memory_bytes": 1, "cpu_cores": 1.0, "pids": 1},
            "pids": [10], "rootfs": null, "pod": null
        }))
        .unwrap();
        c.pod = Some(PodRef {
            namespace: "kube-system".into(),
            name: "kube-apiserver-node".into(),
            container_name: Some("kube-apiserver".into()),
            image: Some("registry.k8s.io/kube-apiserver:v1.20.2".into()),
            image_id: Some("sha256:cfg".into()),
        });
        c.image = Some(ContainerImage {
            reference: Some("sha256:cfg".into()),
            source: Some(ImageSource::PodStatus),
            config_digest: Some("sha256:cfg".into()),
            layers: vec!["sha256:l1".into()],
            unverifiable: None,
            altered_layer: None,
        });
        c
    }

    fn process(pid: i32, verdict: ImageVerdict) -> Process {
        Process {
            pid,
            ppid: 1,
            command: "kube-apiserver".into(),
            cmdline: "kube-apiserver".into(),
            container_id: Some(ID.into()),
            exe: Some("/usr/local/bin/kube-apiserver".into()),
            exe_layer: Some(Layer::Image),
            sha256: Some("aa".into()),
            no_new_privs: Some(true),
            seccomp: Some(SeccompMode::Filter),
            image_verdict: Some(verdict),
            ..Process::default()
        }
    }

    fn findings(processes: &[Process], files: &[FileEntry]) -> Vec<Finding> {
        let containers = [container()];
        evaluate(
            &Policy::default(),
            &Evidence {
                processes,
                containers: &containers,
                files,
                cap_last_cap: 40,
                host_bounding: None,
                gaps: &[],
            },
        )
        .into_iter()
        .filter(|f| f.kind == FindingKind::ImageContentMismatch)
        .collect()
    }

    #[test]
    fn a_mismatch_is_critical_and_names_process_path_image_layer_and_digests() {
        let found = findings(
            &[
                process(
                    12,
                    ImageVerdict::Mismatch {
                        layer: Some("sha256:l1".into()),
                        expected_sha256: Some("bb".into()),
                        actual_sha256: "aa".into(),
                    },
                ),
                process(
                    11,
                    ImageVerdict::Mismatch {
                        layer: Some("sha256:l1".into()),
                        expected_sha256: Some("bb".into()),
                        actual_sha256: "aa".into(),
                    },
                ),
            ],
            &[],
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.pid, Some(11));
        assert_eq!(f.path.as_deref(), Some("/usr/local/bin/kube-apiserver"));
        assert_eq!(f.sha256.as_deref(), Some("aa"));
        for part in [
            "pid 11 (kube-apiserver)",
            "/usr/local/bin/kube-apiserver",
            "registry.k8s.io/kube-apiserver:v1.20.2",
            "sha256:cfg",
            "layer sha256:l1",
            "expected sha256 bb",
            "actual sha256 aa",
        ] {
            assert!(f.message.contains(part), "{part} not in {}", f.message);
        }
    }

    #[test]
    fn a_layer_altered_in_the_store_is_a_mismatch_of_its_container_naming_the_layer() {
        let mut c = container();
        let image = c.image.as_mut().unwrap();
        image.altered_layer = Some("sha256:l1".into());
        image.unverifiable = Some("layer sha256:l1 does not hash to its diff_id".into());
        let found = evaluate(
            &Policy::default(),
            &Evidence {
                processes: &[process(11, ImageVerdict::unverifiable("altered"))],
                containers: &[c],
                files: &[],
                cap_last_cap: 40,
                host_bounding: None,
                gaps: &[],
            },
        );
        let found: Vec<_> = found
            .into_iter()
            .filter(|f| f.kind == FindingKind::ImageContentMismatch)
            .collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject, "layer sha256:l1");
        assert_eq!(found[0].pid, Some(10));
        assert!(found[0]
            .message
            .contains("registry.k8s.io/kube-apiserver:v1.20.2"));
    }

    #[test]
    fn verified_not_from_image_and_unverifiable_raise_nothing() {
        let found = findings(
            &[
                process(
                    11,
                    ImageVerdict::Verified {
                        layer: "sha256:l1".into(),
                    },
                ),
                process(12, ImageVerdict::NotFromImage),
                process(13, ImageVerdict::unverifiable("layer blobs discarded")),
            ],
            &[],
        );
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn a_setuid_file_altered_in_an_image_layer_is_a_mismatch() {
        let file = FileEntry {
            container_id: ID.into(),
            path: "/usr/bin/passwd".into(),
            setuid: true,
            setgid: false,
            capabilities: None,
            mode: 0o4755,
            uid: 0,
            gid: 0,
            size: 10,
            sha256: Some("cc".into()),
            sha512: None,
            layer: Layer::Image,
            image_verdict: Some(ImageVerdict::Mismatch {
                layer: None,
                expected_sha256: None,
                actual_sha256: "cc".into(),
            }),
        };
        let found = findings(&[], &[file]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].message.contains("setuid file /usr/bin/passwd"));
        assert!(found[0].message.contains("not in the image"));
    }
}
