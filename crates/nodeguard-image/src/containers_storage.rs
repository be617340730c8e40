//! containers/storage (podman, CRI-O), overlay driver: `overlay-images/images.json` lists
//! images (id = config digest, top layer), `overlay-layers/layers.json` the layers (`parent`,
//! `diff-digest`), each layer unpacked under `overlay/<id>/diff` with its tar-split in
//! `overlay-layers/<id>.tar-split.gz`.
//!
//! The image's config (stored as big data `overlay-images/<id>/=<base64 of "sha256:<id>">`) is
//! checked against the image id and its `rootfs.diff_ids` against the layer chain's
//! `diff-digest`s, so a rewritten layers.json cannot vouch for altered layers.

use crate::found::{ConfigRootFs, Resolved};
use crate::layer::LayerSource;
use crate::safe_open::read_small;
use crate::{Digest, Error, Limits, Unverifiable};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Layers in one image chain, at most (a loop in `parent` is cut here too).
const MAX_CHAIN: usize = 1000;

#[derive(Deserialize)]
struct Image {
    id: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    digests: Vec<String>,
    #[serde(default)]
    layer: Option<String>,
}

#[derive(Deserialize)]
struct Layer {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(rename = "diff-digest", default)]
    diff_digest: Option<String>,
}

fn metadata(why: String) -> Unverifiable {
    Unverifiable::BadMetadata { why }
}

fn read_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    limits: &Limits,
) -> Result<Option<T>, Unverifiable> {
    match read_small(path, limits.max_metadata_bytes) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| metadata(format!("{}: {e}", path.display()))),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(metadata(e.to_string())),
    }
}

/// A storage id is 64 hex digits; anything else could climb out of the store.
fn safe_id(id: &str) -> Result<&str, Unverifiable> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(metadata(format!(
            "not a storage id: {:?}",
            crate::digest::clip(id)
        )))
    }
}

/// The image `digest` names (its id, or one of its manifest digests) in the graph root.
pub(crate) fn find(
    root: &Path,
    digest: &Digest,
    limits: &Limits,
) -> Result<Option<Resolved>, Unverifiable> {
    let Some(images) = read_json::<Vec<Image>>(&root.join("overlay-images/images.json"), limits)?
    else {
        return Ok(None);
    };
    let hex = digest.hex();
    let text = digest.to_string();
    let Some(image) = images.iter().find(|i| {
        i.id == hex || i.digest.as_deref() == Some(text.as_str()) || i.digests.contains(&text)
    }) else {
        return Ok(None);
    };
    let image_id = safe_id(&image.id)?;
    let config_digest =
        Digest::from_hex(image_id).ok_or_else(|| metadata(format!("image id {image_id}")))?;
    let Some(top) = &image.layer else {
        return Err(metadata(format!("image {image_id} has no layer")));
    };
    let layers = read_json::<Vec<Layer>>(&root.join("overlay-layers/layers.json"), limits)?
        .ok_or_else(|| metadata("overlay-layers/layers.json is missing".into()))?;
    let by_id: HashMap<&str, &Layer> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut chain = Vec::new();
    let mut next = Some(top.as_str());
    while let Some(id) = next.filter(|id| !id.is_empty()) {
        if chain.len() >= MAX_CHAIN {
            return Err(metadata(format!(
                "image {image_id}: a layer chain longer than {MAX_CHAIN}"
            )));
        }
        let layer = by_id.get(id).ok_or_else(|| {
            metadata(format!(
                "layer {:?} is not in layers.json",
                crate::digest::clip(id)
            ))
        })?;
        chain.push(*layer);
        next = layer.parent.as_deref();
    }
    chain.reverse();
    let mut out = Vec::with_capacity(chain.len());
    for layer in &chain {
        let id = safe_id(&layer.id)?;
        let diff_id = layer
            .diff_digest
            .as_deref()
            .ok_or_else(|| metadata(format!("layer {id} has no diff-digest")))
            .and_then(|d| Digest::parse(d).map_err(|e| metadata(e.to_string())))?;
        out.push((
            diff_id,
            LayerSource::TarSplit {
                tar_split: root.join(format!("overlay-layers/{id}.tar-split.gz")),
                diff_dir: root.join(format!("overlay/{id}/diff")),
            },
        ));
    }
    check_config(root, image_id, &config_digest, &out, limits)?;
    Ok(Some(Resolved {
        config_digest,
        layers: out,
    }))
}

/// The config kept as the image's big data must hash to the image id, and its diff_ids must be
/// the chain's. A store without it (older podman) is trusted on its layers.json.
fn check_config(
    root: &Path,
    image_id: &str,
    config_digest: &Digest,
    layers: &[(Digest, LayerSource)],
    limits: &Limits,
) -> Result<(), Unverifiable> {
    let key = base64::engine::general_purpose::STANDARD.encode(config_digest.to_string());
    let path = root.join(format!("overlay-images/{image_id}/={key}"));
    let bytes = match read_small(&path, limits.max_metadata_bytes) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(metadata(e.to_string())),
    };
    let actual = Digest(nodeguard_hash::sha256_of(&[&bytes]));
    if actual != *config_digest {
        return Err(metadata(format!(
            "image {image_id}: its config hashes to {actual}"
        )));
    }
    #[derive(Deserialize)]
    struct Config {
        rootfs: ConfigRootFs,
    }
    let config: Config = serde_json::from_slice(&bytes)
        .map_err(|e| metadata(format!("image {image_id} config: {e}")))?;
    let chain: Vec<String> = layers.iter().map(|(d, _)| d.to_string()).collect();
    if config.rootfs.diff_ids != chain {
        return Err(metadata(format!(
            "image {image_id}: layers.json's chain differs from the config's diff_ids"
        )));
    }
    Ok(())
}
