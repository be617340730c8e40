//! Digests compared with what the policy wants: denied digests, trusted binaries and
//! digest bundles.

use super::Scope;
use crate::policy::Policy;
use crate::spec::BundlesApplyTo;
use nodeguard_model::text::cut;
use nodeguard_model::Finding;

pub(super) fn with_digest(finding: Finding, sha256: Option<&str>) -> Finding {
    match sha256 {
        Some(digest) => finding.with_sha256(digest),
        None => finding,
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Digests<'a> {
    pub(super) sha256: Option<&'a str>,
    pub(super) sha512: Option<&'a str>,
}

/// The first denied entry either digest matches: `(algorithm, digest, reason)`.
pub(super) fn denied<'p>(
    policy: &'p Policy,
    digests: Digests,
) -> Option<(&'static str, String, &'p str)> {
    policy.denied.iter().find_map(|d| {
        let by256 = d
            .sha256
            .as_ref()
            .zip(digests.sha256)
            .filter(|(want, got)| want.0.eq_ignore_ascii_case(got))
            .map(|(want, _)| ("sha256", want.0.clone()));
        let by512 = d
            .sha512
            .as_ref()
            .zip(digests.sha512)
            .filter(|(want, got)| want.0.eq_ignore_ascii_case(got))
            .map(|(want, _)| ("sha512", want.0.clone()));
        by256
            .or(by512)
            .map(|(algo, digest)| (algo, digest, d.reason.as_str()))
    })
}

pub(super) enum Verdict {
    /// No trusted entry covers this path (in this scope).
    NotCovered,
    Allowed,
    /// Covered, but no digest was computed that an entry lists (e.g. hashing failed, or
    /// only sha512 is listed and the scan did not compute it): nothing can be said.
    Unverifiable,
    /// Covered and compared, and no digest matched; says what was compared
    /// (`sha256 …`, `sha512 …`).
    Unexpected(String),
}

/// Checks `path` against every trusted entry that covers it; their digests pool together.
///
/// An entry with an `image` covers container paths only, and only containers whose image
/// matches — or is unknown (no pod metadata), so a missing API server never switches the
/// check off.
pub(super) fn trusted(policy: &Policy, scope: Scope, path: &str, digests: Digests) -> Verdict {
    let mut covered = false;
    let mut compared256 = false;
    let mut compared512 = false;
    for entry in &policy.trusted {
        let image_ok = match (&entry.image, scope) {
            (None, _) => true,
            (Some(_), Scope::Host) => false,
            (Some(_), Scope::Container(_, None, _)) => true,
            (Some(glob), Scope::Container(_, Some(image), _)) => glob.is_match(image),
        };
        if !image_ok || !entry.path.is_match(path) {
            continue;
        }
        covered = true;
        if let Some(got) = digests.sha256.filter(|_| !entry.sha256.is_empty()) {
            compared256 = true;
            if entry.sha256.iter().any(|d| d.0.eq_ignore_ascii_case(got)) {
                return Verdict::Allowed;
            }
        }
        if let Some(got) = digests.sha512.filter(|_| !entry.sha512.is_empty()) {
            compared512 = true;
            if entry.sha512.iter().any(|d| d.0.eq_ignore_ascii_case(got)) {
                return Verdict::Allowed;
            }
        }
    }
    let mut compared = Vec::new();
    if let Some(d) = digests.sha256.filter(|_| compared256) {
        compared.push(format!("sha256 {d}"));
    }
    if let Some(d) = digests.sha512.filter(|_| compared512) {
        compared.push(format!("sha512 {d}"));
    }
    match (covered, compared.is_empty()) {
        (false, _) => Verdict::NotCovered,
        (true, true) => Verdict::Unverifiable,
        (true, false) => Verdict::Unexpected(compared.join(", ")),
    }
}

/// The file name of an executable path: what digest bundles are keyed by.
pub(super) fn exe_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Checks an executable against the digest bundles' digests for its file name, pooled over
/// every bundle and release that lists the name, for the processes
/// `digest_bundles_apply_to` covers.
pub(super) fn bundled(policy: &Policy, scope: Scope, path: &str, digests: Digests) -> Verdict {
    let covered = match (policy.bundles_apply_to, scope) {
        (_, Scope::Host) | (BundlesApplyTo::All, _) => true,
        (BundlesApplyTo::HostAndKubeSystem, Scope::Container(_, _, namespace)) => {
            namespace == Some("kube-system")
        }
        (BundlesApplyTo::Host, Scope::Container(..)) => false,
    };
    if !covered {
        return Verdict::NotCovered;
    }
    let Some(known) = policy.bundles.by_name.get(exe_name(path)) else {
        return Verdict::NotCovered;
    };
    let mut compared256 = false;
    let mut compared512 = false;
    for k in known {
        if let (Some(want), Some(got)) = (k.sha256.as_deref(), digests.sha256) {
            compared256 = true;
            if want.eq_ignore_ascii_case(got) {
                return Verdict::Allowed;
            }
        }
        if let (Some(want), Some(got)) = (k.sha512.as_deref(), digests.sha512) {
            compared512 = true;
            if want.eq_ignore_ascii_case(got) {
                return Verdict::Allowed;
            }
        }
    }
    let mut compared = Vec::new();
    if let Some(d) = digests.sha256.filter(|_| compared256) {
        compared.push(format!("sha256 {d}"));
    }
    if let Some(d) = digests.sha512.filter(|_| compared512) {
        compared.push(format!("sha512 {d}"));
    }
    if compared.is_empty() {
        Verdict::Unverifiable
    } else {
        Verdict::Unexpected(compared.join(", "))
    }
}

/// Where the bundles' digests for this executable's name came from, for a message: the
/// bundle file and the entry's first source, for at most three entries.
pub(super) fn bundle_sources(policy: &Policy, path: &str) -> String {
    let Some(known) = policy.bundles.by_name.get(exe_name(path)) else {
        return String::new();
    };
    let mut parts: Vec<String> = known
        .iter()
        .take(3)
        .map(|k| {
            format!(
                "digest bundle {} (from {})",
                cut(&k.bundle, 200),
                cut(&k.source, 300)
            )
        })
        .collect();
    if known.len() > 3 {
        parts.push(format!("{} more", known.len() - 3));
    }
    parts.join("; ")
}
