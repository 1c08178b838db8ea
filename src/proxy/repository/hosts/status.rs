//! One repository host as operators see it (`topology list-repository-hosts`, the JSON API, the
//! admin page): shared by the running node and the command that asks it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A repository host now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// As configured (`repository.address`).
    pub address: String,
    /// `primary`, `standby`, `unknown` or `refused`.
    pub role: String,
    /// Why a refused host is refused.
    pub reason: Option<String>,
    /// Whether its last probe answered (a single host is not probed and counts as reachable).
    pub reachable: bool,
    /// Whether it is probed at all (only when several hosts are configured).
    pub probed: bool,
    /// Its timeline, as its last probe read it.
    pub timeline: Option<u32>,
    /// A standby's WAL bytes behind the primary.
    pub lag_bytes: Option<u64>,
    /// A standby's seconds behind the primary.
    pub lag_seconds: Option<f64>,
    /// Client sessions on it now.
    pub sessions: usize,
    /// Warm (idle) backends on it now.
    pub warm: usize,
    /// When its probe last answered (RFC 3339).
    pub last_ok: Option<String>,
    /// When its role or reachability last changed (RFC 3339; start-up if never).
    pub last_change: String,
    /// Why its last probe failed.
    pub error: Option<String>,
    /// What Patroni says of it (`leader`, `not leader`, or why it did not answer), where
    /// `repository.patroni` is configured.
    #[serde(default)]
    pub patroni: Option<String>,
}

/// `at` in RFC 3339, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}
