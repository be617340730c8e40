//! The rules on setuid/setgid and file-capability files found in container filesystems.

use super::digests::{denied, trusted, with_digest, Digests, Verdict};
use super::found::Found;
use super::Scope;
use crate::policy::Policy;
use nodeguard_model::capability::capability_number;
use nodeguard_model::{FileEntry, Finding, FindingKind, Layer, Severity};

/// A setuid/capability file at a trusted path that was not hashed (over the walk's hashing
/// budget): critical, like a mismatch.
pub(super) fn unverifiable_file_rule(
    policy: &Policy,
    image: Option<&str>,
    f: &FileEntry,
    found: &mut Found,
) {
    if f.sha256.is_some() || f.sha512.is_some() {
        return;
    }
    let scope = Scope::Container(&f.container_id, image, None);
    let no_digest = Digests {
        sha256: None,
        sha512: None,
    };
    if !matches!(
        trusted(policy, scope, &f.path, no_digest),
        Verdict::Unverifiable
    ) {
        return;
    }
    let message = format!(
        "{}: {} ({} bytes) is a trusted path but was not hashed, so its digest cannot be checked",
        scope.label(),
        f.path,
        f.size
    );
    found.add(
        Finding::new(
            FindingKind::UnverifiableBinary,
            Severity::Critical,
            Some(&f.container_id),
            f.path.as_str(),
            message,
        )
        .with_path(f.path.as_str()),
    );
}

pub(super) fn file_rules(policy: &Policy, image: Option<&str>, f: &FileEntry, found: &mut Found) {
    let scope = Scope::Container(&f.container_id, image, None);
    let label = scope.label();
    let cid = Some(f.container_id.as_str());
    let upper = f.layer == Layer::Upper;
    let (severity, where_) = if upper {
        (Severity::High, "the container's writable layer")
    } else if f.layer == Layer::Image {
        (Severity::Medium, "the image")
    } else {
        (Severity::Medium, "an unknown layer")
    };

    let setuid_allowed = !upper && policy.allowed_setuid.iter().any(|g| g.is_match(&f.path));
    let bits = [
        (f.setuid, FindingKind::SetuidFile, "setuid", f.uid, "uid"),
        (f.setgid, FindingKind::SetgidFile, "setgid", f.gid, "gid"),
    ];
    for (set, kind, bit, owner, owner_kind) in bits {
        if set && !setuid_allowed {
            let severity = setuid_severity(policy, f, severity);
            let message = format!(
                "{label}: {bit} file {} ({owner_kind} {owner}, mode {:o}) in {where_}",
                f.path, f.mode
            );
            found.add(file_finding(kind, severity, cid, f, message));
        }
    }

    if let Some(text) = f.capabilities.as_deref() {
        let allowed = !upper
            && policy.allowed_file_capabilities.iter().any(|a| {
                a.path.is_match(&f.path)
                    && match &a.capabilities {
                        None => true,
                        Some(list) => {
                            let allowed = list.0.iter().fold(0u64, |m, c| m | (1u64 << c.0));
                            file_capability_mask(text).is_some_and(|mask| mask & !allowed == 0)
                        }
                    }
            });
        if !allowed {
            let message = format!(
                "{label}: {} carries file capabilities {text} in {where_}",
                f.path
            );
            found.add(file_finding(
                FindingKind::FileCapability,
                capability_severity(policy, f, text, severity),
                cid,
                f,
                message,
            ));
        }
    }

    let digests = Digests {
        sha256: f.sha256.as_deref(),
        sha512: f.sha512.as_deref(),
    };
    if let Some((algo, digest, reason)) = denied(policy, digests) {
        let message = format!(
            "{label}: {} in {where_} is a denied binary ({algo} {digest}): {reason}",
            f.path
        );
        found.add(file_finding(
            FindingKind::DeniedBinary,
            Severity::Critical,
            cid,
            f,
            message,
        ));
    }
    if let Verdict::Unexpected(compared) = trusted(policy, scope, &f.path, digests) {
        let message = format!(
            "{label}: {} in {where_} has {compared}, not a digest the policy trusts for it",
            f.path,
        );
        found.add(file_finding(
            FindingKind::UnexpectedBinaryHash,
            Severity::Critical,
            cid,
            f,
            message,
        ));
    }
}

/// A setuid/setgid file the distribution ships (`distro_setuid`), found where the image put
/// it, is `low` unless the policy is `strict_setuid`; anything else keeps `default`.
fn setuid_severity(policy: &Policy, f: &FileEntry, default: Severity) -> Severity {
    let distro = f.layer == Layer::Image
        && !policy.strict_setuid
        && crate::distro_setuid::is_distribution_setuid(&f.path, f.uid);
    if distro {
        Severity::Low
    } else {
        default
    }
}

/// Like [`setuid_severity`], for a file capability the distribution sets itself (ping's
/// `cap_net_raw`), exactly as it sets it.
fn capability_severity(policy: &Policy, f: &FileEntry, caps: &str, default: Severity) -> Severity {
    let distro = f.layer == Layer::Image
        && !policy.strict_setuid
        && crate::distro_setuid::is_distribution_capability(&f.path, f.uid, caps);
    if distro {
        Severity::Low
    } else {
        default
    }
}

fn file_finding(
    kind: FindingKind,
    severity: Severity,
    cid: Option<&str>,
    f: &FileEntry,
    message: String,
) -> Finding {
    with_digest(
        Finding::new(kind, severity, cid, f.path.as_str(), message).with_path(f.path.as_str()),
        f.sha256.as_deref(),
    )
}

/// The capabilities named in `getcap` text (`cap_net_raw=ep`, `cap_a,cap_b+ep`, `=ep` for
/// all). `None` when a name is not understood, so the file is never taken as allowed.
fn file_capability_mask(text: &str) -> Option<u64> {
    let mut mask = 0u64;
    for clause in text.split_whitespace() {
        let end = clause.find(['=', '+', '-']).unwrap_or(clause.len());
        let names = &clause[..end];
        if names.is_empty() && end < clause.len() {
            mask = u64::MAX;
            continue;
        }
        for name in names.split(',') {
            if name.eq_ignore_ascii_case("all") {
                mask = u64::MAX;
            } else {
                mask |= 1u64 << capability_number(name)?;
            }
        }
    }
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_getcap_text() {
        let raw = capability_number("CAP_NET_RAW").unwrap();
        let admin = capability_number("CAP_NET_ADMIN").unwrap();
        assert_eq!(file_capability_mask("cap_net_raw=ep"), Some(1 << raw));
        assert_eq!(
            file_capability_mask("cap_net_admin,cap_net_raw+ep"),
            Some((1 << raw) | (1 << admin))
        );
        assert_eq!(file_capability_mask("=ep"), Some(u64::MAX));
        assert_eq!(file_capability_mask("cap_bogus=ep"), None);
    }
}
