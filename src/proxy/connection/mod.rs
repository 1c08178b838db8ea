//! One client connection from accept to close: negotiate, then for a start-up admit (policy, shutdown,
//! session limit) → open the backend → relay → log how it ended.
//!
//! Each connection runs in its own task and logs exactly one line with its outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::proxy::auth::AuthPlan;
use crate::proxy::auth::lockout::Lockout;
use crate::proxy::backend::Pool;
use crate::proxy::backend::cancel::CancelKeys;
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::negotiate::{self, NegotiateError, Negotiated};
use crate::proxy::policy::{Transport, UserClassifier};
use crate::proxy::prefill::Prefill;
use crate::proxy::protocol::login_watch::LoginOutcome;
use crate::proxy::protocol::proxy_header::{self, ProxyHeader};
use crate::proxy::protocol::{ErrorResponse, SqlState, StartupMessage};
use crate::proxy::relay::RelayEnd;
use crate::proxy::relayed_client::{self, RelayError, RelayKey};
use crate::proxy::repository::RepositoryStream;
use crate::proxy::repository::hosts::Hosts;
use crate::proxy::route;
use crate::proxy::sessions::{Facts, Sessions};
use crate::proxy::settings::LiveSettings;
use crate::proxy::startups::{Deadline, Expired, StartupPlace};
use crate::proxy::stream::{ClientSocket, NegotiatedStream};
use crate::telemetry::LogSafe;

mod admitted;
mod who;

pub(crate) use admitted::PooledSession;
use admitted::session;
pub(crate) use who::Who;

/// Counts a connection in `pgssl_connections_active` for as long as it lives.
struct ActiveGuard<'a>(&'a metrics::Gauge);

impl<'a> ActiveGuard<'a> {
    fn new(gauge: &'a metrics::Gauge) -> ActiveGuard<'a> {
        gauge.increment(1.0);
        ActiveGuard(gauge)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What every connection needs, shared by reference.
#[derive(Debug)]
pub struct ConnectionContext {
    /// Who is a client user.
    pub classifier: UserClassifier,
    /// The repository's hosts, and where each session goes.
    pub repository: Arc<Hosts>,
    /// Accept-to-start-up limit.
    pub handshake_timeout: Duration,
    /// Limit for connecting to the repository.
    pub connect_timeout: Duration,
    /// Cancelled when the server begins shutting down: no new sessions start.
    pub draining: CancellationToken,
    /// Cancelled when the shutdown grace period ends: open sessions are closed.
    pub closing: CancellationToken,
    /// Client sessions (`server.max_connections`): taken once start-up is complete.
    pub sessions: Arc<Semaphore>,
    /// The data plane's metric handles.
    pub metrics: ProxyMetrics,
    /// How sessions authenticate.
    pub auth: AuthPlan,
    /// Failed logins per (address, user).
    pub lockout: Lockout,
    /// Warm repository sessions (proxy mode).
    pub pool: Arc<Pool>,
    /// The cancel keys pgssl minted for proxy-mode sessions.
    pub cancels: Arc<CancelKeys>,
    /// Places for cancel requests on their way to the repository or another node.
    pub cancel_forwards: Semaphore,
    /// Sessions opened ahead of clients (`pool.min_warm`).
    pub prefill: Prefill,
    /// Sources whose connections start with a PROXY protocol v2 header.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// The key a client's address travels under from one cluster node to another.
    pub relay_key: Option<RelayKey>,
    /// Whether the repository is another node of this cluster.
    pub repository_is_node: bool,
    /// The client's identity for the repository (`pgssl.*`), when it is on.
    pub identity: Option<Arc<crate::proxy::identity::IdentityOptions>>,
    /// The sessions served now, as `sessions list` shows them.
    pub registry: Arc<Sessions>,
    /// Who has logged in, for the pre-flight report.
    pub inventory: Arc<crate::proxy::inventory::Inventory>,
}

/// Serves one accepted connection with the settings current at accept time. `starting` is its place
/// among the connections still negotiating; it is given back once the connection becomes a session.
pub async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    settings: Arc<LiveSettings>,
    ctx: Arc<ConnectionContext>,
    starting: StartupPlace,
) {
    let started = Instant::now();
    let m = &ctx.metrics;
    m.accepted.increment(1);
    let _active = ActiveGuard::new(&m.active);
    // Start-up and query traffic is small request/response messages: Nagle would only add latency.
    if let Err(e) = tcp.set_nodelay(true) {
        warn!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let deadline = starting.deadline(started + ctx.handshake_timeout);
    let mut tcp = tcp;
    let peer = if crate::proxy::protocol::proxy_header::trusted(&ctx.proxy_protocol_from, peer.ip())
    {
        match deadline.run(read_proxy_header(&mut tcp)).await {
            Ok(Ok(ProxyHeader::Proxied { source })) => source,
            Ok(Ok(ProxyHeader::Local)) => peer,
            Ok(Err(e)) => {
                warn!(%peer, error = %e, outcome = "proxy_header_invalid",
                      "a connection from a server.proxy_protocol_from network did not start with a valid PROXY protocol v2 header");
                return;
            }
            Err(Expired::Timeout) => {
                info!(%peer, outcome = "timeout", "no PROXY protocol header in time");
                return;
            }
            Err(Expired::Evicted) => {
                info!(%peer, outcome = "evicted", "closed before its PROXY protocol header to make room: server.max_startups connections were negotiating");
                return;
            }
        }
    } else {
        peer
    };
    let accepted = serve_accepted(
        ClientSocket::Tcp(tcp),
        peer,
        &settings,
        &ctx,
        starting,
        deadline,
        started,
    );
    // Boxed, and freed before a pooled client is served (see [`PooledSession`]).
    let Some(pooled) = Box::pin(accepted).await else {
        return;
    };
    pooled.serve(&settings, &ctx, started).await
}

/// Negotiates on a connection whose transport is ready (the PROXY header, if any, read off it) and
/// serves what it asked for: a cancel request or a session. `deadline` bounds the negotiation;
/// `started` is when the connection was accepted.
pub(crate) async fn serve_accepted(
    client: ClientSocket,
    peer: SocketAddr,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
    starting: StartupPlace,
    deadline: Deadline,
    started: Instant,
) -> Option<PooledSession> {
    let m = &ctx.metrics;
    // Boxed: the negotiation's state (TLS handshake included) is freed once it finishes instead of
    // sizing the task for the whole life of the session.
    let negotiated = Box::pin(negotiate::negotiate(client, settings, m, &deadline)).await;
    match negotiated {
        Err(e) => {
            log_negotiation_failure(peer, &e, m);
            None
        }
        Ok(Negotiated::Cancel { stream, packet }) => {
            let forward =
                crate::proxy::cancel_route::forward_cancel(stream, &packet, peer, settings, ctx);
            Box::pin(forward).await;
            None
        }
        Ok(Negotiated::Startup {
            mut stream,
            startup,
            pipelined,
            tls,
        }) => {
            // A client relayed by another node of the cluster: its own address, proven.
            let (peer, startup) = match startup.param(relayed_client::PARAM) {
                None => (peer, startup),
                Some(value) => match relayed_peer(&stream, value, ctx) {
                    Ok(client) => (
                        client,
                        relayed_client::without_param(&startup, relayed_client::PARAM),
                    ),
                    Err(e) => {
                        let err = ErrorResponse::fatal(
                            SqlState::InvalidAuthorizationSpecification,
                            e.to_string(),
                        );
                        Box::pin(negotiate::send_fatal(&mut stream, &err)).await;
                        info!(%peer, error = %e, outcome = "relayed_client_refused",
                              "a start-up named a relayed client without a valid tag");
                        return None;
                    }
                },
            };
            // `pgssl.*` is pgssl's to set, never the client's (the relayed address is out by now).
            if startup
                .params
                .iter()
                .any(|(n, v)| crate::proxy::identity::startup_sets_pgssl(n, v))
            {
                let err = ErrorResponse::fatal(
                    SqlState::InsufficientPrivilege,
                    format!("{} in its start-up", crate::proxy::identity::REFUSED),
                );
                Box::pin(negotiate::send_fatal(&mut stream, &err)).await;
                info!(%peer, outcome = "startup_sets_pgssl",
                      "refused a start-up that sets a pgssl.* setting");
                return None;
            }
            let user = startup.user().unwrap_or_default().to_string();
            let database = startup.database().unwrap_or_default().to_string();
            let facts = Facts {
                peer,
                user: user.clone(),
                database: database.clone(),
                application_name: startup
                    .param("application_name")
                    .unwrap_or_default()
                    .to_string(),
                tls: tls.as_ref().and_then(|t| stream.tls_facts(t)),
            };
            let who = Who {
                peer,
                class: ctx.classifier.classify(&user),
                user,
                database,
                tls: tls.as_ref().map_or("none", |t| t.version),
                transport: if tls.is_some() {
                    Transport::Tls
                } else {
                    Transport::Plaintext
                },
                session: ctx.registry.register(facts, &ctx.closing),
            };
            let held = session(
                stream,
                (startup, pipelined),
                &who,
                settings,
                ctx,
                starting,
                started,
            )
            .await?;
            Some(PooledSession { held, who })
        }
    }
}

/// The client address another node relayed in `value`, when its tag is good for this TLS
/// connection under this node's key.
fn relayed_peer(
    stream: &NegotiatedStream,
    value: &str,
    ctx: &ConnectionContext,
) -> Result<SocketAddr, RelayError> {
    let key = ctx.relay_key.as_ref().ok_or(RelayError::NotFromANode)?;
    let NegotiatedStream::Tls(tls) = stream else {
        return Err(RelayError::NotFromANode);
    };
    let exporter = relayed_client::exporter(tls.get_ref().1).ok_or(RelayError::NotFromANode)?;
    key.verify(&exporter, value)
}

/// The start-up to send to a repository that is another node of this cluster — as this node's
/// membership says, and presenting the very certificate this node serves — naming the client's own
/// address; `None` for any other repository, which gets the client's start-up as it came.
fn relayed_start_up(
    upstream: &RepositoryStream,
    start: &Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Option<StartupMessage> {
    let key = ctx.relay_key.as_ref().filter(|_| ctx.repository_is_node)?;
    let RepositoryStream::Tls(tls) = upstream else {
        return None;
    };
    let served = settings.cert_fingerprint.as_deref()?;
    let presented = upstream.peer_certificate()?;
    if crate::tls::certs::sha256_fingerprint(presented) != served {
        return None;
    }
    let exporter = relayed_client::exporter(tls.get_ref().1)?;
    let claim = key.claim(&exporter, who.peer);
    Some(relayed_client::with_param(
        &start.startup,
        relayed_client::PARAM,
        &claim,
    ))
}

/// The start-up to forward: the message and any bytes the client sent after it, and the repository
/// host the session goes to.
#[derive(Clone)]
pub(crate) struct Start {
    pub(crate) startup: StartupMessage,
    pub(crate) pipelined: BytesMut,
    pub(crate) host: route::HostChoice,
}

/// Connects to the repository and forwards the start-up; a failure is answered (08006, without the
/// repository's address) and logged (with it) here.
pub(crate) async fn open_backend(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> Option<RepositoryStream> {
    open_backend_with(stream, start, who, settings, &settings.repository_tls, ctx).await
}

/// Like [`open_backend`], over `tls` (a certificate-authenticated session's own connector).
pub(crate) async fn open_backend_with(
    stream: &mut NegotiatedStream,
    start: Start,
    who: &Who,
    settings: &LiveSettings,
    tls: &crate::proxy::repository::tls::RepositoryTls,
    ctx: &ConnectionContext,
) -> Option<RepositoryStream> {
    let (peer, user, m) = (who.peer, LogSafe(&who.user), &ctx.metrics);
    let connecting = Instant::now();
    let (connected, routed) = route::connect(&start.host, tls, who, ctx).await;
    let host = &routed.connector;
    let mut upstream = match connected {
        Ok(u) => {
            m.upstream_seconds
                .record(connecting.elapsed().as_secs_f64());
            u
        }
        Err(e) => {
            m.upstream_failures.increment(1);
            let err = ErrorResponse::fatal(
                SqlState::ConnectionFailure,
                format!(
                    "could not connect to the repository: {}",
                    e.client_summary()
                ),
            );
            negotiate::send_fatal(stream, &err).await;
            warn!(%peer, %user, upstream = %host, error = %e, outcome = "upstream_unreachable",
                  "could not connect to the repository");
            return None;
        }
    };
    let relayed = relayed_start_up(&upstream, &start, who, settings, ctx);
    let startup = relayed.as_ref().unwrap_or(&start.startup);
    if let Err(e) = forward_start(&mut upstream, &startup.raw, &start.pipelined).await {
        let err = ErrorResponse::fatal(
            SqlState::ConnectionFailure,
            "lost the connection to the repository",
        );
        negotiate::send_fatal(stream, &err).await;
        warn!(%peer, %user, upstream = %host, error = %e, outcome = "upstream_failed",
              "could not forward the start-up");
        return None;
    }
    // `start` is dropped here: an idle session should hold nothing it no longer needs.
    Some(upstream)
}

/// Sends the client's start-up (and anything it sent after it) to a new repository connection.
pub(crate) async fn forward_start(
    upstream: &mut RepositoryStream,
    startup: &[u8],
    pipelined: &[u8],
) -> std::io::Result<()> {
    upstream.write_all(startup).await?;
    if !pipelined.is_empty() {
        upstream.write_all(pipelined).await?;
    }
    upstream.flush().await
}

/// Counts the bytes and logs the one line that says how the session ended.
pub(crate) fn log_end(
    who: &Who,
    end: RelayEnd,
    login: Option<LoginOutcome>,
    started: Instant,
    m: &ProxyMetrics,
) {
    let duration_ms = started.elapsed().as_millis() as u64;
    let t = end.transferred();
    m.bytes_to_upstream.increment(t.to_upstream);
    m.bytes_to_client.increment(t.to_client);
    let (bytes_up, bytes_down) = (t.to_upstream, t.to_client);
    let (peer, user, database) = (who.peer, LogSafe(&who.user), LogSafe(&who.database));
    let (class, tls) = (who.class, who.tls);
    // A login the repository refused ends like any session, but its outcome is the refusal.
    if let Some(LoginOutcome::Refused { sqlstate, message }) = &login {
        info!(%peer, %user, %database, %class, %tls, bytes_up, bytes_down, duration_ms,
              outcome = "refused_by_repository", sqlstate = %LogSafe(sqlstate),
              message = %LogSafe(message), "the repository refused the login");
        return;
    }
    match end {
        RelayEnd::Closed(_) => info!(%peer, %user, %database, %class, %tls, bytes_up, bytes_down,
            duration_ms, outcome = "closed", "session ended"),
        RelayEnd::Failed(e, _) => {
            info!(%peer, %user, %database, %class, %tls, bytes_up, bytes_down,
            error = %e, duration_ms, outcome = "failed", "session ended with an error")
        }
        RelayEnd::Shutdown(_) if who.session.terminated().is_some() => {
            info!(%peer, %user, %database, bytes_up, bytes_down, duration_ms,
                  outcome = "terminated", "session ended by an administrator")
        }
        RelayEnd::Shutdown(_) => info!(%peer, %user, %database, bytes_up, bytes_down, duration_ms,
            outcome = "shutdown", "session closed at the end of the shutdown grace period"),
    }
}

fn log_negotiation_failure(peer: SocketAddr, e: &NegotiateError, m: &ProxyMetrics) {
    m.negotiation_failure(e.reason()).increment(1);
    // Each of these is one client's mistake, not the operator's problem: info, like every other
    // per-connection outcome, so that a misbehaving client cannot flood the warnings.
    match e {
        NegotiateError::ClosedByClient => info!(%peer, outcome = "client_closed", "{e}"),
        _ => info!(%peer, outcome = "negotiation_failed", "{e}"),
    }
}

/// Reads a PROXY protocol v2 header off the start of `tcp`.
async fn read_proxy_header(tcp: &mut TcpStream) -> Result<ProxyHeader, String> {
    use tokio::io::AsyncReadExt;
    let mut fixed = [0u8; proxy_header::FIXED_LEN];
    tcp.read_exact(&mut fixed)
        .await
        .map_err(|e| e.to_string())?;
    let len = proxy_header::body_len(&fixed).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    proxy_header::parse(&fixed, &body).map_err(|e| e.to_string())
}
