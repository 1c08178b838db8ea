//! The admin server: HTTPS on `127.0.0.1:8850` by default, with a JSON API under `/api/v1/` and the web
//! pages, both built on the same control-plane operations as the CLI ([`crate::control::operations`]).
//!
//! Every request but sign-in needs a session (cookie `pgssl_admin`: HttpOnly, Secure,
//! SameSite=Strict, idle timeout); every change request also needs the session's CSRF token; every
//! change is audit-logged without secrets. Failed sign-ins are limited per source address.

mod api;
mod audit;
pub mod requests;
pub mod session;
mod web;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::operations::{CommandError, Context, Output, OutputLine};
use crate::control::state::admin_users::HashMemory;
use crate::tls::certs::{self, CertError, CertPaths};
use crate::tls::protocols::ProtocolSet;
use session::{Sessions, SignInLimiter};

/// The default admin address, as in the model's services manager.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8850";
pub use crate::control::api::{CSRF_HEADER, SESSION_COOKIE};
/// The API's OpenAPI document, served at `/api/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("openapi.yaml");
/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 128;
/// Largest request body accepted (certificate uploads included).
const MAX_BODY: usize = 1 << 20;

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
    sessions: Mutex<Sessions>,
    limiter: Mutex<SignInLimiter>,
    /// Password checks running at once (one per core).
    hashing: tokio::sync::Semaphore,
    /// Argon2 working memory, one per hashing permit at most, reused.
    hash_memory: Mutex<Vec<HashMemory>>,
    audit: audit::AuditLog,
}

impl AdminState {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        lock(&self.sessions)
    }

    fn limiter(&self) -> MutexGuard<'_, SignInLimiter> {
        lock(&self.limiter)
    }

    /// Runs a change for `user` and audit-logs what it was and how it ended (never its inputs).
    async fn perform<F>(
        self: &Arc<Self>,
        user: &str,
        peer: IpAddr,
        action: &str,
        op: F,
    ) -> (Result<(), CommandError>, Vec<OutputLine>)
    where
        F: FnOnce(&Context) -> Result<(), CommandError> + Send + 'static,
    {
        let (result, lines) = self.run(op).await;
        let outcome = match &result {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                e.record(action);
                format!("refused: {e}")
            }
        };
        self.audit.record(user, peer, action, &outcome).await;
        (result, lines)
    }

    /// Runs a control-plane operation (or query) on a blocking thread with its report collected.
    async fn run<T, F>(self: &Arc<Self>, op: F) -> (Result<T, CommandError>, Vec<OutputLine>)
    where
        T: Send + 'static,
        F: FnOnce(&Context) -> Result<T, CommandError> + Send + 'static,
    {
        let ctx = Context {
            data_dir: self.data_dir.clone(),
            config: self.config.clone(),
            out: Output::collect(),
        };
        let joined = tokio::task::spawn_blocking(move || {
            let result = op(&ctx);
            (result, ctx.out.take())
        })
        .await;
        joined.unwrap_or_else(|e| {
            (
                Err(CommandError::Fault(format!("the operation failed: {e}"))),
                Vec::new(),
            )
        })
    }
}

/// Locks `m`; a panic while it was held leaves data that is still usable (a map, a pool).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a sign-in was refused.
pub(crate) enum SignInRefusal {
    /// Too many failures from this address; wait this long.
    Blocked(Duration),
    /// Every password-hashing slot stayed taken for [`HASH_QUEUE_WAIT`]; nothing was checked.
    Busy,
    /// Wrong name or password (recorded as a failure).
    Wrong,
    /// The administrators file or the random source failed.
    Internal(String),
}

impl SignInRefusal {
    /// The HTTP status, the message a person reads, and the seconds for `Retry-After` if any.
    pub(crate) fn answer(&self) -> (StatusCode, String, Option<u64>) {
        match self {
            SignInRefusal::Blocked(wait) => {
                let secs = wait.as_secs() + 1;
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed sign-ins from this address; try again in {secs} s"),
                    Some(secs),
                )
            }
            SignInRefusal::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the admin server is busy checking other sign-ins; try again in a second".into(),
                Some(1),
            ),
            SignInRefusal::Wrong => (
                StatusCode::UNAUTHORIZED,
                "wrong user name or password".into(),
                None,
            ),
            SignInRefusal::Internal(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.clone(), None),
        }
    }
}

/// How long a sign-in waits for a password-hashing slot before it is answered 503.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

impl AdminState {
    /// Checks a sign-in against the per-address limit and the Argon2id hash (on a blocking thread),
    /// audit-logs it, and on success starts a session: its token and the session.
    pub(crate) async fn sign_in(
        &self,
        peer: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(String, session::Session), SignInRefusal> {
        // Counted before the check, so that parallel guesses cannot all be checked before any counts.
        self.limiter()
            .reserve(peer)
            .map_err(SignInRefusal::Blocked)?;
        // Each Argon2id check holds ~19 MiB while it runs: only as many run as there are cores, for
        // known and unknown names alike, whatever the number of sign-ins arriving.
        let Ok(Ok(permit)) = tokio::time::timeout(HASH_QUEUE_WAIT, self.hashing.acquire()).await
        else {
            self.limiter().release(peer);
            return Err(SignInRefusal::Busy);
        };
        let users =
            crate::control::state::admin_users::AdminUsers::open(&self.data_dir.join("config"));
        let (name, secret) = (
            user.to_string(),
            crate::keystore::Secret::new(password.to_string()),
        );
        let mut memory = lock(&self.hash_memory).pop().unwrap_or_default();
        let checked = tokio::task::spawn_blocking(move || {
            let verified = users.verify_with(&name, secret.expose(), &mut memory);
            (verified, memory)
        })
        .await;
        let verified = match checked {
            Ok((verified, memory)) => {
                lock(&self.hash_memory).push(memory);
                verified.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        drop(permit);
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                self.limiter().release(peer);
                return Err(SignInRefusal::Internal(e));
            }
        };
        if !verified {
            self.audit
                .record(
                    user,
                    peer,
                    "sign-in",
                    "refused: wrong user name or password",
                )
                .await;
            return Err(SignInRefusal::Wrong);
        }
        self.limiter().succeeded(peer);
        let started = self.sessions().create(user).ok_or_else(|| {
            SignInRefusal::Internal("the system random number generator failed".into())
        })?;
        self.audit.record(user, peer, "sign-in", "ok").await;
        Ok(started)
    }
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
    /// `<data-dir>/config/admin/`, separate from the repository certificate.
    pub async fn bind(
        addr: SocketAddr,
        data_dir: PathBuf,
        config: Config,
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
            crate::tls::server_config_from(chain, key, ProtocolSet::ALL).map_err(|e| {
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
        let idle = Duration::from_secs(config.admin.session_idle_timeout_secs);
        let audit = audit::AuditLog::new(&data_dir);
        Ok(AdminServer {
            listener,
            acceptor: TlsAcceptor::from(tls),
            state: Arc::new(AdminState {
                data_dir,
                config,
                sessions: Mutex::new(Sessions::new(idle)),
                limiter: Mutex::new(SignInLimiter::default()),
                hash_memory: Mutex::new(Vec::new()),
                hashing: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                ),
                audit,
            }),
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
    /// Each connection carries one request and has [`AdminConfig::request_timeout_secs`] for its TLS
    /// handshake and headers and as much again for its body, so a client that trickles bytes holds a
    /// slot for seconds, not for as long as it likes; and one source address holds at most
    /// `max_connections_per_address` of the `MAX_CONNECTIONS` (128) slots, so others are still served
    /// while it tries.
    ///
    /// [`AdminConfig::request_timeout_secs`]: crate::config::AdminConfig::request_timeout_secs
    pub async fn run(self, stop: CancellationToken) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let per_address = Arc::new(PerAddress::default());
        let limit = self.state.config.admin.max_connections_per_address;
        let timeout = Duration::from_secs(self.state.config.admin.request_timeout_secs);
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
                continue;
            };
            let acceptor = self.acceptor.clone();
            let state = self.state.clone();
            let stop = stop.clone();
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
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, peer.ip(), req, timeout).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(timeout)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    _ = conn => {}
                    () = stop.cancelled() => {}
                }
            });
        }
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

/// A request as handlers see it.
pub(crate) struct Req {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    peer: IpAddr,
}

impl Req {
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    fn is_api(&self) -> bool {
        self.path.starts_with("/api/")
    }
}

/// A response body with the headers every admin response carries.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

/// JSON `{"error": message}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        serde_json::json!({ "error": message }).to_string(),
    )
}

fn session_cookie(token: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map_or(String::new(), |a| format!("; Max-Age={a}"));
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("pgssl_admin=; Path=/"))
}

async fn handle(
    state: Arc<AdminState>,
    peer: IpAddr,
    req: Request<Incoming>,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body =
        match tokio::time::timeout(body_timeout, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(_)) => {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than 1 MiB",
                );
            }
            Err(_) => {
                info!(%peer, "admin request body not received in time; closing");
                let mut resp = json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                );
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        peer,
    };
    // Public: sign-in and the static script.
    match (&req.method, req.path.as_str()) {
        (&Method::POST, "/api/v1/session") => return api::sign_in(&state, &req).await,
        (&Method::GET, "/login") => return web::login_page(None),
        (&Method::POST, "/login") => return web::login(&state, &req).await,
        (&Method::GET, "/static/pgssl.js") => return web::script(),
        (&Method::GET, "/api/v1/openapi.yaml") => {
            return respond(StatusCode::OK, "application/yaml", OPENAPI);
        }
        _ => {}
    }
    let token = req.cookie(SESSION_COOKIE).unwrap_or_default();
    let session = state.sessions().touch(&token).cloned();
    let Some(session) = session else {
        return if req.is_api() {
            json_error(
                StatusCode::UNAUTHORIZED,
                "sign in first (POST /api/v1/session with username and password)",
            )
        } else {
            web::redirect("/login")
        };
    };
    // An administrator deleted meanwhile is signed out. The file is read off the async runtime.
    let users =
        crate::control::state::admin_users::AdminUsers::open(&state.data_dir.join("config"));
    let listed = tokio::task::spawn_blocking(move || users.list()).await;
    if !matches!(&listed, Ok(Ok(names)) if names.contains(&session.user)) {
        state.sessions().end(&token);
        return if req.is_api() {
            json_error(
                StatusCode::UNAUTHORIZED,
                "this administrator no longer exists",
            )
        } else {
            web::redirect("/login")
        };
    }
    let changes = req.method != Method::GET && req.method != Method::HEAD;
    if changes {
        let presented = if req.is_api() {
            req.headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        } else {
            web::form_field(&req.body, "csrf_token")
        };
        if !presented.is_some_and(|p| session::same_secret(&p, &session.csrf)) {
            state
                .audit
                .record(
                    &session.user,
                    req.peer,
                    &format!("{} {}", req.method, req.path),
                    "refused: CSRF token missing or wrong",
                )
                .await;
            return if req.is_api() {
                json_error(
                    StatusCode::FORBIDDEN,
                    "CSRF token missing or wrong (send the X-CSRF-Token header from sign-in)",
                )
            } else {
                respond(
                    StatusCode::FORBIDDEN,
                    "text/plain; charset=utf-8",
                    "CSRF token missing or wrong; reload the page",
                )
            };
        }
    }
    if req.is_api() {
        api::route(&state, &req, &session, &token).await
    } else {
        web::route(&state, &req, &session, &token).await
    }
}
