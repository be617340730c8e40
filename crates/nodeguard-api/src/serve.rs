//! The HTTP/1.1 server loop: bounded connections, header read timeout, connection age, and
//! a shutdown that does not wait on stuck clients; over TLS ([`serve_tls`]) the handshake
//! happens inside the connection's slot, bounded by [`ServeLimits::handshake_timeout`].

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

/// Bounds on connections, so idle, slow or hostile clients cannot use up the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one peer address may hold at once; a further one is closed at once, so
    /// one client cannot take every slot.
    pub max_connections_per_peer: usize,
    /// A client must send a complete request head within this time (also bounds how long an
    /// idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// A connection older than this is closed after its current request, so a client that
    /// never reads its answer cannot hold a slot for ever.
    pub max_connection_age: Duration,
    /// A TLS client must finish its handshake within this time. The handshake runs in the
    /// connection's own task and slot, so a peer that stalls it holds at most its per-peer
    /// share of connections, and only this long.
    pub handshake_timeout: Duration,
    /// How long a closing connection may take to finish its request in flight, at shutdown
    /// or past its age, before it is dropped.
    pub shutdown_grace: Duration,
    /// Most bytes of a request head (request line and headers) a connection may buffer; a
    /// longer head is answered `431` and the connection closed. This bounds what a peer that
    /// never finishes its head holds: `max_connections` times this, at most. (hyper's own
    /// default is about 400 KiB; values under 8 KiB are raised to 8 KiB, hyper's minimum.)
    pub max_head_bytes: usize,
}

/// The request-head bound of the API port: a 56 KB query string or a service-account token
/// (about 1 KB; [`crate::auth::MAX_TOKEN_BYTES`] at most) fits many times over.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;

/// hyper refuses a smaller read buffer.
const MIN_HEAD_BYTES: usize = 8 * 1024;

impl ServeLimits {
    /// Limits for the probe listener (`/healthz`, `/readyz`): few, short connections.
    pub fn probes() -> ServeLimits {
        ServeLimits {
            max_connections: 64,
            max_connections_per_peer: 16,
            header_read_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            max_connection_age: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(1),
            max_head_bytes: MIN_HEAD_BYTES,
        }
    }
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            // Each connection may hold a head of up to `max_head_bytes` plus its TLS state
            // (~100 KiB in all, measured): 256 of them stay near 25 MiB, so half-sent heads
            // from many addresses fit the DaemonSet's 160 MiB with room (512 reached ~55 MiB).
            // Clients over it wait in the listen backlog.
            max_connections: 256,
            max_connections_per_peer: 32,
            // Silent and idle connections are closed quickly; a scraper or a client sends its
            // request head in milliseconds.
            header_read_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(5),
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
        }
    }
}

/// Serves `router` on `listener` with [`ServeLimits::default`] until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_limits(listener, router, shutdown, ServeLimits::default()).await
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// On shutdown it stops accepting, lets each open connection finish its request in flight
/// for at most [`ServeLimits::shutdown_grace`], then drops whatever is left and returns.
/// Errors of single connections are logged at debug level, never returned.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> io::Result<()> {
    serve_inner(listener, router, shutdown, limits, None).await
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, as
/// [`serve_with_limits`] does over plain HTTP.
///
/// Each connection's handshake runs in its own task, holding its connection slot and its
/// peer's, and must finish within [`ServeLimits::handshake_timeout`]. A client that sends
/// plain HTTP gets `400` with a one-line text body saying the port speaks TLS (as Go's
/// servers answer), never an API answer. The certificate is the one `tls` serves when the
/// handshake starts, so a renewed one reaches every new connection.
pub fn serve_tls(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
    tls: &crate::tls::ServerTls,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    serve_inner(listener, router, shutdown, limits, Some(tls.acceptor()))
}

/// What a client that sends plain HTTP to the TLS port reads.
pub const PLAIN_HTTP_TO_TLS_ANSWER: &str = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 48\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

async fn serve_inner(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let peers: Peers = Arc::new(Mutex::new(HashMap::new()));
    let mut shutdown = pin!(shutdown);

    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%err, "cannot accept API connections");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Some(peer_slot) = PeerSlot::take(&peers, peer.ip(), limits.max_connections_per_peer)
        else {
            tracing::debug!(%peer, "closed a connection over the per-peer bound");
            drop(stream);
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, %peer, "cannot set TCP_NODELAY");
        }
        let service = WithPeer {
            inner: TowerToHyperService::new(router.clone()),
            peer,
        };
        let mut stop = stop_rx.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _peer_slot = peer_slot;
            let Some(acceptor) = tls else {
                serve_connection(stream, service, limits, peer, stop).await;
                return;
            };
            let handshake = tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => return,
                done = timeout(limits.handshake_timeout, tls_handshake(&acceptor, stream)) => done,
            };
            match handshake {
                Ok(Ok(Some(stream))) => serve_connection(stream, service, limits, peer, stop).await,
                Ok(Ok(None)) => tracing::debug!(%peer, "answered plain HTTP on the TLS port with 400"),
                Ok(Err(err)) => tracing::debug!(%err, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "closed a connection that did not finish its TLS handshake in time"),
            }
        });
    }

    drop(listener);
    // `stop_rx` is still alive, so the send cannot fail.
    let _ = stop_tx.send(true);
    // Each task gives itself `shutdown_grace`; allow a little more before aborting them.
    let drain = async { while connections.join_next().await.is_some() {} };
    if timeout(limits.shutdown_grace + Duration::from_secs(1), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends, ages out or the server
/// stops.
async fn serve_connection<I>(
    io: I,
    service: WithPeer<TowerToHyperService<Router>>,
    limits: ServeLimits,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES))
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%err, %peer, "API connection ended with an error");
            }
            return;
        }
        () = sleep(limits.max_connection_age) => {}
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    if timeout(limits.shutdown_grace, conn).await.is_err() {
        tracing::debug!(%peer, "dropped an API connection that did not finish in time");
    }
}

/// The TLS handshake of one connection; `None` when the client spoke plain HTTP (answered
/// with [`PLAIN_HTTP_TO_TLS_ANSWER`] and closed).
async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
) -> io::Result<Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    // A TLS connection starts with a handshake record (22); an HTTP request with a method.
    if n == 1 && first[0].is_ascii_uppercase() {
        let mut stream = stream;
        stream
            .write_all(PLAIN_HTTP_TO_TLS_ANSWER.as_bytes())
            .await?;
        let _ = stream.shutdown().await;
        // Read what the client sent before closing: closing with unread bytes resets the
        // connection, and the client could lose the answer. Bounded in bytes and time.
        let mut sink = [0u8; 4096];
        let drain = async {
            let mut total = 0usize;
            while total < 64 * 1024 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = timeout(Duration::from_secs(1), drain).await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

type Peers = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Gives every request of a connection its peer address as [`ConnectInfo`], for the auth
/// layer (a loopback peer may need no token, see [`crate::auth`]).
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.inner.call(request)
    }
}

/// One connection counted against its peer address; uncounted when dropped.
struct PeerSlot {
    peers: Peers,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(peers: &Peers, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut map = peers.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(ip).or_insert(0);
        if *count >= max.max(1) {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: Arc::clone(peers),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Errors that concern one connection only: the listener itself is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
