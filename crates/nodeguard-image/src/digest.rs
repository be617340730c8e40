//! Content digests (`sha256:<64 hex>`) and the ways a container names its image.

use crate::Error;
use std::fmt;

/// A SHA-256 content digest, as OCI writes it: `sha256:` and 64 lowercase hex digits.
/// Only SHA-256 is accepted: every runtime on the node names blobs and layers by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parses `sha256:<64 hex>` (upper-case hex is refused, as the OCI spec does).
    pub fn parse(text: &str) -> Result<Digest, Error> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::BadDigest(clip(text)))?;
        Digest::from_hex(hex).ok_or_else(|| Error::BadDigest(clip(text)))
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Digest(out))
    }

    /// The 64 hex digits, without `sha256:`.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex of any byte string.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// At most 80 characters of hostile text, for an error message.
pub(crate) fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

/// How a container names its image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageRef {
    /// `sha256:<hex>` — a pod's `imageID`: the manifest or index digest after a pull, the config
    /// digest for an imported image (containerd), or the image id (CRI-O, dockershim). Every
    /// store is asked.
    Digest(String),
    /// A podman/CRI-O image id from containers/storage metadata (64 hex, with or without
    /// `sha256:`).
    ContainersStorage { image_id: String },
    /// A Docker image id (the config digest, with or without `sha256:`).
    Docker { image_id: String },
}

impl ImageRef {
    /// Reads the forms a pod status or a runtime gives: `sha256:<hex>`, `repo@sha256:<hex>`,
    /// `docker-pullable://repo@sha256:<hex>`, `docker://sha256:<hex>` (a Docker image id), and a
    /// bare 64-hex id. Anything else (a tag without a digest) is an error: it names no content.
    pub fn parse(text: &str) -> Result<ImageRef, Error> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("docker://") {
            let digest = digest_of(rest).ok_or_else(|| Error::BadImageRef(clip(text)))?;
            return Ok(ImageRef::Docker {
                image_id: digest.to_string(),
            });
        }
        let rest = text.strip_prefix("docker-pullable://").unwrap_or(text);
        let digest = digest_of(rest).ok_or_else(|| Error::BadImageRef(clip(text)))?;
        Ok(ImageRef::Digest(digest.to_string()))
    }

    /// The content digest this reference names, when it is well formed.
    pub fn digest(&self) -> Option<Digest> {
        match self {
            ImageRef::Digest(d) => digest_of(d),
            ImageRef::ContainersStorage { image_id } | ImageRef::Docker { image_id } => {
                digest_of(image_id)
            }
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Digest(d) => write!(f, "{d}"),
            ImageRef::ContainersStorage { image_id } => write!(f, "containers-storage:{image_id}"),
            ImageRef::Docker { image_id } => write!(f, "docker:{image_id}"),
        }
    }
}

/// The digest at the end of `repo@sha256:<hex>`, `sha256:<hex>` or a bare 64-hex id.
fn digest_of(text: &str) -> Option<Digest> {
    let tail = text.rsplit_once('@').map_or(text, |(_, d)| d);
    Digest::parse(tail).ok().or_else(|| Digest::from_hex(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn image_ids_in_every_form_a_pod_status_gives_name_the_same_digest() {
        let want = Digest::from_hex(HEX).unwrap();
        for form in [
            format!("sha256:{HEX}"),
            format!("docker.io/library/busybox@sha256:{HEX}"),
            format!("docker-pullable://registry:5000/x/y@sha256:{HEX}"),
            HEX.to_string(),
        ] {
            let r = ImageRef::parse(&form).unwrap();
            assert!(matches!(r, ImageRef::Digest(_)), "{form}");
            assert_eq!(r.digest(), Some(want), "{form}");
        }
        let docker = ImageRef::parse(&format!("docker://sha256:{HEX}")).unwrap();
        assert!(matches!(docker, ImageRef::Docker { .. }));
        assert_eq!(docker.digest(), Some(want));
    }

    #[test]
    fn tags_uppercase_and_short_digests_are_refused() {
        for bad in [
            "busybox:latest",
            "sha256:abc",
            &format!("sha256:{}", HEX.to_uppercase()),
            &format!("sha512:{HEX}"),
            "",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
