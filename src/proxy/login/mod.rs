//! A session's login, between its routing and the relay: the failed-login limit, then authentication
//! in the server's mode — pgssl's own SCRAM and the pass-through login (proxy), or the repository's
//! exchange relayed (passthrough) — with every refusal answered and logged here.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::proxy::auth::lockout::Attempt as Counted;
use crate::proxy::auth::passthrough::Verdict;
use crate::proxy::auth::terminate::{
    self, ClientAuthError, Proven, RepositoryAuthError, VerifierSource,
};
use crate::proxy::auth::{self, AuthEnd, AuthPlan};
use crate::proxy::backend::pool::PoolMode;
use crate::proxy::cert_login::{self, CertStep};
use crate::proxy::connection::{ConnectionContext, Start, Who, log_end, open_backend};
use crate::proxy::metrics::{AuthMechanism, AuthOutcome, ProxyMetrics};
use crate::proxy::negotiate;
use crate::proxy::policy::Transport;
use crate::proxy::pooling;
use crate::proxy::protocol::auth_message::AuthMessageError;
use crate::proxy::protocol::login_watch::LoginOutcome;
use crate::proxy::protocol::{ErrorResponse, SqlState};
use crate::proxy::relay::{self, RelayEnd};
use crate::proxy::repository::RepositoryStream;
use crate::proxy::route;
use crate::proxy::session::{self, Credential, Lease, NoBackend};
use crate::proxy::settings::LiveSettings;
use crate::proxy::stream::NegotiatedStream;
use crate::telemetry::LogSafe;

mod refuse;
use refuse::{
    refuse_authentication, refuse_client, refuse_locked_out, refuse_no_backend, relay_refusal,
};

/// A session that is logged in.
pub(crate) enum LoggedIn {
    /// Passthrough: the repository connection, its login answers still to relay.
    Relayed(RepositoryStream),
    /// Proxy mode: a backend whose start-up answer the client has had.
    Proxied(Box<Lease>),
    /// Proxy mode, transaction pooling: the client has had its start-up answer; it may hold a
    /// backend or not.
    Pooled(Box<crate::proxy::pooling::serve::Client>),
}

/// Logs the session in, or returns `None` when the login was refused (answered and logged).
pub(crate) async fn log_in(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    started: Instant,
) -> Option<LoggedIn> {
    // The exchange gets its own window: a client that stalls mid-authentication is cut off.
    let authenticating = Instant::now();
    let deadline = authenticating + ctx.handshake_timeout;
    // A certificate the handshake verified is not a password: the password lockout is not in its
    // way (a client that guesses passwords for a user from the same address, or behind the same
    // relay, must not shut out the holder of that user's certificate).
    let start = match cert_login::by_certificate(stream, start, who, settings, ctx, deadline).await
    {
        CertStep::Continue(start) => start,
        CertStep::Refused => return None,
        CertStep::LoggedIn(upstream) => return Some(LoggedIn::Relayed(upstream)),
        CertStep::Pooled {
            start,
            verifier,
            can_login,
        } => {
            let pooled = Pooled {
                start,
                verifier,
                can_login,
                deadline,
                started,
            };
            return certified(stream, who, settings, ctx, pooled).await;
        }
    };
    // Counted from now on: parallel guesses cannot outrun the limit.
    let counted = match ctx.lockout.begin(who.peer.ip(), &who.user) {
        Ok(counted) => counted,
        Err(wait) => {
            refuse_locked_out(stream, who, wait, &ctx.metrics).await;
            return None;
        }
    };
    let proxy = match &ctx.auth {
        AuthPlan::Passthrough => None,
        AuthPlan::Proxy {
            lookup,
            mock_secret,
            required,
        } => match lookup.as_ref().or(settings.lookup.as_ref()) {
            Some(lookup) => Some((&**lookup, mock_secret)),
            None if *required => {
                refuse_authentication(stream, who, AuthEnd::NoLookupUser).await;
                return None;
            }
            None => None,
        },
    };
    let attempt = Attempt {
        who,
        settings,
        ctx,
        authenticating,
        started,
    };
    let upstream = match proxy {
        Some((lookup, secret)) => {
            let source = Source { lookup, secret };
            proxy_login(stream, start, &attempt, source, counted).await
        }
        None => passthrough_login(stream, start, &attempt, counted)
            .await
            .map(LoggedIn::Relayed),
    };
    ctx.metrics
        .auth_seconds
        .record(authenticating.elapsed().as_secs_f64());
    upstream
}

/// A certificate-authenticated client bound for a warm backend.
struct Pooled {
    start: Start,
    verifier: crate::proxy::auth::scram::Verifier,
    can_login: bool,
    deadline: Instant,
    started: Instant,
}

/// Gives a certificate-authenticated client a warm backend of its role, or a new one.
async fn certified(
    stream: &mut NegotiatedStream,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    p: Pooled,
) -> Option<LoggedIn> {
    let credential = Credential::Certificate {
        verifier: &p.verifier,
        can_login: p.can_login,
    };
    let acquired = session::acquire(stream, p.start, who, settings, ctx, credential, p.deadline);
    let m = &ctx.metrics;
    match Box::pin(acquired).await {
        Ok(lease) => {
            who.logged_in(ctx, AuthMechanism::Certificate);
            Some(LoggedIn::Proxied(Box::new(lease)))
        }
        Err(why) => {
            m.auth(AuthMechanism::Certificate, AuthOutcome::RepositoryRefused)
                .increment(1);
            refuse_no_backend(stream, who, why, p.started, ctx).await;
            None
        }
    }
}

/// One login attempt: who, with which settings, since when.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    who: &'a Who,
    settings: &'a LiveSettings,
    ctx: &'a ConnectionContext,
    /// When authentication began (its deadline counts from here).
    authenticating: Instant,
    /// When the connection was accepted (for the session's log line).
    started: Instant,
}

impl Attempt<'_> {
    /// When the authentication exchange must be over.
    fn deadline(&self) -> Instant {
        self.authenticating + self.ctx.handshake_timeout
    }
}

/// Where proxy mode's verifiers come from.
struct Source<'a> {
    lookup: &'a dyn VerifierSource,
    secret: &'a [u8; 32],
}

/// Proxy mode: pgssl authenticates the client, then gives it a backend logged in as that role.
async fn proxy_login(
    stream: &mut NegotiatedStream,
    start: Start,
    attempt: &Attempt<'_>,
    source: Source<'_>,
    counted: Counted<'_>,
) -> Option<LoggedIn> {
    let Attempt {
        who, settings, ctx, ..
    } = *attempt;
    let (deadline, started) = (attempt.deadline(), attempt.started);
    let m = &ctx.metrics;
    if !start.pipelined.is_empty() {
        // Nothing may come before pgssl's authentication request has been answered.
        refuse_authentication(stream, who, AuthEnd::Malformed(AuthMessageError::Pipelined)).await;
        return None;
    }
    // As PostgreSQL does, the protocol version is settled before authentication begins.
    if let Some(answer) = start.startup.protocol_answer()
        && stream.write_all(&answer).await.is_err()
    {
        return None;
    }
    let binding = (who.transport == Transport::Tls)
        .then_some(settings.channel_binding.as_deref())
        .flatten();
    // Boxed, like the backend's acquisition below: a task is as large as its largest state, and a
    // session would otherwise carry the login's state for its whole life.
    let proven = tokio::time::timeout_at(
        deadline,
        Box::pin(terminate::authenticate_client(
            stream,
            &who.user,
            binding,
            source.lookup,
            source.secret,
        )),
    )
    .await;
    let proven = match proven {
        Ok(Ok(p)) => {
            m.lookups_ok.increment(1);
            p
        }
        Ok(Err(e)) => {
            match &e {
                ClientAuthError::Lookup(_) => m.lookups_failed.increment(1),
                ClientAuthError::Failed { known, .. } => {
                    m.lookups_ok.increment(1);
                    // A proof against a cached verifier the password has since replaced is
                    // not a guess: it is refused (SCRAM cannot judge it) but not counted.
                    let stale = *known && source.lookup.stale(&who.user).await;
                    if stale {
                        info!(peer = %who.peer, user = %LogSafe(&who.user),
                              "a proof against a kept verifier failed and the role's password has changed since: refused, not counted as a failed login; the next attempt reads the new verifier");
                    }
                    // Past the limit, the answer is the lockout's: it says nothing of the guess.
                    let verdict = if stale {
                        counted.not_counted()
                    } else {
                        counted.failed()
                    };
                    if let Err(wait) = verdict {
                        refuse_locked_out(stream, who, wait, m).await;
                        return None;
                    }
                }
                _ => {}
            }
            refuse_client(stream, who, e, m).await;
            return None;
        }
        Err(_) => {
            refuse_authentication(stream, who, AuthEnd::TimedOut).await;
            return None;
        }
    };
    // A right password whose pair was locked out while it was in flight is refused like any other
    // attempt then (its server signature is not sent).
    if let Err(wait) = counted.succeeded() {
        refuse_locked_out(stream, who, wait, m).await;
        return None;
    }
    // With warm sessions, the client logs in without a backend once a session of its key has
    // reported the parameters to tell it, and takes one at its first message; the first client of
    // a key takes one at login. (A NOLOGIN role must meet the repository's refusal at login.)
    let options = ctx.pool.options();
    let transaction =
        options.enabled && options.mode_for(&who.user, &who.database) == PoolMode::Transaction;
    if options.enabled && proven.can_login {
        let identity = who.identity(ctx, proven_mechanism(&proven));
        match pooling::serve::welcome(stream, &start, &proven, identity, ctx).await {
            Ok(Some(client)) => {
                who.logged_in(ctx, proven_mechanism(&proven));
                return Some(LoggedIn::Pooled(client));
            }
            Ok(None) => {}
            Err(()) => return None,
        }
    }
    let kept = transaction.then(|| start.clone());
    match Box::pin(session::acquire(
        stream,
        start,
        who,
        settings,
        ctx,
        Credential::Proof(&proven),
        deadline,
    ))
    .await
    {
        Ok(lease) => {
            who.logged_in(ctx, proven_mechanism(&proven));
            Some(match kept {
                Some(start) => {
                    LoggedIn::Pooled(pooling::serve::with_lease(lease, &start, &proven, ctx))
                }
                None => LoggedIn::Proxied(Box::new(lease)),
            })
        }
        Err(why) => {
            refuse_no_backend(stream, who, why, started, ctx).await;
            None
        }
    }
}

/// Passthrough: the repository authenticates; pgssl relays the exchange without the PLUS offer.
async fn passthrough_login(
    stream: &mut NegotiatedStream,
    start: Start,
    attempt: &Attempt<'_>,
    counted: Counted<'_>,
) -> Option<RepositoryStream> {
    let Attempt {
        who, settings, ctx, ..
    } = *attempt;
    let m = &ctx.metrics;
    // The repository's verdict is judged by the failed-login limit before it is relayed.
    let mut counted = Some(counted);
    let mut gate = |verdict: Verdict| match (counted.take(), verdict) {
        (None, _) => Ok(()),
        (Some(c), Verdict::Accepted) => c.succeeded(),
        (Some(c), Verdict::WrongPassword) => c.failed(),
    };
    // With several hosts, a host that refuses the start-up as unavailable (a switchover shutting it
    // down) hands the session to the next one, until this deadline.
    let waiting_until = Instant::now() + ctx.repository.options().failover_wait;
    // A session of its own: its `pgssl.*` values go in its start-up.
    let mut start = start;
    if let Some(id) = who.identity(ctx, AuthMechanism::Passthrough) {
        start.startup = id.in_startup(&start.startup);
    }
    let mut start = Some(start);
    let (upstream, end) = loop {
        let this = match ctx.repository.probed() {
            true => start.clone(),
            false => start.take(),
        }?;
        let host = this.host.clone();
        let mut upstream = open_backend(stream, this, who, settings, ctx).await?;
        let end =
            auth::passthrough_gated(stream, &mut upstream, attempt.deadline(), &mut gate).await;
        if let AuthEnd::Unavailable(frame) = &end {
            let refusal = LoginOutcome::refused(&frame.body);
            if route::reroute_unavailable(&host, &refusal, waiting_until, who, ctx).await {
                continue;
            }
        }
        break (upstream, end);
    };
    drop(start);
    match end {
        AuthEnd::Unavailable(frame) => {
            // No other host took the session: the client gets the refusal.
            relay_refusal(stream, who, &frame, attempt.started, m).await;
            None
        }
        AuthEnd::Authenticated => {
            who.logged_in(ctx, AuthMechanism::Passthrough);
            Some(upstream)
        }
        AuthEnd::LockedOut(wait) => {
            refuse_locked_out(stream, who, wait, m).await;
            None
        }
        AuthEnd::Handover => Some(upstream),
        AuthEnd::Refused(login) => {
            m.auth(AuthMechanism::Passthrough, AuthOutcome::RepositoryRefused)
                .increment(1);
            let _ = stream.shutdown().await;
            let end = RelayEnd::Closed(relay::Transferred::default());
            log_end(who, end, Some(login), attempt.started, m);
            None
        }
        refused => {
            refuse_authentication(stream, who, refused).await;
            None
        }
    }
}

fn proven_mechanism(proven: &Proven) -> AuthMechanism {
    if proven.mechanism == auth::scram::SCRAM_PLUS {
        AuthMechanism::ScramPlus
    } else {
        AuthMechanism::Scram
    }
}
