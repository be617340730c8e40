//! The containers of one pass: their cgroup limits and device access, and the layer each
//! container executable comes from.

use crate::layer::{locate, HostRoot, Located};
use crate::limits::{container_paths, detect_layout, CgroupLayout, KeptFiles, LimitsReader};
use crate::mountinfo::WritableMount;
use crate::pass::{
    joined, open_host_root, ContainerSeed, LocatedCache, LocatedEntry, Log, LIMIT_READERS,
};
use crate::process::RawProcess;
use crate::runtime::{first_started_per_pod, looks_like_sandbox, runtime_from_ancestors};
use crate::script::{locate_script, FoundScript};
use crate::{CollectOptions, CollectedProcess};
use nodeguard_model::{
    escape_path, CgroupVersion, Confinement, Container, DeviceAccess, Layer, MountRef, Process,
    Runtime, Script,
};
use std::collections::{BTreeMap, HashMap};

/// The slot of a container's limit reads (see [`LIMIT_READERS`]).
pub(crate) fn limit_slot(id: &str) -> usize {
    id.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % LIMIT_READERS
}

/// What was read of one container's cgroup limits.
pub(crate) struct ContainerLimits {
    limits: nodeguard_model::Limits,
    pod_limits: Option<nodeguard_model::Limits>,
    node_allocatable: Option<nodeguard_model::Limits>,
    effective: nodeguard_model::Limits,
    unknown: Vec<String>,
    /// Messages for the log, in the order found.
    problems: Vec<String>,
}

/// The limits of the container `id` whose first process read `file` as its cgroup file: its
/// own, its pod's and the node allocatable above them, and the effective ones.
pub(crate) fn read_container_limits(
    reader: &mut LimitsReader,
    id: &str,
    seed: &ContainerSeed,
    first: &RawProcess,
    file: &crate::cgroup::CgroupFile,
) -> ContainerLimits {
    let reference = &seed.reference;
    let pid = first.process.pid;
    let (own_paths, pod_paths) = container_paths(file, reader.layout(), id);
    let mut problems = Vec::new();
    let mut own = reader.own(&own_paths, pid);
    problems.append(&mut own.problems);
    // A pod container is bounded by its own cgroup and its pod's; the levels above
    // (kubepods: node allocatable; the QoS class) are reported apart.
    let pod_uid = reference.cgroup.pod_uid.as_ref();
    let floor = match (pod_uid, &pod_paths) {
        (None, _) => None,
        (Some(_), Some(pod_paths)) => Some(pod_paths.clone()),
        (Some(_), None) => Some(own_paths.clone()),
    };
    let (mut pod_limits, mut node_allocatable) = (None, None);
    if pod_uid.is_some() {
        if let Some(pod_paths) = &pod_paths {
            let pod = reader.own(pod_paths, pid);
            problems.extend(pod.problems);
            pod_limits = Some(pod.limits);
            node_allocatable = reader.node_allocatable(pod_paths);
        }
    }
    let effective = reader.effective(&own_paths, &own, floor.as_ref());
    problems.extend(effective.problems);
    let hint = if reference.cgroup.relative_to_namespace {
        " (cgroup paths were relative to the agent's cgroup namespace; run it in the host cgroup namespace)"
    } else {
        ""
    };
    ContainerLimits {
        limits: own.limits,
        pod_limits,
        node_allocatable,
        effective: effective.limits,
        unknown: effective.unknown.iter().map(|s| s.to_string()).collect(),
        problems: problems
            .into_iter()
            .map(|problem| format!("container {id}: {problem}{hint}"))
            .collect(),
    }
}

/// The containers of `seeds` but those `skip` names, their cgroup limits read through `kept`
/// (one map of handles per [`LIMIT_READERS`] slot, each read on a thread of its own when
/// `parallel`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_containers(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    kept: &mut [KeptFiles; LIMIT_READERS],
    keep_max: usize,
    parallel: bool,
    skip: &(dyn Fn(&str) -> bool + Sync),
    log: &mut Log,
) -> Vec<Container> {
    // Only containers built here need the layout: an exec read whose containers are all
    // known (skipped) costs no look at the cgroup root (several `stat`s on cgroup v1).
    let needed = seeds.keys().any(|id| !skip(id));
    let layout = match needed {
        true => detect_layout(&opts.cgroup_root),
        false => CgroupLayout::Unknown,
    };
    let mut readers: Vec<LimitsReader> = kept
        .iter_mut()
        .map(|k| {
            LimitsReader::with_layout(
                &opts.cgroup_root,
                layout.clone(),
                std::mem::take(k),
                keep_max,
            )
        })
        .collect();
    let layout_known = layout != CgroupLayout::Unknown;
    if !layout_known && needed {
        log.error(
            "cgroup",
            format!(
                "cgroup root {} is neither cgroup v2 nor v1: limits not read",
                opts.cgroup_root.display()
            ),
        );
    }
    if let CgroupLayout::V1 {
        memory, cpu, pids, ..
    } = &layout
    {
        for (name, dir) in [("memory", memory), ("cpu", cpu), ("pids", pids)] {
            if dir.is_none() && needed {
                log.warn(format!(
                    "cgroup root {} has no {name} hierarchy: {name} limits are unknown",
                    opts.cgroup_root.display()
                ));
            }
        }
    }
    // The version users must look at for the limits: on a hybrid host runc also names the
    // container in the controller-less v2 tree, but the limits live in v1.
    let limits_version = match layout {
        CgroupLayout::V2 => Some(CgroupVersion::V2),
        CgroupLayout::V1 { .. } => Some(CgroupVersion::V1),
        CgroupLayout::Unknown => None,
    };

    // The limit reads, by slot; nothing is read for a container without a cgroup file.
    let read_slot = |reader: &mut LimitsReader, slot: usize| -> Vec<(&str, ContainerLimits)> {
        seeds
            .iter()
            .filter(|(id, _)| limit_slot(id) == slot && !skip(id))
            .filter_map(|(id, seed)| {
                let first = &raws[seed.first];
                let file = first.cgroup.as_ref().filter(|_| layout_known)?;
                Some((
                    id.as_str(),
                    read_container_limits(reader, id, seed, first, file),
                ))
            })
            .collect()
    };
    let mut read: HashMap<&str, ContainerLimits> = HashMap::with_capacity(seeds.len());
    if parallel && seeds.len() > 1 {
        let slots: Vec<Vec<(&str, ContainerLimits)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = readers
                .iter_mut()
                .enumerate()
                .map(|(slot, reader)| scope.spawn(move || read_slot(reader, slot)))
                .collect();
            handles.into_iter().map(joined).collect()
        });
        read.extend(slots.into_iter().flatten());
    } else {
        for (slot, reader) in readers.iter_mut().enumerate() {
            read.extend(read_slot(reader, slot));
        }
    }
    for (k, reader) in kept.iter_mut().zip(readers) {
        *k = reader.into_kept();
    }

    let mut containers = Vec::with_capacity(seeds.len());
    // Containers that look like their pod's sandbox: (pod uid, start ticks, pid, index).
    let mut sandbox_candidates: Vec<(String, Option<u64>, i32, usize)> = Vec::new();
    for (id, seed) in seeds.iter().filter(|(id, _)| !skip(id)) {
        let reference = &seed.reference;
        let mut container = Container {
            image: None,
            id: id.clone(),
            runtime: reference.cgroup.runtime,
            pod_uid: reference.cgroup.pod_uid.clone(),
            qos: reference.cgroup.qos,
            cgroup: reference.cgroup.container_path.clone(),
            cgroup_driver: reference.cgroup.driver,
            cgroup_version: limits_version.unwrap_or(reference.version),
            limits: Default::default(),
            pod_limits: None,
            effective_limits: Default::default(),
            unknown_limits: Vec::new(),
            node_allocatable: None,
            sandbox: false,
            exited: false,
            pids: seed.pids.clone(),
            rootfs: seed.root.as_ref().map(|r| r.rootfs.clone()),
            pod: None,
            confinement: Confinement {
                devices: DeviceAccess::Unknown,
                masked_paths: seed.root.as_ref().and_then(|r| r.masked_paths.clone()),
            },
        };
        if container.runtime == Runtime::Unknown {
            // A bare id under kubepods (containerd's CRI with the cgroupfs driver): the
            // monitor above the container's first process says which runtime it is.
            if let Some(runtime) = runtime_from_ancestors(raws, seed.first, id) {
                container.runtime = runtime;
            }
        }
        if container.pod_uid.is_some() {
            let processes: Vec<&Process> = seed
                .pids
                .iter()
                .filter_map(|pid| {
                    raws.binary_search_by_key(pid, |r| r.process.pid)
                        .ok()
                        .map(|i| &raws[i].process)
                })
                .collect();
            if let (Some(uid), [p]) = (&container.pod_uid, processes.as_slice()) {
                if looks_like_sandbox(&processes) {
                    let start = raws
                        .binary_search_by_key(&p.pid, |r| r.process.pid)
                        .ok()
                        .and_then(|i| raws[i].start_ticks);
                    sandbox_candidates.push((uid.clone(), start, p.pid, containers.len()));
                }
            }
        }
        match read.remove(id.as_str()) {
            None => {
                // Nothing could be read: unknown, not unlimited (the cgroup root's warning, or
                // the process's unreadable cgroup file, says why once).
                container.unknown_limits = ["memory", "cpu", "pids"].map(String::from).to_vec();
            }
            Some(limits) => {
                container.limits = limits.limits;
                container.pod_limits = limits.pod_limits;
                container.node_allocatable = limits.node_allocatable;
                container.effective_limits = limits.effective;
                container.unknown_limits = limits.unknown;
                for problem in limits.problems {
                    log.error("cgroup", problem);
                }
            }
        }
        containers.push(container);
    }
    let candidates: Vec<(&str, Option<u64>, i32, usize)> = sandbox_candidates
        .iter()
        .map(|(uid, start, pid, i)| (uid.as_str(), *start, *pid, *i))
        .collect();
    for i in first_started_per_pod(&candidates) {
        if let Some(container) = containers.get_mut(i) {
            container.sandbox = true;
        }
    }
    containers
}

/// Fills in each container's device access (`devices.list` on cgroup v1, see
/// [`crate::confinement`]). A runtime writes a container's device list once, while it sets
/// the container up, and never widens it, so a restricted answer is kept in `known` and
/// read again only at the container's turn, once in `every` passes (`turn` is this pass and
/// `every`): one file per new or privileged container per pass, not one per container.
/// "Every device" is read again each pass: before the runtime writes the list, a new
/// cgroup shows its parent's, which is every device. Entries of gone containers are
/// dropped.
pub(crate) fn read_devices(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    containers: &mut [Container],
    known: &mut HashMap<String, DeviceAccess>,
    turn: (u64, u64),
    log: &mut Log,
) {
    let (pass, every) = turn;
    known.retain(|id, _| seeds.contains_key(id));
    if seeds.is_empty() {
        return;
    }
    let hierarchy = crate::confinement::devices_hierarchy(&opts.cgroup_root);
    for container in containers.iter_mut() {
        let Some(seed) = seeds.get(&container.id) else {
            continue;
        };
        let due = (pass + limit_slot(&container.id) as u64).is_multiple_of(every.max(1));
        if let Some(access) = known.get(&container.id).filter(|_| !due) {
            container.confinement.devices = *access;
            continue;
        }
        let Some(file) = raws[seed.first].cgroup.as_ref() else {
            continue;
        };
        match crate::confinement::read_device_access(hierarchy.as_deref(), file, &container.id) {
            Ok(access) => {
                container.confinement.devices = access;
                if access == DeviceAccess::Restricted {
                    known.insert(container.id.clone(), access);
                } else {
                    known.remove(&container.id);
                }
            }
            // Removed between the process read and now: the container is going.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log.error(
                "cgroup",
                format!(
                    "container {}: devices.list: {e}: device access unknown",
                    container.id
                ),
            ),
        }
    }
}

/// The layer (and, through the layer, the identity) of each container process's
/// executable, by index into `raws`: `None` for processes with no container root to look in.
/// `kept` holds the previous pass's lookups: an executable already located in a container
/// (same path, same running file) is not looked up again, and asking costs no allocation;
/// entries this pass did not use are dropped, and so are failed lookups (the next pass tries,
/// and warns, again; within a pass one failure is told once).
pub(crate) fn locate_layers(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    kept: &mut LocatedCache,
    log: &mut Log,
) -> Vec<Option<Located>> {
    let mut host: Option<Option<HostRoot>> = None;
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        let seed = raw.container.as_ref().and_then(|c| seeds.get(&c.cgroup.id));
        let (Some(seed), Some(exe)) = (seed, raw.exe_path.as_ref()) else {
            out.push(None);
            continue;
        };
        let layers = seed.root.as_ref().and_then(|r| r.rootfs.overlay());
        let mut located = Located {
            layer: Layer::Unknown,
            identity: None,
        };
        if let (Some(layers), Some(running), false) =
            (layers, raw.exe_identity, raw.process.exe_deleted)
        {
            let host = host.get_or_insert_with(|| open_host_root(opts, log));
            if let Some(host) = host {
                let id = seed.reference.cgroup.id.as_str();
                let entries = kept.entry(running).or_default();
                match entries
                    .iter_mut()
                    .find(|e| e.container == id && e.exe == *exe)
                {
                    Some(entry) => {
                        entry.used = true;
                        located = entry.located;
                    }
                    None => {
                        let failed = match locate(host, layers, exe, &running) {
                            Ok(got) => {
                                located = got;
                                false
                            }
                            Err(e) => {
                                log.error("layer", format!("container {id}: {e}"));
                                true
                            }
                        };
                        entries.push(LocatedEntry {
                            container: id.to_string(),
                            exe: exe.clone(),
                            located,
                            used: true,
                            failed,
                        });
                    }
                }
            }
        }
        out.push(Some(located));
    }
    kept.retain(|_, entries| {
        entries.retain_mut(|e| std::mem::take(&mut e.used) && !e.failed);
        !entries.is_empty()
    });
    out
}

/// What runs from outside the image for one process: the writable mount its executable is
/// on, and the script it runs from the writable layer or a writable mount.
#[derive(Debug, Default)]
pub(crate) struct Outside {
    exe_mount: Option<WritableMount>,
    script: Option<FoundScript>,
}

/// For each process of `raws` (by index, beside `located`): whether its executable, not found
/// in the layers, is on a writable mount of its container ([`crate::mountinfo::ContainerRoot::writable_mount_of`]
/// by path and device), and whether the script it runs as an interpreter is outside the image
/// ([`locate_script`]). Scripts are looked up once per (container, path) in a pass.
pub(crate) fn outside_image(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    located: &[Option<Located>],
) -> Vec<Outside> {
    let mut host: Option<Option<HostRoot>> = None;
    let mut scripts: HashMap<(&str, &[u8]), Option<FoundScript>> = HashMap::new();
    let mut out = Vec::with_capacity(raws.len());
    for (raw, located) in raws.iter().zip(located) {
        let mut outside = Outside::default();
        let seed = raw.container.as_ref().and_then(|c| seeds.get(&c.cgroup.id));
        let root = seed.and_then(|s| s.root.as_ref());
        let (Some(root), Some(located)) = (root, located) else {
            out.push(outside);
            continue;
        };
        if let (Layer::Unknown, Some(exe), Some(running), false) = (
            located.layer,
            raw.exe_path.as_deref(),
            raw.exe_identity,
            raw.process.exe_deleted,
        ) {
            outside.exe_mount = root.writable_mount_of(exe, running.dev).cloned();
        }
        if let (Some(path), Some(container)) = (raw.script.as_deref(), raw.container.as_ref()) {
            let key = (container.cgroup.id.as_str(), path);
            outside.script = match scripts.get(&key) {
                Some(found) => found.clone(),
                None => {
                    // An unreachable host root was already told by `locate_layers`.
                    let host = host
                        .get_or_insert_with(|| open_host_root(opts, &mut Log::default()))
                        .as_ref();
                    // Gone, not a regular file, not there: nothing runs from it.
                    let found = locate_script(&opts.proc_root, raw.process.pid, path, root, host)
                        .unwrap_or_default();
                    scripts.insert(key, found.clone());
                    found
                }
            };
        }
        out.push(outside);
    }
    out
}

/// The processes with their executables' layers (from [`locate_layers`]) filled in, and what
/// they run from outside the image ([`outside_image`]).
pub(crate) fn attach_layers(
    raws: Vec<RawProcess>,
    (located, outside): (Vec<Option<Located>>, Vec<Outside>),
) -> Vec<CollectedProcess> {
    raws.into_iter()
        .zip(located)
        .zip(outside)
        .map(|((raw, located), outside)| {
            let mut process = raw.process;
            let mut identity = raw.exe_identity;
            if let Some(located) = located {
                process.exe_layer = Some(located.layer);
                if located.identity.is_some() {
                    identity = located.identity;
                }
            }
            process.exe_mount = outside.exe_mount.map(|m| mount_ref(&m));
            let script_identity = outside.script.as_ref().map(|s| s.identity);
            process.script = outside.script.map(|s| Script {
                path: escape_path(&s.path),
                mount: s.mount.as_ref().map(mount_ref),
                sha256: None,
                hash_error: None,
            });
            CollectedProcess {
                process,
                exe_identity: identity,
                script_identity,
            }
        })
        .collect()
}

pub(crate) fn mount_ref(m: &WritableMount) -> MountRef {
    MountRef {
        mount_point: escape_path(&m.mount_point),
        fstype: m.fstype.clone(),
    }
}
