//! `topology …` (README: Cluster).

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use super::Runner;
use crate::control::operations::model::Report;
use crate::control::operations::{Output, failover, repository_hosts, topology};

/// `topology …`.
#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Write a bootstrap file (0600) for a new node; on a node in no cluster yet, make the cluster.
    GetBootstrapFile {
        /// File to write (overwritten).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// What seals it.
        #[command(flatten)]
        request: topology::GetBootstrapFile,
    },
    /// Make this data directory a node of a bootstrap file's cluster.
    Join(topology::Join),
    /// Every node: address, state version served, certificate, last heartbeat.
    ListNodes(topology::ListNodes),
    /// Stop a node from following the cluster and drop it from the list.
    RemoveNode(topology::RemoveNode),
    /// The running server's repository hosts: role, timeline, lag, sessions and warm backends.
    ListRepositoryHosts(repository_hosts::ListRepositoryHosts),
    /// Make another repository host the primary, through Patroni (`repository.patroni`).
    FailoverRepository(failover::FailoverRepository),
}

pub(super) async fn topology(runner: &Runner, command: TopologyCommand) -> Result<(), CliError> {
    match command {
        TopologyCommand::GetBootstrapFile { file, request } => {
            runner.local("topology get-bootstrap-file")?;
            let made = runner.run(request).await?;
            let said = format!("Wrote the bootstrap file {} (0600).", file.display());
            super::report_file::write(
                &file,
                made.text.as_bytes(),
                crate::atomic::PRIVATE_MODE,
                said,
            )?;
            made.render(&Output::print());
            Ok(())
        }
        TopologyCommand::Join(r) => {
            runner.local("topology join")?;
            runner.show(r).await
        }
        // Every topology command runs on a node's own data directory: its membership and keystore
        // are what reach the repository.
        TopologyCommand::ListNodes(r) => {
            runner.local("topology list-nodes")?;
            runner.show(r).await
        }
        TopologyCommand::RemoveNode(r) => {
            runner.local("topology remove-node")?;
            runner.show(r).await
        }
        TopologyCommand::ListRepositoryHosts(r) => runner.show(r).await,
        TopologyCommand::FailoverRepository(r) => runner.show(r).await,
    }
}
