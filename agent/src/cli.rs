//! Command-line flags. Every flag of a long-running mode also reads `NODEGUARD_<FLAG>`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "nodeguard",
    version,
    about = "What really runs on this node: executables' digests, capabilities, limits, findings.",
    propagate_version = true
)]
pub struct Cli {
    /// Log format: `text` for terminals, `json` for log pipelines; `auto` picks text on a
    /// terminal, json otherwise. Level from RUST_LOG (default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "NODEGUARD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

// Parsed once per process: the size of `run`'s flags costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan this node once and print the report.
    Scan(ScanArgs),
    /// Keep watch: scan on a schedule, serve metrics and the query API, publish Events.
    Run(RunArgs),
    /// Ask a running agent about the node's current state.
    Query(QueryArgs),
    /// Questions about every node of the cluster, with your kubeconfig (docs/fleet.md).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Print the digest of files, read exactly as the scan reads executables.
    Hash(HashArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Make digest bundles (release digests of platform binaries) for the policy's
    /// `digest_bundles`.
    #[command(subcommand)]
    Digests(DigestsCommand),
}

#[derive(Debug, Subcommand)]
pub enum DigestsCommand {
    /// Turn release artifacts into a digest bundle: directories (every regular file hashed,
    /// symlinks not followed), release tarballs (.tar.gz, .tgz, .tar: every regular member
    /// hashed, nothing extracted), sha256sum/sha512sum output files, and per-binary
    /// .sha256/.sha512 files (the binary's name is the file's name without the suffix).
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Artifacts, tarballs, checksum files or directories of them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    /// Where to write the bundle (JSON); `-` for standard output.
    #[arg(long, short = 'o')]
    pub output: PathBuf,

    /// Keep several builds of one binary name (e.g. two releases during a rolling upgrade)
    /// instead of refusing a name whose sources give different digests.
    #[arg(long)]
    pub allow_several: bool,

    /// Record binary OLD under the name NEW (`runc.amd64=runc`: release files are often
    /// named by architecture but installed without it). May be repeated.
    #[arg(long, value_name = "OLD=NEW")]
    pub rename: Vec<String>,

    /// Keep only these binary names (after --rename), e.g. `--only kubelet,kube-apiserver`:
    /// every process with a bundled name is checked, so leave out what the node does not
    /// run from this release. A name given here that no input has is an error.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Refuse files and tarball members larger than this many bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub max_size: u64,
}

// The fleet's flags (`nodeguard fleet status|query`, agent/src/fleet/): apart from
// the agent's own, but here, so agent/src/fleet/ imports the flags one way.

// Parsed once per process: the size of `query`'s flags costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every Node next to its agent's heartbeat Lease: covered, stale (not renewed for 3
    /// intervals), missing (no agent), orphaned Leases, version skew, open findings per
    /// severity. Uses your kubeconfig: list nodes, list leases in the agents' namespace.
    Status(FleetStatusArgs),
    /// Ask every node's agent at once, with a short-lived token minted for the agents only,
    /// dialling each Node's own address and checking each agent's certificate before
    /// sending anything. Exit status 4 when a node did not answer.
    Query(FleetQueryArgs),
}

#[derive(Debug, Args)]
pub struct FleetStatusArgs {
    /// The agents' namespace (where their Leases are).
    #[arg(long, short = 'n', default_value = nodeguard_model::fleet::DEFAULT_NAMESPACE, env = "NODEGUARD_NAMESPACE")]
    pub namespace: String,

    /// Kubeconfig to use [default: KUBECONFIG, ~/.kube/config, else in-cluster].
    #[arg(long, env = "NODEGUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: OutputFormat,

    /// Exit with status 3 when a node is not covered (stale or missing).
    #[arg(long, value_enum)]
    pub fail_on: Option<FleetFailOn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FleetFailOn {
    /// A node whose agent's Lease is stale or absent.
    Uncovered,
}

#[derive(Debug, Args)]
pub struct FleetQueryArgs {
    /// Namespace of the agents' Leases and of the responder ServiceAccount.
    #[arg(
        long,
        short = 'n',
        default_value = nodeguard_model::fleet::DEFAULT_NAMESPACE,
        env = "NODEGUARD_NAMESPACE",
        global = true
    )]
    pub namespace: String,

    /// Kubeconfig to use [default: KUBECONFIG, ~/.kube/config, else in-cluster].
    #[arg(long, env = "NODEGUARD_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The ServiceAccount a token is minted for (TokenRequest, audience `nodeguard`, 10
    /// minutes); your RBAC must allow `create` on its `serviceaccounts/token`, and it must
    /// hold the agents' reader role.
    #[arg(long, default_value = "nodeguard-responder", global = true)]
    pub service_account: String,

    /// The agents' API port when a Lease names none.
    #[arg(long, default_value_t = nodeguard_api::DEFAULT_PORT, global = true)]
    pub port: u16,

    /// PEM CA certificates the agents' certificates must chain to (for each node's
    /// address), instead of the fingerprint each agent publishes in its Lease.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,

    /// Agents asked at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024), global = true)]
    pub concurrency: u16,

    /// Longest wait for one agent (connect, TLS, answer).
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: std::time::Duration,

    /// Longest wait for one agent's TCP connection and TLS handshake (within --timeout): a
    /// node that is down or an agent that is stuck is given up on sooner than one that is
    /// slow to answer, and holds its place among --concurrency for less.
    #[arg(long, default_value = "2s", value_parser = parse_duration, global = true)]
    pub connect_timeout: std::time::Duration,

    /// Longest wait for the whole fleet; agents not answered by then are listed as such.
    #[arg(long, default_value = "60s", value_parser = parse_duration, global = true)]
    pub deadline: std::time::Duration,

    /// Largest answer read from one agent, in MiB.
    #[arg(long, default_value_t = 64, global = true)]
    pub max_answer_mib: usize,

    /// Output format: a table, or JSON lines (one object per row, per unanswered node and a
    /// final summary), written as answers arrive.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub what: FleetWhat,
}

/// What to ask every agent: the filters of `nodeguard query`.
#[derive(Debug, Subcommand)]
pub enum FleetWhat {
    /// Open findings on every node.
    Findings(FindingsFilters),
    /// Processes on every node; `--sha256 DIGEST` answers "where does this binary run?".
    Processes(ProcessesFilters),
    /// Containers on every node.
    Containers(ContainersFilters),
}

// The filters of `query findings|processes|containers`, the same for `fleet query` (one
// definition, so the two cannot drift). No doc comments on these structs: each subcommand's
// help is its variant's.

#[derive(Debug, Clone, Default, Args)]
pub struct FindingsFilters {
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub pod: Option<String>,
    /// Container id (or 12+ hex prefix), container name, or `host`.
    #[arg(long)]
    pub container: Option<String>,
    /// Finding kind, e.g. binary_drift.
    #[arg(long)]
    pub kind: Option<String>,
    /// Minimum severity.
    #[arg(long, value_enum)]
    pub severity: Option<SeverityArg>,
    /// Only findings first seen at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ProcessesFilters {
    /// Container id (or 12+ hex prefix), container name, or `host`.
    #[arg(long)]
    pub container: Option<String>,
    #[arg(long)]
    pub sha256: Option<String>,
    #[arg(long)]
    pub pid: Option<i32>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ContainersFilters {
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub pod: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; errors name the file, line, column and field.
    Check {
        /// The policy file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashChoice {
    Sha256,
    Sha512,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

/// Where to look and how to read: shared by every mode that scans.
#[derive(Debug, Args)]
pub struct ScanSettings {
    /// The proc filesystem to scan (the host's, with hostPID, in the DaemonSet).
    #[arg(long, default_value = "/proc", env = "NODEGUARD_PROC_ROOT")]
    pub proc_root: PathBuf,

    /// The cgroup filesystem holding the containers' limits.
    #[arg(long, default_value = "/sys/fs/cgroup", env = "NODEGUARD_CGROUP_ROOT")]
    pub cgroup_root: PathBuf,

    /// Where host paths (overlay layer directories) are reachable [default: PROC_ROOT/1/root].
    #[arg(long, env = "NODEGUARD_HOST_ROOT")]
    pub host_root: Option<PathBuf>,

    /// Policy file (YAML); built-in defaults without it.
    #[arg(long, short = 'c', env = "NODEGUARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Which digests of executables to compute.
    #[arg(
        long = "hash",
        value_enum,
        default_value = "sha256",
        env = "NODEGUARD_HASH"
    )]
    pub hash: HashChoice,

    /// Files larger than this many bytes are not hashed.
    #[arg(long, default_value_t = 512 * 1024 * 1024, env = "NODEGUARD_MAX_HASH_SIZE")]
    pub max_hash_size: u64,

    /// Threads for hashing and filesystem walks [default: cores, at most 4].
    #[arg(long, env = "NODEGUARD_THREADS")]
    pub threads: Option<usize>,

    /// Most files walked per container root before the walk stops and says so.
    #[arg(long, default_value_t = 1_000_000, env = "NODEGUARD_WALK_MAX_FILES")]
    pub walk_max_files: u64,

    /// Longest a walk of one container root may take, in seconds.
    #[arg(long, default_value_t = 60, env = "NODEGUARD_WALK_MAX_SECONDS")]
    pub walk_max_seconds: u64,

    /// Keep each writable layer's directories between scans and list again only those whose
    /// times changed (`on`); `off` walks every writable layer in full on every scan
    /// (docs/writable-layers.md).
    #[arg(
        long,
        value_enum,
        default_value = "on",
        env = "NODEGUARD_FS_INCREMENTAL"
    )]
    pub fs_incremental: SwitchArg,

    /// Entries per writable layer a filesystem scan lists again although their directories
    /// did not change (what finds a `chmod u+s` on an existing file); a bigger layer is
    /// re-checked over several filesystem scans.
    #[arg(long, default_value_t = 250_000, env = "NODEGUARD_FS_RECHECK_FILES")]
    pub fs_recheck_files: u64,

    /// The node's name [default: NODE_NAME, else the hostname].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Keep secrets in command lines. By default values of secret-looking arguments
    /// (`--password=…`, `--token …`, `API_KEY=…`) and the userinfo of URLs are replaced by
    /// `***` when collected, so they never reach the report, the API, Events or logs.
    #[arg(long, env = "NODEGUARD_SHOW_SECRETS")]
    pub show_secrets: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub settings: ScanSettings,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: OutputFormat,

    /// Skip the walk of container filesystems (setuid/setgid/file capabilities).
    #[arg(long)]
    pub no_fs: bool,

    /// Exit with status 3 when a finding at or above this severity exists.
    #[arg(long, value_enum)]
    pub fail_on: Option<SeverityArg>,

    /// Also print these inventory tables after the findings (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub show: Vec<InventoryArg>,

    /// Print every inventory table (containers, processes, files): `--show all`.
    #[arg(long)]
    pub inventory: bool,

    /// List low findings too (by default the table counts them and lists medium and up;
    /// `-o json` and `--fail-on` always take every finding).
    #[arg(long)]
    pub show_low: bool,

    #[command(flatten)]
    pub images: crate::images::ImageArgs,

    /// The agent's state directory (`nodeguard run --state-dir`): the image layer indexes
    /// kept there are reused (no layer read again) and new ones added. Without it the layers
    /// are read and indexed in memory for this scan only.
    #[arg(long, env = "NODEGUARD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// How long the scan waits for image layers to be indexed before it judges; images not
    /// indexed by then leave their containers `unverifiable` (indexing).
    #[arg(long, default_value = "2m", value_parser = parse_duration, env = "NODEGUARD_IMAGE_WAIT")]
    pub image_wait: std::time::Duration,
}

/// An inventory table of `scan` (the findings and their summary are always printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryArg {
    Containers,
    Processes,
    Files,
    All,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// Files to hash.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// Which digests.
    #[arg(long = "hash", value_enum, default_value = "sha256")]
    pub hash: HashChoice,

    /// Refuse files larger than this many bytes.
    #[arg(long, default_value_t = u64::MAX)]
    pub max_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubeArg {
    /// In-cluster config or KUBECONFIG when present, else no cluster.
    Auto,
    /// Require a cluster; fail at start-up without one.
    On,
    /// No cluster at all.
    Off,
}

/// Where a `chmod` on an existing file of a writable layer is learnt of (`--fs-events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsEventsArg {
    /// The filesystem scan's re-check only.
    Off,
    /// fanotify marks on the layers' filesystems.
    Fanotify,
}

/// A feature turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SwitchArg {
    On,
    Off,
}

/// Where `nodeguard run` learns of execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecEventsArg {
    /// The kernel's process-events connector when it answers (initial network, pid and user
    /// namespaces: hostNetwork and hostPID), else polling, said once in the log and in
    /// `nodeguard_exec_events_source`.
    Auto,
    /// Scans on the interval only.
    Off,
}

/// Whether exec'd processes are held as their event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecHoldArg {
    On,
    Off,
    /// As `on`, with the event thread under `SCHED_FIFO` (needs `CAP_SYS_NICE`, dropped
    /// once used): held in time also when the node's CPUs are busy.
    Realtime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// On with a cluster when the API listens beyond loopback.
    Auto,
    /// Always (needs a cluster).
    On,
    /// Never.
    Off,
}

/// Whether the API port speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    /// https when listening beyond loopback or given --tls-cert-file; plain HTTP on loopback.
    Auto,
    /// Always https (a self-signed certificate without --tls-cert-file).
    On,
    /// Plain HTTP: tokens and findings cross the network in clear (warned beyond loopback).
    Off,
}

/// The oldest TLS version the API port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMinVersionArg {
    #[value(name = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    Tls13,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub settings: ScanSettings,

    /// Address of the metrics and query API server [default: 0.0.0.0:9717 with a cluster
    /// (authenticated), 127.0.0.1:9717 without one].
    #[arg(long, env = "NODEGUARD_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    /// A listener of its own for /healthz and /readyz (e.g. 0.0.0.0:9718), so no load on the
    /// API port can starve the kubelet's probes. They are served on the API port too.
    #[arg(long, env = "NODEGUARD_PROBE_LISTEN")]
    pub probe_listen: Option<std::net::SocketAddr>,

    /// Bearer-token authentication of /v1/* and /metrics (TokenReview + SubjectAccessReview):
    /// `auto` is on with a cluster when listening beyond loopback.
    #[arg(long, value_enum, default_value = "auto", env = "NODEGUARD_AUTH")]
    pub auth: AuthArg,

    /// Serve /metrics without a token (for scrapers that cannot send one); /v1/* still
    /// needs one.
    #[arg(long, env = "NODEGUARD_UNAUTHENTICATED_METRICS")]
    pub unauthenticated_metrics: bool,

    /// Serve /v1/* without authentication on a non-loopback address (no cluster, or
    /// `--auth off`). Anyone who can connect reads every process and container of the node:
    /// the agent logs a loud warning.
    #[arg(long, env = "NODEGUARD_INSECURE_UNAUTHENTICATED")]
    pub insecure_unauthenticated: bool,

    /// TLS on the API port (/metrics and /v1/*; the probe listener stays plain HTTP for the
    /// kubelet): `auto` serves https when listening beyond loopback or given
    /// --tls-cert-file, with a self-signed certificate (its SHA-256 fingerprint logged) when
    /// no file is given, and plain HTTP on loopback.
    #[arg(long, value_enum, default_value = "auto", env = "NODEGUARD_TLS")]
    pub tls: TlsArg,

    /// PEM certificate chain (leaf first) to serve, e.g. a cert-manager Secret's tls.crt.
    /// Re-read every --tls-reload-interval and on SIGHUP; a broken new pair is refused (and
    /// logged) and the old one stays.
    #[arg(long, env = "NODEGUARD_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "NODEGUARD_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Oldest TLS version accepted (only AEAD cipher suites with ECDHE are ever offered).
    #[arg(
        long,
        value_enum,
        default_value = "1.2",
        env = "NODEGUARD_TLS_MIN_VERSION"
    )]
    pub tls_min_version: TlsMinVersionArg,

    /// How often the certificate files are read again.
    #[arg(long, default_value = "1m", value_parser = parse_duration, env = "NODEGUARD_TLS_RELOAD_INTERVAL")]
    pub tls_reload_interval: std::time::Duration,

    /// Write the certificate the API serves (PEM, no key) to this file whenever it changes,
    /// so `nodeguard query --ca-file FILE` on the node trusts exactly it (the DaemonSet:
    /// /run/nodeguard/tls/serving.crt, an emptyDir).
    #[arg(long, env = "NODEGUARD_TLS_SERVED_CERT_FILE")]
    pub tls_served_cert_file: Option<PathBuf>,

    /// Time between process scans (e.g. 30s, 1m), with ±10% jitter.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "NODEGUARD_INTERVAL")]
    pub interval: std::time::Duration,

    /// Time between filesystem scans, with ±10% jitter.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "NODEGUARD_FS_INTERVAL")]
    pub fs_interval: std::time::Duration,

    /// Kubernetes integration: pod metadata and Events.
    #[arg(long, value_enum, default_value = "auto", env = "NODEGUARD_KUBE")]
    pub kube: KubeArg,

    /// Directory that keeps state across restarts (the set of findings already announced as
    /// Events); a hostPath in the DaemonSet.
    #[arg(long, env = "NODEGUARD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Do not publish Kubernetes Events (pod metadata is still watched).
    #[arg(long, env = "NODEGUARD_NO_EVENTS")]
    pub no_events: bool,

    /// Findings below this severity get no Event: they stay in PolicyReports, metrics and
    /// the query API. Events are for what someone should act on.
    #[arg(
        long,
        value_enum,
        default_value = "medium",
        env = "NODEGUARD_EVENT_MIN_SEVERITY"
    )]
    pub event_min_severity: SeverityArg,

    /// Exec-time detection: read and evaluate each process as it execs (`auto`), or only
    /// on the scan interval (`off`).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "NODEGUARD_EXEC_EVENTS"
    )]
    pub exec_events: ExecEventsArg,

    /// Learn of a `chmod`/xattr change on an existing file of a writable layer from fanotify
    /// (`fanotify`: seen by the next process scan; needs CAP_SYS_ADMIN at start, dropped once
    /// the filesystems are marked) or from the filesystem scan's re-check only (`off`).
    /// docs/writable-layers.md, docs/privileges.md.
    #[arg(long, value_enum, default_value = "off", env = "NODEGUARD_FS_EVENTS")]
    pub fs_events: FsEventsArg,

    /// Paths whose filesystems `--fs-events fanotify` marks at start (comma-separated)
    /// [default: HOST_ROOT/var/lib/containerd, HOST_ROOT/var/lib/containers/storage and
    /// HOST_ROOT/var/lib/docker, those that exist]. A writable layer on another filesystem is
    /// counted in `nodeguard_fs_events_unmarked_layers`.
    #[arg(long, value_delimiter = ',', env = "NODEGUARD_FS_EVENTS_PATHS")]
    pub fs_events_paths: Vec<PathBuf>,

    /// Distinct directories `--fs-events fanotify` keeps between two scans (about 40 bytes
    /// each); more count as lost events and start a re-check of every writable layer at once.
    #[arg(long, default_value_t = 16_384, env = "NODEGUARD_FS_EVENTS_MAX_DIRS")]
    pub fs_events_max_dirs: usize,

    /// Take hold of each exec'd process as its event arrives — its /proc directory, its
    /// executable and the small files read later — so that one living a millisecond is
    /// still read and hashed (`on`), or read it by pid with its batch (`off`, the old way;
    /// for comparison). `realtime`: as `on`, with the event thread scheduled `SCHED_FIFO`
    /// so it runs as an exec arrives even on a busy node; needs `CAP_SYS_NICE` (add
    /// `SYS_NICE` to the DaemonSet), dropped once used; without it, as `on`.
    #[arg(long, value_enum, default_value = "on", env = "NODEGUARD_EXEC_HOLD")]
    pub exec_hold: ExecHoldArg,

    /// How long a process read at exec stays reported after it exits (its findings stay
    /// open at least this long, and until the next scan after that).
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "NODEGUARD_EXEC_RETENTION")]
    pub exec_retention: std::time::Duration,

    /// Receive buffer of the exec event socket, in bytes (the kernel doubles it and drops
    /// events when it is full: counted, and a full scan follows). The default rides out
    /// storms of thousands of execs a second; a smaller one costs less kernel memory.
    #[arg(
        long,
        default_value_t = nodeguard_procevents::RECV_BUFFER_DEFAULT,
        value_parser = clap::value_parser!(u32).range(4096..=(256 << 20)),
        env = "NODEGUARD_EXEC_BUFFER"
    )]
    pub exec_buffer: u32,

    /// Keep open findings in wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace and
    /// node) and a ClusterPolicyReport (host findings), as Kyverno and Trivy Operator do;
    /// `--policy-reports=false` turns them off. Needs the CRDs (manifests/crds/); without
    /// them the agent says so once and keeps going.
    #[arg(
        long,
        env = "NODEGUARD_POLICY_REPORTS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub policy_reports: bool,

    /// Keep a heartbeat Lease `nodeguard-<node>` in --lease-namespace, renewed every
    /// --interval, for `nodeguard fleet status` (docs/fleet.md); needs the Role of
    /// manifests/role-lease.yaml. `--lease=false` turns it off.
    #[arg(
        long,
        env = "NODEGUARD_LEASE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub lease: bool,

    /// The agent's own namespace, where its Lease lives [default: POD_NAMESPACE, else the
    /// service account's or the kubeconfig context's namespace].
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// The Lease's holderIdentity [default: POD_NAME, else the hostname].
    #[arg(long, env = "POD_NAME")]
    pub lease_holder: Option<String>,
    #[command(flatten)]
    pub images: crate::images::ImageArgs,
}

/// A flag value as the command line spells it (`sha256`, `auto`), for logs.
pub fn value_name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// A duration as the flags take it: `30s`, `10m`, `1h`, `250ms`.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Parses `30s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 1h or 250ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ))
        }
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("{text:?} must be more than zero"));
    }
    // A longer interval is a mistake, and timers add it to `Instant::now()`, which panics
    // on overflow: refuse it here with a message instead.
    if seconds > MAX_DURATION_SECS {
        return Err(format!(
            "{text:?} is longer than the longest allowed duration, 7 days"
        ));
    }
    // Timers refuse a zero period (tokio's interval panics on it).
    if seconds < 0.001 {
        return Err(format!("{text:?} is shorter than 1ms"));
    }
    std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|e| format!("{text:?} is not a usable duration: {e}"))
}

/// The longest duration any flag accepts (7 days).
const MAX_DURATION_SECS: f64 = 7.0 * 24.0 * 3600.0;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        for huge in ["99999999999999999999h", "1e300s", "169h", "604801"] {
            assert!(parse_duration(huge).is_err(), "{huge}");
        }
        assert_eq!(parse_duration("168h"), Ok(Duration::from_secs(604_800)));
        for odd in [
            "",
            "h",
            ".",
            "..5s",
            "-1s",
            "NaNs",
            "infs",
            "1..2m",
            "0.0000000001ms",
        ] {
            assert!(parse_duration(odd).is_err(), "{odd}");
        }
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The agent's address: https://HOST:PORT, or http:// for an agent on loopback without
    /// TLS (the default). The DaemonSet sets NODEGUARD_URL=https://127.0.0.1:9717 in the
    /// agent's container, so `kubectl exec ds/nodeguard -- /nodeguard query` asks its own
    /// agent over TLS. Accepted before or after the subcommand.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9717",
        env = "NODEGUARD_URL",
        global = true
    )]
    pub url: String,

    /// Bearer token to send [default: --token-file, else the in-cluster service-account
    /// token, else the current kubeconfig user's token].
    #[arg(
        long,
        env = "NODEGUARD_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file",
        global = true
    )]
    pub token: Option<String>,

    /// File holding the bearer token to send.
    #[arg(long, env = "NODEGUARD_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,

    /// PEM certificates an https agent's certificate must chain to: the CA that signed it,
    /// or the agent's own certificate (the DaemonSet's agent writes it to
    /// /run/nodeguard/tls/serving.crt and sets NODEGUARD_CA_FILE to it).
    #[arg(long, env = "NODEGUARD_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Do not check the agent's certificate (warned): anyone on the path can pose as the
    /// agent and read the token sent. Overrides --ca-file (and NODEGUARD_CA_FILE, which the
    /// DaemonSet sets).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub what: QueryWhat,
}

#[derive(Debug, Subcommand)]
pub enum QueryWhat {
    /// Open findings, most severe first.
    Findings(FindingsFilters),
    /// Containers with their limits and pods.
    Containers(ContainersFilters),
    /// Processes; `--sha256 DIGEST` answers "where does this binary run?".
    Processes(ProcessesFilters),
    /// What exec-time reads saw (short-lived processes included, after they and their pods
    /// are gone), oldest first.
    Execs {
        /// How far back: `10m`, `1h`, or an RFC 3339 time [default: the whole history].
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        pod: Option<String>,
        /// Container id (or 12+ hex prefix), container name, or `host`.
        #[arg(long)]
        container: Option<String>,
    },
    /// The whole last report.
    Report,
}
