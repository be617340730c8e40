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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan this node once and print the report.
    Scan(ScanArgs),
    /// Print the digest of files, read exactly as the scan reads executables.
    Hash(HashArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
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

    /// The node's name [default: NODE_NAME, else the hostname].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
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
