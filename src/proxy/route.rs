//! Routing, between the policy and the login: which repository host a session goes to (its
//! user's target: the primary, a standby, either), waiting for a failover when it needs a primary
//! and there is none; and how a session ends when its host stops being what it was routed to.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::proxy::connection::{ConnectionContext, Who};
use crate::proxy::negotiate;
use crate::proxy::protocol::login_watch::LoginOutcome;
use crate::proxy::protocol::{ErrorResponse, SqlState};
use crate::proxy::relay::RelayEnd;
use crate::proxy::repository::hosts::{NoHost, Routed};
use crate::proxy::repository::tls::RepositoryTls;
use crate::proxy::repository::{RepositoryConnectError, RepositoryStream};
use crate::proxy::startups::StartupPlace;
use crate::proxy::stream::NegotiatedStream;
use crate::telemetry::LogSafe;

/// The repository host a session goes to: routed before its login, moved to another when a
/// connection to it cannot be made while the hosts fail over. Shared by the clones of a [`Start`],
/// so that the session relays under the epoch of the host it finally reached.
#[derive(Clone)]
pub(crate) struct HostChoice(Arc<Mutex<Routed>>);

impl HostChoice {
    pub(crate) fn new(routed: Routed) -> HostChoice {
        HostChoice(Arc::new(Mutex::new(routed)))
    }

    /// The host now.
    pub(crate) fn get(&self) -> Routed {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, routed: Routed) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = routed;
    }
}

/// Finds the session's repository host (see [`find_host`]). A login waiting for a failover still
/// counts among those starting (`server.max_startups`), and gives its place up to a newer connection
/// as a stalled negotiation does (53300).
pub(crate) async fn route(
    stream: &mut NegotiatedStream,
    who: &Who,
    ctx: &ConnectionContext,
    starting: &StartupPlace,
) -> Option<Routed> {
    let waiting = starting
        .deadline(Instant::now() + ctx.repository.options().failover_wait + Duration::from_secs(1));
    match waiting.run(find_host(stream, who, ctx)).await {
        Ok(routed) => routed,
        Err(_) => {
            negotiate::send_fatal(stream, &negotiate::too_many_clients()).await;
            info!(peer = %who.peer, user = %LogSafe(&who.user), outcome = "over_limit",
                  "a login waiting for a repository failover gave its place to a newer connection");
            None
        }
    }
}

/// Finds the session's repository host, waiting for a failover when its user needs the primary and
/// there is none; a refusal is answered (08006) and logged here.
async fn find_host(
    stream: &mut NegotiatedStream,
    who: &Who,
    ctx: &ConnectionContext,
) -> Option<Routed> {
    let target = ctx.repository.target_of(&who.user, who.class);
    match ctx.repository.route(target).await {
        Ok(routed) => Some(routed),
        Err(e) => {
            let code = match e {
                NoHost::Closing => SqlState::AdminShutdown,
                NoHost::NoPrimary(_) | NoHost::NoStandby => SqlState::ConnectionFailure,
            };
            negotiate::send_fatal(stream, &ErrorResponse::fatal(code, e.to_string())).await;
            warn!(peer = %who.peer, user = %LogSafe(&who.user), %target, error = %e,
                  outcome = "no_repository_host", "no repository host can take the session");
            None
        }
    }
}

/// Tells the client why a relay that was stopped from outside ended — an administrator's
/// `sessions terminate`, or a failover — and returns whether it was; `false` for any other end.
/// `between_messages`: whether the client has had whole messages only; if not, a FATAL would land
/// inside a message and read as garbage, so the connection is only closed.
pub(crate) async fn end_stopped(
    stream: &mut NegotiatedStream,
    end: &RelayEnd,
    who: &Who,
    ctx: &ConnectionContext,
    between_messages: bool,
) -> bool {
    if !matches!(end, RelayEnd::Shutdown(_)) || ctx.closing.is_cancelled() {
        return false;
    }
    match who.session.terminated() {
        Some(by) if between_messages => end_terminated(stream, who, by).await,
        Some(by) => {
            info!(peer = %who.peer, user = %LogSafe(&who.user), session = who.session.id(), by = %LogSafe(by),
                  outcome = "terminated", "an administrator terminated the session while a message was on its way to it: closed without a word")
        }
        None if between_messages => end_for_failover(stream, who, ctx).await,
        None => {
            ctx.metrics.repository_sessions_ended.increment(1);
            info!(peer = %who.peer, user = %LogSafe(&who.user), outcome = "failed_over",
                  "ended a session whose repository host is no longer what it was routed to, while a message was on its way: closed without a word")
        }
    }
    true
}

/// Tells a client an administrator ended its session: 57P01, as `pg_terminate_backend` does. The
/// client is told the action; who took it is logged, not told.
async fn end_terminated(stream: &mut NegotiatedStream, who: &Who, by: &str) {
    let err = ErrorResponse::fatal(
        SqlState::AdminShutdown,
        "terminating connection due to administrator command (pgssl sessions terminate)",
    )
    .with_hint("Reconnect if the session is still wanted.");
    negotiate::send_fatal(stream, &err).await;
    info!(peer = %who.peer, user = %LogSafe(&who.user), session = who.session.id(), by = %LogSafe(by),
          outcome = "terminated", "an administrator terminated the session");
}

/// Tells a client whose host stopped being the primary why its session ends: 57P01, which drivers
/// and pools already take as "reconnect".
pub(crate) async fn end_for_failover(
    stream: &mut NegotiatedStream,
    who: &Who,
    ctx: &ConnectionContext,
) {
    ctx.metrics.repository_sessions_ended.increment(1);
    let err = ErrorResponse::fatal(
        SqlState::AdminShutdown,
        "terminating connection because the repository failed over: its host is no longer the primary",
    )
    .with_hint("Reconnect: new sessions go to the new primary.");
    negotiate::send_fatal(stream, &err).await;
    info!(peer = %who.peer, user = %LogSafe(&who.user), outcome = "failed_over",
          "ended a session: its repository host is no longer what it was routed to");
}

/// Connects to the session's host over `tls`. A host that does not answer while the hosts fail
/// over is left for the next one: the login waits for it (up to `repository.failover_wait`), as for
/// a primary while there is none. Returns the host it ended with.
pub(crate) async fn connect(
    choice: &HostChoice,
    tls: &RepositoryTls,
    who: &Who,
    ctx: &ConnectionContext,
) -> (Result<RepositoryStream, RepositoryConnectError>, Routed) {
    let (peer, user) = (who.peer, LogSafe(&who.user));
    let mut routed = choice.get();
    let waiting_until = Instant::now() + ctx.repository.options().failover_wait;
    loop {
        match routed.connector.connect(ctx.connect_timeout, tls).await {
            Err(e) if e.unreachable() => {
                let next = ctx
                    .repository
                    .reroute(&routed, e.to_string(), waiting_until);
                match next.await {
                    Some(next) => {
                        info!(%peer, %user, from = %routed.connector, to = %next.connector, error = %e,
                              "a repository host did not answer; the session goes to another");
                        choice.set(next.clone());
                        routed = next;
                    }
                    None => return (Err(e), routed),
                }
            }
            done => return (done, routed),
        }
    }
}

/// After the repository refused a new session's start-up because its host cannot take sessions now
/// ([`LoginOutcome::host_unavailable`]: the old primary shutting down in a switchover, a host
/// starting up): routes the session again, as for a host that did not answer, waiting for another
/// no later than `deadline`. `false` with a single host, or when none turned up in time: the
/// refusal goes to the client as it is.
pub(crate) async fn reroute_unavailable(
    choice: &HostChoice,
    refusal: &LoginOutcome,
    deadline: Instant,
    who: &Who,
    ctx: &ConnectionContext,
) -> bool {
    let LoginOutcome::Refused { sqlstate, message } = refusal else {
        return false;
    };
    let routed = choice.get();
    let reason = format!("refused a new session: {message} (SQLSTATE {sqlstate})");
    let Some(next) = ctx.repository.reroute(&routed, reason, deadline).await else {
        return false;
    };
    info!(peer = %who.peer, user = %LogSafe(&who.user), from = %routed.connector, to = %next.connector,
          sqlstate = %LogSafe(sqlstate), "a repository host cannot take sessions now; the session goes to another");
    if next.index == routed.index {
        // The probes still saw it usable (a smart shutdown keeps their session): a pause, so
        // that the login does not knock at its door in a tight loop until they see otherwise.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    choice.set(next);
    true
}

/// Refuses a primary-bound session whose new backend said it is a hot standby (the probes had not
/// seen the demotion yet): before the client sent anything.
pub(crate) async fn refuse_in_recovery(stream: &mut NegotiatedStream, who: &Who) {
    let (peer, user) = (who.peer, LogSafe(&who.user));
    warn!(%peer, %user, outcome = "primary_in_recovery",
          "the repository host routed to as the primary is in recovery; the session was refused before any query");
    let err = ErrorResponse::fatal(
        SqlState::ConnectionFailure,
        "the repository host chosen as the primary is in recovery (a failover is under way)",
    )
    .with_hint("Reconnect: the hosts are being probed again.");
    negotiate::send_fatal(stream, &err).await;
}
