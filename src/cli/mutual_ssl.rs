//! `authentication mutual-ssl …` and `security internal-ca …`.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use super::Runner;
use crate::control::operations::model::Report;
use crate::control::operations::{Output, mutual_ssl};

/// `authentication mutual-ssl …`.
#[derive(Debug, Subcommand)]
pub enum MutualSslCommand {
    /// Check and stage the CA clients' certificates must chain to, the user name mapping and a CRL.
    Configure(mutual_ssl::Configure),
    /// Stage asking clients for certificates.
    Enable(mutual_ssl::Enable),
    /// Stage no longer asking for certificates (the configuration is kept).
    Disable(mutual_ssl::Disable),
    /// Show the CA, mapping, CRL and fallback (never file locations).
    List(mutual_ssl::List),
}

/// `security internal-ca …`.
#[derive(Debug, Subcommand)]
pub enum InternalCaCommand {
    /// Write pgssl's internal CA certificate (PEM) for the repository's ssl_ca_file.
    GetCertificateFile {
        /// File to write (overwritten).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
}

pub(super) async fn mutual_ssl(runner: &Runner, command: MutualSslCommand) -> Result<(), CliError> {
    match command {
        MutualSslCommand::Configure(r) => runner.show(r).await,
        MutualSslCommand::Enable(r) => runner.show(r).await,
        MutualSslCommand::Disable(r) => runner.show(r).await,
        MutualSslCommand::List(r) => runner.show(r).await,
    }
}

pub(super) async fn internal_ca(
    runner: &Runner,
    command: InternalCaCommand,
) -> Result<(), CliError> {
    let InternalCaCommand::GetCertificateFile { file } = command;
    let ca = runner.run(mutual_ssl::InternalCaCertificate {}).await?;
    let said = format!(
        "Wrote pgssl's internal CA certificate to {}",
        file.display()
    );
    super::report_file::write(&file, ca.pem.as_bytes(), crate::atomic::PUBLIC_MODE, said)?;
    ca.render(&Output::print());
    Ok(())
}
