//! The policy file's shape, and the checks of each value.
//!
//! Every value is validated in its serde visitor, while the deserializer still stands on
//! the node, so a bad digest or glob is reported at its own line and column (see `yaml.rs`).
//! Structs deny unknown fields. Checks that span several fields of one entry run in the
//! entry's map visitor, which pins them to the entry.

use crate::place::Step;
use globset::{Glob, GlobBuilder, GlobMatcher};
use nodeguard_model::capability::capability_number;
use nodeguard_model::{FindingKind, Severity};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// The policy file as written, all values already checked.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a policy: a mapping of policy fields"
)]
pub(crate) struct PolicySpec {
    pub version: Option<Version>,
    pub dangerous_capabilities: Option<Vec<Capability>>,
    pub required_limits: RequiredLimits,
    pub checks: Checks,
    #[serde(deserialize_with = "null_as_empty")]
    pub trusted_binaries: Vec<TrustedBinary>,
    #[serde(deserialize_with = "null_as_empty")]
    pub denied_binaries: Vec<DeniedBinary>,
    #[serde(deserialize_with = "null_as_empty")]
    pub allowed_setuid: Vec<PathPattern>,
    /// Report the distribution's own setuid/setgid files in image layers like any other
    /// image file (`medium`) instead of `low`.
    pub strict_setuid: bool,
    #[serde(deserialize_with = "null_as_empty")]
    pub allowed_file_capabilities: Vec<AllowedFileCapabilities>,
    #[serde(deserialize_with = "null_as_empty")]
    pub exemptions: Vec<Exemption>,
    /// Digest bundle files (`nodeguard digests import`), read and checked once the policy
    /// is parsed.
    #[serde(deserialize_with = "null_as_empty")]
    pub digest_bundles: Vec<BundlePath>,
    /// Which processes the digest bundles check: `host`, `host_and_kube_system` (the
    /// default) or `all`.
    pub digest_bundles_apply_to: BundlesApplyTo,
}

/// Which processes the digest bundles check by executable name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum BundlesApplyTo {
    /// Host processes only: the node's platform binaries (kubelet, containerd, runc).
    Host,
    /// Host processes and the containers of pods in `kube-system` (static pods'
    /// kube-apiserver, etcd, kube-proxy): the platform, not a workload image that ships its
    /// own `kubectl` of another version. Containers without pod metadata are not covered.
    #[default]
    HostAndKubeSystem,
    /// Every process, host or container.
    All,
}

impl<'de> Deserialize<'de> for BundlesApplyTo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "host, host_and_kube_system or all", |text| {
            match text.trim() {
                "host" => Ok(BundlesApplyTo::Host),
                "host_and_kube_system" => Ok(BundlesApplyTo::HostAndKubeSystem),
                "all" => Ok(BundlesApplyTo::All),
                other => Err(format!(
                "digest_bundles_apply_to must be host, host_and_kube_system or all, not {other:?}"
            )),
            }
        })
    }
}

/// A digest bundle file named by the policy, as written. Parsing does no I/O: the policy
/// reads the files after parsing, and a bundle that cannot be read or is not a bundle is
/// reported at this entry's line through [`crate::place::FailAt`].
#[derive(Debug, Clone)]
pub(crate) struct BundlePath {
    /// The path as the policy gives it (messages name it so).
    pub text: String,
}

impl<'de> Deserialize<'de> for BundlePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a digest bundle file path", |text| {
            if text.trim().is_empty() {
                return Err("empty path".to_string());
            }
            Ok(BundlePath {
                text: text.to_string(),
            })
        })
    }
}

/// `version: 1`, the only format this crate reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "the policy format version, 1", |text| {
            match text.trim() {
                "1" => Ok(Version),
                other => Err(format!(
                    "unsupported policy version {other:?} (this nodeguard reads version 1)"
                )),
            }
        })
    }
}

/// Which cgroup limits every container must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequiredLimits {
    pub memory: bool,
    pub cpu: bool,
    pub pids: bool,
}

impl Default for RequiredLimits {
    fn default() -> Self {
        RequiredLimits {
            memory: true,
            cpu: true,
            pids: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Checks {
    #[serde(deserialize_with = "null_as_empty")]
    pub disabled: Vec<Kind>,
    pub severity: SeverityOverrides,
}

/// `kind: severity` pairs; a kind named twice is an error rather than a silent last-wins.
#[derive(Debug, Default)]
pub(crate) struct SeverityOverrides(pub BTreeMap<FindingKind, Severity>);

impl<'de> Deserialize<'de> for SeverityOverrides {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SeverityOverrides;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of finding kind to severity")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(SeverityOverrides::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(kind) = map.next_key_seed(NewKind(&out))? {
                    let SeverityName(severity) = map.next_value()?;
                    out.insert(kind, severity);
                }
                Ok(SeverityOverrides(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A map key naming a finding kind not seen yet in the map; checked while the deserializer
/// stands on the key, so a repeat is reported at the repeat.
struct NewKind<'m, V>(&'m BTreeMap<FindingKind, V>);

impl<'de, V> de::DeserializeSeed<'de> for NewKind<'_, V> {
    type Value = FindingKind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FindingKind, D::Error> {
        struct KeyVisitor<'m, V>(&'m BTreeMap<FindingKind, V>);
        impl<'de, V> Visitor<'de> for KeyVisitor<'_, V> {
            type Value = FindingKind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finding kind such as runs_as_root")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FindingKind, E> {
                let kind = v.parse::<FindingKind>().map_err(E::custom)?;
                if self.0.contains_key(&kind) {
                    return Err(E::custom(format!("finding kind {kind} is given twice")));
                }
                Ok(kind)
            }
        }
        d.deserialize_str(KeyVisitor(self.0))
    }
}

/// A trusted binary: executables at `path` (in containers of `image`, when given) must have
/// one of the listed digests.
#[derive(Debug, Clone)]
pub(crate) struct TrustedBinary {
    pub path: PathPattern,
    pub image: Option<NamePattern>,
    pub sha256: Vec<Sha256>,
    pub sha512: Vec<Sha512>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustedBinary {
    path: PathPattern,
    #[serde(default)]
    image: Option<NamePattern>,
    #[serde(default, deserialize_with = "null_as_empty")]
    sha256: Vec<Sha256>,
    #[serde(default, deserialize_with = "null_as_empty")]
    sha512: Vec<Sha512>,
}

impl<'de> Deserialize<'de> for TrustedBinary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "a trusted binary (path, image, sha256, sha512)",
            |raw: RawTrustedBinary| {
                if raw.sha256.is_empty() && raw.sha512.is_empty() {
                    return Err(format!(
                        "trusted binary {:?} lists no digest: give at least one under sha256 or sha512",
                        raw.path.text
                    ));
                }
                Ok(TrustedBinary {
                    path: raw.path,
                    image: raw.image,
                    sha256: raw.sha256,
                    sha512: raw.sha512,
                })
            },
        )
    }
}

/// A digest that must never run or sit in a container filesystem.
#[derive(Debug, Clone)]
pub(crate) struct DeniedBinary {
    pub sha256: Option<Sha256>,
    pub sha512: Option<Sha512>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeniedBinary {
    #[serde(default)]
    sha256: Option<Sha256>,
    #[serde(default)]
    sha512: Option<Sha512>,
    reason: Text,
}

impl<'de> Deserialize<'de> for DeniedBinary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "a denied binary (sha256 or sha512, reason)",
            |raw: RawDeniedBinary| {
                if raw.sha256.is_none() && raw.sha512.is_none() {
                    return Err("denied binary has no digest: give sha256 or sha512".to_string());
                }
                Ok(DeniedBinary {
                    sha256: raw.sha256,
                    sha512: raw.sha512,
                    reason: raw.reason.0,
                })
            },
        )
    }
}

/// Files at `path` may carry file capabilities (only these, when `capabilities` is given).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowedFileCapabilities {
    pub path: PathPattern,
    #[serde(default)]
    pub capabilities: Option<NonEmpty<Capability>>,
}

/// Findings that match every selector given are dropped.
#[derive(Debug, Clone)]
pub(crate) struct Exemption {
    pub namespaces: Option<Vec<NamePattern>>,
    pub pods: Option<Vec<NamePattern>>,
    pub containers: Option<Vec<NamePattern>>,
    pub kinds: Option<Vec<FindingKind>>,
    #[allow(dead_code)] // kept for the audit trail (Debug) and future reporting
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExemption {
    #[serde(default)]
    namespaces: Option<NonEmpty<NamePattern>>,
    #[serde(default)]
    pods: Option<NonEmpty<NamePattern>>,
    #[serde(default)]
    containers: Option<NonEmpty<NamePattern>>,
    #[serde(default)]
    kinds: Option<NonEmpty<Kind>>,
    reason: Text,
}

impl<'de> Deserialize<'de> for Exemption {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "an exemption (namespaces, pods, containers, kinds, reason)",
            |raw: RawExemption| {
                if raw.namespaces.is_none()
                    && raw.pods.is_none()
                    && raw.containers.is_none()
                    && raw.kinds.is_none()
                {
                    return Err(
                        "exemption selects nothing: give at least one of namespaces, \
                                pods, containers, kinds (use checks.disabled to turn a check off)"
                            .to_string(),
                    );
                }
                Ok(Exemption {
                    namespaces: raw.namespaces.map(|v| v.0),
                    pods: raw.pods.map(|v| v.0),
                    containers: raw.containers.map(|v| v.0),
                    kinds: raw.kinds.map(|v| v.0.into_iter().map(|k| k.0).collect()),
                    reason: raw.reason.0,
                })
            },
        )
    }
}

/// A capability name (`CAP_SYS_ADMIN`, `sys_admin`, `CAP_45`), as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capability(pub u32);

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a capability name such as CAP_SYS_ADMIN", |text| {
            capability_number(text).map(Capability).ok_or_else(|| {
                format!("unknown capability {text:?} (want a name like CAP_NET_ADMIN)")
            })
        })
    }
}

/// A finding kind, `runs_as_root` (or its Event reason, `RunsAsRoot`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind(pub FindingKind);

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a finding kind such as runs_as_root", |text| {
            text.parse::<FindingKind>()
                .map(Kind)
                .map_err(|e| e.to_string())
        })
    }
}

struct SeverityName(Severity);

impl<'de> Deserialize<'de> for SeverityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a severity (low, medium, high, critical)", |text| {
            text.parse::<Severity>()
                .map(SeverityName)
                .map_err(|e| e.to_string())
        })
    }
}

/// A SHA-256 digest, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sha256(pub String);

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a SHA-256 digest (64 hex digits)", |text| {
            parse_digest(text, "sha256", 64).map(Sha256)
        })
    }
}

/// A SHA-512 digest, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sha512(pub String);

impl<'de> Deserialize<'de> for Sha512 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a SHA-512 digest (128 hex digits)", |text| {
            parse_digest(text, "sha512", 128).map(Sha512)
        })
    }
}

/// Accepts `HEX` or `algo:HEX`, any case; returns lowercase hex.
fn parse_digest(text: &str, algo: &str, hex_len: usize) -> Result<String, String> {
    let label = if algo == "sha256" {
        "SHA-256"
    } else {
        "SHA-512"
    };
    let trimmed = text.trim();
    let hex = match trimmed.split_once(':') {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case(algo) => rest,
        Some((prefix, _)) => {
            return Err(format!(
                "not a {label} digest: prefix {prefix:?} (only \"{algo}:\" may prefix it)"
            ))
        }
        None => trimmed,
    };
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "not a {label} digest (want {hex_len} hex digits, found other characters)"
        ));
    }
    if hex.len() != hex_len {
        let hint = match (algo, hex.len()) {
            ("sha256", 128) => ": this looks like a SHA-512, list it under sha512",
            ("sha512", 64) => ": this looks like a SHA-256, list it under sha256",
            _ => "",
        };
        return Err(format!(
            "not a {label} digest (want {hex_len} hex digits, got {}){hint}",
            hex.len()
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// A glob over absolute paths: `*` and `?` stay within one path segment, `**` crosses them.
#[derive(Debug, Clone)]
pub(crate) struct PathPattern {
    pub text: String,
    matcher: Matcher,
}

impl PathPattern {
    pub fn is_match(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a path glob such as /usr/bin/*", |text| {
            if !(text.starts_with('/') || text.starts_with("**")) {
                return Err(format!(
                    "path pattern {text:?} is not absolute (start it with / or **/)"
                ));
            }
            parse_glob(text, true).map(|glob| PathPattern {
                text: text.to_string(),
                matcher: Matcher::new(glob),
            })
        })
    }
}

/// A glob over names (namespaces, pods, containers, images): `*` matches any characters.
#[derive(Debug, Clone)]
pub(crate) struct NamePattern {
    #[allow(dead_code)] // shown by Debug
    pub text: String,
    matcher: Matcher,
}

impl NamePattern {
    pub fn is_match(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

impl<'de> Deserialize<'de> for NamePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a name glob such as kube-*", |text| {
            parse_glob(text, false).map(|glob| NamePattern {
                text: text.to_string(),
                matcher: Matcher::new(glob),
            })
        })
    }
}

/// The longest glob a policy may hold, in bytes. globset panics ("regex compilation
/// shouldn't fail") when a glob's regex outgrows the regex crate's size limit, which a
/// glob of a few hundred KB does: a bound far below that keeps every glob compilable.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// The most globs (path and name patterns together) one policy may hold. Each compiled
/// glob holds its own regex (several KB): 40,000 of them took the agent past 400 MiB.
pub const MAX_PATTERNS: usize = 1000;

/// Checks a glob and keeps it parsed; its matcher (the costly part, a regex) is built at its
/// first use, once the whole policy is known to hold at most [`MAX_PATTERNS`] globs.
fn parse_glob(text: &str, literal_separator: bool) -> Result<Glob, String> {
    if text.is_empty() {
        return Err("empty pattern".to_string());
    }
    if text.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "pattern is {} bytes, longer than the {MAX_PATTERN_BYTES} bytes a pattern may have",
            text.len()
        ));
    }
    GlobBuilder::new(text)
        .literal_separator(literal_separator)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("bad glob {text:?}: {}", e.kind()))
}

/// A parsed glob and, from its first use, its matcher.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    glob: Glob,
    compiled: OnceLock<GlobMatcher>,
}

impl Matcher {
    fn new(glob: Glob) -> Matcher {
        Matcher {
            glob,
            compiled: OnceLock::new(),
        }
    }

    fn is_match(&self, text: &str) -> bool {
        self.compiled
            .get_or_init(|| self.glob.compile_matcher())
            .is_match(text)
    }
}

/// The message for the glob past [`MAX_PATTERNS`].
pub(crate) fn too_many_patterns() -> String {
    format!("more than {MAX_PATTERNS} patterns in one policy (use fewer, broader globs)")
}

impl PolicySpec {
    /// Where each glob of the policy is, field by field in the order of [`PolicySpec`]'s
    /// fields and each list's entries in order.
    pub(crate) fn pattern_places(&self) -> impl Iterator<Item = Vec<Step>> + '_ {
        use Step::{Entry, Field};
        let trusted = self.trusted_binaries.iter().enumerate().flat_map(|(i, t)| {
            let at = |field| vec![Field("trusted_binaries"), Entry(i), Field(field)];
            std::iter::once(at("path")).chain(t.image.as_ref().map(|_| at("image")))
        });
        let setuid =
            (0..self.allowed_setuid.len()).map(|i| vec![Field("allowed_setuid"), Entry(i)]);
        let caps = (0..self.allowed_file_capabilities.len())
            .map(|i| vec![Field("allowed_file_capabilities"), Entry(i), Field("path")]);
        let exemptions = self.exemptions.iter().enumerate().flat_map(|(i, e)| {
            [
                ("namespaces", &e.namespaces),
                ("pods", &e.pods),
                ("containers", &e.containers),
            ]
            .into_iter()
            .flat_map(move |(name, list)| {
                let n = list.as_ref().map_or(0, Vec::len);
                (0..n).map(move |j| vec![Field("exemptions"), Entry(i), Field(name), Entry(j)])
            })
        });
        trusted.chain(setuid).chain(caps).chain(exemptions)
    }
}

/// A string that must not be blank.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a non-empty text", |text| {
            if text.trim().is_empty() {
                Err("must not be empty".to_string())
            } else {
                Ok(Text(text.trim().to_string()))
            }
        })
    }
}

/// A list that must hold at least one item (leave the field out instead of giving `[]`).
#[derive(Debug, Clone)]
pub(crate) struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NonEmpty<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-empty list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                if items.is_empty() {
                    return Err(de::Error::custom(
                        "empty list: leave the field out to match anything",
                    ));
                }
                Ok(NonEmpty(items))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// `field:` with no value (YAML null) reads as an empty list, so commenting out every item
/// of a list in a policy file keeps it valid.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Deserializes a scalar through `parse`, failing inside the visitor so the YAML front end
/// pins the error to the scalar.
fn scalar<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<'de, T> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, parse })
}

/// Deserializes a map into `R` (a derived struct), then runs `check` across its fields,
/// still inside the map visitor so an error is pinned to the entry.
fn checked<'de, D, R, T>(
    d: D,
    expecting: &'static str,
    check: fn(R) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de>,
{
    struct V<R, T> {
        expecting: &'static str,
        check: fn(R) -> Result<T, String>,
    }
    impl<'de, R: Deserialize<'de>, T> Visitor<'de> for V<R, T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.check)(raw).map_err(de::Error::custom)
        }
    }
    d.deserialize_map(V { expecting, check })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_normalise_and_refuse_wrong_lengths() {
        let upper = "A".repeat(64);
        assert_eq!(parse_digest(&upper, "sha256", 64), Ok("a".repeat(64)));
        assert_eq!(
            parse_digest(&format!("SHA256:{upper}"), "sha256", 64),
            Ok("a".repeat(64))
        );
        let err = parse_digest(&"a".repeat(128), "sha256", 64).unwrap_err();
        assert!(err.contains("looks like a SHA-512"), "{err}");
        let err = parse_digest(&format!("sha512:{}", "a".repeat(64)), "sha256", 64).unwrap_err();
        assert!(err.contains("prefix"), "{err}");
        assert!(parse_digest(&"g".repeat(64), "sha256", 64).is_err());
    }

    #[test]
    fn path_globs_keep_star_within_a_segment() {
        let m = parse_glob("/usr/bin/*", true).unwrap().compile_matcher();
        assert!(m.is_match("/usr/bin/passwd"));
        assert!(!m.is_match("/usr/bin/sub/passwd"));
        let m = parse_glob("**/passwd", true).unwrap().compile_matcher();
        assert!(m.is_match("/usr/bin/passwd"));
        let m = parse_glob("registry.k8s.io/kube-*", false)
            .unwrap()
            .compile_matcher();
        assert!(m.is_match("registry.k8s.io/kube-apiserver:v1.30.2"));
    }
}
