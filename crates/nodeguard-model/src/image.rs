//! Image verification: whether the bytes a container runs are the bytes its image promised.
//!
//! A pod's `imageID` names the image, not any binary in it. The agent rebuilds what each
//! image layer holds from the runtime's own store on the node (the layer blobs, or the
//! unpacked layer and its tar-split, checked against the image config's `diff_ids`) and
//! compares every container process's executable with the file the image has at that path.
//! These are the plain values that comparison leaves in the report (README, "Image
//! verification"; docs/image-verification.md).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the image says about one running executable (or one setuid/setgid/capability file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ImageVerdict {
    /// Its bytes equal the image's file at that path; `layer` is the `diff_id` of the
    /// top-most layer that holds it.
    Verified { layer: String },
    /// Its bytes differ from what the image holds at that path: a file rewritten on the node
    /// under the runtime's snapshot or layer directory. `layer` and `expected_sha256` are
    /// absent when the image has no file at that path (it was added to an image layer on
    /// the node).
    Mismatch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_sha256: Option<String>,
        actual_sha256: String,
    },
    /// It does not come from an image layer: the writable layer, a volume, a tmpfs
    /// (`binary_drift` covers these).
    NotFromImage,
    /// It could not be compared; `reason` says why in one line (image unknown, store not
    /// mounted, layer blobs discarded, still indexing, ...).
    Unverifiable { reason: String },
}

impl ImageVerdict {
    /// Every verdict name, as the JSON `verdict` field and the metric label spell them.
    pub const NAMES: [&'static str; 4] = ["verified", "mismatch", "not_from_image", "unverifiable"];

    /// The verdict's name: `verified`, `mismatch`, `not_from_image`, `unverifiable`.
    pub fn name(&self) -> &'static str {
        match self {
            ImageVerdict::Verified { .. } => "verified",
            ImageVerdict::Mismatch { .. } => "mismatch",
            ImageVerdict::NotFromImage => "not_from_image",
            ImageVerdict::Unverifiable { .. } => "unverifiable",
        }
    }

    pub fn unverifiable(reason: impl Into<String>) -> ImageVerdict {
        ImageVerdict::Unverifiable {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ImageVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageVerdict::Verified { layer } => write!(f, "verified (layer {layer})"),
            ImageVerdict::Mismatch {
                layer,
                expected_sha256,
                actual_sha256,
            } => write!(
                f,
                "mismatch (layer {}, expected sha256 {}, actual sha256 {actual_sha256})",
                layer.as_deref().unwrap_or("none: not in the image"),
                expected_sha256.as_deref().unwrap_or("none")
            ),
            ImageVerdict::NotFromImage => f.write_str("not_from_image"),
            ImageVerdict::Unverifiable { reason } => write!(f, "unverifiable ({reason})"),
        }
    }
}

/// Where a container's image identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// The pod's `status.containerStatuses[].imageID`.
    PodStatus,
    /// containers/storage's `overlay-containers/containers.json` (podman, CRI-O).
    ContainersStorage,
    /// Docker's `containers/<id>/config.v2.json`.
    Docker,
}

/// The image a container runs, as far as the agent could tell, and how far its index is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerImage {
    /// How the container names its image: the pod's `imageID`, or the runtime's image id;
    /// absent when neither says (then `unverifiable` says so).
    pub reference: Option<String>,
    pub source: Option<ImageSource>,
    /// The digest of the image's config (`sha256:…`) once its index is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// The image's layers (`diff_id`s, bottom first) once its index is ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// Why none of this container's processes can be verified, said once for the container
    /// (its processes' verdicts repeat it); absent when they can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverifiable: Option<String>,
    /// A layer of the image whose data in the runtime's store no longer hashes to the
    /// `diff_id` the image config names: altered on the node after the pull (an
    /// `image_content_mismatch` of the container, naming the layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altered_layer: Option<String>,
}

/// Progress of the background image indexer, for metrics (a snapshot: totals since start,
/// and gauges of now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndexProgress {
    /// Layers read from their store, checked against their `diff_id` and indexed.
    pub layers_indexed: u64,
    /// Layers whose index came from the on-disk cache under `--state-dir` (no layer read).
    pub layers_from_disk: u64,
    /// Layers refused (a bound broken, not a tar), found altered (`diff_id` mismatch) or
    /// missing.
    pub layers_refused: u64,
    /// Uncompressed layer bytes read.
    pub bytes_read: u64,
    /// Images waiting to be indexed now.
    pub images_queued: u64,
    /// Images indexed now.
    pub images_ready: u64,
    /// Images that cannot be indexed now.
    pub images_unverifiable: u64,
    /// Bytes of layer indexes on disk now.
    pub disk_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialize_with_their_name_and_details() {
        let v = ImageVerdict::Verified {
            layer: "sha256:aa".into(),
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"verdict":"verified","layer":"sha256:aa"}"#
        );
        let m = ImageVerdict::Mismatch {
            layer: Some("sha256:bb".into()),
            expected_sha256: Some("11".into()),
            actual_sha256: "22".into(),
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"verdict":"mismatch","layer":"sha256:bb","expected_sha256":"11","actual_sha256":"22"}"#
        );
        assert_eq!(serde_json::from_str::<ImageVerdict>(&json).unwrap(), m);
        for v in [
            v,
            m,
            ImageVerdict::NotFromImage,
            ImageVerdict::unverifiable("x"),
        ] {
            let json = serde_json::to_value(&v).unwrap();
            assert_eq!(json["verdict"], v.name());
            assert!(ImageVerdict::NAMES.contains(&v.name()));
        }
    }
}
