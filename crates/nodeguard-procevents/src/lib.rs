//! Exec events as they happen, from the kernel's process-events connector.
//!
//! [`start`] opens a `NETLINK_CONNECTOR` socket, joins the `CN_IDX_PROC` group, sends
//! `PROC_CN_MCAST_LISTEN`, proves the subscription works by spawning a probe process and
//! waiting for its exec event, then hands every exec to a reader thread that forwards the
//! thread-group id on a bounded [`tokio::sync::mpsc`] channel. Nothing else: this crate
//! reads no `/proc` and knows no daemon. The connector needs no BPF toolchain and no
//! `CAP_BPF`; it only works in the initial network namespace (in a pod: `hostNetwork`) and
//! the initial pid and user namespaces (the kernel silently ignores other subscribers, which
//! the probe detects).
//!
//! Joining the group takes `CAP_NET_ADMIN` (the kernel checks it at `bind` and again when
//! the subscribe request arrives); receiving afterwards does not. With
//! [`Options::drop_net_admin`], [`start`] removes `CAP_NET_ADMIN` from the calling thread's
//! effective, permitted and inheritable sets once the subscription is made (or has failed),
//! before its reader thread exists: called before the process has any other thread, the
//! whole process is left without it ([`drop_net_admin`]).
//!
//! Events can be lost: the kernel drops messages when the socket's buffer is full (`recv`
//! fails with `ENOBUFS`), and the reader drops events when the channel is full. Both are
//! counted in [`Stats::lost`] and announced with [`ExecEvent::Lost`] when the channel has
//! room, so the consumer reconciles with a full scan.
//!
//! A process may live for a millisecond: by the time a consumer reads `/proc/PID` it is gone.
//! [`start_holding`] takes a [`Hold`]: the reader thread takes hold of each exec'd process
//! before the event is queued, in two steps. Each time it wakes up it first drains every
//! message the socket holds and *grabs* each exec (the caller's quick step, e.g. opening
//! `/proc/PID` and its executable); only when the socket is empty does it *finish* the
//! oldest grabbed exec (the slower step, e.g. reading its small files) and queue it, then
//! looks at the socket again. So an exec arriving right behind another (a memfd loader and
//! its payload, a shell's pipeline) waits for the other's grab, not for its finish. What the
//! hold returned rides on [`ExecEvent::Exec`] as `held`; events are queued in the kernel's
//! order. When the channel is full the exec is counted as lost without holding.
//!
//! Every datagram is parsed defensively ([`parse`]): lengths are checked against the bytes
//! received, messages not sent by the kernel (netlink port 0) are ignored, and nothing
//! reachable from a message can panic.

pub mod parse;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use parse::{parse_datagram, subscribe_request, Message, CN_IDX_PROC, PROC_EVENT_EXEC};

/// `PROC_CN_MCAST_LISTEN`.
const MCAST_LISTEN: u32 = 1;
/// What the reader asks the socket for by default: a few MiB ride out bursts of thousands
/// of execs.
pub const RECV_BUFFER_DEFAULT: u32 = 4 << 20;
/// How often the reader wakes up to notice a closed channel.
const RECV_TIMEOUT: Duration = Duration::from_millis(250);
/// The largest datagram read at once; a longer one is counted as malformed.
const DATAGRAM_MAX: usize = 64 * 1024;

/// Why exec events are not available.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a NETLINK_CONNECTOR socket: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot bind to the process-events group (CN_IDX_PROC): {0}")]
    Bind(#[source] io::Error),
    #[error(
        "cannot bind to the process-events group (CN_IDX_PROC): {0}: joining it needs CAP_NET_ADMIN, which this process does not hold (the DaemonSet grants NET_ADMIN for this; README, \"Privileges\")"
    )]
    BindNeedsNetAdmin(#[source] io::Error),
    #[error(
        "the kernel refused the process-events subscription ({0}); the connector only answers in the initial network namespace (hostNetwork)"
    )]
    Subscribe(#[source] io::Error),
    #[error("cannot spawn the probe {program}: {source}")]
    Probe {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no exec event arrived for the probe process within {waited:?}: the kernel delivers process events only to listeners in the initial pid and user namespaces (hostPID)"
    )]
    NoProbeEvent { waited: Duration },
    #[error("reading the process-events socket failed: {0}")]
    Receive(#[source] io::Error),
    #[error("cannot start the process-events reader thread: {0}")]
    Thread(#[source] io::Error),
    #[error("cannot drop CAP_NET_ADMIN after subscribing: {0}")]
    DropNetAdmin(#[source] io::Error),
}

/// What the consumer receives; `H` is what the hold function of [`start_holding`] took of
/// the process (nothing with [`start`]).
#[derive(Debug, PartialEq, Eq)]
pub enum ExecEvent<H = ()> {
    /// The process `pid` (a thread-group id, as `/proc` lists it) called execve; `held` is
    /// what the hold function returned for it, taken at once on the reader thread.
    Exec { pid: i32, held: Option<H> },
    /// Events were lost since the last message: reconcile with a full scan.
    Lost,
}

/// A process spawned once at start to prove that events arrive.
#[derive(Debug, Clone)]
pub struct Probe {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// How long to wait for its exec event.
    pub timeout: Duration,
}

/// How to listen.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events the channel holds before the reader drops (and counts) them.
    pub capacity: usize,
    /// The socket's receive buffer in bytes (`SO_RCVBUF`; the kernel doubles it). When it
    /// is full the kernel drops messages: counted in [`Stats::lost`].
    pub recv_buffer: u32,
    /// `None`: trust the subscription without proof (tests of the parser only).
    pub probe: Option<Probe>,
    /// Drop `CAP_NET_ADMIN` ([`drop_net_admin`]) once subscribed (or failed to), before
    /// the reader thread starts.
    pub drop_net_admin: bool,
    /// Run the reader thread under `SCHED_FIFO` (priority 1) so that it runs as soon as an
    /// exec's message arrives, whatever else wants the CPU ([`Priority`]). Needs
    /// `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO` of 1); without it the reader keeps the short
    /// slice. With [`Options::drop_net_admin`], `CAP_SYS_NICE` is dropped too once the
    /// reader has its policy.
    pub realtime: bool,
}

/// How the reader thread is scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Priority {
    /// `SCHED_FIFO` priority 1 ([`Options::realtime`]): it preempts every ordinary thread
    /// when a message arrives. The kernel's real-time throttling
    /// (`/proc/sys/kernel/sched_rt_runtime_us`) bounds what it can take of a CPU.
    Realtime,
    /// `SCHED_OTHER` with a 100 µs slice (Linux 6.12+ wakes it sooner); `realtime` says
    /// why a real-time policy was not taken, when it was asked for.
    ShortSlice { realtime: Option<String> },
    /// The default scheduling (the kernel refused both); the reason.
    Default(String),
}

/// Counters shared with the reader thread; read them any time.
#[derive(Debug, Default)]
pub struct Stats {
    events: AtomicU64,
    lost: AtomicU64,
    malformed: AtomicU64,
    stopped: AtomicBool,
}

impl Stats {
    /// Exec events received from the kernel.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    /// Exec events known to be lost: each `ENOBUFS` (the kernel does not say how many it
    /// dropped: counted as one) and each event dropped because the channel was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
    /// Messages that did not parse (skipped).
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
    /// The reader stopped on a socket error: no more events will come.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// A working subscription: the receiving end and the counters.
#[derive(Debug)]
pub struct ExecEvents<H = ()> {
    pub receiver: mpsc::Receiver<ExecEvent<H>>,
    pub stats: Arc<Stats>,
    /// How the reader thread runs.
    pub priority: Priority,
    /// Whether the kernel filters for exec events (Linux 6.6+), else every fork and exit
    /// comes too and is skipped here.
    pub filtered: bool,
}

/// Subscribes, proves it with the probe, drops `CAP_NET_ADMIN` when asked to (also when the
/// subscription failed), and starts the reader thread. Blocks for up to twice the probe's
/// timeout.
pub fn start(options: Options) -> Result<ExecEvents, Error> {
    start_holding(options, |_: Exec| None::<()>)
}

/// One exec as the kernel announced it, for a hold function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exec {
    /// The thread-group id (as `/proc` lists it).
    pub pid: i32,
    /// When it exec'd: `CLOCK_MONOTONIC`, nanoseconds.
    pub timestamp_ns: u64,
}

/// What the reader thread does for each exec before it queues the event, in two steps
/// (see the crate's documentation): [`Hold::grab`] as soon as the message is read, before
/// any other exec is finished, and [`Hold::finish`] once no message waits. Both run on the
/// reader thread and must not block: every exec waits for them. A closure
/// `FnMut(Exec) -> Option<H>` is a hold of one step (its grab is the whole hold).
pub trait Hold: Send + 'static {
    /// What the quick first step took.
    type Grip: Send;
    /// What rides on the event.
    type Held: Send + 'static;
    /// The quick step; `None` when nothing could be taken.
    fn grab(&mut self, exec: Exec) -> Option<Self::Grip>;
    /// The slower step, for what was grabbed.
    fn finish(&mut self, grip: Self::Grip) -> Option<Self::Held>;
}

impl<H, F> Hold for F
where
    H: Send + 'static,
    F: FnMut(Exec) -> Option<H> + Send + 'static,
{
    type Grip = H;
    type Held = H;

    fn grab(&mut self, exec: Exec) -> Option<H> {
        self(exec)
    }

    fn finish(&mut self, grip: H) -> Option<H> {
        Some(grip)
    }
}

/// [`start`], with `hold` taking hold of each exec on the reader thread (also of execs read
/// while the probe is awaited); what it took rides on the event.
pub fn start_holding<K: Hold>(options: Options, hold: K) -> Result<ExecEvents<K::Held>, Error> {
    let subscribed = subscribe(&options, hold);
    if options.drop_net_admin {
        drop_net_admin().map_err(Error::DropNetAdmin)?;
    }
    let (reader, receiver, stats, filtered) = subscribed?;
    let realtime = options.realtime;
    let (told, priority) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("nodeguard-procevents".into())
        .spawn(move || {
            let _ = told.send(schedule_reader(realtime));
            reader.run()
        })
        .map_err(Error::Thread)?;
    let priority = priority
        .recv()
        .unwrap_or_else(|_| Priority::Default("the reader thread ended".into()));
    if realtime && options.drop_net_admin {
        // The reader has its policy (and dropped the capability for itself): this thread,
        // and those it starts, need it no more.
        if let Err(e) = drop_capability(CAP_SYS_NICE) {
            tracing::warn!(error = %e, "CAP_SYS_NICE stays in the agent's capability sets");
        }
    }
    Ok(ExecEvents {
        receiver,
        stats,
        priority,
        filtered,
    })
}

/// Sets the calling (reader) thread's scheduling: `SCHED_FIFO` 1 when `realtime` and the
/// kernel allows it (then `CAP_SYS_NICE` is dropped from this thread), else the short slice.
fn schedule_reader(realtime: bool) -> Priority {
    let mut refused = None;
    if realtime {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
            if let Err(e) = drop_capability(CAP_SYS_NICE) {
                tracing::warn!(error = %e, "the event thread keeps CAP_SYS_NICE");
            }
            return Priority::Realtime;
        }
        refused = Some(format!(
            "{} (SCHED_FIFO needs CAP_SYS_NICE)",
            io::Error::last_os_error()
        ));
    }
    match request_short_slice() {
        Ok(()) => Priority::ShortSlice { realtime: refused },
        Err(e) => Priority::Default(match refused {
            Some(r) => format!("{r}; short slice: {e}"),
            None => e.to_string(),
        }),
    }
}

type Subscribed<K> = (
    Reader<K>,
    mpsc::Receiver<ExecEvent<<K as Hold>::Held>>,
    Arc<Stats>,
    bool,
);

fn subscribe<K: Hold>(options: &Options, hold: K) -> Result<Subscribed<K>, Error> {
    let socket = Socket::open(options.recv_buffer)?;
    let (sender, receiver) = mpsc::channel(options.capacity.max(1));
    let stats = Arc::new(Stats::default());
    let mut reader = Reader {
        socket,
        sender,
        stats: Arc::clone(&stats),
        buf: vec![0u8; DATAGRAM_MAX],
        hold,
        grabbed: VecDeque::new(),
        reads_in_a_row: 0,
    };
    // Linux 6.6+ takes an event filter; older kernels silently ignore that request, so when
    // the probe sees nothing the plain subscribe (every event) is tried.
    let mut filtered = false;
    match &options.probe {
        None => reader.socket.subscribe(None)?,
        Some(probe) => {
            reader.socket.subscribe(Some(PROC_EVENT_EXEC))?;
            if reader.probe(probe)? {
                filtered = true;
            } else {
                reader.socket.subscribe(None)?;
                if !reader.probe(probe)? {
                    return Err(Error::NoProbeEvent {
                        waited: probe.timeout * 2,
                    });
                }
            }
        }
    }
    Ok((reader, receiver, stats, filtered))
}

/// The slice the reader thread asks for: the shortest the kernel takes (100 µs).
const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` (`SCHED_ATTR_SIZE_VER1`, 56 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Asks the kernel for a short scheduler slice for the calling thread (`sched_setattr`,
/// `SCHED_OTHER`, nice 0, `sched_runtime` 100 µs): on Linux 6.12+ (EEVDF custom slices) a
/// woken thread with a short slice gets an earlier deadline and runs sooner, so on a busy
/// node the hold of a just-exec'd process comes before it exits. Needs no privilege (the
/// nice value stays 0); older kernels ignore the runtime. Measured on a 2-core machine at load
/// 20: a plain listener opened the executable of 92-94 of 100 processes living 1 ms, with the
/// short slice 97-99.
fn request_short_slice() -> io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        runtime: SHORT_SLICE_NS,
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr reads `size` bytes of a valid sched_attr; pid 0 is this thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `CAP_NET_ADMIN`'s number.
const CAP_NET_ADMIN: u32 = 12;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Removes `CAP_NET_ADMIN` from the calling thread's effective, permitted and inheritable
/// sets (the kernel then clears it from the ambient set too); `Ok(true)` when it was held.
/// Capabilities are per thread: threads started afterwards inherit the reduced sets, threads
/// that already exist keep theirs, so call this before the process starts any. Without
/// `CAP_NET_ADMIN` in the permitted set nothing but an `execve` can bring it back, and under
/// `no_new_privs` (the DaemonSet's `allowPrivilegeEscalation: false`) not even that.
pub fn drop_net_admin() -> io::Result<bool> {
    drop_capability(CAP_NET_ADMIN)
}

/// `CAP_SYS_NICE`'s number.
const CAP_SYS_NICE: u32 = 23;

/// `CAP_SYS_ADMIN`'s number (for [`drop_capability`]: the writable-layer event source needs
/// it only to mark filesystems at start).
pub const CAP_SYS_ADMIN: u32 = 21;

/// Removes capability `cap` (below 32) from the calling thread's effective, permitted and
/// inheritable sets, as [`drop_net_admin`] does for `CAP_NET_ADMIN`; `Ok(true)` when it
/// was held.
pub fn drop_capability(cap: u32) -> io::Result<bool> {
    if cap >= 32 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData words for version 3 into `data`, which has two.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let bit = 1u32 << cap;
    let held = (data[0].effective | data[0].permitted | data[0].inheritable) & bit != 0;
    if !held {
        return Ok(false);
    }
    data[0].effective &= !bit;
    data[0].permitted &= !bit;
    data[0].inheritable &= !bit;
    // SAFETY: capset reads the header and two CapData words, both valid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

struct Socket(OwnedFd);

impl Socket {
    fn open(recv_buffer: u32) -> Result<Socket, Error> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        };
        if fd < 0 {
            return Err(Error::Socket(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let socket = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        // Best effort: FORCE passes rmem_max with CAP_NET_ADMIN, the plain one is capped.
        let bytes = libc::c_int::try_from(recv_buffer).unwrap_or(libc::c_int::MAX);
        if socket
            .set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
            .is_err()
        {
            let _ = socket.set_int(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RECV_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        // SAFETY: a timeval of the right size for SO_RCVTIMEO.
        let rc = unsafe {
            libc::setsockopt(
                socket.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::Socket(io::Error::last_os_error()));
        }
        let mut addr = nl_addr();
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                socket.0.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                Error::BindNeedsNetAdmin(e)
            } else {
                Error::Bind(e)
            });
        }
        Ok(socket)
    }

    fn set_int(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: an int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends `PROC_CN_MCAST_LISTEN` to the kernel (netlink port 0). Outside the initial
    /// network namespace the connector is not there: `ECONNREFUSED`.
    fn subscribe(&self, filter: Option<u32>) -> Result<(), Error> {
        let request = subscribe_request(MCAST_LISTEN, filter);
        let kernel = nl_addr();
        // SAFETY: the buffer and address are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::Subscribe(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// One datagram into `buf`: its length, and whether the kernel (port 0) sent it. With
    /// `wait` false, `EAGAIN` at once when none is there.
    fn recv(&self, buf: &mut [u8], wait: bool) -> io::Result<(usize, bool)> {
        let flags = if wait {
            libc::MSG_TRUNC
        } else {
            libc::MSG_TRUNC | libc::MSG_DONTWAIT
        };
        let mut from = nl_addr();
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths given; MSG_TRUNC makes the return
        // value the datagram's real length, which is checked against buf below.
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let from_kernel =
            from.nl_family == libc::AF_NETLINK as libc::sa_family_t && from.nl_pid == 0;
        Ok((n as usize, from_kernel))
    }
}

fn nl_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

/// Execs grabbed and not yet finished, at most: beyond it the reader finishes one before it
/// reads on (the holder's own budget bounds what stays held after that).
const GRABBED_MAX: usize = 64;
/// Messages read in a row at most before the oldest grabbed exec is finished: a stream of
/// messages (execs without end, or datagrams from a local process, which are skipped) does
/// not hold back what was grabbed.
const READS_MAX: usize = 256;

struct Reader<K: Hold> {
    socket: Socket,
    sender: mpsc::Sender<ExecEvent<K::Held>>,
    stats: Arc<Stats>,
    buf: Vec<u8>,
    hold: K,
    /// Execs read, in the kernel's order, with what was grabbed of each (`None`: nothing).
    grabbed: VecDeque<(Exec, Option<K::Grip>)>,
    /// Messages read since the last finish.
    reads_in_a_row: usize,
}

/// What one receive gave.
enum Received {
    Execs(Vec<Exec>),
    /// Nothing within the receive timeout, or, not waiting, nothing there.
    Nothing,
    Lost,
}

impl<K: Hold> Reader<K> {
    fn receive(&mut self, wait: bool) -> Result<Received, Error> {
        let (n, from_kernel) = match self.socket.recv(&mut self.buf, wait) {
            Ok(r) => r,
            Err(e) => {
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Received::Nothing),
                    Some(libc::ENOBUFS) => Ok(Received::Lost),
                    _ => Err(Error::Receive(e)),
                }
            }
        };
        if !from_kernel || n > self.buf.len() {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return Ok(Received::Execs(Vec::new()));
        }
        let mut execs = Vec::new();
        for message in parse_datagram(&self.buf[..n]) {
            match message {
                Message::Exec {
                    tgid, timestamp_ns, ..
                } => execs.push(Exec {
                    pid: tgid,
                    timestamp_ns,
                }),
                Message::Malformed => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
                Message::Overrun => return Ok(Received::Lost),
                Message::Ack { err } if err != 0 => {
                    tracing::warn!(
                        err,
                        "the process-events connector answered the subscribe with an error"
                    );
                }
                Message::Error(code) if code != 0 => {
                    tracing::warn!(code, "netlink error from the process-events connector");
                }
                _ => {}
            }
        }
        Ok(Received::Execs(execs))
    }

    /// Grabs each exec and keeps it, in order, for [`Reader::finish_one`]; `false` once the
    /// consumer is gone. An exec the channel has no room for (counting those grabbed before
    /// it) is lost before anything is grabbed of it.
    fn grab(&mut self, execs: &[Exec]) -> bool {
        for &exec in execs {
            self.stats.events.fetch_add(1, Ordering::Relaxed);
            if self.sender.capacity() <= self.grabbed.len() {
                if self.sender.is_closed() {
                    return false;
                }
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let grip = self.hold.grab(exec);
            self.grabbed.push_back((exec, grip));
        }
        true
    }

    /// Finishes the oldest grabbed exec and queues its event; `false` once the consumer is
    /// gone.
    fn finish_one(&mut self) -> bool {
        self.reads_in_a_row = 0;
        let Some((exec, grip)) = self.grabbed.pop_front() else {
            return true;
        };
        let held = grip.and_then(|g| self.hold.finish(g));
        match self.sender.try_send(ExecEvent::Exec {
            pid: exec.pid,
            held,
        }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn lost(&mut self) -> bool {
        self.stats.lost.fetch_add(1, Ordering::Relaxed);
        // A full channel already means the consumer will look at the counters.
        !matches!(
            self.sender.try_send(ExecEvent::Lost),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }

    /// One round: reads what the socket has (waiting up to the receive timeout only when
    /// nothing is grabbed), grabbing each exec; when the socket has nothing more, or enough
    /// is grabbed, or [`READS_MAX`] messages came in a row, finishes one. The flag is `false`
    /// once the consumer is gone; the execs are those read (for the probe).
    fn step(&mut self) -> Result<(bool, Vec<Exec>), Error> {
        let wait = self.grabbed.is_empty();
        let alive = match self.receive(wait)? {
            Received::Execs(execs) => {
                let alive = self.grab(&execs);
                self.reads_in_a_row += 1;
                if alive && self.grabbed.len() < GRABBED_MAX && self.reads_in_a_row < READS_MAX {
                    // Read on: the next message may be a process about to exit.
                    return Ok((true, execs));
                }
                return Ok((alive && self.finish_one(), execs));
            }
            Received::Nothing if wait => !self.sender.is_closed(),
            Received::Nothing => self.finish_one(),
            Received::Lost => self.lost(),
        };
        Ok((alive, Vec::new()))
    }

    /// Spawns the probe and reads until its exec shows (`true`) or the timeout passes.
    /// Other execs read meanwhile are held and forwarded.
    fn probe(&mut self, probe: &Probe) -> Result<bool, Error> {
        let mut child = std::process::Command::new(&probe.program)
            .args(&probe.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|source| Error::Probe {
                program: probe.program.clone(),
                source,
            })?;
        let pid = i32::try_from(child.id()).unwrap_or(-1);
        let deadline = Instant::now() + probe.timeout;
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            let (_, execs) = self.step()?;
            seen = execs.iter().any(|e| e.pid == pid);
        }
        while !self.grabbed.is_empty() {
            self.finish_one();
        }
        let _ = child.wait();
        Ok(seen)
    }

    fn run(mut self) {
        loop {
            match self.step() {
                Ok((true, _)) => {}
                Ok((false, _)) => return,
                Err(e) => {
                    tracing::error!(error = %e, "process events stopped; scans continue on the interval");
                    self.stats.stopped.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but the test does not run as root"
            );
            eprintln!("SKIPPED: the process-events connector needs root");
        }
        root
    }

    fn probe() -> Probe {
        Probe {
            program: "/bin/true".into(),
            args: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }

    /// Starts a short `sleep` and waits up to 5 s for the exec event of its pid: (pid, seen).
    fn exec_of_a_child_arrives(events: &mut ExecEvents) -> (i32, bool) {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let want = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            match events.receiver.try_recv() {
                Ok(ExecEvent::Exec { pid, .. }) => seen = pid == want,
                Ok(ExecEvent::Lost) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = child.wait();
        (want, seen)
    }

    /// The real connector: a process we start is announced with its pid.
    #[test]
    fn an_exec_on_this_host_arrives_with_its_pid() {
        if !root() {
            return;
        }
        let _alone = READERS.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = start(Options {
            capacity: 1024,
            recv_buffer: RECV_BUFFER_DEFAULT,
            probe: Some(probe()),
            drop_net_admin: false,
            realtime: false,
        })
        .expect("the connector works as root in the initial namespaces");
        let (want, seen) = exec_of_a_child_arrives(&mut events);
        assert!(seen, "no exec event for pid {want}");
        assert!(events.stats.events() >= 1);
    }

    /// The hold function runs for an exec as its message arrives, before the event is
    /// queued: what it took (here the executable, opened by pid) is read after the process
    /// exited and was reaped, and is the file that ran.
    #[test]
    fn what_the_hold_function_took_outlives_the_process() {
        if !root() {
            return;
        }
        let _alone = READERS.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = start_holding(
            Options {
                capacity: 1024,
                recv_buffer: RECV_BUFFER_DEFAULT,
                probe: Some(probe()),
                drop_net_admin: false,
                realtime: false,
            },
            |exec: Exec| std::fs::File::open(format!("/proc/{}/exe", exec.pid)).ok(),
        )
        .expect("the connector works as root");
        let status = std::process::Command::new("/bin/sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let want = status.id() as i32;
        let mut status = status;
        assert!(status.wait().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut held = None;
        while held.is_none() && Instant::now() < deadline {
            match events.receiver.try_recv() {
                Ok(ExecEvent::Exec { pid, held: h }) if pid == want => {
                    held = Some(h.expect("the exec was held while the process ran"))
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let mut exe = held.unwrap_or_else(|| panic!("no exec event for pid {want}"));
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut exe, &mut bytes).unwrap();
        let real = std::fs::canonicalize("/bin/sleep").unwrap();
        assert!(
            bytes == std::fs::read(&real).unwrap(),
            "not {}",
            real.display()
        );
    }

    /// A hold whose finish is slow for programs named `slow-*`.
    struct SlowFinish;

    const SLOW_FINISH: Duration = Duration::from_millis(150);

    impl Hold for SlowFinish {
        /// The executable's path as the link said at the grab, and the file itself.
        type Grip = (String, std::fs::File);
        type Held = (String, std::fs::File);

        fn grab(&mut self, exec: Exec) -> Option<Self::Grip> {
            let path = std::fs::read_link(format!("/proc/{}/exe", exec.pid)).ok()?;
            let file = std::fs::File::open(format!("/proc/{}/exe", exec.pid)).ok()?;
            Some((path.to_string_lossy().into_owned(), file))
        }

        fn finish(&mut self, grip: Self::Grip) -> Option<Self::Held> {
            if grip.0.contains("/slow-") {
                std::thread::sleep(SLOW_FINISH);
            }
            Some(grip)
        }
    }

    /// Three processes exec'd while the reader finishes their parent's exec, each living
    /// 250 ms, with a finish of 150 ms each: all three arrive held with their executable, in
    /// the kernel's order. They are grabbed together as soon as the parent's finish ends;
    /// holding each exec whole before reading the next message (grab and finish in turn)
    /// would reach the second one 300 ms in, after it exited.
    #[test]
    fn execs_arriving_during_a_slow_finish_are_all_grabbed_and_queued_in_order() {
        if !root() {
            return;
        }
        let _alone = READERS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile_dir();
        let shell = dir.join("slow-sh");
        let sleeper = dir.join("slow-sleep");
        std::fs::copy("/bin/sh", &shell).unwrap();
        std::fs::copy("/bin/sleep", &sleeper).unwrap();
        let mut events = start_holding(
            Options {
                capacity: 1024,
                recv_buffer: RECV_BUFFER_DEFAULT,
                probe: Some(probe()),
                drop_net_admin: false,
                realtime: false,
            },
            SlowFinish,
        )
        .expect("the connector works as root");
        let s = sleeper.display();
        let mut child = std::process::Command::new(&shell)
            .arg("-c")
            .arg(format!("{s} 0.25 & {s} 0.25 & {s} 0.25 & wait"))
            .spawn()
            .unwrap();
        let shell_pid = child.id() as i32;
        assert!(child.wait().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut order = Vec::new();
        let mut sleepers = 0;
        while sleepers < 3 && Instant::now() < deadline {
            match events.receiver.try_recv() {
                Ok(ExecEvent::Exec { pid, held }) => {
                    let Some((path, mut file)) = held else {
                        continue;
                    };
                    if path.ends_with("/slow-sleep") {
                        sleepers += 1;
                        let mut bytes = Vec::new();
                        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
                        assert!(bytes == std::fs::read(&sleeper).unwrap());
                        order.push(pid);
                    } else if pid == shell_pid {
                        order.push(pid);
                    }
                }
                Ok(ExecEvent::Lost) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        assert_eq!(sleepers, 3, "held sleepers: {order:?}");
        assert_eq!(
            order.first(),
            Some(&shell_pid),
            "the parent's exec first: {order:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("procevents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A full channel is counted as lost events, not waited for.
    #[test]
    fn a_full_channel_counts_lost_events() {
        if !root() {
            return;
        }
        let _alone = READERS.lock().unwrap_or_else(|e| e.into_inner());
        let events = start(Options {
            capacity: 1,
            recv_buffer: RECV_BUFFER_DEFAULT,
            probe: Some(probe()),
            drop_net_admin: false,
            realtime: false,
        })
        .expect("the connector works as root");
        for _ in 0..5 {
            std::process::Command::new("/bin/true").status().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while events.stats.lost() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(events.stats.lost() >= 3, "lost: {}", events.stats.lost());
    }

    /// In a network namespace of its own the connector is not there: the subscribe is
    /// refused with ECONNREFUSED, as FIELD-NOTES recorded, and `start` says so.
    #[test]
    fn a_new_network_namespace_refuses_the_subscription() {
        if !root() {
            return;
        }
        let outcome = std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error().to_string());
            }
            match start(Options {
                capacity: 8,
                recv_buffer: RECV_BUFFER_DEFAULT,
                probe: Some(probe()),
                drop_net_admin: false,
                realtime: false,
            }) {
                Ok(_) => Ok(None),
                Err(e) => Ok(Some(e)),
            }
        })
        .join()
        .unwrap();
        match outcome {
            Ok(Some(Error::Subscribe(e))) => {
                assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}")
            }
            Ok(other) => panic!("expected a refused subscribe, got {other:?}"),
            Err(why) => panic!("cannot unshare the network namespace: {why}"),
        }
    }

    /// `CAP_NET_ADMIN` in the `Cap*` line `field` of a status file.
    fn holds_net_admin(status: &str, field: &str) -> bool {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        let bits = u64::from_str_radix(hex.trim(), 16).unwrap();
        bits & (1 << CAP_NET_ADMIN) != 0
    }

    /// Tests that start a reader hold this, so a test can tell its reader thread apart.
    static READERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The ids of this process's reader threads (the name is cut to 15 bytes).
    fn reader_threads() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|tid| {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .is_ok_and(|c| c.trim_end() == "nodeguard-proce")
            })
            .collect()
    }

    fn thread_status(tid: &str) -> String {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap()
    }

    /// The reader thread runs with the short scheduler slice it asked for, as the kernel
    /// shows it (`se.slice` in `/proc/self/task/TID/sched`, Linux 6.12+).
    #[test]
    fn the_reader_thread_runs_with_a_short_slice() {
        if !root() {
            return;
        }
        let _alone = READERS.lock().unwrap_or_else(|e| e.into_inner());
        let before = reader_threads();
        let _events = start(Options {
            capacity: 8,
            recv_buffer: RECV_BUFFER_DEFAULT,
            probe: Some(probe()),
            drop_net_admin: false,
            realtime: false,
        })
        .expect("the connector works as root");
        let slice = |tid: &str| {
            let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
            sched
                .lines()
                .find(|l| l.starts_with("se.slice"))?
                .rsplit(':')
                .next()?
                .trim()
                .parse::<u64>()
                .ok()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut new = reader_threads();
            new.retain(|tid| !before.contains(tid));
            if let Some(tid) = new.first() {
                match slice(tid) {
                    None => {
                        eprintln!("SKIPPED: this kernel shows no se.slice");
                        return;
                    }
                    Some(SHORT_SLICE_NS) => return,
                    Some(other) if Instant::now() >= deadline => {
                        panic!("reader thread {tid} runs with a slice of {other} ns")
                    }
                    Some(_) => {}
                }
            }
            assert!(Instant::now() < deadline, "no reader thread appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Without CAP_NET_ADMIN the bind is refused, and the error names the capability.
    #[test]
    fn without_net_admin_the_bind_is_refused_and_the_error_names_the_capability() {
        if !root() {
            return;
        }
        // Capabilities are per thread: only this one loses it.
        let outcome = std::thread::spawn(|| {
            drop_net_admin().expect("capset");
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert!(!holds_net_admin(&status, "CapEff"), "{status}");
            start(Options {
                capacity: 8,
                recv_buffer: RECV_BUFFER_DEFAULT,
                probe: Some(probe()),
                drop_net_admin: false,
                realtime: false,
            })
            .map(|_| ())
        })
        .join()
        .unwrap();
        let error = outcome.expect_err("a bind without CAP_NET_ADMIN must fail");
        assert!(
            matches!(&error, Error::BindNeedsNetAdmin(e) if e.raw_os_error() == Some(libc::EPERM)),
            "{error:?}"
        );
        assert!(error.to_string().contains("CAP_NET_ADMIN"), "{error}");
    }

    /// With `realtime`, the reader thread runs under SCHED_FIFO (the kernel's view), neither
    /// it nor the starting thread keeps CAP_SYS_NICE or CAP_NET_ADMIN, and execs still come.
    #[test]
    fn a_realtime_reader_runs_fifo_and_keeps_no_sys_nice() {
        if !root() {
            return;
        }
        let _alone = READERS.lock().unwrap_or_else(|e| e.into_inner());
        let before = reader_threads();
        let (mut events, starter) = std::thread::spawn(|| {
            let events = start(Options {
                capacity: 1024,
                recv_buffer: RECV_BUFFER_DEFAULT,
                probe: Some(probe()),
                drop_net_admin: true,
                realtime: true,
            })
            .expect("the connector works as root");
            let tid = unsafe { libc::syscall(libc::SYS_gettid) }.to_string();
            (events, thread_status(&tid))
        })
        .join()
        .unwrap();
        assert_eq!(events.priority, Priority::Realtime);
        let bit = |status: &str, field: &str, cap: u32| {
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .unwrap();
            u64::from_str_radix(hex.trim(), 16).unwrap() & (1 << cap) != 0
        };
        let mut new = reader_threads();
        new.retain(|tid| !before.contains(tid));
        assert_eq!(new.len(), 1, "one new reader thread: {new:?}");
        let tid: libc::pid_t = new[0].parse().unwrap();
        // SAFETY: sched_getscheduler reads the policy of a thread id.
        assert_eq!(unsafe { libc::sched_getscheduler(tid) }, libc::SCHED_FIFO);
        let reader = thread_status(&new[0]);
        for (who, status) in [("starter", &starter), ("reader", &reader)] {
            for field in ["CapEff", "CapPrm"] {
                assert!(!bit(status, field, CAP_SYS_NICE), "{who} {field}: {status}");
                assert!(
                    !bit(status, field, CAP_NET_ADMIN),
                    "{who} {field}: {status}"
                );
            }
        }
        let (want, seen) = exec_of_a_child_arrives(&mut events);
        assert!(
            seen,
            "no exec event for pid {want} from the real-time reader"
        );
    }

    /// Subscribed, then without CAP_NET_ADMIN in the starting thread and in the reader
    /// thread (the kernel's own view, /proc/self/task/TID/status): exec events still come.
    #[test]
    fn events_keep_coming_after_net_admin_is_dropped() {
        if !root() {
            return;
        }
        let _alone = READERS.lock().unwrap_or_else(|e| e.into_inner());
        let before = reader_threads();
        let (mut events, starter) = std::thread::spawn(|| {
            let events = start(Options {
                capacity: 1024,
                recv_buffer: RECV_BUFFER_DEFAULT,
                probe: Some(probe()),
                drop_net_admin: true,
                realtime: false,
            })
            .expect("the connector works as root");
            let tid = unsafe { libc::syscall(libc::SYS_gettid) }.to_string();
            (events, thread_status(&tid))
        })
        .join()
        .unwrap();
        for field in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert!(!holds_net_admin(&starter, field), "{field}: {starter}");
        }
        // The thread names itself once running: wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let new = loop {
            let mut new = reader_threads();
            new.retain(|tid| !before.contains(tid));
            if !new.is_empty() || Instant::now() >= deadline {
                break new;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(new.len(), 1, "one new reader thread: {new:?}");
        let reader = thread_status(&new[0]);
        for field in ["CapEff", "CapPrm"] {
            assert!(!holds_net_admin(&reader, field), "reader {field}: {reader}");
        }
        let (want, seen) = exec_of_a_child_arrives(&mut events);
        assert!(
            seen,
            "no exec event for pid {want} after CAP_NET_ADMIN was dropped"
        );
    }
}
