//! `[pool]`: warm repository sessions for proxy-mode clients (see `proxy::backend`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::values::de_duration;
use crate::proxy::backend::pool::{PoolMode, PoolRule};
use crate::proxy::backend::{MinWarm, PoolOptions};
use crate::proxy::pooling::{OnPin, TrackOptions};

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
    /// How long an unused warm session is kept. Default 5 min. Formerly `idle_timeout_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// How long after its login a session is retired (when its client leaves). Default 1 h.
    /// Formerly `max_lifetime_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub max_lifetime: Duration,
    /// Warm sessions kept at most. Default 0: as many as `max_backends` (a lower bound makes a
    /// burst of clients close sessions it needs again a moment later, and fork new ones).
    pub max_idle: usize,
    /// Repository sessions at most, busy and warm. Default 0: `repository.max_connections` less 6
    /// (PostgreSQL's 3 superuser-reserved connections, pgssl's 2 lookup connections, one spare).
    pub max_backends: usize,
    /// Sessions at most per (role, database, start-up options). Default 0: no limit of its own.
    pub max_per_role_database: usize,
    /// How long a client waits for a session when the bounds are reached, then gets 53300. Default
    /// 10 s. Formerly `checkout_timeout_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub checkout_timeout: Duration,
    /// How often the verifiers of roles with warm sessions are read again. Default 10 s. Formerly
    /// `recheck_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub recheck_interval: Duration,
    /// Sessions opened ahead of clients, per (role, database). Default none.
    pub min_warm: Vec<MinWarmConfig>,
    /// `session` (a client holds its backend from its first message until it leaves) or
    /// `transaction` (only until its transaction ends). Default `session`.
    pub mode: PoolMode,
    /// Per (role, database): another mode, another bound. The first rule that matches applies.
    pub rules: Vec<PoolRuleConfig>,
    /// Transaction mode: statements pgssl keeps prepared per repository session at most (least
    /// recently used closed first). Default 100.
    pub max_prepared_statements: usize,
    /// Transaction mode: what a statement that cannot move between backends (LISTEN, a session
    /// advisory lock, a temporary table, a cursor WITH HOLD, SQL PREPARE, SET ROLE, a SET of an
    /// untracked parameter) does: `pin` the backend to the client, or `refuse` it (0A000).
    pub on_pin: OnPinConfig,
    /// Transaction mode: unreported parameters carried from backend to backend when a client SETs
    /// them, besides the defaults (search_path, extra_float_digits, statement_timeout, ...).
    pub track_parameters: Vec<String>,
}

/// `pool.on_pin`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnPinConfig {
    /// Pin the backend to the client.
    #[default]
    Pin,
    /// Refuse the statement.
    Refuse,
}

/// One `[[pool.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRuleConfig {
    /// The role it applies to (any when absent).
    pub role: Option<String>,
    /// The database it applies to (any when absent).
    pub database: Option<String>,
    /// The mode of its sessions (the global one when absent).
    pub mode: Option<PoolMode>,
    /// Repository sessions at most per (role, database, start-up options) (the global bound when
    /// absent).
    pub max_backends: Option<usize>,
}

/// One `[[pool.min_warm]]` entry: keep `sessions` repository sessions of `role` on `database` open
/// (busy or warm), opened in the background once a client of the role has logged in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinWarmConfig {
    /// The role.
    pub role: String,
    /// The database.
    pub database: String,
    /// Sessions kept open at least.
    pub sessions: usize,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            enabled: true,
            reset_query: "DISCARD ALL".into(),
            idle_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(3600),
            max_idle: 0,
            max_backends: 0,
            max_per_role_database: 0,
            checkout_timeout: Duration::from_secs(10),
            recheck_interval: Duration::from_secs(10),
            min_warm: Vec::new(),
            mode: PoolMode::Session,
            rules: Vec::new(),
            max_prepared_statements: 100,
            on_pin: OnPinConfig::Pin,
            track_parameters: Vec::new(),
        }
    }
}

impl PoolConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("pool.idle_timeout", self.idle_timeout),
            ("pool.max_lifetime", self.max_lifetime),
            ("pool.checkout_timeout", self.checkout_timeout),
            ("pool.recheck_interval", self.recheck_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        for (i, w) in self.min_warm.iter().enumerate() {
            if w.role.is_empty() || w.database.is_empty() || w.sessions == 0 {
                return Err(ConfigError::Invalid {
                    key: "pool.min_warm",
                    message: format!(
                        "entry {} needs a role, a database and sessions greater than 0",
                        i + 1
                    ),
                });
            }
            if self.min_warm[..i]
                .iter()
                .any(|o| o.role == w.role && o.database == w.database)
            {
                return Err(ConfigError::Invalid {
                    key: "pool.min_warm",
                    message: format!("{} on {} is listed twice", w.role, w.database),
                });
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.mode.is_none() && r.max_backends.is_none() {
                return Err(ConfigError::Invalid {
                    key: "pool.rules",
                    message: format!("rule {} sets neither mode nor max_backends", i + 1),
                });
            }
            if r.max_backends == Some(0) {
                return Err(ConfigError::Invalid {
                    key: "pool.rules",
                    message: format!("rule {}: max_backends must be greater than 0", i + 1),
                });
            }
        }
        if self.max_prepared_statements == 0 {
            return Err(ConfigError::Invalid {
                key: "pool.max_prepared_statements",
                message: "must be greater than 0".into(),
            });
        }
        for name in &self.track_parameters {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(ConfigError::Invalid {
                    key: "pool.track_parameters",
                    message: format!("{name:?} is not a parameter name"),
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
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            max_idle: match (self.enabled, self.max_idle) {
                (false, _) => 0,
                (true, 0) => max_backends,
                (true, n) => n,
            },
            max_backends,
            max_per_role_database: self.max_per_role_database,
            checkout_timeout: self.checkout_timeout,
            recheck_interval: self.recheck_interval,
            min_warm: if self.enabled {
                self.min_warm
                    .iter()
                    .map(|w| MinWarm {
                        role: w.role.clone(),
                        database: w.database.clone(),
                        sessions: w.sessions.min(max_backends),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            mode: self.mode,
            rules: self
                .rules
                .iter()
                .map(|r| PoolRule {
                    role: r.role.clone(),
                    database: r.database.clone(),
                    mode: r.mode,
                    max_backends: r.max_backends,
                })
                .collect(),
            track: std::sync::Arc::new(TrackOptions {
                max_prepared: self.max_prepared_statements,
                on_pin: match self.on_pin {
                    OnPinConfig::Pin => OnPin::Pin,
                    OnPinConfig::Refuse => OnPin::Refuse,
                },
                tracked: crate::proxy::pooling::tracker::DEFAULT_TRACKED
                    .iter()
                    .map(|s| s.to_string())
                    .chain(self.track_parameters.iter().map(|s| s.to_ascii_lowercase()))
                    .collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn min_warm_entries_are_checked_and_bounded_by_max_backends() {
        let p = Path::new("x.toml");
        let entry = |sessions: usize| {
            format!(
                "[pool]\nmin_warm = [{{ role = \"tableau\", database = \"d\", sessions = {sessions} }}]\n"
            )
        };
        let err = Config::parse(&entry(0), p).unwrap_err().to_string();
        assert!(
            err.contains("pool.min_warm") && err.contains("entry 1"),
            "{err}"
        );
        let twice = "[pool]\nmin_warm = [{ role = \"a\", database = \"d\", sessions = 1 }, { role = \"a\", database = \"d\", sessions = 2 }]\n";
        let err = Config::parse(twice, p).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        let extra =
            "[pool]\nmin_warm = [{ role = \"a\", database = \"d\", sessions = 1, x = 1 }]\n";
        assert!(Config::parse(extra, p).is_err());
        let ok = Config::parse(&entry(500), p).unwrap();
        let options = ok.pool.options(100);
        assert_eq!(options.min_warm.len(), 1);
        assert_eq!(options.min_warm[0].sessions, options.max_backends);
    }
}
