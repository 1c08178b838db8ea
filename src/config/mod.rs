//! The configuration file (`config/pgssl.toml`): listener, upstream, limits, client users, certificate
//! names.
//!
//! Settings that an administrator stages and applies (the SSL mode, the certificate) live in the data
//! directory's state instead (see [`crate::control::state`]); this file holds what is fixed at start-up. Every key
//! is optional and unknown keys are refused, so a typo cannot silently fall back to a default.

use crate::proxy::protocol::proxy_header::TrustedNet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::proxy::policy::UserClassifier;
use crate::proxy::upstream::tls::UpstreamTlsMode;
use crate::proxy::upstream::{BadUpstreamAddr, UpstreamAddr};

mod pool;
mod tls;
pub use pool::{LOOKUP_CONNECTIONS, PoolConfig, SUPERUSER_RESERVE};
pub use tls::TlsConfig;

/// The default path of the configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/pgssl.toml";

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column and the offending key; never the file's text).
        message: String,
    },
    /// A value is out of range.
    #[error("config value {key} is invalid: {message}")]
    Invalid {
        /// The key, e.g. `server.max_connections`.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The upstream address is malformed.
    #[error(transparent)]
    Upstream(#[from] BadUpstreamAddr),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the listener and the upstream.
    pub server: ServerConfig,
    /// `[policy]`: who counts as a client user.
    pub policy: PolicyConfig,
    /// `[tls]`: the generated certificate.
    pub tls: TlsConfig,
    /// `[repository]`: facts about the upstream PostgreSQL.
    pub repository: RepositoryConfig,
    /// `[admin]`: the admin server.
    pub admin: AdminConfig,
    /// `[auth]`: who authenticates clients.
    pub auth: AuthConfig,
    /// `[pool]`: warm repository sessions.
    pub pool: PoolConfig,
}

/// `[auth]`. Read when `serve` starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Who authenticates clients. Default `auto`.
    pub mode: AuthMode,
    /// Password failures from one address for one user that lock that pair out; 0 turns it off.
    /// Default 5.
    pub max_failures: u32,
    /// Seconds failures count for. Default 300.
    pub failure_window_secs: u64,
    /// Seconds a locked-out pair waits. Default 300.
    pub lockout_secs: u64,
    /// The query the lookup user runs on an external repository, `$1` standing for the role name
    /// (sent as a quoted literal); it returns the role's `rolpassword` and whether it has expired
    /// (`'true'`/`'false'`). Default: read `pg_authid` (which needs a superuser; see `pgssl
    /// authentication lookup-user sql` for a function that does not).
    pub lookup_query: Option<String>,
    /// The database the lookup user connects to. Default `postgres`.
    pub lookup_database: String,
    /// Seconds a role's verifier is kept after it was read; 0 (the default) reads it at every login.
    /// Kept, a changed password's old one works for up to this long on each node.
    pub verifier_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Auto,
            max_failures: 5,
            failure_window_secs: 300,
            lockout_secs: 300,
            lookup_query: None,
            lookup_database: "postgres".into(),
            verifier_cache_secs: 0,
        }
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `proxy` with the managed repository, else `passthrough`.
    #[default]
    Auto,
    /// pgssl authenticates clients itself (SCRAM-SHA-256 and, over TLS, SCRAM-SHA-256-PLUS), then
    /// logs into the repository as the same role by SCRAM pass-through. Needs the managed repository
    /// (its verifiers are read through pgssl's superuser connection).
    Proxy,
    /// The repository authenticates; pgssl relays the exchange without SCRAM-SHA-256-PLUS.
    Passthrough,
}

impl std::fmt::Display for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthMode::Auto => "auto",
            AuthMode::Proxy => "proxy",
            AuthMode::Passthrough => "passthrough",
        })
    }
}

/// `[admin]`. Read when `serve` starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// HTTPS address of the admin server (`serve --admin-listen` overrides it). Default
    /// `127.0.0.1:8850`.
    pub listen: String,
    /// Seconds without requests after which an admin session ends. Default 900.
    pub session_idle_timeout_secs: u64,
    /// Seconds a connection has for its TLS handshake and then for its request's headers, and again
    /// for its body; a slower one is closed (the body with 408). Default 10.
    pub request_timeout_secs: u64,
    /// Connections one source address may hold at once; more are closed at accept, so that one
    /// client cannot take every slot. Default 16.
    pub max_connections_per_address: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8850".into(),
            session_idle_timeout_secs: 900,
            request_timeout_secs: 10,
            max_connections_per_address: 16,
        }
    }
}

/// `[server]`. Read at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the proxy listens on. Default `127.0.0.1:8060`.
    pub listen: String,
    /// An external repository: `host:port` or `unix:/socket/dir`. Default none: pgssl runs a managed
    /// repository in `<data-dir>/pgdata`.
    pub upstream: Option<String>,
    /// TLS from pgssl to the repository, with libpq's `sslmode` meaning. Default `disable`.
    pub upstream_tls: UpstreamTlsMode,
    /// Most client sessions (connections past start-up, each holding a repository connection) at
    /// once; the next start-up gets FATAL 53300, as PostgreSQL answers it. Default 1000.
    pub max_connections: usize,
    /// Most connections still in their TLS handshake or start-up at once (each for at most
    /// `handshake_timeout_secs`); past it, a new connection takes the place of the one negotiating
    /// longest, which is answered FATAL 53300 and closed. Kept apart from
    /// `max_connections` so that sockets that never finish start-up cannot take the slots sessions
    /// need. Default 4096.
    pub max_startups: usize,
    /// Seconds from accept to a complete start-up (TLS handshake included). Default 10.
    pub handshake_timeout_secs: u64,
    /// Seconds to wait for the repository to accept a connection. Default 5.
    pub connect_timeout_secs: u64,
    /// Seconds open sessions get to finish after SIGINT/SIGTERM before they are closed. Default 30.
    pub shutdown_grace_secs: u64,
    /// Threads that accept and serve connections, each with its own single-threaded runtime; 0 means
    /// one per CPU core. Default 0.
    pub worker_threads: usize,
    /// Networks (e.g. a load balancer's) whose connections start with a PROXY protocol v2 header
    /// giving the client's address; required from them, not honoured from anywhere else. Default none.
    pub proxy_protocol_from: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8060".into(),
            upstream: None,
            upstream_tls: UpstreamTlsMode::Disable,
            max_connections: 1000,
            max_startups: 4096,
            handshake_timeout_secs: 10,
            connect_timeout_secs: 5,
            shutdown_grace_secs: 30,
            worker_threads: 0,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// `[policy]`. Read at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Direct-connection users who may choose plaintext in `optional` mode. Every other user is
    /// internal. Default `["tableau", "readonly"]`.
    pub client_users: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            client_users: vec!["tableau".into(), "readonly".into()],
        }
    }
}

/// `[repository]`. How pgssl learns about the upstream PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    /// Port that names the socket file when `upstream` is a Unix socket directory. Default 5432.
    pub port: u16,
    /// Major version assumed when the upstream cannot be asked. Default 15.
    pub postgres_major: u32,
    /// Role used to read the upstream's `server_version`; its password comes from the environment
    /// variable `PGSSL_UPSTREAM_PASSWORD`, never from this file. Default `postgres`.
    pub probe_user: String,
    /// Database used for that probe. Default `postgres`.
    pub probe_database: String,
    /// `max_connections` of a managed repository (each proxied session holds one). Default 100.
    pub max_connections: u32,
    /// Operating-system user that runs a managed repository when pgssl runs as root. Default `postgres`.
    pub os_user: String,
    /// Internal service roles of a managed repository, created with generated passwords. The first
    /// owns the `repository` database. Default `["pgssl_internal"]`.
    pub internal_roles: Vec<String>,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            port: 5432,
            postgres_major: 15,
            probe_user: "postgres".into(),
            probe_database: "postgres".into(),
            max_connections: 100,
            os_user: "postgres".into(),
            internal_roles: vec!["pgssl_internal".into()],
        }
    }
}

impl Config {
    /// Loads `path`. A missing file is an error only when `required` (the user named it); otherwise the
    /// defaults apply.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Config::parse(&text, path)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            // The span and key, not the source text: the file may hold things not meant for logs.
            message: e.message().to_string(),
        })?;
        config.validate()?;
        config.pool.validate()?;
        Ok(config)
    }

    /// `server.proxy_protocol_from`, parsed.
    pub fn proxy_protocol_from(&self) -> Result<Vec<TrustedNet>, ConfigError> {
        self.server
            .proxy_protocol_from
            .iter()
            .map(|n| {
                n.parse().map_err(|message| ConfigError::Invalid {
                    key: "server.proxy_protocol_from",
                    message,
                })
            })
            .collect()
    }

    /// Checks ranges and addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.proxy_protocol_from()?;
        parse_listen(&self.admin.listen)?;
        self.upstream_addr()?;
        let positive = [
            ("server.max_connections", self.server.max_connections as u64),
            ("server.max_startups", self.server.max_startups as u64),
            (
                "server.handshake_timeout_secs",
                self.server.handshake_timeout_secs,
            ),
            (
                "server.connect_timeout_secs",
                self.server.connect_timeout_secs,
            ),
            (
                "admin.session_idle_timeout_secs",
                self.admin.session_idle_timeout_secs,
            ),
            (
                "admin.request_timeout_secs",
                self.admin.request_timeout_secs,
            ),
            (
                "admin.max_connections_per_address",
                self.admin.max_connections_per_address as u64,
            ),
            (
                "tls.certificate_validity_days",
                u64::from(self.tls.certificate_validity_days),
            ),
            ("repository.port", u64::from(self.repository.port)),
            (
                "repository.max_connections",
                u64::from(self.repository.max_connections),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.repository.postgres_major < 10 {
            return Err(ConfigError::Invalid {
                key: "repository.postgres_major",
                message: format!(
                    "{} is not a supported major version (10 or later)",
                    self.repository.postgres_major
                ),
            });
        }
        self.tls.served_provider()?;
        self.validate_internal_roles()
    }

    /// `repository.internal_roles`: plain names, none of them a client user.
    fn validate_internal_roles(&self) -> Result<(), ConfigError> {
        if self.repository.internal_roles.is_empty() {
            return Err(ConfigError::Invalid {
                key: "repository.internal_roles",
                message: "must name at least one role".into(),
            });
        }
        for role in &self.repository.internal_roles {
            if !is_plain_identifier(role) {
                return Err(ConfigError::Invalid {
                    key: "repository.internal_roles",
                    message: format!(
                        "'{role}' is not a plain role name (lower-case letters, digits and _, not starting with a digit, at most 63 characters)"
                    ),
                });
            }
            if self.policy.client_users.contains(role) {
                return Err(ConfigError::Invalid {
                    key: "repository.internal_roles",
                    message: format!(
                        "'{role}' is also listed in policy.client_users; an internal role must use TLS"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_listen(&self.server.listen)
    }

    /// The external upstream address, or `None` for a managed repository.
    pub fn upstream_addr(&self) -> Result<Option<UpstreamAddr>, ConfigError> {
        self.server
            .upstream
            .as_deref()
            .map(|u| UpstreamAddr::parse(u, self.repository.port))
            .transpose()
            .map_err(ConfigError::from)
    }

    /// The classifier built from `policy.client_users`.
    pub fn classifier(&self) -> UserClassifier {
        UserClassifier::new(self.policy.client_users.clone())
    }

    /// `server.handshake_timeout_secs` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.server.handshake_timeout_secs)
    }

    /// `server.connect_timeout_secs` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.server.connect_timeout_secs)
    }

    /// `server.shutdown_grace_secs` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_grace_secs)
    }
}

/// Whether `name` is a role name that needs no quoting: `[a-z_][a-z0-9_]*`, at most 63 bytes.
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// Parses a listen address such as `127.0.0.1:8060` or `[::1]:8060`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::Invalid {
        key: "server.listen",
        message: format!("'{text}' is not an IP address and port, e.g. 127.0.0.1:8060"),
    })
}

impl ConfigError {
    /// Every configuration problem is the administrator's to fix.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::User
    }
}

#[cfg(test)]
mod tests;
