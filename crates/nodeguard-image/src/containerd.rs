//! containerd's content store: `<root>/io.containerd.content.v1.content/blobs/sha256/<hex>`
//! holds every index, manifest, config and layer blob of the images pulled or imported, each
//! named by its digest.
//!
//! A pod's imageID names the manifest or index (after a pull) or the config (an imported image);
//! from an index the manifest for this node's platform is taken, from a manifest its config
//! (`rootfs.diff_ids`) and its layer blobs, in order. Every small blob read is checked against
//! the digest it is filed under.

use crate::found::{platform, ConfigRootFs, Resolved};
use crate::layer::LayerSource;
use crate::safe_open::read_small;
use crate::{Digest, Error, Limits, Unverifiable};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the content store lives under a containerd root.
pub(crate) const CONTENT_DIR: &str = "io.containerd.content.v1.content/blobs/sha256";
/// An image index nested deeper than this is refused (real ones have one level).
const MAX_NESTING: usize = 3;
/// Blobs larger than this are not searched for a manifest naming a config.
const MAX_MANIFEST_BYTES: u64 = 256 * 1024;
/// Entries of the blobs directory looked at when searching for a config's manifest.
const MAX_BLOBS_SCANNED: usize = 200_000;

#[derive(Deserialize)]
struct Descriptor {
    /// Empty when absent: a config's own `config` object (the runtime settings) parses as a
    /// descriptor without one, and an empty digest never parses.
    #[serde(default)]
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// An index, a manifest or a config: told apart by which fields are present.
#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    rootfs: Option<ConfigRootFs>,
}

pub(crate) fn blobs_dir(root: &Path) -> PathBuf {
    root.join(CONTENT_DIR)
}

/// The image `digest` names in the content store under `root`; `Ok(None)` when the store has
/// no such blob.
pub(crate) fn find(
    root: &Path,
    digest: &Digest,
    limits: &Limits,
) -> Result<Option<Resolved>, Unverifiable> {
    let blobs = blobs_dir(root);
    let Some(bytes) = read_blob(&blobs, digest, limits)? else {
        return Ok(None);
    };
    let mut document = parse(&bytes, digest)?;
    let mut manifest_digest = *digest;
    for _ in 0..MAX_NESTING {
        if let Some(manifests) = &document.manifests {
            let want = platform();
            let chosen = manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == want)
                })
                .or_else(|| match manifests.as_slice() {
                    [only] if only.platform.is_none() => Some(only),
                    _ => None,
                })
                .ok_or_else(|| Unverifiable::NoPlatform {
                    platform: format!("linux/{want}"),
                })?;
            manifest_digest = parse_digest(&chosen.digest)?;
            let bytes = read_blob(&blobs, &manifest_digest, limits)?.ok_or_else(|| {
                Unverifiable::BlobsDiscarded {
                    layer: manifest_digest.to_string(),
                }
            })?;
            document = parse(&bytes, &manifest_digest)?;
            continue;
        }
        break;
    }
    if document.rootfs.is_some() {
        // An imported image: its imageID is the config digest. Find the manifest naming it.
        let config = *digest;
        let Some((found, manifest)) = manifest_for_config(&blobs, &config, limits) else {
            return Err(Unverifiable::BadMetadata {
                why: format!("no manifest in the content store names config {config}"),
            });
        };
        manifest_digest = found;
        document = manifest;
    }
    let (Some(config), Some(layers)) = (&document.config, &document.layers) else {
        return Err(Unverifiable::BadMetadata {
            why: format!("{manifest_digest} is neither an index, a manifest nor a config"),
        });
    };
    let config_digest = parse_digest(&config.digest)?;
    let config_bytes =
        read_blob(&blobs, &config_digest, limits)?.ok_or_else(|| Unverifiable::BlobsDiscarded {
            layer: config_digest.to_string(),
        })?;
    let config_doc = parse(&config_bytes, &config_digest)?;
    let diff_ids =
        config_doc
            .rootfs
            .map(|r| r.diff_ids)
            .ok_or_else(|| Unverifiable::BadMetadata {
                why: format!("config {config_digest} has no rootfs.diff_ids"),
            })?;
    if diff_ids.len() != layers.len() {
        return Err(Unverifiable::BadMetadata {
            why: format!(
                "manifest {manifest_digest} has {} layers, its config {} diff_ids",
                layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let blob = parse_digest(&layer.digest)?;
        out.push((
            parse_digest(diff_id)?,
            LayerSource::Blob(blobs.join(blob.hex())),
        ));
    }
    Ok(Some(Resolved {
        config_digest,
        layers: out,
    }))
}

fn parse_digest(text: &str) -> Result<Digest, Unverifiable> {
    Digest::parse(text).map_err(|e| Unverifiable::BadMetadata { why: e.to_string() })
}

fn parse(bytes: &[u8], digest: &Digest) -> Result<Document, Unverifiable> {
    serde_json::from_slice(bytes).map_err(|e| Unverifiable::BadMetadata {
        why: format!("{digest}: not an image index, manifest or config: {e}"),
    })
}

/// A small blob, checked against its digest; `Ok(None)` when absent.
fn read_blob(
    blobs: &Path,
    digest: &Digest,
    limits: &Limits,
) -> Result<Option<Vec<u8>>, Unverifiable> {
    let path = blobs.join(digest.hex());
    let bytes = match read_small(&path, limits.max_metadata_bytes) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(Unverifiable::BadMetadata { why: e.to_string() }),
    };
    let actual = Digest(nodeguard_hash::sha256_of(&[&bytes]));
    if actual != *digest {
        return Err(Unverifiable::BadMetadata {
            why: format!("blob {digest} in the content store hashes to {actual}"),
        });
    }
    Ok(Some(bytes))
}

/// Searches the store's small blobs for a manifest whose config is `config`.
fn manifest_for_config(
    blobs: &Path,
    config: &Digest,
    limits: &Limits,
) -> Option<(Digest, Document)> {
    let needle = config.hex();
    let entries = std::fs::read_dir(blobs).ok()?;
    for entry in entries.take(MAX_BLOBS_SCANNED).flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.len() > MAX_MANIFEST_BYTES {
            continue;
        }
        let name = entry.file_name();
        let Some(digest) = name.to_str().and_then(Digest::from_hex) else {
            continue;
        };
        if digest == *config {
            continue;
        }
        let Ok(bytes) = read_small(&entry.path(), MAX_MANIFEST_BYTES) else {
            continue;
        };
        if !contains(&bytes, needle.as_bytes()) {
            continue;
        }
        let Ok(Some(bytes)) = read_blob(blobs, &digest, limits) else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<Document>(&bytes) else {
            continue;
        };
        let names_config = doc
            .config
            .as_ref()
            .and_then(|c| Digest::parse(&c.digest).ok())
            == Some(*config);
        if names_config && doc.layers.is_some() {
            return Some((digest, doc));
        }
    }
    None
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
