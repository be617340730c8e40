//! What the shipped DaemonSet grants the agent, read from `manifests/daemonset.yaml` itself,
//! so a test that claims deployment behaviour runs the agent with exactly that and no more.
//!
//! [`as_deployed`] is a wrapper for [`super::agent::Launch::wrapper`]: `setpriv` with the
//! bounding set cut to the capabilities the manifest adds, no inheritable ones, and
//! `no_new_privs` (`allowPrivilegeEscalation: false`). As uid 0, the exec'd agent then
//! holds exactly those capabilities in its permitted and effective sets: what runc gives
//! the container (FIELD-NOTES measured the DaemonSet's own pod the same way).

use serde_json::Value;
use std::path::Path;

/// `manifests/daemonset.yaml`, parsed.
pub fn daemonset() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/daemonset.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// The agent container's `securityContext.capabilities.add`, as written (`SYS_PTRACE`, ...).
/// The manifest must drop ALL first, else the runtime's defaults would come too.
pub fn added_capabilities() -> Vec<String> {
    let caps = &daemonset()["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["capabilities"];
    assert_eq!(
        caps["drop"],
        serde_json::json!(["ALL"]),
        "the DaemonSet drops ALL capabilities"
    );
    caps["add"]
        .as_array()
        .expect("securityContext.capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("a capability name").to_string())
        .collect()
}

/// The kernel's number of a capability named as in a manifest (`NET_ADMIN`).
pub fn capability_number(name: &str) -> u32 {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let bare = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u32)
        .unwrap_or_else(|| panic!("unknown capability {name}"))
}

/// The bit mask of `names`, as `/proc/PID/status` prints the `Cap*` lines.
pub fn capability_mask<S: AsRef<str>>(names: &[S]) -> u64 {
    names
        .iter()
        .fold(0, |mask, n| mask | 1u64 << capability_number(n.as_ref()))
}

/// `setpriv --bounding-set=-all,+sys_ptrace,... --inh-caps=-all --ambient-caps=-all
/// --no-new-privs --`: run the agent as the DaemonSet's container runs it (root, only the
/// manifest's capabilities, no_new_privs). setpriv execs, so the agent keeps its pid.
pub fn as_deployed() -> Vec<String> {
    let caps: Vec<String> = added_capabilities()
        .iter()
        .map(|c| format!("+{}", c.to_ascii_lowercase()))
        .collect();
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

/// The static `nodeguard` the image ships: `NODEGUARD_STATIC_BIN` when set (CI builds it once),
/// else built here (`+crt-static`, release, into `<target>/static`, a target dir of its own,
/// beside the test build's) and its build time noted on stderr. Once per test process.
pub fn static_binary() -> &'static Path {
    use std::io::Write;
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("NODEGUARD_STATIC_BIN") {
            let path = std::path::PathBuf::from(path);
            assert!(
                path.is_file(),
                "NODEGUARD_STATIC_BIN={} is not a file",
                path.display()
            );
            return path;
        }
        let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
            .join("static");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let args = [
            "build",
            "--release",
            "--locked",
            "--target",
            &triple,
            "-p",
            "nodeguard",
            "--bin",
            "nodeguard",
        ];
        let mut command = std::process::Command::new(&cargo);
        command
            .args(args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET");
        let shown = format!(
            "RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR={} {}",
            target_dir.display(),
            super::cmd::display(&cargo, &args)
        );
        let started = std::time::Instant::now();
        super::cmd::run_command(command, shown, std::time::Duration::from_secs(60 * 60)).ok();
        let _ = writeln!(
            std::io::stderr(),
            "note: static nodeguard built (or found up to date) in {:.1?}",
            started.elapsed()
        );
        target_dir.join(&triple).join("release/nodeguard")
    })
}
