//! Taking a backend for a client's next transaction, and what becomes of it when the client leaves.

use tokio::time::Instant;
use tracing::warn;

use super::{Client, NoBackend};
use crate::proxy::auth::terminate::RepositoryAuthError;
use crate::proxy::backend::{Backend, Checkout};
use crate::proxy::connection::{ConnectionContext, forward_start};
use crate::proxy::pooling::tracker::Tracker;
use crate::proxy::protocol::session_watch::Idle;
use crate::proxy::protocol::{ErrorResponse, SqlState};
use crate::proxy::session;
use crate::proxy::settings::LiveSettings;
use crate::telemetry::LogSafe;

/// What becomes of the backend a leaving client held: kept as it is when the client left it idle
/// and unpinned (the next client's SETs are reconciled at hand-out), reset first when pinned, closed
/// otherwise.
pub(super) async fn give_back(
    backend: Backend,
    tracker: &Tracker,
    clean: bool,
    ctx: &ConnectionContext,
) {
    let m = &ctx.metrics.pool;
    let idle = clean && tracker.idle();
    if !idle || !backend.is_quiet() {
        m.closed.increment(1);
        backend.close().await;
        return;
    }
    if tracker.pinned().is_none() {
        m.kept.increment(1);
        ctx.pool.checkin(backend);
        return;
    }
    session::give_back(backend, Idle::OutsideTransaction, ctx).await;
}

/// A backend for the client's next transaction: a warm one of its key, or a new one logged in with
/// its proof; an error to end the client with when none comes in time.
pub(super) async fn take_backend(
    client: &mut Client,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Result<Backend, NoBackend> {
    let pool = &ctx.pool;
    pool.saw_generation(settings.generation);
    let m = &ctx.metrics.pool;
    let waiting = Instant::now();
    let timeout = pool.options().checkout_timeout;
    let proven = &client.proven;
    let found = pool
        .checkout(
            &client.key,
            proven.verifier(),
            proven.can_login,
            true,
            waiting + timeout,
        )
        .await;
    m.wait_seconds.record(waiting.elapsed().as_secs_f64());
    match found {
        Ok(Checkout::Warm(b)) => {
            m.warm.increment(1);
            Ok(*b)
        }
        Ok(Checkout::Fork(slot)) => {
            m.opened.increment(1);
            let mut backend = open(client, slot, settings, ctx).await?;
            if client.as_primary && ctx.repository.probed() && backend.in_hot_standby() {
                ctx.repository.suspect(client.host);
                backend.close().await;
                return Err(NoBackend::Ours(
                    ErrorResponse::fatal(
                        SqlState::CannotConnectNow,
                        "the repository host this session was routed to is no longer the primary",
                    )
                    .with_hint("Reconnect: new sessions go to the new primary."),
                ));
            }
            backend.on_epoch(client.epoch.clone());
            Ok(backend)
        }
        Err(e) => {
            m.exhausted.increment(1);
            Err(NoBackend::Ours(ErrorResponse::fatal(
                SqlState::TooManyConnections,
                format!(
                    "{e}: no repository session came free within pool.checkout_timeout ({})",
                    humantime::format_duration(timeout)
                ),
            )))
        }
    }
}

/// Opens a new backend for the client with its proof, the way its login would have.
pub(super) async fn open(
    client: &Client,
    slot: crate::proxy::backend::Slot,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Result<Backend, NoBackend> {
    let unreachable = |detail: String| {
        warn!(error = %LogSafe(&detail), outcome = "upstream_unreachable", "could not open a repository session for a transaction-pooled client");
        NoBackend::Ours(ErrorResponse::fatal(
            SqlState::ConnectionFailure,
            format!("could not connect to the repository: {detail}"),
        ))
    };
    let connector = ctx
        .repository
        .connector(client.host)
        .ok_or_else(|| unreachable("the repository host is no longer configured".into()))?;
    let login = async {
        let mut upstream = connector
            .connect(ctx.connect_timeout, &settings.repository_tls)
            .await
            .map_err(|e| unreachable(e.client_summary()))?;
        forward_start(&mut upstream, &client.startup, &[])
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        session::pass_through(
            upstream,
            &client.proven,
            client.minor,
            slot,
            settings.generation,
        )
        .await
        .map_err(|e| match e {
            // The repository's own refusal (a FATAL it sent) is what the client gets.
            RepositoryAuthError::Refused(frame) => NoBackend::Repository(frame),
            other => unreachable(other.to_string()),
        })
    };
    let limit = ctx.connect_timeout + std::time::Duration::from_secs(10);
    match tokio::time::timeout(limit, login).await {
        Ok(result) => result,
        Err(_) => Err(unreachable(
            "the repository did not answer the login in time".into(),
        )),
    }
}
