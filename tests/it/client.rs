//! A Rust client for the tests: tokio-postgres over the test's own stream — plain TCP, TLS after
//! SSLRequest, or direct TLS, with rustls verifying the proxy's certificate — so each test keeps
//! control of TLS and of the first packets (`connect_raw` speaks only the protocol on it).
//!
//! Two small raw-protocol helpers stay here for what tokio-postgres does not show: the backend key a
//! session got (read by [`KeyTap`] as the start-up passes, for tests that send CancelRequests by
//! hand), and the fields of an ErrorResponse read off a socket that never logs in ([`read_error`]).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::backend::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::NoTls;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::harness::PASSWORD;

/// An error a server answered: what the tests look at.
pub use pgssl::proxy::protocol::error_response::ReceivedError as ServerError;

/// Why a test client's session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket or the TLS handshake.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered an error (shown as `SEVERITY: message (SQLSTATE code)`), or the
    /// protocol failed.
    #[error("{}", pgssl::repository::session::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// SSLRequest answered something else than `S`.
    #[error("SSLRequest answered {:?}", *.0 as char)]
    NoTls(u8),
}

impl ClientError {
    /// The error the server answered, if it answered one.
    pub fn server(&self) -> Option<ServerError> {
        let ClientError::Postgres(e) = self else {
            return None;
        };
        e.as_db_error().map(|db| ServerError {
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
        })
    }
}

/// The text rows of a simple query's last statement; `None` is SQL NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// What the TLS handshake of a session settled.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// TLS 1.2 or 1.3.
    pub protocol_version: Option<rustls::ProtocolVersion>,
    /// The cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The key-exchange group.
    pub kx_group: Option<rustls::NamedGroup>,
    /// The server's certificate chain.
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// A stream a test session runs on: plaintext, or TLS whose handshake the session records.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// What the handshake settled, for a TLS stream.
    fn tls_info(&self) -> Option<TlsInfo>;
}

impl ClientStream for TcpStream {
    fn tls_info(&self) -> Option<TlsInfo> {
        None
    }
}

impl ClientStream for TlsStream<TcpStream> {
    fn tls_info(&self) -> Option<TlsInfo> {
        let (_, conn) = self.get_ref();
        Some(TlsInfo {
            protocol_version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            kx_group: conn.negotiated_key_exchange_group().map(|g| g.name()),
            peer_certificates: conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        })
    }
}

/// A stream that watches the server's messages until the first ReadyForQuery and keeps the
/// BackendKeyData among them (tokio-postgres keeps the key to itself).
struct KeyTap<S> {
    inner: S,
    seen: BytesMut,
    key: Arc<Mutex<Option<(i32, i32)>>>,
    done: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for KeyTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.done {
            let tap = &mut *self;
            tap.seen.extend_from_slice(&buf.filled()[before..]);
            loop {
                match Message::parse(&mut tap.seen) {
                    Ok(Some(Message::BackendKeyData(k))) => {
                        *tap.key.lock().unwrap() = Some((k.process_id(), k.secret_key()));
                    }
                    Ok(Some(Message::ReadyForQuery(_))) | Err(_) => {
                        tap.done = true;
                        tap.seen = BytesMut::new();
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                }
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KeyTap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A logged-in tokio-postgres session.
pub struct Session {
    client: tokio_postgres::Client,
    connection: JoinHandle<Result<(), tokio_postgres::Error>>,
    /// BackendKeyData: process id and secret key.
    pub backend_key: Option<(i32, i32)>,
    /// What the TLS handshake settled (`None`: plaintext).
    pub tls: Option<TlsInfo>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("backend_key", &self.backend_key)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts up with `params` (`user`, `database`, `options`, `application_name`: what a
    /// tokio-postgres client can send) and authenticates with `password`.
    pub async fn start<S: ClientStream>(
        stream: S,
        params: &[(&str, &str)],
        password: Option<&str>,
    ) -> Result<Session, ClientError> {
        let tls = stream.tls_info();
        let mut config = tokio_postgres::Config::new();
        config.ssl_mode(SslMode::Disable);
        for (name, value) in params {
            match *name {
                "user" => config.user(*value),
                "database" => config.dbname(*value),
                "options" => config.options(*value),
                "application_name" => config.application_name(*value),
                other => {
                    panic!("a tokio-postgres client cannot send the start-up parameter {other}")
                }
            };
        }
        if let Some(password) = password {
            config.password(password);
        }
        let key = Arc::new(Mutex::new(None));
        let tap = KeyTap {
            inner: stream,
            seen: BytesMut::new(),
            key: key.clone(),
            done: false,
        };
        let (client, connection) = config.connect_raw(tap, NoTls).await?;
        let backend_key = *key.lock().unwrap();
        Ok(Session {
            client,
            connection: tokio::spawn(connection),
            backend_key,
            tls,
        })
    }

    /// Runs `sql` with the simple query protocol and returns the rows of its last statement.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows, ClientError> {
        let mut rows = Vec::new();
        for message in self.client.simple_query(sql).await? {
            match message {
                SimpleQueryMessage::RowDescription(_) => rows.clear(),
                SimpleQueryMessage::Row(row) => {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        Ok(rows)
    }

    /// Sends Terminate and waits for the connection to close.
    pub async fn terminate(self) -> Result<(), ClientError> {
        drop(self.client);
        self.connection.await.expect("the connection task")?;
        Ok(())
    }
}

/// A TLS client session through the proxy.
pub type TlsSession = Session;

/// A connector that trusts only the certificates in `root` and offers `alpn`.
pub fn connector(root: &Path, alpn: &[&[u8]]) -> TlsConnector {
    connector_for_versions(
        root,
        alpn,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

/// Like [`connector`], limited to `versions`.
pub fn connector_for_versions(
    root: &Path,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    connector_with(
        root,
        alpn,
        versions,
        rustls::crypto::aws_lc_rs::default_provider(),
    )
}

/// A connector that offers only these key-exchange groups, in this order.
pub fn connector_for_groups(root: &Path, groups: &[rustls::NamedGroup]) -> TlsConnector {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups
        .iter()
        .map(|g| {
            *provider
                .kx_groups
                .iter()
                .find(|k| k.name() == *g)
                .expect("a group the provider has")
        })
        .collect();
    connector_with(root, &[], &[&rustls::version::TLS13], provider)
}

fn connector_with(
    root: &Path,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
    provider: rustls::crypto::CryptoProvider,
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Start-up parameters for `user` on database `postgres`.
pub fn params(user: &str) -> [(&str, &str); 2] {
    [("user", user), ("database", "postgres")]
}

/// Connects without TLS and authenticates.
pub async fn connect_plain(addr: SocketAddr, user: &str) -> Result<Session, ClientError> {
    let tcp = TcpStream::connect(addr).await?;
    Session::start(tcp, &params(user), Some(PASSWORD)).await
}

/// Sends SSLRequest and returns the one-byte answer and the stream.
pub async fn ssl_request(addr: SocketAddr) -> (u8, TcpStream) {
    ssl_request_on(TcpStream::connect(addr).await.unwrap()).await
}

/// Sends SSLRequest on `tcp` and returns the one-byte answer and the stream.
async fn ssl_request_on(mut tcp: TcpStream) -> (u8, TcpStream) {
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await.unwrap();
    let answer = tcp.read_u8().await.unwrap();
    (answer, tcp)
}

/// SSLRequest, TLS handshake verifying `localhost` against `root`, then start-up.
pub async fn connect_tls(
    addr: SocketAddr,
    user: &str,
    root: &Path,
) -> Result<TlsSession, ClientError> {
    let (answer, tcp) = ssl_request(addr).await;
    assert_eq!(answer, b'S', "proxy must accept SSLRequest");
    let tls = connector(root, &[])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Session::start(tls, &params(user), Some(PASSWORD)).await
}

/// Direct TLS (first byte a ClientHello) with the given ALPN list.
pub async fn direct_tls(
    addr: SocketAddr,
    root: &Path,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector(root, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Reads one ErrorResponse (the proxy's refusal) from `stream`.
pub async fn read_error<S: AsyncRead + Unpin>(stream: &mut S) -> ServerError {
    let mut buf = BytesMut::new();
    loop {
        if let Some(message) = Message::parse(&mut buf).unwrap() {
            match message {
                Message::ErrorResponse(body) => return ServerError::from_response(&body).unwrap(),
                _ => panic!("expected an ErrorResponse"),
            }
        }
        let n = stream.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before an ErrorResponse arrived");
    }
}

/// The SQLSTATE of a failed start-up or statement.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(e) => match e.server() {
            Some(server) => server.code,
            None => panic!("expected a server error, got {e:?}"),
        },
        Ok(other) => panic!("expected a server error, got {other:?}"),
    }
}

/// SSLRequest and a TLS handshake that accepts any certificate, then start-up as `user` on `database`.
pub async fn connect_tls_unverified(
    addr: SocketAddr,
    user: &str,
    database: &str,
    password: &str,
) -> Result<TlsSession, ClientError> {
    connect_tls_unverified_from(None, addr, user, database, password).await
}

/// [`connect_tls_unverified`] from the local address `source` (any loopback address: the client
/// address a server sees).
pub async fn connect_tls_unverified_from(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
    user: &str,
    database: &str,
    password: &str,
) -> Result<TlsSession, ClientError> {
    let connector = pgssl::tls::client::require_mode_connector().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let (answer, tcp) = ssl_request_on(socket.connect(addr).await.unwrap()).await;
    if answer != b'S' {
        return Err(ClientError::NoTls(answer));
    }
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Session::start(
        tls,
        &[("user", user), ("database", database)],
        Some(password),
    )
    .await
}

/// SHA-256 fingerprint of the certificate the server presented.
pub fn peer_fingerprint(session: &TlsSession) -> String {
    let tls = session.tls.as_ref().expect("a TLS session");
    let cert = tls.peer_certificates.first().expect("a server certificate");
    pgssl::tls::certs::sha256_fingerprint(cert)
}

/// A first packet: length, `code`, `body` (SSLRequest, GSSENCRequest, CancelRequest, start-up).
pub fn raw_packet(code: u32, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32(8 + body.len() as u32);
    b.put_u32(code);
    b.put_slice(body);
    b.to_vec()
}

/// A protocol 3.`minor` start-up packet with `params`, in order (repeats included).
pub fn startup_packet(params: &[(&str, &str)], minor: u16) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    raw_packet(3 << 16 | u32::from(minor), &body)
}
