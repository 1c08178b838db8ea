//! The command-line grammar, modeled on `tsm`: a thin clap layer that maps each command onto a
//! control-plane call in [`crate::commands`].

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::vizql_extsvc::DEFAULT_CONNECT_TIMEOUT_MS;
use crate::commands::{self, CommandError, Context};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::state::keystore::Secret;
use crate::state::security::ConnectionType;

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
    /// Serve your own CA-issued certificate on the client listener.
    ExternalSsl {
        /// The action.
        #[command(subcommand)]
        command: ExternalSslCommand,
    },
    /// The custom CA certificate pgssl trusts for its own outgoing TLS.
    CustomCert {
        /// The action.
        #[command(subcommand)]
        command: CustomCertCommand,
    },
    /// The external analytics service (Rserve or TabPy) connection.
    VizqlExtsvcSsl {
        /// The action.
        #[command(subcommand)]
        command: VizqlExtsvcCommand,
    },
}

/// `security external-ssl …`.
#[derive(Debug, Subcommand)]
pub enum ExternalSslCommand {
    /// Validate and stage a certificate, its key and chain for the client listener.
    Enable {
        /// The certificate (PEM); may be followed by its chain.
        #[arg(long, value_name = "FILE")]
        cert_file: PathBuf,
        /// The private key (PEM: PKCS#8, PKCS#1 or SEC1; encrypted PKCS#8 with --passphrase).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// Intermediate certificates (PEM), each followed by its issuer.
        #[arg(long, value_name = "FILE")]
        chain_file: Option<PathBuf>,
        /// Passphrase of an encrypted key, or '-' to read it from standard input.
        #[arg(long, value_name = "PASSPHRASE|-")]
        passphrase: Option<String>,
        /// Protocols, e.g. "all, -SSLv2, -SSLv3" or "all -TLSv1.2" [default: all, -SSLv2, -SSLv3].
        #[arg(long, value_name = "LIST")]
        protocols: Option<String>,
    },
    /// Stage serving the generated repository certificate again.
    Disable,
    /// Show the certificate's details and protocols.
    List,
}

/// `security custom-cert …`.
#[derive(Debug, Subcommand)]
pub enum CustomCertCommand {
    /// Stage a CA certificate (PEM or DER); fails if one is already added.
    Add {
        /// The CA certificate.
        #[arg(long, value_name = "FILE")]
        cert_file: PathBuf,
    },
    /// Stage removing the custom CA certificate.
    Delete,
    /// Show the custom CA certificate.
    List,
}

/// `security vizql-extsvc-ssl …`.
#[derive(Debug, Subcommand)]
pub enum VizqlExtsvcCommand {
    /// Stage the external service connection (TLS types are checked with a live handshake).
    Enable {
        /// rserve, rserve-secure, tabpy or tabpy-secure.
        #[arg(long, value_name = "TYPE")]
        connection_type: ConnectionType,
        /// Host name or IP address of the service.
        #[arg(long, value_name = "HOST")]
        extsvc_host: String,
        /// Port [default: 6311 for Rserve, 9004 for TabPy].
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        extsvc_port: Option<u16>,
        /// The service's certificate or its CA (PEM or DER), for the -secure types.
        #[arg(long, value_name = "FILE")]
        cert_file: Option<PathBuf>,
        /// User name for the service.
        #[arg(long, value_name = "NAME")]
        extsvc_username: Option<String>,
        /// Password for the service, or '-' to read it from standard input.
        #[arg(long, value_name = "PW|-")]
        extsvc_password: Option<String>,
        /// Connect timeout in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = DEFAULT_CONNECT_TIMEOUT_MS,
              value_parser = clap::value_parser!(u64).range(1..=600_000))]
        connect_timeout_ms: u64,
        /// Whether scripts are disabled.
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, default_value_t = true)]
        script_disabled: bool,
        /// Stage a -secure configuration without the live TLS check.
        #[arg(long)]
        skip_check: bool,
    },
    /// Stage removing the connection.
    Disable,
    /// Show the connection (never the password).
    List,
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
            out: commands::Output::print(),
        };
        use commands::{
            custom_cert, data_access, external_ssl, internal_credentials, pending_changes,
            regenerate_tokens, repository_ssl, serve, vizql_extsvc,
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
            Command::Security {
                command: SecurityCommand::ExternalSsl { command },
            } => match command {
                ExternalSslCommand::Enable {
                    cert_file,
                    key_file,
                    chain_file,
                    passphrase,
                    protocols,
                } => external_ssl::enable(
                    &ctx,
                    &external_ssl::EnableArgs {
                        cert_file,
                        key_file,
                        chain_file,
                        passphrase: passphrase
                            .map(|p| read_secret(&p, "--passphrase"))
                            .transpose()?,
                        protocols,
                    },
                ),
                ExternalSslCommand::Disable => external_ssl::disable(&ctx),
                ExternalSslCommand::List => external_ssl::list(&ctx),
            },
            Command::Security {
                command: SecurityCommand::CustomCert { command },
            } => match command {
                CustomCertCommand::Add { cert_file } => custom_cert::add(&ctx, &cert_file),
                CustomCertCommand::Delete => custom_cert::delete(&ctx),
                CustomCertCommand::List => custom_cert::list(&ctx),
            },
            Command::Security {
                command: SecurityCommand::VizqlExtsvcSsl { command },
            } => match command {
                VizqlExtsvcCommand::Enable {
                    connection_type,
                    extsvc_host,
                    extsvc_port,
                    cert_file,
                    extsvc_username,
                    extsvc_password,
                    connect_timeout_ms,
                    script_disabled,
                    skip_check,
                } => vizql_extsvc::enable(
                    &ctx,
                    &vizql_extsvc::EnableArgs {
                        connection_type,
                        host: extsvc_host,
                        port: extsvc_port,
                        cert_file,
                        username: extsvc_username,
                        password: extsvc_password
                            .map(|p| read_secret(&p, "--extsvc-password"))
                            .transpose()?,
                        connect_timeout_ms,
                        script_disabled,
                        skip_check,
                    },
                ),
                VizqlExtsvcCommand::Disable => vizql_extsvc::disable(&ctx),
                VizqlExtsvcCommand::List => vizql_extsvc::list(&ctx),
            },
            Command::DataAccess {
                command: DataAccessCommand::RepositoryAccess { command },
            } => match command {
                RepositoryAccessCommand::Enable {
                    repository_username,
                    repository_password,
                } => data_access::enable(
                    &ctx,
                    &repository_username,
                    &read_secret(&repository_password, "--repository-password")?,
                ),
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

/// Reads a secret given as a flag value, or from the first line of standard input when the value is
/// `-` (keeping it out of the process list and shell history).
fn read_secret(value: &str, flag: &str) -> Result<Secret, CommandError> {
    let secret = if value == "-" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            CommandError::Refused(format!("cannot read {flag} from standard input: {e}"))
        })?;
        Secret::new(line.trim_end_matches(['\n', '\r']).to_string())
    } else {
        eprintln!(
            "note: a secret given on the command line is visible in the process list and shell history; prefer '{flag} -' and standard input"
        );
        Secret::new(value.to_string())
    };
    Ok(secret)
}
