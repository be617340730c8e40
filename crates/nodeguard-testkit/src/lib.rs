//! Test support shared by the kube crate's tests and the agent's end-to-end tests.
//!
//! - [`fake`]: a fake Kubernetes API server over real HTTP that authenticates a token,
//!   authorizes with a ClusterRole file and validates what it is sent as a real
//!   kube-apiserver v1.20.2 does.
//! - [`model`]: builders for `Container` and `PodRef`.
//!
//! Only ever a dev-dependency (`tests/dependency_rules.rs` checks it): it links axum,
//! k8s-openapi and serde_yaml, which the agent's own crates keep to one crate each.

pub mod fake;
pub mod model;
