//! Digest bundles: the release digests of platform binaries, by binary name.
//!
//! `nodeguard digests import` writes a bundle (JSON: it is made by a program, and the policy
//! crate stays the only YAML reader); a policy lists bundles under `digest_bundles`, and
//! [`crate::evaluate`] checks every process, host or container, whose executable's file name
//! is in a bundle against that name's digests. Each digest keeps where it came from (the
//! artifact, the tarball member, the checksum file and line), so a mismatch can say which
//! release it was compared with.
//!
//! A bundle is read like a policy: only a regular file, at most [`MAX_BUNDLE_BYTES`], and
//! validated whole (format, names, digests, sources); a bad bundle refuses the policy that
//! lists it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The bundle format this nodeguard writes and reads.
pub const BUNDLE_FORMAT: u32 = 1;

/// The largest bundle file, in bytes: a ConfigMap's limit. A Kubernetes server release
/// (about 20 binaries, both digests, sources) takes about 15 KB.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// The most bundles one policy may list.
pub const MAX_BUNDLES: usize = 32;

/// The most digest entries (a name's digest set from one release) one bundle may hold.
pub const MAX_BUNDLE_ENTRIES: usize = 10_000;

/// The most sources one digest entry may name.
pub const MAX_SOURCES_PER_ENTRY: usize = 64;

/// The longest binary name (a Linux file name).
pub const MAX_NAME_BYTES: usize = 255;

/// The longest text in a source (a path, a member name).
pub const MAX_SOURCE_TEXT_BYTES: usize = 4096;

/// A digest bundle as written to its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub nodeguard_digest_bundle: u32,
    /// The nodeguard version that made it.
    pub nodeguard_version: String,
    /// When it was made (RFC 3339, UTC).
    pub imported_at: String,
    /// Per binary file name (`kubelet`, `kube-apiserver`), the digests it may have.
    pub binaries: BTreeMap<String, Vec<BundleDigest>>,
}

/// The digests of one build of a binary, and every source that gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleDigest {
    /// Lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    pub sources: Vec<DigestSource>,
}

/// Where a digest came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestSource {
    /// The file given to (or found by) the import: an artifact, a release tarball, or a
    /// checksum file.
    pub file: String,
    /// The tarball member that was hashed (`kubernetes/server/bin/kubelet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The line of a `sha256sum`/`sha512sum` file that listed the digest (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl fmt::Display for DigestSource {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(member) = &self.member {
            write!(f, " member {member}")?;
        }
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        Ok(())
    }
}

/// Why a bundle text is not a bundle. Positions are 1-based; 0 when the problem has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleProblem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for BundleProblem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl DigestBundle {
    /// An empty bundle stamped with this nodeguard's version and `imported_at`.
    pub fn new(imported_at: String) -> DigestBundle {
        DigestBundle {
            nodeguard_digest_bundle: BUNDLE_FORMAT,
            nodeguard_version: env!("CARGO_PKG_VERSION").to_string(),
            imported_at,
            binaries: BTreeMap::new(),
        }
    }

    /// Parses and validates a bundle's bytes (any bytes: garbage is an error, never a panic).
    pub fn from_json_slice(bytes: &[u8]) -> Result<DigestBundle, BundleProblem> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleProblem {
                line: 0,
                column: 0,
                message: format!(
                    "the bundle is {} bytes, more than the {MAX_BUNDLE_BYTES} a bundle may have",
                    bytes.len()
                ),
            });
        }
        let mut bundle: DigestBundle =
            serde_json::from_slice(bytes).map_err(|e| BundleProblem {
                line: e.line(),
                column: e.column(),
                message: if e.is_data() {
                    json_message(&e)
                } else {
                    format!("not a JSON digest bundle: {}", json_message(&e))
                },
            })?;
        bundle.validate().map_err(|message| BundleProblem {
            line: 0,
            column: 0,
            message,
        })?;
        Ok(bundle)
    }

    /// The bundle as pretty JSON, newline-terminated.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Checks every value and normalises digests to lowercase. Errors name the binary and
    /// entry (`binaries.kubelet[1].sha512: ...`).
    pub fn validate(&mut self) -> Result<(), String> {
        if self.nodeguard_digest_bundle != BUNDLE_FORMAT {
            return Err(format!(
                "nodeguard_digest_bundle: unsupported bundle format {} (this nodeguard reads {BUNDLE_FORMAT})",
                self.nodeguard_digest_bundle
            ));
        }
        let entries: usize = self.binaries.values().map(Vec::len).sum();
        if entries > MAX_BUNDLE_ENTRIES {
            return Err(format!(
                "binaries: {entries} digest entries, more than the {MAX_BUNDLE_ENTRIES} a bundle may hold"
            ));
        }
        for (name, digests) in &mut self.binaries {
            check_name(name).map_err(|m| format!("binaries.{name:?}: {m}"))?;
            if digests.is_empty() {
                return Err(format!("binaries.{name}: no digest listed"));
            }
            for (i, d) in digests.iter_mut().enumerate() {
                let at = format!("binaries.{name}[{i}]");
                if d.sha256.is_none() && d.sha512.is_none() {
                    return Err(format!("{at}: neither sha256 nor sha512 is given"));
                }
                if let Some(hex) = &mut d.sha256 {
                    *hex = check_hex(hex, 64).map_err(|m| format!("{at}.sha256: {m}"))?;
                }
                if let Some(hex) = &mut d.sha512 {
                    *hex = check_hex(hex, 128).map_err(|m| format!("{at}.sha512: {m}"))?;
                }
                if d.sources.is_empty() {
                    return Err(format!(
                        "{at}.sources: empty (a bundle records where every digest came from)"
                    ));
                }
                if d.sources.len() > MAX_SOURCES_PER_ENTRY {
                    return Err(format!(
                        "{at}.sources: more than {MAX_SOURCES_PER_ENTRY} sources"
                    ));
                }
                for (j, s) in d.sources.iter().enumerate() {
                    let texts = [Some(&s.file), s.member.as_ref()];
                    if s.file.is_empty() {
                        return Err(format!("{at}.sources[{j}].file: empty"));
                    }
                    if texts
                        .iter()
                        .flatten()
                        .any(|t| t.len() > MAX_SOURCE_TEXT_BYTES)
                    {
                        return Err(format!(
                            "{at}.sources[{j}]: a text longer than {MAX_SOURCE_TEXT_BYTES} bytes"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds what one source says about `name`. Digests of one build merge (same digest for an
    /// algorithm both give, or the new one fills an algorithm the entry lacks); a digest that
    /// differs from the entry's for the same algorithm is a different build of `name`: an
    /// error naming both sources, unless `allow_several` (a bundle covering two releases,
    /// e.g. for a rolling upgrade), which keeps it as a second entry.
    pub fn add(
        &mut self,
        name: &str,
        sha256: Option<String>,
        sha512: Option<String>,
        source: DigestSource,
        allow_several: bool,
    ) -> Result<(), String> {
        check_name(name)?;
        let entries = self.binaries.entry(name.to_string()).or_default();
        let same = |have: &Option<String>, new: &Option<String>| match (have, new) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        // An entry that agrees on a shared algorithm, or shares no algorithm with the new
        // digests and would be filled by them.
        let mut agrees = None;
        let mut conflict = None;
        for (i, e) in entries.iter().enumerate() {
            let verdicts = [same(&e.sha256, &sha256), same(&e.sha512, &sha512)];
            if verdicts.contains(&Some(false)) {
                conflict.get_or_insert(i);
            } else if verdicts.contains(&Some(true)) {
                agrees = Some(i);
                break;
            }
        }
        if agrees.is_none() {
            if let Some(i) = conflict {
                if !allow_several {
                    let other = entries[i]
                        .sources
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    return Err(format!(
                        "{name}: {source} gives a different digest than {other} \
                         (two builds of one name: pass --allow-several to keep both)"
                    ));
                }
            } else if entries.len() == 1 {
                // Only other algorithms so far (a .sha256 and a .sha512 of one binary).
                agrees = Some(0);
            }
        }
        match agrees {
            Some(i) => {
                let e = &mut entries[i];
                e.sha256 = e.sha256.take().or(sha256);
                e.sha512 = e.sha512.take().or(sha512);
                if !e.sources.contains(&source) && e.sources.len() < MAX_SOURCES_PER_ENTRY {
                    e.sources.push(source);
                }
            }
            None => entries.push(BundleDigest {
                sha256,
                sha512,
                sources: vec![source],
            }),
        }
        Ok(())
    }
}

/// A binary name: a file name, not a path.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("not a file name".to_string());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "a name of {} bytes, longer than {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err("not a file name (no '/' or control characters)".to_string());
    }
    Ok(())
}

/// `hex_len` hex digits, any case; returns them lowercase.
pub fn check_hex(text: &str, hex_len: usize) -> Result<String, String> {
    if text.len() != hex_len || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown: String = text.chars().take(20).collect();
        return Err(format!(
            "{shown:?}{} is not {hex_len} hex digits",
            if text.chars().count() > 20 { "…" } else { "" }
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// serde_json's message without its own ` at line L column C` (the caller places it).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&at).unwrap_or(&text).to_string()
}

/// One digest of a name from a loaded bundle, as the rules compare it.
#[derive(Debug, Clone)]
pub(crate) struct KnownDigest {
    pub sha256: Option<String>,
    pub sha512: Option<String>,
    /// The bundle file, as the policy names it.
    pub bundle: String,
    /// The entry's first source, for messages.
    pub source: String,
}

/// Every bundle of a policy, merged by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct BundleIndex {
    pub by_name: BTreeMap<String, Vec<KnownDigest>>,
    pub bundles: usize,
}

impl BundleIndex {
    pub fn add(&mut self, origin: &str, bundle: &DigestBundle) {
        self.bundles += 1;
        for (name, digests) in &bundle.binaries {
            let known = self.by_name.entry(name.clone()).or_default();
            for d in digests {
                known.push(KnownDigest {
                    sha256: d.sha256.clone(),
                    sha512: d.sha512.clone(),
                    bundle: origin.to_string(),
                    source: d
                        .sources
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                });
            }
        }
    }

    pub fn needs_sha512(&self) -> bool {
        self.by_name
            .values()
            .flatten()
            .any(|d| d.sha512.is_some() && d.sha256.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(file: &str) -> DigestSource {
        DigestSource {
            file: file.into(),
            member: None,
            line: None,
        }
    }

    #[test]
    fn merges_one_build_and_refuses_two_unless_allowed() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(128);
        let mut bundle = DigestBundle::new("now".into());
        bundle
            .add(
                "kubelet",
                Some(a.clone()),
                None,
                src("kubelet.sha256"),
                false,
            )
            .unwrap();
        bundle
            .add(
                "kubelet",
                None,
                Some(c.clone()),
                src("kubelet.sha512"),
                false,
            )
            .unwrap();
        assert_eq!(bundle.binaries["kubelet"].len(), 1);
        assert_eq!(bundle.binaries["kubelet"][0].sha512.as_deref(), Some(&*c));
        let err = bundle
            .add(
                "kubelet",
                Some(b.clone()),
                None,
                src("other/SHA256SUMS"),
                false,
            )
            .unwrap_err();
        assert!(
            err.contains("other/SHA256SUMS") && err.contains("kubelet.sha256"),
            "{err}"
        );
        bundle
            .add("kubelet", Some(b), None, src("other/SHA256SUMS"), true)
            .unwrap();
        assert_eq!(bundle.binaries["kubelet"].len(), 2);
    }

    #[test]
    fn garbage_and_bad_values_are_refused_with_positions() {
        let err = DigestBundle::from_json_slice(b"\xff\xfe\x00garbage").unwrap_err();
        assert_eq!(err.line, 1, "{err}");
        let text = br#"{"nodeguard_digest_bundle": 1, "nodeguard_version": "x",
            "imported_at": "t", "binaries": {"kubelet": [{"sha256": "zz", "sources": [{"file": "f"}]}]}}"#;
        let err = DigestBundle::from_json_slice(text).unwrap_err();
        assert!(err.message.contains("binaries.kubelet[0].sha256"), "{err}");
        let text = br#"{"nodeguard_digest_bundle": 2, "nodeguard_version": "x",
            "imported_at": "t", "binaries": {}}"#;
        let err = DigestBundle::from_json_slice(text).unwrap_err();
        assert!(err.message.contains("unsupported bundle format 2"), "{err}");
    }
}
