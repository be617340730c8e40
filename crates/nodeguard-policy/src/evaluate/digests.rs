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

/// One digest the policy names, by algorithm: a trusted entry's, a bundle's or a denied one.
#[derive(Debug, Clone, Copy)]
enum Wanted<'w> {
    Sha256(&'w str),
    Sha512(&'w str),
}

impl<'a> Digests<'a> {
    /// The computed digest `want` can be compared with, if that algorithm was computed.
    fn comparable(self, want: Wanted) -> Option<&'a str> {
        match want {
            Wanted::Sha256(_) => self.sha256,
            Wanted::Sha512(_) => self.sha512,
        }
    }

    /// Whether the computed digest of `want`'s algorithm is `want` (hex in either case).
    fn matches(self, want: Wanted) -> bool {
        let wanted = match want {
            Wanted::Sha256(w) | Wanted::Sha512(w) => w,
        };
        self.comparable(want)
            .is_some_and(|got| wanted.eq_ignore_ascii_case(got))
    }
}

/// The first denied entry either digest matches: `(algorithm, digest, reason)`.
pub(super) fn denied<'p>(
    policy: &'p Policy,
    digests: Digests,
) -> Option<(&'static str, String, &'p str)> {
    policy.denied.iter().find_map(|d| {
        let by256 = d.sha256.as_ref().map(|w| Wanted::Sha256(&w.0));
        let by512 = d.sha512.as_ref().map(|w| Wanted::Sha512(&w.0));
        by256
            .into_iter()
            .chain(by512)
            .find(|want| digests.matches(*want))
            .map(|want| match want {
                Wanted::Sha256(w) => ("sha256", w.to_string(), d.reason.as_str()),
                Wanted::Sha512(w) => ("sha512", w.to_string(), d.reason.as_str()),
            })
    })
}

pub(super) enum Verdict {
    /// Nothing covers this path in this scope: no trusted entry, or no bundle entry for its
    /// name.
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
    let mut covering = policy
        .trusted
        .iter()
        .filter(|entry| {
            let image_ok = match (&entry.image, scope) {
                (None, _) => true,
                (Some(_), Scope::Host) => false,
                (Some(_), Scope::Container(_, None, _)) => true,
                (Some(glob), Scope::Container(_, Some(image), _)) => glob.is_match(image),
            };
            image_ok && entry.path.is_match(path)
        })
        .peekable();
    if covering.peek().is_none() {
        return Verdict::NotCovered;
    }
    let wanted = covering.flat_map(|entry| {
        let sha256 = entry.sha256.iter().map(|d| Wanted::Sha256(&d.0));
        sha256.chain(entry.sha512.iter().map(|d| Wanted::Sha512(&d.0)))
    });
    compare(wanted, digests)
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
    let wanted = known.iter().flat_map(|k| {
        let sha256 = k.sha256.as_deref().map(Wanted::Sha256);
        sha256
            .into_iter()
            .chain(k.sha512.as_deref().map(Wanted::Sha512))
    });
    compare(wanted, digests)
}

/// Compares the computed digests with a pool of wanted ones (a path's trusted entries, or
/// a name's bundle entries): `Allowed` at the first match; else `Unexpected`, naming the
/// computed digests that had a wanted one of their algorithm to meet, or `Unverifiable`
/// when none had (hashing failed, or only SHA-512 is wanted and was not computed).
fn compare<'w>(wanted: impl Iterator<Item = Wanted<'w>>, digests: Digests) -> Verdict {
    let mut compared256 = false;
    let mut compared512 = false;
    for want in wanted {
        if digests.comparable(want).is_none() {
            continue;
        }
        match want {
            Wanted::Sha256(_) => compared256 = true,
            Wanted::Sha512(_) => compared512 = true,
        }
        if digests.matches(want) {
            return Verdict::Allowed;
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
