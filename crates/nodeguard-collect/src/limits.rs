//! Cgroup resource limits (memory, CPU quota, pids) for v1, hybrid and pure v2 hosts.
//!
//! v2: `<root>/<path>/{memory.max, cpu.max, pids.max}` (`max` = unlimited).
//! v1: `<root>/memory/<path>/memory.limit_in_bytes` (≥ 2^62 = unlimited),
//! `<root>/cpu/<path>/cpu.cfs_quota_us` (-1 = unlimited) / `cpu.cfs_period_us`,
//! `<root>/pids/<path>/pids.max`, each controller with its own path from `/proc/PID/cgroup`.

use crate::cgroup::{attribute_path, normalize_path, CgroupFile};
use crate::Error;
use nodeguard_model::Limits;
#[cfg(test)]
use nodeguard_model::QosClass;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Limit files kept open from one pass to the next, by path (see [`LimitsReader::with_kept`]).
/// Keyed by the path's bytes: hashing a `Path` walks its components, which showed in a warm
/// pass's profile.
pub type KeptFiles = HashMap<OsString, File>;

/// A limit file holds one short line; reading stops here.
const LIMIT_FILE_MAX: usize = 4096;

/// v1 memory limits at or above this are the kernel's "unlimited" (PAGE_COUNTER_MAX pages,
/// e.g. 9223372036854771712).
pub const V1_MEMORY_UNLIMITED: u64 = 1 << 62;

/// How the cgroup filesystem is laid out under the cgroup root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Pure v2: `cgroup.controllers` at the root.
    V2,
    /// v1 or hybrid: one directory per controller (absent ones `None`).
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
        /// A v2 tree is mounted at `unified/` (hybrid); it carries no limits.
        hybrid: bool,
    },
    /// Neither: limits cannot be read.
    Unknown,
}

/// A cgroup file from offset 0, at most [`LIMIT_FILE_MAX`] bytes, as UTF-8. cgroupfs
/// generates such a file whole on each read from 0, so a short read is its end.
fn read_from_start(file: &File) -> io::Result<String> {
    let mut buf = Vec::with_capacity(LIMIT_FILE_MAX);
    crate::bounded_read::read_into(&mut buf, LIMIT_FILE_MAX, true, |chunk, offset| {
        file.read_at(chunk, offset)
    })?;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Looks at the cgroup root to tell v2 from v1/hybrid.
pub fn detect_layout(root: &Path) -> CgroupLayout {
    if root.join("cgroup.controllers").is_file() {
        return CgroupLayout::V2;
    }
    let dir = |names: &[&str]| {
        names
            .iter()
            .map(|n| root.join(n))
            .find(|p| p.join("cgroup.procs").exists() || p.join("tasks").exists())
    };
    let memory = dir(&["memory"]);
    let cpu = dir(&["cpu", "cpu,cpuacct", "cpuacct,cpu"]);
    let pids = dir(&["pids"]);
    if memory.is_none() && cpu.is_none() && pids.is_none() {
        return CgroupLayout::Unknown;
    }
    CgroupLayout::V1 {
        memory,
        cpu,
        pids,
        hybrid: root.join("unified").join("cgroup.procs").exists(),
    }
}

/// `memory.max` / `pids.max` (v1 `pids.max` too): a number or `max`.
pub fn parse_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        t => t.parse::<u64>().ok().map(Some),
    }
}

/// v1 `memory.limit_in_bytes`: huge values mean unlimited.
pub fn parse_v1_memory(text: &str) -> Option<Option<u64>> {
    let v = text.trim().parse::<u64>().ok()?;
    Some((v < V1_MEMORY_UNLIMITED).then_some(v))
}

/// v2 `cpu.max`: `max 100000` (unlimited) or `50000 100000` (0.5 cores); the period may be
/// left out (default 100000).
pub fn parse_cpu_max(text: &str) -> Option<Option<f64>> {
    let mut words = text.split_whitespace();
    let quota = words.next()?;
    let period = match words.next() {
        Some(p) => p.parse::<u64>().ok()?,
        None => 100_000,
    };
    if words.next().is_some() || period == 0 {
        return None;
    }
    if quota == "max" {
        return Some(None);
    }
    let quota = quota.parse::<u64>().ok()?;
    Some(Some(quota as f64 / period as f64))
}

/// v1 `cpu.cfs_quota_us` (negative = unlimited).
pub fn parse_v1_quota(text: &str) -> Option<Option<u64>> {
    let q = text.trim().parse::<i64>().ok()?;
    Some(u64::try_from(q).ok())
}

/// v1 `cpu.cfs_period_us` (must be positive).
pub fn parse_v1_period(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|p| *p > 0)
}

/// Cgroup paths of one cgroup, per controller (the same path three times on v2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerPaths {
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub pids: Option<String>,
}

impl ControllerPaths {
    fn all(path: &str) -> ControllerPaths {
        ControllerPaths {
            memory: Some(path.to_string()),
            cpu: Some(path.to_string()),
            pids: Some(path.to_string()),
        }
    }
}

/// The cgroup path of container `container_id` and of its pod, from one line of a cgroup
/// file: cut at the container's segment when the line names it (the process may sit in a
/// sub-cgroup), else the line's path as it is.
pub fn split_container_path(path: &str, container_id: &str) -> (String, Option<String>) {
    match attribute_path(path) {
        Some(c) if c.id == container_id => (c.container_path, c.pod_path),
        _ => {
            let segs = normalize_path(path).map(|(s, _)| s).unwrap_or_default();
            (format!("/{}", segs.join("/")), None)
        }
    }
}

/// The container's and its pod's cgroup paths per controller, from the cgroup file of one of
/// its processes. A line that names the container is cut at the container's segment (the
/// process may sit in a sub-cgroup); a line that does not is used as it is.
pub fn container_paths(
    file: &CgroupFile,
    layout: &CgroupLayout,
    container_id: &str,
) -> (ControllerPaths, Option<ControllerPaths>) {
    let split = |path: &str| split_container_path(path, container_id);
    match layout {
        CgroupLayout::V2 | CgroupLayout::Unknown => match file.v2_path().map(split) {
            Some((own, pod)) => (
                ControllerPaths::all(&own),
                pod.as_deref().map(ControllerPaths::all),
            ),
            None => (ControllerPaths::default(), None),
        },
        CgroupLayout::V1 { .. } => {
            let mut own = ControllerPaths::default();
            let mut pod = ControllerPaths::default();
            let mut any_pod = false;
            for (controller, own_slot, pod_slot) in [
                ("memory", &mut own.memory, &mut pod.memory),
                ("cpu", &mut own.cpu, &mut pod.cpu),
                ("pids", &mut own.pids, &mut pod.pids),
            ] {
                if let Some(entry) = file.v1_entry(controller) {
                    let (o, p) = split(&entry.path);
                    *own_slot = Some(o);
                    any_pod |= p.is_some();
                    *pod_slot = p;
                }
            }
            (own, any_pod.then_some(pod))
        }
    }
}

/// What reading the limits of one cgroup gave: the limits, which of them could not be read
/// (unknown, as opposed to unlimited), and why.
#[derive(Debug, Default)]
pub struct LimitsReading {
    pub limits: Limits,
    /// Controllers (`memory`, `cpu`, `pids`) whose limit is unknown: `limits` holds null for
    /// them because nothing could be read, not because there is no limit.
    pub unknown: Vec<&'static str>,
    pub problems: Vec<Error>,
}

impl LimitsReading {
    fn mark_unknown(&mut self, controller: Controller) {
        if !self.unknown.contains(&controller.name()) {
            self.unknown.push(controller.name());
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// Reads cgroup limits under one cgroup root, caching the ancestor levels shared by many
/// containers (QoS and pod cgroups, the root).
#[derive(Debug)]
pub struct LimitsReader {
    root: PathBuf,
    layout: CgroupLayout,
    /// Files read in this pass: contents, or `None` when absent.
    cache: HashMap<OsString, Option<Arc<str>>>,
    /// Files the previous pass kept open, and those this one read (kept for the next).
    kept: KeptFiles,
    read_now: KeptFiles,
    /// The most files [`Self::into_kept`] hands on.
    keep_max: usize,
}

impl LimitsReader {
    pub fn new(cgroup_root: &Path) -> LimitsReader {
        LimitsReader::with_kept(cgroup_root, KeptFiles::new(), 0)
    }

    /// A reader that reads the files in `kept` (what [`Self::into_kept`] gave after the
    /// previous pass) through their open handles: cgroupfs generates a limit file afresh on
    /// every read from offset 0, so one `pread` replaces a path walk, `openat`, `read` and
    /// `close`. A handle whose cgroup was removed fails (ENODEV) and the path is opened again.
    /// At most `keep_max` files are handed on; beyond that they are opened by path each pass.
    pub fn with_kept(cgroup_root: &Path, kept: KeptFiles, keep_max: usize) -> LimitsReader {
        LimitsReader::with_layout(cgroup_root, detect_layout(cgroup_root), kept, keep_max)
    }

    /// [`Self::with_kept`] for a root whose layout is known already ([`detect_layout`]):
    /// readers of one pass share one look at the root.
    pub fn with_layout(
        cgroup_root: &Path,
        layout: CgroupLayout,
        kept: KeptFiles,
        keep_max: usize,
    ) -> LimitsReader {
        LimitsReader {
            root: cgroup_root.to_path_buf(),
            layout,
            cache: HashMap::new(),
            kept,
            read_now: KeptFiles::new(),
            keep_max,
        }
    }

    /// The files this reader read, open, for the next pass's reader.
    pub fn into_kept(self) -> KeptFiles {
        self.read_now
    }

    /// A limit file's text: through the handle kept from the previous pass when it still
    /// reads, else opened by path (and kept, up to `keep_max`).
    fn read_text(&mut self, path: &Path) -> io::Result<String> {
        if let Some((name, file)) = self.kept.remove_entry(path.as_os_str()) {
            if let Ok(text) = read_from_start(&file) {
                self.read_now.insert(name, file);
                return Ok(text);
            }
        }
        let file = File::open(path)?;
        let text = read_from_start(&file)?;
        if self.read_now.len() < self.keep_max {
            self.read_now.insert(path.as_os_str().to_owned(), file);
        }
        Ok(text)
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The directory of cgroup `path` for `controller`; `None` when that hierarchy is absent.
    fn dir(&self, controller: Controller, path: &str) -> Option<PathBuf> {
        let base = match &self.layout {
            CgroupLayout::V2 => self.root.clone(),
            CgroupLayout::V1 {
                memory, cpu, pids, ..
            } => match controller {
                Controller::Memory => memory.clone()?,
                Controller::Cpu => cpu.clone()?,
                Controller::Pids => pids.clone()?,
            },
            CgroupLayout::Unknown => return None,
        };
        let rel = path.trim_start_matches('/');
        Some(if rel.is_empty() { base } else { base.join(rel) })
    }

    /// Reads a file; `Ok(None)` when it is absent and `lenient` (an ancestor level, where a
    /// controller may simply not be enabled, or the root, which has no limit files). A file
    /// is read once per pass: a pod's files serve as its own limits and as its containers'
    /// ancestor level. Only a lenient read takes a remembered absence for an answer.
    fn read(&mut self, path: &Path, lenient: bool) -> Result<Option<Arc<str>>, Error> {
        match self.cache.get(path.as_os_str()) {
            Some(Some(text)) => return Ok(Some(Arc::clone(text))),
            Some(None) if lenient => return Ok(None),
            _ => {}
        }
        match self.read_text(path) {
            Ok(text) => {
                let text: Arc<str> = text.into();
                self.cache
                    .insert(path.as_os_str().to_owned(), Some(Arc::clone(&text)));
                Ok(Some(text))
            }
            Err(e) if lenient && e.kind() == io::ErrorKind::NotFound => {
                self.cache.insert(path.as_os_str().to_owned(), None);
                Ok(None)
            }
            Err(source) => Err(Error::CgroupRead {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn value<T>(
        &mut self,
        path: PathBuf,
        lenient: bool,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        let Some(text) = self.read(&path, lenient)? else {
            return Ok(None);
        };
        match parse(&text) {
            Some(v) => Ok(Some(v)),
            None => Err(Error::CgroupValue {
                path,
                value: text.chars().take(64).collect(),
            }),
        }
    }

    /// One controller's limit at one cgroup level (`None` inside = unlimited or absent).
    fn level(
        &mut self,
        controller: Controller,
        path: &str,
        lenient: bool,
    ) -> Result<Limits, Error> {
        let mut limits = Limits::default();
        let Some(dir) = self.dir(controller, path) else {
            return Ok(limits);
        };
        let v2 = self.layout == CgroupLayout::V2;
        match (controller, v2) {
            (Controller::Memory, true) => {
                limits.memory_bytes = self
                    .value(dir.join("memory.max"), lenient, parse_max)?
                    .flatten();
            }
            (Controller::Memory, false) => {
                limits.memory_bytes = self
                    .value(dir.join("memory.limit_in_bytes"), lenient, parse_v1_memory)?
                    .flatten();
            }
            (Controller::Cpu, true) => {
                limits.cpu_cores = self
                    .value(dir.join("cpu.max"), lenient, parse_cpu_max)?
                    .flatten();
            }
            (Controller::Cpu, false) => {
                let quota = self
                    .value(dir.join("cpu.cfs_quota_us"), lenient, parse_v1_quota)?
                    .flatten();
                if let Some(quota) = quota {
                    let period =
                        self.value(dir.join("cpu.cfs_period_us"), lenient, parse_v1_period)?;
                    limits.cpu_cores = period.map(|p| quota as f64 / p as f64);
                }
            }
            (Controller::Pids, _) => {
                limits.pids = self
                    .value(dir.join("pids.max"), lenient, parse_max)?
                    .flatten();
            }
        }
        Ok(limits)
    }

    /// The limits of one cgroup itself. A missing or malformed file leaves that limit `None`,
    /// marks it unknown and is listed in `problems`; an absent hierarchy (no `pids`
    /// controller on this host) marks it unknown without a problem (the caller says so once
    /// per host). `pid` names the process the paths came from.
    pub fn own(&mut self, paths: &ControllerPaths, pid: i32) -> LimitsReading {
        let mut reading = LimitsReading::default();
        for (controller, path) in Self::controllers(paths) {
            if self.dir(controller, "/").is_none() {
                reading.mark_unknown(controller);
                continue;
            }
            let Some(path) = path else {
                reading.problems.push(Error::CgroupMissing {
                    pid,
                    controller: controller.name(),
                });
                reading.mark_unknown(controller);
                continue;
            };
            match self.level(controller, path, false) {
                Ok(l) => reading.limits = reading.limits.tightest(l),
                Err(e) => {
                    reading.problems.push(e);
                    reading.mark_unknown(controller);
                }
            }
        }
        reading
    }

    /// The tightest limits from a cgroup up through its ancestors: `own` (as read by
    /// [`Self::own`]) combined with each ancestor level. With a `floor` (a pod container's
    /// pod cgroup) only the ancestors down to and including the floor count: the levels
    /// above a pod are the kubelet's node allocatable and QoS cgroups, which bound all pods
    /// together and are not this container's limits. Absent ancestor files are not
    /// problems. A limit stays unknown when some level could not be read and no level that
    /// could be read sets one.
    pub fn effective(
        &mut self,
        paths: &ControllerPaths,
        own: &LimitsReading,
        floor: Option<&ControllerPaths>,
    ) -> LimitsReading {
        let mut reading = LimitsReading {
            limits: own.limits,
            unknown: own.unknown.clone(),
            problems: Vec::new(),
        };
        let floors = floor.map(Self::controllers);
        for (i, (controller, path)) in Self::controllers(paths).into_iter().enumerate() {
            let Some(path) = path else { continue };
            let floor_path = floors.as_ref().map(|f| f[i].1);
            for ancestor in ancestors(path) {
                match &floor_path {
                    // No floor for this controller: the container's own level only.
                    Some(None) => break,
                    Some(Some(floor)) if !within(&ancestor, floor) => break,
                    _ => {}
                }
                match self.level(controller, &ancestor, true) {
                    Ok(l) => reading.limits = reading.limits.tightest(l),
                    Err(e) => {
                        reading.problems.push(e);
                        reading.mark_unknown(controller);
                    }
                }
            }
        }
        // A limit read somewhere binds whatever the unreadable levels say.
        let limits = reading.limits;
        reading.unknown.retain(|name| match *name {
            "memory" => limits.memory_bytes.is_none(),
            "cpu" => limits.cpu_cores.is_none(),
            _ => limits.pids.is_none(),
        });
        reading
    }

    /// The tightest limits of the kubelet's node-level cgroups above a pod cgroup: from the
    /// pod's parent (the QoS class level, or `kubepods` itself for a Guaranteed pod) up to
    /// and including `kubepods` (`kubepods.slice`, `<root>-kubepods.slice`), where kubelet
    /// writes node allocatable. Levels above `kubepods` (a `--cgroup-root` prefix, the root)
    /// are not read. `None` when the pod path shows no kubepods level.
    pub fn node_allocatable(&mut self, pod: &ControllerPaths) -> Option<Limits> {
        let mut limits = Limits::default();
        let mut any = false;
        for (controller, path) in Self::controllers(pod) {
            let Some(path) = path else { continue };
            let Some(depth) = kubepods_depth(path) else {
                continue;
            };
            any = true;
            for ancestor in ancestors(path) {
                if ancestor.split('/').filter(|s| !s.is_empty()).count() < depth + 1 {
                    break;
                }
                // Unreadable node levels say nothing about the container: skipped.
                if let Ok(l) = self.level(controller, &ancestor, true) {
                    limits = limits.tightest(l);
                }
            }
        }
        any.then_some(limits)
    }

    fn controllers(paths: &ControllerPaths) -> [(Controller, Option<&str>); 3] {
        [
            (Controller::Memory, paths.memory.as_deref()),
            (Controller::Cpu, paths.cpu.as_deref()),
            (Controller::Pids, paths.pids.as_deref()),
        ]
    }
}

/// `ancestor` is `floor` or below it.
fn within(ancestor: &str, floor: &str) -> bool {
    let floor = floor.trim_end_matches('/');
    ancestor == floor
        || ancestor
            .strip_prefix(floor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a cgroup path segment is the kubelet's node-level `kubepods` cgroup: `kubepods`
/// (cgroupfs driver, also below a `--cgroup-root` prefix), `kubepods.slice` (systemd
/// driver) or `<prefix>-kubepods.slice` (systemd driver with a `--cgroup-root` prefix).
pub fn is_kubepods_segment(seg: &str) -> bool {
    seg == "kubepods"
        || seg
            .strip_suffix(".slice")
            .is_some_and(|name| name == "kubepods" || name.ends_with("-kubepods"))
}

/// The number of segments above the first kubepods segment of a path (its index).
fn kubepods_depth(path: &str) -> Option<usize> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .position(is_kubepods_segment)
}

/// `/a/b/c` → `/a/b`, `/a`, `/` (the path itself left out).
fn ancestors(path: &str) -> Vec<String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (0..segs.len())
        .rev()
        .map(|n| format!("/{}", segs[..n].join("/")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::parse_cgroup_file;
    use std::os::unix::fs::MetadataExt;

    fn testdata(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(case)
            .join("sys/fs/cgroup")
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-5678-90ef-1234-567890abcdef";

    /// Against the real cgroup filesystem (the kernel is the ground truth): a limit changed
    /// in place (as kubelet resizes a pod) is read through the handle the last pass kept, and
    /// a cgroup removed and made again is read afresh, not through the dead handle.
    #[test]
    fn kept_limit_files_read_what_the_kernel_says_now() {
        let root = Path::new("/sys/fs/cgroup");
        let why = if !nix::unistd::geteuid().is_root() {
            Some("needs root to make a cgroup")
        } else {
            None
        };
        let layout = detect_layout(root);
        let (dir, file) = match &layout {
            CgroupLayout::V1 {
                memory: Some(memory),
                ..
            } => (memory.clone(), "memory.limit_in_bytes"),
            CgroupLayout::V2 => (root.to_path_buf(), "memory.max"),
            _ => (PathBuf::new(), ""),
        };
        let name = format!("nodeguard-kept-{}", std::process::id());
        let cgroup = dir.join(&name);
        let why = why.or_else(|| {
            (file.is_empty() || std::fs::create_dir(&cgroup).is_err())
                .then_some("no memory controller to make a cgroup in")
        });
        if let Some(why) = why {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set, so this test may not skip: {why}"
            );
            eprintln!("SKIPPED: {why}");
            return;
        }
        let limit_file = cgroup.join(file);
        if !limit_file.exists() {
            let _ = std::fs::remove_dir(&cgroup);
            panic!("{} not made by the kernel", limit_file.display());
        }
        let paths = ControllerPaths {
            memory: Some(format!("/{name}")),
            cpu: None,
            pids: None,
        };
        let pass = |kept: KeptFiles, bytes: u64| -> (Option<u64>, u64, KeptFiles) {
            std::fs::write(&limit_file, bytes.to_string()).expect("write the limit");
            let kernel: u64 = std::fs::read_to_string(&limit_file)
                .expect("read the limit back")
                .trim()
                .parse()
                .expect("a number");
            let mut reader = LimitsReader::with_kept(root, kept, 16);
            let memory = reader.own(&paths, 1).limits.memory_bytes;
            (memory, kernel, reader.into_kept())
        };
        let (first, kernel, kept) = pass(KeptFiles::new(), 64 << 20);
        assert_eq!(first, Some(kernel));
        assert!(kept.contains_key(limit_file.as_os_str()), "{kept:?}");
        let held = kept[limit_file.as_os_str()]
            .metadata()
            .map(|m| m.ino())
            .ok();
        let (resized, kernel, kept) = pass(kept, 32 << 20);
        assert_eq!((resized, kernel), (Some(32 << 20), 32 << 20));
        assert_eq!(
            kept[limit_file.as_os_str()]
                .metadata()
                .map(|m| m.ino())
                .ok(),
            held
        );
        std::fs::remove_dir(&cgroup).expect("remove the cgroup");
        std::fs::create_dir(&cgroup).expect("make the cgroup again");
        let (again, kernel, kept) = pass(kept, 16 << 20);
        let _ = std::fs::remove_dir(&cgroup);
        assert_eq!((again, kernel), (Some(16 << 20), 16 << 20));
        assert_eq!(kept.len(), 1, "{kept:?}");
        let mut unkept = LimitsReader::with_kept(root, KeptFiles::new(), 0);
        let _ = unkept.own(&paths, 1);
        assert!(unkept.into_kept().is_empty());
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_max("max\n"), Some(None));
        assert_eq!(parse_max(" 4096 \n"), Some(Some(4096)));
        assert_eq!(parse_max("lots"), None);
        assert_eq!(parse_max(""), None);
        assert_eq!(parse_max("-1"), None);
        assert_eq!(parse_v1_memory("9223372036854771712\n"), Some(None));
        assert_eq!(parse_v1_memory("134217728\n"), Some(Some(134_217_728)));
        assert_eq!(parse_v1_memory("12abc"), None);
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(Some(0.5)));
        assert_eq!(parse_cpu_max("200000"), Some(Some(2.0)));
        assert_eq!(parse_cpu_max("50000 0"), None);
        assert_eq!(parse_cpu_max("50000 100000 7"), None);
        assert_eq!(parse_cpu_max("half"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_v1_quota("-1\n"), Some(None));
        assert_eq!(parse_v1_quota("25000\n"), Some(Some(25000)));
        assert_eq!(parse_v1_period("0"), None);
        assert_eq!(ancestors("/a/b/c"), ["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/"), Vec::<String>::new());
    }

    #[test]
    fn v2_container_pod_and_effective_limits() {
        let root = testdata("v2");
        let mut reader = LimitsReader::new(&root);
        assert_eq!(reader.layout(), &CgroupLayout::V2);
        let file = parse_cgroup_file(&format!("0::/kubepods/burstable/pod{UID}/{ID}\n"));
        let (own_paths, pod_paths) = container_paths(&file, reader.layout(), ID);
        let own = reader.own(&own_paths, 42);
        assert!(own.problems.is_empty(), "{:?}", own.problems);
        // Container: 256 MiB, 0.5 cores, pids unlimited.
        assert_eq!(
            own.limits,
            Limits {
                memory_bytes: Some(268_435_456),
                cpu_cores: Some(0.5),
                pids: None
            }
        );
        let pod = reader.own(&pod_paths.unwrap(), 42);
        assert!(pod.problems.is_empty(), "{:?}", pod.problems);
        // Pod: 128 MiB, 2 cores, 100 pids.
        assert_eq!(
            pod.limits,
            Limits {
                memory_bytes: Some(134_217_728),
                cpu_cores: Some(2.0),
                pids: Some(100)
            }
        );
        let eff = reader.effective(&own_paths, &own, None);
        assert!(eff.problems.is_empty(), "{:?}", eff.problems);
        // The pod's memory and pids bind; the container's CPU; the root has no files.
        assert_eq!(
            eff.limits,
            Limits {
                memory_bytes: Some(134_217_728),
                cpu_cores: Some(0.5),
                pids: Some(100)
            }
        );
    }

    #[test]
    fn v2_garbage_and_missing_files_are_problems_not_failures() {
        let root = testdata("v2");
        let mut reader = LimitsReader::new(&root);
        let other = "f".repeat(64);
        // This container dir has garbage memory.max, no cpu.max, pids.max "max".
        let file = parse_cgroup_file(&format!("0::/kubepods/burstable/pod{UID}/{other}\n"));
        let (own_paths, _) = container_paths(&file, reader.layout(), &other);
        let own = reader.own(&own_paths, 7);
        assert_eq!(own.limits, Limits::default());
        assert_eq!(own.problems.len(), 2, "{:?}", own.problems);
        let text: Vec<String> = own.problems.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("memory.max") && t.contains("unexpected value")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("cpu.max")), "{text:?}");
        // A container whose cgroup directory is gone.
        let gone = parse_cgroup_file(&format!(
            "0::/kubepods/burstable/pod{UID}/{}\n",
            "e".repeat(64)
        ));
        let (paths, _) = container_paths(&gone, reader.layout(), &"e".repeat(64));
        assert_eq!(reader.own(&paths, 8).problems.len(), 3);
    }

    #[test]
    fn v1_limits_use_each_controllers_own_path() {
        let root = testdata("v1");
        let mut reader = LimitsReader::new(&root);
        assert!(
            matches!(reader.layout(), CgroupLayout::V1 { hybrid: true, .. }),
            "{:?}",
            reader.layout()
        );
        // Every controller line names the container (v2 is at the root: hybrid host).
        let file = parse_cgroup_file(&format!(
            "10:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             9:memory:/kubepods/burstable/pod{UID}/{ID}\n\
             4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n\
             0::/\n"
        ));
        let (own_paths, pod_paths) = container_paths(&file, reader.layout(), ID);
        let own = reader.own(&own_paths, 1);
        assert!(own.problems.is_empty(), "{:?}", own.problems);
        assert_eq!(
            own.limits,
            Limits {
                memory_bytes: Some(67_108_864),
                cpu_cores: Some(0.25),
                pids: Some(50)
            }
        );
        let pod = reader.own(&pod_paths.unwrap(), 1);
        assert!(pod.problems.is_empty(), "{:?}", pod.problems);
        // Pod: memory unlimited sentinel, quota -1, pids max.
        assert_eq!(pod.limits, Limits::default());
        let eff = reader.effective(&own_paths, &own, None);
        assert!(eff.problems.is_empty(), "{:?}", eff.problems);
        // Without a floor every level counts: the burstable QoS level caps CPU at 0.2 cores
        // in this fixture.
        assert_eq!(
            eff.limits,
            Limits {
                memory_bytes: Some(67_108_864),
                cpu_cores: Some(0.2),
                pids: Some(50)
            }
        );
    }

    #[test]
    fn unknown_layout_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = LimitsReader::new(dir.path());
        assert_eq!(reader.layout(), &CgroupLayout::Unknown);
        let file = parse_cgroup_file(&format!("0::/docker/{ID}\n"));
        let (paths, _) = container_paths(&file, reader.layout(), ID);
        let own = reader.own(&paths, 1);
        assert_eq!(own.limits, Limits::default());
        assert!(own.problems.is_empty());
        // Nothing read is unknown, not unlimited.
        assert_eq!(own.unknown, ["memory", "cpu", "pids"]);
        assert_eq!(reader.effective(&paths, &own, None).unknown.len(), 3);
    }

    /// Trees written by `testdata/kubelet-layouts.py`, as kubelet lays them out: node
    /// allocatable on `kubepods` (23.5 GiB, 4096 pids), 20 GiB on the BestEffort QoS level,
    /// a BestEffort pod with no limits (and a sandbox beside its container), a Guaranteed pod
    /// directly under `kubepods` with 128 MiB and 0.5 cores, and a container whose
    /// memory.max is missing and pids.max garbage.
    const KUBELET_LAYOUTS: [(&str, &str); 8] = [
        ("kubelet-v2-cgroupfs", "/kubepods"),
        ("kubelet-v2-cgroupfs-prefix", "/ng-prefix/kubepods"),
        ("kubelet-v2-systemd", "/kubepods.slice"),
        (
            "kubelet-v2-systemd-prefix",
            "/ngprefix.slice/ngprefix-kubepods.slice",
        ),
        ("kubelet-v1-cgroupfs", "/kubepods"),
        ("kubelet-v1-cgroupfs-prefix", "/ng-prefix/kubepods"),
        ("kubelet-v1-systemd", "/kubepods.slice"),
        (
            "kubelet-v1-systemd-prefix",
            "/ngprefix.slice/ngprefix-kubepods.slice",
        ),
    ];
    const UID_BE: &str = "aaaa1111-2222-3333-4444-555566667777";
    const UID_G: &str = "bbbb1111-2222-3333-4444-555566667777";
    const ALLOCATABLE: u64 = 25_232_932_864;
    const GIB: u64 = 1 << 30;

    /// The cgroup path of a container in one of the kubelet layouts.
    fn kubelet_path(case: &str, kubepods: &str, guaranteed: bool, id: &str) -> String {
        let systemd = case.contains("systemd");
        let uid = if guaranteed { UID_G } else { UID_BE };
        if !systemd {
            return if guaranteed {
                format!("{kubepods}/pod{uid}/{id}")
            } else {
                format!("{kubepods}/besteffort/pod{uid}/{id}")
            };
        }
        let p = if case.ends_with("prefix") {
            "ngprefix-"
        } else {
            ""
        };
        let uid = uid.replace('-', "_");
        if guaranteed {
            format!("{kubepods}/{p}kubepods-pod{uid}.slice/cri-containerd-{id}.scope")
        } else {
            format!(
                "{kubepods}/{p}kubepods-besteffort.slice/{p}kubepods-besteffort-pod{uid}.slice/cri-containerd-{id}.scope"
            )
        }
    }

    fn cgroup_text(case: &str, path: &str) -> String {
        if case.contains("v1") {
            format!("10:pids:{path}\n9:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::/\n")
        } else {
            format!("0::{path}\n")
        }
    }

    struct Read {
        attributed: crate::cgroup::ContainerCgroup,
        own: LimitsReading,
        effective: LimitsReading,
        node: Option<Limits>,
    }

    /// Reads one container the way `collect` does: the pod cgroup is the floor.
    fn read_kubelet(reader: &mut LimitsReader, case: &str, path: &str, id: &str) -> Read {
        let file = parse_cgroup_file(&cgroup_text(case, path));
        let attributed = crate::cgroup::attribute(&file)
            .unwrap_or_else(|| panic!("{case}: {path} not attributed"))
            .cgroup;
        assert_eq!(attributed.id, id, "{case}");
        let (own_paths, pod_paths) = container_paths(&file, reader.layout(), id);
        let pod_paths = pod_paths.unwrap_or_else(|| panic!("{case}: no pod path for {path}"));
        let own = reader.own(&own_paths, 1);
        let effective = reader.effective(&own_paths, &own, Some(&pod_paths));
        let node = reader.node_allocatable(&pod_paths);
        Read {
            attributed,
            own,
            effective,
            node,
        }
    }

    #[test]
    fn node_allocatable_and_qos_levels_are_not_container_limits() {
        for (case, kubepods) in KUBELET_LAYOUTS {
            let mut reader = LimitsReader::new(&testdata(case));
            let v1 = case.contains("v1");
            assert_eq!(
                matches!(reader.layout(), CgroupLayout::V1 { .. }),
                v1,
                "{case}: {:?}",
                reader.layout()
            );

            // BestEffort, no limits in its spec: nothing binds it but the node.
            let be_id = "be".repeat(32);
            let path = kubelet_path(case, kubepods, false, &be_id);
            let be = read_kubelet(&mut reader, case, &path, &be_id);
            assert_eq!(be.attributed.pod_uid.as_deref(), Some(UID_BE), "{case}");
            assert_eq!(be.attributed.qos, Some(QosClass::Besteffort), "{case}");
            assert!(be.own.problems.is_empty(), "{case}: {:?}", be.own.problems);
            assert!(be.effective.problems.is_empty(), "{case}");
            assert_eq!(be.effective.limits, Limits::default(), "{case}: {path}");
            assert!(be.effective.unknown.is_empty(), "{case}");
            assert_eq!(
                be.node,
                Some(Limits {
                    memory_bytes: Some(20 * GIB),
                    cpu_cores: None,
                    pids: Some(4096)
                }),
                "{case}"
            );

            // Guaranteed, directly under kubepods: its own and its pod's limits bind.
            let g_id = "9a".repeat(32);
            let path = kubelet_path(case, kubepods, true, &g_id);
            let g = read_kubelet(&mut reader, case, &path, &g_id);
            assert_eq!(g.attributed.pod_uid.as_deref(), Some(UID_G), "{case}");
            assert_eq!(g.attributed.qos, Some(QosClass::Guaranteed), "{case}");
            assert_eq!(
                g.effective.limits,
                Limits {
                    memory_bytes: Some(128 << 20),
                    cpu_cores: Some(0.5),
                    pids: None
                },
                "{case}"
            );
            // Its QoS level is kubepods itself.
            assert_eq!(
                g.node,
                Some(Limits {
                    memory_bytes: Some(ALLOCATABLE),
                    cpu_cores: None,
                    pids: Some(4096)
                }),
                "{case}"
            );

            // Unreadable memory.max (missing) and pids.max (garbage): unknown, not unlimited.
            let u_id = "0d".repeat(32);
            let path = kubelet_path(case, kubepods, false, &u_id);
            let u = read_kubelet(&mut reader, case, &path, &u_id);
            assert_eq!(u.effective.unknown, ["memory", "pids"], "{case}");
            assert_eq!(u.own.problems.len(), 2, "{case}: {:?}", u.own.problems);
            assert_eq!(u.effective.limits, Limits::default(), "{case}");
        }
    }

    #[test]
    fn kubepods_segments() {
        for seg in ["kubepods", "kubepods.slice", "ng-kubepods.slice"] {
            assert!(is_kubepods_segment(seg), "{seg}");
        }
        for seg in [
            "kubepods-burstable.slice",
            "burstable",
            "mykubepods",
            "kubepods.scope",
        ] {
            assert!(!is_kubepods_segment(seg), "{seg}");
        }
        assert!(within("/a/b", "/a/b"));
        assert!(within("/a/b/c", "/a/b"));
        assert!(!within("/a/bc", "/a/b"));
        assert!(!within("/a", "/a/b"));
    }
}
