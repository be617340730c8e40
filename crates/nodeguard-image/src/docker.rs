//! Docker's overlay2 store: `image/overlay2/imagedb/content/sha256/<id>` is the image config;
//! each layer is `image/overlay2/layerdb/sha256/<chainID>/` with `diff` (its diff_id),
//! `cache-id` (the directory `overlay2/<cache-id>/diff`) and `tar-split.json.gz`.
//! chainID(0) = diff_id(0); chainID(n) = sha256(chainID(n-1) + " " + diff_id(n)).

use crate::found::{ConfigRootFs, Resolved};
use crate::layer::LayerSource;
use crate::safe_open::read_small;
use crate::{Digest, Error, Limits, Unverifiable};
use serde::Deserialize;
use std::path::Path;

fn metadata(why: String) -> Unverifiable {
    Unverifiable::BadMetadata { why }
}

fn read_text(path: &Path) -> Result<String, Unverifiable> {
    let bytes = read_small(path, 4096).map_err(|e| match e {
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Unverifiable::BlobsDiscarded {
                layer: path.display().to_string(),
            }
        }
        other => metadata(other.to_string()),
    })?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| metadata(format!("{}: not text", path.display())))
}

/// The image whose id (config digest) is `digest`.
pub(crate) fn find(
    root: &Path,
    digest: &Digest,
    limits: &Limits,
) -> Result<Option<Resolved>, Unverifiable> {
    let base = root.join("image/overlay2");
    let config_path = base.join(format!("imagedb/content/sha256/{}", digest.hex()));
    let bytes = match read_small(&config_path, limits.max_metadata_bytes) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(metadata(e.to_string())),
    };
    let actual = Digest(nodeguard_hash::sha256_of(&[&bytes]));
    if actual != *digest {
        return Err(metadata(format!(
            "docker image {digest}: its config hashes to {actual}"
        )));
    }
    #[derive(Deserialize)]
    struct Config {
        rootfs: ConfigRootFs,
    }
    let config: Config = serde_json::from_slice(&bytes)
        .map_err(|e| metadata(format!("docker image {digest}: {e}")))?;
    let mut chain: Option<Digest> = None;
    let mut layers = Vec::with_capacity(config.rootfs.diff_ids.len());
    for diff_id in &config.rootfs.diff_ids {
        let diff_id = Digest::parse(diff_id).map_err(|e| metadata(e.to_string()))?;
        let chain_id = match chain {
            None => diff_id,
            Some(parent) => Digest(nodeguard_hash::sha256_of(&[
                format!("{parent} {diff_id}").as_bytes()
            ])),
        };
        chain = Some(chain_id);
        let dir = base.join(format!("layerdb/sha256/{}", chain_id.hex()));
        let recorded = read_text(&dir.join("diff"))?;
        if recorded != diff_id.to_string() {
            return Err(metadata(format!(
                "layer {chain_id}: layerdb's diff {recorded:?} is not {diff_id}"
            )));
        }
        let cache_id = read_text(&dir.join("cache-id"))?;
        if cache_id.is_empty()
            || !cache_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(metadata(format!("layer {chain_id}: a bad cache-id")));
        }
        layers.push((
            diff_id,
            LayerSource::TarSplit {
                tar_split: dir.join("tar-split.json.gz"),
                diff_dir: root.join(format!("overlay2/{cache_id}/diff")),
            },
        ));
    }
    Ok(Some(Resolved {
        config_digest: *digest,
        layers,
    }))
}
