//! A Rust client for the tests: pgssl's own frontend ([`pgssl::repository::Session`]) over plain TCP,
//! TLS after SSLRequest, or direct TLS, with rustls verifying the proxy's certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgssl::repository::client::server_error;
use pgssl::repository::{ClientError, ServerError, Session};
use postgres_protocol::message::backend::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::harness::PASSWORD;

/// A TLS client session through the proxy.
pub type TlsSession = Session<TlsStream<TcpStream>>;

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
pub async fn connect_plain(
    addr: SocketAddr,
    user: &str,
) -> Result<Session<TcpStream>, ClientError> {
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
                Message::ErrorResponse(body) => return server_error(&body).unwrap(),
                _ => panic!("expected an ErrorResponse"),
            }
        }
        let n = stream.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before an ErrorResponse arrived");
    }
}

/// The SQLSTATE of a failed start-up.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a server error, got {other:?}"),
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
        return Err(ClientError::Protocol(format!(
            "SSLRequest answered {:?}",
            answer as char
        )));
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
    let (_, conn) = session.stream().get_ref();
    let cert = &conn.peer_certificates().expect("a server certificate")[0];
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
