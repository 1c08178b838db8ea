//! The pool's housekeeping, once a second: idle sessions past `pool.idle_timeout` or their
//! lifetime, logged in under settings an apply has replaced, or no longer quiet (the repository closed
//! them, restarted, or is shutting down) are closed; every `pool.recheck_interval` the verifiers of the
//! roles with idle sessions are read again, and a role whose password changed, that may no longer log
//! in, or that is gone has its idle sessions closed. Hand-out checks the same things for the session it
//! hands out, so the sweep only makes them go away sooner; it never delays a client.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::pool::{Pool, close_all};
use crate::proxy::auth::scram::Verifier;
use crate::proxy::auth::terminate::VerifierSource;
use crate::proxy::metrics::PoolMetrics;
use crate::proxy::settings::SettingsCell;

/// What the sweep needs besides the pool.
pub struct Housekeeping {
    /// The settings cell (its generation retires sessions after an apply).
    pub cell: SettingsCell,
    /// The verifier source of the server, when it has one of its own (else the settings' lookup).
    pub lookup: Option<Arc<dyn VerifierSource>>,
    /// The pool's metrics.
    pub metrics: PoolMetrics,
}

/// Runs until `stop` is cancelled, then closes every idle session.
pub async fn run(pool: Arc<Pool>, keeping: Housekeeping, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let recheck_every = pool.options().recheck_interval.max(Duration::from_secs(1));
    let mut last_recheck = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        pool.saw_generation(keeping.cell.current().generation);
        let gone = pool.take_idle(|b, idle_for| pool.expired(b, idle_for));
        if !gone.is_empty() {
            debug!(closed = gone.len(), "closed idle repository sessions");
        }
        close_all(gone);
        if last_recheck.elapsed() >= recheck_every {
            last_recheck = tokio::time::Instant::now();
            let lookup = keeping
                .lookup
                .clone()
                .or_else(|| keeping.cell.current().lookup.clone());
            if let Some(lookup) = lookup {
                recheck(&pool, &*lookup).await;
            }
        }
        keeping.metrics.sessions(pool.totals());
    }
    close_all(pool.take_idle(|_, _| true));
}

/// Closes the idle sessions of roles whose verifier is no longer the one they logged in with.
async fn recheck(pool: &Pool, lookup: &dyn VerifierSource) {
    for (role, verifier) in pool.idle_roles() {
        let now = match lookup.fresh(&role).await {
            Ok(now) => now,
            // The repository cannot be asked right now: hand-out still checks each login's own
            // lookup, so nothing stale is handed out meanwhile.
            Err(_) => continue,
        };
        let still = now.as_ref().and_then(|s| {
            let current = s
                .password
                .as_deref()
                .and_then(|p| Verifier::parse(p).ok())?;
            (s.can_login && !s.expired).then_some(current)
        });
        if still.as_ref() == Some(&verifier) {
            continue;
        }
        let gone = pool
            .take_idle(|b, _| b.key_of_pool().role == role && still.as_ref() != Some(&b.verifier));
        if !gone.is_empty() {
            info!(user = %crate::telemetry::LogSafe(&role), closed = gone.len(),
                  "closed warm sessions: the role's password or login right changed");
        }
        close_all(gone);
    }
}
