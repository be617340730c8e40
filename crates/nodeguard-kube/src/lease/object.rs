//! The Lease object to write: built from the one last read or written (so its
//! resourceVersion, labels and anyone else's annotations stay) and this renewal's heartbeat.
//! Pure.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp as JiffTimestamp;
use nodeguard_model::fleet::Heartbeat;
use std::collections::BTreeMap;

/// The prefix of the annotations this agent owns: any of them not in the heartbeat any more
/// (the certificate's, once TLS is off) is removed.
const OWNED_PREFIX: &str = "nodeguard.io/";

/// Who writes and for how long a renewal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub name: String,
    pub namespace: String,
    /// `spec.holderIdentity`: the pod's name, else the host's.
    pub identity: String,
    /// `spec.leaseDurationSeconds`: 3 × the interval.
    pub duration_seconds: i32,
}

/// The Lease to create or to replace `held` with, renewed at `now`.
pub(crate) fn lease(
    held: Option<&Lease>,
    holder: &Holder,
    beat: &Heartbeat,
    now: JiffTimestamp,
) -> Lease {
    let mut metadata = match held {
        Some(lease) => lease.metadata.clone(),
        None => ObjectMeta {
            name: Some(holder.name.clone()),
            namespace: Some(holder.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "nodeguard".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "nodeguard".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
    };
    let mut annotations = metadata.annotations.take().unwrap_or_default();
    annotations.retain(|k, _| !k.starts_with(OWNED_PREFIX));
    annotations.extend(beat.annotations());
    metadata.annotations = Some(annotations);
    // Managed fields are the server's; sending them back would only cost bytes.
    metadata.managed_fields = None;

    let previous = held.and_then(|l| l.spec.as_ref());
    let same_holder = previous
        .and_then(|s| s.holder_identity.as_deref())
        .is_some_and(|h| h == holder.identity);
    let (acquire_time, transitions) = match previous {
        Some(spec) if same_holder => (spec.acquire_time.clone(), spec.lease_transitions),
        Some(spec) => (
            Some(MicroTime(now)),
            Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
        ),
        None => (Some(MicroTime(now)), Some(0)),
    };
    Lease {
        metadata,
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.identity.clone()),
            lease_duration_seconds: Some(holder.duration_seconds),
            acquire_time,
            renew_time: Some(MicroTime(now)),
            lease_transitions: transitions,
            ..previous.cloned().unwrap_or_default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::fleet::{SeverityCounts, ANNOTATION_CERT_SHA256, ANNOTATION_FINDINGS};

    fn holder() -> Holder {
        Holder {
            name: "nodeguard-node-a".into(),
            namespace: "nodeguard".into(),
            identity: "nodeguard-abcde".into(),
            duration_seconds: 90,
        }
    }

    fn beat() -> Heartbeat {
        Heartbeat {
            node: "node-a".into(),
            api_port: 9717,
            api_endpoint: "0.0.0.0:9717".into(),
            cert_sha256: Some("ab".repeat(32)),
            version: "0.1.0".into(),
            last_scan: None,
            findings: SeverityCounts {
                critical: 2,
                ..Default::default()
            },
            interval_seconds: 30,
        }
    }

    fn at(text: &str) -> JiffTimestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_new_lease_names_its_holder_and_renews_now() {
        let now = at("2026-12-07T07:00:00Z");
        let lease = lease(None, &holder(), &beat(), now);
        let json = serde_json::to_value(&lease).unwrap();
        assert_eq!(json["metadata"]["name"], "nodeguard-node-a");
        assert_eq!(json["metadata"]["namespace"], "nodeguard");
        assert_eq!(json["spec"]["holderIdentity"], "nodeguard-abcde");
        assert_eq!(json["spec"]["leaseDurationSeconds"], 90);
        assert_eq!(json["spec"]["renewTime"], json["spec"]["acquireTime"]);
        assert!(json["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-07T07:00:00"));
        assert_eq!(
            json["metadata"]["annotations"][ANNOTATION_FINDINGS],
            "critical=2,high=0,medium=0,low=0"
        );
    }

    #[test]
    fn a_renewal_keeps_the_version_foreign_annotations_and_acquire_time() {
        let t0 = at("2026-12-07T07:00:00Z");
        let mut held = lease(None, &holder(), &beat(), t0);
        held.metadata.resource_version = Some("42".into());
        let annotations = held.metadata.annotations.as_mut().unwrap();
        annotations.insert("example.com/owner".into(), "sre".into());
        annotations.insert("nodeguard.io/obsolete".into(), "x".into());
        let mut plain = beat();
        plain.cert_sha256 = None;
        let t1 = at("2026-12-07T07:00:30Z");
        let next = lease(Some(&held), &holder(), &plain, t1);
        assert_eq!(next.metadata.resource_version.as_deref(), Some("42"));
        let a = next.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.get("example.com/owner").map(String::as_str), Some("sre"));
        assert!(!a.contains_key("nodeguard.io/obsolete"));
        assert!(!a.contains_key(ANNOTATION_CERT_SHA256), "TLS is off now");
        let spec = next.spec.unwrap();
        assert_eq!(spec.acquire_time, Some(MicroTime(t0)));
        assert_eq!(spec.renew_time, Some(MicroTime(t1)));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn a_new_holder_counts_a_transition() {
        let t0 = at("2026-12-07T07:00:00Z");
        let held = lease(None, &holder(), &beat(), t0);
        let mut other = holder();
        other.identity = "nodeguard-fghij".into();
        let t1 = at("2026-12-07T07:05:00Z");
        let spec = lease(Some(&held), &other, &beat(), t1).spec.unwrap();
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.acquire_time, Some(MicroTime(t1)));
    }
}
