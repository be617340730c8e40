//! `nodeguard fleet status|query`: questions about every node at once, asked with the
//! caller's kubeconfig (see docs/fleet.md). What the cluster says is read and decided in
//! `nodeguard_kube::fleet`; `status` prints the coverage, `query` asks every agent.

mod items;
pub mod query;
mod rows;
mod status;

use crate::cli::FleetCommand;
use anyhow::{Context, Result};
use std::process::ExitCode;

/// `fleet status --fail-on uncovered`: some node is stale or has no agent (the same status
/// as `scan --fail-on`, "something needs looking at").
pub const EXIT_UNCOVERED: u8 = crate::EXIT_FINDINGS;
/// `fleet query`: some node did not answer (or could not be asked); the rows printed are
/// not the whole fleet.
pub const EXIT_INCOMPLETE: u8 = 4;

pub fn run(command: FleetCommand) -> Result<ExitCode> {
    // Two workers: a query's TLS handshakes and answers are parsed while others wait.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match command {
        FleetCommand::Status(args) => runtime.block_on(status::run(args)),
        FleetCommand::Query(args) => runtime.block_on(query::run(args)),
    }
}
