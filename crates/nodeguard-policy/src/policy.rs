//! The validated, immutable policy.

use crate::error::PolicyError;
use crate::spec::{
    AllowedFileCapabilities, DeniedBinary, Exemption, PolicySpec, RequiredLimits, TrustedBinary,
};
use crate::yaml;
use nodeguard_model::capability::{capability_number, DEFAULT_DANGEROUS_CAPABILITIES};
use nodeguard_model::{decode_capabilities, FindingKind, Severity};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

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
}

impl Default for Policy {
    /// The built-in policy: `nodeguard_model::capability::DEFAULT_DANGEROUS_CAPABILITIES`,
    /// memory, CPU and pids limits required, every check on at its own severity, no trusted
    /// or denied digests, no allow-lists, no exemptions.
    fn default() -> Self {
        Policy::from_spec(PolicySpec::default())
    }
}

impl Policy {
    /// Parses and validates a policy. `origin` names the text in error messages (the file
    /// name). An empty text is the default policy.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let spec: PolicySpec = yaml::from_str(text, origin)?;
        Ok(Policy::from_spec(spec))
    }

    /// Reads and validates a policy file; errors name the file as given.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        Policy::from_yaml_str(&text, &origin)
    }

    /// What `nodeguard policy check` reads: a policy file, or a ConfigMap manifest whose every
    /// `data` key holds a policy (as `manifests/configmap.yaml`). Returns each policy with the
    /// name it was checked under: the file, or `FILE data.KEY`, which errors name too.
    pub fn load_file_or_configmap(path: &Path) -> Result<Vec<(String, Policy)>, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        let Some(data) = yaml::configmap_data(&text) else {
            return Ok(vec![(
                origin.clone(),
                Policy::from_yaml_str(&text, &origin)?,
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
                Policy::from_yaml_str(&text, &name).map(|p| (name, p))
            })
            .collect()
    }

    fn from_spec(spec: PolicySpec) -> Policy {
        let dangerous = match spec.dangerous_capabilities {
            Some(caps) => caps.iter().fold(0u64, |mask, cap| mask | (1u64 << cap.0)),
            None => DEFAULT_DANGEROUS_CAPABILITIES
                .iter()
                .filter_map(|name| capability_number(name))
                .fold(0u64, |mask, bit| mask | (1u64 << bit)),
        };
        Policy {
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
    pub fn dangerous_capabilities(&self) -> Vec<String> {
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

    /// True when a trusted or denied binary lists a SHA-512 digest: the scan must then
    /// compute `Process.sha512`, or those entries can never match.
    pub fn needs_sha512(&self) -> bool {
        self.trusted.iter().any(|t| !t.sha512.is_empty())
            || self.denied.iter().any(|d| d.sha512.is_some())
    }

    /// One line for the agent's startup log.
    pub fn summary(&self) -> String {
        format!(
            "{} dangerous capabilities, {} checks disabled, {} severity overrides, \
             {} trusted binaries, {} denied digests, {} allowed setuid patterns, \
             {} allowed file-capability patterns, {} exemptions",
            self.dangerous.count_ones(),
            self.disabled.len(),
            self.severity.len(),
            self.trusted.len(),
            self.denied.len(),
            self.allowed_setuid.len(),
            self.allowed_file_capabilities.len(),
            self.exemptions.len()
        )
    }
}

// The agent shares one policy between its scan and sink tasks.
const _: fn() = || {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Policy>();
    shareable::<PolicyError>();
};
