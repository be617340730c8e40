//! The validated, immutable policy.

use crate::bundle::{BundleIndex, DigestBundle, MAX_BUNDLES, MAX_BUNDLE_BYTES};
use crate::error::PolicyError;
use crate::place::{field_name, FailAt, Step};
use crate::spec::{
    AllowedFileCapabilities, BundlePath, DeniedBinary, Exemption, PolicySpec, RequiredLimits,
    TrustedBinary,
};
pub use crate::spec::{MAX_PATTERNS, MAX_PATTERN_BYTES};
use crate::yaml;
use nodeguard_model::capability::{capability_number, DEFAULT_DANGEROUS_CAPABILITIES};
use nodeguard_model::{decode_capabilities, CapabilityName, FindingKind, Severity};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

/// What nodeguard flags and how hard. Built only through [`Policy::default`],
/// [`Policy::from_yaml_str`] or [`Policy::load`], so a `Policy` is always whole and valid.
///
/// The file format is documented in `docs/policy.md`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Bit `n` set: capability `n` is dangerous.
    pub(crate) dangerous: u64,
    pub(crate) required_limits: RequiredLimits,
    pub(crate) disabled: BTreeSet<FindingKind>,
    pub(crate) severity: BTreeMap<FindingKind, Severity>,
    pub(crate) trusted: Vec<TrustedBinary>,
    pub(crate) denied: Vec<DeniedBinary>,
    pub(crate) allowed_setuid: Vec<crate::spec::PathPattern>,
    /// Distribution setuid/setgid files in image layers at `medium`, not `low`.
    pub(crate) strict_setuid: bool,
    pub(crate) allowed_file_capabilities: Vec<AllowedFileCapabilities>,
    pub(crate) exemptions: Vec<Exemption>,
    /// `digest_bundles`, merged by binary name.
    pub(crate) bundles: BundleIndex,
    /// Which processes the bundles check.
    pub(crate) bundles_apply_to: crate::spec::BundlesApplyTo,
}

impl Default for Policy {
    /// The built-in policy: `nodeguard_model::capability::DEFAULT_DANGEROUS_CAPABILITIES`,
    /// memory, CPU and pids limits required, every check on at its own severity, no trusted
    /// or denied digests, no allow-lists, no exemptions.
    fn default() -> Self {
        Policy::from_spec(PolicySpec::default(), &[])
    }
}

impl Policy {
    /// Parses and validates a policy. `origin` names the text in error messages (the file
    /// name). An empty text is the default policy.
    ///
    /// A text over [`MAX_POLICY_BYTES`], a glob over [`MAX_PATTERN_BYTES`] or more than
    /// [`MAX_PATTERNS`] globs is refused, so no policy can exhaust the agent's memory.
    ///
    /// Relative `digest_bundles` paths are read from the current directory here; [`Policy::load`]
    /// reads them from the policy file's directory.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        Policy::from_yaml_str_in(text, origin, None)
    }

    fn from_yaml_str_in(
        text: &str,
        origin: &str,
        base: Option<&Path>,
    ) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::Document {
                origin: origin.to_string(),
                message: format!(
                    "the policy is {} bytes, more than the {MAX_POLICY_BYTES} a policy may have",
                    text.len()
                ),
            });
        }
        let spec: PolicySpec = yaml::from_str(text, origin)?;
        // Parsing read nothing but `text` and compiled no glob; what spans the policy is
        // checked now, and a failure is reported at its node's line, as a bad value would be.
        let fail_at = |path: &[Step], message: &str| {
            yaml::locate(text, origin, FailAt { path, message }).unwrap_or_else(|| {
                PolicyError::Document {
                    origin: origin.to_string(),
                    message: format!("{}: {message}", field_name(path)),
                }
            })
        };
        if let Some(past) = spec.pattern_places().nth(MAX_PATTERNS) {
            return Err(fail_at(&past, &crate::spec::too_many_patterns()));
        }
        let bundles = read_bundles(&spec.digest_bundles, base).map_err(|(index, message)| {
            fail_at(
                &[Step::Field("digest_bundles"), Step::Entry(index)],
                &message,
            )
        })?;
        Ok(Policy::from_spec(spec, &bundles))
    }

    /// Reads and validates a policy file; errors name the file as given.
    ///
    /// Only a regular file is read (symlinks, as a ConfigMap mount has, are followed): it is
    /// opened non-blocking and checked with `fstat` before a byte is read, so a FIFO, a
    /// device or a socket is refused at once instead of blocking the reload. At most
    /// [`MAX_POLICY_BYTES`] + 1 bytes are read, and the read gives up after
    /// [`READ_TIMEOUT`] (a hung network filesystem).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = read_policy_file(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        Policy::from_yaml_str_in(&text, &origin, path.parent())
    }

    /// What `nodeguard policy check` reads: a policy file, or a ConfigMap manifest whose every
    /// `data` key holds a policy (as `manifests/configmap.yaml`). Returns each policy with the
    /// name it was checked under: the file, or `FILE data.KEY`, which errors name too.
    pub fn load_file_or_configmap(path: &Path) -> Result<Vec<(String, Policy)>, PolicyError> {
        let origin = path.display().to_string();
        // The same bounded, regular-file-only read as `load`: `policy check` is run on files
        // an operator did not write too.
        let text = read_policy_file(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        let Some(data) = yaml::configmap_data(&text) else {
            return Ok(vec![(
                origin.clone(),
                Policy::from_yaml_str_in(&text, &origin, path.parent())?,
            )]);
        };
        if data.is_empty() {
            return Err(PolicyError::Document {
                origin,
                message: "a ConfigMap without data: no policy to check".to_string(),
            });
        }
        data.into_iter()
            .map(|(key, text)| {
                let name = format!("{origin} data.{key}");
                Policy::from_yaml_str_in(&text, &name, path.parent()).map(|p| (name, p))
            })
            .collect()
    }

    fn from_spec(spec: PolicySpec, digest_bundles: &[(String, DigestBundle)]) -> Policy {
        let dangerous = match spec.dangerous_capabilities {
            Some(caps) => caps.iter().fold(0u64, |mask, cap| mask | (1u64 << cap.0)),
            None => DEFAULT_DANGEROUS_CAPABILITIES
                .iter()
                .filter_map(|name| capability_number(name))
                .fold(0u64, |mask, bit| mask | (1u64 << bit)),
        };
        let mut bundles = BundleIndex::default();
        for (text, bundle) in digest_bundles {
            bundles.add(text, bundle);
        }
        Policy {
            bundles,
            bundles_apply_to: spec.digest_bundles_apply_to,
            dangerous,
            required_limits: spec.required_limits,
            disabled: spec.checks.disabled.into_iter().map(|k| k.0).collect(),
            severity: spec.checks.severity.0,
            trusted: spec.trusted_binaries,
            denied: spec.denied_binaries,
            allowed_setuid: spec.allowed_setuid,
            strict_setuid: spec.strict_setuid,
            allowed_file_capabilities: spec.allowed_file_capabilities,
            exemptions: spec.exemptions,
        }
    }

    /// The capabilities this policy calls dangerous, lowest number first.
    pub fn dangerous_capabilities(&self) -> Vec<CapabilityName> {
        decode_capabilities(self.dangerous)
    }

    /// Which cgroup limits must be set: `(memory, cpu, pids)`.
    pub fn required_limits(&self) -> (bool, bool, bool) {
        let r = self.required_limits;
        (r.memory, r.cpu, r.pids)
    }

    /// Whether a check runs at all (not in `checks.disabled`).
    pub fn is_enabled(&self, kind: FindingKind) -> bool {
        !self.disabled.contains(&kind)
    }

    /// True when a trusted or denied binary lists a SHA-512 digest, or a digest bundle holds
    /// one without a SHA-256: the scan must then compute `Process.sha512`, or those entries
    /// can never match.
    pub fn needs_sha512(&self) -> bool {
        self.trusted.iter().any(|t| !t.sha512.is_empty())
            || self.denied.iter().any(|d| d.sha512.is_some())
            || self.bundles.needs_sha512()
    }

    /// Settings of this policy that switch a whole check off, each as
    /// `(setting, explanation)`. They are legal (an operator may mean them) but too
    /// dangerous to pass silently: the agent logs each at load and exports
    /// `nodeguard_policy_weakened{setting}`. Settings, a stable contract:
    /// `allowed_setuid` (a pattern allows setuid/setgid files anywhere),
    /// `allowed_file_capabilities` (a pattern allows any file capability anywhere),
    /// `exemptions` (an exemption matches every pod), `checks_disabled` (every check is
    /// off), `dangerous_capabilities` (the list is empty), `required_limits` (no limit is
    /// required).
    pub fn weakened(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(g) = self.allowed_setuid.iter().find(|g| matches_any_path(g)) {
            out.push((
                "allowed_setuid",
                format!(
                    "allowed_setuid pattern {:?} matches every path: no image setuid/setgid file is reported",
                    g.text
                ),
            ));
        }
        if let Some(a) = self
            .allowed_file_capabilities
            .iter()
            .find(|a| a.capabilities.is_none() && matches_any_path(&a.path))
        {
            out.push((
                "allowed_file_capabilities",
                format!(
                    "allowed_file_capabilities pattern {:?} allows every capability on every path",
                    a.path.text
                ),
            ));
        }
        if let Some((i, e)) = self
            .exemptions
            .iter()
            .enumerate()
            .find(|(_, e)| exempts_every_pod(e))
        {
            let what = match &e.kinds {
                None => "every finding".to_string(),
                Some(kinds) => kinds
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            out.push((
                "exemptions",
                format!("exemptions[{i}] matches every namespace, pod and container: {what} never reported for pods"),
            ));
        }
        if FindingKind::ALL.iter().all(|k| self.disabled.contains(k)) {
            out.push((
                "checks_disabled",
                "checks.disabled lists every finding kind: nothing is ever reported".to_string(),
            ));
        }
        if self.dangerous == 0 {
            out.push((
                "dangerous_capabilities",
                "dangerous_capabilities is empty: no process capability is reported".to_string(),
            ));
        }
        let r = self.required_limits;
        if !(r.memory || r.cpu || r.pids) {
            out.push((
                "required_limits",
                "required_limits are all false: missing limits are never reported".to_string(),
            ));
        }
        out
    }

    /// One line for the agent's startup log.
    pub fn summary(&self) -> String {
        format!(
            "{} dangerous capabilities, {} checks disabled, {} severity overrides, \
             {} trusted binaries, {} denied digests, {} allowed setuid patterns, \
             {} allowed file-capability patterns, {} exemptions, \
             {} digest bundles ({} binary names)",
            self.dangerous.count_ones(),
            self.disabled.len(),
            self.severity.len(),
            self.trusted.len(),
            self.denied.len(),
            self.allowed_setuid.len(),
            self.allowed_file_capabilities.len(),
            self.exemptions.len(),
            self.bundles.bundles,
            self.bundles.by_name.len()
        )
    }
}

/// Paths no allow-list meant for a few binaries would match all of.
const PROBE_PATHS: [&str; 4] = [
    "/usr/bin/passwd",
    "/tmp/.x/evil",
    "/a",
    "/var/lib/deep/er/still/file.bin",
];

fn matches_any_path(g: &crate::spec::PathPattern) -> bool {
    PROBE_PATHS.iter().all(|p| g.is_match(p))
}

/// Names no selector meant for some pods would match all of.
const PROBE_NAMES: [&str; 4] = ["kube-system", "default", "x", "prod-payments-7f9c"];

fn exempts_every_pod(e: &Exemption) -> bool {
    let all = |globs: &Option<Vec<crate::spec::NamePattern>>| match globs {
        None => true,
        Some(globs) => PROBE_NAMES
            .iter()
            .all(|n| globs.iter().any(|g| g.is_match(n))),
    };
    all(&e.namespaces) && all(&e.pods) && all(&e.containers)
}

/// The largest policy file, in bytes (a ConfigMap holds up to 1 MiB; a policy needs far less).
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// How long reading a policy file may take before the load is refused.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn read_policy_file(path: &Path) -> io::Result<String> {
    let bytes = read_bounded_file(path, MAX_POLICY_BYTES, "a policy")?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The bundle files a policy names, each as (the path as written, the bundle), read from
/// `base` (the policy file's directory) when relative. A failure is `(entry index, message)`:
/// more than [`MAX_BUNDLES`] (at the first one past it, before any is read), a file that
/// cannot be read, or one that is not a bundle.
fn read_bundles(
    paths: &[BundlePath],
    base: Option<&Path>,
) -> Result<Vec<(String, DigestBundle)>, (usize, String)> {
    if paths.len() > MAX_BUNDLES {
        return Err((
            MAX_BUNDLES,
            format!("more than {MAX_BUNDLES} digest bundles in one policy"),
        ));
    }
    paths
        .iter()
        .enumerate()
        .map(|(index, p)| {
            read_bundle(&p.text, base)
                .map(|bundle| (p.text.clone(), bundle))
                .map_err(|message| (index, message))
        })
        .collect()
}

fn read_bundle(text: &str, base: Option<&Path>) -> Result<DigestBundle, String> {
    let path = Path::new(text);
    let full = match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    let bytes = read_bounded_file(&full, MAX_BUNDLE_BYTES, "a digest bundle")
        .map_err(|e| format!("digest bundle {}: cannot read: {e}", full.display()))?;
    DigestBundle::from_json_slice(&bytes).map_err(|e| match e.line {
        0 => format!("digest bundle {}: {}", full.display(), e.message),
        _ => format!("digest bundle {}:{e}", full.display()),
    })
}

/// Reads a regular file of at most `max` bytes (a FIFO, device or socket is refused before a
/// byte is read), giving up after [`READ_TIMEOUT`]; `what` names it in errors. The read runs
/// on its own thread so a filesystem that never answers cannot hold the caller (the daemon's
/// reload) past the timeout; such a thread is left behind.
pub(crate) fn read_bounded_file(
    path: &Path,
    max: usize,
    what: &'static str,
) -> io::Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("policy-read".into())
        .spawn(move || {
            let _ = tx.send(read_regular_bytes(&path, max, what));
        })?;
    match rx.recv_timeout(READ_TIMEOUT) {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("reading took longer than {}s", READ_TIMEOUT.as_secs()),
        )),
    }
}

/// Reads through the agent's one guarded open (`nodeguard_hash::open_regular`: non-blocking,
/// `fstat` says regular file within the size cap before a byte is read), then at most one
/// byte past the cap, so a file that grows while read is refused too.
fn read_regular_bytes(path: &Path, max: usize, what: &'static str) -> io::Result<Vec<u8>> {
    use nodeguard_hash::Error as OpenError;
    let (file, meta) = nodeguard_hash::open_regular(path, max as u64).map_err(|e| match e {
        OpenError::Open { source, .. } | OpenError::Read { source, .. } => source,
        OpenError::NotRegular { kind, .. } => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not a regular file but a {kind} ({what} is never read from a FIFO, device or socket)"
            ),
        ),
        OpenError::TooLarge { size, .. } => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the file is {size} bytes, more than the {max} {what} may have"),
        ),
        other => io::Error::other(other.to_string()),
    })?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the file grew past the {max} bytes {what} may have"),
        ));
    }
    Ok(bytes)
}

// The agent shares one policy between its scan and sink tasks.
const _: fn() = || {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Policy>();
    shareable::<PolicyError>();
};
