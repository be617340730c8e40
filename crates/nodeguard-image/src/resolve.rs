//! From a container's image reference to the image's config and layers, in whichever store
//! holds it.

use crate::found::Resolved;
use crate::{containerd, containers_storage, docker, ImageRef, Limits, Stores, Unverifiable};

/// Finds `image` in the stores. A reference by digest is looked up in every store (containerd
/// first: a pod's imageID most often names its content); a runtime's own id only in its store.
pub(crate) fn resolve(
    stores: &Stores,
    image: &ImageRef,
    limits: &Limits,
) -> Result<Resolved, Unverifiable> {
    let Some(digest) = image.digest() else {
        return Err(Unverifiable::ImageUnknown);
    };
    let mounted = |roots: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        roots.iter().filter(|r| r.is_dir()).cloned().collect()
    };
    let containerd_roots = mounted(&stores.containerd);
    let storage_roots = mounted(&stores.containers_storage);
    let docker_roots = mounted(&stores.docker);
    if containerd_roots.is_empty() && storage_roots.is_empty() && docker_roots.is_empty() {
        return Err(Unverifiable::StoreNotMounted);
    }
    let (use_containerd, use_storage, use_docker) = match image {
        ImageRef::Digest(_) => (true, true, true),
        ImageRef::ContainersStorage { .. } => (false, true, false),
        ImageRef::Docker { .. } => (false, false, true),
    };
    if use_containerd {
        for root in &containerd_roots {
            if let Some(found) = containerd::find(root, &digest, limits)? {
                return Ok(found);
            }
        }
    }
    if use_storage {
        for root in &storage_roots {
            if let Some(found) = containers_storage::find(root, &digest, limits)? {
                return Ok(found);
            }
        }
    }
    if use_docker {
        for root in &docker_roots {
            if let Some(found) = docker::find(root, &digest, limits)? {
                return Ok(found);
            }
        }
    }
    Err(Unverifiable::ImageUnknown)
}
