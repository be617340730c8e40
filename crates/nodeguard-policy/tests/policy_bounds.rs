//! A policy is input an attacker with write access to the ConfigMap controls: no policy may
//! panic the agent, exhaust its memory or block its reload. Each bound is refused with the
//! file, `line:column` and field, like every other policy error.

use nodeguard_policy::bundle::{MAX_BUNDLES, MAX_BUNDLE_BYTES};
use nodeguard_policy::{
    DigestBundle, Policy, PolicyError, MAX_PATTERNS, MAX_PATTERN_BYTES, MAX_POLICY_BYTES,
};
use proptest::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn a_huge_glob_is_refused_at_its_line_not_a_panic() {
    // 400 KB of glob made globset panic ("regex compilation shouldn't fail").
    let text = format!(
        "allowed_setuid:\n  - /usr/bin/su\n  - \"/{}\"\n",
        "[a-z]?*".repeat(30_000)
    );
    let err = Policy::from_yaml_str(&text, "p.yaml").unwrap_err();
    assert!(
        err.to_string().starts_with(
            "p.yaml:3:5: allowed_setuid[1]: pattern is 210001 bytes, longer than the 1024"
        ),
        "{err}"
    );
}

#[test]
fn the_longest_allowed_glob_of_the_costliest_kind_compiles() {
    // Every construct that grows a regex, up to the bound: none may panic.
    for unit in ["[^a]", "?", "*", "**/", "[!/]", "{a,b}", "\\*", "é"] {
        let body = unit.repeat((MAX_PATTERN_BYTES - 1) / unit.len());
        let text = format!("allowed_setuid: [{:?}]\n", format!("/{body}"));
        let _ = Policy::from_yaml_str(&text, "p.yaml");
        let text = format!(
            "exemptions:\n  - namespaces: [{:?}]\n    reason: r\n",
            body.clone()
        );
        let _ = Policy::from_yaml_str(&text, "p.yaml");
    }
}

#[test]
fn more_globs_than_the_bound_are_refused_at_the_first_one_past_it() {
    let mut text = String::from("allowed_setuid:\n");
    for i in 0..40_000 {
        text.push_str(&format!("  - /opt/app{i}/bin\n"));
    }
    // 40,000 literal paths fit in a ConfigMap but not in this bound.
    let text = &text[..text.len().min(MAX_POLICY_BYTES)];
    let text = &text[..text.rfind('\n').unwrap() + 1];
    let err = Policy::from_yaml_str(text, "p.yaml").unwrap_err();
    let line = MAX_PATTERNS + 2;
    assert_eq!(
        err.to_string(),
        format!(
            "p.yaml:{line}:5: allowed_setuid[{MAX_PATTERNS}]: more than {MAX_PATTERNS} patterns in one policy (use fewer, broader globs)"
        )
    );
    // Exactly the bound loads, and the count restarts for the next policy.
    let mut ok = String::from("allowed_setuid:\n");
    for i in 0..MAX_PATTERNS {
        ok.push_str(&format!("  - /opt/app{i}/bin\n"));
    }
    Policy::from_yaml_str(&ok, "p.yaml").unwrap();
    Policy::from_yaml_str(&ok, "p.yaml").unwrap();
}

#[test]
fn the_glob_past_the_bound_is_named_in_whichever_field_it_is() {
    // 999 in allowed_setuid, then an exemption's second pod glob is the 1,001st.
    let mut text = String::from("allowed_setuid:\n");
    for i in 0..MAX_PATTERNS - 1 {
        text.push_str(&format!("  - /opt/app{i}/bin\n"));
    }
    text.push_str("exemptions:\n  - pods: [web-*, api-*]\n    reason: r\n");
    let err = Policy::from_yaml_str(&text, "p.yaml").unwrap_err();
    let line = MAX_PATTERNS + 2;
    assert_eq!(
        err.to_string(),
        format!(
            "p.yaml:{line}:19: exemptions[0].pods[1]: more than {MAX_PATTERNS} patterns in one policy (use fewer, broader globs)"
        )
    );
    // One fewer loads.
    let text = text.replace("[web-*, api-*]", "[web-*]");
    Policy::from_yaml_str(&text, "p.yaml").unwrap();
}

#[test]
fn an_oversized_policy_is_refused_before_it_is_parsed() {
    let text = format!("# {}\n", "x".repeat(MAX_POLICY_BYTES));
    let err = Policy::from_yaml_str(&text, "p.yaml").unwrap_err();
    assert!(matches!(err, PolicyError::Document { .. }), "{err:?}");
    assert!(err.to_string().contains("more than the 262144"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, &text).unwrap();
    let err = Policy::load(&file).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("more than the 262144"), "{err}");
}

#[test]
fn a_fifo_is_refused_at_once_instead_of_blocking_the_reload() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("policy.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let err = Policy::load(&fifo).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "load blocked");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // A directory and /dev/zero (endless) too.
    let err = Policy::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let err = Policy::load(Path::new("/dev/zero")).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// Writes `policy.yaml` naming `bundles` (relative to the policy's directory) and loads it.
fn load_with_bundles(dir: &Path, bundles: &[&str]) -> Result<Policy, PolicyError> {
    let list: String = bundles.iter().map(|b| format!("  - {b}\n")).collect();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, format!("digest_bundles:\n{list}")).unwrap();
    Policy::load(&policy)
}

#[test]
fn a_fifo_huge_or_garbage_bundle_refuses_the_policy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let err = load_with_bundles(dir.path(), &["fifo.json"]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "load blocked");
    assert!(
        err.to_string()
            .contains("digest_bundles[0]: digest bundle ")
            && err.to_string().contains("not a regular file"),
        "{err}"
    );
    assert_eq!(err.location(), Some((2, 5)));

    // A sparse file far past the bound: refused by its size, not read.
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 * 1024 * 1024 * 1024)
        .unwrap();
    let started = Instant::now();
    let err = load_with_bundles(dir.path(), &["huge.json"]).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "load read the file"
    );
    assert!(
        err.to_string().contains(&format!(
            "more than the {MAX_BUNDLE_BYTES} a digest bundle may have"
        )),
        "{err}"
    );

    std::fs::write(dir.path().join("elf.json"), b"\x7fELF\x02\x01\x01\0\0\xff").unwrap();
    let err = load_with_bundles(dir.path(), &["elf.json"]).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("elf.json:1:1: not a JSON digest bundle: expected value"),
        "{err}"
    );
}

#[test]
fn more_bundles_than_the_bound_are_refused_at_the_first_one_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = DigestBundle::new("2026-11-26T00:00:00Z".into());
    std::fs::write(dir.path().join("b.json"), bundle.to_json()).unwrap();
    let names = vec!["b.json"; MAX_BUNDLES + 1];
    let err = load_with_bundles(dir.path(), &names).unwrap_err();
    assert_eq!(err.location(), Some((MAX_BUNDLES + 2, 5)), "{err}");
    assert_eq!(
        err.field(),
        Some(format!("digest_bundles[{MAX_BUNDLES}]").as_str())
    );
    assert!(load_with_bundles(dir.path(), &names[..MAX_BUNDLES]).is_ok());
}

/// Parsing reads no file: a policy whose text is wrong is refused for its text, before any
/// bundle it names is opened (here a FIFO nobody writes, which a read would wait on until
/// its timeout, and a missing file).
#[test]
fn a_bad_policy_text_is_refused_before_any_bundle_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "digest_bundles:\n  - fifo.json\n  - missing.json\nstrict_setuid: maybe\n",
    )
    .unwrap();
    let err = Policy::load(&policy).unwrap_err();
    assert_eq!(err.field(), Some("strict_setuid"), "{err}");
    assert_eq!(err.location().map(|l| l.0), Some(4), "{err}");
}

/// A bundle that fails after parsing is still reported at its own entry, in flow style too.
#[test]
fn a_missing_bundle_in_a_flow_list_is_named_at_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = DigestBundle::new("2026-11-26T00:00:00Z".into());
    std::fs::write(dir.path().join("b.json"), bundle.to_json()).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "strict_setuid: true\ndigest_bundles: [b.json,\n    missing.json]\n",
    )
    .unwrap();
    let err = Policy::load(&policy).unwrap_err();
    assert_eq!(err.field(), Some("digest_bundles[1]"), "{err}");
    assert_eq!(err.location(), Some((3, 5)), "{err}");
    assert!(
        err.to_string().contains("missing.json: cannot read"),
        "{err}"
    );
}

#[test]
fn a_symlinked_policy_like_a_configmap_mount_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    std::fs::write(
        dir.path().join("..data/policy.yaml"),
        "required_limits: {cpu: false}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..data/policy.yaml", dir.path().join("policy.yaml")).unwrap();
    let policy = Policy::load(&dir.path().join("policy.yaml")).unwrap();
    assert_eq!(policy.required_limits(), (true, false, true));
}

fn weakened(text: &str) -> Vec<&'static str> {
    let policy = Policy::from_yaml_str(text, "p.yaml").unwrap();
    policy.weakened().into_iter().map(|(s, _)| s).collect()
}

#[test]
fn settings_that_switch_a_check_off_are_named() {
    assert!(weakened("").is_empty());
    assert!(weakened("allowed_setuid: [/usr/bin/*, /bin/su]\n").is_empty());
    assert_eq!(weakened("allowed_setuid: ['/**']\n"), ["allowed_setuid"]);
    assert_eq!(weakened("allowed_setuid: ['**']\n"), ["allowed_setuid"]);
    assert_eq!(
        weakened("allowed_file_capabilities: [{path: '/**'}]\n"),
        ["allowed_file_capabilities"]
    );
    assert!(
        weakened("allowed_file_capabilities: [{path: '/**', capabilities: [CAP_NET_RAW]}]\n")
            .is_empty()
    );
    assert_eq!(
        weakened("exemptions: [{namespaces: ['*'], reason: all}]\n"),
        ["exemptions"]
    );
    assert!(weakened("exemptions: [{namespaces: [kube-*], reason: sys}]\n").is_empty());
    assert_eq!(
        weakened("exemptions: [{kinds: [runs_as_root], reason: r}]\n"),
        ["exemptions"]
    );
    assert_eq!(
        weakened("dangerous_capabilities: []\n"),
        ["dangerous_capabilities"]
    );
    assert_eq!(
        weakened("required_limits: {memory: false, cpu: false, pids: false}\n"),
        ["required_limits"]
    );
    let every_kind = nodeguard_model::FindingKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        weakened(&format!("checks: {{disabled: [{every_kind}]}}\n")),
        ["checks_disabled"]
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any bytes: a policy or an error, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Policy::from_yaml_str(&text, "p.yaml");
    }

    /// Any bytes as a digest bundle: a bundle or an error, never a panic.
    #[test]
    fn random_bundle_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = DigestBundle::from_json_slice(&bytes);
    }

    /// Bundle-shaped JSON with hostile names, digests and sources.
    #[test]
    fn hostile_bundle_values_never_panic(value in "\\PC{0,300}", field in 0usize..3) {
        let v = serde_json::Value::String(value);
        let text = match field {
            0 => format!(r#"{{"nodeguard_digest_bundle":1,"nodeguard_version":"x","imported_at":"t","binaries":{{{v}:[{{"sha256":"{}","sources":[{{"file":"f"}}]}}]}}}}"#, "a".repeat(64)),
            1 => format!(r#"{{"nodeguard_digest_bundle":1,"nodeguard_version":"x","imported_at":"t","binaries":{{"k":[{{"sha512":{v},"sources":[{{"file":"f"}}]}}]}}}}"#),
            _ => format!(r#"{{"nodeguard_digest_bundle":1,"nodeguard_version":"x","imported_at":"t","binaries":{{"k":[{{"sha256":{v},"sources":[{{"file":{v},"member":{v}}}]}}]}}}}"#),
        };
        let _ = DigestBundle::from_json_slice(text.as_bytes());
    }

    /// Policy-shaped text with hostile values in every pattern and digest field.
    #[test]
    fn hostile_values_in_policy_fields_never_panic(
        value in "[\\PC\\[\\]{}*?!\\\\/,^-]{0,300}",
        field in 0usize..6,
    ) {
        let quoted = format!("{value:?}");
        let text = match field {
            0 => format!("allowed_setuid: [{quoted}]\n"),
            1 => format!("trusted_binaries: [{{path: {quoted}, sha256: [{quoted}]}}]\n"),
            2 => format!("exemptions: [{{namespaces: [{quoted}], pods: [{quoted}], reason: x}}]\n"),
            3 => format!("denied_binaries: [{{sha512: {quoted}, reason: {quoted}}}]\n"),
            4 => format!("dangerous_capabilities: [{quoted}]\nchecks: {{severity: {{{quoted}: high}}}}\n"),
            _ => format!("allowed_file_capabilities: [{{path: {quoted}, capabilities: [{quoted}]}}]\n"),
        };
        let _ = Policy::from_yaml_str(&text, "p.yaml");
    }

    /// Deep nesting and long keys: the YAML front end refuses or parses, never overflows.
    #[test]
    fn deep_or_long_documents_never_panic(depth in 1usize..200, key in "[a-z_]{1,40}") {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let _ = Policy::from_yaml_str(&text, "p.yaml");
        let text = format!("{key}:\n{}", "  - ".repeat(depth.min(60)));
        let _ = Policy::from_yaml_str(&text, "p.yaml");
    }
}
