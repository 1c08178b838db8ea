//! A start-up the policy may admit, from the policy's verdict to the end of its login, and what a
//! pooled client's session holds after it.

use bytes::BytesMut;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::info;

use super::{ConnectionContext, Start, Who, log_end};
use crate::proxy::login::{self, LoggedIn};
use crate::proxy::metrics::Limit;
use crate::proxy::negotiate;
use crate::proxy::policy::{self, Verdict};
use crate::proxy::protocol::{ErrorResponse, SqlState, StartupMessage};
use crate::proxy::relay;
use crate::proxy::route;
use crate::proxy::session;
use crate::proxy::sessions::SessionState;
use crate::proxy::settings::LiveSettings;
use crate::proxy::startups::StartupPlace;
use crate::proxy::stream::NegotiatedStream;
use crate::telemetry::LogSafe;

/// A start-up the policy may admit: admit → find its repository host → log in (authenticate, open
/// the backend) → relay → log how it ended.
pub(super) async fn session(
    mut stream: NegotiatedStream,
    (startup, pipelined): (StartupMessage, BytesMut),
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    starting: StartupPlace,
    started: Instant,
) -> Option<Held> {
    let slot = Box::pin(admit(&mut stream, who, settings, ctx)).await?;
    let routed = Box::pin(route::route(&mut stream, who, ctx, &starting)).await?;
    drop(starting);
    let host = route::HostChoice::new(routed);
    let start = Start {
        startup,
        pipelined,
        host: host.clone(),
    };
    // Each phase but the transaction-pooled one is boxed: a task is as large as its largest state,
    // and a pooled client that sits idle should not carry the login's or another mode's state.
    let logged_in = Box::pin(login::log_in(
        &mut stream,
        start,
        who,
        settings,
        ctx,
        started,
    ))
    .await;
    let routed = host.get();
    let on_host = routed.session();
    let epoch = routed.epoch;
    match logged_in {
        None => {}
        Some(LoggedIn::Relayed(mut upstream)) => {
            who.session.set_state(SessionState::Relayed);
            let stop = who.session.relay_stop(&epoch);
            let relayed = relay::relay_login(&mut stream, &mut upstream, &stop, &who.session);
            let (end, login) = Box::pin(relayed).await;
            let end = match end {
                relay::LoginRelayEnd::Ended(end) => end,
                relay::LoginRelayEnd::Refused(moved) => {
                    Box::pin(session::refuse_identity_write(&mut stream, who)).await;
                    relay::RelayEnd::Closed(moved)
                }
            };
            // Passthrough bytes are not followed: where messages end is not known.
            Box::pin(route::end_stopped(&mut stream, &end, who, ctx, true)).await;
            log_end(who, end, login, started, &ctx.metrics);
        }
        Some(LoggedIn::Proxied(lease)) => {
            Box::pin(session::serve(
                stream,
                *lease,
                who,
                (settings, ctx),
                started,
            ))
            .await
        }
        Some(LoggedIn::Pooled(client)) => {
            return Some(Held {
                stream,
                client,
                _slot: slot,
                _on_host: on_host,
            });
        }
    }
    None
}

/// What a pooled client's session holds once logged in: [`handle`] serves it after the phases
/// before it have returned, so that a client sitting idle between transactions costs its task only
/// this and the serve loop, not the negotiation's, login's or routing's state as well.
pub(crate) struct PooledSession {
    pub(super) held: Held,
    pub(super) who: Who,
}

pub(super) struct Held {
    stream: NegotiatedStream,
    client: Box<crate::proxy::pooling::serve::Client>,
    _slot: OwnedSemaphorePermit,
    _on_host: crate::proxy::repository::hosts::SessionOnHost,
}

impl PooledSession {
    /// Serves the client until it leaves.
    pub(crate) async fn serve(
        self,
        settings: &LiveSettings,
        ctx: &ConnectionContext,
        started: Instant,
    ) {
        // Fields moved out in place (no destructured copies): the slot and host guards stay in
        // `self` until the session ends.
        let (stream, client) = (self.held.stream, self.held.client);
        crate::proxy::pooling::serve::serve(stream, client, &self.who, settings, ctx, started).await
    }
}

/// The policy, shutdown and `server.max_connections` decide whether the session may start; a refusal
/// is sent and logged here. Returns the session's slot.
async fn admit(
    stream: &mut NegotiatedStream,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Option<OwnedSemaphorePermit> {
    let (peer, user, database) = (who.peer, LogSafe(&who.user), LogSafe(&who.database));
    let m = &ctx.metrics;
    if let Verdict::Reject(err) = policy::decide(settings.mode, who.class, who.transport, &who.user)
    {
        m.policy_rejection(settings.mode, who.class).increment(1);
        negotiate::send_fatal(stream, &err).await;
        info!(%peer, %user, %database, class = %who.class, tls = %who.tls, mode = %settings.mode,
              outcome = "rejected", "SSL policy refused the connection");
        return None;
    }
    if ctx.draining.is_cancelled() {
        let err = ErrorResponse::fatal(SqlState::AdminShutdown, "the proxy is shutting down");
        negotiate::send_fatal(stream, &err).await;
        info!(%peer, %user, outcome = "refused", "shutting down");
        return None;
    }
    // PostgreSQL answers "too many clients" once it has read the start-up packet; so does pgssl.
    let Ok(slot) = ctx.sessions.clone().try_acquire_owned() else {
        m.over_limit(Limit::MaxConnections).increment(1);
        negotiate::send_fatal(stream, &negotiate::too_many_clients()).await;
        info!(%peer, %user, outcome = "over_limit",
              "server.max_connections sessions are open; start-up refused");
        return None;
    };
    Some(slot)
}
