//! Taking a backend for a client's next transaction, and what becomes of it when the client leaves.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{info, warn};

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
/// its proof; an error to end the client with when none comes in time. A host that does not answer
/// while the hosts fail over is left for the next one, as a login's is (`route::connect`): the
/// client waits for it up to `repository.failover_wait`, and its key moves to that host.
pub(super) async fn take_backend(
    client: &mut Client,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Result<Backend, NoBackend> {
    let failover_until = Instant::now() + ctx.repository.options().failover_wait;
    loop {
        match checkout_or_open(client, settings, ctx).await {
            Err(Opening::Unreachable(detail)) => {
                let next = ctx
                    .repository
                    .reroute(&client.routed, detail.clone(), failover_until)
                    .await;
                let Some(next) = next else {
                    return Err(unreachable(detail));
                };
                info!(from = %client.routed.connector, to = %next.connector, error = %LogSafe(&detail),
                      "a repository host did not answer; the pooled client's next session goes to another");
                client.key = Arc::new((*client.key).clone().on_host(next.index));
                client.routed = next;
            }
            Err(Opening::Failed(why)) => return Err(why),
            Ok(backend) => return Ok(backend),
        }
    }
}

/// Why no backend was opened: a host that did not answer (another may), or anything else.
enum Opening {
    Unreachable(String),
    Failed(NoBackend),
}

impl From<NoBackend> for Opening {
    fn from(why: NoBackend) -> Opening {
        Opening::Failed(why)
    }
}

/// The error a client ends with when no repository host answered.
fn unreachable(detail: String) -> NoBackend {
    warn!(error = %LogSafe(&detail), outcome = "upstream_unreachable", "could not open a repository session for a pooled client");
    NoBackend::Ours(ErrorResponse::fatal(
        SqlState::ConnectionFailure,
        format!("could not connect to the repository: {detail}"),
    ))
}

async fn checkout_or_open(
    client: &mut Client,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Result<Backend, Opening> {
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
            if client.routed.as_primary && ctx.repository.probed() && backend.in_hot_standby() {
                ctx.repository.suspect(client.routed.index);
                backend.close().await;
                return Err(Opening::Failed(NoBackend::Ours(
                    ErrorResponse::fatal(
                        SqlState::CannotConnectNow,
                        "the repository host this session was routed to is no longer the primary",
                    )
                    .with_hint("Reconnect: new sessions go to the new primary."),
                )));
            }
            backend.on_epoch(client.routed.epoch.clone());
            Ok(backend)
        }
        Err(e) => {
            m.exhausted.increment(1);
            Err(Opening::Failed(NoBackend::Ours(ErrorResponse::fatal(
                SqlState::TooManyConnections,
                format!(
                    "{e}: no repository session came free within pool.checkout_timeout ({})",
                    humantime::format_duration(timeout)
                ),
            ))))
        }
    }
}

/// Opens a new backend for the client with its proof, the way its login would have.
async fn open(
    client: &Client,
    slot: crate::proxy::backend::Slot,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Result<Backend, Opening> {
    let connector = ctx
        .repository
        .connector(client.routed.index)
        .ok_or_else(|| {
            Opening::Failed(unreachable(
                "the repository host is no longer configured".into(),
            ))
        })?;
    let login = async {
        let mut upstream = match connector
            .connect(ctx.connect_timeout, &settings.repository_tls)
            .await
        {
            Ok(upstream) => upstream,
            Err(e) if e.unreachable() => return Err(Opening::Unreachable(e.client_summary())),
            Err(e) => return Err(unreachable(e.client_summary()).into()),
        };
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
            RepositoryAuthError::Refused(frame) => NoBackend::Repository(frame).into(),
            other => unreachable(other.to_string()).into(),
        })
    };
    let limit = ctx.connect_timeout + std::time::Duration::from_secs(10);
    match tokio::time::timeout(limit, login).await {
        Ok(result) => result,
        Err(_) => Err(unreachable("the repository did not answer the login in time".into()).into()),
    }
}
