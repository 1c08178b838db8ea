//! The command-line grammar, modeled on `tsm`. Each command's flags are its operation's own request
//! type ([`crate::control::operations::model`]); this module only arranges them into subcommands
//! and runs the request locally or, with `-s`, on an admin server, then prints the typed report.

mod error;
mod generate;
mod mutual_ssl;
pub mod remote;
mod report_file;
mod runner;
mod topology;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use error::CliError;
use runner::Runner;

use crate::cli::remote::Remote;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::control::operations::model::{Report, secret_arg};
use crate::control::operations::{
    CommandError, Context, Output, admin_user, authentication, custom_cert, data_access,
    external_ssl, internal_credentials, pending_changes, regenerate_tokens, repository_ssl,
    vizql_extsvc,
};

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
    #[arg(long, global = true, env = "PGSSL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr: one human-readable line per event, or one JSON object per line.
    #[arg(long, global = true, env = "PGSSL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Run the command on a remote admin server (https://host:port; port 8850 if omitted) instead of
    /// the local data directory.
    #[arg(
        short = 's',
        long = "server",
        global = true,
        value_name = "URL",
        env = "PGSSL_SERVER"
    )]
    pub server: Option<String>,
    /// Administrator to sign in as (with -s; needed only when no cached session is active).
    #[arg(short = 'u', long = "username", global = true, value_name = "NAME")]
    pub username: Option<String>,
    /// The administrator's password, or '-' to read it from standard input.
    #[arg(short = 'p', long = "password", global = true, value_name = "PW|-", value_parser = secret_arg)]
    pub password: Option<crate::keystore::Secret>,
    /// Accept the admin server's self-signed certificate (compare its fingerprint with the one
    /// 'pgssl serve' logs).
    #[arg(long, global = true)]
    pub trust_admin_controller_cert: bool,
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
    Serve(crate::app::serve::ServeFlags),
    /// Administrators of the admin server (local only).
    AdminUser {
        /// The action.
        #[command(subcommand)]
        command: AdminUserCommand,
    },
    /// Security settings.
    Security {
        /// The security area.
        #[command(subcommand)]
        command: SecurityCommand,
    },
    /// Who authenticates clients (README: Authentication).
    Authentication {
        /// The area.
        #[command(subcommand)]
        command: AuthenticationCommand,
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
    /// Cluster nodes sharing one state through the repository (README: Cluster).
    Topology {
        /// The action.
        #[command(subcommand)]
        command: topology::TopologyCommand,
    },
    /// Warm repository sessions of the running server (README: Warm backends).
    Pool {
        /// The action.
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// What to look at first: nodes, repository hosts, sessions, warm backends, certificates,
    /// pending changes (README: Status).
    Status(crate::control::operations::status::Status),
    /// Client sessions of the running server: list them, or end some (README: Sessions).
    Sessions {
        /// The action.
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Write the man pages and shell completions (for packaging/build-deb.sh).
    #[command(hide = true)]
    GenerateDocs(generate::GenerateDocs),
}

/// `pool …`.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Busy and warm sessions per (role, database), hand-outs and backends opened.
    List(crate::control::operations::pool::List),
}

/// `sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Every client session: who, from where, TLS, authentication, backend, state, age, bytes.
    List(crate::control::operations::sessions::List),
    /// End client sessions (FATAL 57P01 to each client): --id ID, --user ROLE or --database DB.
    Terminate(crate::control::operations::sessions::Terminate),
}

/// `admin-user …`: the name and password are the global `--username` and `--password`.
#[derive(Debug, Subcommand)]
pub enum AdminUserCommand {
    /// Add an administrator: --username NAME --password PW|- (stored as an Argon2id hash).
    Add,
    /// Delete an administrator: --username NAME.
    Delete,
    /// List the administrators.
    List,
}

/// `security …`.
#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// New internal certificate, internal role passwords and master key, with no downtime.
    RegenerateInternalTokens(regenerate_tokens::Regenerate),
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
    /// pgssl's internal CA (the issuer of the certificates it presents to the repository).
    InternalCa {
        /// The action.
        #[command(subcommand)]
        command: mutual_ssl::InternalCaCommand,
    },
}

/// `security external-ssl …`.
#[derive(Debug, Subcommand)]
pub enum ExternalSslCommand {
    /// Validate and stage a certificate, its key and chain for the client listener.
    Enable(external_ssl::Enable),
    /// Stage serving the generated repository certificate again.
    Disable(external_ssl::Disable),
    /// Show the certificate's details and protocols.
    List(external_ssl::List),
}

/// `security custom-cert …`.
#[derive(Debug, Subcommand)]
pub enum CustomCertCommand {
    /// Stage a CA certificate (PEM or DER); fails if one is already added.
    Add(custom_cert::Add),
    /// Stage removing the custom CA certificate.
    Delete(custom_cert::Delete),
    /// Show the custom CA certificate.
    List(custom_cert::List),
}

/// `security vizql-extsvc-ssl …`.
#[derive(Debug, Subcommand)]
pub enum VizqlExtsvcCommand {
    /// Stage the external service connection (TLS types are checked with a live handshake).
    Enable(vizql_extsvc::Enable),
    /// Stage removing the connection.
    Disable(vizql_extsvc::Disable),
    /// Show the connection (never the password).
    List(vizql_extsvc::List),
}

/// `security repository-ssl …`.
#[derive(Debug, Subcommand)]
pub enum RepositorySslCommand {
    /// Stage SSL as required for all connections (or only internal ones with --internal-only).
    Enable(repository_ssl::Enable),
    /// Stage SSL off for all connections.
    Disable(repository_ssl::Disable),
    /// Show the applied and staged mode and the certificate.
    List(repository_ssl::List),
    /// Who a mode would refuse, of the clients seen logging in (pre-flight report).
    Report(crate::control::operations::preflight::WhoWouldBeRefused),
    /// Write the public certificate (PEM) for clients' sslrootcert.
    GetCertificateFile {
        /// File to write (overwritten).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
}

/// `authentication …`.
#[derive(Debug, Subcommand)]
pub enum AuthenticationCommand {
    /// The role pgssl reads verifiers as on an external repository.
    LookupUser {
        /// The action.
        #[command(subcommand)]
        command: LookupUserCommand,
    },
    /// Client certificates as credentials (mutual SSL).
    MutualSsl {
        /// The action.
        #[command(subcommand)]
        command: mutual_ssl::MutualSslCommand,
    },
}

/// `authentication lookup-user …`.
#[derive(Debug, Subcommand)]
pub enum LookupUserCommand {
    /// Stage the lookup user and its password (sealed in the keystore).
    Set(authentication::Set),
    /// Stage forgetting the lookup user.
    Clear(authentication::Clear),
    /// Show the lookup user (never its password).
    List(authentication::List),
    /// Print the SQL that lets a lookup user read verifiers without being a superuser (local only).
    Sql {
        /// The lookup user's role.
        #[arg(long, value_name = "NAME")]
        lookup_user: String,
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
    Enable(data_access::Enable),
    /// Stage NOLOGIN; apply also ends the user's sessions.
    Disable(data_access::Disable),
}

/// `pending-changes …`.
#[derive(Debug, Subcommand)]
pub enum PendingChangesCommand {
    /// Show the staged changes.
    List(pending_changes::List),
    /// Apply the staged changes; a running server takes them live.
    Apply(pending_changes::Apply),
    /// Drop the staged changes.
    Discard(pending_changes::Discard),
}

impl Cli {
    /// Loads the configuration and runs the command, locally or (with `-s`) on an admin server, in
    /// the runtime the binary built (`serve` keeps running in it).
    pub async fn run(self) -> Result<(), CliError> {
        let runner = self.runner()?;
        match self.command {
            Command::Serve(flags) => {
                Ok(crate::app::serve::serve(runner.local("serve")?, &flags).await?)
            }
            Command::AdminUser { command } => admin_users(
                runner.local("admin-user")?,
                command,
                &self.username,
                &self.password,
            ),
            Command::Security { command } => security(&runner, command).await,
            Command::Authentication {
                command: AuthenticationCommand::MutualSsl { command },
            } => mutual_ssl::mutual_ssl(&runner, command).await,
            Command::Authentication {
                command: AuthenticationCommand::LookupUser { command },
            } => match command {
                LookupUserCommand::Set(r) => runner.show(r).await,
                LookupUserCommand::Clear(r) => runner.show(r).await,
                LookupUserCommand::List(r) => runner.show(r).await,
                LookupUserCommand::Sql { lookup_user } => {
                    authentication::sql(&lookup_user).render(&Output::print());
                    Ok(())
                }
            },
            Command::DataAccess {
                command: DataAccessCommand::RepositoryAccess { command },
            } => match command {
                RepositoryAccessCommand::Enable(r) => runner.show(r).await,
                RepositoryAccessCommand::Disable(r) => runner.show(r).await,
            },
            Command::InternalCredentials { user } => {
                let ctx = runner.local("internal-credentials")?;
                internal_credentials::internal_credentials(ctx, user.as_deref())
                    .await?
                    .render(&ctx.out);
                Ok(())
            }
            Command::PendingChanges { command } => match command {
                PendingChangesCommand::List(r) => runner.show(r).await,
                PendingChangesCommand::Apply(r) => runner.show(r).await,
                PendingChangesCommand::Discard(r) => runner.show(r).await,
            },
            Command::Pool {
                command: PoolCommand::List(r),
            } => runner.show(r).await,
            Command::Status(r) => runner.show(r).await,
            Command::Sessions { command } => match command {
                SessionsCommand::List(r) => runner.show(r).await,
                SessionsCommand::Terminate(r) => runner.show(r).await,
            },
            Command::Topology { command } => topology::topology(&runner, command).await,
            Command::GenerateDocs(flags) => Ok(generate::run(&flags)?),
        }
    }

    /// Where the command runs: on an admin server with `-s`, else on the local data directory with
    /// the loaded configuration.
    fn runner(&self) -> Result<Runner, CliError> {
        Ok(match &self.server {
            Some(server) => Runner::Remote(
                Remote::new(
                    server,
                    self.trust_admin_controller_cert,
                    self.username.clone(),
                    self.password.clone(),
                )?
                .trusting(remote::local_custom_ca(&self.data_dir)),
            ),
            None => {
                let admin_user = matches!(self.command, Command::AdminUser { .. });
                if !admin_user && (self.username.is_some() || self.password.is_some()) {
                    return Err(CliError::CredentialsWithoutServer);
                }
                let config = match &self.config {
                    Some(path) => Config::load(path, true),
                    None => Config::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false),
                }
                .map_err(CommandError::from)?;
                Runner::Local(Box::new(Context::local(
                    self.data_dir.clone(),
                    config,
                    Output::print(),
                )))
            }
        })
    }

    /// Whether this command is the long-running server (which logs at info by default).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
}

/// `admin-user …`, whose name and password are the global `--username` and `--password`.
fn admin_users(
    ctx: &Context,
    command: AdminUserCommand,
    username: &Option<String>,
    password: &Option<crate::keystore::Secret>,
) -> Result<(), CliError> {
    let name = || username.as_deref().ok_or(CliError::NoAdminName);
    let report = match command {
        AdminUserCommand::Add => {
            let password = password.as_ref().ok_or(CliError::NoAdminPassword)?;
            admin_user::add(ctx, name()?, password)?
        }
        AdminUserCommand::Delete => admin_user::delete(ctx, name()?)?,
        AdminUserCommand::List => admin_user::list(ctx)?,
    };
    report.render(&ctx.out);
    Ok(())
}

async fn security(runner: &Runner, command: SecurityCommand) -> Result<(), CliError> {
    match command {
        SecurityCommand::RegenerateInternalTokens(r) => runner.show(r).await,
        SecurityCommand::InternalCa { command } => mutual_ssl::internal_ca(runner, command).await,
        SecurityCommand::RepositorySsl { command } => match command {
            RepositorySslCommand::Enable(r) => runner.show(r).await,
            RepositorySslCommand::Disable(r) => runner.show(r).await,
            RepositorySslCommand::List(r) => runner.show(r).await,
            RepositorySslCommand::Report(r) => runner.show(r).await,
            RepositorySslCommand::GetCertificateFile { file } => {
                let served = runner.run(repository_ssl::Certificate {}).await?;
                let said = format!("Wrote the repository certificate to {}", file.display());
                report_file::write(
                    &file,
                    served.pem.as_bytes(),
                    crate::atomic::PUBLIC_MODE,
                    said,
                )?;
                served.render(&Output::print());
                Ok(())
            }
        },
        SecurityCommand::ExternalSsl { command } => match command {
            ExternalSslCommand::Enable(r) => runner.show(r).await,
            ExternalSslCommand::Disable(r) => runner.show(r).await,
            ExternalSslCommand::List(r) => runner.show(r).await,
        },
        SecurityCommand::CustomCert { command } => match command {
            CustomCertCommand::Add(r) => runner.show(r).await,
            CustomCertCommand::Delete(r) => runner.show(r).await,
            CustomCertCommand::List(r) => runner.show(r).await,
        },
        SecurityCommand::VizqlExtsvcSsl { command } => match command {
            VizqlExtsvcCommand::Enable(r) => runner.show(r).await,
            VizqlExtsvcCommand::Disable(r) => runner.show(r).await,
            VizqlExtsvcCommand::List(r) => runner.show(r).await,
        },
    }
}
