//! Container attribution from `/proc/PID/cgroup`.
//!
//! The cgroup path names the container: `cri-containerd-<id>.scope`, `crio-<id>.scope`,
//! `docker-<id>.scope`, `libpod-<id>.scope` (systemd driver), or `<id>` / `crio-<id>` under
//! `/kubepods/<qos>/pod<uid>/` and `/docker/<id>` (cgroupfs driver). Everything here is pure
//! text processing, so every runtime × driver × cgroup version is testable from strings.

use nodeguard_model::{CgroupDriver, CgroupVersion, QosClass, Runtime};

/// Lines longer than this are not something the kernel writes: skipped as garbage.
const MAX_LINE: usize = 16 * 1024;

/// One line of `/proc/PID/cgroup`: `hierarchy:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// Hierarchy id; 0 is the cgroup v2 (unified) hierarchy.
    pub hierarchy: u32,
    /// Controllers of a v1 hierarchy (`["cpu", "cpuacct"]`, `["name=systemd"]`); empty for v2.
    pub controllers: Vec<String>,
    /// The cgroup path as the file shows it (may start with `/..` inside a cgroup namespace).
    pub path: String,
}

impl CgroupEntry {
    /// The cgroup v2 line (`0::/path`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }

    pub fn has_controller(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == name)
    }
}

/// A parsed `/proc/PID/cgroup` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFile {
    pub entries: Vec<CgroupEntry>,
    /// Lines that were not `N:controllers:/path` and were skipped.
    pub skipped_lines: usize,
}

impl CgroupFile {
    /// The v2 line's path, if the process is in the unified hierarchy.
    pub fn v2_path(&self) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.is_v2())
            .map(|e| e.path.as_str())
    }

    /// The v1 line carrying `controller` (`memory`, `cpu`, `pids`).
    pub fn v1_entry(&self, controller: &str) -> Option<&CgroupEntry> {
        self.entries
            .iter()
            .find(|e| !e.is_v2() && e.has_controller(controller))
    }
}

/// A cheap test before [`parse_cgroup_file`]: a container id is 64 characters, so a file
/// without a line that long names no container (most host processes).
pub fn may_name_container(text: &str) -> bool {
    text.lines().any(|l| l.len() >= 64)
}

/// Counts the lines [`parse_cgroup_file`] would skip, without building anything.
pub fn count_malformed_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !line_is_wellformed(l))
        .count()
}

fn line_is_wellformed(line: &str) -> bool {
    let mut parts = line.splitn(3, ':');
    let (Some(h), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    line.len() <= MAX_LINE
        && h.parse::<u32>()
            .is_ok_and(|h| h != 0 || controllers.is_empty())
        && path.starts_with('/')
        && !path.chars().any(char::is_control)
}

/// Parses the text of `/proc/PID/cgroup`. Never fails: lines that are empty, lack the two
/// colons, carry a non-numeric hierarchy, a path not starting with `/`, or are absurdly long
/// are skipped and counted.
pub fn parse_cgroup_file(text: &str) -> CgroupFile {
    let mut file = CgroupFile::default();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(entry) => file.entries.push(entry),
            None => file.skipped_lines += 1,
        }
    }
    file
}

fn parse_line(line: &str) -> Option<CgroupEntry> {
    if !line_is_wellformed(line) {
        return None;
    }
    let mut parts = line.splitn(3, ':');
    let hierarchy = parts.next()?.parse::<u32>().ok()?;
    let controllers = parts.next()?;
    let path = parts.next()?;
    Some(CgroupEntry {
        hierarchy,
        controllers: controllers
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect(),
        path: path.to_string(),
    })
}

/// What a single cgroup path says about the container a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The 64-hex container id.
    pub id: String,
    pub runtime: Runtime,
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    pub driver: CgroupDriver,
    /// The container's cgroup: the path up to and including the segment that names the
    /// container (a process may sit in a sub-cgroup below it), with leading `..` removed.
    pub container_path: String,
    /// The pod's cgroup (up to and including the `pod<uid>` segment), for pod containers.
    pub pod_path: Option<String>,
    /// The path started with `/..`: it was seen from inside a cgroup namespace and is relative
    /// to an ancestor of the reader's namespace root, not to the cgroup root.
    pub relative_to_namespace: bool,
}

/// A container attribution of a whole cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub cgroup: ContainerCgroup,
    /// V2 when the attributing line was the `0::` line.
    pub version: CgroupVersion,
}

/// Attributes a process to a container from its parsed cgroup file: the v2 line when it names
/// a container, else the v1 memory controller's line, else any v1 line that does.
/// `None` means a host process (this includes the runtimes' `conmon` monitors).
pub fn attribute(file: &CgroupFile) -> Option<ContainerRef> {
    let v2 = file
        .entries
        .iter()
        .filter(|e| e.is_v2())
        .find_map(|e| attribute_path(&e.path));
    if let Some(cgroup) = v2 {
        return Some(ContainerRef {
            cgroup,
            version: CgroupVersion::V2,
        });
    }
    let memory = file
        .v1_entry("memory")
        .and_then(|e| attribute_path(&e.path));
    let any = || {
        file.entries
            .iter()
            .filter(|e| !e.is_v2())
            .find_map(|e| attribute_path(&e.path))
    };
    memory.or_else(any).map(|cgroup| ContainerRef {
        cgroup,
        version: CgroupVersion::V1,
    })
}

/// Convenience: [`parse_cgroup_file`] then [`attribute`].
pub fn attribute_text(text: &str) -> Option<ContainerRef> {
    attribute(&parse_cgroup_file(text))
}

/// Splits a cgroup path into segments, dropping leading `..` segments (a path seen from inside
/// a cgroup namespace) and a trailing ` (deleted)` (a removed v2 cgroup). Returns the segments and whether any `..` was dropped; `None` for a
/// `..` or `.` in the middle, which the kernel never writes.
pub fn normalize_path(path: &str) -> Option<(Vec<&str>, bool)> {
    // The kernel marks a v2 cgroup that was removed while a process still sits in it.
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let mut segments = Vec::new();
    let mut dropped = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        match seg {
            ".." if segments.is_empty() => dropped = true,
            ".." | "." => return None,
            s => segments.push(s),
        }
    }
    Some((segments, dropped))
}

/// Attributes one cgroup path. The innermost segment naming a container wins (a pod
/// container inside a kind node container belongs to the pod container).
pub fn attribute_path(path: &str) -> Option<ContainerCgroup> {
    if path.len() < 64 {
        return None;
    }
    let (segments, dropped) = normalize_path(path)?;
    let mut found: Option<(usize, String, Runtime)> = None;
    for (i, seg) in segments.iter().enumerate() {
        let parent = if i == 0 { None } else { Some(segments[i - 1]) };
        let first_after_dotdot = dropped && i == 0;
        if let Some(SegmentKind::Container { id, runtime }) =
            classify_segment(seg, parent, first_after_dotdot)
        {
            found = Some((i, id, runtime));
        }
    }
    let (index, id, runtime) = found?;
    let within = &segments[..=index];

    // The nearest pod segment above the container.
    let mut pod: Option<(usize, PodSegment)> = None;
    for (i, seg) in within[..index].iter().enumerate().rev() {
        let parent = if i == 0 { None } else { Some(within[i - 1]) };
        if let Some(p) = pod_segment(seg, parent) {
            pod = Some((i, p));
            break;
        }
    }
    let systemd = within
        .iter()
        .any(|s| s.ends_with(".slice") || s.ends_with(".scope"));
    let join = |segs: &[&str]| format!("/{}", segs.join("/"));
    Some(ContainerCgroup {
        id,
        runtime,
        pod_uid: pod.as_ref().map(|(_, p)| p.uid.clone()),
        qos: pod.as_ref().and_then(|(_, p)| p.qos),
        driver: if systemd {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        },
        container_path: join(within),
        pod_path: pod.as_ref().map(|(i, _)| join(&within[..=*i])),
        relative_to_namespace: dropped,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum SegmentKind {
    Container {
        id: String,
        runtime: Runtime,
    },
    /// `crio-conmon-<id>` / `libpod-conmon-<id>`: the runtime's host-side monitor.
    Monitor,
}

/// A 64-character lowercase hex container id.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn classify_segment(
    seg: &str,
    parent: Option<&str>,
    first_after_dotdot: bool,
) -> Option<SegmentKind> {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    const MONITORS: [&str; 2] = ["crio-conmon-", "libpod-conmon-"];
    if MONITORS.iter().any(|m| name.starts_with(m)) {
        return Some(SegmentKind::Monitor);
    }
    const PREFIXES: [(&str, Runtime); 5] = [
        ("cri-containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            return is_container_id(id).then(|| SegmentKind::Container {
                id: id.to_string(),
                runtime,
            });
        }
    }
    // A bare id: only where a runtime puts one, so a random 64-hex cgroup name elsewhere is
    // not taken for a container.
    if seg.len() != 64 || !is_container_id(seg) {
        return None;
    }
    let runtime = match parent {
        Some("docker") => Runtime::Docker,
        Some("libpod_parent") => Runtime::Podman,
        Some(p) if pod_segment(p, None).is_some() => Runtime::Unknown,
        Some(p) if p == "kubepods" || p.starts_with("kubepods") => Runtime::Unknown,
        // `/../<id>`: a sibling seen from inside a cgroup namespace, its parent cut off.
        None if first_after_dotdot => Runtime::Unknown,
        _ => return None,
    };
    Some(SegmentKind::Container {
        id: seg.to_string(),
        runtime,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PodSegment {
    uid: String,
    qos: Option<QosClass>,
}

fn qos_from_word(word: &str) -> Option<QosClass> {
    match word {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::Besteffort),
        // The pod sits directly under kubepods: guaranteed.
        "kubepods" => Some(QosClass::Guaranteed),
        _ => None,
    }
}

fn plausible_uid(uid: &str) -> bool {
    (8..=64).contains(&uid.len())
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

/// `pod<uid>` (cgroupfs; QoS from the parent directory) or
/// `kubepods-<qos>-pod<escaped uid>.slice` (systemd; `_` in the uid stands for `-`).
fn pod_segment(seg: &str, parent: Option<&str>) -> Option<PodSegment> {
    if let Some(name) = seg.strip_suffix(".slice") {
        let (head, last) = name.rsplit_once('-')?;
        let uid = last.strip_prefix("pod")?;
        if !plausible_uid(uid) {
            return None;
        }
        let qos_word = head.rsplit('-').next().unwrap_or(head);
        return Some(PodSegment {
            uid: uid.replace('_', "-"),
            qos: qos_from_word(qos_word),
        });
    }
    let uid = seg.strip_prefix("pod")?;
    if !plausible_uid(uid) || uid.contains('_') {
        return None;
    }
    Some(PodSegment {
        uid: uid.to_string(),
        qos: parent.and_then(qos_from_word),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-5678-90ef-1234-567890abcdef";
    const UID_ESC: &str = "1234abcd_5678_90ef_1234_567890abcdef";

    fn v2(path: &str) -> String {
        format!("0::{path}\n")
    }

    fn v1(path: &str) -> String {
        format!(
            "12:pids:{path}\n11:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::/\n"
        )
    }

    fn attr(text: &str) -> ContainerRef {
        attribute_text(text).unwrap_or_else(|| panic!("no container in {text:?}"))
    }

    #[track_caller]
    fn check(
        text: &str,
        runtime: Runtime,
        driver: CgroupDriver,
        version: CgroupVersion,
        pod: Option<(&str, Option<QosClass>)>,
    ) -> ContainerRef {
        let r = attr(text);
        assert_eq!(r.cgroup.id, ID, "{text}");
        assert_eq!(r.cgroup.runtime, runtime, "{text}");
        assert_eq!(r.cgroup.driver, driver, "{text}");
        assert_eq!(r.version, version, "{text}");
        assert_eq!(
            r.cgroup.pod_uid.as_deref(),
            pod.map(|(u, _)| u),
            "pod uid of {text}"
        );
        assert_eq!(r.cgroup.qos, pod.and_then(|(_, q)| q), "qos of {text}");
        r
    }

    #[test]
    fn containerd_systemd_all_qos_classes_v1_and_v2() {
        let cases = [
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_ESC}.slice/cri-containerd-{ID}.scope"),
                QosClass::Burstable,
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESC}.slice/cri-containerd-{ID}.scope"),
                QosClass::Besteffort,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_ESC}.slice/cri-containerd-{ID}.scope"),
                QosClass::Guaranteed,
            ),
        ];
        for (path, qos) in &cases {
            let pod = Some((UID, Some(*qos)));
            let r = check(
                &v2(path),
                Runtime::Containerd,
                CgroupDriver::Systemd,
                CgroupVersion::V2,
                pod,
            );
            assert_eq!(r.cgroup.container_path, *path);
            assert_eq!(
                r.cgroup.pod_path.as_deref(),
                path.rsplit_once('/').map(|(p, _)| p)
            );
            check(
                &v1(path),
                Runtime::Containerd,
                CgroupDriver::Systemd,
                CgroupVersion::V1,
                pod,
            );
        }
    }

    #[test]
    fn cgroupfs_driver_bare_and_named_ids() {
        let burst = Some((UID, Some(QosClass::Burstable)));
        let bare = format!("/kubepods/burstable/pod{UID}/{ID}");
        let r = check(
            &v2(&bare),
            Runtime::Unknown,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V2,
            burst,
        );
        assert_eq!(
            r.cgroup.pod_path.as_deref(),
            Some(&*format!("/kubepods/burstable/pod{UID}"))
        );
        check(
            &v1(&bare),
            Runtime::Unknown,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V1,
            burst,
        );

        let guaranteed = format!("/kubepods/pod{UID}/{ID}");
        check(
            &v1(&guaranteed),
            Runtime::Unknown,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V1,
            Some((UID, Some(QosClass::Guaranteed))),
        );
        let besteffort = format!("/kubepods/besteffort/pod{UID}/{ID}");
        check(
            &v2(&besteffort),
            Runtime::Unknown,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V2,
            Some((UID, Some(QosClass::Besteffort))),
        );

        // Names that say the runtime, with the cgroupfs driver (directory names only).
        let containerd = format!("/kubepods/burstable/pod{UID}/cri-containerd-{ID}");
        check(
            &v2(&containerd),
            Runtime::Containerd,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V2,
            burst,
        );
        let crio = format!("/kubepods/burstable/pod{UID}/crio-{ID}");
        check(
            &v1(&crio),
            Runtime::Crio,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V1,
            burst,
        );
    }

    #[test]
    fn crio_systemd_and_its_conmon_monitor() {
        let path = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESC}.slice/crio-{ID}.scope");
        check(
            &v2(&path),
            Runtime::Crio,
            CgroupDriver::Systemd,
            CgroupVersion::V2,
            Some((UID, Some(QosClass::Besteffort))),
        );
        check(
            &v1(&path),
            Runtime::Crio,
            CgroupDriver::Systemd,
            CgroupVersion::V1,
            Some((UID, Some(QosClass::Besteffort))),
        );
        let conmon = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESC}.slice/crio-conmon-{ID}.scope");
        assert_eq!(attribute_text(&v2(&conmon)), None);
        assert_eq!(attribute_text(&v1(&conmon)), None);
        assert_eq!(
            attribute_text(&v2(&format!("/system.slice/crio-conmon-{ID}.scope"))),
            None
        );
    }

    #[test]
    fn docker_all_drivers() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
        ] {
            let driver = if path.contains(".scope") {
                CgroupDriver::Systemd
            } else {
                CgroupDriver::Cgroupfs
            };
            check(&v2(&path), Runtime::Docker, driver, CgroupVersion::V2, None);
            check(&v1(&path), Runtime::Docker, driver, CgroupVersion::V1, None);
        }
        // dockershim-era kubelet: a docker scope under a pod slice.
        let kube = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_ESC}.slice/docker-{ID}.scope");
        check(
            &v1(&kube),
            Runtime::Docker,
            CgroupDriver::Systemd,
            CgroupVersion::V1,
            Some((UID, Some(QosClass::Burstable))),
        );
    }

    #[test]
    fn podman_and_its_conmon_monitor() {
        for path in [
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
        ] {
            check(
                &v2(&path),
                Runtime::Podman,
                CgroupDriver::Systemd,
                CgroupVersion::V2,
                None,
            );
        }
        check(
            &v1(&format!("/libpod_parent/libpod-{ID}")),
            Runtime::Podman,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V1,
            None,
        );
        check(
            &v1(&format!("/libpod_parent/{ID}")),
            Runtime::Podman,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V1,
            None,
        );
        assert_eq!(
            attribute_text(&v2(&format!("/machine.slice/libpod-conmon-{ID}.scope"))),
            None
        );
        assert_eq!(
            attribute_text(&v1(&format!("/libpod_parent/libpod-conmon-{ID}"))),
            None
        );
    }

    #[test]
    fn kubepods_nested_under_another_slice() {
        // kind: the node is a docker container, kubelet uses kubelet.slice.
        let path = format!(
            "/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_ESC}.slice/cri-containerd-{ID}.scope",
            "f".repeat(64)
        );
        let r = check(
            &v2(&path),
            Runtime::Containerd,
            CgroupDriver::Systemd,
            CgroupVersion::V2,
            Some((UID, Some(QosClass::Burstable))),
        );
        assert_eq!(r.cgroup.container_path, path);
        // Seen from inside the kind node: kubelet.slice at the top.
        let inner = format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_ESC}.slice/cri-containerd-{ID}.scope");
        check(
            &v2(&inner),
            Runtime::Containerd,
            CgroupDriver::Systemd,
            CgroupVersion::V2,
            Some((UID, Some(QosClass::Guaranteed))),
        );
        // The kind node's own processes belong to the node container.
        let node = format!("/system.slice/docker-{ID}.scope/init.scope");
        let r = check(
            &v2(&node),
            Runtime::Docker,
            CgroupDriver::Systemd,
            CgroupVersion::V2,
            None,
        );
        assert_eq!(
            r.cgroup.container_path,
            format!("/system.slice/docker-{ID}.scope")
        );
    }

    #[test]
    fn paths_from_inside_a_cgroup_namespace() {
        let path = format!("/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESC}.slice/cri-containerd-{ID}.scope");
        let r = check(
            &v2(&path),
            Runtime::Containerd,
            CgroupDriver::Systemd,
            CgroupVersion::V2,
            Some((UID, Some(QosClass::Besteffort))),
        );
        assert!(r.cgroup.relative_to_namespace);
        assert_eq!(
            r.cgroup.container_path,
            format!("/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESC}.slice/cri-containerd-{ID}.scope")
        );
        // cgroupfs, same QoS: the QoS directory is cut off.
        let r = check(
            &v2(&format!("/../../pod{UID}/{ID}")),
            Runtime::Unknown,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V2,
            Some((UID, None)),
        );
        assert!(r.cgroup.relative_to_namespace);
        // A sibling container of the same pod.
        check(
            &v2(&format!("/../{ID}")),
            Runtime::Unknown,
            CgroupDriver::Cgroupfs,
            CgroupVersion::V2,
            None,
        );
        // The reader's own namespace root is not a container path.
        assert_eq!(attribute_text("0::/\n"), None);
        // `..` in the middle is not something the kernel writes.
        assert_eq!(
            attribute_text(&v2(&format!("/kubepods/../pod{UID}/{ID}"))),
            None
        );
    }

    #[test]
    fn removed_v2_cgroup_still_names_the_container() {
        // Seen on a hybrid host: the container's cgroup was removed, a process lives on.
        let text =
            format!("4:memory:/\n0::/kubepods/burstable/pod{UID}/cri-containerd-{ID} (deleted)\n");
        let r = attr(&text);
        assert_eq!(
            (r.cgroup.id.as_str(), r.cgroup.runtime),
            (ID, Runtime::Containerd)
        );
        assert_eq!(
            r.cgroup.container_path,
            format!("/kubepods/burstable/pod{UID}/cri-containerd-{ID}")
        );
    }

    #[test]
    fn v2_line_preferred_then_memory_then_any() {
        let other = "f".repeat(64);
        let text = format!("4:memory:/docker/{other}\n0::/system.slice/docker-{ID}.scope\n");
        let r = attr(&text);
        assert_eq!(r.cgroup.id, ID);
        assert_eq!(r.version, CgroupVersion::V2);

        // v2 at the root (hybrid host), v1 memory names the container.
        let text = format!("5:pids:/docker/{other}\n4:memory:/docker/{ID}\n0::/\n");
        let r = attr(&text);
        assert_eq!(r.cgroup.id, ID);
        assert_eq!(r.version, CgroupVersion::V1);

        // Only a non-memory controller names it.
        let text = format!("5:pids:/docker/{ID}\n4:memory:/\n0::/\n");
        assert_eq!(attr(&text).cgroup.id, ID);
    }

    #[test]
    fn host_processes_are_not_containers() {
        for text in [
            "0::/init.scope\n",
            "0::/system.slice/containerd.service\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "12:pids:/\n4:memory:/process_api/90be53ad33d991d4c2edbd8dc2be26c1\n0::/\n",
            "0::/kubepods.slice/kubepods-burstable.slice\n",
            // A pod cgroup itself (the pod-level processes of none).
            "0::/kubepods/burstable/pod1234abcd-5678-90ef-1234-567890abcdef\n",
        ] {
            assert_eq!(attribute_text(text), None, "{text}");
        }
        // A bare 64-hex name somewhere unrelated is not taken for a container.
        assert_eq!(attribute_text(&v2(&format!("/mystuff/{ID}"))), None);
    }

    #[test]
    fn ids_must_be_exactly_64_lowercase_hex() {
        let upper = ID.to_uppercase();
        let long = format!("{ID}0");
        let short = &ID[..63];
        let nonhex = format!("{}g", &ID[..63]);
        for bad in [upper.as_str(), long.as_str(), short, nonhex.as_str()] {
            for path in [
                format!("/system.slice/docker-{bad}.scope"),
                format!("/kubepods/burstable/pod{UID}/{bad}"),
                format!("/kubepods.slice/kubepods-pod{UID_ESC}.slice/cri-containerd-{bad}.scope"),
            ] {
                assert_eq!(attribute_text(&v2(&path)), None, "{path}");
                assert_eq!(attribute_text(&v1(&path)), None, "{path}");
            }
        }
    }

    #[test]
    fn garbage_is_skipped_without_panic() {
        let file =
            parse_cgroup_file("no colons here\n\n::\nx:memory:/a\n0:memory:/a\n3:cpu:relative\n");
        assert!(file.entries.is_empty(), "{file:?}");
        assert_eq!(file.skipped_lines, 5);

        // Truncated in the middle of the id.
        assert_eq!(
            attribute_text(&format!("0::/system.slice/docker-{}", &ID[..30])),
            None
        );
        assert_eq!(attribute_text("0:"), None);
        assert_eq!(attribute_text("0::"), None);

        // A good line survives garbage around it.
        let text = format!(
            "\u{0}\u{1}\u{fffd}junk\n{}\n0::/docker/{ID}\n",
            "x".repeat(100_000)
        );
        let file = parse_cgroup_file(&text);
        assert_eq!(file.entries.len(), 1);
        assert_eq!(attribute(&file).map(|r| r.cgroup.id), Some(ID.to_string()));

        // Pseudo-random bytes, lossily decoded like the collector does.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state & 0xff) as u8
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = attribute_text(&text);
        }
    }

    #[test]
    fn cheap_prechecks_agree_with_the_parser() {
        let texts = [
            "0::/init.scope\n".to_string(),
            "12:pids:/\n4:memory:/system.slice\n0::/\n".to_string(),
            v1(&format!("/docker/{ID}")),
            "junk\n\n0::relative\n5:memory:/ok\n0:cpu:/x\n".to_string(),
        ];
        for text in &texts {
            let file = parse_cgroup_file(text);
            assert_eq!(count_malformed_lines(text), file.skipped_lines, "{text}");
            if !may_name_container(text) {
                assert_eq!(attribute(&file), None, "{text}");
            }
        }
        assert!(may_name_container(&texts[2]));
        assert!(!may_name_container(&texts[0]));
    }

    #[test]
    fn pod_uid_unescaping_and_validation() {
        let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_ESC}.slice/cri-containerd-{ID}.scope");
        assert_eq!(attr(&v2(&path)).cgroup.pod_uid.as_deref(), Some(UID));
        // Static (mirror) pods have a 32-hex uid without dashes.
        let static_uid = "6f2a0f4c4b8e7d1a9c3b5e7f9a1b3c5d";
        let path = format!("/kubepods/burstable/pod{static_uid}/{ID}");
        assert_eq!(attr(&v2(&path)).cgroup.pod_uid.as_deref(), Some(static_uid));
    }
}
