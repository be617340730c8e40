//! Image verification in the scan: which image each container runs, and for each of its
//! processes (and each setuid/setgid/capability file of its image layers) whether the bytes
//! are the image's file at that path.
//!
//! The indexes themselves (layers read from the runtime's store, checked against the image
//! config's `diff_ids`, kept on disk) are built in the background by `nodeguard-image`; the
//! scan only asks, never waits: [`ImageIndexes::status`] answers at once, and a container
//! whose image is still being indexed has its processes `unverifiable: indexing` until a
//! later scan finds the index ready. The scan sees the indexer through the two traits here,
//! so this crate links no archive or store code (the agent plugs the indexer in).
//!
//! Cost per scan: one map lookup per container whose index is known (its answer is kept
//! while the container runs), one `expect` (a hash-map lookup in the index) per process,
//! and a comparison with the digest the scan already computed. Nothing is read or hashed
//! here.

use crate::runtime_images::RuntimeImages;
use nodeguard_hash::hex;
use nodeguard_model::{
    unescape_path, Container, ContainerImage, FileEntry, ImageIndexProgress, ImageSource,
    ImageVerdict, Layer, Process, Runtime,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How a container names its image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageName {
    /// A digest as the pod status gives it (`sha256:…`, `repo@sha256:…`,
    /// `docker-pullable://…`, `docker://sha256:…`): the indexer parses the forms.
    Digest(String),
    /// A containers/storage image id (podman, CRI-O).
    ContainersStorage(String),
    /// A Docker image id.
    Docker(String),
}

impl ImageName {
    fn text(&self) -> &str {
        match self {
            ImageName::Digest(s) | ImageName::ContainersStorage(s) | ImageName::Docker(s) => s,
        }
    }

    fn source(&self) -> ImageSource {
        match self {
            ImageName::Digest(_) => ImageSource::PodStatus,
            ImageName::ContainersStorage(_) => ImageSource::ContainersStorage,
            ImageName::Docker(_) => ImageSource::Docker,
        }
    }
}

/// What the image has at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A regular file in `layer` (the `diff_id` of the top-most layer holding it).
    InLayer {
        layer: String,
        sha256: [u8; 32],
        sha512: Option<[u8; 64]>,
    },
    /// A regular file the index did not hash: not executable in the image (running it
    /// means its mode was changed on the node), or a sparse member (never expanded).
    Unhashed { layer: String, sparse: bool },
    /// No file there: absent from every layer, or whited out.
    NotInImage,
}

/// One image's index: what each path of the merged image holds.
pub trait ImageContents: Send + Sync {
    /// `sha256:…` of the image config.
    fn config_digest(&self) -> &str;
    /// `diff_id`s, bottom layer first.
    fn layers(&self) -> &[String];
    /// What the image holds at `path` (absolute, as the container sees it, raw bytes), with
    /// whiteouts and opaque directories applied; the top-most layer wins.
    fn expect(&self, path: &[u8]) -> Expected;
}

/// An image's index, as far as it is.
#[derive(Clone)]
pub enum ImageStatus {
    Ready(Arc<dyn ImageContents>),
    /// Queued or being indexed.
    Pending,
    /// It cannot be: the reason in one line (image unknown, store not mounted, layer blobs
    /// discarded, a layer refused, ...).
    Unverifiable(String),
    /// A layer's data in the store does not hash to its `diff_id`: altered after the pull.
    /// Its processes cannot be judged file by file (`reason`), but the container is flagged.
    Altered {
        layer: String,
        reason: String,
    },
}

/// The background indexer, as the scan sees it.
pub trait ImageIndexes: Send + Sync {
    /// Never blocks: answers from what is indexed, and queues `image` when it is not yet
    /// (`priority`: older first).
    fn status(&self, image: &ImageName, priority: SystemTime) -> ImageStatus;
    /// What the indexer has done, for metrics.
    fn progress(&self) -> ImageIndexProgress;
}

/// Why a container's processes cannot be verified while its index is being built.
pub const INDEXING: &str = "indexing: the image's layers are still being read";
/// Why a containerd container without pod status cannot be verified.
pub const IMAGE_UNKNOWN: &str =
    "image unknown: no pod status names it and the runtime's metadata does not say";

/// Judges processes and files against their images' indexes; one per [`crate::Scanner`].
pub struct ImageJudge {
    indexes: Arc<dyn ImageIndexes>,
    runtime: RuntimeImages,
    /// What is known of each container seen, dropped when the container is gone.
    containers: HashMap<String, Known>,
}

struct Known {
    name: Option<ImageName>,
    first_seen: SystemTime,
    state: State,
}

#[derive(Clone)]
enum State {
    Ready(Arc<dyn ImageContents>),
    Waiting(String),
    Altered { layer: String, reason: String },
}

impl State {
    /// Why its processes cannot be judged, when they cannot.
    fn unverifiable(&self) -> Option<&str> {
        match self {
            State::Ready(_) => None,
            State::Waiting(why) | State::Altered { reason: why, .. } => Some(why),
        }
    }
}

impl ImageJudge {
    /// `containers_storage` and `docker` are the store roots as the agent sees them, for the
    /// runtimes' container records (which image a container runs when no pod says).
    pub fn new(
        indexes: Arc<dyn ImageIndexes>,
        containers_storage: Vec<std::path::PathBuf>,
        docker: Vec<std::path::PathBuf>,
    ) -> ImageJudge {
        ImageJudge {
            indexes,
            runtime: RuntimeImages::new(containers_storage, docker),
            containers: HashMap::new(),
        }
    }

    pub fn progress(&self) -> ImageIndexProgress {
        self.indexes.progress()
    }

    /// Sets each container's `image` and each container process's `image_verdict`. With
    /// `prune`, what is kept about containers not in `containers` is dropped (a full scan
    /// sees every container; an exec pass does not).
    pub fn judge(&mut self, containers: &mut [Container], processes: &mut [Process], prune: bool) {
        self.runtime.next_pass();
        if prune {
            let alive: std::collections::HashSet<&str> =
                containers.iter().map(|c| c.id.as_str()).collect();
            self.containers.retain(|id, _| alive.contains(id.as_str()));
            self.runtime.retain(|id| alive.contains(id));
        }
        let mut states: HashMap<&str, State> = HashMap::with_capacity(containers.len());
        for container in containers.iter_mut() {
            let state = self.container_state(container);
            states.insert(container.id.as_str(), state);
        }
        for p in processes.iter_mut() {
            let Some(id) = p.container_id.as_deref() else {
                continue;
            };
            if p.kernel_thread {
                continue;
            }
            p.image_verdict = states.get(id).map(|state| process_verdict(state, p));
        }
    }

    /// Sets `image_verdict` on each file the walk found in an image layer (for containers
    /// [`ImageJudge::judge`] has seen).
    pub fn judge_files(&self, files: &mut [FileEntry]) {
        for f in files.iter_mut() {
            let state = self.containers.get(&f.container_id).map(|k| &k.state);
            f.image_verdict = match (f.layer, state) {
                (Layer::Upper, Some(_)) => Some(ImageVerdict::NotFromImage),
                (Layer::Image, Some(State::Ready(index))) => Some(file_verdict(index.as_ref(), f)),
                (Layer::Image, Some(state)) => state.unverifiable().map(ImageVerdict::unverifiable),
                _ => None,
            };
        }
    }

    fn container_state(&mut self, container: &mut Container) -> State {
        let (known_name, first_seen) = match self.containers.get(&container.id) {
            Some(Known {
                name,
                state: State::Ready(index),
                ..
            }) => {
                // Ready is final while the container runs: no lookup, no status call.
                let state = State::Ready(Arc::clone(index));
                container.image = Some(container_image(name.as_ref(), &state));
                return state;
            }
            Some(known) => (known.name.clone(), known.first_seen),
            None => (None, SystemTime::now()),
        };
        let name = match known_name {
            Some(name) => Some(name),
            None => self.image_name(container),
        };
        let state = match &name {
            None => State::Waiting(IMAGE_UNKNOWN.to_string()),
            Some(name) => {
                // Oldest first: among containers first seen together (at start), the lowest
                // pid is taken as the oldest.
                let lowest_pid = container.pids.first().copied().unwrap_or(i32::MAX);
                let priority =
                    first_seen + Duration::from_nanos(u64::try_from(lowest_pid).unwrap_or(0));
                match self.indexes.status(name, priority) {
                    ImageStatus::Ready(index) => State::Ready(index),
                    ImageStatus::Pending => State::Waiting(INDEXING.to_string()),
                    ImageStatus::Unverifiable(why) => State::Waiting(why),
                    ImageStatus::Altered { layer, reason } => State::Altered { layer, reason },
                }
            }
        };
        container.image = Some(container_image(name.as_ref(), &state));
        self.containers.insert(
            container.id.clone(),
            Known {
                name,
                first_seen,
                state: state.clone(),
            },
        );
        state
    }

    fn image_name(&mut self, container: &Container) -> Option<ImageName> {
        if let Some(id) = container.pod.as_ref().and_then(|p| p.image_id.as_deref()) {
            if !id.is_empty() {
                return Some(ImageName::Digest(id.to_string()));
            }
        }
        match container.runtime {
            Runtime::Podman | Runtime::Crio => self
                .runtime
                .containers_storage_image(&container.id)
                .map(ImageName::ContainersStorage),
            Runtime::Docker => self
                .runtime
                .docker_image(&container.id)
                .map(ImageName::Docker),
            // containerd's own records are a bolt database: not read.
            Runtime::Containerd | Runtime::Unknown => None,
        }
    }
}

fn container_image(name: Option<&ImageName>, state: &State) -> ContainerImage {
    let (config_digest, layers) = match state {
        State::Ready(index) => (
            Some(index.config_digest().to_string()),
            index.layers().to_vec(),
        ),
        _ => (None, Vec::new()),
    };
    ContainerImage {
        reference: name.map(|n| n.text().to_string()),
        source: name.map(ImageName::source),
        config_digest,
        layers,
        unverifiable: state.unverifiable().map(str::to_string),
        altered_layer: match state {
            State::Altered { layer, .. } => Some(layer.clone()),
            _ => None,
        },
    }
}

/// One process's verdict. The executable's digest is the one the scan computed.
fn process_verdict(state: &State, p: &Process) -> ImageVerdict {
    if p.exe_mount.is_some() || p.exe_layer == Some(Layer::Upper) {
        return ImageVerdict::NotFromImage;
    }
    let index = match state {
        State::Ready(index) => index,
        other => return ImageVerdict::unverifiable(other.unverifiable().unwrap_or_default()),
    };
    if p.exe_deleted {
        return ImageVerdict::unverifiable("the executable was deleted: no path to compare");
    }
    let Some(path) = p.exe.as_deref().and_then(unescape_path) else {
        return ImageVerdict::unverifiable("no executable path");
    };
    let expected = index.expect(&path);
    let in_image_layer = p.exe_layer == Some(Layer::Image);
    compare(
        expected,
        p.sha256.as_deref(),
        p.sha512.as_deref(),
        p.hash_error.as_deref(),
        in_image_layer,
    )
}

fn file_verdict(index: &dyn ImageContents, f: &FileEntry) -> ImageVerdict {
    let Some(path) = unescape_path(&f.path) else {
        return ImageVerdict::unverifiable("path not understood");
    };
    compare(
        index.expect(&path),
        f.sha256.as_deref(),
        f.sha512.as_deref(),
        None,
        true,
    )
}

/// The verdict for a file the scan hashed (`sha256`/`sha512`, lowercase hex) against what the
/// image holds at its path. `in_image_layer`: the collector found it in an image (lower)
/// layer, so a difference is the layer altered on the node; when the layer is unknown (no
/// overlay), a difference proves nothing and is `unverifiable`.
fn compare(
    expected: Expected,
    sha256: Option<&str>,
    sha512: Option<&str>,
    hash_error: Option<&str>,
    in_image_layer: bool,
) -> ImageVerdict {
    let actual_sha256 = || sha256.unwrap_or("unknown").to_string();
    match expected {
        Expected::NotInImage if in_image_layer && (sha256.is_some() || sha512.is_some()) => {
            ImageVerdict::Mismatch {
                layer: None,
                expected_sha256: None,
                actual_sha256: actual_sha256(),
            }
        }
        Expected::NotInImage if in_image_layer => {
            ImageVerdict::unverifiable("not in the image, and not hashed")
        }
        Expected::NotInImage => ImageVerdict::NotFromImage,
        Expected::Unhashed { sparse: true, .. } => {
            ImageVerdict::unverifiable("a sparse file in the image: not indexed")
        }
        Expected::Unhashed { layer, .. } if in_image_layer => ImageVerdict::Mismatch {
            layer: Some(layer),
            expected_sha256: None,
            actual_sha256: actual_sha256(),
        },
        Expected::Unhashed { .. } => ImageVerdict::unverifiable(
            "its layer is unknown (no overlay) and the image's file there is not executable",
        ),
        Expected::InLayer {
            layer,
            sha256: want256,
            sha512: want512,
        } => {
            let same = match (sha256, sha512, want512) {
                (Some(have), _, _) => Some(hex_eq(have, &want256)),
                (None, Some(have), Some(want)) => Some(hex_eq(have, &want)),
                _ => None,
            };
            match same {
                Some(true) => ImageVerdict::Verified { layer },
                Some(false) if in_image_layer => ImageVerdict::Mismatch {
                    layer: Some(layer),
                    expected_sha256: Some(hex(&want256)),
                    actual_sha256: actual_sha256(),
                },
                Some(false) => ImageVerdict::unverifiable(
                    "its layer is unknown (no overlay) and its bytes are not the image's file",
                ),
                None => ImageVerdict::unverifiable(match hash_error {
                    Some(e) => format!("not hashed: {e}"),
                    None => "not hashed with a digest the index keeps".to_string(),
                }),
            }
        }
    }
}

/// Whether lowercase hex `text` spells `bytes` (no allocation: this runs per process).
fn hex_eq(text: &str, bytes: &[u8]) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let text = text.as_bytes();
    text.len() == bytes.len() * 2
        && bytes.iter().enumerate().all(|(i, b)| {
            text[2 * i].to_ascii_lowercase() == DIGITS[usize::from(b >> 4)]
                && text[2 * i + 1].to_ascii_lowercase() == DIGITS[usize::from(b & 15)]
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::SeccompMode;
    use std::sync::Mutex;

    /// An index given as plain values: the indexer itself is `nodeguard-image`'s, tested
    /// there and in the real-node tests.
    struct Index {
        files: HashMap<Vec<u8>, (String, [u8; 32])>,
        layers: Vec<String>,
    }

    impl ImageContents for Index {
        fn config_digest(&self) -> &str {
            "sha256:config"
        }
        fn layers(&self) -> &[String] {
            &self.layers
        }
        fn expect(&self, path: &[u8]) -> Expected {
            match self.files.get(path) {
                Some((layer, sha256)) => Expected::InLayer {
                    layer: layer.clone(),
                    sha256: *sha256,
                    sha512: None,
                },
                None => Expected::NotInImage,
            }
        }
    }

    struct Indexes {
        answer: Mutex<ImageStatus>,
        asked: Mutex<Vec<ImageName>>,
    }

    impl ImageIndexes for Indexes {
        fn status(&self, image: &ImageName, _: SystemTime) -> ImageStatus {
            self.asked.lock().unwrap().push(image.clone());
            self.answer.lock().unwrap().clone()
        }
        fn progress(&self) -> ImageIndexProgress {
            ImageIndexProgress::default()
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn container() -> Container {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "id": ID, "runtime": "containerd", "pod_uid": "u", "qos": null, "cgroup": "/x",
            "cgroup_driver": "cgroupfs", "cgroup_version": "v1",
            "limits": {"memory_bytes": null, "cpu_cores": null, "pids": null},
            "pod_limits": null,
            "effective_limits": {"memory_bytes": null, "cpu_cores": null, "pids": null},
            "pids": [10], "rootfs": null, "pod": null
        }))
        .unwrap();
        c.pod = Some(nodeguard_model::PodRef {
            namespace: "ns".into(),
            name: "pod".into(),
            container_name: Some("app".into()),
            image: Some("app:1".into()),
            image_id: Some("sha256:cfg".into()),
        });
        c
    }

    fn process(pid: i32, exe: &str, sha256: &str, layer: Layer) -> Process {
        Process {
            pid,
            ppid: 1,
            command: "x".into(),
            cmdline: "x".into(),
            container_id: Some(ID.into()),
            exe: Some(exe.into()),
            exe_layer: Some(layer),
            sha256: Some(sha256.into()),
            no_new_privs: Some(true),
            seccomp: Some(SeccompMode::Filter),
            ..Process::default()
        }
    }

    fn judge(answer: ImageStatus) -> (ImageJudge, Arc<Indexes>) {
        let indexes = Arc::new(Indexes {
            answer: Mutex::new(answer),
            asked: Mutex::new(Vec::new()),
        });
        (ImageJudge::new(indexes.clone(), vec![], vec![]), indexes)
    }

    fn ready() -> ImageStatus {
        let mut files = HashMap::new();
        files.insert(b"/bin/app".to_vec(), ("sha256:top".to_string(), [0xab; 32]));
        ImageStatus::Ready(Arc::new(Index {
            files,
            layers: vec!["sha256:base".into(), "sha256:top".into()],
        }))
    }

    #[test]
    fn each_process_is_judged_against_the_image_file_at_its_path() {
        let (mut judge, _) = judge(ready());
        let mut containers = [container()];
        let good = "ab".repeat(32);
        let bad = "cd".repeat(32);
        let mut processes = [
            process(10, "/bin/app", &good, Layer::Image),
            process(11, "/bin/app", &bad, Layer::Image),
            process(12, "/tmp/dropped", &bad, Layer::Upper),
            process(13, "/bin/planted", &bad, Layer::Image),
        ];
        judge.judge(&mut containers, &mut processes, true);
        let verdicts: Vec<_> = processes.iter().map(|p| p.image_verdict.clone()).collect();
        assert_eq!(
            verdicts,
            [
                Some(ImageVerdict::Verified {
                    layer: "sha256:top".into()
                }),
                Some(ImageVerdict::Mismatch {
                    layer: Some("sha256:top".into()),
                    expected_sha256: Some(good.clone()),
                    actual_sha256: bad.clone(),
                }),
                Some(ImageVerdict::NotFromImage),
                Some(ImageVerdict::Mismatch {
                    layer: None,
                    expected_sha256: None,
                    actual_sha256: bad.clone(),
                }),
            ]
        );
        let image = containers[0].image.clone().unwrap();
        assert_eq!(image.reference.as_deref(), Some("sha256:cfg"));
        assert_eq!(image.config_digest.as_deref(), Some("sha256:config"));
        assert_eq!(image.layers, ["sha256:base", "sha256:top"]);
        assert_eq!(image.unverifiable, None);
    }

    #[test]
    fn a_pending_index_leaves_processes_unverifiable_and_is_asked_again_next_scan() {
        let (mut judge, indexes) = judge(ImageStatus::Pending);
        let mut containers = [container()];
        let mut processes = [process(10, "/bin/app", &"ab".repeat(32), Layer::Image)];
        judge.judge(&mut containers, &mut processes, true);
        assert_eq!(
            processes[0].image_verdict,
            Some(ImageVerdict::unverifiable(INDEXING))
        );
        assert_eq!(
            containers[0]
                .image
                .as_ref()
                .unwrap()
                .unverifiable
                .as_deref(),
            Some(INDEXING)
        );
        *indexes.answer.lock().unwrap() = ready();
        judge.judge(&mut containers, &mut processes, true);
        assert!(matches!(
            processes[0].image_verdict,
            Some(ImageVerdict::Verified { .. })
        ));
        // Ready is kept: later scans do not ask the indexer again.
        judge.judge(&mut containers, &mut processes, true);
        assert_eq!(indexes.asked.lock().unwrap().len(), 2);
        // A container that went is forgotten.
        judge.judge(&mut [], &mut [], true);
        assert!(judge.containers.is_empty());
    }

    #[test]
    fn an_unverifiable_image_says_why_once_per_container_and_per_process() {
        let why = "layer blobs discarded: sha256:top";
        let (mut judge, _) = judge(ImageStatus::Unverifiable(why.into()));
        let mut containers = [container()];
        let mut processes = [
            process(10, "/bin/app", &"ab".repeat(32), Layer::Image),
            process(11, "/tmp/x", &"ab".repeat(32), Layer::Upper),
        ];
        judge.judge(&mut containers, &mut processes, true);
        assert_eq!(
            containers[0]
                .image
                .as_ref()
                .unwrap()
                .unverifiable
                .as_deref(),
            Some(why)
        );
        assert_eq!(
            processes[0].image_verdict,
            Some(ImageVerdict::unverifiable(why))
        );
        assert_eq!(processes[1].image_verdict, Some(ImageVerdict::NotFromImage));
    }

    #[test]
    fn a_containerd_container_without_a_pod_is_image_unknown() {
        let (mut judge, indexes) = judge(ready());
        let mut c = container();
        c.pod = None;
        let mut containers = [c];
        let mut processes = [process(10, "/bin/app", &"ab".repeat(32), Layer::Image)];
        judge.judge(&mut containers, &mut processes, true);
        assert_eq!(
            processes[0].image_verdict,
            Some(ImageVerdict::unverifiable(IMAGE_UNKNOWN))
        );
        assert!(indexes.asked.lock().unwrap().is_empty());
    }

    #[test]
    fn hex_comparison_is_exact() {
        assert!(hex_eq(&"ab".repeat(32), &[0xab; 32]));
        assert!(!hex_eq(&"ab".repeat(31), &[0xab; 32]));
        assert!(!hex_eq(&"ac".repeat(32), &[0xab; 32]));
        assert_eq!(hex(&[0x01, 0xfe]), "01fe");
    }
}
