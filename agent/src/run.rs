//! `nodeguard run`: wires the daemon, metrics, the HTTP API and (when in a cluster) pod
//! metadata and Events, then waits for a signal.

use crate::cli::RunArgs;
use anyhow::{Context, Result};
use nodeguard_daemon::{Control, Daemon, ScanObserver, Schedule};
use nodeguard_metrics::{Metrics, Registry};
use nodeguard_model::{NoPods, NodeState, PodLookup, ScanKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// How stale a `/metrics` answer may be.
const METRICS_MAX_AGE: Duration = Duration::from_secs(1);

/// How long shutdown waits for a scan still running on its blocking thread.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub fn run(args: RunArgs) -> Result<()> {
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Scans, /metrics renderings and report serialisation run here; few threads keep
        // glibc from giving each its own malloc arena (tens of MiB of RSS).
        .max_blocking_threads(4)
        .enable_all()
        .thread_name("nodeguard")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(args));
    // A filesystem walk may still be running on a blocking thread: do not wait for it.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

async fn serve(args: RunArgs) -> Result<()> {
    let scanner = crate::build_scanner(&args.settings)?;
    let node = scanner.options().node_name.clone();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %node,
        listen = %args.listen,
        interval = ?args.interval,
        fs_interval = ?args.fs_interval,
        proc_root = %args.settings.proc_root.display(),
        cgroup_root = %args.settings.cgroup_root.display(),
        host_root = %scanner.options().collect.host_root.display(),
        config = ?args.settings.config,
        policy = %scanner.policy().summary(),
        hash = ?args.settings.hash,
        max_hash_size = args.settings.max_hash_size,
        threads = scanner.options().threads,
        kube = ?args.kube,
        state_dir = ?args.state_dir,
        events = !args.no_events,
        "nodeguard starting with this effective configuration"
    );

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let weakened = scanner.policy().weakened();
    for (setting, why) in &weakened {
        tracing::warn!(setting, "policy weakens a check: {why}");
    }
    metrics.policy_weakened(&weakened.iter().map(|(s, _)| *s).collect::<Vec<_>>());
    let registry = Arc::new(registry);

    let (state_tx, state_rx) = watch::channel::<Option<Arc<NodeState>>>(None);
    let (control_tx, control_rx) = mpsc::channel(8);

    let kube = crate::kube::start(
        args.kube,
        &node,
        args.state_dir.clone(),
        !args.no_events,
        state_rx.clone(),
    )
    .await?;
    let pods: Arc<dyn PodLookup> = match &kube {
        Some(k) => k.pods(),
        None => Arc::new(NoPods),
    };
    if let Some(source) = kube.as_ref().and_then(|k| k.event_stats()) {
        metrics.set_event_stats_source(source);
    }

    let daemon = Daemon {
        scanner,
        schedule: Schedule {
            interval: args.interval,
            fs_interval: args.fs_interval,
            jitter: 0.1,
        },
        policy_path: args.settings.config.clone(),
        pods,
        observer: Arc::new(MetricsObserver(metrics.clone())),
    };
    let mut daemon_task = tokio::spawn(daemon.run(state_tx, control_rx));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // One rendering per second at most, shared by every scraper that asks meanwhile.
    let encoder = nodeguard_metrics::CachedEncoder::new(Arc::clone(&registry), METRICS_MAX_AGE);
    // The probes fail when scans stop completing (a hung scan loop), not only when the
    // process stops answering.
    let freshness = nodeguard_api::Freshness::for_interval(args.interval);
    let api_context = nodeguard_api::ApiContext {
        state: state_rx,
        metrics: Arc::new(move |accept| {
            let format = nodeguard_metrics::Format::negotiate(accept);
            let text = encoder.render(format).map_err(|e| e.to_string())?;
            Ok(nodeguard_api::MetricsBody {
                text,
                content_type: format.content_type(),
            })
        }),
    };
    let router = nodeguard_api::router_with_freshness(
        api_context,
        nodeguard_api::RequestLimits::default(),
        freshness,
    );
    let (stop_api_tx, stop_api_rx) = watch::channel(false);
    let api_task = tokio::spawn(nodeguard_api::serve(listener, router, async move {
        let mut rx = stop_api_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    tracing::info!(listen = %args.listen, "serving /metrics, /healthz, /readyz and /v1/");

    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let outcome = loop {
        tokio::select! {
            _ = terminate.recv() => break Ok("SIGTERM"),
            _ = interrupt.recv() => break Ok("SIGINT"),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the policy");
                let _ = control_tx.send(Control::ReloadPolicy).await;
            }
            ended = &mut daemon_task => {
                break match ended {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the scan loop stopped unexpectedly")),
                    Ok(Err(e)) => Err(anyhow::Error::new(e).context("the scan loop failed")),
                    Err(e) => Err(anyhow::anyhow!("the scan loop panicked: {e}")),
                };
            }
        }
    };
    let signal_name = outcome?;
    tracing::info!(signal = signal_name, "shutting down");
    let _ = control_tx.send(Control::Shutdown).await;
    let _ = stop_api_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, daemon_task).await;
    match tokio::time::timeout(SHUTDOWN_GRACE * 2, api_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the API server stopped with an error"),
        Ok(_) => {}
        Err(_) => tracing::warn!("the API server did not stop in time"),
    }
    if let Some(kube) = kube {
        kube.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Counts scans into the metrics without the daemon linking a metrics library.
struct MetricsObserver(Metrics);

impl ScanObserver for MetricsObserver {
    fn scan_finished(&self, kind: ScanKind, duration: Duration, ok: bool) {
        self.0.scan_finished(kind, duration, ok);
    }

    fn state_changed(&self, state: &Arc<NodeState>) {
        self.0.state_changed(state);
    }

    fn policy_reload(&self, ok: bool) {
        self.0.policy_reload(ok);
    }

    fn policy_weakened(&self, settings: &[&'static str]) {
        self.0.policy_weakened(settings);
    }
}

/// glibc gives threads their own malloc arenas (up to 8 per core), each holding freed memory:
/// after a burst of scrapes the agent's RSS stayed tens of MiB higher. Two arenas are plenty
/// for an agent that is idle most of the time. (A static musl build has no arenas.)
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
