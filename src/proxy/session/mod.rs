//! A proxy-mode session once pgssl has authenticated the client: its backend (a warm session of the
//! same key, or a new one logged in by SCRAM pass-through), the start-up answer pgssl writes itself
//! with a cancel key it minted; then (`serve`) the relay, and — when the client leaves an idle
//! session — the reset that makes it fresh and its return to the pool. Anything else about a
//! session's end closes it.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::proxy::auth::scram::Verifier;
use crate::proxy::auth::terminate::{self, Proven, RepositoryAuthError};
use crate::proxy::backend::cancel::ClientKey;
use crate::proxy::backend::{Backend, Checkout, Exhausted, PoolKey, Slot, reset};
use crate::proxy::cert_login;
use crate::proxy::connection::{ConnectionContext, Start, Who, open_backend};
use crate::proxy::identity::{self, Identity};
use crate::proxy::metrics::AuthMechanism;
use crate::proxy::negotiate;
use crate::proxy::protocol::login_watch::LoginOutcome;
use crate::proxy::protocol::{ErrorResponse, SqlState};
use crate::proxy::repository::RepositoryStream;
use crate::proxy::route;
use crate::proxy::settings::LiveSettings;
use crate::proxy::stream::NegotiatedStream;
use crate::telemetry::LogSafe;

/// A backend serving one client, with the cancel key that client was given.
pub(crate) struct Lease {
    backend: Backend,
    key: ClientKey,
    /// Whether the session may go back to the pool when the client leaves.
    poolable: bool,
    /// The client's `pgssl.*` values, as set on the backend (`None` when identity is off).
    identity: Option<Arc<Identity>>,
}

impl Lease {
    /// A backend taken for a client that logged in without one, with the key it was given.
    pub(crate) fn new(backend: Backend, key: ClientKey) -> Lease {
        Lease {
            backend,
            key,
            poolable: true,
            identity: None,
        }
    }

    /// The backend, the client's cancel key and its `pgssl.*` values (a transaction-pooled client
    /// takes them over).
    pub(crate) fn into_parts(self) -> (Backend, ClientKey, Option<Arc<Identity>>) {
        (self.backend, self.key, self.identity)
    }
}

/// Why no backend could be had; each is answered to the client by [`refuse`].
pub(crate) enum NoBackend {
    /// Opening or logging into a new backend failed (already answered and logged).
    Answered,
    /// The repository refused the login.
    Repository(RepositoryAuthError),
    /// The bounds were reached and nothing came free in time.
    Exhausted(Exhausted),
    /// Logging into a new backend did not finish by the login's deadline.
    TimedOut,
    /// A primary-bound session's new backend said it is a hot standby: the probes had not yet seen
    /// the host demoted. The backend is closed before the client sends anything.
    InRecovery,
}

/// How the client proved who it is.
#[derive(Clone, Copy)]
pub(crate) enum Credential<'a> {
    /// pgssl's SCRAM exchange: the proof logs new backends in by pass-through.
    Proof(&'a Proven),
    /// A client certificate (mutual SSL); `verifier` is the role's current one, read for it, so that
    /// it shares warm sessions with the role's SCRAM clients.
    Certificate {
        /// The role's verifier now.
        verifier: &'a Verifier,
        /// Whether the role may log in.
        can_login: bool,
    },
}

impl Credential<'_> {
    fn verifier(&self) -> &Verifier {
        match self {
            Credential::Proof(p) => p.verifier(),
            Credential::Certificate { verifier, .. } => verifier,
        }
    }

    /// How the client logged in, as `pgssl.auth_method` says.
    fn mechanism(&self) -> AuthMechanism {
        match self {
            Credential::Proof(p) if p.mechanism == crate::proxy::auth::scram::SCRAM_PLUS => {
                AuthMechanism::ScramPlus
            }
            Credential::Proof(_) => AuthMechanism::Scram,
            Credential::Certificate { .. } => AuthMechanism::Certificate,
        }
    }

    fn can_login(&self) -> bool {
        match self {
            Credential::Proof(p) => p.can_login,
            Credential::Certificate { can_login, .. } => *can_login,
        }
    }
}

/// Finds the client a backend and sends it the start-up answer. `deadline` bounds logging into a
/// new backend. With several hosts, a host that refuses the new backend's start-up as unavailable
/// (a switchover shutting it down) hands the session to the next one: the client has been told
/// nothing of the backend yet.
pub(crate) async fn acquire(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    credential: Credential<'_>,
    deadline: Instant,
) -> Result<Lease, NoBackend> {
    let waiting_until = Instant::now() + ctx.repository.options().failover_wait;
    let mut start = Some(start);
    loop {
        let this = match ctx.repository.probed() {
            true => start.clone(),
            false => start.take(),
        }
        .ok_or(NoBackend::Answered)?;
        let host = this.host.clone();
        let acquired = acquire_on_host(stream, this, who, settings, ctx, credential, deadline);
        match Box::pin(acquired).await {
            Err(NoBackend::Repository(RepositoryAuthError::Refused(frame))) => {
                let refusal = LoginOutcome::refused(&frame.body);
                if refusal.host_unavailable()
                    && route::reroute_unavailable(&host, &refusal, waiting_until, who, ctx).await
                {
                    continue;
                }
                return Err(NoBackend::Repository(RepositoryAuthError::Refused(frame)));
            }
            done => return done,
        }
    }
}

/// [`acquire`] on the host the session is routed to now.
async fn acquire_on_host(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    credential: Credential<'_>,
    deadline: Instant,
) -> Result<Lease, NoBackend> {
    let pool = &ctx.pool;
    pool.saw_generation(settings.generation);
    let choice = start.host.clone();
    let routed = choice.get();
    let (key, mut poolable) = match PoolKey::of(&start.startup) {
        Some(key) => (Arc::new(key.on_host(routed.index)), pool.options().enabled),
        None => (
            Arc::new(PoolKey::unpooled(&who.user, &who.database).on_host(routed.index)),
            false,
        ),
    };
    let app_name = start
        .startup
        .param("application_name")
        .unwrap_or_default()
        .to_string();
    // What the client was told of its protocol: a certificate login hears it with the welcome (a
    // SCRAM login heard it before its exchange), and its cancel key has that version's length.
    let (answer, minor) = (
        start.startup.protocol_answer(),
        start.startup.agreed_minor(),
    );
    let identity = who.identity(ctx, credential.mechanism());
    let m = &ctx.metrics.pool;
    let waiting = Instant::now();
    let checkout_deadline = waiting + pool.options().checkout_timeout;
    if let Credential::Proof(proven) = credential {
        ctx.prefill
            .learn(&key, &start.startup, proven, &routed.epoch);
    }
    let mut backend = loop {
        let found = pool
            .checkout(
                &key,
                credential.verifier(),
                credential.can_login(),
                poolable,
                checkout_deadline,
            )
            .await;
        m.wait_seconds.record(waiting.elapsed().as_secs_f64());
        match found {
            Ok(Checkout::Warm(mut b)) => {
                // The one round trip of a warm hand-out, and only when the name or the
                // `pgssl.*` values differ.
                match reset::hand_out(&mut b, Some(&app_name), identity.as_ref(), deadline).await {
                    Ok(()) => {
                        m.warm.increment(1);
                        break *b;
                    }
                    Err(e) => {
                        debug!(error = %e, "a warm session failed at hand-out; trying another");
                        b.close().await;
                    }
                }
            }
            Ok(Checkout::Fork(slot)) => {
                m.opened.increment(1);
                let new = Fork {
                    slot,
                    credential,
                    deadline,
                };
                let backend = open(stream, start, who, settings, ctx, new).await?;
                // Opening it may have moved the session to another host (its first one did not
                // answer); the backend's place in the pool is then the first host's.
                let reached = choice.get();
                poolable &= reached.index == routed.index;
                // Nothing of a primary-bound client's reaches a host in recovery, even before the
                // probes see the demotion.
                // (A single host is not probed: it is whatever it is, as it always was.)
                if ctx.repository.probed() && reached.as_primary && backend.in_hot_standby() {
                    ctx.repository.suspect(reached.index);
                    backend.close().await;
                    return Err(NoBackend::InRecovery);
                }
                break backend;
            }
            Err(e) => {
                m.exhausted.increment(1);
                return Err(NoBackend::Exhausted(e));
            }
        }
    };
    // A new session's `pgssl.*` values (a warm one has them by now).
    if let Err(e) = reset::hand_out(&mut backend, None, identity.as_ref(), deadline).await {
        backend.close().await;
        let err = ErrorResponse::fatal(
            SqlState::ConnectionFailure,
            "lost the connection to the repository",
        );
        negotiate::send_fatal(stream, &err).await;
        info!(peer = %who.peer, user = %LogSafe(&who.user), error = %e, outcome = "upstream_failed",
              "a new repository session refused its {} values", identity::PREFIX);
        return Err(NoBackend::Answered);
    }
    m.sessions(pool.totals());
    // The session ends when its host stops being what this client was routed to.
    let reached = choice.get();
    backend.on_epoch(reached.epoch.clone());
    let told = Told {
        answer: answer.as_deref(),
        minor,
    };
    let key = hand_out(stream, &backend, credential, told, reached.index, ctx).await?;
    backend.served_one();
    Ok(Lease {
        backend,
        key,
        poolable,
        identity,
    })
}

/// What opening a new backend needs besides the connection's own context.
struct Fork<'a> {
    slot: Slot,
    credential: Credential<'a>,
    deadline: Instant,
}

/// Opens a new backend in `fork.slot`: connects, forwards the client's start-up, logs in by SCRAM
/// pass-through and reads the repository's start-up answer.
async fn open(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    fork: Fork<'_>,
) -> Result<Backend, NoBackend> {
    let minor = start.startup.minor;
    let proven = match fork.credential {
        Credential::Proof(proven) => proven,
        Credential::Certificate { verifier, .. } => {
            // Opened as a certificate login is (pgssl's own certificate, or the role's password on
            // the managed repository), its answer kept: the client gets pgssl's start-up answer.
            let opening =
                cert_login::open_for_pool(stream, start, who, settings, ctx, fork.deadline);
            let (upstream, negotiated) = opening.await.ok_or(NoBackend::Answered)?;
            let after = Backend::after_login(
                upstream,
                negotiated,
                minor,
                verifier.clone(),
                fork.slot,
                settings.generation,
            );
            return match tokio::time::timeout_at(fork.deadline, after).await {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(NoBackend::Repository(RepositoryAuthError::from(e))),
                Err(_) => Err(NoBackend::TimedOut),
            };
        }
    };
    let upstream = open_backend(stream, start, who, settings, ctx)
        .await
        .ok_or(NoBackend::Answered)?;
    let login = pass_through(upstream, proven, minor, fork.slot, settings.generation);
    match tokio::time::timeout_at(fork.deadline, login).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(NoBackend::Repository(e)),
        Err(_) => Err(NoBackend::TimedOut),
    }
}

/// Logs a new backend in by SCRAM pass-through with `proven` (its start-up already sent) and reads
/// its start-up answer: the login of a client's fork and of a session opened ahead of clients.
pub(crate) async fn pass_through(
    mut upstream: RepositoryStream,
    proven: &Proven,
    minor: u16,
    slot: Slot,
    generation: u64,
) -> Result<Backend, RepositoryAuthError> {
    let cert = upstream.peer_certificate().map(<[u8]>::to_vec);
    let negotiated = terminate::log_in(&mut upstream, proven, cert.as_deref()).await?;
    let verifier = proven.verifier().clone();
    Backend::after_login(upstream, negotiated, minor, verifier, slot, generation)
        .await
        .map_err(RepositoryAuthError::from)
}

/// The client's protocol as pgssl settled it: the NegotiateProtocolVersion it needs, if any, and the
/// minor version agreed.
struct Told<'a> {
    answer: Option<&'a [u8]>,
    minor: u16,
}

/// Sends the client pgssl's SASLFinal (or, after a certificate login, its protocol answer) and the
/// session's start-up answer with a cancel key minted for it; returns the key.
async fn hand_out(
    stream: &mut NegotiatedStream,
    backend: &Backend,
    credential: Credential<'_>,
    told: Told<'_>,
    host: usize,
    ctx: &ConnectionContext,
) -> Result<ClientKey, NoBackend> {
    let Ok(key) = ctx.cancels.mint(told.minor, backend.cancel_packet(), host) else {
        let err = ErrorResponse::fatal(
            SqlState::ConnectionFailure,
            "the system random number generator failed",
        );
        negotiate::send_fatal(stream, &err).await;
        return Err(NoBackend::Answered);
    };
    let mut welcome = match credential {
        Credential::Proof(proven) => bytes::BytesMut::from(&proven.client_final.encode()[..]),
        Credential::Certificate { .. } => bytes::BytesMut::from(told.answer.unwrap_or_default()),
    };
    welcome.extend_from_slice(&backend.welcome(&key));
    let sent = async {
        stream.write_all(&welcome).await?;
        stream.flush().await
    };
    if sent.await.is_err() {
        ctx.cancels.revoke(&key);
        return Err(NoBackend::Answered);
    }
    Ok(key)
}

mod serve;

pub(crate) use serve::{cancel_if_terminated, give_back, refuse_identity_write, serve, serve_from};
