//! The command-line grammar, modeled on `tsm`: a thin clap layer that maps each command onto a
//! control-plane call in [`crate::control::operations`].

pub mod remote;

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cli::remote::{Call, Remote, read_upload};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::control::operations::file_name;
use crate::control::operations::regenerate_tokens;
use crate::control::operations::vizql_extsvc::{
    DEFAULT_CONNECT_TIMEOUT_MS, MAX_CONNECT_TIMEOUT_MS,
};
use crate::control::operations::{self, CommandError, Context};
use crate::control::state::security::ConnectionType;
use crate::keystore::Secret;

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
    #[arg(short = 'p', long = "password", global = true, value_name = "PW|-")]
    pub password: Option<String>,
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
        /// Address of the HTTPS admin server [default: admin.listen, 127.0.0.1:8850].
        #[arg(long, value_name = "ADDR", conflicts_with = "no_admin")]
        admin_listen: Option<String>,
        /// Run no admin server.
        #[arg(long)]
        no_admin: bool,
    },
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
    RegenerateInternalTokens {
        /// Give up after this many seconds (every step is resumable: run again to finish).
        #[arg(long, value_name = "SECONDS", default_value_t = regenerate_tokens::DEFAULT_TIMEOUT_SECS,
              value_parser = clap::value_parser!(u64).range(1..=regenerate_tokens::MAX_TIMEOUT_SECS))]
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
              value_parser = clap::value_parser!(u64).range(1..=MAX_CONNECT_TIMEOUT_MS))]
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
    /// Loads the configuration and runs the command, locally or (with `-s`) on an admin server.
    pub fn run(self) -> Result<(), CommandError> {
        if let Some(server) = &self.server {
            let password = self
                .password
                .as_deref()
                .map(|p| read_secret(p, "-p"))
                .transpose()?;
            let remote = Remote::new(
                server,
                self.trust_admin_controller_cert,
                self.username.clone(),
                password,
            )?
            .trusting(local_custom_ca(&self.data_dir));
            return remote.run(remote_call(self.command)?);
        }
        let admin_user = matches!(self.command, Command::AdminUser { .. });
        if !admin_user && (self.username.is_some() || self.password.is_some()) {
            return Err(CommandError::Invalid(
                "-u and -p sign in to a remote admin server; give -s URL too".into(),
            ));
        }
        let config = match &self.config {
            Some(path) => Config::load(path, true)?,
            None => Config::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false)?,
        };
        let ctx = Context {
            data_dir: self.data_dir,
            config,
            out: operations::Output::print(),
        };
        use crate::app::serve;
        use operations::{
            admin_user, custom_cert, data_access, external_ssl, internal_credentials,
            pending_changes, regenerate_tokens, repository_ssl, vizql_extsvc,
        };
        match self.command {
            Command::Serve {
                listen,
                upstream,
                metrics,
                admin_listen,
                no_admin,
            } => serve::serve(
                &ctx,
                serve::ServeFlags {
                    listen: listen.as_deref(),
                    upstream: upstream.as_deref(),
                    metrics: metrics.as_deref(),
                    admin_listen: admin_listen.as_deref(),
                    no_admin,
                },
            ),
            Command::AdminUser { command } => {
                let name = || {
                    self.username.as_deref().ok_or_else(|| {
                        CommandError::Invalid(
                            "give the administrator's name with --username NAME".into(),
                        )
                    })
                };
                match command {
                    AdminUserCommand::Add => {
                        let password = self.password.as_deref().ok_or_else(|| {
                            CommandError::Invalid(
                                "give the new password with --password - (read from standard input) or --password PW".into(),
                            )
                        })?;
                        admin_user::add(&ctx, name()?, &read_secret(password, "--password")?)
                    }
                    AdminUserCommand::Delete => admin_user::delete(&ctx, name()?),
                    AdminUserCommand::List => admin_user::list(&ctx),
                }
            }
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
            CommandError::Invalid(format!("cannot read {flag} from standard input: {e}"))
        })?;
        Secret::new(line.trim_end_matches(['\n', '\r']).to_string())
    } else {
        operations::print_line(
            &mut std::io::stderr(),
            &format!(
                "note: a secret given on the command line is visible in the process list and shell history; prefer '{flag} -' and standard input"
            ),
        );
        Secret::new(value.to_string())
    };
    Ok(secret)
}

/// The API call a command makes with `-s`.
fn remote_call(command: Command) -> Result<Call, CommandError> {
    use hyper::Method;
    use serde_json::{Value, json};
    let post = |path: &'static str, body: Value| Call::Json {
        method: Method::POST,
        path,
        body,
    };
    let get = |path: &'static str| Call::Json {
        method: Method::GET,
        path,
        body: Value::Null,
    };
    let local_only = |what: &str| {
        Err(CommandError::Invalid(format!(
            "'{what}' runs only locally, on the data directory (leave out -s)"
        )))
    };
    let text = |path: &std::path::Path| -> Result<String, CommandError> {
        String::from_utf8(read_upload(path)?).map_err(|_| {
            CommandError::Invalid(format!("{} is not a text (PEM) file", path.display()))
        })
    };
    Ok(match command {
        Command::Serve { .. } => return local_only("serve"),
        Command::AdminUser { .. } => return local_only("admin-user"),
        Command::InternalCredentials { .. } => return local_only("internal-credentials"),
        Command::PendingChanges { command } => match command {
            PendingChangesCommand::List => Call::PendingList,
            PendingChangesCommand::Apply { .. } => post("/pending-changes/apply", json!({})),
            PendingChangesCommand::Discard => post("/pending-changes/discard", json!({})),
        },
        Command::DataAccess {
            command: DataAccessCommand::RepositoryAccess { command },
        } => match command {
            RepositoryAccessCommand::Enable {
                repository_username,
                repository_password,
            } => {
                let password = read_secret(&repository_password, "--repository-password")?;
                post(
                    "/data-access/enable",
                    json!({ "repository_username": repository_username, "repository_password": password.expose() }),
                )
            }
            RepositoryAccessCommand::Disable {
                repository_username,
            } => post(
                "/data-access/disable",
                json!({ "repository_username": repository_username }),
            ),
        },
        Command::Security { command } => match command {
            SecurityCommand::RegenerateInternalTokens { request_timeout } => post(
                "/regenerate-internal-tokens",
                json!({ "request_timeout_secs": request_timeout }),
            ),
            SecurityCommand::RepositorySsl { command } => match command {
                RepositorySslCommand::Enable { internal_only } => post(
                    "/repository-ssl/enable",
                    json!({ "internal_only": internal_only }),
                ),
                RepositorySslCommand::Disable => post("/repository-ssl/disable", json!({})),
                RepositorySslCommand::List => get("/repository-ssl"),
                RepositorySslCommand::GetCertificateFile { file } => Call::Download {
                    path: "/repository-ssl/certificate",
                    dest: file,
                },
            },
            SecurityCommand::ExternalSsl { command } => match command {
                ExternalSslCommand::Enable {
                    cert_file,
                    key_file,
                    chain_file,
                    passphrase,
                    protocols,
                } => {
                    let mut body = json!({
                        "cert_pem": text(&cert_file)?, "cert_file_name": file_name(&cert_file),
                        "key_pem": text(&key_file)?, "key_file_name": file_name(&key_file),
                    });
                    if let Some(chain) = &chain_file {
                        body["chain_pem"] = json!(text(chain)?);
                        body["chain_file_name"] = json!(file_name(chain));
                    }
                    if let Some(p) = passphrase {
                        body["passphrase"] = json!(read_secret(&p, "--passphrase")?.expose());
                    }
                    if let Some(p) = protocols {
                        body["protocols"] = json!(p);
                    }
                    post("/external-ssl/enable", body)
                }
                ExternalSslCommand::Disable => post("/external-ssl/disable", json!({})),
                ExternalSslCommand::List => get("/external-ssl"),
            },
            SecurityCommand::CustomCert { command } => match command {
                CustomCertCommand::Add { cert_file } => {
                    use base64::Engine;
                    let bytes = read_upload(&cert_file)?;
                    let mut body = json!({ "cert_file_name": file_name(&cert_file) });
                    match String::from_utf8(bytes.clone()) {
                        Ok(pem) if pem.trim_start().starts_with("-----BEGIN") => {
                            body["cert_pem"] = json!(pem)
                        }
                        _ => {
                            body["cert_der_base64"] =
                                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                        }
                    }
                    post("/custom-cert/add", body)
                }
                CustomCertCommand::Delete => post("/custom-cert/delete", json!({})),
                CustomCertCommand::List => get("/custom-cert"),
            },
            SecurityCommand::VizqlExtsvcSsl { command } => match command {
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
                } => {
                    let mut body = json!({
                        "connection_type": connection_type.to_string(), "extsvc_host": extsvc_host,
                        "connect_timeout_ms": connect_timeout_ms, "script_disabled": script_disabled,
                        "skip_check": skip_check,
                    });
                    if let Some(port) = extsvc_port {
                        body["extsvc_port"] = json!(port);
                    }
                    if let Some(cert) = &cert_file {
                        body["cert_pem"] = json!(text(cert)?);
                        body["cert_file_name"] = json!(file_name(cert));
                    }
                    if let Some(u) = extsvc_username {
                        body["extsvc_username"] = json!(u);
                    }
                    if let Some(p) = extsvc_password {
                        body["extsvc_password"] =
                            json!(read_secret(&p, "--extsvc-password")?.expose());
                    }
                    post("/vizql-extsvc-ssl/enable", body)
                }
                VizqlExtsvcCommand::Disable => post("/vizql-extsvc-ssl/disable", json!({})),
                VizqlExtsvcCommand::List => get("/vizql-extsvc-ssl"),
            },
        },
    })
}

/// The custom CA of a local data directory, if there is one: the remote CLI trusts it too. Nothing
/// is created when the directory does not exist.
fn local_custom_ca(
    data_dir: &std::path::Path,
) -> Option<rustls::pki_types::CertificateDer<'static>> {
    if !data_dir.join("config").join("applied.toml").is_file() {
        return None;
    }
    let store = crate::control::state::StateStore::open(data_dir).ok()?;
    let ca = store.applied().ok()?.custom_ca?;
    crate::control::state::custom_ca::load(&store.custom_ca_path(&ca.id)).ok()
}
