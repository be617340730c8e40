//! Image verification's series: current container processes by verdict, and the indexer's
//! progress read from its channel at scrape time.

mod common;

use common::*;
use nodeguard_metrics::encode;
use nodeguard_model::{ContainerImage, ImageIndexProgress, ImageSource, ImageVerdict};
use std::sync::Arc;

fn lines<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn processes_are_counted_by_verdict_once_verification_is_on() {
    let (registry, feed) = setup();
    // Off: no container has an image identity, no series.
    feed.state_changed(&Arc::new(three_containers(1000)));
    assert!(lines(&encode(&registry).unwrap(), "nodeguard_image_verdicts").is_empty());

    let mut report = (*three_containers(1000).report).clone();
    report.containers[0].image = Some(ContainerImage {
        reference: Some("sha256:cfg".into()),
        source: Some(ImageSource::PodStatus),
        config_digest: Some("sha256:cfg".into()),
        layers: vec!["sha256:l".into()],
        unverifiable: None,
        altered_layer: None,
    });
    let verdicts = [
        ImageVerdict::Verified {
            layer: "sha256:l".into(),
        },
        ImageVerdict::Mismatch {
            layer: Some("sha256:l".into()),
            expected_sha256: Some("aa".into()),
            actual_sha256: "bb".into(),
        },
        ImageVerdict::unverifiable("indexing"),
    ];
    let container_processes: Vec<usize> = report
        .processes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.container_id.is_some())
        .map(|(i, _)| i)
        .collect();
    for (i, verdict) in container_processes.iter().zip(verdicts) {
        report.processes[*i].image_verdict = Some(verdict);
    }
    feed.state_changed(&Arc::new(state_of(report)));
    let out = encode(&registry).unwrap();
    assert_eq!(
        lines(&out, "nodeguard_image_verdicts{"),
        [
            r#"nodeguard_image_verdicts{verdict="verified"} 1"#,
            r#"nodeguard_image_verdicts{verdict="mismatch"} 1"#,
            r#"nodeguard_image_verdicts{verdict="not_from_image"} 0"#,
            r#"nodeguard_image_verdicts{verdict="unverifiable"} 1"#,
        ],
        "{out}"
    );
}

#[test]
fn the_indexers_progress_is_read_at_scrape_time() {
    let (registry, feed) = setup();
    assert!(!encode(&registry)
        .unwrap()
        .contains("nodeguard_image_layers"));
    let (tx, rx) = tokio::sync::watch::channel(ImageIndexProgress::default());
    feed.metrics.set_image_index_progress(rx);
    tx.send_replace(ImageIndexProgress {
        layers_indexed: 3,
        layers_from_disk: 7,
        layers_refused: 1,
        bytes_read: 4096,
        images_queued: 2,
        images_ready: 5,
        images_unverifiable: 1,
        disk_bytes: 512,
    });
    let out = encode(&registry).unwrap();
    for sample in [
        "nodeguard_image_layers_indexed_total 3",
        "nodeguard_image_layers_from_disk_total 7",
        "nodeguard_image_layers_refused_total 1",
        "nodeguard_image_layer_read_bytes_total 4096",
        r#"nodeguard_images{state="queued"} 2"#,
        r#"nodeguard_images{state="ready"} 5"#,
        r#"nodeguard_images{state="unverifiable"} 1"#,
        "nodeguard_image_index_disk_bytes 512",
    ] {
        assert!(out.lines().any(|l| l == sample), "{sample} missing:\n{out}");
    }
}
