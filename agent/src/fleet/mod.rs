//! `nodeguard fleet …`: questions about every node at once, asked with the caller's
//! kubeconfig (see docs/fleet.md).

pub mod cli;
pub mod query;
mod rows;

use anyhow::Result;
use std::process::ExitCode;

pub fn run(args: cli::FleetArgs) -> Result<ExitCode> {
    match args.command {
        cli::FleetCommand::Query(args) => query::run(args),
    }
}
