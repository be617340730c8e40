//! What an Event says: which object it regards, its field path, and its note.

use super::ledger::Announced;
use crate::publish::placement::{Placement, Target, TargetKind};
use k8s_openapi::api::core::v1::ObjectReference;
pub(crate) use nodeguard_model::text::{clean, clip, cut};
use nodeguard_model::{Finding, FindingKind};
use std::collections::BTreeSet;

/// The API server rejects notes over 1 KiB (counted in bytes); stay below it.
pub(crate) const MAX_NOTE_BYTES: usize = 1000;
/// Longest path or subject quoted in a note, so the identifying fields still fit.
const MAX_FIELD_BYTES: usize = 240;

/// The object an Event is about (`involvedObject` of a core/v1 Event).
pub(crate) fn reference(
    target: &Target,
    field_path: Option<&str>,
    node_uid: Option<&str>,
) -> ObjectReference {
    let (kind, uid) = match target.kind {
        TargetKind::Pod => ("Pod", target.uid.clone()),
        TargetKind::Node => ("Node", node_uid.map(str::to_string)),
    };
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some(kind.to_string()),
        namespace: target.namespace.clone(),
        name: Some(target.name.clone()),
        uid,
        field_path: field_path.map(str::to_string),
        resource_version: None,
    }
}

/// `[high] <message> (container=app; image=nginx:1.25; subject=CAP_SYS_ADMIN; path=/x;
/// sha256=…; finding=<id>)`, under 1 KiB: the message is shortened first so the
/// identifying fields survive.
pub(crate) fn warning_note(finding: &Finding, placement: &Placement) -> String {
    let mut fields = Vec::new();
    if let Some(c) = &placement.container {
        fields.push(format!("container={}", clean(c, MAX_FIELD_BYTES)));
    }
    if let Some(image) = &placement.image {
        fields.push(format!("image={}", clean(image, MAX_FIELD_BYTES)));
    }
    if !finding.subject.is_empty() && Some(&finding.subject) != finding.path.as_ref() {
        fields.push(format!(
            "subject={}",
            clean(&finding.subject, MAX_FIELD_BYTES)
        ));
    }
    if let Some(path) = &finding.path {
        fields.push(format!("path={}", clean(path, MAX_FIELD_BYTES)));
    }
    if let Some(digest) = &finding.sha256 {
        fields.push(format!("sha256={}", clean(digest, 128)));
    }
    if let Some(pid) = finding.pid {
        fields.push(format!("pid={pid}"));
    }
    fields.push(format!("finding={}", finding.id));
    let trailer = format!(" ({})", fields.join("; "));
    let head = format!("[{}] ", finding.severity);
    let room = MAX_NOTE_BYTES.saturating_sub(head.len() + trailer.len());
    truncate_note(&format!("{head}{}{trailer}", clean(&finding.message, room)))
}

/// The note of a `<Reason>Resolved` Event.
pub(crate) fn resolved_note(entry: &Announced) -> String {
    let mut note = format!("{} is no longer present", entry.kind.reason());
    if !entry.subject.is_empty() {
        note.push_str(&format!(": {}", clean(&entry.subject, MAX_FIELD_BYTES)));
    }
    if let Some(c) = &entry.container {
        note.push_str(&format!(" in container {}", clean(c, MAX_FIELD_BYTES)));
    }
    note.push_str(&format!(" (finding={}; announced {})", entry.id, entry.at));
    truncate_note(&note)
}

/// The note of a `FindingsSummary` Event.
pub(crate) fn summary_note(
    target: &Target,
    count: usize,
    kinds: &BTreeSet<FindingKind>,
    burst: u32,
) -> String {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.reason()).collect();
    let query = match (&target.kind, &target.namespace) {
        (TargetKind::Pod, Some(ns)) => {
            format!(
                "nodeguard query findings --pod {}/{}",
                clean(ns, MAX_FIELD_BYTES),
                clean(&target.name, MAX_FIELD_BYTES)
            )
        }
        _ => "nodeguard query findings".to_string(),
    };
    truncate_note(&format!(
        "{count} more findings of kinds {} not announced one by one (over the budget of {burst} Events per object); see `{query}`",
        kinds.join(", ")
    ))
}

pub(crate) fn truncate_note(s: &str) -> String {
    clip(s, MAX_NOTE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::placement::place;
    use nodeguard_model::Report;
    use nodeguard_model::{PodRef, ScanStats, Severity, Timestamp};

    const CID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";

    fn report(pod: Option<PodRef>, pod_uid: Option<&str>) -> Report {
        Report {
            schema_version: 1,
            node: "node-a".into(),
            scanned_at: Timestamp::now(),
            duration_ms: 1,
            containers: vec![nodeguard_testkit::model::container(CID)
                .cgroup("/kubepods/x")
                .pod(pod_uid, pod)
                .build()],
            processes: vec![],
            files: vec![],
            findings: vec![],
            stats: ScanStats::default(),
            warnings: vec![],
        }
    }

    fn pod_ref() -> PodRef {
        PodRef {
            image: Some("nginx:1.25".into()),
            image_id: Some("docker.io/library/nginx@sha256:aa".into()),
            ..nodeguard_testkit::model::pod_ref("shop", "web-0", "app")
        }
    }

    fn setuid(path: &str) -> Finding {
        Finding::new(
            FindingKind::SetuidFile,
            Severity::High,
            Some(CID),
            path,
            format!("setuid file {path}"),
        )
        .with_path(path)
        .with_sha256("ab".repeat(32))
    }

    #[test]
    fn pod_containers_regard_the_pod_and_the_rest_the_node() {
        let f = setuid("/usr/bin/passwd");
        let p = place(&f, &report(Some(pod_ref()), Some("u_1")), "node-a");
        assert_eq!(p.target.kind, TargetKind::Pod);
        assert_eq!(p.target.namespace.as_deref(), Some("shop"));
        assert_eq!(p.target.uid.as_deref(), Some("u-1"));
        assert_eq!(
            p.field_path,
            format!("spec.containers{{app}}.findings{{{}}}", f.id)
        );

        // Metadata not (yet) known: the node, naming the container by its short id.
        let p = place(&f, &report(None, Some("u1")), "node-a");
        assert_eq!(p.target, Target::node("node-a"));
        assert_eq!(p.field_path, format!("findings{{{}}}", f.id));
        assert_eq!(p.container.as_deref(), Some("c0ffee000000"));

        let host = Finding::new(
            FindingKind::DeletedExecutable,
            Severity::Critical,
            None,
            "memfd:x",
            "m",
        );
        let p = place(&host, &report(None, None), "node-a");
        assert_eq!(p.target, Target::node("node-a"));
        let r = reference(&p.target, Some(&p.field_path), Some("node-uid"));
        assert_eq!(r.kind.as_deref(), Some("Node"));
        assert_eq!(r.uid.as_deref(), Some("node-uid"));
        assert_eq!(r.namespace, None);
    }

    #[test]
    fn notes_name_container_path_digest_and_stay_under_1k() {
        let f = setuid("/usr/bin/passwd");
        let p = place(&f, &report(Some(pod_ref()), Some("u1")), "node-a");
        let note = warning_note(&f, &p);
        for part in [
            "[high]",
            "container=app",
            "path=/usr/bin/passwd",
            &format!("sha256={}", "ab".repeat(32)),
            &format!("finding={}", f.id),
        ] {
            assert!(note.contains(part), "{part} missing from {note}");
        }

        // Hostile, huge, multi-byte input: still < 1 KiB, valid UTF-8, id kept.
        let long = "é".repeat(3000) + "\n\u{1b}[31m";
        let mut f = setuid(&format!("/tmp/{long}"));
        f.message = long.clone();
        let note = warning_note(&f, &p);
        assert!(note.len() <= MAX_NOTE_BYTES, "{}", note.len());
        assert!(note.contains(&format!("finding={}", f.id)));
        assert!(!note.chars().any(|c| c.is_control()));
    }

    #[test]
    fn hostile_image_container_subject_and_path_reach_notes_escaped() {
        // The API server takes an image name with ESC and a newline; `kubectl describe`
        // would clear the screen and print a forged line if the note carried them raw.
        let forged = "\u{1b}[2J\u{1b}[H\nNormal  Resolved  nodeguard  all clear\u{202e}";
        let pod = PodRef {
            image: Some(format!("nginx{forged}")),
            ..nodeguard_testkit::model::pod_ref("shop", "web-0", &format!("app{forged}"))
        };
        let mut f = setuid(&format!("/tmp/x{forged}"));
        f.subject = format!("CAP_X{forged}");
        f.message = format!("msg{forged}");
        let p = place(&f, &report(Some(pod), Some("u1")), "node-a");
        let entry = Announced {
            id: f.id.clone(),
            kind: f.kind,
            at: Timestamp::now(),
            target: p.target.clone(),
            field_path: Some(p.field_path.clone()),
            subject: f.subject.clone(),
            container: p.container.clone(),
            summarized: false,
            unconfirmed: false,
        };
        for text in [
            warning_note(&f, &p),
            resolved_note(&entry),
            p.field_path.clone(),
        ] {
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() || nodeguard_model::is_bidi_or_invisible(c)),
                "raw control in {text:?}"
            );
            assert!(text.contains("\\u{1b}[2J\\u{1b}[H\\n"), "{text}");
        }
        let note = warning_note(&f, &p);
        for part in [
            "image=nginx\\u{1b}",
            "container=app\\u{1b}",
            "subject=CAP_X\\u{1b}",
        ] {
            assert!(note.contains(part), "{part} missing from {note}");
        }
    }
}
