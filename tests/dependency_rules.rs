//! The architecture's dependency rules (docs/ARCHITECTURE.md), checked over `cargo metadata`
//! so that a convenient import cannot quietly bend the one-way flow.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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
        "nodeguard-table",
        "nodeguard-kube",
        "nodeguard-procevents",
        "nodeguard-image",
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
        ("kube", &["nodeguard-kube"][..]),
        ("k8s-openapi", &["nodeguard-kube"][..]),
        ("prometheus-client", &["nodeguard-metrics"][..]),
        ("serde_yaml", &["nodeguard-policy"][..]),
        // One hasher: executables and setuid/capability files are hashed by the same code.
        ("sha2", &["nodeguard-hash"][..]),
        // Release tarballs are read by `nodeguard digests import`; image layers (gzip'd blobs,
        // gzip'd tar-split) only by nodeguard-image's bounded reader, never by a scan.
        ("tar", &["nodeguard"][..]),
        ("flate2", &["nodeguard", "nodeguard-image"][..]),
        // TLS of the API port and of `nodeguard query`: one crate holds the server's
        // certificate handling and the client's trust (kube brings its own rustls).
        ("rustls", &["nodeguard-api"][..]),
        ("tokio-rustls", &["nodeguard-api"][..]),
        ("rcgen", &["nodeguard-api"][..]),
    ];
    for (dependency, owners) in expect {
        let users = users_of(&deps, dependency);
        assert_eq!(
            users,
            owners
                .iter()
                .map(|o| o.to_string())
                .collect::<BTreeSet<_>>(),
            "only {owners:?} may link {dependency}"
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

/// The table renderer prints the offline `nodeguard scan` as well as `nodeguard query`: it
/// reads the model and nothing else, so printing a scan links no HTTP client or server and
/// no Kubernetes client.
#[test]
fn the_table_renderer_links_no_http_and_no_kubernetes() {
    let deps = workspace_dependencies();
    let table = &deps["nodeguard-table"];
    for bad in [
        "nodeguard-api",
        "nodeguard-kube",
        "nodeguard-metrics",
        "nodeguard-daemon",
        "hyper",
        "hyper-util",
        "http",
        "axum",
        "tower",
        "ureq",
        "reqwest",
        "rustls",
        "tokio",
        "tokio-rustls",
        "kube",
        "k8s-openapi",
    ] {
        assert!(
            !table.contains(bad),
            "nodeguard-table must not depend on {bad}"
        );
    }
    let inner: Vec<_> = table
        .iter()
        .filter(|d| d.starts_with("nodeguard") && d.as_str() != "nodeguard-model")
        .collect();
    assert!(
        inner.is_empty(),
        "nodeguard-table depends on {inner:?}; it reads nodeguard-model only"
    );
}

/// The offline `scan`'s output reaches the renderer directly, not through the HTTP crate.
#[test]
fn scan_output_takes_the_table_from_nodeguard_table_not_the_api() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/output.rs");
    let src = std::fs::read_to_string(path).expect("read agent/src/output.rs");
    let toks = tokens(&product_code(&src));
    assert!(
        !toks.iter().any(|t| t == "nodeguard_api"),
        "agent/src/output.rs names nodeguard_api; take the table from nodeguard_table"
    );
    assert!(
        toks.iter().any(|t| t == "nodeguard_table"),
        "agent/src/output.rs no longer uses nodeguard_table"
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

// ---- Source files: no two import each other, directly or around a loop ----

/// Rust source with comments, string and char literals blanked out (so braces and paths in
/// them do not count), and every `#[cfg(test)]` item dropped (tests may reach anywhere).
fn product_code(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some((body, hashes)) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            i += body
                + rest[body..]
                    .find(&close)
                    .map_or(rest.len() - body, |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if let Some(len) = char_literal_len(rest) {
            i += len;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    drop_test_items(&out)
}

/// `r"…"`, `r#"…"#`, `br"…"`: (the length of the opening, the number of `#`).
fn raw_string_start(s: &str) -> Option<(usize, usize)> {
    let t = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let hashes = t.len() - t.trim_start_matches('#').len();
    t[hashes..]
        .starts_with('"')
        .then_some((s.len() - t.len() + hashes + 1, hashes))
}

/// `'x'`, `'\n'`, `'\''`, `'\u{1b}'`: the length of a char literal at the start of `s` (a
/// lifetime such as `'a` is none).
fn char_literal_len(s: &str) -> Option<usize> {
    let t = s.strip_prefix('\'')?;
    if let Some(esc) = t.strip_prefix('\\') {
        return esc.get(1..)?.find('\'').map(|e| e + 4);
    }
    let c = t.chars().next()?;
    t[c.len_utf8()..]
        .starts_with('\'')
        .then_some(c.len_utf8() + 2)
}

fn drop_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at the `;` or the `}` that closes its first `{`.
        let (mut depth, mut end) = (0usize, after.len());
        for (k, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path in `code` that starts with `crate`, `self` or `super`, `use` groups expanded
/// (`use super::{a, b::C}` gives `super::a` and `super::b::C`), as segments.
fn module_paths(code: &str) -> Vec<Vec<String>> {
    let toks = tokens(code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts = matches!(toks[i].as_str(), "crate" | "self" | "super")
            && toks.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || toks[i - 1] != "::");
        if starts {
            i = path_at(&toks, i, Vec::new(), &mut found);
        } else {
            i += 1;
        }
    }
    found
}

/// Reads the path starting at `toks[i]` (after `prefix`), pushes its expansions; returns
/// the index after it.
fn path_at(
    toks: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    found: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                while let Some(t) = toks.get(i) {
                    match t.as_str() {
                        "}" => return i + 1,
                        "," => i += 1,
                        _ => i = path_at(toks, i, prefix.clone(), found),
                    }
                }
                return i;
            }
            Some(t) if t.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                prefix.push(t.to_string());
                i += 1;
                if toks.get(i).is_some_and(|t| t == "::") {
                    i += 1;
                    continue;
                }
                found.push(prefix);
                return i;
            }
            _ => {
                if !prefix.is_empty() {
                    found.push(prefix);
                }
                return i + 1;
            }
        }
    }
}

fn tokens(code: &str) -> Vec<String> {
    let mut toks = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek().filter(|n| n.is_alphanumeric() || **n == '_') {
                word.push(n);
                chars.next();
            }
            toks.push(word);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            toks.push("::".into());
        } else if !c.is_whitespace() {
            toks.push(c.to_string());
        }
    }
    toks
}

/// The module path of a source file under `src`: `lib.rs`/`main.rs` is the root, `a.rs` and
/// `a/mod.rs` are `a`, `a/b.rs` is `a::b`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Within each crate (`agent/src`, `crates/*/src` under `root`), file → the files it
/// imports. An import resolves to the longest module path with a file of its own
/// (`crate::a::b::Item` → `a/b.rs`, else `a.rs`). A file naming its own module or an
/// ancestor's (`super::Config` in a child, `crate::Error`) is no edge: a module's root file
/// is the face its children share, and a parent declares its children.
fn import_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut srcs = vec![root.join("agent/src")];
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        srcs.extend(crates.flatten().map(|c| c.path().join("src")));
    }
    let mut graph = BTreeMap::new();
    for src in srcs {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeMap<Vec<String>, String> = files
            .iter()
            .map(|f| {
                let name = f.strip_prefix(root).unwrap_or(f).display().to_string();
                (module_of(&src, f), name)
            })
            .collect();
        for file in &files {
            let here = module_of(&src, file);
            let code = product_code(&std::fs::read_to_string(file).expect("read source"));
            let edges: &mut BTreeSet<String> = graph.entry(modules[&here].clone()).or_default();
            for path in module_paths(&code) {
                let mut target: Vec<String> = match path[0].as_str() {
                    "crate" => Vec::new(),
                    "self" => here.clone(),
                    _ => here[..here.len().saturating_sub(1)].to_vec(),
                };
                let mut rest = path[1..].iter().peekable();
                while rest.peek().is_some_and(|s| *s == "super") {
                    target.pop();
                    rest.next();
                }
                let mut best = target.clone();
                for seg in rest {
                    target.push(seg.clone());
                    if modules.contains_key(&target) {
                        best = target.clone();
                    }
                }
                if here.starts_with(&best) {
                    continue;
                }
                if let Some(to) = modules.get(&best) {
                    edges.insert(to.clone());
                }
            }
        }
    }
    graph
}

/// Files that import each other, directly or around a loop (strongly connected components
/// of more than one file), each as a sorted list.
fn import_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(f) = todo.pop() {
            for to in graph.get(&f).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|f| (f, reach(f))).collect();
    let mut cycles = BTreeSet::new();
    for (f, r) in &reachable {
        if !r.contains(*f) {
            continue;
        }
        let mut scc: Vec<String> = r
            .iter()
            .filter(|g| reachable.get(g).is_some_and(|back| back.contains(*f)))
            .cloned()
            .collect();
        scc.sort();
        cycles.insert(scc);
    }
    cycles.into_iter().collect()
}

/// Loops that were there before this check and belong to other work (issue 21 lists the
/// ones it breaks). A loop inside one of these sets is tolerated until it is broken; any
/// other loop fails. Shrink this list, never grow it.
const KNOWN_CYCLES: &[&[&str]] = &[];

#[test]
fn no_two_source_files_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cycles: Vec<Vec<String>> = import_cycles(&import_graph(&root))
        .into_iter()
        .filter(|c| {
            !KNOWN_CYCLES
                .iter()
                .any(|known| c.iter().all(|f| known.contains(&f.as_str())))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "source files that import each other (directly or around a loop); move what they \
         share into a module both import one way: {cycles:#?}"
    );
}

/// The check finds a loop through `use` groups, `super::` and inline paths, and ignores
/// test modules, comments, strings and imports of a file's own ancestors.
#[test]
fn the_import_loop_check_sees_loops_and_only_loops() {
    let dir = std::env::temp_dir().join(format!("ng-import-loops-{}", std::process::id()));
    let src = dir.join("crates/demo/src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    let files = [
        (
            "lib.rs",
            "pub mod a; pub mod c; pub mod d;\npub struct Error;\n",
        ),
        ("a/mod.rs", "pub mod b;\npub struct Config;\n"),
        // b -> c (in a group) and b -> its parent and the root (no edges).
        (
            "a/b.rs",
            "use super::Config;\nuse crate::{c::Item, Error};\n",
        ),
        // c -> a::b (an inline path): a loop b <-> c.
        (
            "c.rs",
            "pub struct Item;\nfn f() { let _ = crate::a::b::helper(); }\n",
        ),
        // d names c only in a comment, strings and a test module: no edge.
        (
            "d.rs",
            "// use crate::c;\nconst S: &str = \"crate::c::Item\";\n\
             const R: &str = r#\"crate::c::{\"#; const Q: char = '\\'';\n\
             #[cfg(test)]\nmod tests { use crate::c::Item; fn g() { let _ = '{'; } }\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(src.join(name), text).unwrap();
    }
    let graph = import_graph(&dir);
    let cycles = import_cycles(&graph);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        cycles,
        [vec![
            "crates/demo/src/a/b.rs".to_string(),
            "crates/demo/src/c.rs".to_string()
        ]],
        "{graph:#?}"
    );
    assert!(graph["crates/demo/src/d.rs"].is_empty(), "{graph:#?}");
}

/// The image indexer reads the runtimes' stores and judges nothing: it may hash (through the
/// one hasher) but knows no collector, policy, scan or sink; only it decodes zstd layers.
#[test]
fn the_image_indexer_knows_only_the_model_and_the_hasher() {
    let deps = workspace_dependencies();
    let inner: BTreeSet<_> = deps["nodeguard-image"]
        .iter()
        .filter(|d| d.starts_with("nodeguard"))
        .cloned()
        .collect();
    assert!(
        inner.is_subset(&BTreeSet::from([
            "nodeguard-model".to_string(),
            "nodeguard-hash".to_string()
        ])),
        "nodeguard-image depends on {inner:?}"
    );
    assert_eq!(
        users_of(&deps, "ruzstd"),
        BTreeSet::from(["nodeguard-image".to_string()]),
        "only nodeguard-image may decode zstd"
    );
}

// ---- Purity: the model does no I/O, the daemon links no sink, the planners no client ----

/// `crate::`-free paths a file names: `std::fs::File` gives `["std", "fs", "File"]`.
fn external_paths(code: &str) -> Vec<Vec<String>> {
    let toks = tokens(code);
    let mut paths = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let starts = toks.get(i + 1).is_some_and(|n| n == "::")
            && (i == 0 || toks[i - 1] != "::")
            && !matches!(t.as_str(), "crate" | "self" | "super");
        if starts {
            let mut found = Vec::new();
            path_at(&toks, i, Vec::new(), &mut found);
            paths.extend(found);
        }
    }
    paths
}

/// Paths in `code` that reach the operating system: files, sockets, processes, the
/// environment, raw descriptors, or a crate that does any of these.
fn io_paths(code: &str) -> Vec<String> {
    const STD_IO: [&str; 6] = ["fs", "net", "io", "process", "os", "env"];
    const IO_CRATES: [&str; 8] = [
        "tokio", "libc", "nix", "rustix", "procfs", "xattr", "mio", "socket2",
    ];
    external_paths(code)
        .into_iter()
        .filter(|p| match p.first().map(String::as_str) {
            // `std::os::unix::ffi` only views an OS string as its bytes (a path is bytes on
            // Linux): no system call.
            Some("std") if p.get(1..4).is_some_and(|m| m == ["os", "unix", "ffi"]) => false,
            Some("std" | "core") => p.get(1).is_some_and(|m| STD_IO.contains(&m.as_str())),
            Some(name) => IO_CRATES.contains(&name),
            None => false,
        })
        .map(|p| p.join("::"))
        .collect()
}

/// The report and everything in it are plain values: the model reads no file, socket or
/// environment, so every sink and test can build and render one without a node.
#[test]
fn the_model_does_no_io() {
    let deps = workspace_dependencies();
    for bad in ["tokio", "libc", "nix", "rustix", "procfs", "xattr"] {
        assert!(
            !deps["nodeguard-model"].contains(bad),
            "nodeguard-model must not depend on {bad}: it does no I/O"
        );
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/nodeguard-model/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    for file in files {
        let code = product_code(&std::fs::read_to_string(&file).expect("read source"));
        let io = io_paths(&code);
        assert!(
            io.is_empty(),
            "{} does I/O ({io:?}); the model holds values only",
            file.display()
        );
    }
}

#[test]
fn the_io_check_sees_io_and_only_io() {
    let code = "use std::fs::File;\nuse std::{fmt, io::Read};\nfn f() { let _ = tokio::spawn(x); }\n\
                use std::collections::BTreeMap;\n// std::net::TcpStream\nconst S: &str = \"libc::open\";\n\
                use std::os::unix::ffi::OsStrExt;\nuse std::os::fd::AsRawFd;\n\
                #[cfg(test)]\nmod tests { use std::env; }\n";
    assert_eq!(
        io_paths(&product_code(code)),
        [
            "std::fs::File",
            "std::io::Read",
            "tokio::spawn",
            "std::os::fd::AsRawFd"
        ]
    );
}

/// Every workspace crate `name` depends on, directly or through other workspace crates.
fn workspace_closure(deps: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        for d in deps.get(&n).into_iter().flatten() {
            if deps.contains_key(d) && seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

/// The daemon publishes a state and knows no sink: neither the sink crates nor what they
/// talk through is linked by it or by any workspace crate it links.
#[test]
fn the_daemon_links_no_sink() {
    let deps = workspace_dependencies();
    let closure = workspace_closure(&deps, "nodeguard-daemon");
    for sink in [
        "nodeguard-metrics",
        "nodeguard-api",
        "nodeguard-kube",
        "nodeguard-table",
    ] {
        assert!(
            !closure.contains(sink),
            "nodeguard-daemon links {sink} (through {closure:?}); sinks read its channel"
        );
    }
    let linked = std::iter::once("nodeguard-daemon".to_string()).chain(closure);
    for krate in linked {
        for bad in [
            "kube",
            "k8s-openapi",
            "prometheus-client",
            "axum",
            "hyper",
            "rustls",
        ] {
            assert!(
                !deps[&krate].contains(bad),
                "{krate} links {bad}, so nodeguard-daemon does; only sinks may"
            );
        }
    }
}

/// The Events and PolicyReport planners decide with plain values (state and time in,
/// requests out): no file they import, directly or not, names the kube client crate.
#[test]
fn the_planners_link_no_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let graph = import_graph(&root);
    let names_kube = |file: &str| {
        let code = product_code(&std::fs::read_to_string(root.join(file)).expect("read source"));
        external_paths(&code)
            .into_iter()
            .find(|p| p[0] == "kube")
            .map(|p| p.join("::"))
    };
    // The check can fail: the senders do name the client.
    for sender in [
        "crates/nodeguard-kube/src/events/send.rs",
        "crates/nodeguard-kube/src/reports/send.rs",
    ] {
        assert!(
            names_kube(sender).is_some(),
            "{sender} no longer names kube"
        );
    }
    for planner in [
        "crates/nodeguard-kube/src/events/planner.rs",
        "crates/nodeguard-kube/src/reports/planner.rs",
    ] {
        let mut files = BTreeSet::from([planner.to_string()]);
        let mut todo = vec![planner.to_string()];
        while let Some(f) = todo.pop() {
            for to in graph.get(&f).into_iter().flatten() {
                if files.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        for file in &files {
            if let Some(path) = names_kube(file) {
                panic!("{planner} imports {file}, which names {path}; the planner must decide without a client ({files:?})");
            }
        }
    }
}
