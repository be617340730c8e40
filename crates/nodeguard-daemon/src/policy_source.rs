//! The policy the agent runs with: the one place that reads it, at start and on each reload,
//! and says what each policy it loads weakens.

use nodeguard_policy::{Policy, PolicyError};
use std::path::{Path, PathBuf};

/// Where the policy comes from: a file, or the built-in policy when none is configured.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    path: Option<PathBuf>,
}

/// Why a reload left the previous policy in force.
#[derive(Debug)]
pub(crate) enum ReloadFailure {
    /// No policy file is configured: there is nothing to re-read.
    NoFile,
    /// The file could not be read or is not a valid policy.
    Refused(PolicyError),
    /// The blocking task that read it failed.
    Failed(String),
}

impl PolicySource {
    pub fn new(path: Option<PathBuf>) -> PolicySource {
        PolicySource { path }
    }

    /// The policy file, if one is configured.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The first load, before the daemon runs (blocking): the file, else the built-in policy.
    /// A file that cannot be read or is invalid is an error: the agent does not start on
    /// another policy than the one configured. What the policy weakens is said when the
    /// daemon starts with it.
    pub fn load(&self) -> Result<Policy, PolicyError> {
        match &self.path {
            Some(path) => Policy::load(path),
            None => Ok(Policy::default()),
        }
    }

    /// A reload, read on a blocking thread; on success what the new policy weakens is said.
    pub(crate) async fn reload(&self) -> Result<Policy, ReloadFailure> {
        let path = self.path.clone().ok_or(ReloadFailure::NoFile)?;
        let policy = tokio::task::spawn_blocking(move || Policy::load(&path))
            .await
            .map_err(|e| ReloadFailure::Failed(e.to_string()))?
            .map_err(ReloadFailure::Refused)?;
        warn_weakened(&policy);
        Ok(policy)
    }
}

/// Says which checks `policy` weakens, one warning each: for the policy the daemon starts
/// with and for each reload, from here only.
pub(crate) fn warn_weakened(policy: &Policy) {
    for (setting, why) in &policy.weakened() {
        tracing::warn!(setting, "policy weakens a check: {why}");
    }
}

/// The settings `policy` weakens, sorted, each once (the state's `policy_weakened`).
pub(crate) fn weakened_settings(policy: &Policy) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = policy.weakened().into_iter().map(|(s, _)| s).collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broken_file_fails_the_first_load_and_is_refused_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "allowed_setuid: [relative/path]\n").unwrap();
        let source = PolicySource::new(Some(file.clone()));
        let err = source.load().unwrap_err().to_string();
        assert!(err.contains("is not absolute"), "{err}");
        assert!(matches!(
            source.reload().await,
            Err(ReloadFailure::Refused(_))
        ));
        std::fs::write(&file, "allowed_setuid: [/usr/bin/su]\n").unwrap();
        assert!(source.load().is_ok());
        assert!(source.reload().await.is_ok());
        // Without a file: the built-in policy, and nothing to reload.
        let none = PolicySource::new(None);
        assert_eq!(none.load().unwrap().summary(), Policy::default().summary());
        assert!(matches!(none.reload().await, Err(ReloadFailure::NoFile)));
    }
}
