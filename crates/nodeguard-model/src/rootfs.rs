//! A container's root filesystem: its type and, for an overlay, its layers as host paths
//! byte for byte. One type from the mount table (collect) through the filesystem walk
//! (fscan) to the report; the JSON renders each path with [`escape_path`] and reads it back
//! with [`unescape_path`], so the bytes never pass through a lossy `String`.

use crate::text::{escape_path, unescape_path};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The layers of an overlay mount, as host paths (the `lowerdir=`/`upperdir=` of its super
/// options, unescaped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayLayers {
    /// Image layers, top first (data-only layers left out: they are not visible by path).
    #[serde(serialize_with = "paths_out", deserialize_with = "paths_in")]
    pub lower_dirs: Vec<PathBuf>,
    /// The container's writable layer.
    #[serde(serialize_with = "path_out", deserialize_with = "path_in")]
    pub upper_dir: Option<PathBuf>,
}

impl OverlayLayers {
    /// The same layers as reached from the agent: each absolute host path below `host_root`
    /// (`/host` + `/var/lib/...`), bytes unchanged.
    pub fn under(&self, host_root: &Path) -> OverlayLayers {
        let join = |p: &PathBuf| {
            let raw = p.as_os_str().as_bytes();
            let start = raw.iter().position(|b| *b != b'/').unwrap_or(raw.len());
            host_root.join(OsStr::from_bytes(&raw[start..]))
        };
        OverlayLayers {
            lower_dirs: self.lower_dirs.iter().map(join).collect(),
            upper_dir: self.upper_dir.as_ref().map(join),
        }
    }
}

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Filesystem type of the container's `/` (`overlay` for containerd, CRI-O, Docker).
    pub fstype: String,
    /// Its layers when it is an overlay (empty otherwise); in JSON `lower_dirs` and
    /// `upper_dir` beside `fstype`.
    #[serde(flatten)]
    pub layers: OverlayLayers,
}

impl RootFs {
    /// The overlay's layers; `None` when the root is no overlay.
    pub fn overlay(&self) -> Option<&OverlayLayers> {
        (self.fstype == "overlay").then_some(&self.layers)
    }
}

fn text(path: &Path) -> String {
    escape_path(path.as_os_str().as_bytes())
}

fn bytes(text: String) -> PathBuf {
    let raw = unescape_path(&text).unwrap_or_else(|| text.into_bytes());
    PathBuf::from(std::ffi::OsString::from(OsStr::from_bytes(&raw)))
}

fn paths_out<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| text(p)))
}

fn path_out<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    path.as_deref().map(text).serialize(s)
}

fn paths_in<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .into_iter()
        .map(bytes)
        .collect())
}

fn path_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(lower: &[&[u8]], upper: Option<&[u8]>) -> RootFs {
        let path = |b: &&[u8]| PathBuf::from(OsStr::from_bytes(b));
        RootFs {
            fstype: "overlay".into(),
            layers: OverlayLayers {
                lower_dirs: lower.iter().map(path).collect(),
                upper_dir: upper.as_ref().map(path),
            },
        }
    }

    #[test]
    fn json_is_the_escaped_text_of_each_path_and_reads_back_to_the_same_bytes() {
        let fs = overlay(&[b"/l/2", b"/l/\xffodd\n"], Some(b"/u p"));
        let json = serde_json::to_string(&fs).unwrap();
        assert_eq!(
            json,
            r#"{"fstype":"overlay","lower_dirs":["/l/2","/l/\\xffodd\\n"],"upper_dir":"/u p"}"#
        );
        assert_eq!(serde_json::from_str::<RootFs>(&json).unwrap(), fs);
        let plain = RootFs {
            fstype: "ext4".into(),
            ..RootFs::default()
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"fstype":"ext4","lower_dirs":[],"upper_dir":null}"#
        );
        assert_eq!(plain.overlay(), None);
    }

    #[test]
    fn layers_under_a_host_root_keep_their_bytes() {
        let fs = overlay(&[b"/var/l\xff"], Some(b"//u"));
        let reached = fs.layers.under(Path::new("/host"));
        assert_eq!(
            reached.lower_dirs,
            [PathBuf::from(OsStr::from_bytes(b"/host/var/l\xff"))]
        );
        assert_eq!(reached.upper_dir, Some(PathBuf::from("/host/u")));
    }
}
