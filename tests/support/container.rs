//! Real containers, started the way containerd starts them: a private `runc --root`, a bundle
//! whose `config.json` comes from `runc spec`, an overlay rootfs (image as lowerdir, a fresh
//! upperdir), and a kubepods cgroup path. Torn down on drop, also when the test panics.

use super::cmd::{self, Output};
use super::image::Image;
use super::{oracle, random_container_id, random_pod_uid};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Capabilities containerd/CRI-O/Docker grant by default — what a Kubernetes container gets
/// unless its securityContext says otherwise (`runc spec` alone gives only three).
pub use nodeguard_model::capability::RUNTIME_DEFAULT_CAPABILITIES;

/// Kubernetes QoS class: which kubepods level the pod sits under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    /// As nodeguard's JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "guaranteed",
            Qos::Burstable => "burstable",
            Qos::BestEffort => "besteffort",
        }
    }
}

/// How the kubelet names the cgroups (which cgroup driver it was configured with). The test
/// always runs runc with its cgroupfs driver: with it, systemd-style names are just directory
/// names, which is what a scanner reading cgroupfs sees on a systemd node too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupNaming {
    /// `/kubepods/burstable/pod<uid>/<prefix><id>`
    Cgroupfs,
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/<prefix><id>.scope`
    Systemd,
}

/// Which runtime the container's cgroup name claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeNaming {
    /// `cri-containerd-<id>`
    Containerd,
    /// `crio-<id>`
    Crio,
    /// `docker-<id>`
    Docker,
    /// Just `<id>`, as containerd names it under the cgroupfs driver.
    Bare,
}

impl RuntimeNaming {
    fn prefix(self) -> &'static str {
        match self {
            RuntimeNaming::Containerd => "cri-containerd-",
            RuntimeNaming::Crio => "crio-",
            RuntimeNaming::Docker => "docker-",
            RuntimeNaming::Bare => "",
        }
    }
}

/// What to start. Defaults follow a Kubernetes pod with an empty securityContext under
/// containerd: root, the runtime's default capabilities, `no_new_privs` off (allowPrivilegeEscalation
/// defaults to true), no seccomp filter, no limits, a writable root, burstable QoS.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The image's layer directory (the overlay lowerdir). Keep an owned [`Image`] alive for as
    /// long as its containers.
    pub lower_dir: PathBuf,
    pub id: String,
    pub pod_uid: String,
    pub qos: Qos,
    pub naming: CgroupNaming,
    pub runtime: RuntimeNaming,
    /// kubelet's `--cgroup-root` (`/ng-x` puts pods under `/ng-x/kubepods/...`, or
    /// `/ng-x.slice/ng-x-kubepods.slice/...` with systemd naming); empty for `/`.
    pub cgroup_root: String,
    pub args: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub no_new_privs: bool,
    /// Bounding, effective and permitted set. Inheritable and ambient stay empty.
    pub capabilities: Vec<String>,
    pub memory_bytes: Option<i64>,
    /// CFS quota and period in microseconds.
    pub cpu_quota: Option<(i64, u64)>,
    pub pids_limit: Option<i64>,
    pub host_network: bool,
    pub readonly_root: bool,
    /// Load a seccomp filter (allow everything but `kexec_load`), so `Seccomp: 2`.
    pub seccomp_filter: bool,
    /// More processes to start with `runc exec -d` once the container runs.
    pub exec: Vec<Vec<String>>,
    /// Writable tmpfs mounts that allow exec (no `noexec`), by mount point.
    pub tmpfs: Vec<String>,
}

impl ContainerSpec {
    pub fn new(image: &Image) -> ContainerSpec {
        ContainerSpec {
            lower_dir: image.dir.clone(),
            id: random_container_id(),
            pod_uid: random_pod_uid(),
            qos: Qos::Burstable,
            naming: CgroupNaming::Cgroupfs,
            runtime: RuntimeNaming::Containerd,
            cgroup_root: String::new(),
            args: vec!["/bin/sleep".into(), "3600".into()],
            uid: 0,
            gid: 0,
            no_new_privs: false,
            capabilities: RUNTIME_DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            memory_bytes: None,
            cpu_quota: None,
            pids_limit: None,
            host_network: false,
            readonly_root: false,
            seccomp_filter: false,
            exec: Vec::new(),
            tmpfs: Vec::new(),
        }
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }
    pub fn qos(mut self, qos: Qos) -> Self {
        self.qos = qos;
        self
    }
    pub fn naming(mut self, naming: CgroupNaming) -> Self {
        self.naming = naming;
        self
    }
    pub fn runtime(mut self, runtime: RuntimeNaming) -> Self {
        self.runtime = runtime;
        self
    }
    /// Puts the pod under kubelet's `--cgroup-root` `root` (a name without slashes).
    pub fn cgroup_root(mut self, root: &str) -> Self {
        self.cgroup_root = root.trim_matches('/').to_string();
        self
    }

    pub fn pod_uid(mut self, uid: &str) -> Self {
        self.pod_uid = uid.to_string();
        self
    }
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn no_new_privs(mut self, on: bool) -> Self {
        self.no_new_privs = on;
        self
    }
    pub fn add_capability(mut self, cap: &str) -> Self {
        self.capabilities.push(cap.to_string());
        self
    }
    pub fn capabilities(mut self, caps: &[&str]) -> Self {
        self.capabilities = caps.iter().map(|c| c.to_string()).collect();
        self
    }
    /// Every capability the runtime holds, in every set: what `privileged: true` gives. On a
    /// node that is every capability the kernel knows; where the runtime itself runs with a
    /// smaller bounding set (this test machine lacks CAP_SYS_RESOURCE), runc cannot grant more
    /// ("unable to apply caps: operation not permitted"), so it is this process's `CapBnd`.
    pub fn privileged(mut self) -> Self {
        self.capabilities = oracle::capabilities(std::process::id() as i32, "CapBnd");
        self
    }
    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }
    pub fn cpu_limit(mut self, quota_us: i64, period_us: u64) -> Self {
        self.cpu_quota = Some((quota_us, period_us));
        self
    }
    pub fn pids_limit(mut self, max: i64) -> Self {
        self.pids_limit = Some(max);
        self
    }
    pub fn host_network(mut self) -> Self {
        self.host_network = true;
        self
    }
    pub fn readonly_root(mut self) -> Self {
        self.readonly_root = true;
        self
    }
    pub fn seccomp_filter(mut self) -> Self {
        self.seccomp_filter = true;
        self
    }
    /// Mounts a writable tmpfs at `mount_point` that allows exec (an `emptyDir` with
    /// `medium: Memory`, or a `/dev/shm` without `noexec`).
    pub fn tmpfs(mut self, mount_point: &str) -> Self {
        self.tmpfs.push(mount_point.to_string());
        self
    }
    /// Starts one more process in the container after it runs (`runc exec -d`).
    pub fn exec(mut self, args: &[&str]) -> Self {
        self.exec.push(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// `linux.cgroupsPath` for this spec.
    pub fn cgroups_path(&self) -> String {
        let prefix = self.runtime.prefix();
        match self.naming {
            CgroupNaming::Cgroupfs => {
                let qos = match self.qos {
                    Qos::Guaranteed => String::new(),
                    Qos::Burstable => "/burstable".into(),
                    Qos::BestEffort => "/besteffort".into(),
                };
                let root = if self.cgroup_root.is_empty() {
                    String::new()
                } else {
                    format!("/{}", self.cgroup_root)
                };
                format!(
                    "{root}/kubepods{qos}/pod{}/{prefix}{}",
                    self.pod_uid, self.id
                )
            }
            CgroupNaming::Systemd => {
                let uid = self.pod_uid.replace('-', "_");
                // systemd's slice names repeat every parent: `<root>-kubepods-burstable.slice`.
                let (top, p) = if self.cgroup_root.is_empty() {
                    (String::new(), String::new())
                } else {
                    (
                        format!("/{}.slice", self.cgroup_root),
                        format!("{}-", self.cgroup_root),
                    )
                };
                let (qos_slice, pod_slice) = match self.qos {
                    Qos::Guaranteed => (String::new(), format!("{p}kubepods-pod{uid}.slice")),
                    q => {
                        let q = q.as_str();
                        (
                            format!("/{p}kubepods-{q}.slice"),
                            format!("{p}kubepods-{q}-pod{uid}.slice"),
                        )
                    }
                };
                format!(
                    "{top}/{p}kubepods.slice{qos_slice}/{pod_slice}/{prefix}{}.scope",
                    self.id
                )
            }
        }
    }

    /// The OCI config this spec turns into, from `runc spec`'s template.
    pub fn edit_config(&self, config: &mut Value) {
        let process = &mut config["process"];
        process["terminal"] = json!(false);
        process["args"] = json!(self.args);
        process["user"] = json!({"uid": self.uid, "gid": self.gid});
        process["noNewPrivileges"] = json!(self.no_new_privs);
        process["capabilities"] = json!({
            "bounding": self.capabilities,
            "effective": self.capabilities,
            "permitted": self.capabilities,
            "inheritable": [],
            "ambient": [],
        });
        config["root"] = json!({"path": "rootfs", "readonly": self.readonly_root});
        config["hostname"] = json!(&self.id[..12]);
        let linux = &mut config["linux"];
        linux["cgroupsPath"] = json!(self.cgroups_path());
        let resources = &mut linux["resources"];
        if let Some(bytes) = self.memory_bytes {
            resources["memory"] = json!({"limit": bytes});
        }
        if let Some((quota, period)) = self.cpu_quota {
            resources["cpu"] = json!({"quota": quota, "period": period});
        }
        if let Some(max) = self.pids_limit {
            resources["pids"] = json!({"limit": max});
        }
        if self.host_network {
            if let Some(namespaces) = linux["namespaces"].as_array_mut() {
                namespaces.retain(|ns| ns["type"] != "network");
            }
        }
        if let Some(mounts) = config["mounts"].as_array_mut() {
            for point in &self.tmpfs {
                mounts.push(json!({
                    "destination": point,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777", "size=16m"],
                }));
            }
        }
        let linux = &mut config["linux"];
        if self.seccomp_filter {
            linux["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
                "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}],
            });
        }
    }

    /// Starts the container; panics (after tearing down what was set up) with runc's log when
    /// it does not come up.
    pub fn start(self) -> Container {
        Container::start(self)
    }
}

/// Names of every capability up to `/proc/sys/kernel/cap_last_cap`, as `capsh` spells them.
pub fn all_kernel_capabilities() -> Vec<String> {
    let last: u32 = oracle::read_trimmed(Path::new("/proc/sys/kernel/cap_last_cap"))
        .parse()
        .unwrap();
    let mask: u64 = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    oracle::capsh_decode(&format!("{mask:016x}"))
}

/// Serializes creating and removing kubepods cgroup directories among this process's tests, so
/// one test never removes a parent directory another test is about to use.
static CGROUP_DIRS: Mutex<()> = Mutex::new(());

fn lock_cgroup_dirs() -> std::sync::MutexGuard<'static, ()> {
    CGROUP_DIRS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mount points of every cgroup hierarchy (v1 controllers, named hierarchies, v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect();
    mounts.sort();
    mounts.dedup();
    mounts
}

/// Where the v1 hierarchy of `controller` is mounted, if it is on v1.
pub fn v1_controller_mount(controller: &str) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup" {
            return None;
        }
        let options = right.nth(1)?;
        let mount_point = left.split_whitespace().nth(4)?;
        options
            .split(',')
            .any(|o| o == controller)
            .then(|| PathBuf::from(mount_point))
    })
}

/// A running container. Dropping it kills it and removes everything it set up.
#[derive(Debug)]
pub struct Container {
    pub spec: ContainerSpec,
    pub id: String,
    pub pod_uid: String,
    pub cgroups_path: String,
    /// The container's first process (`runc state`'s pid): the runc init pid.
    pub init_pid: i32,
    /// Pids of the processes started with [`ContainerSpec::exec`], in order.
    pub exec_pids: Vec<i32>,
    pub bundle: PathBuf,
    /// The overlay mount point (the container's `/`, seen from the host).
    pub rootfs: PathBuf,
    /// The container's writable layer (overlay upperdir).
    pub upper_dir: PathBuf,
    pub runc_root: PathBuf,
    pub log: PathBuf,
    mounted: bool,
    created: bool,
    /// Cgroup directories along the path that did not exist before this container.
    new_cgroup_dirs: Vec<PathBuf>,
    tmp: Option<tempfile::TempDir>,
}

impl Container {
    fn start(spec: ContainerSpec) -> Container {
        let tmp = tempfile::Builder::new()
            .prefix("nodeguard-ctr-")
            .tempdir()
            .expect("create container tempdir");
        let base = tmp.path().to_path_buf();
        let mut c = Container {
            id: spec.id.clone(),
            pod_uid: spec.pod_uid.clone(),
            cgroups_path: spec.cgroups_path(),
            spec,
            init_pid: 0,
            exec_pids: Vec::new(),
            bundle: base.join("bundle"),
            rootfs: base.join("bundle/rootfs"),
            upper_dir: base.join("upper"),
            runc_root: base.join("runc-root"),
            log: base.join("runc.log"),
            mounted: false,
            created: false,
            new_cgroup_dirs: Vec::new(),
            tmp: Some(tmp),
        };
        for dir in [&c.rootfs, &c.upper_dir, &base.join("work"), &c.runc_root] {
            fs::create_dir_all(dir).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            c.spec.lower_dir.display(),
            c.upper_dir.display(),
            base.join("work").display()
        );
        let rootfs = c
            .rootfs
            .to_str()
            .expect("tempdir paths are UTF-8")
            .to_string();
        cmd::run_ok(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                options.as_str(),
                rootfs.as_str(),
            ],
        );
        c.mounted = true;

        cmd::run_ok("runc", &["spec", "--bundle", &c.bundle_str()]);
        let config_path = c.bundle.join("config.json");
        let mut config: Value =
            serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
        c.spec.edit_config(&mut config);
        fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        {
            let _guard = lock_cgroup_dirs();
            c.new_cgroup_dirs = missing_cgroup_dirs(&c.cgroups_path);
            c.created = true; // runc may leave state behind even when `run` fails
            let out = c.runc_detached(&["run", "-d", "--bundle", &c.bundle_str(), &c.id]);
            if !out.success() {
                panic!(
                    "container {} did not start\n{out}\n  config.json: {}",
                    c.id,
                    fs::read_to_string(&config_path).unwrap_or_default()
                );
            }
        }
        let state = c.state();
        c.init_pid = state["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("runc state of {} has no pid: {state}", c.id))
            as i32;
        c.wait_for_exe(c.init_pid, &c.spec.args[0].clone());

        for args in c.spec.exec.clone() {
            let pid = c.exec_detached(&args.iter().map(String::as_str).collect::<Vec<_>>());
            c.exec_pids.push(pid);
        }
        c
    }

    fn bundle_str(&self) -> String {
        self.bundle.to_string_lossy().into_owned()
    }

    /// `runc --root <private> ARGS...`, outputs collected.
    pub fn runc(&self, args: &[&str]) -> Output {
        let mut full = vec!["--root", self.runc_root.to_str().unwrap()];
        full.extend_from_slice(args);
        cmd::run("runc", &full)
    }

    /// Runs runc for a command that leaves a process behind (`run -d`, `exec -d`): its stdio
    /// go to the log file, because the container process inherits them and would hold a pipe
    /// open forever.
    fn runc_detached(&self, args: &[&str]) -> Output {
        let mut full = vec!["--root", self.runc_root.to_str().unwrap()];
        full.extend_from_slice(args);
        let shown = format!(
            "{} </dev/null >>{} 2>&1",
            cmd::display("runc", &full),
            self.log.display()
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let start = Instant::now();
        let status = Command::new("runc")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
        Output {
            command: shown,
            code: status.code(),
            stdout: String::new(),
            stderr: fs::read_to_string(&self.log).unwrap_or_default(),
            elapsed: start.elapsed(),
        }
    }

    /// `runc state ID` as JSON.
    pub fn state(&self) -> Value {
        let out = self.runc(&["state", &self.id]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("runc state is not JSON ({e})\n{out}"))
    }

    /// Starts another process in the container (`runc exec -d`), returning its host pid once it
    /// runs its program.
    pub fn exec_detached(&self, args: &[&str]) -> i32 {
        let pid_file = self
            .tmp
            .as_ref()
            .unwrap()
            .path()
            .join(format!("exec-{}.pid", super::random_hex(4)));
        let mut full = vec![
            "exec",
            "-d",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &self.id,
        ];
        full.extend_from_slice(args);
        let out = self.runc_detached(&full);
        if !out.success() {
            panic!("exec in container {} failed\n{out}", self.id);
        }
        let pid: i32 = oracle::read_trimmed(&pid_file).parse().unwrap();
        self.wait_for_exe(pid, args[0]);
        pid
    }

    /// Waits until `pid` runs `program` (an absolute path): runc returns before its init has
    /// exec'd the user's program, and until then `/proc/PID/exe` is runc itself. Also returns
    /// once the process has moved on from runc to anything else (a shell that execs again).
    pub fn wait_for_exe(&self, pid: i32, program: &str) {
        self.wait_until_exe(pid, program, true)
    }

    /// Waits until `pid` runs exactly `program`.
    pub fn wait_for_exact_exe(&self, pid: i32, program: &str) {
        self.wait_until_exe(pid, program, false)
    }

    fn wait_until_exe(&self, pid: i32, program: &str, any_but_runc: bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let link = format!("/proc/{pid}/exe");
        loop {
            let exe = fs::read_link(&link).ok();
            if let Some(exe) = &exe {
                let runc = exe.to_string_lossy().contains("runc");
                if exe == Path::new(program) || (any_but_runc && !runc) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "pid {pid} of container {} runs {exe:?}, not {program}, after 15s\n  runc log: {}",
                    self.id,
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pids of every process in the container, by `runc ps`, ascending.
    pub fn pids(&self) -> Vec<i32> {
        let out = self.runc(&["ps", "--format", "json", &self.id]).ok();
        let mut pids: Vec<i32> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("runc ps output is not a JSON list of pids ({e})\n{out}"));
        pids.sort_unstable();
        pids
    }

    /// The container's cgroup directory in the v1 hierarchy of `controller` (`memory`, `cpu`,
    /// `pids`), or in the v2 hierarchy when the controller is not on v1.
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let mount = v1_controller_mount(controller).unwrap_or_else(|| {
            cgroup_mounts()
                .into_iter()
                .find(|m| m.join("cgroup.controllers").is_file())
                .expect("a cgroup v2 mount")
        });
        mount.join(self.cgroups_path.trim_start_matches('/'))
    }

    /// A short description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "container {} (init pid {}, exec pids {:?}, cgroup {}, bundle {})",
            self.id,
            self.init_pid,
            self.exec_pids,
            self.cgroups_path,
            self.bundle.display()
        )
    }

    fn teardown(&mut self) {
        let mut problems = Vec::new();
        if self.created {
            // Kill first: `delete -f` of a running container also kills, but a separate KILL
            // makes sure processes started by `exec` die with the pid namespace's init.
            let _ = self.runc(&["kill", &self.id, "KILL"]);
            let mut deleted = false;
            for _ in 0..50 {
                let out = self.runc(&["delete", "-f", &self.id]);
                if out.success() || out.stderr.contains("does not exist") {
                    deleted = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !deleted {
                problems.push(format!("runc delete -f {} kept failing", self.id));
            }
            self.created = false;
        }
        if self.mounted {
            let mut unmounted = false;
            for _ in 0..50 {
                if cmd::run("umount", &[&self.rootfs]).success() {
                    unmounted = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !unmounted {
                let lazy = cmd::run("umount", &["-l", &self.rootfs.to_string_lossy()]);
                if lazy.success() {
                    unmounted = true;
                } else {
                    problems.push(format!("cannot unmount {}\n{lazy}", self.rootfs.display()));
                }
            }
            self.mounted = !unmounted;
        }
        {
            let _guard = lock_cgroup_dirs();
            let pod_level = Path::new(&self.cgroups_path)
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            for mount in cgroup_mounts() {
                let leaf = mount.join(self.cgroups_path.trim_start_matches('/'));
                if leaf.exists() {
                    // runc delete removes it; a leftover means processes were still there.
                    if let Err(e) = remove_cgroup_dir(&leaf) {
                        problems.push(format!("cannot remove {}: {e}", leaf.display()));
                    }
                }
                // The pod directory belongs to this test (random pod uid); it is busy while
                // a sibling container of the same pod still runs, then that one removes it.
                let pod_dir = mount.join(pod_level.strip_prefix("/").unwrap_or(&pod_level));
                let _ = fs::remove_dir(pod_dir);
            }
            // Parents (kubepods, the QoS level) only if this container created them and no
            // one uses them now.
            for dir in self.new_cgroup_dirs.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        if self.mounted {
            // Never remove a tree that still has a mount inside it.
            if let Some(tmp) = self.tmp.take() {
                let kept = tmp.keep();
                problems.push(format!("left {} behind", kept.display()));
            }
        } else {
            self.tmp.take();
        }
        if !problems.is_empty() {
            eprintln!(
                "teardown of container {} was not clean:\n  {}",
                self.id,
                problems.join("\n  ")
            );
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Cgroup directories along `cgroups_path` that do not exist yet, in every hierarchy, parents
/// first.
fn missing_cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    for mount in cgroup_mounts() {
        let mut dir = mount.clone();
        for part in Path::new(cgroups_path.trim_start_matches('/')).components() {
            dir.push(part);
            if !dir.exists() {
                missing.push(dir.clone());
            }
        }
    }
    missing
}

/// Removes a cgroup directory, retrying while the kernel still counts dying tasks in it.
fn remove_cgroup_dir(dir: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..50 {
        last = fs::remove_dir(dir);
        if last.is_ok() || !dir.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}
