//! `nodeguard digests import` and the policy's `digest_bundles`, end to end.
//!
//! Import runs on real artifacts (the real-node bed's built Kubernetes binaries when present,
//! else coreutils' own) packed with the real `tar`, and every digest is compared with what
//! `sha256sum`/`sha512sum` print. The scan tests start real host processes and real runc
//! containers from a copy of a binary and from a tampered copy of the same name, and scan a
//! proc root holding only those processes, so other engineers' processes and containers on
//! the machine cannot disturb them.
//!
//! Run: `cargo test -p nodeguard --test digests`.

mod support;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::cmd::{self, Output};
use support::container::ContainerSpec;
use support::fakeproc::FakeProc;
use support::image::Image;
use support::oracle;
use support::scan::Scan;

/// Where tests/realnode/build.sh leaves the Kubernetes binaries it builds.
const REALNODE_BIN: &str = "/var/cache/nodeguard-realnode/v1.20.2/bin";

fn nodeguard(args: &[&str]) -> Output {
    let bin = support::nodeguard_bin();
    let mut command = Command::new(bin);
    command.args(args);
    cmd::run_command(command, cmd::display(bin, args), Duration::from_secs(120))
}

fn import(args: &[&str]) -> Output {
    let mut all = vec!["digests", "import"];
    all.extend_from_slice(args);
    nodeguard(&all)
}

fn read_bundle(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `sha256sum`/`sha512sum` of `file` run in `dir` with `flags` (`-b` for the binary form),
/// written to `out`: what a release's checksum files are.
fn sum_file(tool: &str, flags: &[&str], dir: &Path, files: &[&str], out: &Path) {
    let mut command = Command::new(tool);
    command.args(flags).args(files).current_dir(dir);
    let output = cmd::run_command(
        command,
        format!("{tool} {flags:?} {files:?}"),
        cmd::DEFAULT_TIMEOUT,
    )
    .ok();
    fs::write(out, output.stdout).unwrap();
}

/// The binaries to release: the real-node bed's Kubernetes builds when built, else coreutils'.
/// Under `CI` the bed's binaries must be there.
fn release_binaries() -> Vec<(String, PathBuf)> {
    let bed = Path::new(REALNODE_BIN);
    let names = ["kubectl", "pause", "kubelet"];
    if names.iter().all(|n| bed.join(n).is_file()) {
        return names.iter().map(|n| (n.to_string(), bed.join(n))).collect();
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but {REALNODE_BIN} lacks the bed's binaries: run tests/realnode/build.sh"
        );
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "note: {REALNODE_BIN} not built (tests/realnode/build.sh); releasing coreutils binaries instead"
    );
    ["sleep", "true", "cat"]
        .iter()
        .map(|n| (n.to_string(), support::which(n).expect("coreutils")))
        .collect()
}

/// A Kubernetes-shaped release made with the real tools: `kubernetes/server/bin/*` in a
/// `.tar.gz`, its `.sha512`, per-binary `.sha256`/`.sha512` files holding only the digest,
/// and `sha256sum` (text form) and `sha512sum -b` (binary form) output.
struct Release {
    dir: tempfile::TempDir,
    binaries: Vec<(String, PathBuf)>,
}

impl Release {
    fn build() -> Release {
        let dir = tempfile::Builder::new()
            .prefix("nodeguard-release-")
            .tempdir()
            .unwrap();
        let bin = dir.path().join("kubernetes/server/bin");
        fs::create_dir_all(&bin).unwrap();
        let mut binaries = Vec::new();
        for (name, src) in release_binaries() {
            let dst = bin.join(&name);
            fs::copy(&src, &dst).unwrap();
            binaries.push((name, dst));
        }
        let tarball = dir.path().join("kubernetes-server-linux-amd64.tar.gz");
        let mut tar = Command::new("tar");
        tar.args(["-czf", s(&tarball), "kubernetes"])
            .current_dir(dir.path());
        cmd::run_command(tar, "tar -czf … kubernetes".into(), cmd::DEFAULT_TIMEOUT).ok();
        // The tarball's published digest, as dl.k8s.io serves it: the bare hex.
        let digest = oracle::sha512sum(&tarball);
        fs::write(
            dir.path()
                .join("kubernetes-server-linux-amd64.tar.gz.sha512"),
            digest,
        )
        .unwrap();
        let sums = dir.path().join("sums");
        fs::create_dir(&sums).unwrap();
        for (name, path) in &binaries {
            fs::write(
                sums.join(format!("{name}.sha256")),
                oracle::sha256sum(path) + "\n",
            )
            .unwrap();
            fs::write(
                sums.join(format!("{name}.sha512")),
                oracle::sha512sum(path) + "\n",
            )
            .unwrap();
        }
        let names: Vec<&str> = binaries.iter().map(|(n, _)| n.as_str()).collect();
        sum_file(
            "sha256sum",
            &[],
            &bin,
            &names,
            &dir.path().join("SHA256SUMS"),
        );
        sum_file(
            "sha512sum",
            &["-b"],
            &bin,
            &names,
            &dir.path().join("SHA512SUMS"),
        );
        Release { dir, binaries }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Every binary of the release has, in the bundle, exactly the digests `sha256sum` and
/// `sha512sum` print, whichever input gave them, and each source is recorded.
#[test]
fn import_matches_sha256sum_and_sha512sum_for_every_input_form() {
    let release = Release::build();
    let tarball = release.path("kubernetes-server-linux-amd64.tar.gz");
    let tar_sum = release.path("kubernetes-server-linux-amd64.tar.gz.sha512");
    let bundle_path = release.path("bundle.json");
    let out = import(&[
        s(&tarball),
        s(&tar_sum),
        s(&release.path("sums")),
        s(&release.path("SHA256SUMS")),
        s(&release.path("SHA512SUMS")),
        "-o",
        s(&bundle_path),
    ]);
    assert!(out.success(), "{out}");
    let bundle = read_bundle(&bundle_path);
    assert_eq!(bundle["nodeguard_digest_bundle"], 1);
    assert_eq!(bundle["nodeguard_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        bundle["imported_at"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z'),
        "{bundle}"
    );

    for (name, path) in &release.binaries {
        let entries = bundle["binaries"][name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} missing\n{bundle}"));
        assert_eq!(
            entries.len(),
            1,
            "one build of {name}: every source agrees\n{bundle}"
        );
        let e = &entries[0];
        assert_eq!(e["sha256"], oracle::sha256sum(path).as_str(), "{name}");
        assert_eq!(e["sha512"], oracle::sha512sum(path).as_str(), "{name}");
        let sources: Vec<String> = e["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let has = |want: &str| sources.iter().any(|s| s.contains(want));
        assert!(
            has(&format!("\"member\":\"kubernetes/server/bin/{name}\"")),
            "{sources:?}"
        );
        assert!(
            has(&format!("sums/{name}.sha256")) && has(&format!("sums/{name}.sha512")),
            "{sources:?}"
        );
        assert!(
            has("SHA256SUMS\",\"line\"") && has("SHA512SUMS\",\"line\""),
            "{sources:?}"
        );
    }
    // The tarball itself, checked against its published .sha512 (one entry: they agree).
    let t = &bundle["binaries"]["kubernetes-server-linux-amd64.tar.gz"];
    assert_eq!(t.as_array().map(Vec::len), Some(1), "{t}");
    assert_eq!(t[0]["sha512"], oracle::sha512sum(&tarball).as_str());

    // The bundle loads in a policy (relative to the policy's directory).
    fs::write(
        release.path("policy.yaml"),
        "digest_bundles: [bundle.json]\n",
    )
    .unwrap();
    let check = nodeguard(&["policy", "check", s(&release.path("policy.yaml"))]);
    assert!(check.success(), "{check}");
    let names = release.binaries.len() + 1;
    assert!(
        check
            .stdout
            .contains(&format!("1 digest bundles ({names} binary names)")),
        "{check}"
    );
}

/// A tarball whose published digest does not match, or two sources with different digests
/// for one name, is refused naming both sources; `--allow-several` keeps both builds.
#[test]
fn conflicting_sources_are_refused_unless_several_builds_are_allowed() {
    let release = Release::build();
    let tarball = release.path("kubernetes-server-linux-amd64.tar.gz");
    let tar_sum = release.path("kubernetes-server-linux-amd64.tar.gz.sha512");
    fs::write(&tar_sum, "0".repeat(128) + "\n").unwrap();
    let out = import(&[s(&tarball), s(&tar_sum), "-o", s(&release.path("b.json"))]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(s(&tar_sum)) && out.stderr.contains(s(&tarball)),
        "the error names both sources\n{out}"
    );
    assert!(!release.path("b.json").exists(), "no bundle on error");

    // Two releases of one binary name: a second build in a directory of its own.
    let (name, path) = &release.binaries[0];
    let other = release.path("v2");
    fs::create_dir(&other).unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes.extend_from_slice(b"\0second build");
    fs::write(other.join(name), &bytes).unwrap();
    let out = import(&[
        s(&release.path("sums")),
        s(&other),
        "-o",
        s(&release.path("b.json")),
    ]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("--allow-several"), "{out}");
    let out = import(&[
        s(&release.path("sums")),
        s(&other),
        "--allow-several",
        "-o",
        s(&release.path("b.json")),
    ]);
    assert!(out.success(), "{out}");
    let bundle = read_bundle(&release.path("b.json"));
    let digests: Vec<&str> = bundle["binaries"][name]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["sha256"].as_str())
        .collect();
    assert_eq!(
        digests,
        [
            oracle::sha256sum(path),
            oracle::sha256sum(&other.join(name))
        ],
        "{bundle}"
    );
}

/// Malformed checksum lines name the file and line; hostile inputs (FIFO, huge, binary
/// garbage, a corrupt tarball, a symlink out of a directory) fail fast or are skipped.
#[test]
fn malformed_and_hostile_inputs_are_clear_errors_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let out_bundle = p("out.json");
    let o = s(&out_bundle);
    let h = "ab".repeat(32);

    fs::write(p("SHA256SUMS"), format!("{h}  kubelet\n\n{h} kubectl\n")).unwrap();
    let out = import(&[s(&p("SHA256SUMS")), "-o", o]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "{}:3: malformed checksum line",
            p("SHA256SUMS").display()
        )),
        "{out}"
    );
    fs::write(p("kubelet.sha512"), format!("{h}\n")).unwrap();
    let out = import(&[s(&p("kubelet.sha512")), "-o", o]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("kubelet.sha512:1: malformed checksum"),
        "{out}"
    );

    // A FIFO as a checksum file: refused at once, not read.
    let fifo = p("kube-proxy.sha256");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let out = import(&[s(&fifo), "-o", o]);
    assert!(
        !out.success() && out.stderr.contains("not a regular file (fifo)"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "import blocked on a FIFO"
    );

    // Huge (sparse): refused by its size.
    let huge = p("SHA512SUMS");
    fs::File::create(&huge).unwrap().set_len(1 << 36).unwrap();
    let out = import(&[s(&huge), "-o", o]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "{}: 68719476736 bytes is over the 4194304-byte",
            huge.display()
        )),
        "{out}"
    );

    // Binary garbage under a checksum file's name.
    let garbage = p("checksums.txt");
    fs::write(&garbage, b"\x7fELF\x02\x01\x01\0\0\0\xff\xfe\n\x00\x01").unwrap();
    let out = import(&[s(&garbage), "-o", o]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("checksums.txt:1:"), "{out}");

    // A corrupt tarball.
    let tgz = p("kubernetes-node-linux-amd64.tar.gz");
    fs::write(&tgz, b"\x1f\x8b\x08\0garbage that is not deflate").unwrap();
    let out = import(&[s(&tgz), "-o", o]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("kubernetes-node-linux-amd64.tar.gz"),
        "{out}"
    );

    // A directory holding a FIFO and a symlink out of it: neither is read, the regular
    // file is.
    let art = p("artifacts");
    fs::create_dir(&art).unwrap();
    let c = std::ffi::CString::new(s(&art.join("fifo"))).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/etc/passwd", art.join("passwd")).unwrap();
    let sleep = support::which("sleep").unwrap();
    fs::copy(&sleep, art.join("sleep")).unwrap();
    let started = Instant::now();
    let out = import(&[s(&art), "-o", o]);
    assert!(out.success(), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "import blocked"
    );
    let bundle = read_bundle(&out_bundle);
    let names: Vec<&String> = bundle["binaries"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["sleep"], "{bundle}");
    assert_eq!(
        bundle["binaries"]["sleep"][0]["sha256"],
        oracle::sha256sum(&sleep).as_str()
    );
}

/// A child that keeps running until dropped.
struct Running(Child);

impl Running {
    fn start(exe: &Path) -> Running {
        let child = Command::new(exe)
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let pid = child.id();
        support::wait_for(
            "the process to exec",
            Duration::from_secs(10),
            || match fs::read_link(format!("/proc/{pid}/exe")) {
                Ok(p) if p == exe => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        Running(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies `src` to `dst` (executable), appending `tail` (a tampered build that still runs).
fn copy_exe(src: &Path, dst: &Path, tail: &[u8]) {
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let mut bytes = fs::read(src).unwrap();
    bytes.extend_from_slice(tail);
    fs::write(dst, bytes).unwrap();
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).unwrap();
}

fn scan_pids(pids: &[i32], policy: &Path) -> Scan {
    scan_pids_with(pids, policy, &[])
}

fn scan_pids_with(pids: &[i32], policy: &Path, extra: &[&str]) -> Scan {
    let proc_root = FakeProc::with_pids(pids);
    let mut args = vec![
        "--no-fs",
        "--proc-root",
        proc_root.path_str(),
        "--config",
        s(policy),
    ];
    args.extend_from_slice(extra);
    Scan::run(&args)
}

fn host_findings(scan: &Scan, pid: i32) -> Vec<&Value> {
    scan.findings()
        .iter()
        .filter(|f| f["container_id"].is_null() && f["pid"] == pid)
        .collect()
}

/// A host process run from the released binary raises nothing; one of the same name from a
/// different binary raises `unexpected_binary_hash` naming the bundle and its source — with a
/// SHA-256 bundle from a directory, and with a SHA-512-only bundle from `sha512sum` output,
/// which makes the scan compute SHA-512 by itself. Past the hashing limit both are
/// `unverifiable_binary` (critical), as a trusted path would be.
#[test]
fn host_processes_are_checked_against_the_bundle_by_name() {
    require_containers!(); // root, for the private proc root's bind mounts
    let dir = tempfile::tempdir().unwrap();
    let name = format!("ngd-tool-{}", support::random_hex(4));
    let sleep = support::which("sleep").unwrap();
    let released = dir.path().join("release").join(&name);
    copy_exe(&sleep, &released, b"");
    let genuine = dir.path().join("usr/bin").join(&name);
    copy_exe(&sleep, &genuine, b"");
    let tampered = dir.path().join("opt/bin").join(&name);
    copy_exe(&sleep, &tampered, b"\0tampered");

    let bundle = dir.path().join("bundle.json");
    let out = import(&[s(&dir.path().join("release")), "-o", s(&bundle)]);
    assert!(out.success(), "{out}");
    // Only SHA-512, from sha512sum's own output.
    let sums = dir.path().join("release.sha512sum");
    sum_file(
        "sha512sum",
        &[],
        &dir.path().join("release"),
        &[&name],
        &sums,
    );
    let bundle512 = dir.path().join("bundle512.json");
    let out = import(&[s(&sums), "-o", s(&bundle512)]);
    assert!(out.success(), "{out}");
    assert!(read_bundle(&bundle512)["binaries"][&name][0]["sha256"].is_null());

    let good = Running::start(&genuine);
    let bad = Running::start(&tampered);
    for (bundle, source, algo, digest) in [
        (
            &bundle,
            s(&released).to_string(),
            "sha256",
            oracle::sha256sum(&tampered),
        ),
        (
            &bundle512,
            format!("{} line 1", s(&sums)),
            "sha512",
            oracle::sha512sum(&tampered),
        ),
    ] {
        let policy = dir.path().join("policy.yaml");
        fs::write(&policy, format!("digest_bundles: [{}]\n", s(bundle))).unwrap();
        let scan = scan_pids(&[good.pid(), bad.pid()], &policy);
        let summary = || scan.summary();
        assert!(
            host_findings(&scan, good.pid()).is_empty(),
            "the released binary raises nothing\n{}",
            summary()
        );
        let found = host_findings(&scan, bad.pid());
        assert_eq!(found.len(), 1, "{}", summary());
        let f = found[0];
        assert_eq!(f["kind"], "unexpected_binary_hash", "{}", summary());
        assert_eq!(f["severity"], "critical");
        assert_eq!(f["subject"], s(&tampered));
        let message = f["message"].as_str().unwrap();
        for part in [
            format!("{algo} {digest}"),
            format!("not a digest of {name} in digest bundle {}", s(bundle)),
            format!("(from {source})"),
        ] {
            assert!(message.contains(&part), "message lacks {part:?}: {message}");
        }
    }

    // Past the hashing limit nothing can be compared: a bundled name is then
    // unverifiable_binary at critical, for the genuine and the tampered process alike.
    let policy = dir.path().join("policy.yaml");
    fs::write(&policy, format!("digest_bundles: [{}]\n", s(&bundle))).unwrap();
    let scan = scan_pids_with(
        &[good.pid(), bad.pid()],
        &policy,
        &["--max-hash-size", "4096"],
    );
    for (pid, path) in [(good.pid(), &genuine), (bad.pid(), &tampered)] {
        let found = host_findings(&scan, pid);
        assert_eq!(found.len(), 1, "{}", scan.summary());
        assert_eq!(
            found[0]["kind"],
            "unverifiable_binary",
            "{}",
            scan.summary()
        );
        assert_eq!(found[0]["severity"], "critical");
        assert_eq!(found[0]["subject"], s(path));
        let message = found[0]["message"].as_str().unwrap();
        assert!(
            message.contains("a binary named in a digest bundle whose digest cannot be checked"),
            "{message}"
        );
    }
}

/// The same in runc containers with `digest_bundles_apply_to: all`: a container running the
/// released busybox (as `/bin/sleep`) raises nothing, one whose image carries a tampered
/// busybox raises `unexpected_binary_hash` for its container. By default bundles check host
/// processes and the containers of `kube-system` pods only, so the tampered container (no
/// pod at all here) raises nothing: a workload's own copy of a bundled name is not the
/// node's platform binary.
#[test]
fn container_processes_are_checked_against_the_bundle_by_name_when_asked() {
    require_containers!();
    let dir = tempfile::tempdir().unwrap();
    let genuine_image = Image::busybox();
    let release = dir.path().join("release");
    // The containers run /bin/sleep, a hard link to busybox: the bundle's name is the
    // executable's file name as the process runs it.
    copy_exe(
        &genuine_image.path("/bin/busybox"),
        &release.join("sleep"),
        b"",
    );
    let bundle = dir.path().join("bundle.json");
    let out = import(&[s(&release), "-o", s(&bundle)]);
    assert!(out.success(), "{out}");
    let by_default_policy = dir.path().join("default-scope.yaml");
    fs::write(
        &by_default_policy,
        format!("digest_bundles: [{}]\n", s(&bundle)),
    )
    .unwrap();
    let policy = dir.path().join("policy.yaml");
    fs::write(
        &policy,
        format!(
            "digest_bundles: [{}]\ndigest_bundles_apply_to: all\n",
            s(&bundle)
        ),
    )
    .unwrap();

    let tampered_image = Image::busybox_owned("digests-tampered");
    let mut bytes = fs::read(tampered_image.path("/bin/busybox")).unwrap();
    bytes.extend_from_slice(b"\0tampered");
    // Rewritten in place: the applets are hard links to it.
    fs::write(tampered_image.path("/bin/busybox"), &bytes).unwrap();
    let tampered_digest = oracle::sha256sum(&tampered_image.path("/bin/busybox"));

    let good = ContainerSpec::new(genuine_image).start();
    let bad = ContainerSpec::new(&tampered_image).start();
    let by_default = scan_pids(&[good.init_pid, bad.init_pid], &by_default_policy);
    let sha = by_default.process(&bad, bad.init_pid)["sha256"].clone();
    assert_eq!(sha, tampered_digest.as_str(), "{}", by_default.seen(&bad));
    assert!(
        !by_default.has_finding(&bad, "unexpected_binary_hash", None),
        "by default bundles check the host and kube-system's pods only: {}",
        by_default.seen(&bad)
    );
    let scan = scan_pids(&[good.init_pid, bad.init_pid], &policy);
    assert!(
        !scan.has_finding(&good, "unexpected_binary_hash", None),
        "{}",
        scan.seen(&good)
    );
    let found = scan.findings_of(&bad.id, "unexpected_binary_hash", Some("/bin/sleep"));
    assert_eq!(
        found.len(),
        1,
        "{}\npolicy: {}\nbundle: {}",
        scan.seen(&bad),
        fs::read_to_string(&policy).unwrap(),
        fs::read_to_string(&bundle).unwrap()
    );
    assert_eq!(
        found[0]["sha256"],
        tampered_digest.as_str(),
        "{}",
        scan.seen(&bad)
    );
    let message = found[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "digest bundle {} (from {})",
            s(&bundle),
            s(&release.join("sleep"))
        )),
        "{message}"
    );
    drop(good);
    drop(bad);
    drop(tampered_image);
}

/// Release files named by architecture (`runc.amd64`) are recorded under the name they are
/// installed as with `--rename`, from `sha256sum` output as the project publishes it.
#[test]
fn rename_records_a_binary_under_its_installed_name() {
    let dir = tempfile::tempdir().unwrap();
    let sleep = support::which("sleep").unwrap();
    copy_exe(&sleep, &dir.path().join("runc.amd64"), b"");
    let sums = dir.path().join("runc.sha256sum");
    sum_file("sha256sum", &[], dir.path(), &["runc.amd64"], &sums);
    let bundle = dir.path().join("runc.json");
    let out = import(&[s(&sums), "--rename", "runc.amd64=runc", "-o", s(&bundle)]);
    assert!(out.success(), "{out}");
    let b = read_bundle(&bundle);
    let names: Vec<&String> = b["binaries"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["runc"], "{b}");
    assert_eq!(
        b["binaries"]["runc"][0]["sha256"],
        oracle::sha256sum(&sleep).as_str()
    );
    // --only keeps the names asked for (a release directory holds more than binaries), and
    // refuses one no input has.
    fs::write(dir.path().join("README.md"), "runc release\n").unwrap();
    let out = import(&[
        s(dir.path()),
        "--rename",
        "runc.amd64=runc",
        "--only",
        "runc",
        "-o",
        s(&bundle),
    ]);
    assert!(out.success(), "{out}");
    let b = read_bundle(&bundle);
    let names: Vec<&String> = b["binaries"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["runc"], "README.md is left out: {b}");
    let sources = b["binaries"]["runc"][0]["sources"].to_string();
    assert!(
        sources.contains("runc.amd64\"}") && sources.contains("runc.sha256sum\",\"line\":1"),
        "the artifact and its checksum line agree: {sources}"
    );
    let out = import(&[s(&sums), "--only", "runc", "-o", s(&bundle)]);
    assert!(
        !out.success() && out.stderr.contains("--only runc: no input"),
        "{out}"
    );
    let out = import(&[
        s(&sums),
        "--rename",
        "runc.amd64=bin/runc",
        "-o",
        s(&bundle),
    ]);
    assert!(
        !out.success() && out.stderr.contains("not a file name"),
        "{out}"
    );
}

/// A release directory as projects publish them: the checksum list edited on Windows (a
/// byte-order mark, CRLF line ends) and its detached signature next to it. The signature is
/// not taken for a checksum list; the list's digest agrees with the artifact's.
#[test]
fn signatures_and_windows_line_ends_do_not_break_a_release_directory() {
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("release");
    let sleep = support::which("sleep").unwrap();
    copy_exe(&sleep, &rel.join("runc.amd64"), b"");
    let plain = dir.path().join("plain");
    sum_file("sha256sum", &[], &rel, &["runc.amd64"], &plain);
    let text = fs::read_to_string(&plain).unwrap();
    fs::write(
        rel.join("SHA256SUMS"),
        format!("\u{feff}{}", text.replace('\n', "\r\n")),
    )
    .unwrap();
    fs::write(
        rel.join("SHA256SUMS.asc"),
        "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n-----END PGP SIGNATURE-----\n",
    )
    .unwrap();
    let bundle = dir.path().join("b.json");
    let out = import(&[
        s(&rel),
        "--rename",
        "runc.amd64=runc",
        "--only",
        "runc",
        "-o",
        s(&bundle),
    ]);
    assert!(out.success(), "{out}");
    let b = read_bundle(&bundle);
    let entries = b["binaries"]["runc"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{b}");
    assert_eq!(entries[0]["sha256"], oracle::sha256sum(&sleep).as_str());
    let sources = entries[0]["sources"].to_string();
    assert!(sources.contains("SHA256SUMS\",\"line\":1"), "{sources}");
}
