//! The backend: a logged-in repository session for an authenticated client, from the warm pool or
//! freshly connected, and what happens to it when the client leaves.
//!
//! A session pgssl logged into (proxy mode) is a [`Backend`]: the connection plus what the repository
//! told it at start-up — the reported parameters as they stand now, its cancel key, a
//! NegotiateProtocolVersion if it sent one. The client never sees those bytes from the repository:
//! pgssl writes the start-up answer itself ([`Backend::welcome`]) with a cancel key it minted
//! ([`cancel`]), so a warm session looks to each client exactly like a new one. When the client leaves
//! an idle session, it is reset ([`reset`]) and goes back to the [`pool`]; anything else is closed.

pub mod cancel;
pub mod maintain;
pub mod pool;
pub mod reset;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::proxy::auth::scram::Verifier;
use crate::proxy::auth::terminate::RepositoryAuthError;
use crate::proxy::auth::{FrameError, read_frame};
use crate::proxy::protocol::StartupMessage;
use crate::proxy::protocol::auth_message::Frame;
use crate::proxy::repository::RepositoryStream;

pub use pool::{Checkout, Exhausted, MinWarm, Pool, PoolOptions, Slot};

/// What a warm session must match to be handed to a client: the role, the database, every start-up
/// parameter except `application_name` (which is applied with SET at hand-out, so that the pool is
/// not split by it), and the protocol version asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The role.
    pub role: String,
    /// The database.
    pub database: String,
    /// The other start-up parameters, sorted.
    options: Vec<(String, String)>,
    /// The protocol minor version the client asked for.
    minor: u16,
    /// The repository host (its index in `repository.address`).
    pub host: usize,
}

impl PoolKey {
    /// The key of a start-up, or `None` for one that is never pooled (a replication connection).
    pub fn of(startup: &StartupMessage) -> Option<PoolKey> {
        if startup.param("replication").is_some() {
            return None;
        }
        let mut options: Vec<(String, String)> = startup
            .params
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "user" | "database" | "application_name"))
            .cloned()
            .collect();
        options.sort();
        Some(PoolKey {
            role: startup.user()?.to_string(),
            database: startup.database()?.to_string(),
            options,
            minor: startup.minor,
            host: 0,
        })
    }

    /// The same key for sessions on repository host `host`.
    pub fn on_host(mut self, host: usize) -> PoolKey {
        self.host = host;
        self
    }

    /// The key a never-pooled session counts under.
    pub fn unpooled(role: &str, database: &str) -> PoolKey {
        PoolKey {
            role: role.to_string(),
            database: database.to_string(),
            options: vec![("replication".into(), String::new())],
            minor: 0,
            host: 0,
        }
    }
}

/// A logged-in repository session and what its start-up said.
pub struct Backend {
    stream: RepositoryStream,
    /// ParameterStatus values as the repository last reported them, in the order first reported.
    params: Vec<(Bytes, Bytes)>,
    /// The repository's BackendKeyData body (process ID, secret).
    key: Bytes,
    /// The protocol minor version the session speaks.
    minor: u16,
    /// The verifier the login proved (a changed password retires the session).
    verifier: Verifier,
    /// When it logged in, and under which settings generation.
    born: Instant,
    generation: u64,
    /// Clients it has served.
    served: u64,
    /// The worker whose runtime its socket is registered with.
    worker: Option<usize>,
    /// Its place in the pool's bounds (released when the backend is dropped).
    slot: Slot,
    /// Cancelled when its host stops being what it was routed to: never handed out after that.
    epoch: tokio_util::sync::CancellationToken,
    /// What transaction-pooled clients left on it (prepared statements, SETs).
    pooling: crate::proxy::pooling::BackendState,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("pid", &self.pid())
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

/// The repository's start-up answer was not what a PostgreSQL server sends.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// It refused the session after authentication (e.g. 3D000, a database that does not exist):
    /// this ErrorResponse, to relay to the client as it is.
    #[error("the repository refused the session")]
    Refused(Frame),
    /// A message that does not belong in a start-up answer, or a malformed one.
    #[error("unexpected start-up answer from the repository: {0}")]
    Unexpected(&'static str),
    /// The socket failed or a frame was malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<StartupError> for RepositoryAuthError {
    fn from(e: StartupError) -> RepositoryAuthError {
        match e {
            StartupError::Refused(frame) => RepositoryAuthError::Refused(frame),
            StartupError::Frame(f) => f.into(),
            StartupError::Unexpected(what) => RepositoryAuthError::Unexpected(what),
        }
    }
}

impl Backend {
    /// Reads the repository's answer after AuthenticationOk (ParameterStatus, BackendKeyData, up to
    /// ReadyForQuery) for a session whose start-up asked for protocol 3.`minor`.
    pub async fn after_login(
        mut stream: RepositoryStream,
        negotiated: Option<Frame>,
        minor: u16,
        verifier: Verifier,
        slot: Slot,
        generation: u64,
    ) -> Result<Backend, StartupError> {
        let mut params = Vec::new();
        let mut key = None;
        loop {
            let frame = read_frame(&mut stream).await?;
            match frame.kind {
                b'S' => set_param(&mut params, &frame.body)?,
                b'K' if frame.body.len() >= 8 => key = Some(frame.body.clone()),
                b'N' => {}
                b'E' => return Err(StartupError::Refused(frame)),
                b'Z' => break,
                _ => return Err(StartupError::Unexpected("a message before ReadyForQuery")),
            }
        }
        let key = key.ok_or(StartupError::Unexpected("no BackendKeyData"))?;
        slot.remember_params(&params);
        let minor = negotiated
            .as_ref()
            .and_then(|v| v.body.get(..4))
            .map_or(minor, |m| {
                minor.min(u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as u16)
            });
        Ok(Backend {
            stream,
            params,
            key,
            minor,
            verifier,
            born: Instant::now(),
            generation,
            served: 0,
            worker: pool::this_worker(),
            slot,
            epoch: tokio_util::sync::CancellationToken::new(),
            pooling: Default::default(),
        })
    }

    /// The start-up answer a client gets for this session, after its own authentication exchange:
    /// AuthenticationOk, the parameters as they are now, the client's own cancel key, ReadyForQuery
    /// (idle). (The repository's NegotiateProtocolVersion is not the client's: pgssl settles the
    /// client's protocol itself, before authentication, as PostgreSQL does.)
    pub fn welcome(&self, client_key: &[u8]) -> BytesMut {
        welcome_message(&self.params, client_key)
    }

    /// Its repository host (the index in `repository.address`).
    pub fn host(&self) -> usize {
        self.slot.key().host
    }

    /// The repository's process ID for this session.
    pub fn pid(&self) -> i32 {
        self.key
            .get(..4)
            .map_or(0, |p| i32::from_be_bytes([p[0], p[1], p[2], p[3]]))
    }

    /// The CancelRequest that cancels this session's current query.
    pub fn cancel_packet(&self) -> Bytes {
        cancel::cancel_packet(&self.key)
    }

    /// The protocol minor version the session speaks.
    pub fn minor(&self) -> u16 {
        self.minor
    }

    /// A reported parameter's current value.
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    /// The connection, what transaction pooling left on the session, and the reported parameters as
    /// they stand: the transaction-pooled serve loop's view.
    pub(crate) fn pooling_parts(
        &mut self,
    ) -> (
        &mut RepositoryStream,
        &mut crate::proxy::pooling::BackendState,
        &mut Vec<(Bytes, Bytes)>,
    ) {
        (&mut self.stream, &mut self.pooling, &mut self.params)
    }

    /// The reported parameters as they stand.
    pub fn params(&self) -> &[(Bytes, Bytes)] {
        &self.params
    }

    /// The connection, for the relay.
    pub fn stream(&mut self) -> &mut RepositoryStream {
        &mut self.stream
    }

    /// Ties the session to its host's epoch (see [`crate::proxy::repository::hosts`]).
    pub fn on_epoch(&mut self, epoch: tokio_util::sync::CancellationToken) {
        self.epoch = epoch;
    }

    /// Cancelled when the host stopped being what the session was routed to.
    pub fn epoch(&self) -> &tokio_util::sync::CancellationToken {
        &self.epoch
    }

    /// Whether the repository reported, at start-up, that it is a hot standby (`in_hot_standby`,
    /// PostgreSQL 14 and later).
    pub fn in_hot_standby(&self) -> bool {
        self.param("in_hot_standby") == Some(b"on")
    }

    /// Counts one more client served.
    pub fn served_one(&mut self) {
        self.served += 1;
    }

    /// Whether the repository side has said or closed anything while the session sat idle, checked
    /// with the kernel (a non-blocking peek at the socket, no round trip): an idle PostgreSQL backend
    /// sends nothing unless it is going away (a FATAL for `pg_terminate_backend`, a shutdown, an
    /// `idle_session_timeout`) or has already gone (end of stream). Either way it is not handed out.
    pub fn is_quiet(&self) -> bool {
        let fd: RawFd = match &self.stream {
            RepositoryStream::Tcp(s) => s.as_raw_fd(),
            RepositoryStream::Unix(s) => s.as_raw_fd(),
            RepositoryStream::Tls(s) => s.get_ref().0.as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: `fd` is an open socket owned by `self.stream` for the duration of this call, and
        // the buffer is one valid byte.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }

    /// Sends Terminate and closes, giving up after a second (the session is being thrown away).
    pub async fn close(mut self) {
        let bye = async {
            self.stream.write_all(&[b'X', 0, 0, 0, 4]).await?;
            self.stream.shutdown().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), bye).await;
    }

    fn key_of_pool(&self) -> &Arc<PoolKey> {
        self.slot.key()
    }
}

/// A start-up answer after authentication: AuthenticationOk, the parameters `params`, the cancel key
/// `client_key`, ReadyForQuery (idle).
pub fn welcome_message(params: &[(Bytes, Bytes)], client_key: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
    for (name, value) in params {
        out.put_u8(b'S');
        out.put_u32((4 + name.len() + 1 + value.len() + 1) as u32);
        out.put_slice(name);
        out.put_u8(0);
        out.put_slice(value);
        out.put_u8(0);
    }
    out.put_u8(b'K');
    out.put_u32(4 + client_key.len() as u32);
    out.put_slice(client_key);
    out.put_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    out
}

/// Records one ParameterStatus body (`name\0value\0`), replacing an earlier value of the same name.
fn set_param(params: &mut Vec<(Bytes, Bytes)>, body: &Bytes) -> Result<(), StartupError> {
    let bad = StartupError::Unexpected("a malformed ParameterStatus");
    let name_end = body.iter().position(|&b| b == 0).ok_or(bad)?;
    let rest = &body[name_end + 1..];
    let value_end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::Unexpected("a malformed ParameterStatus"))?;
    let name = body.slice(..name_end);
    let value = body.slice(name_end + 1..name_end + 1 + value_end);
    match params.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => *v = value,
        None => params.push((name, value)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)], minor: u16) -> StartupMessage {
        StartupMessage {
            raw: Bytes::new(),
            major: 3,
            minor,
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_key_ignores_application_name_and_parameter_order() {
        let a = startup(
            &[
                ("user", "u"),
                ("database", "d"),
                ("application_name", "one"),
                ("DateStyle", "ISO"),
                ("client_encoding", "UTF8"),
            ],
            0,
        );
        let b = startup(
            &[
                ("client_encoding", "UTF8"),
                ("user", "u"),
                ("DateStyle", "ISO"),
                ("database", "d"),
                ("application_name", "two"),
            ],
            0,
        );
        assert_eq!(PoolKey::of(&a), PoolKey::of(&b));
        // Another option, protocol version or database is another key.
        let c = startup(&[("user", "u"), ("database", "d"), ("DateStyle", "ISO")], 0);
        assert_ne!(PoolKey::of(&a), PoolKey::of(&c));
        let d = startup(&[("user", "u"), ("database", "d")], 0);
        let e = startup(&[("user", "u"), ("database", "d")], 2);
        assert_ne!(PoolKey::of(&d), PoolKey::of(&e));
        // The database defaults to the role, as PostgreSQL's does.
        let f = startup(&[("user", "d")], 0);
        assert_eq!(PoolKey::of(&f).unwrap().database, "d");
        assert!(PoolKey::of(&startup(&[("user", "u"), ("replication", "true")], 0)).is_none());
    }

    /// A session logged in with protocol 3.2 to a repository that speaks 3.0 speaks 3.0 with it; the
    /// repository's NegotiateProtocolVersion is not replayed to clients (pgssl answers their own).
    #[tokio::test]
    async fn the_repositorys_negotiation_sets_the_sessions_minor_but_is_not_the_clients() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        far.write_all(b"K\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04Z\0\0\0\x05I")
            .await
            .unwrap();
        let pool = pool::Pool::new(pool::PoolOptions::default());
        let key = Arc::new(PoolKey::unpooled("u", "d"));
        let verifier = Verifier::mock("u", b"s");
        let Ok(pool::Checkout::Fork(slot)) = pool
            .checkout(&key, &verifier, true, false, tokio::time::Instant::now())
            .await
        else {
            panic!()
        };
        // NegotiateProtocolVersion: newest minor 0, no unrecognised options.
        let v = Frame {
            kind: b'v',
            body: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]),
        };
        let b = Backend::after_login(
            RepositoryStream::Tcp(near),
            Some(v.clone()),
            2,
            verifier,
            slot,
            1,
        )
        .await
        .unwrap();
        assert_eq!(b.minor(), 0);
        assert_eq!(b.pid(), 5);
        // pgssl settled the client's protocol before authentication: the welcome starts with
        // AuthenticationOk, never with the repository's NegotiateProtocolVersion.
        let welcome = b.welcome(&[0, 0, 0, 7, 9, 9, 9, 9]);
        assert_eq!(&welcome[..9], &[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        assert!(welcome.ends_with(b"K\0\0\0\x0c\0\0\0\x07\x09\x09\x09\x09Z\0\0\0\x05I"));
        // Without the negotiation the session speaks what the client asked.
        assert_eq!(
            cancel::CancelKeys::default()
                .mint(b.minor(), b.cancel_packet(), 0)
                .unwrap()
                .len(),
            8
        );
    }

    #[test]
    fn a_parameter_report_replaces_the_earlier_value() {
        let mut params = Vec::new();
        set_param(&mut params, &Bytes::from_static(b"DateStyle\0ISO, MDY\0")).unwrap();
        set_param(&mut params, &Bytes::from_static(b"TimeZone\0UTC\0")).unwrap();
        set_param(&mut params, &Bytes::from_static(b"DateStyle\0German\0")).unwrap();
        assert_eq!(params.len(), 2);
        assert_eq!(params[0].1.as_ref(), b"German");
        assert!(set_param(&mut params, &Bytes::from_static(b"no terminator")).is_err());
        assert!(set_param(&mut params, &Bytes::from_static(b"name\0value")).is_err());
    }
}
