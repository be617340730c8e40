//! The container image: the Dockerfile read as text, and the binary it builds run the way the
//! image runs it.
//!
//! - The Dockerfile pins every base by digest, builds `-p nodeguard --bin nodeguard --locked`
//!   statically (musl), and its final stage is a distroless (or scratch) base with that one
//!   file, no shell step, an ENTRYPOINT that runs exactly it, the OCI labels, and the DaemonSet's
//!   port. Each rule also has a negative control on a spoiled copy of the Dockerfile, so a
//!   parser that sees nothing cannot pass.
//! - "The image runs the binary the Dockerfile builds", without a Docker engine (none here): the
//!   same binary is built static for the available target (`+crt-static` on
//!   x86_64-unknown-linux-gnu, the builder stage uses musl), checked for the absence of a
//!   `PT_INTERP` program header, and run as the *only* file of a runc root filesystem (what a
//!   scratch or distroless/static image gives it) with the DaemonSet's privileges: host pid
//!   namespace, read-only root, only the capabilities the DaemonSet adds, no_new_privs.
//!
//! The static binary comes from `NODEGUARD_STATIC_BIN` when set (CI builds it once in its own
//! step), else it is built here once per test run into `target/static` (its own target dir, so
//! it never waits on the lock of the build running the tests).
//!
//! Needs root and runc for the container tests (harness rule: skipped with the reason, a
//! failure when `CI` is set). Run: `cargo test -p nodeguard --test image`.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::cmd;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile, parsed

/// One instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

#[derive(Debug, Clone)]
struct Stage {
    /// The FROM image, with `${ARG}`s replaced by their defaults.
    base: String,
    /// The FROM line as written.
    from: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&Instruction> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Dockerfile {
    /// ARGs declared before the first FROM, with their defaults.
    global_args: BTreeMap<String, Option<String>>,
    stages: Vec<Stage>,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        // Comment lines are dropped even inside a continued instruction, as Docker does.
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((n + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(trimmed);
                let (keyword, args) = joined
                    .split_once(char::is_whitespace)
                    .unwrap_or((&joined, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                    line: start,
                });
            }
        }
    }
    out
}

/// Replaces `${NAME}` and `$NAME` with `values[NAME]`; `None` when one has no value.
fn expand(text: &str, values: &BTreeMap<String, Option<String>>) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}')?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.push_str(values.get(name)?.as_deref()?);
        rest = tail;
    }
    out.push_str(rest);
    Some(out)
}

fn parse_arg(args: &str) -> (String, Option<String>) {
    match args.split_once('=') {
        Some((name, default)) => (
            name.trim().to_string(),
            Some(default.trim().trim_matches('"').to_string()),
        ),
        None => (args.trim().to_string(), None),
    }
}

fn parse_dockerfile(text: &str) -> Result<Dockerfile, String> {
    let mut global_args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        match (instruction.keyword.as_str(), stages.last_mut()) {
            ("ARG", None) => {
                let (name, default) = parse_arg(&instruction.args);
                global_args.insert(name, default);
            }
            ("FROM", _) => {
                let words: Vec<&str> = instruction
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (image, name) = match words.as_slice() {
                    [image] => (*image, None),
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*image, Some(name.to_string()))
                    }
                    _ => {
                        return Err(format!(
                            "line {}: FROM {}",
                            instruction.line, instruction.args
                        ))
                    }
                };
                let base = expand(image, &global_args).ok_or_else(|| {
                    format!(
                        "line {}: FROM {image} uses an ARG without a default",
                        instruction.line
                    )
                })?;
                stages.push(Stage {
                    base,
                    from: image.to_string(),
                    name,
                    instructions: Vec::new(),
                });
            }
            (_, Some(stage)) => stage.instructions.push(instruction),
            (keyword, None) => {
                return Err(format!(
                    "line {}: {keyword} before the first FROM",
                    instruction.line
                ))
            }
        }
    }
    Ok(Dockerfile {
        global_args,
        stages,
    })
}

/// Whether `image` is `NAME[:TAG]@sha256:<64 lowercase hex>`.
fn pinned_by_digest(image: &str) -> bool {
    image.split_once("@sha256:").is_some_and(|(name, digest)| {
        !name.is_empty()
            && digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `KEY="value" KEY2=value` of a LABEL instruction.
fn labels(args: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().to_string();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
            }
            None => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.push((key, value.to_string()));
        rest = tail.trim_start();
    }
    out
}

/// An exec-form (JSON array) ENTRYPOINT or CMD.
fn exec_form(args: &str) -> Option<Vec<String>> {
    serde_json::from_str(args).ok()
}

fn daemonset_container() -> Value {
    let text = std::fs::read_to_string(repo_root().join("manifests/daemonset.yaml"))
        .expect("read manifests/daemonset.yaml");
    let ds: Value = serde_yaml::from_str(&text).expect("daemonset.yaml is YAML");
    ds["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The DaemonSet's container port (the image must EXPOSE it).
fn daemonset_port() -> u16 {
    daemonset_container()["ports"][0]["containerPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("the DaemonSet's container port")
}

/// The capabilities the DaemonSet leaves the agent (it drops ALL and adds these), as the kernel
/// names them, sorted.
fn daemonset_capabilities() -> Vec<String> {
    let caps = &daemonset_container()["securityContext"]["capabilities"];
    assert_eq!(
        caps["drop"],
        json!(["ALL"]),
        "the DaemonSet drops ALL capabilities"
    );
    let mut added: Vec<String> = caps["add"]
        .as_array()
        .expect("securityContext.capabilities.add")
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().expect("capability name")))
        .collect();
    added.sort();
    added
}

/// Every rule the Dockerfile breaks; empty when it keeps them all.
fn dockerfile_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let df = match parse_dockerfile(text) {
        Ok(df) => df,
        Err(e) => return vec![e],
    };
    if df.stages.len() < 2 {
        problems.push(format!(
            "not a multi-stage build ({} stage)",
            df.stages.len()
        ));
        return problems;
    }
    for stage in &df.stages {
        if stage.base != "scratch" && !pinned_by_digest(&stage.base) {
            problems.push(format!(
                "FROM {} ({}) is not pinned by @sha256:<64 hex>",
                stage.from, stage.base
            ));
        }
    }
    for (name, default) in &df.global_args {
        let used_in_from = df.stages.iter().any(|s| {
            s.from.contains(&format!("${{{name}}}")) || s.from.contains(&format!("${name}"))
        });
        if used_in_from && !default.as_deref().is_some_and(pinned_by_digest) {
            problems.push(format!(
                "ARG {name}'s default {default:?} is not pinned by digest"
            ));
        }
    }

    let last = df.stages.last().unwrap();
    if !(last.base == "scratch" || last.base.contains("/distroless/")) {
        problems.push(format!(
            "the final stage's base {} is neither distroless nor scratch",
            last.base
        ));
    }
    for keyword in ["RUN", "SHELL", "ADD"] {
        for i in last.all(keyword) {
            problems.push(format!(
                "line {}: the final stage has {keyword} (no shell or downloads in the image)",
                i.line
            ));
        }
    }
    let copies = last.all("COPY");
    let (builder, source, dest) = match copies.as_slice() {
        [copy] => {
            let words: Vec<&str> = copy.args.split_whitespace().collect();
            let from = words
                .iter()
                .find_map(|w| w.strip_prefix("--from="))
                .map(str::to_string);
            let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
            match (from, paths.as_slice()) {
                (Some(from), [source, dest]) => (from, source.to_string(), dest.to_string()),
                _ => {
                    problems.push(format!(
                        "line {}: the final stage must COPY --from=<builder> one file: COPY {}",
                        copy.line, copy.args
                    ));
                    return problems;
                }
            }
        }
        _ => {
            problems.push(format!(
                "the final stage must COPY exactly one file from the builder, it has {} COPY",
                copies.len()
            ));
            return problems;
        }
    };
    let entrypoints = last.all("ENTRYPOINT");
    match entrypoints.as_slice() {
        [e] => {
            if exec_form(&e.args) != Some(vec![dest.clone()]) {
                problems.push(format!(
                    "ENTRYPOINT {} should run exactly the copied {dest} (exec form)",
                    e.args
                ));
            }
        }
        _ => problems.push("the final stage needs one ENTRYPOINT".into()),
    }

    // The builder: the named stage the binary comes from.
    let Some(build_stage) = df
        .stages
        .iter()
        .find(|s| s.name.as_deref() == Some(&builder))
    else {
        problems.push(format!("COPY --from={builder}: no stage of that name"));
        return problems;
    };
    let runs: Vec<&str> = build_stage
        .all("RUN")
        .into_iter()
        .map(|r| r.args.as_str())
        .collect();
    let build = runs.iter().find_map(|run| {
        let words: Vec<&str> = run.split_whitespace().collect();
        let at = words.windows(2).position(|w| w == ["cargo", "build"])?;
        let command: Vec<&str> = words[at..]
            .iter()
            .take_while(|w| !["&&", ";", "||"].contains(w))
            .copied()
            .collect();
        Some((*run, command))
    });
    match build {
        None => problems.push(format!("the {builder} stage runs no `cargo build`")),
        Some((run, command)) => {
            let has_pair = |flag: &str, value: &str| {
                command.windows(2).any(|w| w == [flag, value])
                    || command.contains(&format!("{flag}={value}").as_str())
            };
            for flag in ["--release", "--locked"] {
                if !command.contains(&flag) {
                    problems.push(format!("cargo build without {flag}: {}", command.join(" ")));
                }
            }
            if !has_pair("-p", "nodeguard") && !has_pair("--package", "nodeguard") {
                problems.push(format!(
                    "cargo build without -p nodeguard: {}",
                    command.join(" ")
                ));
            }
            if !has_pair("--bin", "nodeguard") {
                problems.push(format!(
                    "cargo build without --bin nodeguard: {}",
                    command.join(" ")
                ));
            }
            let target = command
                .windows(2)
                .find(|w| w[0] == "--target")
                .map(|w| w[1].to_string())
                .or_else(|| {
                    command
                        .iter()
                        .find_map(|w| w.strip_prefix("--target=").map(str::to_string))
                });
            match target {
                Some(t) if t.ends_with("-linux-musl") => {
                    let built = format!("target/{t}/release/nodeguard");
                    if !(run.contains(&built) && run.contains(&source)) {
                        problems.push(format!(
                            "the {builder} stage does not put {built} at {source}, which the \
                             final stage copies"
                        ));
                    }
                    let added = runs
                        .iter()
                        .any(|r| r.contains("rustup target add") && r.contains(&t));
                    if !added {
                        problems.push(format!("the {builder} stage never adds the {t} target"));
                    }
                }
                other => problems.push(format!(
                    "cargo build targets {other:?}, not a static musl target"
                )),
            }
        }
    }

    // Labels and the port, against the crate and the DaemonSet.
    let mut args: BTreeMap<String, Option<String>> = df.global_args.clone();
    for stage_arg in last.all("ARG") {
        let (name, default) = parse_arg(&stage_arg.args);
        args.insert(name, default);
    }
    let label_map: BTreeMap<String, String> = last
        .all("LABEL")
        .into_iter()
        .flat_map(|l| labels(&l.args))
        .map(|(k, v)| {
            let v = expand(&v, &args).unwrap_or(v);
            (k, v)
        })
        .collect();
    let repository = workspace_repository();
    let expected: [(&str, &str); 4] = [
        ("org.opencontainers.image.title", env!("CARGO_PKG_NAME")),
        (
            "org.opencontainers.image.version",
            env!("CARGO_PKG_VERSION"),
        ),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE"),
        ),
        ("org.opencontainers.image.source", &repository),
    ];
    for (key, want) in expected {
        match label_map.get(key) {
            Some(got) if got == want => {}
            Some(got) => problems.push(format!("LABEL {key}={got:?}, the crate says {want:?}")),
            None => problems.push(format!("LABEL {key} is missing")),
        }
    }
    let exposed: Vec<String> = last
        .all("EXPOSE")
        .into_iter()
        .flat_map(|e| {
            e.args
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let port = daemonset_port();
    if !exposed
        .iter()
        .any(|e| e.split('/').next() == Some(port.to_string().as_str()))
    {
        problems.push(format!(
            "EXPOSE {exposed:?} does not include the DaemonSet's port {port}"
        ));
    }
    problems
}

/// `repository` of the root Cargo.toml's `[workspace.package]` (the agent package does not
/// inherit it, so `CARGO_PKG_REPOSITORY` is empty).
fn workspace_repository() -> String {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("read Cargo.toml");
    let section = text
        .split("\n[")
        .find(|s| s.starts_with("workspace.package]"))
        .expect("[workspace.package] in Cargo.toml");
    section
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "repository").then(|| value.trim().trim_matches('"').to_string())
        })
        .expect("repository in [workspace.package]")
}

fn dockerfile_text() -> String {
    std::fs::read_to_string(repo_root().join("Dockerfile")).expect("read Dockerfile")
}

#[test]
fn the_dockerfile_builds_one_static_binary_onto_a_pinned_distroless_base() {
    let problems = dockerfile_problems(&dockerfile_text());
    assert!(
        problems.is_empty(),
        "Dockerfile:\n  {}",
        problems.join("\n  ")
    );
    // The port is the agent's own default as well as the DaemonSet's.
    assert_eq!(daemonset_port(), nodeguard_api::DEFAULT_PORT);
}

#[test]
fn the_dockerfile_checks_catch_what_they_are_for() {
    // Each spoiled copy must be refused for its own reason: the checks see what they claim to.
    let good = dockerfile_text();
    let df = parse_dockerfile(&good).expect("the Dockerfile parses");
    let final_base = df.stages.last().unwrap().base.clone();
    let replace = |from: &str, to: &str| {
        assert!(
            good.contains(from),
            "the Dockerfile no longer contains {from:?}"
        );
        good.replacen(from, to, 1)
    };
    let unpinned = {
        let (name, _) = final_base.split_once('@').unwrap();
        replace(&final_base, name)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("unpinned base", unpinned, "not pinned"),
        (
            "shell in the final stage",
            replace("COPY --from=builder", "RUN true\nCOPY --from=builder"),
            "has RUN",
        ),
        (
            "another entrypoint",
            replace(
                "ENTRYPOINT [\"/nodeguard\"]",
                "ENTRYPOINT [\"/bin/sh\", \"-c\", \"/nodeguard\"]",
            ),
            "ENTRYPOINT",
        ),
        ("not locked", replace("--locked ", ""), "without --locked"),
        (
            "dynamic target",
            good.replace("x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"),
            "not a static musl target",
        ),
        (
            "other port",
            replace(&format!("EXPOSE {}", daemonset_port()), "EXPOSE 8080"),
            "EXPOSE",
        ),
        (
            "missing label",
            replace(
                "org.opencontainers.image.licenses",
                "org.opencontainers.image.licence",
            ),
            "licenses is missing",
        ),
        (
            "single stage",
            // The global ARGs, then the final stage only.
            good.lines()
                .filter(|l| l.starts_with("ARG "))
                .chain(
                    good.lines()
                        .skip_while(|l| !l.starts_with("FROM ${RUNTIME_IMAGE}")),
                )
                .collect::<Vec<_>>()
                .join("\n"),
            "multi-stage",
        ),
    ];
    for (what, text, expect) in cases {
        let problems = dockerfile_problems(&text);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "{what}: expected a problem mentioning {expect:?}, got {problems:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The static binary

/// Why `bytes` is not a statically linked ELF executable: the interpreter it asks for, or what
/// is wrong with it.
fn static_elf(bytes: &[u8]) -> Result<(), String> {
    // ELF64 little-endian: e_type 0x10, e_phoff 0x20, e_phentsize 0x36, e_phnum 0x38.
    if bytes.len() < 0x40 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let e_type = u16_at(0x10);
    if e_type != 2 && e_type != 3 {
        return Err(format!("e_type {e_type} is not an executable"));
    }
    let (phoff, entsize, count) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..count {
        let at = phoff + i * entsize;
        let header = bytes
            .get(at..at + 0x38)
            .ok_or("program header table out of bounds")?;
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(header[..4].try_into().unwrap()) == PT_INTERP {
            let (offset, size) = (
                u64::from_le_bytes(header[0x08..0x10].try_into().unwrap()) as usize,
                u64::from_le_bytes(header[0x20..0x28].try_into().unwrap()) as usize,
            );
            let interpreter = bytes
                .get(offset..offset + size)
                .map(|s| {
                    String::from_utf8_lossy(s)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            return Err(format!(
                "dynamically linked: PT_INTERP asks for {interpreter}"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The binary as the only file of a container

/// A runc bundle whose root holds only `/nodeguard` (and the empty mount points runc mounts
/// /proc, /sys and /dev on): a scratch image. Deleted with its container on drop.
struct ScratchBundle {
    dir: tempfile::TempDir,
    runc_root: PathBuf,
    id: String,
}

impl ScratchBundle {
    fn new(binary: &Path) -> ScratchBundle {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-scratch-")
            .tempdir()
            .expect("bundle tempdir");
        let rootfs = dir.path().join("rootfs");
        for mount_point in ["proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(mount_point)).expect("mount point");
        }
        let target = rootfs.join("nodeguard");
        std::fs::copy(binary, &target).expect("copy the binary into the rootfs");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let runc_root = dir.path().join("runc-root");
        ScratchBundle {
            runc_root,
            id: format!("nodeguard-scratch-{}", support::random_hex(6)),
            dir,
        }
    }

    /// Every file of the root filesystem, relative to it.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let root = self.dir.path().join("rootfs");
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out
    }

    /// Runs `args` in the foreground as the DaemonSet runs the agent; stdout is captured.
    fn run(&self, args: &[&str]) -> cmd::Output {
        let bundle = self.dir.path();
        let config_path = bundle.join("config.json");
        let _ = std::fs::remove_file(&config_path);
        cmd::run_ok("runc", &["spec", "--bundle", bundle.to_str().unwrap()]);
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        let caps = daemonset_capabilities();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["process"]["user"] = json!({"uid": 0, "gid": 0});
        config["process"]["noNewPrivileges"] = json!(true);
        config["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": [], "ambient": [],
        });
        config["root"] = json!({"path": "rootfs", "readonly": true});
        let namespaces = config["linux"]["namespaces"]
            .as_array_mut()
            .expect("runc spec lists namespaces");
        let before = namespaces.len();
        namespaces.retain(|ns| ns["type"] != "pid");
        assert_eq!(
            namespaces.len() + 1,
            before,
            "runc spec had a pid namespace to drop"
        );
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        let runc_args = [
            "--root",
            self.runc_root.to_str().unwrap(),
            "run",
            "--bundle",
            bundle.to_str().unwrap(),
            &self.id,
        ];
        let mut command = std::process::Command::new("runc");
        command.args(runc_args);
        let output = cmd::run_command(
            command,
            cmd::display("runc", &runc_args),
            Duration::from_secs(300),
        );
        // A container that exited is still listed until deleted; the next run reuses the id.
        self.delete();
        output
    }

    fn delete(&self) {
        let root = self.runc_root.to_str().unwrap();
        let _ = std::process::Command::new("runc")
            .args(["--root", root, "delete", "-f", &self.id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for ScratchBundle {
    fn drop(&mut self) {
        self.delete();
    }
}

#[test]
fn the_static_binary_has_no_program_interpreter() {
    let bin = support::deployment::static_binary();
    let bytes = std::fs::read(bin).expect("read the static binary");
    if let Err(why) = static_elf(&bytes) {
        panic!("{} is not static: {why}", bin.display());
    }
    // The check itself tells a dynamic executable from a static one.
    let dynamic = std::fs::read(env!("CARGO_BIN_EXE_nodeguard")).unwrap();
    let why = static_elf(&dynamic).expect_err("the test build is dynamically linked");
    assert!(why.contains("ld-linux"), "{why}");
}

#[test]
fn the_binary_alone_in_a_container_prints_its_version() {
    if !support::require_containers() {
        return;
    }
    let bundle = ScratchBundle::new(support::deployment::static_binary());
    assert_eq!(
        bundle.files(),
        ["nodeguard"],
        "the rootfs holds only the binary"
    );
    let out = bundle.run(&["/nodeguard", "--version"]).ok();
    assert_eq!(
        out.stdout.trim(),
        format!("nodeguard {}", env!("CARGO_PKG_VERSION")),
        "{out}"
    );
}

#[test]
fn the_binary_alone_in_a_container_scans_the_node_with_the_daemonsets_privileges() {
    if !support::require_containers() {
        return;
    }
    let bin = support::deployment::static_binary();
    let bundle = ScratchBundle::new(bin);
    assert_eq!(
        bundle.files(),
        ["nodeguard"],
        "the rootfs holds only the binary"
    );
    let out = bundle.run(&["/nodeguard", "scan", "--no-fs", "--output", "json"]);
    assert!(
        out.success(),
        "the scan in a scratch container failed\n{out}"
    );
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the scan did not print a JSON report ({e})\n{out}"));
    let processes = report["processes"].as_array().expect("report.processes");
    assert!(
        processes.len() > 10,
        "only {} processes: the host pid namespace should show the whole node\n{out}",
        processes.len()
    );
    let by_pid = |pid: i64| processes.iter().find(|p| p["pid"].as_i64() == Some(pid));

    // This test's own process, a host process, is seen and hashed from inside the container.
    let me = i64::from(std::process::id());
    let mine = by_pid(me).unwrap_or_else(|| panic!("the test's own pid {me} is not in the report"));
    let my_comm = support::oracle::read_trimmed(Path::new("/proc/self/comm"));
    assert_eq!(mine["command"], my_comm.as_str(), "{mine}");
    let my_exe = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(
        mine["sha256"].as_str(),
        Some(support::oracle::sha256sum(&my_exe).as_str()),
        "the test binary's digest, read through /proc/PID/exe with only the DaemonSet's \
         capabilities: {mine}"
    );
    assert!(
        mine["container_id"].is_null(),
        "the test runs on the host: {mine}"
    );

    // The agent itself: the copied binary, with exactly the DaemonSet's privileges. In a pid
    // namespace of its own it would be pid 1 (the container's init); in the host's it is not.
    let expected_digest = support::oracle::sha256sum(bin);
    let agent = processes
        .iter()
        .find(|p| p["exe"] == "/nodeguard")
        .unwrap_or_else(|| panic!("the agent's own process is not in the report\n{out}"));
    assert_ne!(
        agent["pid"], 1,
        "the agent runs in the host pid namespace: {agent}"
    );
    if support::host_pid1_readable() {
        let init = by_pid(1).expect("the host's pid 1 is in the report");
        assert_ne!(init["exe"], "/nodeguard", "{init}");
    }
    assert_eq!(
        agent["sha256"].as_str(),
        Some(expected_digest.as_str()),
        "{agent}"
    );
    let mut effective: Vec<&str> = agent["capabilities"]["effective"]
        .as_array()
        .expect("capabilities.effective")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    effective.sort_unstable();
    assert_eq!(effective, daemonset_capabilities(), "{agent}");
    assert_eq!(agent["no_new_privs"], true, "{agent}");
    assert_eq!(agent["uid"], 0, "{agent}");
}
