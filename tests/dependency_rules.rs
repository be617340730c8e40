//! The architecture's dependency rules (docs/ARCHITECTURE.md), checked over `cargo metadata`
//! so that a convenient import cannot quietly bend the one-way flow.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Normal (non-dev, non-build) dependencies of each workspace package, by package name.
fn workspace_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let mut deps = BTreeMap::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_string();
        let normal: BTreeSet<String> = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dependency name").to_string())
            .collect();
        deps.insert(name, normal);
    }
    deps
}

/// The dev-only test kit (a fake API server and builders); `testkit_is_only_a_dev_dependency`
/// keeps it out of every build of the agent, so what it links does not count.
const TESTKIT: &str = "nodeguard-testkit";

fn users_of(deps: &BTreeMap<String, BTreeSet<String>>, dependency: &str) -> BTreeSet<String> {
    deps.iter()
        .filter(|(name, _)| name.as_str() != TESTKIT)
        .filter(|(_, d)| d.contains(dependency))
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn workspace_has_the_documented_crates() {
    let deps = workspace_dependencies();
    for name in [
        "nodeguard",
        "nodeguard-model",
        "nodeguard-collect",
        "nodeguard-hash",
        "nodeguard-fscan",
        "nodeguard-policy",
        "nodeguard-scan",
        "nodeguard-daemon",
        "nodeguard-metrics",
        "nodeguard-api",
        "nodeguard-kube",
        "nodeguard-procevents",
    ] {
        assert!(
            deps.contains_key(name),
            "{name} is missing from the workspace"
        );
    }
}

#[test]
fn model_depends_on_no_nodeguard_crate() {
    let deps = workspace_dependencies();
    let inner: Vec<_> = deps["nodeguard-model"]
        .iter()
        .filter(|d| d.starts_with("nodeguard"))
        .collect();
    assert!(inner.is_empty(), "nodeguard-model depends on {inner:?}");
}

#[test]
fn collectors_never_depend_on_policy_or_sinks() {
    let deps = workspace_dependencies();
    let forbidden = [
        "nodeguard-policy",
        "nodeguard-scan",
        "nodeguard-daemon",
        "nodeguard-metrics",
        "nodeguard-api",
        "nodeguard-kube",
        "nodeguard",
    ];
    for collector in ["nodeguard-collect", "nodeguard-hash", "nodeguard-fscan"] {
        for bad in forbidden {
            assert!(
                !deps[collector].contains(bad),
                "{collector} must not depend on {bad}"
            );
        }
    }
}

#[test]
fn sinks_do_not_depend_on_each_other() {
    let deps = workspace_dependencies();
    let sinks = ["nodeguard-metrics", "nodeguard-api", "nodeguard-kube"];
    for a in sinks {
        for b in sinks {
            assert!(!deps[a].contains(b), "{a} must not depend on {b}");
        }
        assert!(
            !deps[a].contains("nodeguard-daemon") && !deps[a].contains("nodeguard-scan"),
            "{a} reads the state; it must not reach into the scan or the daemon"
        );
    }
}

#[test]
fn heavy_dependencies_stay_in_their_one_crate() {
    let deps = workspace_dependencies();
    let expect = [
        ("kube", "nodeguard-kube"),
        ("k8s-openapi", "nodeguard-kube"),
        ("prometheus-client", "nodeguard-metrics"),
        ("serde_yaml", "nodeguard-policy"),
        // One hasher: executables and setuid/capability files are hashed by the same code.
        ("sha2", "nodeguard-hash"),
        // Release tarballs are read by `nodeguard digests import` only: the agent's scans
        // never open an archive.
        ("tar", "nodeguard"),
        ("flate2", "nodeguard"),
        // TLS of the API port and of `nodeguard query`: one crate holds the server's
        // certificate handling and the client's trust (kube brings its own rustls).
        ("rustls", "nodeguard-api"),
        ("tokio-rustls", "nodeguard-api"),
        ("rcgen", "nodeguard-api"),
    ];
    for (dependency, owner) in expect {
        let users = users_of(&deps, dependency);
        assert_eq!(
            users,
            BTreeSet::from([owner.to_string()]),
            "only {owner} may link {dependency}"
        );
    }
}

/// The exec event source hands pids to the daemon and nothing else: it knows no nodeguard
/// crate (so it cannot read `/proc` through the collector, judge, or publish), and only the
/// daemon (which consumes it) and the agent (which starts it) link it — no sink can reach it.
#[test]
fn the_exec_event_source_only_feeds_the_daemon() {
    let deps = workspace_dependencies();
    let inner: Vec<_> = deps["nodeguard-procevents"]
        .iter()
        .filter(|d| d.starts_with("nodeguard"))
        .collect();
    assert!(
        inner.is_empty(),
        "nodeguard-procevents depends on {inner:?}"
    );
    assert_eq!(
        users_of(&deps, "nodeguard-procevents"),
        BTreeSet::from(["nodeguard".to_string(), "nodeguard-daemon".to_string()]),
        "only the daemon and the agent may link nodeguard-procevents"
    );
}

#[test]
fn testkit_is_only_a_dev_dependency() {
    let deps = workspace_dependencies();
    assert!(
        deps.contains_key(TESTKIT),
        "{TESTKIT} is missing from the workspace"
    );
    let users = users_of(&deps, TESTKIT);
    assert!(
        users.is_empty(),
        "{users:?} link {TESTKIT} outside their tests"
    );
}

/// One TLS stack and one crypto provider: rustls with `ring`, which kube links anyway.
/// aws-lc (rustls's default provider) would add a C/assembly build and a second provider
/// that `CryptoProvider::get_default` could pick at random; OpenSSL would add a system
/// library the static image does not have.
#[test]
fn tls_uses_ring_only_no_aws_lc_and_no_openssl() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .expect("read Cargo.lock");
    let packages: BTreeSet<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .collect();
    for present in ["rustls", "ring", "rcgen"] {
        assert!(packages.contains(present), "{present} is not in Cargo.lock");
    }
    for absent in [
        "aws-lc-rs",
        "aws-lc-sys",
        "aws-lc-fips-sys",
        "openssl",
        "openssl-sys",
        "native-tls",
    ] {
        assert!(
            !packages.contains(absent),
            "{absent} is in Cargo.lock: a second TLS or crypto stack (check rustls/tokio-rustls/rcgen default features)"
        );
    }
}
