//! The admin server: HTTPS on `127.0.0.1:8850` by default, with a JSON API under `/api/v1/` and the web
//! pages, both built on the same control-plane operations as the CLI ([`crate::control::operations`]).
//!
//! Every request but sign-in needs a session (cookie `pgssl_admin`: HttpOnly, Secure,
//! SameSite=Strict, idle timeout); every change request also needs the session's CSRF token; every
//! change is audit-logged without secrets. Failed sign-ins are limited per source address.

mod api;
mod audit;
mod auth;
mod http;
mod pages;
pub mod requests;
pub mod session;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::node::RunningNode;
use crate::control::operations::model::{Operation, Verb};
use crate::control::operations::{CommandError, Context, Output, OutputLine};
use crate::control::state::admin_users::HashMemory;
use crate::tls::certs::{self, CertError, CertPaths};
use crate::tls::protocols::ProtocolSet;
use session::{Sessions, SignInLimiter};

/// The default admin address, as in the model's services manager.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8850";
pub use crate::control::api::{CSRF_HEADER, SESSION_COOKIE};
pub use api::routes as api_routes;
/// The API's OpenAPI document, served at `/api/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("openapi.yaml");
/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 128;

/// Why the admin server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address cannot be bound.
    #[error(
        "cannot listen for the admin server on {addr}: {source} (use --admin-listen ADDR or --no-admin)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin certificate cannot be made or loaded.
    #[error("the admin server's certificate: {0}")]
    Cert(#[from] CertError),
}

/// What handlers share.
pub(crate) struct AdminState {
    data_dir: PathBuf,
    config: Config,
    /// The node this admin server runs in, asked in-process.
    node: Arc<dyn RunningNode>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<SignInLimiter>,
    /// Password checks running at once (one per core).
    hashing: tokio::sync::Semaphore,
    /// Argon2 working memory, one per hashing permit at most, reused.
    hash_memory: Mutex<Vec<HashMemory>>,
    audit: audit::AuditLog,
}

/// An operation's result and the progress lines it reported while it ran.
pub(crate) type Outcome<R> = (Result<R, CommandError>, Vec<OutputLine>);

impl AdminState {
    /// No sessions yet, operations on `data_dir` with `config` asking `node`, audit records in its
    /// log folder.
    fn new(data_dir: PathBuf, config: Config, node: Arc<dyn RunningNode>) -> AdminState {
        let idle = config.admin.session_idle_timeout;
        let audit = audit::AuditLog::new(&data_dir);
        AdminState {
            data_dir,
            config,
            node,
            sessions: Mutex::new(Sessions::new(idle)),
            limiter: Mutex::new(SignInLimiter::default()),
            hash_memory: Mutex::new(Vec::new()),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            audit,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        lock(&self.sessions)
    }

    fn limiter(&self) -> MutexGuard<'_, SignInLimiter> {
        lock(&self.limiter)
    }

    /// Runs `request` for the signed-in administrator, with its progress lines collected; a change
    /// is audit-logged with how it ended (never its inputs).
    ///
    /// The operation runs as a task of its own in this runtime: it finishes even when the
    /// administrator's connection goes away mid-way (a half-done apply or rotation is worse than an
    /// unread answer), and a panic in it is answered as a failure instead of dropping the
    /// connection.
    async fn perform<T: Operation>(&self, who: &auth::Admin, request: T) -> Outcome<T::Report> {
        let ctx = Context {
            data_dir: self.data_dir.clone(),
            config: self.config.clone(),
            out: Output::collect(),
            node: self.node.clone(),
            actor: format!("administrator {} from {}", who.user, who.peer),
        };
        let joined = tokio::spawn(async move {
            let result = crate::control::operations::model::execute(request, &ctx).await;
            (result, ctx.out.take())
        })
        .await;
        let (result, lines) =
            joined.unwrap_or_else(|e| (Err(CommandError::Aborted(e)), Vec::new()));
        if T::VERB == Verb::Post {
            let outcome = match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => {
                    e.record(T::ACTION);
                    format!("refused: {e}")
                }
            };
            self.audit
                .record(&who.user, who.peer, T::ACTION, &outcome)
                .await;
        }
        (result, lines)
    }
}

/// Locks `m`; a panic while it was held leaves data that is still usable (a map, a pool).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A bound admin server.
pub struct AdminServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<AdminState>,
    fingerprint: String,
}

impl AdminServer {
    /// Binds `addr` and loads (generating on first use) the admin certificate in
    /// `<data-dir>/config/admin/`, separate from the repository certificate. Operations ask `node`
    /// about the running server.
    pub async fn bind(
        addr: SocketAddr,
        data_dir: PathBuf,
        config: Config,
        node: Arc<dyn RunningNode>,
    ) -> Result<AdminServer, AdminError> {
        let paths = CertPaths::in_dir(&data_dir.join("config").join("admin"));
        if !paths.exist() {
            let sans = certs::default_subject_alt_names(&config.tls.subject_alt_names);
            certs::generate(&paths, &sans, config.tls.certificate_validity_days)?;
        }
        let chain = certs::read_chain(&paths.cert)?;
        let fingerprint = certs::sha256_fingerprint(&chain[0]);
        let key = certs::read_key(&paths.key)?;
        let mut tls =
            crate::tls::server_config_from(chain, key, ProtocolSet::ALL, None).map_err(|e| {
                CertError::Unusable {
                    cert: paths.cert.clone(),
                    key: paths.key.clone(),
                    reason: e.to_string(),
                }
            })?;
        if let Some(config) = Arc::get_mut(&mut tls) {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(AdminServer {
            listener,
            acceptor: TlsAcceptor::from(tls),
            state: Arc::new(AdminState::new(data_dir, config, node)),
            fingerprint,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// SHA-256 fingerprint of the admin certificate (logged at start so administrators can check it).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Serves until `stop` is cancelled.
    ///
    /// Each connection carries one request and has [`AdminConfig::request_timeout`] for its TLS
    /// handshake and headers and as much again for its body, so a client that trickles bytes holds a
    /// slot for seconds, not for as long as it likes; and one source address holds at most
    /// `max_connections_per_address` of the `MAX_CONNECTIONS` (128) slots, so others are still served
    /// while it tries.
    ///
    /// [`AdminConfig::request_timeout`]: crate::config::AdminConfig::request_timeout
    pub async fn run(self, stop: CancellationToken) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let overflow = Arc::new(tokio::sync::Semaphore::new(MAX_OVERFLOW_ANSWERS));
        let per_address = Arc::new(PerAddress::default());
        let limit = self.state.config.admin.max_connections_per_address;
        let timeout = self.state.config.admin.request_timeout;
        let app = router(self.state.clone(), timeout);
        let too_many = too_many_router();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "admin server accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let Some(address_slot) = per_address.take(peer.ip(), limit) else {
                info!(%peer, limit, "admin connection refused: too many from this address");
                // Answered with 429 while a few such answers are under way; past that, closed.
                if let Ok(spare) = overflow.clone().try_acquire_owned() {
                    let acceptor = self.acceptor.clone();
                    let stop = stop.clone();
                    let too_many = too_many.clone();
                    tokio::spawn(async move {
                        let _held = (spare, slot);
                        tokio::select! {
                            () = answer_too_many(acceptor, tcp, peer.ip(), too_many, timeout) => {}
                            () = stop.cancelled() => {}
                        }
                    });
                }
                continue;
            };
            let acceptor = self.acceptor.clone();
            let stop = stop.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let _slots = (slot, address_slot);
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp));
                let tls = match handshake.await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        info!(%peer, error = %e, "admin TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let conn = one_request(tls, app, peer.ip(), timeout);
                tokio::select! {
                    _ = conn => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }
}

/// Over-limit connections answered with 429 at once, at most; more are closed at accept. Each costs
/// a TLS handshake, so this bounds what a flood from one address can make the server do.
const MAX_OVERFLOW_ANSWERS: usize = 32;

/// What every over-limit connection is answered: 429 and `Retry-After: 1`, with the security
/// headers of every answer.
fn too_many_router() -> axum::Router {
    let app = axum::Router::new().fallback(|| async {
        let mut answer = http::json_error(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address at once; try again in a second",
        );
        answer.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        answer
    });
    http::with_security_headers(app)
}

/// Answers one over-limit connection's request with `app` ([`too_many_router`]) within `timeout`:
/// a client that opened too many connections at once is told so in HTTP instead of seeing a bare
/// reset.
async fn answer_too_many(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: IpAddr,
    app: axum::Router,
    timeout: Duration,
) {
    let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await else {
        return;
    };
    let _ = tokio::time::timeout(timeout, one_request(tls, app, peer, timeout)).await;
}

/// Serves one HTTP/1.1 request from `peer` on `tls` with `app`, its headers due within `timeout`;
/// the connection is closed after the answer.
async fn one_request(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    app: axum::Router,
    peer: IpAddr,
    timeout: Duration,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(http::Peer(peer));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tls), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// Admin connections held per source address.
#[derive(Debug, Default)]
struct PerAddress {
    counts: Mutex<std::collections::HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// A slot for `ip` if it holds fewer than `limit`; given back when dropped.
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut counts = lock(&self.counts);
        let count = counts.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One connection's share of its address's allowance.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.table.counts);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The whole admin application: the API under `/api/v1`, the pages, and around both the body
/// deadline and size limit and the security headers every answer carries.
fn router(state: Arc<AdminState>, body_timeout: Duration) -> axum::Router {
    let app = axum::Router::new()
        .nest("/api/v1", api::router(state.clone()))
        .merge(pages::router(state));
    http::harden(app, body_timeout)
}
