//! The background indexer: one thread, at a CPU budget, oldest container's image first.
//!
//! [`Indexer::status`] only looks at shared state and queues work: a scan never waits for
//! indexing. Layer indexes are shared between images (in memory while an image holding them is
//! known, on disk across restarts).

use crate::budget::CpuBudget;
use crate::disk_cache::DiskCache;
use crate::image::ImageIndex;
use crate::layer::{LayerError, LayerIndex};
use crate::resolve::resolve;
use crate::{Digest, ImageRef, Limits, Stores, Unverifiable};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How long an unverifiable verdict stands before the image is looked at again (a store may be
/// mounted later, a blob pulled again).
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// An image nobody asked about for this long is forgotten (its layers stay on disk).
const FORGET_AFTER: Duration = Duration::from_secs(1800);
/// Images tracked at once, at most; beyond, the least recently asked are forgotten.
const MAX_IMAGES: usize = 4096;

/// How the indexer works.
#[derive(Debug, Clone)]
pub struct IndexerOptions {
    pub stores: Stores,
    /// Where layer indexes are kept across restarts (`<state_dir>/image-index/`); `None`: in
    /// memory only.
    pub state_dir: Option<PathBuf>,
    /// Fraction of one core the indexing thread may use (default 0.25).
    pub cpu_budget: f64,
    /// Bytes of layer indexes kept on disk, at most (default 256 MiB).
    pub disk_budget_bytes: u64,
    /// Record SHA-512 beside SHA-256.
    pub sha512: bool,
    pub limits: Limits,
}

impl Default for IndexerOptions {
    fn default() -> Self {
        IndexerOptions {
            stores: Stores::default(),
            state_dir: None,
            cpu_budget: 0.25,
            disk_budget_bytes: 256 << 20,
            sha512: false,
            limits: Limits::default(),
        }
    }
}

/// Where an image stands.
#[derive(Debug, Clone)]
pub enum ImageStatus {
    /// Every layer indexed and checked against its diff_id.
    Ready(Arc<ImageIndex>),
    /// Queued or being indexed (report it as [`Unverifiable::Indexing`]).
    Pending,
    Unverifiable(Unverifiable),
}

/// The indexer's counters, as the report carries them.
pub use nodeguard_model::ImageIndexProgress as Progress;

/// The handle the agent keeps: dropping it stops the thread (it finishes within about a
/// second, abandoning a layer mid-read).
pub struct Indexer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    stores_configured: bool,
    layers_indexed: AtomicU64,
    layers_from_disk: AtomicU64,
    layers_refused: AtomicU64,
    bytes_read: AtomicU64,
    disk_bytes: AtomicU64,
}

#[derive(Default)]
struct State {
    images: HashMap<ImageRef, Slot>,
    /// (container start, arrival order, image): the oldest container's image first.
    queue: BTreeSet<(SystemTime, u64, ImageRef)>,
    arrivals: u64,
}

struct Slot {
    phase: Phase,
    asked: Instant,
}

enum Phase {
    Queued { priority: SystemTime, seq: u64 },
    Working,
    Ready(Arc<ImageIndex>),
    Failed { why: Unverifiable, at: Instant },
}

impl Indexer {
    /// Starts the background thread. Nothing is read until an image is asked about.
    pub fn start(options: IndexerOptions) -> Indexer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            stores_configured: !options.stores.is_empty(),
            layers_indexed: AtomicU64::new(0),
            layers_from_disk: AtomicU64::new(0),
            layers_refused: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("image-indexer".into())
            .spawn(move || Worker::new(worker, options).run())
            .map_err(|e| tracing::error!(error = %e, "cannot start the image indexer thread"))
            .ok();
        Indexer { shared, thread }
    }

    /// Where `image` stands, without waiting. An image not yet known is queued, ordered by
    /// `priority` (the start time of the oldest container running it: oldest first).
    pub fn status(&self, image: &ImageRef, priority: SystemTime) -> ImageStatus {
        if !self.shared.stores_configured {
            return ImageStatus::Unverifiable(Unverifiable::StoreNotMounted);
        }
        if image.digest().is_none() {
            return ImageStatus::Unverifiable(Unverifiable::ImageUnknown);
        }
        let mut state = self.shared.lock();
        let now = Instant::now();
        let state = &mut *state;
        if let Some(slot) = state.images.get_mut(image) {
            slot.asked = now;
            match &mut slot.phase {
                Phase::Ready(index) => return ImageStatus::Ready(Arc::clone(index)),
                Phase::Working => return ImageStatus::Pending,
                Phase::Queued { priority: p, seq } => {
                    if priority < *p {
                        state.queue.remove(&(*p, *seq, image.clone()));
                        state.queue.insert((priority, *seq, image.clone()));
                        *p = priority;
                    }
                    return ImageStatus::Pending;
                }
                Phase::Failed { why, at } => {
                    if at.elapsed() < RETRY_AFTER {
                        return ImageStatus::Unverifiable(why.clone());
                    }
                    let why = why.clone();
                    let seq = state.arrivals;
                    state.arrivals += 1;
                    slot.phase = Phase::Queued { priority, seq };
                    state.queue.insert((priority, seq, image.clone()));
                    self.shared.wake.notify_one();
                    return ImageStatus::Unverifiable(why);
                }
            }
        }
        if state.images.len() >= MAX_IMAGES {
            forget_least_asked(state);
        }
        let seq = state.arrivals;
        state.arrivals += 1;
        state.images.insert(
            image.clone(),
            Slot {
                phase: Phase::Queued { priority, seq },
                asked: now,
            },
        );
        state.queue.insert((priority, seq, image.clone()));
        self.shared.wake.notify_one();
        ImageStatus::Pending
    }

    /// Counters for metrics.
    pub fn progress(&self) -> Progress {
        let s = &self.shared;
        let state = s.lock();
        let mut p = Progress {
            layers_indexed: s.layers_indexed.load(Ordering::Relaxed),
            layers_from_disk: s.layers_from_disk.load(Ordering::Relaxed),
            layers_refused: s.layers_refused.load(Ordering::Relaxed),
            bytes_read: s.bytes_read.load(Ordering::Relaxed),
            disk_bytes: s.disk_bytes.load(Ordering::Relaxed),
            ..Progress::default()
        };
        for slot in state.images.values() {
            match slot.phase {
                Phase::Queued { .. } | Phase::Working => p.images_queued += 1,
                Phase::Ready(_) => p.images_ready += 1,
                Phase::Failed { .. } => p.images_unverifiable += 1,
            }
        }
        p
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-updated in a way that matters here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn forget_least_asked(state: &mut State) {
    let victim = state
        .images
        .iter()
        .filter(|(_, s)| !matches!(s.phase, Phase::Working))
        .min_by_key(|(_, s)| s.asked)
        .map(|(k, _)| k.clone());
    if let Some(image) = victim {
        if let Some(Slot {
            phase: Phase::Queued { priority, seq },
            ..
        }) = state.images.remove(&image)
        {
            state.queue.remove(&(priority, seq, image));
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    options: IndexerOptions,
    disk: Option<DiskCache>,
    budget: CpuBudget,
    /// Layers held by some image still known: shared, not re-read.
    layers: HashMap<Digest, Weak<LayerIndex>>,
}

impl Worker {
    fn new(shared: Arc<Shared>, options: IndexerOptions) -> Worker {
        let disk = options.state_dir.as_ref().and_then(|dir| {
            DiskCache::open(dir, options.disk_budget_bytes)
                .map_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "image index cache unusable: indexes kept in memory only"))
                .ok()
        });
        if let Some(d) = &disk {
            shared.disk_bytes.store(d.total_bytes(), Ordering::Relaxed);
        }
        Worker {
            budget: CpuBudget::new(options.cpu_budget),
            shared,
            options,
            disk,
            layers: HashMap::new(),
        }
    }

    fn run(mut self) {
        while let Some(image) = self.next() {
            let result = self.build(&image);
            let mut state = self.shared.lock();
            if let Some(slot) = state.images.get_mut(&image) {
                slot.phase = match result {
                    Ok(index) => Phase::Ready(index),
                    Err(why) => {
                        tracing::info!(image = %image, reason = %why, "image unverifiable");
                        Phase::Failed {
                            why,
                            at: Instant::now(),
                        }
                    }
                };
            }
            drop(state);
            self.layers.retain(|_, w| w.strong_count() > 0);
        }
    }

    /// The next image to index, waiting for one; `None` when stopping.
    fn next(&mut self) -> Option<ImageRef> {
        let mut state = self.shared.lock();
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            state.images.retain(|_, s| {
                matches!(s.phase, Phase::Working | Phase::Queued { .. })
                    || now.duration_since(s.asked) < FORGET_AFTER
            });
            if let Some(first) = state.queue.pop_first() {
                let image = first.2;
                if let Some(slot) = state.images.get_mut(&image) {
                    slot.phase = Phase::Working;
                    return Some(image);
                }
                continue;
            }
            state = self
                .shared
                .wake
                .wait_timeout(state, Duration::from_secs(1))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn build(&mut self, image: &ImageRef) -> Result<Arc<ImageIndex>, Unverifiable> {
        let resolved = resolve(&self.options.stores, image, &self.options.limits)?;
        let mut layers = Vec::with_capacity(resolved.layers.len());
        for (diff_id, source) in &resolved.layers {
            layers.push(self.layer(diff_id, source)?);
        }
        Ok(Arc::new(ImageIndex::new(
            image.to_string(),
            resolved.config_digest.to_string(),
            layers,
        )))
    }

    fn layer(
        &mut self,
        diff_id: &Digest,
        source: &crate::LayerSource,
    ) -> Result<Arc<LayerIndex>, Unverifiable> {
        let sha512 = self.options.sha512;
        if let Some(layer) = self.layers.get(diff_id).and_then(Weak::upgrade) {
            if layer.sha512 || !sha512 {
                return Ok(layer);
            }
        }
        if let Some(disk) = &mut self.disk {
            if let Some(layer) = disk.load(diff_id, sha512, &self.options.limits) {
                self.shared.layers_from_disk.fetch_add(1, Ordering::Relaxed);
                let layer = Arc::new(layer);
                self.layers.insert(*diff_id, Arc::downgrade(&layer));
                return Ok(layer);
            }
        }
        let shared = Arc::clone(&self.shared);
        let budget = &mut self.budget;
        let mut last = 0u64;
        let mut pace = |read: u64| {
            shared.bytes_read.fetch_add(read - last, Ordering::Relaxed);
            last = read;
            budget.pace();
            !shared.stop.load(Ordering::Relaxed)
        };
        let result = source.index(*diff_id, &self.options.limits, sha512, &mut pace);
        match result {
            Ok(layer) => {
                self.shared
                    .bytes_read
                    .fetch_add(layer.bytes.saturating_sub(last), Ordering::Relaxed);
                self.shared.layers_indexed.fetch_add(1, Ordering::Relaxed);
                if let Some(disk) = &mut self.disk {
                    if let Err(e) = disk.store(&layer) {
                        tracing::warn!(layer = %diff_id, error = %e, "cannot keep the layer index on disk");
                    }
                    self.shared
                        .disk_bytes
                        .store(disk.total_bytes(), Ordering::Relaxed);
                }
                let layer = Arc::new(layer);
                self.layers.insert(*diff_id, Arc::downgrade(&layer));
                Ok(layer)
            }
            Err(e) => {
                self.shared.layers_refused.fetch_add(1, Ordering::Relaxed);
                if let LayerError::Refused(why) = &e {
                    tracing::warn!(layer = %diff_id, reason = %why, "layer refused");
                }
                Err(e.into_unverifiable(diff_id))
            }
        }
    }
}
