//! The data plane's metrics as handles registered once per server, with labels from fixed sets.
//!
//! `metrics::counter!(name, labels)` looks the series up in the recorder's registry on every call (and
//! a label built with `to_string()` allocates first); on a path that runs for every connection that is
//! measurable work for nothing. Every series the data plane records is registered here when the server
//! is bound — after `serve --metrics` installed the recorder — and connections only bump handles.
//! Names and help texts are in [`crate::telemetry`].

use crate::proxy::pooling::PinReason;
use metrics::{Counter, Gauge, Histogram};

use crate::proxy::policy::{Mode, UserClass};
use crate::telemetry::names;

/// TLS versions as labelled in `pgssl_tls_handshakes_total{version}`.
pub const TLS_VERSIONS: [&str; 3] = ["TLSv1_2", "TLSv1_3", "unknown"];
/// Handshake outcomes as labelled in `pgssl_tls_handshakes_total{outcome}`.
pub const HANDSHAKE_OUTCOMES: [&str; 3] = ["ok", "failed", "timeout"];
/// Reasons as labelled in `pgssl_negotiation_failures_total{reason}`.
pub const NEGOTIATION_REASONS: [&str; 10] = [
    "client_closed",
    "io",
    "timeout",
    "bad_packet",
    "data_after_ssl_request",
    "out_of_order",
    "tls_handshake",
    "direct_tls_while_off",
    "direct_tls_without_alpn",
    "no_user",
];
const MODES: [Mode; 3] = [Mode::Off, Mode::Optional, Mode::Required];
const CLASSES: [UserClass; 2] = [UserClass::Client, UserClass::Internal];

/// Mechanisms as labelled in `pgssl_auth_attempts_total{mechanism}`.
pub const AUTH_MECHANISMS: [&str; 4] = [
    "scram-sha-256",
    "scram-sha-256-plus",
    "passthrough",
    "certificate",
];
/// Outcomes as labelled in `pgssl_auth_attempts_total{outcome}`.
pub const AUTH_OUTCOMES: [&str; 5] = [
    "ok",
    "bad_password",
    "unknown_user",
    "repository_refused",
    "locked_out",
];

/// How a login authenticated (the index into [`AUTH_MECHANISMS`]).
#[derive(Debug, Clone, Copy)]
pub enum AuthMechanism {
    /// pgssl's SCRAM without channel binding.
    Scram,
    /// pgssl's SCRAM with channel binding.
    ScramPlus,
    /// The repository's own exchange, relayed.
    Passthrough,
    /// A client certificate (`authentication mutual-ssl`).
    Certificate,
}

/// How a login ended (the index into [`AUTH_OUTCOMES`]).
#[derive(Debug, Clone, Copy)]
pub enum AuthOutcome {
    /// The session is open.
    Ok,
    /// A known role, a wrong (or expired, or non-SCRAM) password.
    BadPassword,
    /// No such role.
    UnknownUser,
    /// The repository refused (or could not be logged into).
    RepositoryRefused,
    /// Refused before trying: too many recent failures from this address for this user.
    LockedOut,
}

/// Which connection limit refused a connection.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// `server.max_connections`, after start-up.
    MaxConnections,
    /// `server.max_startups`: the oldest negotiating connection was closed to admit a new one.
    MaxStartups,
}

/// Every series the data plane records.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    /// `pgssl_connections_accepted_total`.
    pub accepted: Counter,
    /// `pgssl_connections_active`.
    pub active: Gauge,
    over_limit: [Counter; 2],
    handshakes: Vec<Counter>,
    /// `pgssl_tls_handshake_duration_seconds`.
    pub handshake_seconds: Histogram,
    negotiation_failures: Vec<Counter>,
    policy_rejections: Vec<Counter>,
    /// `pgssl_upstream_connect_failures_total`.
    pub upstream_failures: Counter,
    /// `pgssl_upstream_connect_duration_seconds`.
    pub upstream_seconds: Histogram,
    /// `pgssl_bytes_relayed_total{direction="to_upstream"}`.
    pub bytes_to_upstream: Counter,
    /// `pgssl_bytes_relayed_total{direction="to_client"}`.
    pub bytes_to_client: Counter,
    /// `pgssl_cancel_requests_total`.
    pub cancels: Counter,
    /// `pgssl_repository_sessions_terminated_total{reason="failover"}`.
    pub repository_sessions_ended: Counter,
    auth: Vec<Counter>,
    /// `pgssl_auth_duration_seconds`.
    pub auth_seconds: Histogram,
    /// `pgssl_auth_lookups_total{outcome="ok"}`.
    pub lookups_ok: Counter,
    /// `pgssl_auth_lookups_total{outcome="failed"}`.
    pub lookups_failed: Counter,
    /// The pool's series.
    pub pool: PoolMetrics,
}

/// `pgssl_pool_*`.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    /// `pgssl_pool_sessions{state="idle"}`.
    pub idle: Gauge,
    /// `pgssl_pool_sessions{state="busy"}`.
    pub busy: Gauge,
    /// `pgssl_pool_checkouts_total{outcome="warm"}`.
    pub warm: Counter,
    /// `pgssl_pool_checkouts_total{outcome="opened"}`.
    pub opened: Counter,
    /// `pgssl_pool_checkouts_total{outcome="exhausted"}`.
    pub exhausted: Counter,
    /// `pgssl_pool_checkout_wait_seconds`.
    pub wait_seconds: Histogram,
    /// `pgssl_pool_returns_total{outcome="kept"}`.
    pub kept: Counter,
    /// `pgssl_pool_returns_total{outcome="closed"}`.
    pub closed: Counter,
    /// `pgssl_pool_prefilled_total`.
    pub prefilled: Counter,
    /// `pgssl_pool_pinned_total{reason}`, in [`PinReason::ALL`]'s order.
    pinned: Vec<Counter>,
    /// `pgssl_pool_pin_refused_total{reason}`, in the same order.
    pin_refused: Vec<Counter>,
}

impl PoolMetrics {
    fn register() -> PoolMetrics {
        use metrics::{counter, gauge, histogram};
        PoolMetrics {
            idle: gauge!(names::POOL_SESSIONS, "state" => "idle"),
            busy: gauge!(names::POOL_SESSIONS, "state" => "busy"),
            warm: counter!(names::POOL_CHECKOUTS, "outcome" => "warm"),
            opened: counter!(names::POOL_CHECKOUTS, "outcome" => "opened"),
            exhausted: counter!(names::POOL_CHECKOUTS, "outcome" => "exhausted"),
            wait_seconds: histogram!(names::POOL_CHECKOUT_WAIT),
            kept: counter!(names::POOL_RETURNS, "outcome" => "kept"),
            closed: counter!(names::POOL_RETURNS, "outcome" => "closed"),
            prefilled: counter!(names::POOL_PREFILLED),
            pinned: PinReason::ALL
                .iter()
                .map(|r| counter!(names::POOL_PINNED, "reason" => r.label()))
                .collect(),
            pin_refused: PinReason::ALL
                .iter()
                .map(|r| counter!(names::POOL_PIN_REFUSED, "reason" => r.label()))
                .collect(),
        }
    }

    /// The pin counter of `reason`.
    pub fn pinned(&self, reason: PinReason) -> &Counter {
        &self.pinned[reason as usize]
    }

    /// The refusal counter of `reason`.
    pub fn refused(&self, reason: PinReason) -> &Counter {
        &self.pin_refused[reason as usize]
    }

    /// Sets the session gauges from the pool's totals (live, idle).
    pub fn sessions(&self, (live, idle): (usize, usize)) {
        self.idle.set(idle as f64);
        self.busy.set(live.saturating_sub(idle) as f64);
    }
}

impl ProxyMetrics {
    /// Registers every series with the installed recorder (no-op handles when there is none).
    pub fn register() -> ProxyMetrics {
        use metrics::{counter, gauge, histogram};
        let mut handshakes = Vec::new();
        for version in TLS_VERSIONS {
            for outcome in HANDSHAKE_OUTCOMES {
                handshakes.push(
                    counter!(names::TLS_HANDSHAKES, "version" => version, "outcome" => outcome),
                );
            }
        }
        let mut policy_rejections = Vec::new();
        for mode in MODES {
            for class in CLASSES {
                policy_rejections.push(counter!(names::POLICY_REJECTIONS,
                    "mode" => mode.as_str(), "class" => class.as_str()));
            }
        }
        let mut auth = Vec::new();
        for mechanism in AUTH_MECHANISMS {
            for outcome in AUTH_OUTCOMES {
                auth.push(counter!(names::AUTH_ATTEMPTS,
                    "mechanism" => mechanism, "outcome" => outcome));
            }
        }
        ProxyMetrics {
            auth,
            auth_seconds: histogram!(names::AUTH_SECONDS),
            lookups_ok: counter!(names::AUTH_LOOKUPS, "outcome" => "ok"),
            lookups_failed: counter!(names::AUTH_LOOKUPS, "outcome" => "failed"),
            accepted: counter!(names::CONNECTIONS_ACCEPTED),
            active: gauge!(names::CONNECTIONS_ACTIVE),
            over_limit: [
                counter!(names::CONNECTIONS_OVER_LIMIT, "limit" => "max_connections"),
                counter!(names::CONNECTIONS_OVER_LIMIT, "limit" => "max_startups"),
            ],
            handshakes,
            handshake_seconds: histogram!(names::TLS_HANDSHAKE_SECONDS),
            negotiation_failures: NEGOTIATION_REASONS
                .iter()
                .map(|reason| counter!(names::NEGOTIATION_FAILURES, "reason" => *reason))
                .collect(),
            policy_rejections,
            upstream_failures: counter!(names::UPSTREAM_CONNECT_FAILURES),
            upstream_seconds: histogram!(names::UPSTREAM_CONNECT_SECONDS),
            bytes_to_upstream: counter!(names::BYTES_RELAYED, "direction" => "to_upstream"),
            bytes_to_client: counter!(names::BYTES_RELAYED, "direction" => "to_client"),
            cancels: counter!(names::CANCELS_FORWARDED),
            repository_sessions_ended: counter!(names::REPOSITORY_SESSIONS_ENDED, "reason" => "failover"),
            pool: PoolMetrics::register(),
        }
    }

    /// `pgssl_connections_over_limit_total{limit}`.
    pub fn over_limit(&self, limit: Limit) -> &Counter {
        &self.over_limit[limit as usize]
    }

    /// `pgssl_tls_handshakes_total{version, outcome}`; unknown labels count as the last of their set.
    pub fn handshake(&self, version: &str, outcome: &str) -> &Counter {
        let v = index_of(&TLS_VERSIONS, version);
        let o = index_of(&HANDSHAKE_OUTCOMES, outcome);
        &self.handshakes[v * HANDSHAKE_OUTCOMES.len() + o]
    }

    /// `pgssl_negotiation_failures_total{reason}`.
    pub fn negotiation_failure(&self, reason: &str) -> &Counter {
        &self.negotiation_failures[index_of(&NEGOTIATION_REASONS, reason)]
    }

    /// `pgssl_policy_rejections_total{mode, class}`.
    pub fn policy_rejection(&self, mode: Mode, class: UserClass) -> &Counter {
        let m = MODES.iter().position(|x| *x == mode).unwrap_or(0);
        let c = CLASSES.iter().position(|x| *x == class).unwrap_or(0);
        &self.policy_rejections[m * CLASSES.len() + c]
    }
}

impl ProxyMetrics {
    /// `pgssl_auth_attempts_total{mechanism, outcome}`.
    pub fn auth(&self, mechanism: AuthMechanism, outcome: AuthOutcome) -> &Counter {
        &self.auth[mechanism as usize * AUTH_OUTCOMES.len() + outcome as usize]
    }
}

fn index_of(set: &[&str], label: &str) -> usize {
    set.iter()
        .position(|l| *l == label)
        .unwrap_or(set.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_the_data_plane_uses_has_its_own_series() {
        let m = ProxyMetrics::register();
        assert_eq!(m.handshakes.len(), 9);
        assert_eq!(index_of(&TLS_VERSIONS, "TLSv1_3"), 1);
        assert_eq!(index_of(&TLS_VERSIONS, "SSLv3"), 2);
        assert_eq!(index_of(&NEGOTIATION_REASONS, "no_user"), 9);
        assert_eq!(m.policy_rejections.len(), 6);
    }

    #[test]
    fn every_negotiation_failure_reason_has_its_own_series() {
        use crate::proxy::negotiate::NegotiateError as E;
        use crate::proxy::protocol::PacketError;
        let all = [
            E::ClosedByClient,
            E::Io(std::io::ErrorKind::Other.into()),
            E::Timeout,
            E::Packet(PacketError::UnknownRequest(0)),
            E::UnencryptedDataAfterSslRequest,
            E::OutOfOrder("x"),
            E::TlsHandshake(std::io::ErrorKind::Other.into()),
            E::DirectTlsWhileOff,
            E::DirectTlsWithoutAlpn,
            E::NoUser,
        ];
        let reasons: Vec<&str> = all.iter().map(E::reason).collect();
        assert_eq!(reasons, NEGOTIATION_REASONS);
    }
}
