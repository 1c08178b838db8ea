//! The configuration file (`config/pgssl.toml`): listener, repository, limits, client users,
//! certificate names.
//!
//! Settings that an administrator stages and applies (the SSL mode, the certificate) live in the data
//! directory's state instead (see [`crate::control::state`]); this file holds what is fixed at
//! start-up. Every key is optional and unknown keys are refused, so a typo cannot silently fall back
//! to a default. Values are typed as the file is read (addresses, networks, durations with their
//! unit), so a bad one is refused at load, naming its key and the file, and nothing parses them again.
//! Keys that were renamed still load, with one warning each (`renamed.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::proxy::policy::UserClassifier;
use crate::proxy::repository::BadRepositoryAddr;

mod auth;
mod pool;
mod renamed;
mod repository;
mod server;
mod tls;
mod values;
pub use auth::{AdminConfig, AuthConfig, AuthMode};
pub use pool::{LOOKUP_CONNECTIONS, MinWarmConfig, PoolConfig, SUPERUSER_RESERVE};
pub use renamed::{OldKey, RenameError};
pub use repository::{
    BadAddressList, RepositoryAddress, RepositoryConfig, RepositoryEndpoint, StandbyLag, TargetRole,
};
pub use server::{PolicyConfig, ServerConfig};
pub use tls::TlsConfig;
pub use values::{network, socket_addr};

/// The default path of the configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/pgssl.toml";

/// A configuration file, or a value given on the command line, that cannot be used.
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
        /// The line or the key, and what is wrong (never the file's text).
        message: String,
    },
    /// A key is given under its old and its new name, or its old name holds what the new one would.
    #[error("config file {path} is invalid: {source}")]
    Renamed {
        /// The file.
        path: PathBuf,
        /// Which key.
        source: RenameError,
    },
    /// A value of the file is out of range.
    #[error("config file {path} is invalid: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The value (an [`ConfigError::Invalid`]).
        source: Box<ConfigError>,
    },
    /// A value is out of range.
    #[error("config value {key} is invalid: {message}")]
    Invalid {
        /// The key, e.g. `server.max_connections`.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A repository address from elsewhere than this file (a cluster's, the running server's) is
    /// malformed.
    #[error(transparent)]
    Upstream(#[from] BadRepositoryAddr),
    /// `repository.address` or `--repository` is not a list of addresses.
    #[error(transparent)]
    Addresses(#[from] repository::BadAddressList),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the listener and its limits.
    pub server: ServerConfig,
    /// `[policy]`: who counts as a client user.
    pub policy: PolicyConfig,
    /// `[tls]`: the generated certificate.
    pub tls: TlsConfig,
    /// `[repository]`: the PostgreSQL server behind pgssl, and how to reach it.
    pub repository: RepositoryConfig,
    /// `[admin]`: the admin server.
    pub admin: AdminConfig,
    /// `[auth]`: who authenticates clients.
    pub auth: AuthConfig,
    /// `[pool]`: warm repository sessions.
    pub pool: PoolConfig,
    /// `[identity]`: the client's identity for the repository (`pgssl.*`).
    pub identity: IdentityConfig,
}

/// `[identity]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Set `pgssl.client_addr`, `pgssl.tls_version`, … on every repository session a client gets.
    /// Default on. (A client can never set `pgssl.*`, whether this is on or off.)
    pub enabled: bool,
}

impl Default for IdentityConfig {
    fn default() -> IdentityConfig {
        IdentityConfig { enabled: true }
    }
}

impl Config {
    /// Loads `path`. A missing file is an error only when `required` (the user named it); otherwise the
    /// defaults apply. Each renamed key the file uses is logged once, as a warning: loaded once per
    /// process, before anything else runs, the warning reaches both a command's output and `serve`'s
    /// log.
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

    /// Parses and validates TOML text, warning once for each renamed key it uses; `path` is only
    /// used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (config, old_keys) = Config::parse_noting_old_keys(text, path)?;
        for old in old_keys {
            tracing::warn!(config = %path.display(), "{old}");
        }
        Ok(config)
    }

    /// Parses and validates TOML text, and says which renamed keys it uses.
    pub fn parse_noting_old_keys(
        text: &str,
        path: &Path,
    ) -> Result<(Config, Vec<OldKey>), ConfigError> {
        let parse_error = |message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            // The line and the parser's message, not the source text: the file may hold things not
            // meant for logs.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            parse_error(match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            })
        })?;
        let old_keys =
            renamed::rename_old_keys(&mut table).map_err(|source| ConfigError::Renamed {
                path: path.to_path_buf(),
                source,
            })?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                // `.` is the file itself: nothing more precise to name.
                let at = e.path().to_string();
                let message = e.into_inner().message().to_string();
                parse_error(if at == "." {
                    message
                } else {
                    format!("{at}: {message}")
                })
            })?;
        config
            .validate()
            .and_then(|()| config.pool.validate())
            .map_err(|e| ConfigError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            })?;
        Ok((config, old_keys))
    }

    /// Checks ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("server.max_connections", self.server.max_connections as u64),
            ("server.max_startups", self.server.max_startups as u64),
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
        let durations = [
            ("server.handshake_timeout", self.server.handshake_timeout),
            ("server.connect_timeout", self.server.connect_timeout),
            (
                "admin.session_idle_timeout",
                self.admin.session_idle_timeout,
            ),
            ("admin.request_timeout", self.admin.request_timeout),
        ];
        let zero = (positive.iter().filter(|(_, v)| *v == 0).map(|(k, _)| k))
            .chain(
                durations
                    .iter()
                    .filter(|(_, d)| d.is_zero())
                    .map(|(k, _)| k),
            )
            .next();
        if let Some(&key) = zero {
            return Err(ConfigError::Invalid {
                key,
                message: "must be greater than 0".into(),
            });
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
        if self.tls.renew_before_days >= self.tls.certificate_validity_days {
            return Err(ConfigError::Invalid {
                key: "tls.renew_before_days",
                message: format!(
                    "must be less than tls.certificate_validity_days ({}): a renewed certificate would be due again at once",
                    self.tls.certificate_validity_days
                ),
            });
        }
        self.tls.served_provider()?;
        self.repository
            .check_hosts(self.repository.address.as_ref())?;
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

    /// The classifier built from `policy.client_users`.
    pub fn classifier(&self) -> UserClassifier {
        UserClassifier::new(self.policy.client_users.clone())
    }

    /// `server.handshake_timeout`.
    pub fn handshake_timeout(&self) -> Duration {
        self.server.handshake_timeout
    }

    /// `server.connect_timeout`.
    pub fn connect_timeout(&self) -> Duration {
        self.server.connect_timeout
    }

    /// `server.shutdown_grace`.
    pub fn shutdown_grace(&self) -> Duration {
        self.server.shutdown_grace
    }
}

/// Whether `name` is a role name that needs no quoting: `[a-z_][a-z0-9_]*`, at most 63 bytes.
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// Parses a listen address given on the command line, such as `127.0.0.1:8060` or `[::1]:8060`.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, ConfigError> {
    socket_addr(text).map_err(|message| ConfigError::Invalid {
        key: "server.listen",
        message,
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
