//! Metrics in Prometheus text format, served on an optional listener (`serve --metrics ADDR`).
//!
//! The data plane records through the `metrics` facade (a no-op until a recorder is installed); this
//! module installs the Prometheus recorder once per process and describes every metric; `endpoint`
//! answers `GET /metrics`. It also holds what makes client text safe for logs ([`LogSafe`]) and the
//! bridge from `log` records to `tracing` ([`LogBridge`]).

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::warn;

mod endpoint;

pub use endpoint::{MAX_METRICS_CONNECTIONS, serve_metrics};

/// Longest client-supplied text a log line carries; the rest is summarised by its length.
pub const LOG_TEXT_LIMIT: usize = 128;

/// Client-supplied text (user and database names, sign-in names) made safe for a log line.
///
/// A name can carry anything but NUL, so without this a `\n` forges a whole log line and an ESC
/// sequence reaches the operator's terminal. Control characters, `\` and `"` are escaped (`\n`,
/// `\u{1b}`), text with white space or `=` is quoted so it cannot pose as further `key=value` fields,
/// and anything past [`LOG_TEXT_LIMIT`] characters is cut. Used for text and JSON logs alike; `{:#}`
/// leaves out the quotes, for structured sinks (a JSON value) where fields cannot run together.
#[derive(Debug, Clone, Copy)]
pub struct LogSafe<'a>(pub &'a str);

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let text = self.0;
        let quote = !f.alternate()
            && (text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '='));
        if quote {
            f.write_char('"')?;
        }
        for (shown, (at, c)) in text.char_indices().enumerate() {
            if shown == LOG_TEXT_LIMIT {
                write!(f, "…(+{} bytes)", text.len() - at)?;
                break;
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        if quote {
            f.write_char('"')?;
        }
        Ok(())
    }
}

/// Carries `log` records (rustls logs through `log`) into `tracing`, with rustls' warnings and errors
/// lowered to INFO.
///
/// Every rustls warning on a server is a peer's doing — a refused renegotiation, an alert, an odd
/// ClientHello — so it belongs with the other per-connection outcomes at INFO, where `PGSSL_LOG=warn`
/// silences it, instead of flooding the operator's warnings on any client's whim.
#[derive(Debug, Clone, Copy)]
pub struct LogBridge;

impl LogBridge {
    /// Installs the bridge as the process's `log` logger, letting every level through to `tracing`'s
    /// own filter.
    pub fn install() -> Result<(), log::SetLoggerError> {
        log::set_logger(&LogBridge)?;
        log::set_max_level(log::LevelFilter::Trace);
        Ok(())
    }

    /// The level a record is re-emitted at.
    pub fn level_for(target: &str, level: log::Level) -> log::Level {
        if target.starts_with("rustls") && level < log::Level::Info {
            log::Level::Info
        } else {
            level
        }
    }
}

impl log::Log for LogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = Self::level_for(record.target(), record.level());
        let lowered = log::Record::builder()
            .args(*record.args())
            .level(level)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        let _ = tracing_log::format_trace(&lowered);
    }

    fn flush(&self) {}
}

/// Buckets for the `_seconds` histograms: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Metric names, so recorders and tests agree.
pub mod names {
    /// Connections accepted.
    pub const CONNECTIONS_ACCEPTED: &str = "pgssl_connections_accepted_total";
    /// Connections open now.
    pub const CONNECTIONS_ACTIVE: &str = "pgssl_connections_active";
    /// Connections answered 53300, by `limit` (`max_connections`: refused after start-up;
    /// `max_startups`: the oldest negotiating connection closed to make room for a new one).
    pub const CONNECTIONS_OVER_LIMIT: &str = "pgssl_connections_over_limit_total";
    /// TLS handshakes by `version` and `outcome`.
    pub const TLS_HANDSHAKES: &str = "pgssl_tls_handshakes_total";
    /// TLS handshake duration.
    pub const TLS_HANDSHAKE_SECONDS: &str = "pgssl_tls_handshake_duration_seconds";
    /// Negotiations that ended without a start-up, by `reason`.
    pub const NEGOTIATION_FAILURES: &str = "pgssl_negotiation_failures_total";
    /// Policy refusals by `mode` and `class`.
    pub const POLICY_REJECTIONS: &str = "pgssl_policy_rejections_total";
    /// Failed connections to the repository.
    pub const UPSTREAM_CONNECT_FAILURES: &str = "pgssl_upstream_connect_failures_total";
    /// Time to connect to the repository.
    pub const UPSTREAM_CONNECT_SECONDS: &str = "pgssl_upstream_connect_duration_seconds";
    /// Bytes relayed by `direction` (`to_upstream`, `to_client`).
    pub const BYTES_RELAYED: &str = "pgssl_bytes_relayed_total";
    /// Reloads by `outcome`.
    pub const RELOADS: &str = "pgssl_reloads_total";
    /// Cancel requests forwarded.
    pub const CANCELS_FORWARDED: &str = "pgssl_cancel_requests_total";
    /// Control-plane operations that failed, by `kind` (`user`, `server`, `upstream`).
    pub const COMMAND_FAILURES: &str = "pgssl_command_failures_total";
    /// Logins by `mechanism` and `outcome`.
    pub const AUTH_ATTEMPTS: &str = "pgssl_auth_attempts_total";
    /// Time from the start of authentication to the session's AuthenticationOk (or refusal).
    pub const AUTH_SECONDS: &str = "pgssl_auth_duration_seconds";
    /// Verifier lookups by `outcome` (`ok`, `failed`).
    pub const AUTH_LOOKUPS: &str = "pgssl_auth_lookups_total";
    /// Gauge, label `state` (`idle`, `busy`).
    pub const POOL_SESSIONS: &str = "pgssl_pool_sessions";
    /// Counter, label `outcome` (`warm`, `opened`, `exhausted`).
    pub const POOL_CHECKOUTS: &str = "pgssl_pool_checkouts_total";
    /// Histogram.
    pub const POOL_CHECKOUT_WAIT: &str = "pgssl_pool_checkout_wait_seconds";
    /// Counter, label `outcome` (`kept`, `closed`).
    pub const POOL_RETURNS: &str = "pgssl_pool_returns_total";
    /// Gauge: when the mutual-SSL revocation list promises its next update (Unix seconds).
    pub const CRL_NEXT_UPDATE: &str = "pgssl_mutual_ssl_crl_next_update_seconds";
    /// Gauge: clients waiting for a backend (the bounds are reached).
    pub const POOL_WAITING: &str = "pgssl_pool_clients_waiting";
    /// Counter, label `reason`: transaction-pooled clients whose backend was pinned to them.
    pub const POOL_PINNED: &str = "pgssl_pool_pinned_total";
    /// Counter, label `reason`: statements refused because they would pin (`pool.on_pin = refuse`).
    pub const POOL_PIN_REFUSED: &str = "pgssl_pool_pin_refused_total";
    /// Counter: sessions opened ahead of clients (`pool.min_warm`).
    pub const POOL_PREFILLED: &str = "pgssl_pool_prefilled_total";
    /// Gauge: seconds since a cluster node last confirmed with the repository that it serves the
    /// newest state (0 while it can reach it).
    pub const CLUSTER_STATE_AGE: &str = "pgssl_cluster_state_age_seconds";
    /// Gauge, labels `certificate` (`served`, `custom_ca`, `client_ca`, `extsvc`) and `subject`:
    /// seconds until the certificate expires (negative once it has).
    pub const CERTIFICATE_EXPIRY: &str = "pgssl_certificate_expiry_seconds";
    /// Gauge: the cluster state version a node serves.
    pub const CLUSTER_STATE_VERSION: &str = "pgssl_cluster_state_version";
    /// Gauge, label `host`: 1 when the repository host's last probe answered.
    pub const REPOSITORY_HOST_UP: &str = "pgssl_repository_host_up";
    /// Gauge, labels `host` and `role` (`primary`, `standby`, `unknown`, `refused`): 1 for the
    /// host's role now, 0 for the others.
    pub const REPOSITORY_HOST_ROLE: &str = "pgssl_repository_host_role";
    /// Gauge, label `host`: WAL bytes a standby has still to replay.
    pub const REPOSITORY_STANDBY_LAG_BYTES: &str = "pgssl_repository_standby_lag_bytes";
    /// Counter: changes of the primary host.
    pub const REPOSITORY_FAILOVERS: &str = "pgssl_repository_failovers_total";
    /// Gauge: logins waiting for a primary.
    pub const REPOSITORY_LOGINS_WAITING: &str = "pgssl_repository_logins_waiting_for_primary";
    /// Gauge: 1 while more than one host claims to be primary.
    pub const REPOSITORY_SPLIT_BRAIN: &str = "pgssl_repository_split_brain";
    /// Counter, label `reason`: sessions ended because their host stopped being what they were
    /// routed to.
    pub const REPOSITORY_SESSIONS_ENDED: &str = "pgssl_repository_sessions_terminated_total";
}

/// The process-wide Prometheus handle; the recorder is installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Only an empty bucket list is refused; should that ever happen, summaries replace buckets.
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            warn!("a metrics recorder was already installed; /metrics may miss values");
        }
        describe();
        handle
    })
}

fn describe() {
    use names::*;
    describe_counter!(CONNECTIONS_ACCEPTED, "Client connections accepted.");
    describe_gauge!(CONNECTIONS_ACTIVE, "Client connections open now.");
    describe_counter!(
        CONNECTIONS_OVER_LIMIT,
        "Connections answered 53300, by limit: max_connections (refused after start-up), max_startups (the oldest negotiating connection closed to admit a new one)."
    );
    describe_counter!(
        TLS_HANDSHAKES,
        "TLS handshakes by protocol version and outcome."
    );
    describe_histogram!(
        TLS_HANDSHAKE_SECONDS,
        Unit::Seconds,
        "TLS handshake duration."
    );
    describe_counter!(
        NEGOTIATION_FAILURES,
        "Connections that ended before a start-up message, by reason."
    );
    describe_counter!(
        POLICY_REJECTIONS,
        "Start-ups refused by the SSL policy, by mode and user class."
    );
    describe_counter!(
        UPSTREAM_CONNECT_FAILURES,
        "Failed connections to the repository."
    );
    describe_histogram!(
        UPSTREAM_CONNECT_SECONDS,
        Unit::Seconds,
        "Time to connect to the repository."
    );
    describe_counter!(BYTES_RELAYED, Unit::Bytes, "Bytes relayed, by direction.");
    describe_histogram!(
        AUTH_SECONDS,
        Unit::Seconds,
        "Authentication time, to the repository's AuthenticationOk or the refusal."
    );
    describe_counter!(
        AUTH_LOOKUPS,
        "Verifier lookups (proxy mode), by outcome (ok, failed)."
    );
    describe_counter!(
        AUTH_ATTEMPTS,
        "Logins by mechanism (scram-sha-256, scram-sha-256-plus, passthrough) and outcome."
    );
    describe_pool();
    describe_repository();
    describe_counter!(RELOADS, "Reloads of the applied settings, by outcome.");
    describe_counter!(
        CANCELS_FORWARDED,
        "Cancel requests forwarded to the repository."
    );
    describe_counter!(
        COMMAND_FAILURES,
        "Control-plane operations (admin API, web pages) that failed, by kind: user, server, upstream."
    );
}

/// The repository hosts' metrics.
fn describe_repository() {
    use names::*;
    describe_gauge!(
        REPOSITORY_HOST_UP,
        "1 when the repository host answered its last probe (label host)."
    );
    describe_gauge!(
        REPOSITORY_HOST_ROLE,
        "1 for the repository host's role now: primary, standby, unknown or refused (labels host, role)."
    );
    describe_gauge!(
        REPOSITORY_STANDBY_LAG_BYTES,
        Unit::Bytes,
        "WAL bytes a standby has still to replay (label host)."
    );
    describe_counter!(
        REPOSITORY_FAILOVERS,
        "Changes of the primary repository host."
    );
    describe_gauge!(
        REPOSITORY_LOGINS_WAITING,
        "Logins waiting for a primary repository host (repository.failover_wait)."
    );
    describe_gauge!(
        REPOSITORY_SPLIT_BRAIN,
        "1 while more than one repository host claims to be primary."
    );
    describe_counter!(
        REPOSITORY_SESSIONS_ENDED,
        "Sessions ended because their repository host stopped being what they were routed to."
    );
}

/// The warm pool's metrics and the mutual-SSL CRL gauge.
fn describe_pool() {
    use names::*;
    describe_gauge!(
        POOL_SESSIONS,
        "Repository sessions pgssl holds, by state: idle (warm, waiting for a client) or busy."
    );
    describe_counter!(
        POOL_CHECKOUTS,
        "Backends given to authenticated clients: warm (a reused session), opened (a new backend), exhausted (none within pool.checkout_timeout)."
    );
    describe_histogram!(
        POOL_CHECKOUT_WAIT,
        Unit::Seconds,
        "Time a client waited for a backend slot or a warm session."
    );
    describe_gauge!(
        CRL_NEXT_UPDATE,
        "When the mutual-SSL revocation list's issuer promises the next one (Unix time); alert when it is in the past."
    );
    describe_gauge!(
        CLUSTER_STATE_AGE,
        Unit::Seconds,
        "Seconds since this cluster node last confirmed with the repository that it serves the newest state; alert when it grows."
    );
    describe_gauge!(
        CERTIFICATE_EXPIRY,
        Unit::Seconds,
        "Seconds until a certificate pgssl serves or trusts expires; pgssl warns from 30 days before."
    );
    describe_gauge!(
        CLUSTER_STATE_VERSION,
        "The cluster state version this node serves."
    );
    describe_counter!(
        POOL_PREFILLED,
        "Repository sessions opened ahead of clients (pool.min_warm)."
    );
    describe_gauge!(
        POOL_WAITING,
        "Clients waiting for a repository session because the pool's bounds are reached (served first come, first served; 53300 past pool.checkout_timeout)."
    );
    describe_counter!(
        POOL_PINNED,
        "Transaction-pooled clients whose repository session was pinned to them for the rest of their session, by reason (listen, advisory_lock, temp_table, hold_cursor, sql_prepare, set_role, unknown_set)."
    );
    describe_counter!(
        POOL_PIN_REFUSED,
        "Statements refused with 0A000 because they would pin a transaction-pooled client's repository session (pool.on_pin = refuse), by reason."
    );
    describe_counter!(
        POOL_RETURNS,
        "Sessions whose client left: kept (reset and warm) or closed (not idle, reset failed, or over a bound)."
    );
}

#[cfg(test)]
mod tests {
    use super::LogSafe;
    use super::*;

    #[test]
    fn client_text_cannot_forge_lines_fields_or_terminal_codes() {
        assert_eq!(LogSafe("tableau").to_string(), "tableau");
        let forged = LogSafe("x\nINFO session ended user=postgres").to_string();
        assert_eq!(forged, r#""x\nINFO session ended user=postgres""#);
        assert!(!forged.contains('\n'));
        assert_eq!(LogSafe("a\u{1b}[31mred").to_string(), r"a\u{1b}[31mred");
        assert_eq!(LogSafe("q\"\\").to_string(), r#"q\"\\"#);
        assert_eq!(LogSafe("").to_string(), r#""""#);
        assert_eq!(format!("{:#}", LogSafe("a b\n")), r"a b\n");
        let long = "u".repeat(300);
        let shown = LogSafe(&long).to_string();
        assert_eq!(shown, format!("{}…(+172 bytes)", "u".repeat(128)));
        let odd = LogSafe("\r\u{7f}\u{85}").to_string();
        assert!(!odd.chars().any(char::is_control), "{odd}");
    }

    #[test]
    fn rustls_warnings_are_lowered_to_info_and_others_kept() {
        use log::Level;
        assert_eq!(
            LogBridge::level_for("rustls::common_state", Level::Warn),
            Level::Info
        );
        assert_eq!(
            LogBridge::level_for("rustls::check", Level::Error),
            Level::Info
        );
        assert_eq!(
            LogBridge::level_for("rustls::x", Level::Debug),
            Level::Debug
        );
        assert_eq!(LogBridge::level_for("hyper", Level::Warn), Level::Warn);
    }
}
