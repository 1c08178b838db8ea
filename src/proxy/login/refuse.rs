//! How a refused login is answered and logged: in PostgreSQL's words where PostgreSQL would have
//! said it, with pgssl's own where the refusal is pgssl's.

use super::*;
use crate::proxy::protocol::auth_message::Frame;

/// Refuses a login attempt while its (address, user) pair is locked out.
pub(super) async fn refuse_locked_out(
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

/// Ends a session whose client failed pgssl's own authentication: as PostgreSQL words it.
pub(super) async fn refuse_client(
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
pub(super) async fn refuse_no_backend(
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

/// Ends a session with the repository's refusal of its start-up or login, in its own words, as
/// PostgreSQL would have sent them, and logs it as the repository's.
pub(super) async fn relay_refusal(
    stream: &mut NegotiatedStream,
    who: &Who,
    frame: &Frame,
    started: Instant,
    m: &ProxyMetrics,
) {
    let _ = terminate::write_frame(stream, frame).await;
    let _ = stream.shutdown().await;
    let login = LoginOutcome::refused(&frame.body);
    let end = RelayEnd::Closed(relay::Transferred::default());
    log_end(who, end, Some(login), started, m);
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
            return relay_refusal(stream, who, &frame, started, m).await;
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
pub(super) async fn refuse_authentication(stream: &mut NegotiatedStream, who: &Who, end: AuthEnd) {
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
