//! `[auth]` and `[admin]`: who authenticates clients and how failures are limited, and the HTTPS
//! admin server.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{de_duration, de_opt_duration, de_socket_addr};

/// `[auth]`. Read when `serve` starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Who authenticates clients. Default `auto`.
    pub mode: AuthMode,
    /// Password failures from one address for one user that lock that pair out; 0 turns it off.
    /// Default 5.
    pub max_failures: u32,
    /// How long failures count for. Default 5 min. Formerly `failure_window_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub failure_window: Duration,
    /// How long a locked-out pair waits. Default 5 min. Formerly `lockout_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub lockout: Duration,
    /// The query the lookup user runs on an external repository, `$1` standing for the role name
    /// (a bound parameter of type `text`); it returns the role's `rolpassword`, whether it has
    /// expired and, optionally third, whether it may log in (`rolcanlogin`): each yes/no column a
    /// `boolean`, or text PostgreSQL reads as one (`true`/`false`, `t`/`f`, …). Default: read
    /// `pg_authid` (which needs a superuser; see `pgssl authentication lookup-user sql` for a
    /// function that does not).
    pub lookup_query: Option<String>,
    /// The database the lookup user connects to. Default `postgres`.
    pub lookup_database: String,
    /// How long a role's verifier is kept after it was read; 0 reads it at every login. Kept, a
    /// changed password's old one works for up to this long on each node. Unset: 1 s for a lookup
    /// user's reads, none for the managed repository's (see [`AuthConfig::managed_cache_ttl`]).
    /// Formerly `verifier_cache_secs`.
    #[serde(deserialize_with = "de_opt_duration")]
    pub verifier_cache_ttl: Option<Duration>,
}

impl AuthConfig {
    /// How long a lookup user's reads are kept: `verifier_cache_ttl`, 1 s when unset.
    pub fn lookup_cache_ttl(&self) -> Duration {
        self.verifier_cache_ttl.unwrap_or(Duration::from_secs(1))
    }

    /// How long the managed repository's reads are kept: `verifier_cache_ttl`, none when unset.
    /// pgssl changes its internal roles' passwords itself, from the CLI's process and step by step
    /// (a rotation); a login right after a step must meet the repository's verifier.
    pub fn managed_cache_ttl(&self) -> Duration {
        self.verifier_cache_ttl.unwrap_or(Duration::ZERO)
    }
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Auto,
            max_failures: 5,
            failure_window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
            lookup_query: None,
            lookup_database: "postgres".into(),
            verifier_cache_ttl: None,
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
    #[serde(deserialize_with = "de_socket_addr")]
    pub listen: SocketAddr,
    /// How long without requests an admin session lasts. Default 15 min. Formerly
    /// `session_idle_timeout_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub session_idle_timeout: Duration,
    /// How long a connection has for its TLS handshake and then for its request's headers, and again
    /// for its body; a slower one is closed (the body with 408). Default 10 s. Formerly
    /// `request_timeout_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Connections one source address may hold at once; more are closed at accept, so that one
    /// client cannot take every slot. Default 16.
    pub max_connections_per_address: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8850)),
            session_idle_timeout: Duration::from_secs(900),
            request_timeout: Duration::from_secs(10),
            max_connections_per_address: 16,
        }
    }
}
