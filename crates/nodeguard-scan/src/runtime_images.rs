//! Which image a container runs, from the runtime's own metadata, when no pod status says
//! (no cluster, or a container the kubelet does not know): containers/storage's
//! `overlay-containers/containers.json` (podman, CRI-O: container id → image id) and
//! Docker's `containers/<id>/config.v2.json` (`"Image"`). containerd keeps its container
//! records in a bolt database (`io.containerd.metadata.v1.bolt/meta.db`), which is not read:
//! a containerd container without a pod is "image unknown".
//!
//! These files are the runtime's, on the host, but a container can influence what lands in
//! them (names, labels, environment), so they are read as hostile input: the last path
//! component is opened without following a symlink and without blocking on a FIFO, only a
//! regular file within a size bound is read, and JSON that does not parse names no image.
//! `containers.json` is read again only when its size or mtime changed; a Docker
//! container's image never changes, so its answer is kept while the container lives.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest `containers.json` read (a node with thousands of containers stays far
/// below it).
pub const MAX_CONTAINERS_JSON: u64 = 32 << 20;
/// The largest Docker `config.v2.json` read.
pub const MAX_DOCKER_CONFIG: u64 = 4 << 20;

/// The image ids runtimes record for their containers, read lazily and cached.
#[derive(Debug, Default)]
pub struct RuntimeImages {
    containers_storage: Vec<StorageRoot>,
    docker: Vec<PathBuf>,
    docker_known: HashMap<String, Option<String>>,
}

#[derive(Debug)]
struct StorageRoot {
    root: PathBuf,
    /// (size, mtime seconds, mtime nanoseconds) of the `containers.json` last read.
    read: Option<(u64, i64, i64)>,
    /// Looked at in this pass already (one `open` + `fstat` per pass, whatever the number of
    /// containers asked about).
    looked: bool,
    images: HashMap<String, String>,
}

/// Why a runtime file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path}: larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: not the JSON expected: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl RuntimeImages {
    /// `containers_storage` and `docker` are store roots as the agent sees them (host root
    /// already applied), e.g. `/proc/1/root/var/lib/containers/storage`.
    pub fn new(containers_storage: Vec<PathBuf>, docker: Vec<PathBuf>) -> RuntimeImages {
        RuntimeImages {
            containers_storage: containers_storage
                .into_iter()
                .map(|root| StorageRoot {
                    root,
                    read: None,
                    looked: false,
                    images: HashMap::new(),
                })
                .collect(),
            docker,
            docker_known: HashMap::new(),
        }
    }

    /// Starts a scan's pass: `containers.json` is looked at again (at most once) in it.
    pub fn next_pass(&mut self) {
        for root in &mut self.containers_storage {
            root.looked = false;
        }
    }

    /// The containers/storage image id of `container_id`, from the first root that knows it.
    pub fn containers_storage_image(&mut self, container_id: &str) -> Option<String> {
        for root in &mut self.containers_storage {
            if !root.looked {
                root.looked = true;
                if let Err(e) = root.refresh() {
                    tracing::debug!(error = %e, "containers.json not read");
                }
            }
            if let Some(image) = root.images.get(container_id) {
                return Some(image.clone());
            }
        }
        None
    }

    /// The Docker image id (`sha256:…`) of `container_id`.
    pub fn docker_image(&mut self, container_id: &str) -> Option<String> {
        if let Some(known) = self.docker_known.get(container_id) {
            return known.clone();
        }
        // Only a container id may become a path component.
        if container_id.is_empty() || !container_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let found = self.docker.iter().find_map(|root| {
            let path = root
                .join("containers")
                .join(container_id)
                .join("config.v2.json");
            match read_bounded(&path, MAX_DOCKER_CONFIG)
                .and_then(|b| docker_config_image(&path, &b))
            {
                Ok(image) => image,
                Err(e) => {
                    tracing::debug!(error = %e, "docker config not read");
                    None
                }
            }
        });
        // Found or not, the answer is kept: a container's image never changes (an absent
        // file is looked for again when the container is seen anew after `forget`).
        self.docker_known
            .insert(container_id.to_string(), found.clone());
        found
    }

    /// Drops what is kept about containers not in `alive` (bounded by what runs now).
    pub fn retain(&mut self, alive: impl Fn(&str) -> bool) {
        self.docker_known.retain(|id, _| alive(id));
    }
}

impl StorageRoot {
    fn refresh(&mut self) -> Result<(), MetadataError> {
        let path = self.root.join("overlay-containers/containers.json");
        let file = open_regular(&path, MAX_CONTAINERS_JSON)?;
        let meta = file.metadata().map_err(|source| MetadataError::Io {
            path: path.clone(),
            source,
        })?;
        let stamp = (meta.size(), meta.mtime(), meta.mtime_nsec());
        if self.read == Some(stamp) {
            return Ok(());
        }
        let bytes = read_all(file, &path, MAX_CONTAINERS_JSON)?;
        self.images = containers_json_images(&path, &bytes)?;
        self.read = Some(stamp);
        Ok(())
    }
}

/// `containers.json`: `[{"id": "<64 hex>", "image": "<64 hex>", "layer": …, …}, …]`.
fn containers_json_images(
    path: &Path,
    bytes: &[u8],
) -> Result<HashMap<String, String>, MetadataError> {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        image: Option<String>,
    }
    let entries: Vec<Entry> =
        serde_json::from_slice(bytes).map_err(|source| MetadataError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(entries
        .into_iter()
        .filter_map(|e| Some((e.id, e.image.filter(|i| !i.is_empty())?)))
        .collect())
}

/// `config.v2.json`'s `"Image": "sha256:<hex>"`.
fn docker_config_image(path: &Path, bytes: &[u8]) -> Result<Option<String>, MetadataError> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "Image", default)]
        image: Option<String>,
    }
    let config: Config = serde_json::from_slice(bytes).map_err(|source| MetadataError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(config.image.filter(|i| !i.is_empty()))
}

fn open_regular(path: &Path, max: u64) -> Result<File, MetadataError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| MetadataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(MetadataError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > max {
        return Err(MetadataError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(file)
}

fn read_all(file: File, path: &Path, max: u64) -> Result<Vec<u8>, MetadataError> {
    let mut bytes = Vec::new();
    // The file may grow after the size check: read one byte past the bound to tell.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| MetadataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(MetadataError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, MetadataError> {
    read_all(open_regular(path, max)?, path, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const I1: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn containers_storage_names_the_image_and_rereads_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("overlay-containers");
        std::fs::create_dir_all(&meta).unwrap();
        let json = format!(
            r#"[{{"id":"{C1}","names":["web"],"image":"{I1}","layer":"x","metadata":"{{}}"}}]"#
        );
        std::fs::write(meta.join("containers.json"), json).unwrap();
        let mut images = RuntimeImages::new(vec![dir.path().to_path_buf()], vec![]);
        assert_eq!(images.containers_storage_image(C1).as_deref(), Some(I1));
        assert_eq!(images.containers_storage_image("2222"), None);
        std::fs::write(meta.join("containers.json"), "[]").unwrap();
        // Read once per pass: the change shows in the next one.
        assert_eq!(images.containers_storage_image(C1).as_deref(), Some(I1));
        images.next_pass();
        assert_eq!(images.containers_storage_image(C1), None);
    }

    #[test]
    fn hostile_metadata_names_no_image_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("overlay-containers");
        std::fs::create_dir_all(&meta).unwrap();
        // A FIFO where the file should be: refused, not waited on.
        let fifo = std::ffi::CString::new(
            meta.join("containers.json")
                .as_os_str()
                .as_encoded_bytes()
                .to_vec(),
        )
        .unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let mut images = RuntimeImages::new(vec![dir.path().to_path_buf()], vec![]);
        assert_eq!(images.containers_storage_image(C1), None);
        images.next_pass();
        // A symlink to elsewhere is not followed.
        std::fs::remove_file(meta.join("containers.json")).unwrap();
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(&elsewhere, format!(r#"[{{"id":"{C1}","image":"{I1}"}}]"#)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, meta.join("containers.json")).unwrap();
        assert_eq!(images.containers_storage_image(C1), None);
        images.next_pass();
        // Garbage and wrong shapes name nothing.
        std::fs::remove_file(meta.join("containers.json")).unwrap();
        std::fs::write(meta.join("containers.json"), b"\xff[{\"id\":").unwrap();
        assert_eq!(images.containers_storage_image(C1), None);
    }

    #[test]
    fn docker_config_names_the_image_and_ids_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("containers").join(C1);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("config.v2.json"),
            format!(r#"{{"ID":"{C1}","Image":"sha256:{I1}","Config":{{"Env":[]}}}}"#),
        )
        .unwrap();
        let mut images = RuntimeImages::new(vec![], vec![dir.path().to_path_buf()]);
        assert_eq!(
            images.docker_image(C1).as_deref(),
            Some(format!("sha256:{I1}").as_str())
        );
        assert_eq!(images.docker_image("../../etc"), None);
        images.retain(|_| false);
        assert!(images.docker_known.is_empty());
    }
}
