//! Where a command's operation runs: on the local data directory, or on an admin server (`-s`).

use super::CliError;
use super::remote::Remote;
use crate::control::operations::model::{Operation, Report};
use crate::control::operations::{Context, Output};

/// Where a command's operation runs.
pub(super) enum Runner {
    /// On the local data directory.
    Local(Box<Context>),
    /// On an admin server.
    Remote(Remote),
}

impl Runner {
    /// Runs `request` and prints its report.
    pub(super) async fn show<T: Operation>(&self, request: T) -> Result<(), CliError> {
        self.run(request).await?.render(&Output::print());
        Ok(())
    }

    /// Runs `request` and returns its report.
    pub(super) async fn run<T: Operation>(&self, request: T) -> Result<T::Report, CliError> {
        Ok(match self {
            Runner::Local(ctx) => crate::control::operations::model::execute(request, ctx).await?,
            Runner::Remote(remote) => remote.call(&request).await?,
        })
    }

    /// The local context, for commands that run only on the data directory.
    pub(super) fn local(&self, what: &'static str) -> Result<&Context, CliError> {
        match self {
            Runner::Local(ctx) => Ok(ctx),
            Runner::Remote(_) => Err(CliError::LocalOnly(what)),
        }
    }
}
