//! nodeguard's policy: what to flag, and the rules that turn scan evidence into findings.
//!
//! A [`Policy`] is read from YAML (the format is documented in `docs/policy.md`, with a
//! commented example in `manifests/policy.example.yaml`) and validated whole: a bad digest,
//! glob, capability, finding kind, severity or an unknown field refuses the entire file with
//! a [`PolicyError`] that names the file, `line:column` and the field path. [`evaluate`]
//! then applies it to what one scan saw and returns the findings, sorted and deduplicated.
//!
//! This is the only nodeguard crate that links a YAML parser, and only `yaml.rs` names it.
//!
//! ```
//! use nodeguard_policy::{evaluate, Evidence, Policy};
//!
//! let policy = Policy::from_yaml_str(
//!     "checks:\n  severity:\n    runs_as_root: high\n",
//!     "policy.yaml",
//! )?;
//! let evidence = Evidence {
//!     processes: &[], containers: &[], files: &[], cap_last_cap: 40, host_bounding: None, gaps: &[],
//! };
//! assert!(evaluate(&policy, &evidence).is_empty());
//!
//! let err = Policy::from_yaml_str("allowed_setuid: [usr/bin/su]\n", "policy.yaml").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "policy.yaml:1:18: allowed_setuid[0]: path pattern \"usr/bin/su\" is not absolute (start it with / or **/)"
//! );
//! # Ok::<(), nodeguard_policy::PolicyError>(())
//! ```

pub mod bundle;
mod distro_setuid;
mod error;
mod evaluate;
mod image_content;
mod place;
mod policy;
mod spec;
mod yaml;

pub use bundle::{BundleDigest, DigestBundle, DigestSource};
pub use error::PolicyError;
pub use evaluate::{evaluate, Evidence, FsGap};
pub use policy::{Policy, MAX_PATTERNS, MAX_PATTERN_BYTES, MAX_POLICY_BYTES, READ_TIMEOUT};
