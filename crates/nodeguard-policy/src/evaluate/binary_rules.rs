//! The rules on a process's executable, for host and container processes alike: deleted,
//! denied, not the digest a trusted entry or a digest bundle wants, or not hashed at all.

use super::digests::{
    bundle_sources, bundled, denied, exe_name, trusted, with_digest, Digests, Verdict,
};
use super::found::Found;
use super::{who, Scope};
use crate::policy::Policy;
use nodeguard_model::text::cut;
use nodeguard_model::{Finding, FindingKind, Process, Severity};

/// Rules on the executable itself, for host and container processes alike.
pub(super) fn binary_rules(policy: &Policy, scope: Scope, p: &Process, found: &mut Found) {
    let label = scope.label();
    let cid = scope.container_id();
    let exe = p.exe.as_deref().unwrap_or("(unknown executable)");

    if p.exe_deleted {
        let message = format!(
            "{label}: {} runs deleted or anonymous executable {exe}",
            who(p)
        );
        found.add(
            Finding::new(
                FindingKind::DeletedExecutable,
                Severity::High,
                cid,
                exe,
                message,
            )
            .with_pid(p.pid)
            .with_path(exe),
        );
    }

    let digests = Digests {
        sha256: p.sha256.as_deref(),
        sha512: p.sha512.as_deref(),
    };
    if let Some((algo, digest, reason)) = denied(policy, digests) {
        let message = format!(
            "{label}: {} runs {exe}, a denied binary ({algo} {digest}): {reason}",
            who(p)
        );
        found.add(with_digest(
            Finding::new(
                FindingKind::DeniedBinary,
                Severity::Critical,
                cid,
                exe,
                message,
            )
            .with_pid(p.pid)
            .with_path(exe),
            p.sha256.as_deref(),
        ));
    }

    if let Some(path) = p.exe.as_deref() {
        let unexpected = |message: String| {
            with_digest(
                Finding::new(
                    FindingKind::UnexpectedBinaryHash,
                    Severity::Critical,
                    cid,
                    path,
                    message,
                )
                .with_pid(p.pid)
                .with_path(path),
                p.sha256.as_deref(),
            )
        };
        if let Verdict::Unexpected(compared) = bundled(policy, scope, path, digests) {
            found.add(unexpected(format!(
                "{label}: {} runs {path} with {compared}, not a digest of {} in {}",
                who(p),
                exe_name(path),
                bundle_sources(policy, path),
            )));
        }
        if let Verdict::Unexpected(compared) = trusted(policy, scope, path, digests) {
            found.add(unexpected(format!(
                "{label}: {} runs {path} with {compared}, not a digest the policy trusts for it",
                who(p),
            )));
        }
    }
}

/// A process whose executable could not be hashed (too large, unreadable, not a regular
/// file, changed while read — a process that exited is no finding, the scan drops it):
/// no digest rule could check it, and an attacker can choose that (`truncate -s 700M`).
/// Critical when a trusted entry covers the path (as a mismatch would be); medium for any
/// other container process, and for a host process when the policy denies digests; else
/// (a host process nothing could have matched) no finding.
pub(super) fn unverifiable_process_rule(
    policy: &Policy,
    scope: Scope,
    p: &Process,
    found: &mut Found,
) {
    let (Some(path), Some(error)) = (p.exe.as_deref(), p.hash_error.as_deref()) else {
        return;
    };
    if p.kernel_thread || p.sha256.is_some() || p.sha512.is_some() {
        return;
    }
    let no_digest = Digests {
        sha256: None,
        sha512: None,
    };
    let by_bundle = matches!(
        bundled(policy, scope, path, no_digest),
        Verdict::Unverifiable
    );
    let covered = by_bundle
        || matches!(
            trusted(policy, scope, path, no_digest),
            Verdict::Unverifiable
        );
    let severity = match (covered, scope) {
        (true, _) => Severity::Critical,
        (false, Scope::Container(..)) => Severity::Medium,
        (false, Scope::Host) if !policy.denied.is_empty() => Severity::Medium,
        (false, Scope::Host) => return,
    };
    let why = if by_bundle {
        "a binary named in a digest bundle whose digest cannot be checked"
    } else if covered {
        "a trusted binary whose digest cannot be checked"
    } else {
        "its digest cannot be checked against denied binaries"
    };
    let message = format!(
        "{}: {} runs {path}, {why}: {}",
        scope.label(),
        who(p),
        cut(error, 300)
    );
    found.add(
        Finding::new(
            FindingKind::UnverifiableBinary,
            severity,
            scope.container_id(),
            path,
            message,
        )
        .with_pid(p.pid)
        .with_path(path),
    );
}
