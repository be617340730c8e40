//! An image's layers stacked in order: what the image promises at each path.

use crate::entry::EntryKind;
use crate::layer::LayerIndex;
use std::sync::Arc;

/// What the image says a path should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The top-most layer that has this path holds a hashed file (executable, setuid/setgid or
    /// with file capabilities): the running binary must have these bytes.
    InLayer {
        /// The layer (`sha256:…`) the file comes from.
        diff_id: String,
        sha256: [u8; 32],
        /// When the indexer was asked for SHA-512.
        sha512: Option<[u8; 64]>,
        /// Permission bits and setuid/setgid/sticky (`mode & 0o7777`) in the image.
        mode: u32,
        /// Whether the image gives the file a `security.capability` xattr.
        file_capability: bool,
    },
    /// The image has a regular file at this path but did not hash it: it is not executable in
    /// the image (so running it means its mode was changed on the node), or it is a sparse
    /// member (never expanded).
    Unhashed {
        diff_id: String,
        mode: u32,
        sparse: bool,
    },
    /// No layer has a regular file here (absent, whited out, under an opaque directory, or a
    /// symlink/device): the file came from the writable layer, a volume or a tmpfs.
    NotInImage,
}

/// One image, indexed: its layers bottom to top, each shared with other images.
#[derive(Debug, Clone)]
pub struct ImageIndex {
    /// How the image was asked for (the pod's imageID, or the runtime's id).
    pub reference: String,
    /// The image config's digest (`sha256:…`).
    pub config_digest: String,
    /// diff_ids, bottom to top.
    pub layers: Vec<String>,
    pub(crate) layer_indexes: Vec<Arc<LayerIndex>>,
    specials: Vec<(Box<[u8]>, Expectation)>,
}

impl ImageIndex {
    /// Stacks indexed layers (bottom to top).
    pub fn new(
        reference: String,
        config_digest: String,
        layers: Vec<Arc<LayerIndex>>,
    ) -> ImageIndex {
        let mut image = ImageIndex {
            reference,
            config_digest,
            layers: layers.iter().map(|l| l.diff_id.to_string()).collect(),
            layer_indexes: layers,
            specials: Vec::new(),
        };
        image.specials = image.compute_specials();
        image
    }

    /// What the image holds at `path` (absolute as seen in the container, e.g. `/usr/bin/ls`,
    /// or relative): the top-most layer that names the path wins; whiteouts, opaque directories
    /// and non-directories over an ancestor hide what lies below.
    pub fn expect(&self, path: &[u8]) -> Expectation {
        let Some(path) = clean(path) else {
            return Expectation::NotInImage;
        };
        for layer in self.layer_indexes.iter().rev() {
            if let Some(kind) = layer.lookup(&path) {
                return expectation(layer, &kind);
            }
            if layer.hides_lower(&path) {
                return Expectation::NotInImage;
            }
        }
        Expectation::NotInImage
    }

    /// The image's setuid, setgid and file-capability files that the stacked image still shows
    /// (paths relative, e.g. `usr/bin/passwd`), each with what it must be.
    pub fn special_files(&self) -> impl Iterator<Item = (&[u8], &Expectation)> {
        self.specials.iter().map(|(p, e)| (&**p, e))
    }

    /// Bytes of all layers' uncompressed streams.
    pub fn bytes(&self) -> u64 {
        self.layer_indexes.iter().map(|l| l.bytes).sum()
    }

    fn compute_specials(&self) -> Vec<(Box<[u8]>, Expectation)> {
        let mut out: Vec<(Box<[u8]>, Expectation)> = Vec::new();
        for layer in &self.layer_indexes {
            for entry in layer.named() {
                let EntryKind::Hashed {
                    mode, capability, ..
                } = &entry.kind
                else {
                    continue;
                };
                if mode & 0o6000 == 0 && !capability {
                    continue;
                }
                if out.iter().any(|(p, _)| *p == entry.path) {
                    continue;
                }
                // Only what the stacked image shows at that path counts.
                let shown = self.expect(&entry.path);
                if let Expectation::InLayer {
                    mode,
                    file_capability,
                    ..
                } = &shown
                {
                    if mode & 0o6000 != 0 || *file_capability {
                        out.push((entry.path.clone(), shown));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn expectation(layer: &LayerIndex, kind: &EntryKind) -> Expectation {
    match kind {
        EntryKind::Hashed {
            mode,
            sha256,
            sha512,
            capability,
        } => Expectation::InLayer {
            diff_id: layer.diff_id.to_string(),
            sha256: *sha256,
            sha512: sha512.as_deref().copied(),
            mode: *mode,
            file_capability: *capability,
        },
        EntryKind::Unhashed { mode, sparse } => Expectation::Unhashed {
            diff_id: layer.diff_id.to_string(),
            mode: *mode,
            sparse: *sparse,
        },
        EntryKind::Other | EntryKind::Whiteout | EntryKind::Opaque => Expectation::NotInImage,
    }
}

/// `/usr//bin/./ls` → `usr/bin/ls`; `None` for `..` (a path that cannot be in a layer).
fn clean(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return None,
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Some(out)
}
