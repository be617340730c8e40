//! What the process tree says about containers, where the cgroup name does not: which
//! runtime's monitor (shim or conmon) started a container, whether a pod container is the
//! pod's sandbox (pause), and the host's capability bounding set.
//!
//! containerd's CRI under the cgroupfs driver names a container's cgroup by its bare id
//! (`…/kubepods/burstable/pod<uid>/<id>`), which says nothing of the runtime; the container's
//! first process is the child of the runtime's per-container monitor, a host process.

use crate::process::RawProcess;
use nodeguard_model::{Process, Runtime};
use std::collections::BTreeMap;

/// How many ancestors to climb looking for the monitor: the container's first process is
/// normally its child; a process that re-parented (its parent exited) goes to the nearest
/// subreaper, which is the monitor again.
const MAX_ANCESTORS: usize = 4;

/// The runtime a container monitor's command line names: `containerd-shim-runc-v2`,
/// `containerd-shim` (containerd, or Docker with `-namespace moby`), `docker-containerd-shim`
/// (Docker), `conmon` (Podman when it calls back `podman`/`libpod`, CRI-O when it names
/// `crio`). `None` for anything else.
pub fn runtime_of_monitor(cmdline: &str) -> Option<Runtime> {
    let mut words = cmdline.split_whitespace();
    let argv0 = words.next()?;
    let program = argv0.rsplit('/').next().unwrap_or(argv0);
    let args: Vec<&str> = words.collect();
    if program == "docker-containerd-shim" {
        return Some(Runtime::Docker);
    }
    if program.starts_with("containerd-shim") {
        let namespace = args
            .windows(2)
            .find(|w| w[0] == "-namespace" || w[0] == "--namespace")
            .map(|w| w[1])
            .or_else(|| {
                args.iter().find_map(|a| {
                    a.strip_prefix("-namespace=")
                        .or(a.strip_prefix("--namespace="))
                })
            });
        return Some(match namespace {
            Some("moby") => Runtime::Docker,
            _ => Runtime::Containerd,
        });
    }
    if program == "conmon" {
        let podman = args.iter().any(|a| {
            let base = a.rsplit('/').next().unwrap_or(a);
            base == "podman" || a.contains("/libpod")
        });
        if podman {
            return Some(Runtime::Podman);
        }
        if args.iter().any(|a| a.contains("crio")) {
            return Some(Runtime::Crio);
        }
    }
    None
}

/// The runtime of a container from the monitor above its first process (see
/// [`monitor_of`]), by [`runtime_of_monitor`].
pub fn runtime_from_ancestors(
    raws: &[RawProcess],
    first: usize,
    container_id: &str,
) -> Option<Runtime> {
    runtime_of_monitor(&monitor_of(raws, first, container_id)?.process.cmdline)
}

/// The pid of the container's monitor (see [`monitor_of`]).
pub fn monitor_pid(raws: &[RawProcess], first: usize, container_id: &str) -> Option<i32> {
    monitor_of(raws, first, container_id).map(|r| r.process.pid)
}

/// The first host process above the container's first process: climbs the parents of
/// `first` (an index into `raws`, which is sorted by pid) that belong to the same container.
/// `None` when the chain leaves the process list, enters another container (a nested
/// runtime, whose own cgroup name said what it could), or is longer than a monitor's is.
fn monitor_of<'a>(
    raws: &'a [RawProcess],
    first: usize,
    container_id: &str,
) -> Option<&'a RawProcess> {
    let by_pid = |pid: i32| {
        raws.binary_search_by_key(&pid, |r| r.process.pid)
            .ok()
            .map(|i| &raws[i])
    };
    let mut current = raws.get(first)?;
    for _ in 0..MAX_ANCESTORS {
        let parent = by_pid(current.process.ppid)?;
        let same = parent
            .container
            .as_ref()
            .is_some_and(|c| c.cgroup.id == container_id);
        if !same {
            return parent.container.is_none().then_some(parent);
        }
        current = parent;
    }
    None
}

/// A pod sandbox as the process table shows it: the container's one process runs `pause`
/// (`/pause` from the pause image; kubelet's sandbox image). Without pod metadata this is
/// the only sign; with it, the scan lets `status.containerStatuses` decide.
pub fn looks_like_sandbox(processes: &[&Process]) -> bool {
    let [p] = processes else { return false };
    let base = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let argv0 = p.cmdline.split_whitespace().next().map(base);
    let exe = p.exe.as_deref().map(base);
    !p.kernel_thread
        && p.command == "pause"
        && argv0.as_deref() == Some("pause")
        && exe.as_deref() == Some("pause")
        && p.cmdline.split_whitespace().count() == 1
}

/// A process inside runc's own set-up of a container, not yet the container's process: runc
/// runs `runc init` in the container's cgroup, names its stages `runc:[0:PARENT]`,
/// `runc:[1:CHILD]` and `runc:[2:INIT]`, and execs the container's entrypoint in the same
/// pid when the set-up is done (observed with runc 1.1.5 and kubelet's containerd:
/// comm `runc:[2:INIT]`, cmdline `runc init`). What such a process shows (the runtime's
/// capabilities and namespaces before they are dropped or entered, runc's own executable)
/// is not the container's. Both signs are the process's own to set, so this only says the
/// process may be worth reading again once it execs, never that it can be ignored.
pub fn in_runtime_init(p: &Process) -> bool {
    if p.kernel_thread {
        return false;
    }
    if p.command.starts_with("runc:[") {
        return true;
    }
    let mut argv = p.cmdline.split_whitespace();
    let runc = argv
        .next()
        .is_some_and(|argv0| argv0.rsplit('/').next() == Some("runc"));
    runc && argv.next() == Some("init") && argv.next().is_none()
}

/// A pod has one sandbox, and kubelet starts it before any of the pod's containers. When
/// several containers of one pod [look like a sandbox](looks_like_sandbox) (an app container
/// may run the pause image itself: a placeholder, an overprovisioning pod), the one whose
/// process started first is the sandbox and the others are containers. `candidates` are
/// (pod uid, start ticks, pid, key); returns the keys of the sandboxes, one per pod. A
/// start time that could not be read loses to a known one; equal times go to the lower pid.
pub fn first_started_per_pod<K: Copy>(candidates: &[(&str, Option<u64>, i32, K)]) -> Vec<K> {
    let mut first: BTreeMap<&str, ((u64, i32), K)> = BTreeMap::new();
    for &(pod, start, pid, key) in candidates {
        let order = (start.unwrap_or(u64::MAX), pid);
        let entry = first.entry(pod).or_insert((order, key));
        if order < entry.0 {
            *entry = (order, key);
        }
    }
    first.into_values().map(|(_, key)| key).collect()
}

/// The host's capability bounding set: pid 1's when it is a host process and its status was
/// read; else the union of the host processes' (the runtimes and kubelet run with the host's
/// set, and the union can only be wider than any one of them). Kernel threads are left out:
/// theirs is every capability the kernel knows, which the host itself may not have.
pub fn host_bounding(processes: &[&Process]) -> Option<u64> {
    let mask = |p: &Process| {
        p.capability_masks
            .bounding
            .as_deref()
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    };
    let host = processes
        .iter()
        .filter(|p| p.container_id.is_none() && !p.kernel_thread);
    if let Some(init) = host.clone().find(|p| p.pid == 1).and_then(|p| mask(p)) {
        return Some(init);
    }
    host.filter_map(|p| mask(p)).reduce(|a, b| a | b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_name_their_runtime() {
        let cases = [
            (
                "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id 5391f5ee47bc -address /run/containerd/containerd.sock",
                Some(Runtime::Containerd),
            ),
            (
                "/usr/bin/containerd-shim-runc-v2 -namespace moby -id 0123 -address /run/containerd/containerd.sock",
                Some(Runtime::Docker),
            ),
            (
                "containerd-shim -namespace moby -workdir /var/lib/containerd/io.containerd.runtime.v1.linux/moby/0123",
                Some(Runtime::Docker),
            ),
            ("docker-containerd-shim 0123 /var/run/docker/libcontainerd/0123 docker-runc", Some(Runtime::Docker)),
            (
                "/usr/bin/conmon --api-version 1 -c 0123 -u 0123 -r /usr/bin/runc -b /var/lib/containers/storage/overlay-containers/0123/userdata --exit-dir /run/libpod/exits --exit-command /usr/bin/podman --exit-command-arg --root",
                Some(Runtime::Podman),
            ),
            (
                "/usr/bin/conmon -b /run/containers/storage/overlay-containers/0123/userdata -c 0123 --exit-dir /var/run/crio/exits -r /usr/bin/runc --socket-dir-path /var/run/crio -u 0123 -s",
                Some(Runtime::Crio),
            ),
            ("/usr/bin/conmon -c 0123", None),
            ("/usr/bin/runc init", None),
            ("/sbin/init", None),
            ("", None),
        ];
        for (cmdline, want) in cases {
            assert_eq!(runtime_of_monitor(cmdline), want, "{cmdline}");
        }
    }

    fn process(pid: i32, command: &str, cmdline: &str, exe: Option<&str>) -> Process {
        Process {
            pid,
            ppid: 1,
            command: command.into(),
            cmdline: cmdline.into(),
            exe: exe.map(str::to_string),
            ..Process::default()
        }
    }

    fn raw(pid: i32, ppid: i32, cmdline: &str, cgroup: Option<&str>) -> RawProcess {
        let mut process = process(pid, "x", cmdline, None);
        process.ppid = ppid;
        RawProcess {
            start_ticks: None,
            process,
            exe_path: None,
            exe_identity: None,
            cgroup: None,
            container: cgroup
                .and_then(|path| crate::cgroup::attribute_text(&format!("0::{path}\n")))
                .map(std::sync::Arc::new),
            notes: Vec::new(),
            remember: None,
            reused: false,
            watched: false,
            script: None,
        }
    }

    #[test]
    fn the_monitor_above_a_bare_id_names_the_runtime() {
        let id = "ab".repeat(32);
        let other = "cd".repeat(32);
        let path = format!("/kubepods/burstable/pod1234abcd-0000-1111-2222-333344445555/{id}");
        let other_path =
            format!("/kubepods/burstable/pod1234abcd-0000-1111-2222-333344445555/{other}");
        let shim = "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id 5391f5ee -address /run/containerd/containerd.sock";
        // Sorted by pid, as collect keeps them: shim 10, init 20, its child 21.
        let raws = vec![
            raw(1, 0, "/sbin/init", None),
            raw(10, 1, shim, None),
            raw(20, 10, "/bin/sleep 3600", Some(&path)),
            raw(21, 20, "/bin/sh", Some(&path)),
            raw(30, 1, "/bin/sleep 1", Some(&other_path)),
            raw(40, 30, "/bin/sleep 2", Some(&path)),
        ];
        assert_eq!(raws[2].container.as_ref().unwrap().cgroup.id, id);
        assert_eq!(
            runtime_from_ancestors(&raws, 2, &id),
            Some(Runtime::Containerd)
        );
        // From a later process of the same container, through its parent.
        assert_eq!(
            runtime_from_ancestors(&raws, 3, &id),
            Some(Runtime::Containerd)
        );
        assert_eq!(monitor_pid(&raws, 3, &id), Some(10));
        // Re-parented to init: init names no runtime.
        assert_eq!(runtime_from_ancestors(&raws, 4, &other), None);
        // A parent inside another container is no monitor.
        assert_eq!(monitor_pid(&raws, 5, &id), None);
        // A parent outside the list (vanished): nothing.
        let lone = vec![raw(20, 10, "/bin/sleep 3600", Some(&path))];
        assert_eq!(runtime_from_ancestors(&lone, 0, &id), None);
    }

    #[test]
    fn sandbox_is_a_lone_pause() {
        let pause = process(10, "pause", "/pause", Some("/pause"));
        assert!(looks_like_sandbox(&[&pause]));
        let app = process(11, "sleep", "/bin/sleep 3600", Some("/bin/busybox"));
        assert!(!looks_like_sandbox(&[&app]));
        assert!(!looks_like_sandbox(&[&pause, &app]), "a pause with company");
        assert!(!looks_like_sandbox(&[]));
        // A shell renamed pause is still a shell.
        let fake = process(12, "pause", "/pause -c id", Some("/bin/sh"));
        assert!(!looks_like_sandbox(&[&fake]));
    }

    #[test]
    fn runc_set_up_stages_are_runtime_init() {
        // Observed on this machine (runc 1.1.5): a created, not yet started container's
        // process has comm `runc:[2:INIT]`, cmdline `runc init`; the real node's log showed
        // an exec read of `runc:[0:PARENT]` in a new pod's sandbox cgroup.
        for comm in ["runc:[0:PARENT]", "runc:[1:CHILD]", "runc:[2:INIT]"] {
            assert!(
                in_runtime_init(&process(7, comm, "runc init", None)),
                "{comm}"
            );
        }
        // Right after the exec of `runc init`, before runc names its stage.
        assert!(in_runtime_init(&process(
            7,
            "exe",
            "/usr/bin/runc init",
            None
        )));
        assert!(in_runtime_init(&process(7, "3", "runc init", Some("/"))));
        // The runtime's other commands and the entrypoint are not.
        assert!(!in_runtime_init(&process(
            7,
            "runc",
            "runc --root /x state c",
            None
        )));
        assert!(!in_runtime_init(&process(
            7,
            "runc",
            "/usr/bin/runc init now",
            None
        )));
        assert!(!in_runtime_init(&process(
            7,
            "pause",
            "/pause",
            Some("/pause")
        )));
        assert!(!in_runtime_init(&process(7, "sh", "sh -c runc init", None)));
        let mut kthread = process(2, "runc:[9]", "", None);
        kthread.kernel_thread = true;
        assert!(!in_runtime_init(&kthread));
    }

    #[test]
    fn one_sandbox_per_pod_the_first_started() {
        // Observed on the real node (kubelet v1.20.2, containerd 1.6, cgroupfs): a pod whose
        // one container runs the pause image. Both containers' lone process has exe `/pause`,
        // cmdline `/pause`, comm `pause`; the sandbox (9e6e9b9c05f0, absent from
        // containerStatuses) started at tick 479386, the listed container (a323828f92ff) at
        // 479413.
        let sandbox = process(3841, "pause", "/pause", Some("/pause"));
        let placeholder = process(3890, "pause", "/pause", Some("/pause"));
        assert!(looks_like_sandbox(&[&sandbox]) && looks_like_sandbox(&[&placeholder]));
        let pod = "33c9bcb6-c894-4170-8abd-e4672f5b4f6c";
        let other = "278f13dd-1535-4a9e-a843-dc7f596f43e6";
        let chosen = first_started_per_pod(&[
            (pod, Some(479413), 3890, "a323828f92ff"),
            (pod, Some(479386), 3841, "9e6e9b9c05f0"),
            (other, Some(479300), 22648, "f608e9ea2c52"),
        ]);
        assert_eq!(chosen, vec!["f608e9ea2c52", "9e6e9b9c05f0"]);
        // Start times unread: the lower pid; one unread: the known one wins.
        let unread = first_started_per_pod(&[(pod, None, 3890, "b"), (pod, None, 3841, "a")]);
        assert_eq!(unread, vec!["a"]);
        let half = first_started_per_pod(&[(pod, None, 3841, "a"), (pod, Some(9), 3890, "b")]);
        assert_eq!(half, vec!["b"]);
        assert!(first_started_per_pod::<u8>(&[]).is_empty());
    }

    #[test]
    fn host_bounding_prefers_pid_1() {
        let mut init = process(1, "init", "/sbin/init", Some("/sbin/init"));
        init.capability_masks.bounding = Some("000001fffeffffff".into());
        let mut other = process(50, "containerd", "containerd", Some("/usr/bin/containerd"));
        other.capability_masks.bounding = Some("000001ffffffffff".into());
        let mut kthread = process(2, "kthreadd", "", None);
        kthread.kernel_thread = true;
        kthread.capability_masks.bounding = Some("000001ffffffffff".into());
        assert_eq!(
            host_bounding(&[&init, &other, &kthread]),
            Some(0x1fffeffffff)
        );
        // pid 1 unreadable: the union of host processes, never a kernel thread's.
        let mut narrow = other.clone();
        narrow.capability_masks.bounding = Some("000001fffeffffff".into());
        assert_eq!(host_bounding(&[&narrow, &kthread]), Some(0x1fffeffffff));
        let mut in_container = other.clone();
        in_container.container_id = Some("ab".repeat(32));
        assert_eq!(host_bounding(&[&in_container]), None);
    }
}
