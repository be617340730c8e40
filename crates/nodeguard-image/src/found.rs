//! What a store says about an image, in the one shape every store module returns.

use crate::layer::LayerSource;
use crate::Digest;
use serde::Deserialize;

/// An image found in a store: its config digest and its layers bottom to top, each with the
/// diff_id its config names and where the layer's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub config_digest: Digest,
    pub layers: Vec<(Digest, LayerSource)>,
}

/// This node's architecture as OCI platforms name it.
pub(crate) fn platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An image config's `rootfs` (only the diff_ids matter here): the layers an image is
/// made of, by content digest. Not a container's root filesystem (`nodeguard_model::RootFs`).
#[derive(Deserialize)]
pub(crate) struct ConfigRootFs {
    #[serde(default)]
    pub(crate) diff_ids: Vec<String>,
}
