//! What a user sees of the CLI: `nodeguard scan`'s table leads with the summary and the worst
//! findings and fits the terminal, `| head` ends quietly, errors say their cause once, logs off
//! a terminal carry no colour codes, `query` takes its flags after the subcommand, and
//! `policy check` reads the ConfigMap the DaemonSet ships.

mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use support::cmd::{self, Output};
use support::container::{Container, ContainerSpec};
use support::fakeproc::FakeProc;
use support::image::Image;
use support::scan::severity_rank;

fn nodeguard(args: &[&str]) -> Output {
    cmd::run(support::nodeguard_bin(), args)
}

/// Scan arguments over a proc root that holds only `c`'s processes (and pid 1).
fn scan_args<'a>(proc_root: &'a FakeProc, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["scan", "--proc-root", proc_root.path_str()];
    if !support::host_pid1_readable() {
        args.extend_from_slice(&["--host-root", "/"]);
    }
    args.extend_from_slice(extra);
    args
}

/// A busybox container with a setuid file planted in its writable layer (a high finding) and
/// a path long enough that its finding's line must be cut.
fn planted_container() -> Container {
    let c = ContainerSpec::new(Image::busybox()).start();
    let dir = c.upper_dir.join(format!("tmp/{}", "d".repeat(150)));
    fs::create_dir_all(&dir).unwrap();
    let planted = dir.join("rootshell");
    fs::copy(support::image::busybox_binary().unwrap(), &planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o4755)).unwrap();
    c
}

#[test]
fn scan_table_leads_with_the_summary_worst_first_and_fits_120_columns() {
    require_containers!();
    let c = planted_container();
    let proc_root = FakeProc::with_pids(&c.pids());

    let json = nodeguard(&scan_args(&proc_root, &["-o", "json"]));
    assert!(matches!(json.code, Some(0)), "{json}");
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["severity"] == "high"
            && f["kind"] == "setuid_file"
            && f["path"].as_str().is_some_and(|p| p.len() > 150)),
        "JSON keeps the whole path of the planted file\n{json}"
    );

    // Not a terminal and no COLUMNS: 120 columns.
    let mut command = Command::new(support::nodeguard_bin());
    command
        .args(scan_args(&proc_root, &[]))
        .env_remove("COLUMNS");
    let table = cmd::run_command(
        command,
        "nodeguard scan".into(),
        std::time::Duration::from_secs(120),
    );
    assert_eq!(table.code, Some(0), "{table}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("node "), "{}", table.stdout);
    let want = format!("FINDINGS {}: ", findings.len());
    assert!(
        lines[2].starts_with(&want),
        "the summary comes right after the header line: want {want:?}\n{}",
        table.stdout
    );
    let count = |s: &str| findings.iter().filter(|f| f["severity"] == s).count();
    assert!(
        lines[2].contains(&format!(
            "critical {}, high {}, medium {}, low {}",
            count("critical"),
            count("high"),
            count("medium"),
            count("low")
        )),
        "{}",
        lines[2]
    );
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap();
    assert!(
        longest <= 120,
        "a line of {longest} characters\n{}",
        table.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with('…') && l.contains("dddddddddd")),
        "the planted file's long line is cut with an ellipsis\n{}",
        table.stdout
    );

    // Finding lines (indented, SEVERITY first) are worst first within the container's group,
    // and the high one comes before any medium one; low ones are counted, not listed.
    let ranks: Vec<u8> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["CRITICAL", "HIGH", "MEDIUM", "LOW"].contains(w))
        .map(|w| severity_rank(&w.to_lowercase()))
        .collect();
    assert_eq!(
        ranks.len(),
        findings.len() - count("low"),
        "{}",
        table.stdout
    );
    assert!(
        ranks.windows(2).all(|w| w[0] >= w[1]),
        "worst first: {ranks:?}\n{}",
        table.stdout
    );
    // Inventories only when asked for.
    assert!(
        !table.stdout.contains("CONTAINER PROCESSES"),
        "{}",
        table.stdout
    );
    let full = nodeguard(&scan_args(&proc_root, &["--inventory"]));
    assert!(
        full.stdout.contains("CONTAINER PROCESSES") && full.stdout.contains("\nFILES "),
        "{full}"
    );
    let shown = nodeguard(&scan_args(&proc_root, &["--show", "containers"]));
    assert!(
        shown.stdout.contains("\nCONTAINERS\n") && !shown.stdout.contains("CONTAINER PROCESSES"),
        "{shown}"
    );
    // The memory limit reads in Kubernetes units, as `query containers` prints it.
    assert!(!full.stdout.contains(" MiB"), "{full}");
    drop(c);
}

/// Lines of a table that list one finding (indented, SEVERITY first).
fn finding_lines(table: &str) -> Vec<&str> {
    table
        .lines()
        .filter(|l| {
            l.strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
                .is_some_and(|w| ["CRITICAL", "HIGH", "MEDIUM", "LOW"].contains(&w))
        })
        .collect()
}

#[test]
fn scan_table_lists_medium_and_up_counts_low_and_folds_capabilities() {
    require_containers!();
    // A container whose one process holds five dangerous capabilities (two critical, three
    // high), runs without no_new_privs and limits (low findings), and has a setuid file in
    // its writable layer (high).
    let c = {
        let mut spec = ContainerSpec::new(Image::busybox());
        for cap in [
            "CAP_SYS_ADMIN",
            "CAP_SYS_MODULE",
            "CAP_NET_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_SYS_TIME",
        ] {
            spec = spec.add_capability(cap);
        }
        let c = spec.no_new_privs(false).start();
        let planted = c.upper_dir.join("tmp/rootshell");
        fs::create_dir_all(planted.parent().unwrap()).unwrap();
        fs::copy(support::image::busybox_binary().unwrap(), &planted).unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o4755)).unwrap();
        c
    };
    let proc_root = FakeProc::with_pids(&c.pids());

    let json = nodeguard(&scan_args(&proc_root, &["-o", "json"]));
    assert_eq!(json.code, Some(0), "{json}");
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let of = |s: &str| -> Vec<&serde_json::Value> {
        findings.iter().filter(|f| f["severity"] == s).collect()
    };
    let lows = of("low").len();
    assert!(lows >= 2, "low findings to hide\n{json}");
    let caps: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["kind"] == "dangerous_capability")
        .collect();
    assert_eq!(caps.len(), 5, "{json}");

    let table = nodeguard(&scan_args(&proc_root, &[]));
    assert_eq!(table.code, Some(0), "{table}");
    let listed = finding_lines(&table.stdout);
    assert!(
        listed.iter().all(|l| !l.trim_start().starts_with("LOW")),
        "no low finding listed by default\n{}",
        table.stdout
    );
    assert!(
        table.stdout.contains(&format!(
            "not listed: {lows} low (counted above; scan --show-low lists them"
        )),
        "the footer counts the low findings and names the flag\n{}",
        table.stdout
    );
    // Every critical and high finding is in the table: its subject (a capability, the planted
    // file's path) is on a listed line.
    for f in of("critical").into_iter().chain(of("high")) {
        let subject = f["subject"].as_str().unwrap();
        assert!(
            listed.iter().any(|l| l.contains(subject)),
            "{subject} is hidden\n{}",
            table.stdout
        );
    }
    // The five capabilities take one line per severity: one critical, one high.
    let cap_lines: Vec<&&str> = listed
        .iter()
        .filter(|l| l.contains("dangerous_capability"))
        .collect();
    assert_eq!(cap_lines.len(), 2, "{}", table.stdout);
    assert!(
        cap_lines[0].contains("CAP_SYS_ADMIN") && cap_lines[0].contains("CAP_SYS_MODULE"),
        "{}",
        table.stdout
    );
    assert!(
        ["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"]
            .iter()
            .all(|cap| cap_lines[1].contains(cap)),
        "{}",
        table.stdout
    );
    // The summary still counts every finding.
    assert!(
        table
            .stdout
            .contains(&format!("FINDINGS {}: ", findings.len())),
        "{}",
        table.stdout
    );

    // --show-low lists them, with no footer.
    let all = nodeguard(&scan_args(&proc_root, &["--show-low"]));
    let all_listed = finding_lines(&all.stdout);
    assert_eq!(
        all_listed
            .iter()
            .filter(|l| l.trim_start().starts_with("LOW"))
            .count(),
        lows,
        "{}",
        all.stdout
    );
    assert!(!all.stdout.contains("not listed:"), "{}", all.stdout);
    drop(c);
}

#[test]
fn scan_piped_into_head_ends_quietly() {
    require_containers!();
    let proc_root = FakeProc::with_pids(&[]);
    let mut child = Command::new(support::nodeguard_bin())
        .args(scan_args(&proc_root, &["--no-fs", "--inventory"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `head -0`: the reader goes away before the scan writes a byte.
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status:?}, stderr: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn errors_say_their_cause_once() {
    let out = nodeguard(&["scan", "--config", "/nonexistent/nodeguard-policy.yaml"]);
    assert_eq!(out.code, Some(1), "{out}");
    let cause = "No such file or directory";
    assert_eq!(out.stderr.matches(cause).count(), 1, "{out}");
    assert!(
        out.stderr
            .contains("/nonexistent/nodeguard-policy.yaml: cannot read policy"),
        "{out}"
    );
}

#[test]
fn query_takes_url_and_output_after_the_subcommand() {
    // Nothing listens on port 1: the flags parse (not a usage error, exit 2) and the error
    // names the URL asked.
    for args in [
        &[
            "query",
            "findings",
            "--url",
            "http://127.0.0.1:1",
            "-o",
            "json",
        ][..],
        &["query", "--url", "http://127.0.0.1:1", "findings"][..],
        &["query", "containers", "--url", "http://127.0.0.1:1"][..],
    ] {
        let out = nodeguard(args);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr.contains("http://127.0.0.1:1/v1/"),
            "the error names the URL\n{out}"
        );
    }
}

#[test]
fn text_logs_off_a_terminal_have_no_colour_codes() {
    // `run` logs its configuration at start, then fails to listen on a port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = nodeguard(&[
        "--log-format",
        "text",
        "run",
        "--kube",
        "off",
        "--listen",
        &addr,
        "--interval",
        "1h",
        "--fs-interval",
        "1h",
        "--config",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/policy.example.yaml"
        ),
    ]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("effective configuration"), "{out}");
    assert!(
        !out.stderr.contains('\x1b'),
        "colour codes in a pipe\n{out}"
    );
    // Clean values, not Rust debug.
    assert!(out.stderr.contains("hash=sha256"), "{out}");
    assert!(out.stderr.contains("kube=off"), "{out}");
    assert!(!out.stderr.contains("Some("), "{out}");
    assert!(!out.stderr.contains("Sha256"), "{out}");
}

#[test]
fn policy_check_accepts_the_shipped_configmap() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/configmap.yaml");
    let out = nodeguard(&["policy", "check", manifest]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .starts_with(&format!("{manifest} data.policy.yaml: ok (")),
        "names the ConfigMap key it checked\n{out}"
    );
}
