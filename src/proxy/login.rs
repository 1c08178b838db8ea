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
use crate::proxy::cert_login::{self, CertStep};
use crate::proxy::connection::{ConnectionContext, Start, Who, log_end, open_backend};
use crate::proxy::metrics::{AuthMechanism, AuthOutcome, ProxyMetrics};
use crate::proxy::negotiate;
use crate::proxy::policy::Transport;
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

/// A session that is logged in.
pub(crate) enum LoggedIn {
    /// Passthrough: the repository connection, its login answers still to relay.
    Relayed(RepositoryStream),
    /// Proxy mode: a backend whose start-up answer the client has had.
    Proxied(Box<Lease>),
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
            proxy_login(stream, start, &attempt, source, counted)
                .await
                .map(|lease| LoggedIn::Proxied(Box::new(lease)))
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
            m.auth(AuthMechanism::Certificate, AuthOutcome::Ok)
                .increment(1);
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
) -> Option<Lease> {
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
                    if *known {
                        source.lookup.forget(&who.user);
                    }
                    // Past the limit, the answer is the lockout's: it says nothing of the guess.
                    if let Err(wait) = counted.failed() {
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
            m.auth(proven_mechanism(&proven), AuthOutcome::Ok)
                .increment(1);
            Some(lease)
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
            // No other host: the repository's own words, as PostgreSQL would have sent them.
            let _ = terminate::write_frame(stream, &frame).await;
            let _ = stream.shutdown().await;
            let login = LoginOutcome::refused(&frame.body);
            let end = RelayEnd::Closed(relay::Transferred::default());
            log_end(who, end, Some(login), attempt.started, m);
            None
        }
        AuthEnd::Authenticated => {
            m.auth(AuthMechanism::Passthrough, AuthOutcome::Ok)
                .increment(1);
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

/// Refuses a login attempt while its (address, user) pair is locked out.
async fn refuse_locked_out(
    stream: &mut NegotiatedStream,
    who: &Who,
    wait: Duration,
    m: &ProxyMetrics,
) {
    m.auth(AuthMechanism::Scram, AuthOutcome::LockedOut)
        .increment(1);
    let secs = wait.as_secs() + 1;
    let err = ErrorResponse::fatal(
        SqlState::InvalidAuthorizationSpecification,
        format!(
            "too many failed logins for user \"{}\" from this address; try again in {secs} s",
            who.user
        ),
    );
    negotiate::send_fatal(stream, &err).await;
    let (peer, user) = (who.peer, LogSafe(&who.user));
    info!(%peer, %user, wait_secs = secs, outcome = "locked_out", "login refused: too many failed logins");
}

fn proven_mechanism(proven: &Proven) -> AuthMechanism {
    if proven.mechanism == auth::scram::SCRAM_PLUS {
        AuthMechanism::ScramPlus
    } else {
        AuthMechanism::Scram
    }
}

/// Ends a session whose client failed pgssl's own authentication: as PostgreSQL words it.
async fn refuse_client(
    stream: &mut NegotiatedStream,
    who: &Who,
    e: ClientAuthError,
    m: &ProxyMetrics,
) {
    let (peer, user) = (who.peer, LogSafe(&who.user));
    let err = match &e {
        ClientAuthError::Failed { reason, known } => {
            let outcome = if *known {
                AuthOutcome::BadPassword
            } else {
                AuthOutcome::UnknownUser
            };
            m.auth(AuthMechanism::Scram, outcome).increment(1);
            info!(%peer, %user, reason = *reason, outcome = "password_failed", "password authentication failed");
            ErrorResponse::fatal(
                SqlState::InvalidPassword,
                format!("password authentication failed for user \"{}\"", who.user),
            )
        }
        ClientAuthError::Io(e) => {
            info!(%peer, %user, error = %e, outcome = "failed", "the connection failed during authentication");
            return;
        }
        ClientAuthError::Lookup(l) => {
            warn!(%peer, %user, error = %l, outcome = "lookup_failed", "could not look up the role's verifier");
            ErrorResponse::fatal(
                SqlState::ConnectionFailure,
                "could not connect to the repository: the credentials lookup failed",
            )
        }
        other => {
            info!(%peer, %user, error = %other, outcome = "authentication_failed", "invalid SCRAM exchange");
            ErrorResponse::fatal(SqlState::ProtocolViolation, other.to_string())
        }
    };
    negotiate::send_fatal(stream, &err).await;
}

/// Answers a client pgssl authenticated but could find no backend for.
async fn refuse_no_backend(
    stream: &mut NegotiatedStream,
    who: &Who,
    why: NoBackend,
    started: Instant,
    ctx: &ConnectionContext,
) {
    match why {
        NoBackend::Answered => {}
        NoBackend::Repository(e) => {
            refuse_by_repository(stream, who, e, started, &ctx.metrics).await
        }
        NoBackend::TimedOut => refuse_authentication(stream, who, AuthEnd::TimedOut).await,
        NoBackend::Exhausted(e) => {
            let (peer, user) = (who.peer, LogSafe(&who.user));
            info!(%peer, %user, outcome = "pool_exhausted", error = %e,
                  "no repository session came free within pool.checkout_timeout");
            let err = ErrorResponse::fatal(SqlState::TooManyConnections, e.to_string());
            negotiate::send_fatal(stream, &err).await;
        }
        NoBackend::InRecovery => crate::proxy::route::refuse_in_recovery(stream, who).await,
    }
}

/// Ends a session the repository did not let in after pgssl authenticated the client.
async fn refuse_by_repository(
    stream: &mut NegotiatedStream,
    who: &Who,
    e: RepositoryAuthError,
    started: Instant,
    m: &ProxyMetrics,
) {
    m.auth(AuthMechanism::Scram, AuthOutcome::RepositoryRefused)
        .increment(1);
    let (peer, user) = (who.peer, LogSafe(&who.user));
    let err = match e {
        RepositoryAuthError::Refused(frame) => {
            // The repository's own words, as PostgreSQL would have sent them.
            let _ = terminate::write_frame(stream, &frame).await;
            let _ = stream.shutdown().await;
            let login = LoginOutcome::refused(&frame.body);
            let end = RelayEnd::Closed(relay::Transferred::default());
            return log_end(who, end, Some(login), started, m);
        }
        RepositoryAuthError::Method(method) => ErrorResponse::fatal(
            SqlState::InvalidAuthorizationSpecification,
            format!("the repository asks for {method} authentication, which pgssl cannot answer without the password"),
        )
        .with_hint("configure scram-sha-256 for connections from pgssl in the repository's pg_hba.conf (or set auth.mode = \"passthrough\")"),
        RepositoryAuthError::Io(e) => {
            info!(%peer, %user, error = %e, outcome = "upstream_failed", "the repository connection failed during authentication");
            ErrorResponse::fatal(SqlState::ConnectionFailure, "lost the connection to the repository")
        }
        other => {
            warn!(%peer, %user, error = %other, outcome = "upstream_failed", "logging into the repository failed");
            ErrorResponse::fatal(SqlState::ConnectionFailure, "could not log into the repository")
        }
    };
    negotiate::send_fatal(stream, &err).await;
}

/// Ends a session whose authentication exchange failed at pgssl, with a FATAL the client can read.
async fn refuse_authentication(stream: &mut NegotiatedStream, who: &Who, end: AuthEnd) {
    let (peer, user) = (who.peer, LogSafe(&who.user));
    let err = match &end {
        AuthEnd::OnlyChannelBinding => ErrorResponse::fatal(
            SqlState::InvalidAuthorizationSpecification,
            "the repository offers only SCRAM-SHA-256-PLUS, whose channel binding cannot pass through a TLS-terminating proxy",
        )
        .with_hint("allow scram-sha-256 without channel binding for this user in the repository's pg_hba.conf"),
        AuthEnd::Malformed(e) => ErrorResponse::fatal(
            SqlState::ProtocolViolation,
            format!("invalid authentication message: {e}"),
        ),
        AuthEnd::TimedOut => ErrorResponse::fatal(
            SqlState::QueryCanceled,
            "authentication did not finish in time",
        ),
        AuthEnd::NoLookupUser => ErrorResponse::fatal(
            SqlState::InvalidAuthorizationSpecification,
            "pgssl cannot authenticate clients yet: no lookup user is applied",
        )
        .with_hint("run 'pgssl authentication lookup-user set' and 'pgssl pending-changes apply', or set auth.mode = \"auto\""),
        AuthEnd::Io(e) => {
            // Either side may have gone; when it was the repository (reset, closed at accept), the
            // client is told in PostgreSQL's words, and when it was the client the write just fails.
            info!(%peer, %user, error = %e, outcome = "failed", "the connection failed during authentication");
            ErrorResponse::fatal(
                SqlState::ConnectionFailure,
                "lost the connection to the repository during authentication",
            )
        }
        AuthEnd::Authenticated
        | AuthEnd::Handover
        | AuthEnd::Refused(_)
        | AuthEnd::Unavailable(_)
        | AuthEnd::LockedOut(_) => return,
    };
    negotiate::send_fatal(stream, &err).await;
    info!(%peer, %user, sqlstate = err.code.code(), outcome = "authentication_failed",
          "{}", err.message);
}
