//! The command-line grammar, modeled on `tsm`: a thin clap layer that maps each command onto a
//! control-plane call in [`crate::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{self, CommandError, Context};
use crate::config::{Config, DEFAULT_CONFIG_PATH};

/// pgssl: a TLS-terminating proxy for PostgreSQL with tsm-style repository SSL administration.
#[derive(Debug, Parser)]
#[command(name = "pgssl", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory holding state, certificates and the control socket.
    #[arg(
        long,
        global = true,
        env = "PGSSL_DATA_DIR",
        default_value = "data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Configuration file [default: config/pgssl.toml; defaults apply if that file is absent].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr: one human-readable line per event, or one JSON object per line.
    #[arg(long, global = true, env = "PGSSL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy in front of the repository.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8060 [default: server.listen].
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Repository address: host:port or unix:/socket/dir [default: server.upstream, else a managed
        /// repository].
        #[arg(long, value_name = "ADDR")]
        upstream: Option<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Security settings.
    Security {
        /// The security area.
        #[command(subcommand)]
        command: SecurityCommand,
    },
    /// Direct access to the managed repository.
    DataAccess {
        /// The area.
        #[command(subcommand)]
        command: DataAccessCommand,
    },
    /// Print the connection string (with password) of an internal service role.
    InternalCredentials {
        /// The internal role [default: the first of repository.internal_roles].
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Staged changes: list, apply or discard them.
    PendingChanges {
        /// The action.
        #[command(subcommand)]
        command: PendingChangesCommand,
    },
}

/// `security …`.
#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// New internal certificate, internal role passwords and master key, with no downtime.
    RegenerateInternalTokens {
        /// Give up after this many seconds (every step is resumable: run again to finish).
        #[arg(long, value_name = "SECONDS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
        request_timeout: u64,
    },
    /// SSL between clients and the repository.
    RepositorySsl {
        /// The action.
        #[command(subcommand)]
        command: RepositorySslCommand,
    },
}

/// `security repository-ssl …`.
#[derive(Debug, Subcommand)]
pub enum RepositorySslCommand {
    /// Stage SSL as required for all connections (or only internal ones with --internal-only).
    Enable {
        /// Require SSL of internal users only; direct-connection users may choose.
        #[arg(long)]
        internal_only: bool,
    },
    /// Stage SSL off for all connections.
    Disable,
    /// Show the applied and staged mode and the certificate.
    List,
    /// Write the public certificate (PEM) for clients' sslrootcert.
    GetCertificateFile {
        /// File to write (overwritten).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
}

/// `data-access …`.
#[derive(Debug, Subcommand)]
pub enum DataAccessCommand {
    /// Direct-connection users of the repository database.
    RepositoryAccess {
        /// The action.
        #[command(subcommand)]
        command: RepositoryAccessCommand,
    },
}

/// `data-access repository-access …`.
#[derive(Debug, Subcommand)]
pub enum RepositoryAccessCommand {
    /// Stage LOGIN with a new password (tableau: read/write, readonly: read only).
    Enable {
        /// The direct-connection user.
        #[arg(long, value_parser = ["tableau", "readonly"])]
        repository_username: String,
        /// The new password, or '-' to read it from standard input.
        #[arg(long, value_name = "PW|-")]
        repository_password: String,
    },
    /// Stage NOLOGIN; apply also ends the user's sessions.
    Disable {
        /// The direct-connection user.
        #[arg(long, value_parser = ["tableau", "readonly"])]
        repository_username: String,
    },
}

/// `pending-changes …`.
#[derive(Debug, Subcommand)]
pub enum PendingChangesCommand {
    /// Show the staged changes.
    List,
    /// Apply the staged changes; a running server takes them live.
    Apply {
        /// Do not ask for confirmation (pgssl never restarts anything, so it never asks).
        #[arg(long)]
        ignore_prompt: bool,
    },
    /// Drop the staged changes.
    Discard,
}

impl Cli {
    /// Loads the configuration and runs the command.
    pub fn run(self) -> Result<(), CommandError> {
        let config = match &self.config {
            Some(path) => Config::load(path, true)?,
            None => Config::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false)?,
        };
        let ctx = Context {
            data_dir: self.data_dir,
            config,
        };
        use commands::{
            data_access, internal_credentials, pending_changes, regenerate_tokens, repository_ssl,
            serve,
        };
        match self.command {
            Command::Serve {
                listen,
                upstream,
                metrics,
            } => serve::serve(
                &ctx,
                serve::ServeFlags {
                    listen: listen.as_deref(),
                    upstream: upstream.as_deref(),
                    metrics: metrics.as_deref(),
                },
            ),
            Command::Security {
                command: SecurityCommand::RegenerateInternalTokens { request_timeout },
            } => {
                regenerate_tokens::regenerate(&ctx, std::time::Duration::from_secs(request_timeout))
            }
            Command::Security {
                command: SecurityCommand::RepositorySsl { command },
            } => match command {
                RepositorySslCommand::Enable { internal_only } => {
                    repository_ssl::enable(&ctx, internal_only)
                }
                RepositorySslCommand::Disable => repository_ssl::disable(&ctx),
                RepositorySslCommand::List => repository_ssl::list(&ctx),
                RepositorySslCommand::GetCertificateFile { file } => {
                    repository_ssl::get_certificate_file(&ctx, &file)
                }
            },
            Command::DataAccess {
                command: DataAccessCommand::RepositoryAccess { command },
            } => match command {
                RepositoryAccessCommand::Enable {
                    repository_username,
                    repository_password,
                } => data_access::enable(&ctx, &repository_username, &repository_password),
                RepositoryAccessCommand::Disable {
                    repository_username,
                } => data_access::disable(&ctx, &repository_username),
            },
            Command::InternalCredentials { user } => {
                internal_credentials::internal_credentials(&ctx, user.as_deref())
            }
            Command::PendingChanges { command } => match command {
                PendingChangesCommand::List => pending_changes::list(&ctx),
                PendingChangesCommand::Apply { ignore_prompt } => {
                    pending_changes::apply(&ctx, ignore_prompt)
                }
                PendingChangesCommand::Discard => pending_changes::discard(&ctx),
            },
        }
    }

    /// Whether this command is the long-running server (which logs at info by default).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
}
