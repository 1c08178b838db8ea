//! A fake repository: the connection context's [`RepositoryConnector`] in the stage tests. Each
//! connection pgssl opens is one end of a Unix socket pair made in process — a real socket, so the
//! pool's kernel check of an idle session ([`crate::proxy::backend::Backend::is_quiet`]) works on it
//! — whose other end the test plays as PostgreSQL ([`RepoSession`]); a connection can also be made
//! to fail on demand ([`FakeRepository::fail_next`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::within;
use crate::proxy::auth::read_frame;
use crate::proxy::auth::scram::{self, ClientFinal, ClientFirst, Verifier};
use crate::proxy::protocol::auth_message::{
    self, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, Frame, sasl_initial_response,
};
use crate::proxy::protocol::first_packet::{self, FirstPacket, StartupMessage};
use crate::proxy::repository::connector::ConnectFuture;
use crate::proxy::repository::tls::RepositoryTls;
use crate::proxy::repository::{
    RepositoryAddr, RepositoryConnectError, RepositoryConnector, RepositoryStream,
};

/// The repository as the data plane reaches it in a test.
#[derive(Debug)]
pub(in crate::proxy::tests) struct FakeRepository {
    addr: RepositoryAddr,
    /// How the next connections fail, in order; once empty they succeed.
    failures: Mutex<VecDeque<RepositoryConnectError>>,
    attempts: AtomicUsize,
    accepted: mpsc::UnboundedSender<UnixStream>,
    sessions: tokio::sync::Mutex<mpsc::UnboundedReceiver<UnixStream>>,
}

impl FakeRepository {
    /// A repository at a TCP address (never dialled).
    pub(in crate::proxy::tests) fn new() -> std::sync::Arc<FakeRepository> {
        FakeRepository::at(RepositoryAddr::Tcp("repository.test:5432".into()))
    }

    /// A repository that says it is at `addr` (a Unix socket is the managed repository's).
    pub(in crate::proxy::tests) fn at(addr: RepositoryAddr) -> std::sync::Arc<FakeRepository> {
        let (accepted, sessions) = mpsc::unbounded_channel();
        std::sync::Arc::new(FakeRepository {
            addr,
            failures: Mutex::default(),
            attempts: AtomicUsize::new(0),
            accepted,
            sessions: tokio::sync::Mutex::new(sessions),
        })
    }

    /// Makes the next connection fail with `error`.
    pub(in crate::proxy::tests) fn fail_next(&self, error: RepositoryConnectError) {
        self.failures.lock().expect("lock").push_back(error);
    }

    /// Connections pgssl has tried to open so far (failed ones included).
    pub(in crate::proxy::tests) fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// The repository's end of the next connection pgssl opens.
    pub(in crate::proxy::tests) async fn session(&self) -> RepoSession {
        let mut sessions = self.sessions.lock().await;
        let io = within("pgssl connecting to the repository", sessions.recv())
            .await
            .expect("the fake repository is alive");
        RepoSession { io }
    }
}

impl fmt::Display for FakeRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fake repository at {}", self.addr)
    }
}

impl RepositoryConnector for FakeRepository {
    fn connect<'a>(&'a self, _timeout: Duration, _tls: &'a RepositoryTls) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if let Some(error) = self.failures.lock().expect("lock").pop_front() {
                return Err(error);
            }
            let (near, far) = UnixStream::pair()?;
            let _ = self.accepted.send(far);
            Ok(RepositoryStream::Unix(near))
        })
    }

    fn addr(&self) -> &RepositoryAddr {
        &self.addr
    }
}

/// Terminate, as a client (or pgssl closing a backend) sends it.
pub(in crate::proxy::tests) const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// A backend message: its type, its length, its body.
pub(in crate::proxy::tests) fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    Frame {
        kind,
        body: Bytes::copy_from_slice(body),
    }
    .encode()
    .to_vec()
}

/// ParameterStatus.
pub(in crate::proxy::tests) fn parameter(name: &str, value: &str) -> Vec<u8> {
    message(b'S', format!("{name}\0{value}\0").as_bytes())
}

/// BackendKeyData with a 4-byte secret.
pub(in crate::proxy::tests) fn backend_key(pid: i32, secret: i32) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i32(pid);
    body.put_i32(secret);
    message(b'K', &body)
}

/// ReadyForQuery with transaction status `status`.
pub(in crate::proxy::tests) fn ready(status: u8) -> Vec<u8> {
    message(b'Z', &[status])
}

/// An ErrorResponse as PostgreSQL words one.
pub(in crate::proxy::tests) fn error(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let body = format!("S{severity}\0V{severity}\0C{code}\0M{text}\0\0");
    message(b'E', body.as_bytes())
}

/// The repository's end of one connection pgssl opened.
pub(in crate::proxy::tests) struct RepoSession {
    io: UnixStream,
}

impl RepoSession {
    /// The length-prefixed packet that opens a connection (a start-up or a cancel request).
    async fn packet(&mut self) -> BytesMut {
        within("pgssl's first packet to the repository", async {
            let len = self.io.read_u32().await.expect("a packet length") as usize;
            let mut packet = BytesMut::with_capacity(len);
            packet.put_u32(len as u32);
            packet.resize(len, 0);
            self.io
                .read_exact(&mut packet[4..])
                .await
                .expect("a whole packet");
            packet
        })
        .await
    }

    /// The start-up pgssl forwarded.
    pub(in crate::proxy::tests) async fn startup(&mut self) -> StartupMessage {
        let mut packet = self.packet().await;
        match first_packet::parse(&mut packet) {
            Ok(Some(FirstPacket::Startup(startup))) => startup,
            other => panic!("expected a start-up, got {other:?}"),
        }
    }

    /// The CancelRequest pgssl sent, as it came.
    pub(in crate::proxy::tests) async fn cancel_request(&mut self) -> Bytes {
        self.packet().await.freeze()
    }

    /// The next typed message pgssl sent.
    pub(in crate::proxy::tests) async fn frame(&mut self) -> Frame {
        within(
            "a message from pgssl to the repository",
            read_frame(&mut self.io),
        )
        .await
        .expect("a message")
    }

    /// The text of the simple Query pgssl sent next.
    pub(in crate::proxy::tests) async fn query(&mut self) -> String {
        let frame = self.frame().await;
        assert_eq!(frame.kind, b'Q', "expected a Query, got {frame:?}");
        let text = frame
            .body
            .strip_suffix(&[0])
            .expect("a NUL-terminated query");
        String::from_utf8(text.to_vec()).expect("UTF-8")
    }

    /// Exactly `n` bytes pgssl sent, as they came.
    pub(in crate::proxy::tests) async fn raw(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        within(
            "bytes from pgssl to the repository",
            self.io.read_exact(&mut bytes),
        )
        .await
        .expect("bytes");
        bytes
    }

    /// Sends raw bytes.
    pub(in crate::proxy::tests) async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("repository write");
    }

    /// Answers a simple query with CommandComplete `tag` and ReadyForQuery (idle).
    pub(in crate::proxy::tests) async fn complete(&mut self, tag: &str) {
        let mut out = message(b'C', format!("{tag}\0").as_bytes());
        out.extend(ready(b'I'));
        self.send(&out).await;
    }

    /// The rest of a start-up answer after AuthenticationOk, as PostgreSQL sends it: parameters
    /// (`application_name` as the start-up asked), the key `pid`/`secret`, ReadyForQuery.
    pub(in crate::proxy::tests) async fn welcome(
        &mut self,
        startup: &StartupMessage,
        pid: i32,
        secret: i32,
    ) {
        let mut out = parameter("server_version", "15.8");
        let app = startup.param("application_name").unwrap_or_default();
        out.extend(parameter("application_name", app));
        out.extend(backend_key(pid, secret));
        out.extend(ready(b'I'));
        self.send(&out).await;
    }

    /// Lets the session in without a password (`trust`), then welcomes it.
    pub(in crate::proxy::tests) async fn trust(
        &mut self,
        startup: &StartupMessage,
        pid: i32,
        secret: i32,
    ) {
        self.send(&auth_message::auth_request(0, &[]).encode())
            .await;
        self.welcome(startup, pid, secret).await;
    }

    /// Plays PostgreSQL's side of SCRAM-SHA-256 against `verifier`: `true` (and AuthenticationOk
    /// sent) when pgssl proved it; otherwise `false`, with 28P01 sent.
    pub(in crate::proxy::tests) async fn scram(&mut self, verifier: &Verifier) -> bool {
        self.send(&auth_message::sasl_offer(&[scram::SCRAM]).encode())
            .await;
        let initial = self.frame().await;
        let (mechanism, data) = sasl_initial_response(&initial.body).expect("SASLInitialResponse");
        assert_eq!(mechanism, scram::SCRAM);
        let first = ClientFirst::parse(data).expect("a client-first message");
        let server_first = verifier.server_first(&first.nonce, "repositorynonce");
        let continue_ = auth_message::auth_request(AUTH_SASL_CONTINUE, server_first.as_bytes());
        self.send(&continue_.encode()).await;
        let last = ClientFinal::parse(&self.frame().await.body).expect("a client-final message");
        let signed = scram::auth_message(&first.bare, &server_first, &last.without_proof);
        if verifier.check(&signed, &last.proof).is_err() {
            let refusal = error("FATAL", "28P01", "password authentication failed");
            self.send(&refusal).await;
            return false;
        }
        let signature = scram::server_signature(&verifier.server_key, &signed);
        let verdict = format!("v={}", scram::encode(&signature));
        let mut out = auth_message::auth_request(AUTH_SASL_FINAL, verdict.as_bytes())
            .encode()
            .to_vec();
        out.extend_from_slice(&auth_message::auth_request(0, &[]).encode());
        self.send(&out).await;
        true
    }

    /// Everything pgssl sends until it closes its end.
    pub(in crate::proxy::tests) async fn until_closed(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        within("pgssl closing the repository connection", async {
            let _ = self.io.read_to_end(&mut rest).await;
        })
        .await;
        rest
    }
}
