//! The fleet contract: the heartbeat Lease every agent keeps, and what `nodeguard fleet`
//! reads from it.
//!
//! Each agent keeps a `coordination.k8s.io/v1` Lease named [`lease_name`]`(node)` in its own
//! namespace, the way kubelet keeps its node Lease: `spec.holderIdentity` (the pod),
//! `spec.leaseDurationSeconds` (3 × the interval), `spec.renewTime` (every interval), and the
//! annotations below ([`Heartbeat`]). Everything in a Lease was written by an agent, so a
//! reader treats it as a claim: the address to dial comes from the Node object, never from
//! here (only the port does, [`ANNOTATION_API_PORT`]), and a node's name is the Lease's
//! name, not what its annotation says.
//!
//! No I/O: the kube crate writes and reads Leases, this module says what they mean.

use crate::report::Timestamp;
use crate::Severity;
use std::collections::BTreeMap;
use std::fmt;

/// Where the agents' Leases live unless told otherwise (`manifests/namespace.yaml`).
pub const DEFAULT_NAMESPACE: &str = "nodeguard";
/// The port the agent's API listens on by default (`--listen`, the DaemonSet's 9717).
pub const DEFAULT_API_PORT: u16 = 9717;
/// The prefix of every agent's Lease name.
pub const LEASE_NAME_PREFIX: &str = "nodeguard-";
/// A Lease not renewed for this many of its agent's intervals is stale.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// The node's name as the agent knows it (informational: the Lease's name is authoritative).
pub const ANNOTATION_NODE: &str = "nodeguard.io/node";
/// The port the agent's API listens on. A fleet query dials the Node's own address at this
/// port: a hostile node can only point at another port of itself.
pub const ANNOTATION_API_PORT: &str = "nodeguard.io/api-port";
/// `addr:port` the API listens on, informational only (never dialled).
pub const ANNOTATION_API_ENDPOINT: &str = "nodeguard.io/api-endpoint";
/// Lower-case hex SHA-256 of the DER of the API's serving leaf certificate; absent when the
/// API serves plain HTTP.
pub const ANNOTATION_CERT_SHA256: &str = "nodeguard.io/cert-sha256";
/// The agent's version (`CARGO_PKG_VERSION`).
pub const ANNOTATION_VERSION: &str = "nodeguard.io/version";
/// RFC 3339 time of the agent's last completed full process scan.
pub const ANNOTATION_LAST_SCAN: &str = "nodeguard.io/last-scan";
/// Open findings per severity: `critical=N,high=N,medium=N,low=N`.
pub const ANNOTATION_FINDINGS: &str = "nodeguard.io/findings";
/// The agent's scan interval in whole seconds (the Lease renews once per interval).
pub const ANNOTATION_INTERVAL_SECONDS: &str = "nodeguard.io/interval-seconds";

/// Longest name Kubernetes accepts for a Lease (a DNS subdomain).
const MAX_NAME_LEN: usize = 253;

/// The Lease name of `node`'s agent: `nodeguard-<node>`. A node name too long for the prefix
/// (node names may use all 253 characters) is cut and given a hash of the whole name, so two
/// long names never share a Lease.
pub fn lease_name(node: &str) -> String {
    let name = format!("{LEASE_NAME_PREFIX}{node}");
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    let hash = crate::fnv1a(crate::FNV_BASIS, node.bytes());
    let suffix = format!("-{hash:016x}");
    let keep = MAX_NAME_LEN - LEASE_NAME_PREFIX.len() - suffix.len();
    // Node names are DNS subdomains (ASCII), so any byte index is a character boundary;
    // be safe for anything else.
    let mut cut = keep.min(node.len());
    while !node.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = node[..cut].trim_end_matches(['.', '-']);
    format!("{LEASE_NAME_PREFIX}{head}{suffix}")
}

/// `openssl x509 -fingerprint -sha256` style (`AB:CD:…`) or bare hex, as the lower-case hex
/// of [`ANNOTATION_CERT_SHA256`]; `None` unless it is 32 bytes of hex.
pub fn cert_sha256_hex(fingerprint: &str) -> Option<String> {
    let hex: String = fingerprint
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Open findings per severity, as [`ANNOTATION_FINDINGS`] carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
}

impl SeverityCounts {
    /// Counts the severities of `severities`.
    pub fn count(severities: impl IntoIterator<Item = Severity>) -> SeverityCounts {
        let mut counts = SeverityCounts::default();
        for severity in severities {
            let n = counts.get_mut(severity);
            *n = n.saturating_add(1);
        }
        counts
    }

    pub fn get(&self, severity: Severity) -> u64 {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
        }
    }

    fn get_mut(&mut self, severity: Severity) -> &mut u64 {
        match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
        }
    }

    /// Parses `critical=N,high=N,medium=N,low=N` (any order, spaces allowed, missing ones 0).
    /// `None` for anything else: an unknown severity, a repeated one, a bad number, or text
    /// longer than a real annotation could be.
    pub fn parse(text: &str) -> Option<SeverityCounts> {
        if text.len() > 200 {
            return None;
        }
        let mut counts = SeverityCounts::default();
        let mut seen = [false; 4];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=')?;
            let severity = Severity::ALL
                .into_iter()
                .find(|s| s.as_str() == name.trim())?;
            let i = severity as usize;
            if std::mem::replace(&mut seen[i], true) {
                return None;
            }
            *counts.get_mut(severity) = value.trim().parse().ok()?;
        }
        Some(counts)
    }
}

impl fmt::Display for SeverityCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "critical={},high={},medium={},low={}",
            self.critical, self.high, self.medium, self.low
        )
    }
}

/// What an agent says about itself in its Lease's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: String,
    pub api_port: u16,
    /// `addr:port` the API listens on (informational).
    pub api_endpoint: String,
    /// Lower-case hex SHA-256 of the serving certificate; `None` for plain HTTP.
    pub cert_sha256: Option<String>,
    pub version: String,
    /// The last completed full process scan; `None` before the first.
    pub last_scan: Option<Timestamp>,
    pub findings: SeverityCounts,
    pub interval_seconds: u64,
}

impl Heartbeat {
    /// The annotations to write, keyed by the `ANNOTATION_*` names.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            out.insert(k.to_string(), v);
        };
        put(ANNOTATION_NODE, self.node.clone());
        put(ANNOTATION_API_PORT, self.api_port.to_string());
        put(ANNOTATION_API_ENDPOINT, self.api_endpoint.clone());
        if let Some(cert) = &self.cert_sha256 {
            put(ANNOTATION_CERT_SHA256, cert.clone());
        }
        put(ANNOTATION_VERSION, self.version.clone());
        if let Some(at) = self.last_scan {
            put(ANNOTATION_LAST_SCAN, at.to_string());
        }
        put(ANNOTATION_FINDINGS, self.findings.to_string());
        put(
            ANNOTATION_INTERVAL_SECONDS,
            self.interval_seconds.to_string(),
        );
        out
    }
}

/// Writes of the heartbeat Lease since the agent started (`nodeguard_lease_writes_total`).
/// Each is one request; at most one a renewal interval succeeds, plus a create after a
/// deletion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// The Lease was created (at start, or again after someone deleted it).
    pub created: u64,
    /// The Lease was renewed (its annotations, if they changed, rode on the same write).
    pub renewed: u64,
    /// A write (or the read before one) was refused or failed in transit.
    pub failed: u64,
}

/// What a reader makes of a Lease's annotations: each field on its own, `None` when absent
/// or not well formed (an old or hostile agent must not make a reader fail).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatClaims {
    pub node: Option<String>,
    pub api_port: Option<u16>,
    pub api_endpoint: Option<String>,
    pub cert_sha256: Option<String>,
    pub version: Option<String>,
    pub last_scan: Option<Timestamp>,
    pub findings: Option<SeverityCounts>,
    pub interval_seconds: Option<u64>,
}

/// Longest annotation value a reader keeps (a version, a node name, an endpoint).
const MAX_CLAIM_LEN: usize = 253;

impl HeartbeatClaims {
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> HeartbeatClaims {
        let get = |k: &str| {
            annotations
                .get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty() && v.len() <= MAX_CLAIM_LEN)
        };
        HeartbeatClaims {
            node: get(ANNOTATION_NODE).map(str::to_string),
            api_port: get(ANNOTATION_API_PORT)
                .and_then(|v| v.parse().ok())
                .filter(|p| *p != 0),
            api_endpoint: get(ANNOTATION_API_ENDPOINT).map(str::to_string),
            cert_sha256: get(ANNOTATION_CERT_SHA256).and_then(cert_sha256_hex),
            version: get(ANNOTATION_VERSION).map(str::to_string),
            last_scan: get(ANNOTATION_LAST_SCAN).and_then(|v| Timestamp::parse(v).ok()),
            findings: get(ANNOTATION_FINDINGS).and_then(SeverityCounts::parse),
            interval_seconds: get(ANNOTATION_INTERVAL_SECONDS)
                .and_then(|v| v.parse().ok())
                .filter(|s| *s > 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn lease_names_are_prefixed_and_long_node_names_stay_distinct_and_valid() {
        assert_eq!(lease_name("node-a"), "nodeguard-node-a");
        let a = format!("{}a", "x".repeat(252));
        let b = format!("{}b", "x".repeat(252));
        let (la, lb) = (lease_name(&a), lease_name(&b));
        assert!(la.len() <= 253 && lb.len() <= 253, "{}", la.len());
        assert_ne!(la, lb);
        assert!(la.starts_with("nodeguard-xxx"));
        assert_eq!(la, lease_name(&a), "the same node gets the same name");
    }

    #[test]
    fn findings_round_trip_and_bad_text_is_refused() {
        let counts = SeverityCounts {
            critical: 1,
            high: 2,
            medium: 0,
            low: 7,
        };
        let text = counts.to_string();
        assert_eq!(text, "critical=1,high=2,medium=0,low=7");
        assert_eq!(SeverityCounts::parse(&text), Some(counts));
        assert_eq!(
            SeverityCounts::parse(" low = 3 , critical=1"),
            Some(SeverityCounts {
                critical: 1,
                low: 3,
                ..Default::default()
            })
        );
        for bad in [
            "critical=-1",
            "severe=1",
            "high=1,high=2",
            "high",
            "high=99999999999999999999999",
        ] {
            assert_eq!(SeverityCounts::parse(bad), None, "{bad}");
        }
        assert_eq!(SeverityCounts::parse(&"low=1,".repeat(100)), None);
    }

    #[test]
    fn counts_follow_severities() {
        let c = SeverityCounts::count([Severity::High, Severity::High, Severity::Low]);
        assert_eq!((c.high, c.low, c.critical), (2, 1, 0));
        assert_eq!(c.get(Severity::High), 2);
    }

    #[test]
    fn fingerprints_normalise_to_lower_hex() {
        let upper = (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>();
        let want: String = upper.concat().to_lowercase();
        assert_eq!(cert_sha256_hex(&upper.join(":")).as_deref(), Some(&*want));
        assert_eq!(cert_sha256_hex(&want).as_deref(), Some(&*want));
        assert_eq!(cert_sha256_hex("abcd"), None);
        assert_eq!(cert_sha256_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn annotations_read_back_and_hostile_values_are_dropped() {
        let beat = Heartbeat {
            node: "node-a".into(),
            api_port: 9717,
            api_endpoint: "10.0.0.1:9717".into(),
            cert_sha256: Some("ab".repeat(32)),
            version: "0.1.0".into(),
            last_scan: Some(Timestamp(UNIX_EPOCH + Duration::from_secs(1_800_000_000))),
            findings: SeverityCounts {
                high: 3,
                ..Default::default()
            },
            interval_seconds: 30,
        };
        let mut annotations = beat.annotations();
        let claims = HeartbeatClaims::from_annotations(&annotations);
        assert_eq!(claims.node.as_deref(), Some("node-a"));
        assert_eq!(claims.api_port, Some(9717));
        assert_eq!(claims.cert_sha256, beat.cert_sha256);
        assert_eq!(claims.last_scan, beat.last_scan);
        assert_eq!(claims.findings, Some(beat.findings));
        assert_eq!(claims.interval_seconds, Some(30));

        annotations.insert(ANNOTATION_API_PORT.into(), "70000".into());
        annotations.insert(ANNOTATION_INTERVAL_SECONDS.into(), "0".into());
        annotations.insert(ANNOTATION_VERSION.into(), "v".repeat(10_000));
        annotations.insert(ANNOTATION_LAST_SCAN.into(), "yesterday".into());
        let claims = HeartbeatClaims::from_annotations(&annotations);
        assert_eq!(claims.api_port, None);
        assert_eq!(claims.interval_seconds, None);
        assert_eq!(claims.version, None);
        assert_eq!(claims.last_scan, None);
        assert_eq!(
            HeartbeatClaims::from_annotations(&BTreeMap::new()),
            HeartbeatClaims::default()
        );
    }
}
