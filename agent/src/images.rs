//! Image verification in `nodeguard run`: flags, and the indexer of `nodeguard-image` plugged
//! into the scanner as its [`ImageIndexes`] (docs/image-verification.md).

use anyhow::Context;
use clap::Args;
use nodeguard_image::{
    Expectation, ImageRef, ImageStatus as IndexStatus, Indexer, IndexerOptions, Stores,
    Unverifiable,
};
use nodeguard_model::ImageIndexProgress;
use nodeguard_scan::{
    Expected, ImageContents, ImageIndexes, ImageJudge, ImageName, ImageStatus, NoPods, ScanScope,
    Scanner,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the indexer's progress is copied to the metrics' channel.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Image verification: compare each container executable (and setuid/capability file of
    /// an image layer) with the file its image holds at that path, rebuilt from the
    /// runtime's store on the node; a difference is `image_content_mismatch` (critical).
    /// `--image-verify=false` turns it off.
    #[arg(
        long,
        env = "NODEGUARD_IMAGE_VERIFY",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub image_verify: bool,

    /// containerd roots (content store and snapshots), as host paths (under the host
    /// root); comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/var/lib/containerd",
        env = "NODEGUARD_CONTAINERD_ROOT"
    )]
    pub containerd_root: Vec<PathBuf>,

    /// containers/storage graph roots (podman, CRI-O), as host paths; comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/var/lib/containers/storage",
        env = "NODEGUARD_CONTAINERS_STORAGE_ROOT"
    )]
    pub containers_storage_root: Vec<PathBuf>,

    /// Docker data roots, as host paths; comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/var/lib/docker",
        env = "NODEGUARD_DOCKER_ROOT"
    )]
    pub docker_root: Vec<PathBuf>,

    /// Where the host paths of the stores are reachable [default: the host root]: the
    /// DaemonSet mounts each store read-only under /host and passes `/host`, so the agent
    /// reads the stores through read-only mounts only.
    #[arg(long, env = "NODEGUARD_IMAGE_STORES_AT")]
    pub image_stores_at: Option<PathBuf>,

    /// CPU the background image indexer may use, in cores (0.25: a quarter of one core).
    #[arg(long, default_value_t = 0.25, value_parser = parse_cpu, env = "NODEGUARD_IMAGE_INDEX_CPU")]
    pub image_index_cpu: f64,

    /// Bytes of layer indexes kept on disk under --state-dir (oldest unused dropped first).
    #[arg(long, default_value_t = 256 << 20, env = "NODEGUARD_IMAGE_INDEX_DISK")]
    pub image_index_disk: u64,
}

fn parse_cpu(text: &str) -> Result<f64, String> {
    let cores: f64 = text
        .trim()
        .parse()
        .map_err(|e| format!("not a number of cores {text:?}: {e}"))?;
    if !(0.01..=64.0).contains(&cores) {
        return Err(format!("{cores} cores: give 0.01 to 64"));
    }
    Ok(cores)
}

impl ImageArgs {
    /// The three store kinds' roots as the agent reaches them: each host path under the
    /// host root (or `--image-stores-at`).
    fn stores(&self, host_root: &Path) -> Stores {
        let at = self.image_stores_at.as_deref().unwrap_or(host_root);
        let under = |paths: &[PathBuf]| under_host(at, paths);
        Stores {
            containerd: under(&self.containerd_root),
            containers_storage: under(&self.containers_storage_root),
            docker: under(&self.docker_root),
        }
    }
}

/// The store roots as the agent reaches them: each host path under `host_root`.
fn under_host(host_root: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| host_root.join(p.strip_prefix("/").unwrap_or(p)))
        .collect()
}

/// The indexer (its own thread) and the scan's judge over it; `None` when verification is
/// off.
fn indexer(
    args: &ImageArgs,
    host_root: &Path,
    state_dir: Option<&Path>,
    sha512: bool,
) -> Option<(ImageJudge, Arc<IndexerHandle>)> {
    if !args.image_verify {
        tracing::info!("image verification is off (--image-verify=false)");
        return None;
    }
    let stores = args.stores(host_root);
    let (judge_cs, judge_docker) = (stores.containers_storage.clone(), stores.docker.clone());
    let options = IndexerOptions {
        stores,
        // The indexer keeps its files in `image-index/` under it.
        state_dir: state_dir.map(Path::to_path_buf),
        cpu_budget: args.image_index_cpu,
        disk_budget_bytes: args.image_index_disk,
        sha512,
        ..IndexerOptions::default()
    };
    tracing::info!(
        cpu = args.image_index_cpu,
        disk_budget = args.image_index_disk,
        on_disk = options.state_dir.is_some(),
        "image verification on: indexing image layers in the background"
    );
    let indexes = Arc::new(IndexerHandle(Indexer::start(options)));
    let judge = ImageJudge::new(
        Arc::clone(&indexes) as Arc<dyn ImageIndexes>,
        judge_cs,
        judge_docker,
    );
    Some((judge, indexes))
}

/// Starts the indexer (its own thread) and gives the scanner's judge and the progress
/// channel for metrics; `None` when verification is off.
pub fn start(
    args: &ImageArgs,
    host_root: &Path,
    state_dir: Option<&Path>,
    sha512: bool,
) -> Option<(ImageJudge, watch::Receiver<ImageIndexProgress>)> {
    let (judge, indexes) = indexer(args, host_root, state_dir, sha512)?;
    let (tx, rx) = watch::channel(indexes.progress());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tick.tick().await;
            if tx.send(indexes.progress()).is_err() {
                return;
            }
        }
    });
    Some((judge, rx))
}

/// Image verification for the one-shot `nodeguard scan`: the judge is set on `scanner`, a
/// process pass names every container's image to the indexer, and this waits (at most
/// `wait`) until every image is indexed or found unverifiable, so the scan that follows
/// judges from finished indexes. Layer indexes under `state_dir` (the agent's) are reused
/// and new ones kept there. Images not indexed by then stay `unverifiable: indexing`. Returns
/// what the process pass hashed, for the report of the scan that follows ([`PrePass`]).
pub fn prepare_scan(
    scanner: &mut Scanner,
    args: &ImageArgs,
    state_dir: Option<&Path>,
    sha512: bool,
    wait: Duration,
) -> anyhow::Result<PrePass> {
    let host_root = scanner.options().collect.host_root.clone();
    let Some((judge, indexes)) = indexer(args, &host_root, state_dir, sha512) else {
        return Ok(PrePass::default());
    };
    scanner.set_image_judge(judge);
    let started = std::time::Instant::now();
    let first = scanner
        .scan(ScanScope::Processes, &NoPods)
        .context("scan failed")?;
    let mut progress = indexes.progress();
    while progress.images_queued > 0 && started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(50));
        progress = indexes.progress();
    }
    if progress.images_queued > 0 {
        tracing::warn!(
            waited = ?wait,
            images_left = progress.images_queued,
            "image indexing not finished: those containers stay unverifiable (indexing); --image-wait waits longer"
        );
    } else {
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            images_ready = progress.images_ready,
            images_unverifiable = progress.images_unverifiable,
            layers_indexed = progress.layers_indexed,
            layers_from_disk = progress.layers_from_disk,
            "image layers indexed"
        );
    }
    Ok(PrePass {
        files_hashed: first.stats.files_hashed,
        bytes_hashed: first.stats.bytes_hashed,
        hash_cache_misses: first.stats.hash_cache_misses,
    })
}

/// What the process pass that named the images hashed, so the one-shot scan's report counts
/// the reading the command did: the reported scan finds those digests in the cache, and
/// without this it would say nothing was read.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrePass {
    files_hashed: u64,
    bytes_hashed: u64,
    hash_cache_misses: u64,
}

impl PrePass {
    /// Moves the pass's reads into `stats`: its misses were hits of the reported scan.
    pub fn count_in(&self, stats: &mut nodeguard_model::ScanStats) {
        stats.files_hashed += self.files_hashed;
        stats.bytes_hashed += self.bytes_hashed;
        stats.hash_cache_misses += self.hash_cache_misses;
        stats.hash_cache_hits = stats.hash_cache_hits.saturating_sub(self.hash_cache_misses);
    }
}

/// `nodeguard-image`'s indexer as the scan sees it.
struct IndexerHandle(Indexer);

impl ImageIndexes for IndexerHandle {
    fn status(&self, image: &ImageName, priority: SystemTime) -> ImageStatus {
        let image = match image {
            ImageName::Digest(d) => ImageRef::Digest(d.clone()),
            ImageName::ContainersStorage(id) => ImageRef::ContainersStorage {
                image_id: id.clone(),
            },
            ImageName::Docker(id) => ImageRef::Docker {
                image_id: id.clone(),
            },
        };
        match self.0.status(&image, priority) {
            IndexStatus::Ready(index) => ImageStatus::Ready(Arc::new(Index(index))),
            IndexStatus::Pending => ImageStatus::Pending,
            // A layer that no longer hashes to its diff_id was altered in the store.
            IndexStatus::Unverifiable(why) => match &why {
                Unverifiable::DiffIdMismatch { layer } => ImageStatus::Altered {
                    layer: layer.clone(),
                    reason: why.to_string(),
                },
                _ => ImageStatus::Unverifiable(why.to_string()),
            },
        }
    }

    fn progress(&self) -> ImageIndexProgress {
        self.0.progress()
    }
}

struct Index(Arc<nodeguard_image::ImageIndex>);

impl ImageContents for Index {
    fn config_digest(&self) -> &str {
        &self.0.config_digest
    }

    fn layers(&self) -> &[String] {
        &self.0.layers
    }

    fn expect(&self, path: &[u8]) -> Expected {
        match self.0.expect(path) {
            Expectation::InLayer {
                diff_id,
                sha256,
                sha512,
                ..
            } => Expected::InLayer {
                layer: diff_id,
                sha256,
                sha512,
            },
            Expectation::Unhashed {
                diff_id, sparse, ..
            } => Expected::Unhashed {
                layer: diff_id,
                sparse,
            },
            Expectation::NotInImage => Expected::NotInImage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_roots_are_host_paths_under_the_host_root() {
        assert_eq!(
            under_host(
                Path::new("/proc/1/root"),
                &[PathBuf::from("/var/lib/containerd")]
            ),
            [PathBuf::from("/proc/1/root/var/lib/containerd")]
        );
        assert!(parse_cpu("0.25").is_ok());
        assert!(parse_cpu("0").is_err());
        assert!(parse_cpu("lots").is_err());
    }
}
