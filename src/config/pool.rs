//! `[pool]`: warm repository sessions for proxy-mode clients (see `proxy::backend`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::proxy::backend::PoolOptions;

/// Repository connections the pool leaves to others: PostgreSQL's `superuser_reserved_connections`
/// default (3) — a non-superuser is refused once only those are free, and superusers' connections
/// count towards the total too — plus pgssl's own verifier lookup connections and one more for an
/// administrator's or a rotation's session.
pub const SUPERUSER_RESERVE: u32 = 4 + LOOKUP_CONNECTIONS as u32;

/// Verifier lookup connections kept per source: logins at a high rate queue behind one connection's
/// round trips (measured: with one, pgssl fell below PgBouncer at 64 clients), and each is one the
/// warm pool leaves free ([`SUPERUSER_RESERVE`]).
pub const LOOKUP_CONNECTIONS: usize = 2;

/// `[pool]`. Read when `serve` starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Keep repository sessions warm between clients. Default: on whenever pgssl authenticates clients
    /// itself (`auth.mode` proxy, or auto with a verifier source); passthrough sessions are never
    /// pooled (pgssl cannot log in again without the client).
    pub enabled: bool,
    /// Run before a session is kept for the next client. Default `DISCARD ALL`.
    pub reset_query: String,
    /// Seconds an unused warm session is kept. Default 300.
    pub idle_timeout_secs: u64,
    /// Seconds after its login a session is retired (when its client leaves). Default 3600.
    pub max_lifetime_secs: u64,
    /// Warm sessions kept at most. Default 100.
    pub max_idle: usize,
    /// Repository sessions at most, busy and warm. Default 0: `repository.max_connections` less 6
    /// (PostgreSQL's 3 superuser-reserved connections, pgssl's 2 lookup connections, one spare).
    pub max_backends: usize,
    /// Sessions at most per (role, database, start-up options). Default 0: no limit of its own.
    pub max_per_role_database: usize,
    /// Seconds a client waits for a session when the bounds are reached, then gets 53300. Default 10.
    pub checkout_timeout_secs: u64,
    /// Seconds between re-reads of the verifiers of roles with warm sessions. Default 10.
    pub recheck_secs: u64,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            enabled: true,
            reset_query: "DISCARD ALL".into(),
            idle_timeout_secs: 300,
            max_lifetime_secs: 3600,
            max_idle: 100,
            max_backends: 0,
            max_per_role_database: 0,
            checkout_timeout_secs: 10,
            recheck_secs: 10,
        }
    }
}

impl PoolConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("pool.idle_timeout_secs", self.idle_timeout_secs),
            ("pool.max_lifetime_secs", self.max_lifetime_secs),
            ("pool.checkout_timeout_secs", self.checkout_timeout_secs),
            ("pool.recheck_secs", self.recheck_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.reset_query.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "pool.reset_query",
                message: "must be a query (the default is DISCARD ALL)".into(),
            });
        }
        Ok(())
    }

    /// The data plane's options, given `repository.max_connections`.
    pub fn options(&self, repository_max_connections: u32) -> PoolOptions {
        let max_backends = match self.max_backends {
            0 => repository_max_connections
                .saturating_sub(SUPERUSER_RESERVE)
                .max(1) as usize,
            n => n,
        };
        PoolOptions {
            enabled: self.enabled,
            reset_query: self.reset_query.clone(),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_lifetime: Duration::from_secs(self.max_lifetime_secs),
            max_idle: if self.enabled { self.max_idle } else { 0 },
            max_backends,
            max_per_role_database: self.max_per_role_database,
            checkout_timeout: Duration::from_secs(self.checkout_timeout_secs),
            recheck_interval: Duration::from_secs(self.recheck_secs),
        }
    }
}
