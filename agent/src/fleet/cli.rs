//! Flags of `nodeguard fleet …` (kept apart from `cli.rs`: the fleet commands share
//! nothing with the agent's own flags).

use crate::cli::{parse_duration, OutputFormat, SeverityArg};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Ask every node's agent at once, with a short-lived token minted for the agents only,
    /// dialling each Node's own address and checking each agent's certificate before
    /// sending anything.
    Query(FleetQueryArgs),
}

#[derive(Debug, Args)]
pub struct FleetQueryArgs {
    /// Namespace of the agents' Leases and of the responder ServiceAccount.
    #[arg(
        long,
        short = 'n',
        default_value = "nodeguard",
        env = "NODEGUARD_NAMESPACE",
        global = true
    )]
    pub namespace: String,

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
    pub timeout: Duration,

    /// Longest wait for the whole fleet; agents not answered by then are listed as such.
    #[arg(long, default_value = "60s", value_parser = parse_duration, global = true)]
    pub deadline: Duration,

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
    Findings {
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        pod: Option<String>,
        /// Container id (or 12+ hex prefix), container name, or `host`.
        #[arg(long)]
        container: Option<String>,
        /// Finding kind, e.g. binary_drift.
        #[arg(long)]
        kind: Option<String>,
        /// Minimum severity.
        #[arg(long, value_enum)]
        severity: Option<SeverityArg>,
        /// Only findings first seen at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Processes on every node; `--sha256 DIGEST` answers "where does this binary run?".
    Processes {
        /// Container id (or 12+ hex prefix), container name, or `host`.
        #[arg(long)]
        container: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        pid: Option<i32>,
    },
    /// Containers on every node.
    Containers {
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        pod: Option<String>,
    },
}
