//! `pool.mode` and `pool.rules`: how long a role's clients hold a backend, and its own bound.

use super::PoolOptions;

/// How long a client holds its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// From its first message until it leaves.
    #[default]
    Session,
    /// From its first message until its transaction ends.
    Transaction,
}

impl std::fmt::Display for PoolMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        })
    }
}

/// A `pool.rules` entry: for a role and/or database, another mode or bound.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolRule {
    /// The role (any when `None`).
    pub role: Option<String>,
    /// The database (any when `None`).
    pub database: Option<String>,
    /// The mode (the global one when `None`).
    pub mode: Option<PoolMode>,
    /// Live backends per key at most (the global bound when `None`).
    pub max_backends: Option<usize>,
}

impl PoolRule {
    fn matches(&self, role: &str, database: &str) -> bool {
        self.role.as_deref().is_none_or(|r| r == role)
            && self.database.as_deref().is_none_or(|d| d == database)
    }
}

impl PoolOptions {
    /// The mode of `role`'s sessions on `database`.
    pub fn mode_for(&self, role: &str, database: &str) -> PoolMode {
        self.rules
            .iter()
            .find(|r| r.matches(role, database) && r.mode.is_some())
            .and_then(|r| r.mode)
            .unwrap_or(self.mode)
    }

    /// Live backends at most for one key of `role` on `database` (0: no bound of its own).
    pub(crate) fn per_key_bound(&self, role: &str, database: &str) -> usize {
        self.rules
            .iter()
            .find(|r| r.matches(role, database) && r.max_backends.is_some())
            .and_then(|r| r.max_backends)
            .unwrap_or(self.max_per_role_database)
    }
}
