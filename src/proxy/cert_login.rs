//! A login by client certificate (`authentication mutual-ssl`): the handshake verified the chain,
//! dates and CRL; here the certificate's name must be the start-up's user, and the session then
//! reaches the repository with no password: pgssl presents its own client certificate for the role
//! (minted by its internal CA) to a repository that authenticates by certificate, or the role's
//! password from its keystore to the managed repository. In proxy mode the session gets a warm
//! backend of the role (`CertStep::Pooled`); otherwise the repository's answer is relayed.
//!
//! Refusals are PostgreSQL's 28000 FATALs: no certificate when fallback is off ("certificate
//! required"), a certificate for another user ("certificate authentication failed for user"), and a
//! repository that asks for a password instead of taking pgssl's certificate.

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::proxy::auth::AuthPlan;
use crate::proxy::auth::cert::CertCheck;
use crate::proxy::auth::password_login::{self, Answer, Decided};
use crate::proxy::auth::scram::Verifier;
use crate::proxy::auth::{FrameError, read_frame};
use crate::proxy::backend::PoolKey;
use crate::proxy::connection::{
    ConnectionContext, Start, Who, forward_start, open_backend, open_backend_with,
};
use crate::proxy::metrics::{AuthMechanism, AuthOutcome};
use crate::proxy::negotiate;
use crate::proxy::protocol::auth_message::Frame;
use crate::proxy::protocol::{ErrorResponse, SqlState};
use crate::proxy::repository::tls::RepositoryTls;
use crate::proxy::repository::{RepositoryAddr, RepositoryStream};
use crate::proxy::settings::LiveSettings;
use crate::proxy::stream::NegotiatedStream;
use crate::telemetry::LogSafe;

/// What the client's certificate decided.
pub(crate) enum CertStep {
    /// Mutual SSL is off, or no certificate and fallback on: log in as usual.
    Continue(Start),
    /// Refused (answered and logged).
    Refused,
    /// Logged in: the repository's AuthenticationOk was relayed; the rest of its start-up answer is
    /// the relay's.
    LoggedIn(RepositoryStream),
    /// Authenticated, for a warm backend of the role (proxy mode): the role's current verifier
    /// identifies which warm sessions it may have, as a SCRAM client's proof does.
    Pooled {
        /// The start-up.
        start: Start,
        /// The role's verifier, as the lookup read it now.
        verifier: Verifier,
        /// Whether the role may log in.
        can_login: bool,
    },
}

/// In proxy mode with pooling: the role's current verifier and login right, read as for a SCRAM
/// login. None (a relayed session of its own) when there is no lookup, the role has no SCRAM
/// password, the lookup fails, or the start-up cannot be pooled.
async fn pooled_identity(
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    start: &Start,
) -> Option<(Verifier, bool)> {
    let AuthPlan::Proxy { lookup, .. } = &ctx.auth else {
        return None;
    };
    let lookup = lookup.as_ref().or(settings.lookup.as_ref())?;
    if !ctx.pool.options().enabled || PoolKey::of(&start.startup).is_none() {
        return None;
    }
    let secret = lookup.lookup(&who.user).await.ok()??;
    let verifier = Verifier::parse(secret.password.as_deref()?).ok()?;
    Some((verifier, secret.can_login))
}

/// Decides the login by the client's certificate, and carries it out when the certificate names
/// the user.
pub(crate) async fn by_certificate(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    deadline: Instant,
) -> CertStep {
    let Some(cert) = &settings.cert_login else {
        return CertStep::Continue(start);
    };
    let (peer, user) = (who.peer, LogSafe(&who.user));
    let m = &ctx.metrics;
    match cert.check(stream.peer_certificate(), &who.user) {
        CertCheck::NotPresented if cert.fallback => CertStep::Continue(start),
        CertCheck::NotPresented => {
            let err = ErrorResponse::fatal(
                SqlState::InvalidAuthorizationSpecification,
                "certificate required: connection requires a valid client certificate",
            );
            refuse(
                stream,
                who,
                &err,
                "no client certificate and mutual-SSL fallback is off",
            )
            .await;
            CertStep::Refused
        }
        CertCheck::Mismatch { named } => {
            m.auth(AuthMechanism::Certificate, AuthOutcome::BadPassword)
                .increment(1);
            ctx.lockout.record_failure(peer.ip(), &who.user);
            let err = ErrorResponse::fatal(
                SqlState::InvalidAuthorizationSpecification,
                format!(
                    "certificate authentication failed for user \"{}\"",
                    who.user
                ),
            );
            let why = match named {
                Some(name) => format!("the client certificate names \"{}\"", LogSafe(&name)),
                None => "the client certificate names no user under the configured mapping".into(),
            };
            refuse(stream, who, &err, &why).await;
            CertStep::Refused
        }
        CertCheck::Authenticated => {
            info!(%peer, %user, mechanism = "certificate", "client certificate accepted");
            if let Some((verifier, can_login)) = pooled_identity(who, settings, ctx, &start).await {
                return CertStep::Pooled {
                    start,
                    verifier,
                    can_login,
                };
            }
            let attempt = Attempt {
                who,
                settings,
                ctx,
                deadline,
            };
            // A session of its own: its `pgssl.*` values go in its start-up.
            let mut start = start;
            if let Some(id) = who.identity(ctx, AuthMechanism::Certificate) {
                start.startup = id.in_startup(&start.startup);
            }
            match attempt.reach_repository(stream, start).await {
                Some((upstream, decided)) if pass_on(stream, &decided).await.is_ok() => {
                    who.logged_in(ctx, AuthMechanism::Certificate);
                    CertStep::LoggedIn(upstream)
                }
                _ => {
                    m.auth(AuthMechanism::Certificate, AuthOutcome::RepositoryRefused)
                        .increment(1);
                    CertStep::Refused
                }
            }
        }
    }
}

/// Connects over `tls` and sends the start-up, answering nobody on failure.
async fn quiet_open(
    ctx: &ConnectionContext,
    tls: &RepositoryTls,
    start: &Start,
) -> Option<RepositoryStream> {
    let mut upstream = start
        .host
        .get()
        .connector
        .connect(ctx.connect_timeout, tls)
        .await
        .ok()?;
    forward_start(&mut upstream, &start.startup.raw, &start.pipelined)
        .await
        .ok()?;
    Some(upstream)
}

/// A certificate-authenticated login on its way to the repository.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    who: &'a Who,
    settings: &'a LiveSettings,
    ctx: &'a ConnectionContext,
    deadline: Instant,
}

impl Attempt<'_> {
    /// Opens the repository connection for a certificate-authenticated client and reads its answer
    /// up to AuthenticationOk: with pgssl's certificate for the role over TCP, or with the role's
    /// password from pgssl's keystore on the managed repository's Unix socket (where PostgreSQL takes
    /// no certificate). Failures are answered here; what the repository sent up to its
    /// AuthenticationOk is returned, not yet passed on.
    async fn reach_repository(
        &self,
        stream: &mut NegotiatedStream,
        start: Start,
    ) -> Option<(RepositoryStream, Decided)> {
        let Attempt {
            who,
            settings,
            ctx,
            deadline,
        } = *self;
        if matches!(
            start.host.get().connector.addr(),
            RepositoryAddr::Unix { .. }
        ) {
            let candidates = settings
                .role_passwords
                .as_ref()
                .map(|p| p.candidates(&who.user))
                .unwrap_or_default();
            if candidates.is_empty() {
                let err = unavailable(
                    who,
                    "pgssl keeps no password for this role in the managed repository (only its internal roles and the data-access users log in by certificate there)",
                );
                refuse(stream, who, &err, "no password of the role in the keystore").await;
                return None;
            }
            return self.managed(stream, start, &candidates).await;
        }
        let Some(identities) = &settings.identities else {
            let err = unavailable(
                who,
                "pgssl has no internal CA to present a certificate to the repository",
            );
            refuse(
                stream,
                who,
                &err,
                "no internal CA (run 'pgssl authentication mutual-ssl configure' again)",
            )
            .await;
            return None;
        };
        let connectors = match identities.for_role(&who.user) {
            Ok(c) => c,
            Err(e) => {
                let err = unavailable(who, "pgssl could not make its client certificate");
                refuse(stream, who, &err, &e.to_string()).await;
                return None;
            }
        };
        // After a rotation the repository may trust only the previous CA for a while: a certificate it
        // refuses at the TLS level (its alert arrives at the first read under TLS 1.3) is followed by
        // the previous CA's, quietly; only the last attempt answers the client.
        let (last, earlier) = connectors.split_last()?;
        for tls in earlier {
            let Some(mut upstream) = quiet_open(ctx, tls, &start).await else {
                continue;
            };
            match tokio::time::timeout_at(deadline, first_answer(&mut upstream)).await {
                Ok(Err(FrameError::Io(e))) => {
                    debug!(user = %LogSafe(&who.user), error = %e,
                           "the repository refused the current internal CA's certificate; trying the previous CA's");
                }
                answer => return finish(stream, who, upstream, answer).await,
            }
        }
        let mut upstream = open_backend_with(stream, start, who, settings, last, ctx).await?;
        let answer = tokio::time::timeout_at(deadline, first_answer(&mut upstream)).await;
        finish(stream, who, upstream, answer).await
    }

    /// The managed repository: tries each password in turn: a 28P01 for the current one during a
    /// rotation (the repository already has the new password, the keystore not yet promoted it)
    /// moves on to the candidate.
    async fn managed(
        &self,
        stream: &mut NegotiatedStream,
        start: Start,
        candidates: &[zeroize::Zeroizing<String>],
    ) -> Option<(RepositoryStream, Decided)> {
        let who = self.who;
        let mut start = Some(start);
        for (i, password) in candidates.iter().enumerate() {
            let last = i + 1 == candidates.len();
            let this = if last { start.take() } else { start.clone() }?;
            let mut upstream = open_backend(stream, this, who, self.settings, self.ctx).await?;
            let login = password_login::log_in(&mut upstream, password.as_bytes());
            let answer = tokio::time::timeout_at(self.deadline, login).await;
            if !last && matches!(&answer, Ok(Ok(d)) if d.wrong_password()) {
                continue;
            }
            return finish(stream, who, upstream, answer).await;
        }
        None
    }
}

/// A certificate-authenticated client's new warm-pool backend: the repository reached as in a
/// relayed login, its answer kept (the client gets pgssl's own start-up answer).
pub(crate) async fn open_for_pool(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    deadline: Instant,
) -> Option<(RepositoryStream, Option<Frame>)> {
    let attempt = Attempt {
        who,
        settings,
        ctx,
        deadline,
    };
    let (upstream, decided) = attempt.reach_repository(stream, start).await?;
    Some((upstream, decided.negotiated()))
}

fn unavailable(who: &Who, why: &str) -> ErrorResponse {
    ErrorResponse::fatal(
        SqlState::InvalidAuthorizationSpecification,
        format!(
            "certificate authentication failed for user \"{}\": {why}",
            who.user
        ),
    )
}

/// Answers the client for what the repository decided against (or failed to decide in time); a
/// refusal is relayed as the repository worded it.
async fn finish(
    stream: &mut NegotiatedStream,
    who: &Who,
    upstream: RepositoryStream,
    answer: Result<Result<Decided, FrameError>, tokio::time::error::Elapsed>,
) -> Option<(RepositoryStream, Decided)> {
    match answer {
        Ok(Ok(decided)) => match decided.answer {
            Answer::Ok => Some((upstream, decided)),
            Answer::Refused => {
                let _ = pass_on(stream, &decided).await;
                info!(peer = %who.peer, user = %LogSafe(&who.user), outcome = "repository_refused",
                      "the repository refused the certificate login");
                None
            }
            Answer::Password => {
                let err = unavailable(who, "the repository asks for a password instead of accepting pgssl's client certificate")
                    .with_hint("add 'hostssl all all <pgssl's address> cert' to the repository's pg_hba.conf and set its ssl_ca_file to the file 'pgssl security internal-ca get-certificate-file' writes");
                refuse(stream, who, &err, "the repository asked for a password").await;
                None
            }
        },
        Ok(Err(e)) => {
            info!(peer = %who.peer, user = %LogSafe(&who.user), error = %e, outcome = "failed",
                  "the certificate login to the repository failed");
            None
        }
        Err(_) => {
            let err = ErrorResponse::fatal(
                SqlState::QueryCanceled,
                "authentication did not finish in time",
            );
            refuse(stream, who, &err, "the repository did not answer in time").await;
            None
        }
    }
}

/// Writes the repository's messages to the client.
async fn pass_on(stream: &mut NegotiatedStream, decided: &Decided) -> std::io::Result<()> {
    for frame in &decided.frames {
        stream.write_all(&frame.encode()).await?;
    }
    stream.flush().await
}

/// Reads the repository's messages up to its authentication decision.
async fn first_answer(upstream: &mut RepositoryStream) -> Result<Decided, FrameError> {
    let mut frames = Vec::new();
    loop {
        let frame = read_frame(upstream).await?;
        let answer = match (frame.kind, frame.auth_code()) {
            (b'R', Some(0)) => Some(Answer::Ok),
            (b'R', _) => Some(Answer::Password),
            (b'E', _) => Some(Answer::Refused),
            // NegotiateProtocolVersion and notices come before the decision.
            _ => None,
        };
        frames.push(frame);
        if let Some(answer) = answer {
            return Ok(Decided { answer, frames });
        }
    }
}

/// Sends `err` and logs why.
async fn refuse(stream: &mut NegotiatedStream, who: &Who, err: &ErrorResponse, why: &str) {
    negotiate::send_fatal(stream, err).await;
    info!(peer = %who.peer, user = %LogSafe(&who.user), sqlstate = err.code.code(),
          outcome = "authentication_failed", reason = %why, "{}", err.message);
}
