//! One pass over the proc root: processes, then the containers they belong to.

use crate::cgroup::ContainerRef;
use crate::layer::{locate, FileIdentity, HostRoot, Located};
use crate::limits::{container_paths, CgroupLayout, LimitsReader};
use crate::mountinfo::{container_root, ContainerRoot};
use crate::process::{read_process, shared_with_host, Failure, PidDir, RawProcess};
use crate::{CollectOptions, CollectedProcess, Error, Snapshot};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nodeguard_model::{Container, Layer, Namespaces, ScanStats};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::Path;

/// `cap_last_cap` when the kernel does not say (Linux 5.9+: CAP_CHECKPOINT_RESTORE).
pub const DEFAULT_CAP_LAST_CAP: u32 = 40;

/// Reading mountinfo stops here; a container with more mounts than this is not normal.
const MOUNTINFO_MAX: usize = 4 << 20;

/// Warnings and error counts gathered during one collection.
#[derive(Debug, Default)]
struct Log {
    stats: ScanStats,
    warnings: Vec<String>,
    seen: HashSet<String>,
}

impl Log {
    fn error(&mut self, kind: &str, message: String) {
        self.stats.count_error(kind);
        self.warn(message);
    }

    /// A warning, once per distinct text.
    fn warn(&mut self, message: String) {
        if self.seen.insert(message.clone()) {
            self.warnings.push(message);
        }
    }

    fn failure(&mut self, failure: Failure) {
        match failure {
            Failure::Vanished => self.stats.processes_vanished += 1,
            Failure::Denied => self.stats.processes_denied += 1,
            Failure::Error(e) => self.error("proc", e.to_string()),
        }
    }
}

fn list_pids(proc_root: &Path) -> Result<Vec<i32>, Error> {
    let proc_error = |source| Error::ProcRoot {
        path: proc_root.to_path_buf(),
        source,
    };
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(proc_root).map_err(proc_error)? {
        // An entry that vanishes during the listing is just a process that exited.
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|p| *p > 0)
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

fn read_cap_last_cap(proc_root: &Path, log: &mut Log) -> u32 {
    let path = proc_root.join("sys/kernel/cap_last_cap");
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(v) if v < 64 => v,
            _ => {
                log.warn(format!(
                    "{}: unexpected value {:?}, assuming {DEFAULT_CAP_LAST_CAP}",
                    path.display(),
                    text.trim()
                ));
                DEFAULT_CAP_LAST_CAP
            }
        },
        Err(e) => {
            log.warn(format!(
                "{}: {e}, assuming {DEFAULT_CAP_LAST_CAP}",
                path.display()
            ));
            DEFAULT_CAP_LAST_CAP
        }
    }
}

/// What is known about one container while processes are read.
struct ContainerSeed {
    reference: ContainerRef,
    /// Index into the process list of the first (lowest-pid) process.
    first: usize,
    pids: Vec<i32>,
    root: Option<ContainerRoot>,
}

pub(crate) fn collect(opts: &CollectOptions) -> Result<Snapshot, Error> {
    let proc_fd: OwnedFd = nix::fcntl::open(
        &opts.proc_root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::ProcRoot {
        path: opts.proc_root.clone(),
        source: e.into(),
    })?;
    let pids = list_pids(&opts.proc_root)?;
    let mut log = Log::default();
    let cap_last_cap = read_cap_last_cap(&opts.proc_root, &mut log);

    let host_namespaces = match PidDir::open(&proc_fd, 1).and_then(|d| d.namespaces()) {
        Ok(ns) => ns,
        Err(f) => {
            let why = match f {
                Failure::Vanished => "no pid 1".to_string(),
                Failure::Denied => "permission denied".to_string(),
                Failure::Error(e) => e.to_string(),
            };
            log.warn(format!(
                "host namespaces (pid 1 under {}) unreadable: {why}; shared_with_host left empty",
                opts.proc_root.display()
            ));
            Namespaces::default()
        }
    };

    let mut raws: Vec<RawProcess> = Vec::with_capacity(pids.len());
    let mut seeds: BTreeMap<String, ContainerSeed> = BTreeMap::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    for pid in pids {
        let dir = match PidDir::open(&proc_fd, pid) {
            Ok(d) => d,
            Err(f) => {
                log.failure(f);
                continue;
            }
        };
        let mut raw = match read_process(&dir, &mut buf) {
            Ok(r) => r,
            Err(f) => {
                log.failure(f);
                continue;
            }
        };
        for (kind, note) in raw.notes.drain(..) {
            log.error(kind, note);
        }
        raw.process.namespaces.shared_with_host =
            shared_with_host(&raw.process.namespaces, &host_namespaces);
        if let Some(reference) = &raw.container {
            let seed = seeds
                .entry(reference.cgroup.id.clone())
                .or_insert_with(|| ContainerSeed {
                    reference: reference.clone(),
                    first: raws.len(),
                    pids: Vec::new(),
                    root: None,
                });
            seed.pids.push(pid);
            // The root filesystem, from the first process whose mountinfo can be read.
            if seed.root.is_none() {
                match dir.read("mountinfo", &mut buf, MOUNTINFO_MAX) {
                    Ok(()) => match container_root(&buf) {
                        Some(root) => seed.root = Some(root),
                        None => log.error(
                            "mountinfo",
                            format!("pid {pid}: no mount at / in mountinfo"),
                        ),
                    },
                    Err(Failure::Error(e)) => log.error("mountinfo", e.to_string()),
                    Err(_) => {}
                }
            }
        }
        raws.push(raw);
    }

    let containers = build_containers(opts, &seeds, &raws, &mut log);
    let processes = attach_layers(opts, &seeds, raws, &mut log);

    let mut stats = log.stats;
    stats.processes_seen = processes.len() as u64;
    stats.kernel_threads = processes.iter().filter(|p| p.process.kernel_thread).count() as u64;
    stats.containers_seen = containers.len() as u64;
    Ok(Snapshot {
        processes,
        containers,
        stats,
        warnings: log.warnings,
        cap_last_cap,
        host_namespaces,
    })
}

fn build_containers(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    log: &mut Log,
) -> Vec<Container> {
    let mut reader = LimitsReader::new(&opts.cgroup_root);
    let layout_known = *reader.layout() != CgroupLayout::Unknown;
    if !layout_known && !seeds.is_empty() {
        log.error(
            "cgroup",
            format!(
                "cgroup root {} is neither cgroup v2 nor v1: limits not read",
                opts.cgroup_root.display()
            ),
        );
    }
    let mut containers = Vec::with_capacity(seeds.len());
    for (id, seed) in seeds {
        let first = &raws[seed.first];
        let reference = &seed.reference;
        let mut container = Container {
            id: id.clone(),
            runtime: reference.cgroup.runtime,
            pod_uid: reference.cgroup.pod_uid.clone(),
            qos: reference.cgroup.qos,
            cgroup: reference.cgroup.container_path.clone(),
            cgroup_driver: reference.cgroup.driver,
            cgroup_version: reference.version,
            limits: Default::default(),
            pod_limits: None,
            effective_limits: Default::default(),
            pids: seed.pids.clone(),
            rootfs: seed.root.as_ref().map(ContainerRoot::to_rootfs),
            pod: None,
        };
        if layout_known {
            if let Some(file) = &first.cgroup {
                let pid = first.process.pid;
                let (own_paths, pod_paths) = container_paths(file, reader.layout(), id);
                let mut problems = Vec::new();
                let own = reader.own(&own_paths, pid);
                problems.extend(own.problems);
                if container.pod_uid.is_some() {
                    if let Some(pod_paths) = pod_paths {
                        let pod = reader.own(&pod_paths, pid);
                        problems.extend(pod.problems);
                        container.pod_limits = Some(pod.limits);
                    }
                }
                let effective = reader.effective(&own_paths, own.limits);
                problems.extend(effective.problems);
                container.limits = own.limits;
                container.effective_limits = effective.limits;
                let hint = if reference.cgroup.relative_to_namespace {
                    " (cgroup paths were relative to the agent's cgroup namespace; run it in the host cgroup namespace)"
                } else {
                    ""
                };
                for problem in problems {
                    log.error("cgroup", format!("container {id}: {problem}{hint}"));
                }
            }
        }
        containers.push(container);
    }
    containers
}

fn attach_layers(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: Vec<RawProcess>,
    log: &mut Log,
) -> Vec<CollectedProcess> {
    let mut host: Option<Option<HostRoot>> = None;
    let mut cache: HashMap<(String, Vec<u8>, FileIdentity), Located> = HashMap::new();
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        let mut process = raw.process;
        let mut identity = raw.exe_identity;
        let seed = raw.container.as_ref().and_then(|c| seeds.get(&c.cgroup.id));
        if let (Some(seed), Some(exe)) = (seed, raw.exe_path.as_ref()) {
            let layers = seed.root.as_ref().and_then(|r| r.layers.as_ref());
            let mut located = Located {
                layer: Layer::Unknown,
                identity: None,
            };
            if let (Some(layers), Some(running), false) =
                (layers, raw.exe_identity, process.exe_deleted)
            {
                let host = host.get_or_insert_with(|| match HostRoot::open(&opts.host_root) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        log.error(
                            "layer",
                            format!(
                                "host root {} not reachable ({e}): executables' layers are unknown",
                                opts.host_root.display()
                            ),
                        );
                        None
                    }
                });
                if let Some(host) = host {
                    let key = (seed.reference.cgroup.id.clone(), exe.clone(), running);
                    located = match cache.get(&key) {
                        Some(hit) => *hit,
                        None => {
                            let got = match locate(host, layers, exe, &running) {
                                Ok(got) => got,
                                Err(e) => {
                                    log.error(
                                        "layer",
                                        format!("container {}: {e}", seed.reference.cgroup.id),
                                    );
                                    located
                                }
                            };
                            cache.insert(key, got);
                            got
                        }
                    };
                }
            }
            process.exe_layer = Some(located.layer);
            if located.identity.is_some() {
                identity = located.identity;
            }
        }
        out.push(CollectedProcess {
            process,
            exe_identity: identity,
        });
    }
    out
}
