//! Pod metadata for the containers on this node, from a reflector over the node's pods.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use nodeguard_model::{PodLookup, PodRef, Runtime};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Watches the pods scheduled on this node and answers container lookups from the store.
///
/// The reflector runs in its own task, relists and re-watches with kube's default backoff
/// (0.8 s doubling to 30 s) forever; lookups meanwhile answer from what the store holds.
/// The store holds only this node's pods (about 110 at most), with managed fields and
/// annotations stripped.
pub struct PodWatch {
    store: Store<Pod>,
    synced: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    /// Starts the reflector for pods with `spec.nodeName=node_name`. Must be called inside a
    /// tokio runtime; returns at once.
    pub fn start(client: kube::Client, node_name: &str) -> PodWatch {
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let stream = watcher(api, config)
            .modify(|pod| {
                pod.managed_fields_mut().clear();
                pod.annotations_mut().clear();
            })
            .default_backoff();
        let task = {
            let synced = synced.clone();
            let errors = errors.clone();
            let node = node_name.to_string();
            tokio::spawn(async move {
                reflector::reflector(writer, stream)
                    .for_each(|event| {
                        match event {
                            Ok(watcher::Event::InitDone) => {
                                if !synced.swap(true, Ordering::Relaxed) {
                                    tracing::info!(node = %node, "pod store synced");
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(node = %node, %error, "pod watch failed; retrying with backoff");
                            }
                        }
                        std::future::ready(())
                    })
                    .await;
            })
        };
        PodWatch {
            store,
            synced,
            errors,
            task,
        }
    }

    /// A cheap, synchronous lookup over the store, for the scanner.
    pub fn lookup(&self) -> Arc<dyn PodLookup> {
        Arc::new(StoreLookup {
            store: self.store.clone(),
        })
    }

    /// Whether the first full list has arrived (before that, lookups may miss pods).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Pods in the store now.
    pub fn pod_count(&self) -> usize {
        self.store.len()
    }

    /// List/watch errors since start (each followed by a backoff and a retry).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Stops the reflector; lookups keep answering from the last store contents.
    pub fn stop(&self) {
        self.task.abort();
    }
}

struct StoreLookup {
    store: Store<Pod>,
}

impl StoreLookup {
    /// The pod that lists `container_id` in its status, else the pod with `pod_uid`.
    fn find_pod(&self, pod_uid: Option<&str>, container_id: &str) -> Option<Arc<Pod>> {
        let container_id = bare_container_id(container_id);
        let by_container = self
            .store
            .find(|pod| find_status(pod, container_id).is_some());
        if by_container.is_some() {
            return by_container;
        }
        let uid = normalize_uid(pod_uid?);
        self.store
            .find(|pod| pod.metadata.uid.as_deref() == Some(uid.as_str()))
    }
}

impl PodLookup for StoreLookup {
    fn pod_for(&self, pod_uid: Option<&str>, container_id: &str) -> Option<PodRef> {
        let pod = self.find_pod(pod_uid, container_id)?;
        pod_ref_for(&pod, bare_container_id(container_id))
    }

    fn is_sandbox(&self, pod_uid: Option<&str>, container_id: &str) -> Option<bool> {
        sandbox_by_status(&*self.find_pod(pod_uid, container_id)?, container_id)
    }

    fn runtime_of(&self, pod_uid: Option<&str>, container_id: &str) -> Option<Runtime> {
        runtime_by_status(&*self.find_pod(pod_uid, container_id)?, container_id)
    }
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status
        .as_ref()
        .into_iter()
        .flat_map(|status| {
            [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ]
        })
        .flatten()
        .flatten()
}

/// Whether `container_id` is the pod's sandbox by the pod's status: a container of the
/// pod's cgroup that no status lists, once every status carries an id (before that, a
/// container just started may simply not be listed yet). `Some(false)` when listed.
pub fn sandbox_by_status(pod: &Pod, container_id: &str) -> Option<bool> {
    let container_id = bare_container_id(container_id);
    if find_status(pod, container_id).is_some() {
        return Some(false);
    }
    let mut listed = statuses(pod).peekable();
    listed.peek()?;
    listed
        .all(|s| {
            s.container_id
                .as_deref()
                .is_some_and(|id| !bare_container_id(id).is_empty())
        })
        .then_some(true)
}

/// The runtime named by the `containerID` scheme of this container's status, else of the
/// pod's other containers (one runtime runs a whole pod, its sandbox included).
pub fn runtime_by_status(pod: &Pod, container_id: &str) -> Option<Runtime> {
    let scheme = |s: &ContainerStatus| {
        let (scheme, _) = s.container_id.as_deref()?.split_once("://")?;
        match scheme {
            "containerd" => Some(Runtime::Containerd),
            "cri-o" => Some(Runtime::Crio),
            "docker" => Some(Runtime::Docker),
            _ => None,
        }
    };
    find_status(pod, bare_container_id(container_id))
        .and_then(scheme)
        .or_else(|| statuses(pod).find_map(scheme))
}

/// The pod reference for `container_id` in `pod`: namespace and name always; container
/// name, image (spec, else status) and image id (status `imageID`) when the container id is
/// one of the pod's container, init container or ephemeral container statuses. `None` when
/// the pod has no name.
pub fn pod_ref_for(pod: &Pod, container_id: &str) -> Option<PodRef> {
    let name = pod.metadata.name.clone()?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut pod_ref = PodRef {
        namespace,
        name,
        ..PodRef::default()
    };
    if let Some(status) = find_status(pod, bare_container_id(container_id)) {
        pod_ref.container_name = Some(status.name.clone());
        pod_ref.image = spec_image(pod, &status.name)
            .or_else(|| non_empty(&status.image))
            .map(str::to_string);
        pod_ref.image_id = non_empty(&status.image_id).map(str::to_string);
    }
    Some(pod_ref)
}

fn find_status<'a>(pod: &'a Pod, container_id: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .find(|s| {
        s.container_id
            .as_deref()
            .is_some_and(|id| !container_id.is_empty() && bare_container_id(id) == container_id)
    })
}

fn spec_image<'a>(pod: &'a Pod, container: &str) -> Option<&'a str> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .and_then(|c| c.image.as_deref())
        .or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == container)
                .and_then(|c| c.image.as_deref())
        })
        .and_then(non_empty)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `containerd://abc` → `abc` (also `cri-o://`, `docker://`); a bare id stays as it is.
fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// The systemd cgroup driver writes pod uids with `_` for `-`.
fn normalize_uid(uid: &str) -> String {
    uid.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const C3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "0a1b2c3d-0000-4000-8000-000000000001"},
            "spec": {
                "nodeName": "node-a",
                "initContainers": [{"name": "migrate", "image": "registry.example/migrate:1"}],
                "containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "side", "image": ""}],
                "ephemeralContainers": [{"name": "debugger", "image": "busybox:1.36"}]
            },
            "status": {
                "initContainerStatuses": [{"name": "migrate", "containerID": format!("cri-o://{C2}"),
                    "image": "registry.example/migrate:1", "imageID": "registry.example/migrate@sha256:bb",
                    "ready": false, "restartCount": 0}],
                "containerStatuses": [
                    {"name": "app", "containerID": format!("containerd://{C1}"),
                     "image": "docker.io/library/nginx:1.25", "imageID": "docker.io/library/nginx@sha256:aa",
                     "ready": true, "restartCount": 0},
                    {"name": "side", "containerID": "docker://ffff",
                     "image": "docker.io/library/side:2", "imageID": "",
                     "ready": true, "restartCount": 0}
                ],
                "ephemeralContainerStatuses": [{"name": "debugger", "containerID": format!("containerd://{C3}"),
                    "image": "docker.io/library/busybox:1.36", "imageID": "docker.io/library/busybox@sha256:cc",
                    "ready": false, "restartCount": 0}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn maps_each_runtime_prefix_and_container_list() {
        let pod = pod();
        let app = pod_ref_for(&pod, C1).unwrap();
        assert_eq!(
            app,
            PodRef {
                namespace: "shop".into(),
                name: "web-0".into(),
                container_name: Some("app".into()),
                image: Some("nginx:1.25".into()),
                image_id: Some("docker.io/library/nginx@sha256:aa".into()),
            }
        );
        assert_eq!(
            pod_ref_for(&pod, C2).unwrap().container_name.as_deref(),
            Some("migrate")
        );
        let debugger = pod_ref_for(&pod, &format!("containerd://{C3}")).unwrap();
        assert_eq!(debugger.container_name.as_deref(), Some("debugger"));
        assert_eq!(debugger.image.as_deref(), Some("busybox:1.36"));
        // Empty spec image falls back to the status image; an empty imageID is no digest.
        let side = pod_ref_for(&pod, "ffff").unwrap();
        assert_eq!(side.image.as_deref(), Some("docker.io/library/side:2"));
        assert_eq!(side.image_id, None);
    }

    #[test]
    fn unknown_container_in_a_known_pod_keeps_the_pod() {
        let r = pod_ref_for(&pod(), "9999").unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "web-0"));
        assert_eq!(r.container_name, None);
        assert_eq!(r.image_id, None);
    }

    #[test]
    fn sandbox_and_runtime_by_status() {
        let pod = pod();
        // Listed containers are no sandbox; their scheme names the runtime.
        assert_eq!(sandbox_by_status(&pod, C1), Some(false));
        assert_eq!(runtime_by_status(&pod, C1), Some(Runtime::Containerd));
        assert_eq!(runtime_by_status(&pod, C2), Some(Runtime::Crio));
        assert_eq!(runtime_by_status(&pod, "ffff"), Some(Runtime::Docker));
        // An id in no status, every status carrying an id: the sandbox, the pod's runtime.
        let sandbox = "5".repeat(64);
        assert_eq!(sandbox_by_status(&pod, &sandbox), Some(true));
        assert_eq!(runtime_by_status(&pod, &sandbox), Some(Runtime::Containerd));
        // A status without an id yet (container creating): the status cannot tell.
        let mut starting = pod.clone();
        if let Some(s) = starting
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            s[1].container_id = None;
        }
        assert_eq!(sandbox_by_status(&starting, &sandbox), None);
        // No status at all (Pending): cannot tell.
        let mut pending = pod.clone();
        pending.status = None;
        assert_eq!(sandbox_by_status(&pending, &sandbox), None);
        assert_eq!(runtime_by_status(&pending, &sandbox), None);
    }

    #[test]
    fn store_lookup_matches_container_then_pod_uid() {
        let (store, mut writer) = reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Apply(pod()));
        let lookup = StoreLookup { store };
        assert_eq!(
            lookup.pod_for(None, C1).unwrap().container_name.as_deref(),
            Some("app")
        );
        // The sandbox (pause) container is in no status list: the pod uid still names the
        // pod; the systemd driver's underscores are accepted.
        let sandbox = lookup
            .pod_for(Some("0a1b2c3d_0000_4000_8000_000000000001"), "abcd")
            .unwrap();
        assert_eq!(sandbox.name, "web-0");
        assert_eq!(sandbox.container_name, None);
        assert_eq!(
            lookup.is_sandbox(Some("0a1b2c3d_0000_4000_8000_000000000001"), "abcd"),
            Some(true)
        );
        assert_eq!(lookup.is_sandbox(None, C1), Some(false));
        assert_eq!(
            lookup.runtime_of(Some("0a1b2c3d-0000-4000-8000-000000000001"), "abcd"),
            Some(Runtime::Containerd)
        );
        assert_eq!(lookup.is_sandbox(Some("other-uid"), "abcd"), None);
        assert!(lookup.pod_for(None, "abcd").is_none());
        assert!(lookup.pod_for(Some("other-uid"), "abcd").is_none());
        assert!(lookup.pod_for(None, "").is_none());
    }
}
