//! `nodeguard fleet …`: questions about every node, asked with the caller's kubeconfig.
//! The deciding is in `nodeguard_kube::fleet`; this prints it.

mod status;

use crate::cli::FleetCommand;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(command: FleetCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        FleetCommand::Status(args) => runtime.block_on(status::run(args)),
    }
}
