//! `nodeguard run`: wires the daemon, metrics, the HTTP API and (when in a cluster) pod
//! metadata and Events, then waits for a signal.

use crate::cli::{
    AuthArg, ExecEventsArg, ExecHoldArg, FsEventsArg, RunArgs, TlsArg, TlsMinVersionArg,
};
use anyhow::{Context, Result};
use nodeguard_api::{CertSource, ServerTls, TlsSettings, TlsVersion};
use nodeguard_daemon::{Control, Daemon, ExecFeed, PolicySource, Schedule};
use nodeguard_metrics::{Metrics, Registry};
use nodeguard_model::{FsEventSource, NoPods, NodeState, PodLookup};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
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
    // Before any other thread exists: the filesystems are marked, then CAP_SYS_ADMIN is
    // dropped for the whole process before its reader (or any other thread) starts.
    let fs_events = fs_events(&args);
    // Before any other thread exists: the subscription then drops CAP_NET_ADMIN for the whole
    // process (capabilities are per thread, later threads inherit the main thread's).
    let exec_feed = exec_feed(
        args.exec_events,
        args.exec_buffer,
        args.exec_hold,
        &args.settings.proc_root,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Scans, /metrics renderings and report serialisation run here; few threads keep
        // glibc from giving each its own malloc arena (tens of MiB of RSS).
        .max_blocking_threads(4)
        .enable_all()
        .thread_name("nodeguard")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(args, exec_feed, fs_events));
    // A filesystem walk may still be running on a blocking thread: do not wait for it.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// Exec events the daemon's queue holds before events are dropped (and counted as lost).
const EXEC_QUEUE: usize = 8192;

/// How long the start-up probe waits for its own exec event (twice, see
/// `nodeguard_procevents::start`).
const EXEC_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The exec event source for `--exec-events`: the process-events connector, proved with a
/// probe (this binary with `--version`); when it cannot be had, why, logged once, and `None`
/// (polling, as `nodeguard_exec_events_source` then says). Either way `CAP_NET_ADMIN`, needed
/// only to subscribe, is dropped before this returns. Call it before any other thread starts.
///
/// With `--exec-hold on` the reader thread takes hold of each exec'd process under
/// `proc_root` as its event arrives (`nodeguard_scan::Holder`); a proc root that cannot be
/// opened leaves the events bare (read by pid), said once.
fn exec_feed(
    choice: ExecEventsArg,
    recv_buffer: u32,
    hold: ExecHoldArg,
    proc_root: &Path,
) -> Option<ExecFeed> {
    if choice == ExecEventsArg::Off {
        log_net_admin_dropped(nodeguard_procevents::drop_net_admin());
        tracing::info!(
            source = "polling",
            "--exec-events off: processes are seen by the scans on the interval only"
        );
        return None;
    }
    let program = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let options = nodeguard_procevents::Options {
        capacity: EXEC_QUEUE,
        recv_buffer,
        probe: Some(nodeguard_procevents::Probe {
            program,
            args: vec!["--version".into()],
            timeout: EXEC_PROBE_TIMEOUT,
        }),
        drop_net_admin: true,
        realtime: hold == ExecHoldArg::Realtime,
    };
    let holder = match hold {
        ExecHoldArg::Off => None,
        ExecHoldArg::On | ExecHoldArg::Realtime => {
            match nodeguard_daemon::Holder::new(proc_root, nodeguard_daemon::HOLD_BUDGET_DEFAULT) {
                Ok(holder) => Some(holder),
                Err(e) => {
                    tracing::warn!(error = %e, proc_root = %proc_root.display(), "cannot hold exec'd processes; each is read by pid with its batch");
                    None
                }
            }
        }
    };
    let hold_stats = holder.as_ref().map(|h| h.stats());
    let kept_mount_namespaces = holder.as_ref().map(|h| h.kept_mount_namespaces_slot());
    let started = nodeguard_procevents::start_holding(options, HoldExecs(holder));
    match started {
        Ok(events) => {
            if let nodeguard_procevents::Priority::ShortSlice {
                realtime: Some(why),
            } = &events.priority
            {
                tracing::warn!(reason = %why, "--exec-hold realtime: the event thread runs with ordinary scheduling (a short slice); processes living a millisecond may be missed on a busy node");
            }
            tracing::info!(
                source = "netlink",
                kernel_filter = events.filtered,
                held = hold_stats.is_some(),
                priority = ?events.priority,
                "exec events from the kernel's process-events connector (netlink): each exec is read and evaluated at once; CAP_NET_ADMIN, needed only to subscribe, dropped"
            );
            Some(ExecFeed {
                receiver: events.receiver,
                stats: events.stats,
                hold_stats,
                kept_mount_namespaces,
            })
        }
        Err(e) => {
            if matches!(e, nodeguard_procevents::Error::DropNetAdmin(_)) {
                tracing::error!(reason = %e, "CAP_NET_ADMIN stays in the agent's capability sets");
            }
            tracing::warn!(
                source = "polling",
                reason = %e,
                "exec events unavailable; falling back to polling: processes are seen by the scans on the interval only"
            );
            None
        }
    }
}

/// The holder (when holding is on) as the event thread's two steps: grab each exec's
/// `/proc/PID` and executable as its message is read, read its small files once no message
/// waits.
struct HoldExecs(Option<nodeguard_daemon::Holder>);

impl nodeguard_procevents::Hold for HoldExecs {
    type Grip = nodeguard_daemon::Grip;
    type Held = nodeguard_daemon::HeldProcess;

    fn grab(&mut self, exec: nodeguard_procevents::Exec) -> Option<Self::Grip> {
        self.0.as_ref()?.grab(exec.pid, exec.timestamp_ns).ok()
    }

    fn finish(&mut self, grip: Self::Grip) -> Option<Self::Held> {
        self.0.as_ref()?.finish(grip).ok()
    }
}

/// A failure to drop `CAP_NET_ADMIN` is logged (the agent goes on with polling, but says it
/// holds more than it needs).
fn log_net_admin_dropped(dropped: std::io::Result<bool>) {
    if let Err(e) = dropped {
        tracing::error!(error = %e, "cannot drop CAP_NET_ADMIN; it stays in the agent's capability sets");
    }
}

/// The writable-layer event source for `--fs-events`: the filesystems of
/// `--fs-events-paths` marked with fanotify, then `CAP_SYS_ADMIN` dropped, then the reader
/// started. When it cannot
/// be had, why, logged once, and the source is `unavailable` (the re-check as with `off`).
/// Call it before any other thread starts.
fn fs_events(args: &RunArgs) -> (FsEventSource, Option<nodeguard_fscan::FsEvents>) {
    let marked = match args.fs_events {
        FsEventsArg::Off => None,
        FsEventsArg::Fanotify => {
            let paths = fs_events_paths(args);
            let marked = nodeguard_fscan::mark_fs_events(&paths);
            // Granted for marking only (the opt-in manifest): gone before any input is read.
            if let Err(e) =
                nodeguard_procevents::drop_capability(nodeguard_procevents::CAP_SYS_ADMIN)
            {
                tracing::error!(error = %e, "cannot drop CAP_SYS_ADMIN; it stays in the agent's capability sets");
            }
            Some(marked.map(|marks| (marks, paths)))
        }
    };
    let (marks, paths) = match marked {
        None => return (FsEventSource::Off, None),
        Some(Err(e)) => {
            tracing::warn!(
                source = "unavailable",
                reason = %e,
                "writable-layer events unavailable; a chmod or xattr change on an existing file is seen at the filesystem scan's re-check"
            );
            return (FsEventSource::Unavailable, None);
        }
        Some(Ok(marked)) => marked,
    };
    for (path, e) in &marks.unmarked {
        tracing::warn!(path = %path.display(), error = %e, "cannot mark this filesystem for writable-layer events");
    }
    let marked: Vec<String> = marks
        .marked_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    match marks.start(args.fs_events_max_dirs) {
        Ok(events) => {
            tracing::info!(
                source = "fanotify",
                marked = ?marked,
                "writable-layer events from fanotify: a chmod or xattr change on an existing file is seen by the next process scan; CAP_SYS_ADMIN, needed only to mark, dropped"
            );
            (FsEventSource::Fanotify, Some(events))
        }
        Err(e) => {
            tracing::warn!(source = "unavailable", error = %e, paths = ?paths, "cannot start the writable-layer event reader");
            (FsEventSource::Unavailable, None)
        }
    }
}

/// `--fs-events-paths`, or the runtimes' storage under the host root that exists.
fn fs_events_paths(args: &RunArgs) -> Vec<std::path::PathBuf> {
    if !args.fs_events_paths.is_empty() {
        return args.fs_events_paths.clone();
    }
    let host_root = args
        .settings
        .host_root
        .clone()
        .unwrap_or_else(|| args.settings.proc_root.join("1/root"));
    [
        "var/lib/containerd",
        "var/lib/containers/storage",
        "var/lib/docker",
    ]
    .iter()
    .map(|p| host_root.join(p))
    .filter(|p| p.is_dir())
    .collect()
}

async fn serve(
    args: RunArgs,
    exec_feed: Option<ExecFeed>,
    fs_events: (FsEventSource, Option<nodeguard_fscan::FsEvents>),
) -> Result<()> {
    // The daemon's policy source reads the policy, now and on each reload.
    let policy_source = PolicySource::new(args.settings.config.clone());
    let mut scanner = crate::build_scanner(&args.settings, policy_source.load()?);
    scanner.set_fs_events(fs_events.0, fs_events.1);
    scanner.set_exec_retention(args.exec_retention);
    let image_progress = crate::images::start(
        &args.images,
        &scanner.options().collect.host_root,
        args.state_dir.as_deref(),
        matches!(
            args.settings.hash,
            crate::cli::HashChoice::Sha512 | crate::cli::HashChoice::Both
        ),
    )
    .map(|(judge, progress)| {
        scanner.set_image_judge(judge);
        progress
    });
    let node = scanner.options().node_name.clone();
    let exec_history = scanner.exec_history();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %node,
        listen = %args
            .listen
            .map_or_else(|| "default (by cluster)".to_string(), |a| a.to_string()),
        probe_listen = %args
            .probe_listen
            .map_or_else(|| "none".to_string(), |a| a.to_string()),
        auth = %crate::cli::value_name(args.auth),
        show_secrets = args.settings.show_secrets,
        interval = %crate::cli::format_duration(args.interval),
        fs_interval = %crate::cli::format_duration(args.fs_interval),
        proc_root = %args.settings.proc_root.display(),
        cgroup_root = %args.settings.cgroup_root.display(),
        host_root = %scanner.options().collect.host_root.display(),
        config = %args
            .settings
            .config
            .as_ref()
            .map_or_else(|| "none (built-in defaults)".to_string(), |p| p.display().to_string()),
        policy = %scanner.policy().summary(),
        hash = %crate::cli::value_name(args.settings.hash),
        max_hash_size = args.settings.max_hash_size,
        threads = scanner.options().threads,
        kube = %crate::cli::value_name(args.kube),
        state_dir = %args
            .state_dir
            .as_ref()
            .map_or_else(|| "none".to_string(), |p| p.display().to_string()),
        events = !args.no_events,
        exec_events = %crate::cli::value_name(args.exec_events),
        exec_retention = %crate::cli::format_duration(args.exec_retention),
        exec_buffer = args.exec_buffer,
        exec_hold = %crate::cli::value_name(args.exec_hold),
        policy_reports = args.policy_reports,
        "nodeguard starting with this effective configuration"
    );

    if args.settings.show_secrets {
        tracing::warn!(
            "--show-secrets: command lines are kept verbatim; passwords and tokens in them reach the API, Events and logs"
        );
    }

    // What the policy weakens is said by the daemon, which owns the policy from here on.
    let (state_tx, state_rx) = watch::channel::<Option<Arc<NodeState>>>(None);
    // Metrics read the daemon's channel like the API and Events do.
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, state_rx.clone());
    if let Some(progress) = image_progress {
        metrics.set_image_index_progress(progress);
    }
    let registry = Arc::new(registry);

    let (control_tx, control_rx) = mpsc::channel(8);

    let kube = crate::kube::start(
        args.kube,
        &node,
        args.state_dir.clone(),
        (!args.no_events).then(|| crate::severity(args.event_min_severity)),
        args.policy_reports,
        state_rx.clone(),
    )
    .await?;
    let pods: Arc<dyn PodLookup> = match &kube {
        Some(k) => k.pods(),
        None => Arc::new(NoPods),
    };
    if let Some(stats) = kube.as_ref().and_then(|k| k.event_stats()) {
        metrics.set_event_stats(stats);
    }
    if let Some(stats) = kube.as_ref().and_then(|k| k.policy_report_stats()) {
        metrics.set_policy_report_stats(stats);
    }

    let daemon = Daemon {
        scanner,
        schedule: Schedule {
            interval: args.interval,
            fs_interval: args.fs_interval,
            jitter: 0.1,
        },
        policy: policy_source,
        pods,
        exec_feed,
    };
    let mut daemon_task = tokio::spawn(daemon.run(state_tx, control_rx));
    let trim_task = tokio::spawn(trim_heap());

    // Only asked with a cluster: without one no token can be checked anyway.
    let pod_private_loopback = kube.is_some()
        && loopback_is_pod_private(
            Path::new("/proc/self/ns/net"),
            &args.settings.proc_root.join("1/ns/net"),
        );
    let access = Access::decide(&args, kube.is_some(), pod_private_loopback)?;
    let listen = access.listen;
    let auth = if access.authenticate {
        let client = nodeguard_kube::connect(nodeguard_kube::KubeMode::On)
            .await
            .context("cannot build the client for TokenReview and SubjectAccessReview")?
            .context("no Kubernetes configuration for authentication")?;
        let authorizer = nodeguard_kube::KubeAuthorizer::new(client, Default::default());
        let mut options = nodeguard_api::AuthOptions::new(Arc::new(KubeAuth(authorizer)));
        options.protect_metrics = !args.unauthenticated_metrics;
        options.loopback_is_pod_private = pod_private_loopback;
        metrics.set_api_denials(Arc::clone(&options.denials));
        // Sums up a flood of refusals that stopped, without waiting for the next one.
        let denial_log = Arc::clone(&options.denial_log);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(nodeguard_api::DenialLog::DEFAULT_INTERVAL);
            loop {
                tick.tick().await;
                denial_log.flush();
            }
        });
        Some(options)
    } else {
        None
    };
    let tls = match tls_settings(&args, listen, &node)? {
        Some(settings) => Some(Arc::new(
            ServerTls::new(settings).context("cannot set up TLS for the API port")?,
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // One rendering per second at most, shared by every scraper that asks meanwhile.
    // The probes fail when scans stop completing (a hung scan loop), not only when the
    // process stops answering.
    let freshness = nodeguard_api::Freshness::for_interval(args.interval);
    let (stop_api_tx, stop_api_rx) = watch::channel(false);
    let encoder = nodeguard_metrics::CachedEncoder::new(Arc::clone(&registry), METRICS_MAX_AGE);
    let probe_task = match args.probe_listen {
        Some(addr) => {
            let probes = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for probes on {addr}"))?;
            let mut stop = stop_api_rx.clone();
            tracing::info!(listen = %addr, "serving /healthz and /readyz on their own listener");
            Some(tokio::spawn(nodeguard_api::serve_with_limits(
                probes,
                nodeguard_api::with_freshness(
                    nodeguard_api::probe_router(state_rx.clone()),
                    freshness,
                ),
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
                nodeguard_api::ServeLimits::probes(),
            )))
        }
        None => None,
    };
    // The heartbeat Lease: what the API listens on is known now (a port 0 resolved).
    let lease = match (&kube, args.lease) {
        (Some(kube), true) => {
            let endpoint = listener.local_addr().unwrap_or(listen);
            let holder = args
                .lease_holder
                .clone()
                .filter(|h| !h.trim().is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                        .filter(|h| !h.is_empty())
                })
                .unwrap_or_else(|| node.clone());
            let config =
                nodeguard_kube::LeaseConfig::new(&node, "", holder, args.interval, endpoint);
            let served = tls.clone();
            let cert: nodeguard_kube::CertFingerprint =
                Arc::new(move || served.as_ref().map(|t| t.served().fingerprint));
            Some(kube.start_lease(config, args.lease_namespace.clone(), cert, state_rx.clone()))
        }
        _ => None,
    };
    if let Some(lease) = &lease {
        metrics.set_lease_stats(lease.stats_channel());
    }
    let router = nodeguard_api::with_freshness(
        nodeguard_api::router_with_auth(
            nodeguard_api::ApiContext {
                state: state_rx,
                exec_history: Some(exec_history),
                metrics: Arc::new(move |accept| {
                    let format = nodeguard_metrics::Format::negotiate(accept);
                    let text = encoder.render(format).map_err(|e| e.to_string())?;
                    Ok(nodeguard_api::MetricsBody {
                        text,
                        content_type: format.content_type(),
                    })
                }),
            },
            nodeguard_api::RequestLimits::default(),
            auth,
        ),
        freshness,
    );
    let stop_api = {
        let mut rx = stop_api_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let api_task = match &tls {
        Some(tls) => {
            let mut stop = stop_api_rx;
            tokio::spawn(Arc::clone(tls).watch(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }));
            tokio::spawn(nodeguard_api::serve_tls(
                listener,
                router,
                stop_api,
                nodeguard_api::ServeLimits::default(),
                tls,
            ))
        }
        None => tokio::spawn(nodeguard_api::serve(listener, router, stop_api)),
    };
    tracing::info!(
        listen = %listen,
        scheme = if tls.is_some() { "https" } else { "http" },
        authenticated = access.authenticate,
        metrics_authenticated = access.authenticate && !args.unauthenticated_metrics,
        "serving /metrics, /healthz, /readyz and /v1/"
    );

    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let outcome = loop {
        tokio::select! {
            _ = terminate.recv() => break Ok("SIGTERM"),
            _ = interrupt.recv() => break Ok("SIGINT"),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the policy (and the TLS certificate files)");
                let _ = control_tx.send(Control::ReloadPolicy).await;
                if let Some(tls) = &tls {
                    let tls = Arc::clone(tls);
                    // Errors are logged by `reload`; a refused pair keeps the old one.
                    tokio::task::spawn_blocking(move || tls.reload());
                }
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
    if let Some(probes) = probe_task {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, probes).await;
    }
    match tokio::time::timeout(SHUTDOWN_GRACE * 2, api_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the API server stopped with an error"),
        Ok(_) => {}
        Err(_) => tracing::warn!("the API server did not stop in time"),
    }
    trim_task.abort();
    if let Some(kube) = kube {
        kube.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Where the API listens and whether it authenticates, from the flags, whether a cluster
/// is configured and whether loopback is private to the agent's pod.
struct Access {
    listen: SocketAddr,
    authenticate: bool,
}

impl Access {
    /// With a cluster, tokens are checked on every address (loopback included) unless the
    /// agent listens on loopback only and has a network namespace of its own
    /// (`pod_private_loopback`): with the host's network every hostNetwork pod and node
    /// process reaches its loopback.
    fn decide(args: &RunArgs, cluster: bool, pod_private_loopback: bool) -> Result<Access> {
        let port = nodeguard_api::DEFAULT_PORT;
        let listen = args.listen.unwrap_or_else(|| {
            if cluster {
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
            } else {
                SocketAddr::from((Ipv4Addr::LOCALHOST, port))
            }
        });
        let beyond_loopback = !listen.ip().is_loopback();
        let authenticate = match args.auth {
            AuthArg::On => true,
            AuthArg::Off => false,
            AuthArg::Auto => cluster && (beyond_loopback || !pod_private_loopback),
        };
        if authenticate && !cluster {
            anyhow::bail!(
                "--auth on needs a Kubernetes cluster (tokens are checked with TokenReview and SubjectAccessReview), and none is configured"
            );
        }
        if !cluster && args.listen.is_none() {
            tracing::info!(
                %listen,
                "no Kubernetes cluster: the API listens on loopback only and asks for no token (--listen to change)"
            );
        }
        if cluster && !authenticate && !beyond_loopback && !pod_private_loopback {
            tracing::warn!(
                %listen,
                "--auth off on loopback shared with the host's network: every process of the node and every hostNetwork pod reads /v1/ without a token"
            );
        }
        if !authenticate && beyond_loopback {
            if !args.insecure_unauthenticated {
                anyhow::bail!(
                    "refusing to serve /v1/ unauthenticated on {listen}: anyone who can connect would read every process and container of this node. Listen on 127.0.0.1, run with a cluster (tokens are then checked), or pass --insecure-unauthenticated"
                );
            }
            tracing::warn!(
                %listen,
                "INSECURE: /v1/ and /metrics are served WITHOUT AUTHENTICATION beyond loopback (--insecure-unauthenticated): anyone who can reach this address reads every process, command line and container of this node"
            );
        }
        Ok(Access {
            listen,
            authenticate,
        })
    }
}

/// Whether and how the API port serves TLS (`None`: plain HTTP), from the flags and the
/// address it listens on. Logs the decision.
fn tls_settings(args: &RunArgs, listen: SocketAddr, node: &str) -> Result<Option<TlsSettings>> {
    let files = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => None,
    };
    let beyond_loopback = !listen.ip().is_loopback();
    let serve_tls = match args.tls {
        TlsArg::On => true,
        TlsArg::Auto => files.is_some() || beyond_loopback,
        TlsArg::Off => {
            if files.is_some() {
                anyhow::bail!("--tls off contradicts --tls-cert-file/--tls-key-file");
            }
            false
        }
    };
    if !serve_tls {
        if beyond_loopback {
            tracing::warn!(
                %listen,
                "INSECURE: --tls off: the API is served as plain HTTP beyond loopback; bearer tokens (Prometheus's, responders') and findings cross the network in clear"
            );
        } else {
            tracing::info!(
                %listen,
                "plain HTTP on loopback (no --tls-cert-file): only processes of this network namespace can connect; --tls on serves https here too"
            );
        }
        return Ok(None);
    }
    let source = match files {
        Some((cert, key)) => CertSource::Files { cert, key },
        None => {
            let (dns_names, ips) = self_signed_names(listen, node);
            tracing::info!(
                ?dns_names,
                ips = ips.len(),
                "no --tls-cert-file: serving a self-signed certificate made now (clients pin it by its fingerprint, or trust --tls-served-cert-file)"
            );
            CertSource::SelfSigned { dns_names, ips }
        }
    };
    Ok(Some(TlsSettings {
        source,
        min_version: match args.tls_min_version {
            TlsMinVersionArg::Tls12 => TlsVersion::Tls12,
            TlsMinVersionArg::Tls13 => TlsVersion::Tls13,
        },
        reload_interval: args.tls_reload_interval,
        served_cert_file: args.tls_served_cert_file.clone(),
    }))
}

/// The names a self-signed certificate holds: `localhost`, the node's and the host's
/// names, loopback, the listen address and (when listening on every address) the
/// addresses of this network namespace's interfaces, so `curl --cacert` works by any of
/// them.
fn self_signed_names(listen: SocketAddr, node: &str) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns_names = vec!["localhost".to_string()];
    if !node.is_empty() {
        dns_names.push(node.to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != node {
            dns_names.push(host.to_string());
        }
    }
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if listen.ip().is_unspecified() {
        ips.extend(interface_addresses());
    } else {
        ips.push(listen.ip());
    }
    ips.sort();
    ips.dedup();
    (dns_names, ips)
}

/// The addresses of this network namespace's interfaces (at most 64; IPv6 link-local ones
/// left out: they need a scope to be reached).
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut node = head;
    while !node.is_null() && out.len() < 64 {
        // SAFETY: `node` is a live element of the list getifaddrs returned.
        let entry = unsafe { &*node };
        if !entry.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` points at a sockaddr whose family field says its type.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    out.push(IpAddr::V6(ip));
                }
            }
        }
        node = entry.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference outlives it.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Whether loopback is private to the agent's pod: only when the agent's network namespace
/// (`own`, `/proc/self/ns/net`) is not the host's (`host`, pid 1's in the proc root). With
/// `hostNetwork` every process of the node reaches loopback, so a loopback peer proves
/// nothing; when the two cannot be compared, the namespace is taken as shared. Logs the
/// decision.
fn loopback_is_pod_private(own: &Path, host: &Path) -> bool {
    match (net_namespace(own), net_namespace(host)) {
        (Ok(own_ns), Ok(host_ns)) if own_ns != host_ns => {
            tracing::info!(
                own = %own_ns,
                host = %host_ns,
                "the agent has a network namespace of its own: loopback peers (kubectl exec or port-forward into this pod) need no token"
            );
            true
        }
        (Ok(own_ns), Ok(_)) => {
            tracing::info!(
                netns = %own_ns,
                "the agent shares the host's network namespace: loopback peers need a token like everyone else"
            );
            false
        }
        (Err(reason), _) | (_, Err(reason)) => {
            tracing::warn!(
                %reason,
                "cannot tell whether the agent shares the host's network namespace; taking it as shared: loopback peers need a token like everyone else"
            );
            false
        }
    }
}

/// The `net:[INODE]` a namespace link names, or why it cannot be read.
fn net_namespace(link: &Path) -> std::result::Result<String, String> {
    let target = std::fs::read_link(link).map_err(|e| format!("{}: {e}", link.display()))?;
    let name = target.to_str().unwrap_or_default();
    let inode = name
        .strip_prefix("net:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .filter(|inode| !inode.is_empty() && inode.bytes().all(|b| b.is_ascii_digit()));
    match inode {
        Some(_) => Ok(name.to_string()),
        None => Err(format!(
            "{}: {:?} is not a network namespace",
            link.display(),
            target
        )),
    }
}

/// The kube crate's authorizer behind the API crate's trait (sinks do not depend on each
/// other, so the agent joins them).
struct KubeAuth(nodeguard_kube::KubeAuthorizer);

impl nodeguard_api::Authorizer for KubeAuth {
    fn authorize<'a>(&'a self, token: &'a str, path: &'a str) -> nodeguard_api::DecisionFuture<'a> {
        Box::pin(self.0.authorize(token, path))
    }
}

/// How often freed heap memory is handed back to the kernel ([`trim_heap`]).
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const HEAP_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Hands freed heap memory back to the kernel every [`HEAP_TRIM_INTERVAL`]. glibc keeps
/// what a burst freed (hundreds of half-sent request heads, each in buffers below the mmap
/// threshold) in its arenas: without this the agent's RSS stayed at the burst's peak for
/// good. `malloc_trim` costs well under a millisecond when there is little to give back.
async fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    loop {
        tokio::time::sleep(HEAP_TRIM_INTERVAL).await;
        // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the
        // kernel; it is thread-safe.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn run_args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["nodeguard", "run"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_a_cluster_the_api_stays_on_loopback_unless_told_loudly() {
        let access = Access::decide(&run_args(&[]), false, false).unwrap();
        assert_eq!(access.listen, "127.0.0.1:9717".parse().unwrap());
        assert!(!access.authenticate);

        let err = Access::decide(&run_args(&["--listen", "0.0.0.0:9717"]), false, false)
            .err()
            .expect("no unauthenticated API beyond loopback by accident");
        assert!(
            err.to_string().contains("--insecure-unauthenticated"),
            "{err}"
        );
        let access = Access::decide(
            &run_args(&["--listen", "0.0.0.0:9717", "--insecure-unauthenticated"]),
            false,
            false,
        )
        .unwrap();
        assert!(!access.authenticate);

        let err = Access::decide(&run_args(&["--auth", "on"]), false, false)
            .err()
            .expect("tokens cannot be checked without a cluster");
        assert!(err.to_string().contains("cluster"), "{err}");
    }

    #[test]
    fn with_a_cluster_the_api_listens_for_the_cluster_and_checks_tokens() {
        for pod_private in [true, false] {
            let access = Access::decide(&run_args(&[]), true, pod_private).unwrap();
            assert_eq!(access.listen, "0.0.0.0:9717".parse().unwrap());
            assert!(access.authenticate);
            let forced = run_args(&["--listen", "127.0.0.1:9717", "--auth", "on"]);
            assert!(
                Access::decide(&forced, true, pod_private)
                    .unwrap()
                    .authenticate
            );
            let err = Access::decide(&run_args(&["--auth", "off"]), true, pod_private)
                .err()
                .expect("--auth off beyond loopback needs the insecure flag");
            assert!(err.to_string().contains("refusing"), "{err}");
        }
        // On loopback in a network namespace of its own (kubectl exec into the pod) no
        // token is needed.
        let loopback = run_args(&["--listen", "127.0.0.1:9717"]);
        assert!(!Access::decide(&loopback, true, true).unwrap().authenticate);
    }

    #[test]
    fn loopback_shared_with_the_host_is_authenticated_whatever_the_listen_address() {
        // hostNetwork (or not known): every node process and hostNetwork pod reaches
        // loopback, so 127.0.0.1 and ::1 are no different from 0.0.0.0.
        for listen in [
            "127.0.0.1:9717",
            "127.0.0.2:9717",
            "[::1]:9717",
            "0.0.0.0:9717",
        ] {
            let args = run_args(&["--listen", listen]);
            assert!(
                Access::decide(&args, true, false).unwrap().authenticate,
                "{listen} served without a token on the host's network"
            );
        }
        // Told explicitly, loopback can still be served without (warned).
        let off = run_args(&["--listen", "127.0.0.1:9717", "--auth", "off"]);
        assert!(!Access::decide(&off, true, false).unwrap().authenticate);
    }

    fn tls_of(flags: &[&str]) -> Result<Option<TlsSettings>> {
        let args = run_args(flags);
        let listen = args
            .listen
            .unwrap_or_else(|| "127.0.0.1:9717".parse().unwrap());
        tls_settings(&args, listen, "node-1")
    }

    #[test]
    fn tls_is_served_beyond_loopback_or_when_asked_and_plain_http_stays_on_loopback() {
        // Loopback without certificate files: plain HTTP (only this namespace connects).
        assert_eq!(tls_of(&[]).unwrap(), None);
        // Beyond loopback: a self-signed certificate for the node's names and loopback.
        let settings = tls_of(&["--listen", "0.0.0.0:9717"]).unwrap().unwrap();
        let CertSource::SelfSigned { dns_names, ips } = &settings.source else {
            panic!("{settings:?}");
        };
        assert!(
            dns_names.contains(&"localhost".to_string()),
            "{dns_names:?}"
        );
        assert!(dns_names.contains(&"node-1".to_string()), "{dns_names:?}");
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
        assert_eq!(settings.min_version, TlsVersion::Tls12);
        assert_eq!(settings.reload_interval, Duration::from_secs(60));
        // A specific address goes into the certificate.
        let settings = tls_of(&["--listen", "10.1.2.3:9717"]).unwrap().unwrap();
        let CertSource::SelfSigned { ips, .. } = &settings.source else {
            panic!("{settings:?}");
        };
        assert!(ips.contains(&"10.1.2.3".parse().unwrap()), "{ips:?}");
        // Certificate files mean TLS, on loopback too.
        let settings = tls_of(&[
            "--tls-cert-file",
            "/c.crt",
            "--tls-key-file",
            "/c.key",
            "--tls-min-version",
            "1.3",
            "--tls-served-cert-file",
            "/run/x.crt",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            settings.source,
            CertSource::Files {
                cert: "/c.crt".into(),
                key: "/c.key".into()
            }
        );
        assert_eq!(settings.min_version, TlsVersion::Tls13);
        assert_eq!(settings.served_cert_file, Some("/run/x.crt".into()));
        assert!(tls_of(&["--tls", "on"]).unwrap().is_some());
        // Off is off, even beyond loopback (warned), and contradicts certificate files.
        assert_eq!(
            tls_of(&["--tls", "off", "--listen", "0.0.0.0:9717"]).unwrap(),
            None
        );
        let err = tls_of(&[
            "--tls",
            "off",
            "--tls-cert-file",
            "/c",
            "--tls-key-file",
            "/k",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--tls off"), "{err}");
        // A certificate without its key (or the reverse) is a usage error.
        let cli = Cli::try_parse_from(["nodeguard", "run", "--tls-cert-file", "/c"]);
        assert!(cli.is_err());
    }

    /// A proc root whose pid 1 and `self` are in the network namespaces given (`None`: the
    /// link is missing).
    fn proc_root(own: Option<&str>, host: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (pid, ns) in [("self", own), ("1", host)] {
            let dir = root.path().join(pid).join("ns");
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(ns) = ns {
                std::os::unix::fs::symlink(ns, dir.join("net")).unwrap();
            }
        }
        root
    }

    fn decide(root: &tempfile::TempDir) -> bool {
        loopback_is_pod_private(
            &root.path().join("self/ns/net"),
            &root.path().join("1/ns/net"),
        )
    }

    #[test]
    fn loopback_is_trusted_only_in_a_network_namespace_other_than_the_hosts() {
        // A pod network (the DaemonSet): loopback is the pod's own.
        let pod = proc_root(Some("net:[4026532301]"), Some("net:[4026531840]"));
        assert!(decide(&pod));
        // hostNetwork: every process of the node shares loopback.
        let host = proc_root(Some("net:[4026531840]"), Some("net:[4026531840]"));
        assert!(!decide(&host));
        // Cannot tell: taken as shared.
        for (own, host) in [
            (Some("net:[4026532301]"), None),
            (None, Some("net:[4026531840]")),
            (Some("net:[4026532301]"), Some("mnt:[4026531840]")),
            (Some("net:[]"), Some("net:[4026531840]")),
            (Some("net:[12x]"), Some("net:[4026531840]")),
            (Some("/etc/passwd"), Some("net:[4026531840]")),
        ] {
            assert!(!decide(&proc_root(own, host)), "{own:?} {host:?}");
        }
    }

    #[test]
    fn this_process_is_compared_with_pid_1_of_the_real_proc() {
        // What this machine says, read independently: the test runs wherever it runs, so
        // only the agreement with `/proc` is asserted.
        let own = std::fs::read_link("/proc/self/ns/net");
        let host = std::fs::read_link("/proc/1/ns/net");
        let expected = matches!((&own, &host), (Ok(a), Ok(b)) if a != b);
        assert_eq!(
            loopback_is_pod_private(Path::new("/proc/self/ns/net"), Path::new("/proc/1/ns/net")),
            expected,
            "{own:?} {host:?}"
        );
    }
}
