//! A proxy-mode session's life after its backend is found: the relay, and — when the client leaves
//! an idle session — the reset that makes it fresh and its return to the pool.

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Lease;
use crate::proxy::backend::{Backend, Pool, reset};
use crate::proxy::connection::{ConnectionContext, Who, log_end};
use crate::proxy::identity::guard::StreamGuard;
use crate::proxy::negotiate;
use crate::proxy::protocol::session_watch::{Idle, SessionWatch};
use crate::proxy::protocol::{ErrorResponse, SqlState};
use crate::proxy::relay::{self, PooledEnd, RelayEnd};
use crate::proxy::route;
use crate::proxy::settings::LiveSettings;
use crate::proxy::stream::NegotiatedStream;
use crate::telemetry::LogSafe;

/// Relays the session, logs how it ended, and resets and returns the backend when the client left
/// it idle.
pub(crate) async fn serve(
    stream: NegotiatedStream,
    lease: Lease,
    who: &Who,
    on: (&LiveSettings, &ConnectionContext),
    started: Instant,
) {
    serve_from(stream, lease, &[], who, on, started).await
}

/// Cancels what `backend` runs when an administrator terminated its session, as
/// `pg_terminate_backend` ends the query too: closing the connection alone would leave it running,
/// holding its locks, until it finished.
pub(crate) async fn cancel_if_terminated(
    backend: &Backend,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) {
    if who.session.terminated().is_none() {
        return;
    }
    let packet = backend.cancel_packet();
    if let Err(e) =
        crate::proxy::cancel_route::to_host(backend.host(), &packet, settings, ctx).await
    {
        warn!(pid = backend.pid(), error = %e, "could not cancel the query of a terminated session");
    }
}

/// [`serve`] for a session the client logged into without a backend: `first` is what it sent
/// before it had one, sent on first.
pub(crate) async fn serve_from(
    mut stream: NegotiatedStream,
    mut lease: Lease,
    first: &[u8],
    who: &Who,
    (settings, ctx): (&LiveSettings, &ConnectionContext),
    started: Instant,
) {
    let mut watch = SessionWatch::default();
    let stop = who.session.relay_stop(lease.backend.epoch());
    who.session
        .on_backend(Some((lease.backend.pid(), lease.backend.host())));
    let mut guard = StreamGuard::default();
    if guard.feed(first).is_some() {
        // Nothing of it reached the session, which goes back as it was handed out (when it may).
        ctx.cancels.revoke(&lease.key);
        refuse_identity_write(&mut stream, who).await;
        log_end(
            who,
            RelayEnd::Closed(Default::default()),
            None,
            started,
            &ctx.metrics,
        );
        match lease.poolable {
            true => ctx.pool.checkin(lease.backend),
            false => {
                ctx.metrics.pool.closed.increment(1);
                lease.backend.close().await;
            }
        }
        return;
    }
    let upto = match watch.on_client(first) {
        crate::proxy::protocol::session_watch::ClientChunk::Forward => first.len(),
        crate::proxy::protocol::session_watch::ClientChunk::Terminated(n) => n,
    };
    let sent = async {
        lease.backend.stream().write_all(&first[..upto]).await?;
        lease.backend.stream().flush().await
    };
    if !first.is_empty() && sent.await.is_err() {
        ctx.cancels.revoke(&lease.key);
        ctx.metrics.pool.closed.increment(1);
        let end = RelayEnd::Failed(
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the repository session failed",
            ),
            relay::Transferred::default(),
        );
        log_end(who, end, None, started, &ctx.metrics);
        return;
    }
    let relayed = relay::relay_pooled(
        &mut stream,
        lease.backend.stream(),
        &stop,
        &mut watch,
        guard,
        &who.session,
    );
    let end = relayed.await;
    ctx.cancels.revoke(&lease.key);
    let m = &ctx.metrics.pool;
    match end {
        PooledEnd::ClientLeft(moved) => {
            let _ = stream.shutdown().await;
            drop(stream);
            log_end(who, RelayEnd::Closed(moved), None, started, &ctx.metrics);
            match watch.idle().filter(|_| lease.poolable) {
                Some(how) => Box::pin(give_back(lease.backend, how, ctx)).await,
                None => {
                    m.closed.increment(1);
                    lease.backend.close().await;
                }
            }
        }
        PooledEnd::Refused(moved) => {
            // The session has part of a message: it is closed, never handed out again.
            m.closed.increment(1);
            lease.backend.close().await;
            refuse_identity_write(&mut stream, who).await;
            log_end(who, RelayEnd::Closed(moved), None, started, &ctx.metrics);
        }
        PooledEnd::Ended(end) => {
            m.closed.increment(1);
            let between = watch.server_between_messages();
            if route::end_stopped(&mut stream, &end, who, ctx, between).await {
                if watch.state() == crate::proxy::sessions::SessionState::Active {
                    cancel_if_terminated(&lease.backend, who, settings, ctx).await;
                }
                lease.backend.close().await;
            }
            log_end(who, end, None, started, &ctx.metrics);
        }
    }
    m.sessions(ctx.pool.totals());
}

/// Ends a relayed session whose client sent a statement that writes `pgssl.*` (its relay stopped
/// short of it), telling the client why.
pub(crate) async fn refuse_identity_write(stream: &mut NegotiatedStream, who: &Who) {
    let err = ErrorResponse::fatal(
        SqlState::InsufficientPrivilege,
        crate::proxy::identity::REFUSED,
    );
    negotiate::send_fatal(stream, &err).await;
    info!(peer = %who.peer, user = %LogSafe(&who.user), outcome = "sets_pgssl",
          "closed a session whose client sent a statement that sets a pgssl.* setting");
}

/// Resets a session its client left idle and keeps it warm, or closes it if the reset fails.
pub(crate) async fn give_back(mut backend: Backend, how: Idle, ctx: &ConnectionContext) {
    let pool: &Pool = &ctx.pool;
    let deadline = Instant::now() + ctx.connect_timeout;
    let m = &ctx.metrics.pool;
    match reset::reset(&mut backend, how, &pool.options().reset_query, deadline).await {
        Ok(()) => {
            m.kept.increment(1);
            pool.checkin(backend);
        }
        Err(e) => {
            m.closed.increment(1);
            warn!(pid = backend.pid(), error = %e, "could not reset a repository session; closing it");
            backend.close().await;
        }
    }
}
