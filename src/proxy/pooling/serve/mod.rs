//! A transaction-pooled client from its login to its leaving: it holds no backend while it sends
//! nothing; its first message takes one (warm, or opened with its proof); the backend goes back to
//! the pool at the ReadyForQuery that ends its transaction, unless something pinned it.
//!
//! The loop is a poll function over both sockets, as the relay's is: reads land in a buffer on the
//! stack of the poll call, so a client that sends nothing owns no buffer, and each direction stops
//! reading while its destination lags (`pump::HIGH`), so neither side can make pgssl buffer without
//! bound, nor deadlock two peers that both write.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::info;

use super::tracker::Tracker;
use crate::proxy::auth::terminate::{Proven, write_frame};
use crate::proxy::backend::cancel::ClientKey;
use crate::proxy::backend::pool::PoolMode;
use crate::proxy::backend::{Backend, PoolKey, reset, welcome_message};
use crate::proxy::connection::{ConnectionContext, Start, Who, log_end};
use crate::proxy::identity::Identity;
use crate::proxy::negotiate;
use crate::proxy::protocol::login_watch::LoginOutcome;
use crate::proxy::protocol::{ErrorResponse, SqlState};
use crate::proxy::relay::RelayEnd;
use crate::proxy::repository::hosts::Routed;
use crate::proxy::route;
use crate::proxy::session;
use crate::proxy::sessions::SessionState;
use crate::proxy::settings::LiveSettings;
use crate::proxy::stream::NegotiatedStream;
use crate::telemetry::LogSafe;

/// A transaction-pooled client once logged in.
pub(crate) struct Client {
    proven: Arc<Proven>,
    /// Its start-up packet and protocol version: what opens a new backend for it.
    startup: Bytes,
    minor: u16,
    key: Arc<PoolKey>,
    cancel: ClientKey,
    /// Its repository host: whether it was routed there as the primary, and that routing's epoch.
    routed: Routed,
    tracker: Tracker,
    backend: Option<Backend>,
    /// Session mode: the first backend it takes is its own until it leaves.
    mode: PoolMode,
}

/// Logs a proxy-mode client in for transaction pooling without a backend, when a session of its
/// key has reported its start-up parameters before: pgssl's SASLFinal, then AuthenticationOk,
/// those parameters (with the client's own `application_name`), a cancel key pgssl minted,
/// ReadyForQuery. `Ok(None)`: none has, and the caller takes a backend at login. `Err(())`: the
/// client could not be answered.
pub(crate) async fn welcome(
    stream: &mut NegotiatedStream,
    start: &Start,
    proven: &Proven,
    identity: Option<Arc<Identity>>,
    ctx: &ConnectionContext,
) -> Result<Option<Box<Client>>, ()> {
    let Some(key) = PoolKey::of(&start.startup) else {
        return Ok(None);
    };
    let routed = start.host.get();
    let key = Arc::new(key.on_host(routed.index));
    let application_name = start.startup.param("application_name").unwrap_or_default();
    let Some(reported) = ctx.pool.welcome(&key, application_name) else {
        return Ok(None);
    };
    // pool.min_warm opens sessions with the newest proof of the role (a changed password is learned
    // here as at a login that takes its backend).
    ctx.prefill
        .learn(&key, &start.startup, proven, &routed.epoch);
    let Ok(cancel) = ctx.cancels.mint_for(start.startup.agreed_minor(), None) else {
        let err = ErrorResponse::fatal(
            SqlState::ConnectionFailure,
            "the system random number generator failed",
        );
        negotiate::send_fatal(stream, &err).await;
        return Err(());
    };
    let mut out = BytesMut::from(&proven.client_final.encode()[..]);
    out.extend_from_slice(&welcome_message(&reported, &cancel));
    let sent = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    if sent.await.is_err() {
        ctx.cancels.revoke(&cancel);
        return Err(());
    }
    Ok(Some(Box::new(Client {
        proven: Arc::new(proven.clone()),
        startup: start.startup.raw.clone(),
        minor: start.startup.minor,
        key,
        cancel,
        routed,
        tracker: tracker(ctx, reported, identity),
        backend: None,
        mode: ctx
            .pool
            .options()
            .mode_for(&key_role(&start.startup), &key_database(&start.startup)),
    })))
}

/// A transaction-pooled client that was given a backend at login (no session of its key had
/// reported its parameters yet): it starts out holding it.
pub(crate) fn with_lease(
    lease: session::Lease,
    start: &Start,
    proven: &Proven,
    ctx: &ConnectionContext,
) -> Box<Client> {
    let routed = start.host.get();
    let (backend, cancel, identity) = lease.into_parts();
    let key = PoolKey::of(&start.startup)
        .unwrap_or_else(|| PoolKey::unpooled("", ""))
        .on_host(routed.index);
    let reported = Arc::new(backend.params().to_vec());
    Box::new(Client {
        proven: Arc::new(proven.clone()),
        startup: start.startup.raw.clone(),
        minor: start.startup.minor,
        key: Arc::new(key),
        cancel,
        // The login's connect routed it again if its host did not answer: the choice is the
        // backend's host.
        routed,
        tracker: tracker(ctx, reported, identity),
        backend: Some(backend),
        mode: PoolMode::Transaction,
    })
}

fn tracker(
    ctx: &ConnectionContext,
    reported: Arc<Vec<(Bytes, Bytes)>>,
    identity: Option<Arc<Identity>>,
) -> Tracker {
    let mut tracker = Tracker::new(ctx.pool.options().track.clone(), reported);
    tracker.set_identity(identity);
    tracker
}

fn key_role(startup: &crate::proxy::protocol::StartupMessage) -> String {
    startup.user().unwrap_or_default().to_string()
}

fn key_database(startup: &crate::proxy::protocol::StartupMessage) -> String {
    startup.database().unwrap_or_default().to_string()
}

/// Serves the client until it leaves, and logs how it ended.
pub(crate) async fn serve(
    mut stream: NegotiatedStream,
    mut client: Box<Client>,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    started: Instant,
) {
    let mut io = Io::default();
    // The session's own token: a child of the server's closing, cancelled by a termination too.
    let stop = who.session.stop().clone();
    let mut refused = None;
    // A client that logged in with a backend holds it from the start.
    if let Some(b) = &client.backend {
        who.session.on_backend(Some((b.pid(), client.routed.index)));
    }
    let end = loop {
        if client.backend.is_none() {
            io.shrink();
            who.session.publish(io.moved, SessionState::Idle);
            let waited = wait_message(&mut stream, &mut io, &stop, &client.routed.epoch).await;
            match waited {
                Ok(true) => {}
                Ok(false) => break RelayEnd::Closed(io.moved),
                Err(end) => break end,
            }
            if client.mode == PoolMode::Session {
                let session = serve_session(stream, client, io, who, settings, ctx, started);
                return Box::pin(session).await;
            }
            // Boxed, as every rare step here: a task is as large as its largest state, and an idle
            // client should cost only what waiting for its next message needs.
            who.session.set_state(SessionState::Waiting);
            match Box::pin(take_unless_stopped(&mut client, settings, ctx, &stop)).await {
                None => break RelayEnd::Shutdown(io.moved),
                Some(Ok(backend)) => {
                    who.session
                        .on_backend(Some((backend.pid(), client.routed.index)));
                    who.session.set_state(SessionState::Active);
                    client.backend = Some(backend);
                }
                Some(Err(why)) => {
                    refused = Box::pin(why.answer(&mut stream, who)).await;
                    break RelayEnd::Closed(io.moved);
                }
            }
            let backend = client.backend.as_mut().expect("just taken");
            let (_, be, params) = backend.pooling_parts();
            client.tracker.hand_over(be, params, &mut io.out);
            let target = Some((backend.cancel_packet(), client.routed.index));
            ctx.cancels.retarget(&client.cancel, target);
        }
        let Some(backend) = client.backend.as_mut() else {
            continue;
        };
        let counted = |t: &mut Tracker| count_pins(t, who, ctx);
        let pumped = pump(
            &mut stream,
            backend,
            &mut client.tracker,
            &mut io,
            &stop,
            &who.session,
            counted,
        )
        .await;
        match pumped {
            Pumped::Released => {
                who.session.on_backend(None);
                ctx.cancels.retarget(&client.cancel, None);
                client.tracker.released();
                if let Some(b) = client.backend.take() {
                    ctx.pool.checkin(b);
                }
                ctx.metrics.pool.sessions(ctx.pool.totals());
            }
            Pumped::ClientLeft => break RelayEnd::Closed(io.moved),
            Pumped::Ended(end) => break end,
        }
    };
    ctx.cancels.revoke(&client.cancel);
    let clean = io.server.at_boundary() && io.out.to_server.is_empty();
    if let Some(b) = client
        .backend
        .as_ref()
        .filter(|_| client.tracker.awaiting())
    {
        Box::pin(session::cancel_if_terminated(b, who, settings, ctx)).await;
    }
    // The backend goes straight into the boxed step, not through a local held across its await.
    let giving = client
        .backend
        .take()
        .map(|b| Box::pin(give_back(b, &client.tracker, clean, ctx)));
    if let Some(giving) = giving {
        giving.await;
    }
    let between = io.server.at_boundary() && io.out.to_client.is_empty();
    let stopped = Box::pin(route::end_stopped(&mut stream, &end, who, ctx, between)).await;
    if !stopped && client.routed.epoch.is_cancelled() && !ctx.closing.is_cancelled() {
        Box::pin(route::end_for_failover(&mut stream, who, ctx)).await;
    } else if !stopped && matches!(end, RelayEnd::Closed(_)) {
        let _ = flush_client(&mut stream, &mut io).await;
        let _ = stream.shutdown().await;
    }
    log_end(who, end, refused, started, &ctx.metrics);
    ctx.metrics.pool.sessions(ctx.pool.totals());
}

/// Session mode after a login without a backend: the client's first message takes one (with its
/// `application_name`), which serves it as any session-mode backend does until it leaves.
async fn serve_session(
    mut stream: NegotiatedStream,
    mut client: Box<Client>,
    mut io: Io,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    started: Instant,
) {
    let stop = who.session.stop().clone();
    let mut backend = match take_unless_stopped(&mut client, settings, ctx, &stop).await {
        Some(Ok(backend)) => backend,
        None => {
            ctx.cancels.revoke(&client.cancel);
            let end = RelayEnd::Shutdown(io.moved);
            route::end_stopped(&mut stream, &end, who, ctx, true).await;
            log_end(who, end, None, started, &ctx.metrics);
            return;
        }
        Some(Err(why)) => {
            ctx.cancels.revoke(&client.cancel);
            let refused = why.answer(&mut stream, who).await;
            log_end(
                who,
                RelayEnd::Closed(io.moved),
                refused,
                started,
                &ctx.metrics,
            );
            return;
        }
    };
    let name = client.tracker.told("application_name").unwrap_or_default();
    let deadline = Instant::now() + ctx.connect_timeout;
    let handed = reset::hand_out(
        &mut backend,
        Some(&name),
        client.tracker.identity(),
        deadline,
    );
    if let Err(e) = handed.await {
        ctx.cancels.revoke(&client.cancel);
        backend.close().await;
        let err = ErrorResponse::fatal(
            SqlState::ConnectionFailure,
            "lost the connection to the repository",
        );
        negotiate::send_fatal(&mut stream, &err).await;
        info!(peer = %who.peer, user = %LogSafe(&who.user), error = %e, outcome = "upstream_failed",
              "a warm session failed at hand-out");
        log_end(who, RelayEnd::Closed(io.moved), None, started, &ctx.metrics);
        return;
    }
    ctx.cancels.retarget(
        &client.cancel,
        Some((backend.cancel_packet(), client.routed.index)),
    );
    backend.served_one();
    let first = std::mem::take(&mut io.from_client);
    let lease = session::Lease::new(backend, client.cancel);
    session::serve_from(stream, lease, &first, who, (settings, ctx), started).await;
}

/// [`take_backend`], unless the session is stopped first (terminated, or the server's grace period
/// over): `None`. Biased, so that a backend at hand is taken without looking at the token.
async fn take_unless_stopped(
    client: &mut Client,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Result<Backend, NoBackend>> {
    tokio::select! {
        biased;
        taken = take_backend(client, settings, ctx) => Some(taken),
        () = stop.cancelled() => None,
    }
}

/// Why a client's next transaction got no backend: pgssl's FATAL, or the repository's.
enum NoBackend {
    Ours(ErrorResponse),
    Repository(crate::proxy::protocol::auth_message::Frame),
}

impl NoBackend {
    /// Sends the client the error (it ends its session). pgssl's own is logged here; the
    /// repository's refusal is returned, for the session's one log line to say.
    async fn answer(self, stream: &mut NegotiatedStream, who: &Who) -> Option<LoginOutcome> {
        match self {
            NoBackend::Ours(err) => {
                negotiate::send_fatal(stream, &err).await;
                info!(peer = %who.peer, user = %LogSafe(&who.user), sqlstate = err.code.code(),
                      outcome = "no_backend", "{}", LogSafe(&err.message));
                None
            }
            NoBackend::Repository(frame) => {
                let _ = write_frame(stream, &frame).await;
                Some(LoginOutcome::refused(&frame.body))
            }
        }
    }
}

/// Counts and logs a pin (once per client, as it happens) and a refusal.
fn count_pins(tracker: &mut Tracker, who: &Who, ctx: &ConnectionContext) {
    if let Some(reason) = tracker.take_new_pin() {
        ctx.metrics.pool.pinned(reason).increment(1);
        info!(peer = %who.peer, user = %LogSafe(&who.user), database = %LogSafe(&who.database),
              reason = reason.label(), "the client's repository session is pinned to it for the rest of its session: {reason} cannot move between sessions");
    }
    if let Some(reason) = tracker.take_refused() {
        ctx.metrics.pool.refused(reason).increment(1);
        info!(peer = %who.peer, user = %LogSafe(&who.user), reason = reason.label(),
              "refused a statement that would pin the client's repository session (pool.on_pin = refuse)");
    }
}

mod backend;
mod pump;

use backend::{give_back, take_backend};
use pump::{Io, Pumped, flush_client, pump, wait_message};
