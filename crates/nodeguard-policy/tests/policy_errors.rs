//! Broken policies are data: each `testdata/errors/NAME.yaml` starts with a line
//! `# expect: MESSAGE`, the exact error (file, line:column, field path, message) loading it
//! must give. The comment line counts, so line numbers are those of the file as it is.

use nodeguard_policy::{Policy, PolicyError};
use std::path::{Path, PathBuf};

fn error_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/errors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_broken_policy_is_refused_with_its_location() {
    let files = error_files();
    assert!(files.len() >= 20, "only {} error cases found", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: MESSAGE`"));
        match Policy::from_yaml_str(&text, name) {
            Ok(_) => failures.push(format!("{name}: loaded, expected error\n  want: {expect}")),
            Err(err) if err.to_string() == expect => {}
            Err(err) => failures.push(format!("{name}:\n  want: {expect}\n  got:  {err}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn load_names_the_file_and_reports_the_same_error() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/errors/bad_sha256.yaml");
    let err = Policy::load(&file).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:7:9: ", file.display())),
        "{err}"
    );
    assert_eq!(err.location(), Some((7, 9)));
    assert_eq!(err.field(), Some("trusted_binaries[0].sha256[1]"));
}

#[test]
fn a_missing_file_is_a_read_error() {
    let err = Policy::load(Path::new("/nonexistent/nodeguard/policy.yaml")).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/nodeguard/policy.yaml: cannot read policy:"),
        "{err}"
    );
}

#[test]
fn empty_and_comment_only_policies_are_the_defaults() {
    for text in ["", "\n", "# nothing here yet\n", "~\n", "---\n"] {
        let policy =
            Policy::from_yaml_str(text, "empty.yaml").unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(
            policy.dangerous_capabilities(),
            Policy::default().dangerous_capabilities()
        );
        assert_eq!(policy.required_limits(), (true, true, true));
    }
}

#[test]
fn the_example_manifest_loads() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/policy.example.yaml");
    let policy = Policy::load(&file).unwrap_or_else(|e| panic!("{e}"));
    // The example shows every section; if one silently vanished, the summary would say so.
    assert_eq!(
        policy.summary(),
        "14 dangerous capabilities, 1 checks disabled, 1 severity overrides, \
         1 trusted binaries, 1 denied digests, 11 allowed setuid patterns, \
         1 allowed file-capability patterns, 1 exemptions, 0 digest bundles (0 binary names)"
    );
    assert_eq!(policy.required_limits(), (true, false, true));
}

#[test]
fn fields_left_without_a_value_are_their_defaults() {
    let text = "dangerous_capabilities:\nrequired_limits:\nchecks:\n  disabled:\n\
                trusted_binaries:\n#  - path: /usr/bin/kubelet\nexemptions:\n";
    let policy = Policy::from_yaml_str(text, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.summary(), Policy::default().summary());
    assert_eq!(policy.required_limits(), (true, true, true));
}

#[test]
fn the_reference_documents_every_kind_and_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/policy.md")).unwrap();
    let example = std::fs::read_to_string(root.join("manifests/policy.example.yaml")).unwrap();
    for kind in nodeguard_model::FindingKind::ALL {
        assert!(
            doc.contains(&format!("`{kind}`")),
            "docs/policy.md lacks `{kind}`"
        );
        assert!(example.contains(kind.as_str()), "example lacks {kind}");
    }
    for field in [
        "version",
        "dangerous_capabilities",
        "required_limits.memory",
        "checks.disabled",
        "checks.severity",
        "trusted_binaries[].image",
        "denied_binaries[].reason",
        "allowed_setuid",
        "strict_setuid",
        "allowed_file_capabilities[].capabilities",
        "exemptions[].containers",
    ] {
        assert!(
            doc.contains(&format!("`{field}`")),
            "docs/policy.md lacks `{field}`"
        );
    }
}

#[test]
fn policy_check_reads_the_configmap_the_daemonset_ships_and_names_the_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let checked = Policy::load_file_or_configmap(&root.join("manifests/configmap.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = checked.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].ends_with("manifests/configmap.yaml data.policy.yaml"),
        "{names:?}"
    );

    let dir = tempfile_dir();
    let bad = dir.join("cm.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\ndata:\n  policy.yaml: |\n    \
         allowed_setuid: [usr/bin/su]\n",
    )
    .unwrap();
    let err = Policy::load_file_or_configmap(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cm.yaml data.policy.yaml:1:") && err.contains("allowed_setuid[0]"),
        "{err}"
    );
    // A plain policy file is still one policy under its own name.
    let plain = dir.join("p.yaml");
    std::fs::write(&plain, "version: 1\n").unwrap();
    let checked = Policy::load_file_or_configmap(&plain).unwrap();
    assert_eq!(checked[0].0, plain.display().to_string());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nodeguard-policy-cm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
