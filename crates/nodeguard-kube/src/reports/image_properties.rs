//! The image verdict of a finding's process, as PolicyReport result properties: a reader of
//! the report sees whether the binary was the image's (`image_verdict: verified`, and the
//! layer that holds it), and for `image_content_mismatch` the expected digest beside the
//! actual one (`digest`). Pure.

use nodeguard_model::text::clean;
use nodeguard_model::{ImageVerdict, Report};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Longest reason kept in a property.
const MAX_REASON_BYTES: usize = 256;

/// For each judged process, its verdict and its container's image digest.
pub(crate) type VerdictsByPid<'a> = HashMap<i32, (&'a ImageVerdict, Option<&'a str>)>;

/// Built once per rendering (empty when image verification is off).
pub(crate) fn verdicts_by_pid(report: &Report) -> VerdictsByPid<'_> {
    let digests: HashMap<&str, &str> = report
        .containers
        .iter()
        .filter_map(|c| {
            let digest = c.pod.as_ref().and_then(|p| p.image_id.as_deref()).or(c
                .image
                .as_ref()?
                .config_digest
                .as_deref())?;
            Some((c.id.as_str(), digest))
        })
        .collect();
    report
        .processes
        .iter()
        .filter_map(|p| {
            let verdict = p.image_verdict.as_ref()?;
            let digest = p
                .container_id
                .as_deref()
                .and_then(|id| digests.get(id).copied());
            Some((p.pid, (verdict, digest)))
        })
        .collect()
}

pub(crate) fn insert(props: &mut Map<String, Value>, verdicts: &VerdictsByPid, pid: i32) {
    let Some((verdict, digest)) = verdicts.get(&pid) else {
        return;
    };
    props.insert("image_verdict".into(), json!(verdict.name()));
    if let Some(digest) = digest {
        props.insert("image_digest".into(), json!(clean(digest, 160)));
    }
    match verdict {
        ImageVerdict::Verified { layer } => {
            props.insert("image_layer".into(), json!(clean(layer, 160)));
        }
        ImageVerdict::Mismatch {
            layer,
            expected_sha256,
            ..
        } => {
            if let Some(layer) = layer {
                props.insert("image_layer".into(), json!(clean(layer, 160)));
            }
            let expected = match expected_sha256 {
                Some(e) => format!("sha256:{}", clean(e, 128)),
                None => "none (not in the image)".to_string(),
            };
            props.insert("expected_digest".into(), json!(expected));
        }
        ImageVerdict::NotFromImage => {}
        ImageVerdict::Unverifiable { reason } => {
            props.insert(
                "image_verdict_reason".into(),
                json!(clean(reason, MAX_REASON_BYTES)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_results_process_carries_its_verdict_layer_and_digests() {
        let verified = ImageVerdict::Verified {
            layer: "sha256:l1".into(),
        };
        let mismatch = ImageVerdict::Mismatch {
            layer: Some("sha256:l1".into()),
            expected_sha256: Some("aa".into()),
            actual_sha256: "bb".into(),
        };
        let hostile = ImageVerdict::unverifiable(format!("blob \u{1b}[31m{}", "x".repeat(5000)));
        let mut verdicts: VerdictsByPid = HashMap::new();
        verdicts.insert(1, (&verified, Some("sha256:cfg")));
        verdicts.insert(2, (&mismatch, Some("sha256:cfg")));
        verdicts.insert(3, (&hostile, None));

        let mut props = Map::new();
        insert(&mut props, &verdicts, 1);
        assert_eq!(props["image_verdict"], "verified");
        assert_eq!(props["image_layer"], "sha256:l1");
        assert_eq!(props["image_digest"], "sha256:cfg");

        let mut props = Map::new();
        insert(&mut props, &verdicts, 2);
        assert_eq!(props["image_verdict"], "mismatch");
        assert_eq!(props["expected_digest"], "sha256:aa");

        let mut props = Map::new();
        insert(&mut props, &verdicts, 3);
        let reason = props["image_verdict_reason"].as_str().unwrap();
        assert!(
            reason.len() <= MAX_REASON_BYTES,
            "bounded: {}",
            reason.len()
        );
        assert!(!reason.contains('\u{1b}'), "escaped: {reason}");

        let mut props = Map::new();
        insert(&mut props, &verdicts, 4);
        assert!(props.is_empty(), "an unjudged pid adds nothing");
    }
}
