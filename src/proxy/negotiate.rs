//! The first-packet state machine: everything between accept and a start-up message the policy can
//! judge.
//!
//! PostgreSQL's rules (<https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL>):
//! SSLRequest is answered `S` (then TLS) or `N`; GSSENCRequest is answered `N`; each may come once, before
//! the StartupMessage; a CancelRequest ends the conversation; a client may also open with a TLS
//! ClientHello (direct TLS, PostgreSQL 17), which must carry ALPN `postgresql`. Refusals that the
//! protocol can carry are sent as FATAL errors here, so callers only log the returned error.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::protocol::first_packet::{self, TLS_HANDSHAKE_RECORD};
use crate::proxy::protocol::{ErrorResponse, FirstPacket, PacketError, SqlState, StartupMessage};
use crate::proxy::settings::LiveSettings;
use crate::proxy::startups::{Deadline, Expired};
use crate::proxy::stream::{ClientSocket, NegotiatedStream, TlsInfo};
use crate::tls::ALPN_POSTGRESQL;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A connection that got through negotiation.
#[derive(Debug)]
pub enum Negotiated {
    /// A start-up message ready for the policy.
    Startup {
        /// The client connection.
        stream: NegotiatedStream,
        /// The start-up message; `user()` is guaranteed present.
        startup: StartupMessage,
        /// Bytes the client sent after the start-up message, to forward after it.
        pipelined: BytesMut,
        /// The TLS session, if any.
        tls: Option<TlsInfo>,
    },
    /// A CancelRequest, to forward unchanged.
    Cancel {
        /// The client connection, closed once the request is delivered.
        stream: NegotiatedStream,
        /// The request as received.
        packet: Bytes,
    },
}

/// Why a connection ended during negotiation. Any FATAL the protocol allows has already been sent.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// The client closed the connection between packets (for example after an `N` it did not accept).
    #[error("client closed the connection before sending a start-up message")]
    ClosedByClient,
    /// A socket error or a connection closed in the middle of a packet.
    #[error("connection failed during start-up: {0}")]
    Io(#[from] io::Error),
    /// The start-up did not complete in time.
    #[error("start-up not completed within the handshake timeout")]
    Timeout,
    /// Its place among the connections negotiating went to a newer one (`server.max_startups`).
    #[error("closed to make room: server.max_startups connections were negotiating")]
    Evicted,
    /// A malformed or unsupported packet.
    #[error("{0}")]
    Packet(#[from] PacketError),
    /// Bytes arrived after SSLRequest before the TLS handshake (the CVE-2021-23214 class).
    #[error("received unencrypted data after SSL request")]
    UnencryptedDataAfterSslRequest,
    /// An SSLRequest or GSSENCRequest sent twice, or inside TLS.
    #[error("{0}")]
    OutOfOrder(&'static str),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(io::Error),
    /// A direct TLS connection while repository SSL is off.
    #[error("direct TLS connection refused: repository SSL is off")]
    DirectTlsWhileOff,
    /// A direct TLS connection without ALPN `postgresql`.
    #[error("direct TLS connection without ALPN protocol 'postgresql'")]
    DirectTlsWithoutAlpn,
    /// A start-up message without a user name.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
}

impl NegotiateError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            NegotiateError::ClosedByClient => "client_closed",
            NegotiateError::Io(_) => "io",
            NegotiateError::Timeout => "timeout",
            NegotiateError::Evicted => "evicted",
            NegotiateError::Packet(_) => "bad_packet",
            NegotiateError::UnencryptedDataAfterSslRequest => "data_after_ssl_request",
            NegotiateError::OutOfOrder(_) => "out_of_order",
            NegotiateError::TlsHandshake(_) => "tls_handshake",
            NegotiateError::DirectTlsWhileOff => "direct_tls_while_off",
            NegotiateError::DirectTlsWithoutAlpn => "direct_tls_without_alpn",
            NegotiateError::NoUser => "no_user",
        }
    }
}

/// Runs negotiation on a freshly accepted connection; everything must finish by `deadline`.
pub async fn negotiate(
    mut tcp: ClientSocket,
    settings: &LiveSettings,
    metrics: &ProxyMetrics,
    deadline: &Deadline,
) -> Result<Negotiated, NegotiateError> {
    let mut first = [0u8; 1];
    match deadline.run(tcp.peek(&mut first)).await {
        Err(why) => return Err(refuse_expired(NegotiatedStream::Plain(tcp), why).await),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(0)) => return Err(NegotiateError::ClosedByClient),
        Ok(Ok(_)) => {}
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        return direct_tls(tcp, settings, metrics, deadline).await;
    }

    let mut buf = BytesMut::with_capacity(512);
    let (mut ssl_seen, mut gss_seen) = (false, false);
    loop {
        let packet = match read_packet(&mut tcp, &mut buf, deadline).await {
            Ok(p) => p,
            Err(e) => return Err(refuse_read_error(NegotiatedStream::Plain(tcp), e).await),
        };
        match packet {
            FirstPacket::SslRequest => {
                if ssl_seen {
                    return Err(
                        out_of_order(NegotiatedStream::Plain(tcp), "duplicate SSLRequest").await,
                    );
                }
                ssl_seen = true;
                let Some(acceptor) = settings.acceptor.clone() else {
                    tcp.write_all(b"N").await?;
                    continue;
                };
                tcp.write_all(b"S").await?;
                // Anything already read would be plaintext the client sent before encryption began;
                // treating it as part of the encrypted session is CVE-2021-23214.
                if !buf.is_empty() {
                    return Err(NegotiateError::UnencryptedDataAfterSslRequest);
                }
                let (tls, info) = accept_tls(&acceptor, tcp, deadline, false, metrics).await?;
                return after_tls(NegotiatedStream::Tls(Box::new(tls)), info, deadline).await;
            }
            FirstPacket::GssEncRequest => {
                if gss_seen {
                    return Err(out_of_order(
                        NegotiatedStream::Plain(tcp),
                        "duplicate GSSENCRequest",
                    )
                    .await);
                }
                gss_seen = true;
                tcp.write_all(b"N").await?;
            }
            FirstPacket::Cancel(packet) => {
                return Ok(Negotiated::Cancel {
                    stream: NegotiatedStream::Plain(tcp),
                    packet,
                });
            }
            FirstPacket::Startup(startup) => {
                return with_user(NegotiatedStream::Plain(tcp), startup, buf, None).await;
            }
        }
    }
}

async fn direct_tls(
    tcp: ClientSocket,
    settings: &LiveSettings,
    metrics: &ProxyMetrics,
    deadline: &Deadline,
) -> Result<Negotiated, NegotiateError> {
    // The client speaks TLS already: a plaintext error would be garbage to it, so just close.
    let Some(acceptor) = settings.acceptor.clone() else {
        return Err(NegotiateError::DirectTlsWhileOff);
    };
    let (tls, info) = accept_tls(&acceptor, tcp, deadline, true, metrics).await?;
    let alpn_ok = tls.get_ref().1.alpn_protocol() == Some(ALPN_POSTGRESQL);
    let stream = NegotiatedStream::Tls(Box::new(tls));
    if !alpn_ok {
        let err = ErrorResponse::fatal(
            SqlState::ProtocolViolation,
            "received direct SSL connection request without ALPN protocol negotiation extension",
        );
        return Err(refuse(stream, err, NegotiateError::DirectTlsWithoutAlpn).await);
    }
    after_tls(stream, info, deadline).await
}

/// The TLS handshake, bounded by the deadline and measured; returns the session and what it
/// negotiated (read once, for both the metrics and the caller).
async fn accept_tls(
    acceptor: &TlsAcceptor,
    tcp: ClientSocket,
    deadline: &Deadline,
    direct: bool,
    metrics: &ProxyMetrics,
) -> Result<(TlsStream<ClientSocket>, TlsInfo), NegotiateError> {
    let started = Instant::now();
    let result = match deadline.run(acceptor.accept(tcp)).await {
        Err(Expired::Timeout) => Err(("timeout", NegotiateError::Timeout)),
        Err(Expired::Evicted) => Err(("evicted", NegotiateError::Evicted)),
        Ok(Err(e)) => Err(("failed", NegotiateError::TlsHandshake(e))),
        Ok(Ok(tls)) => {
            let info = TlsInfo::of(&tls, direct);
            Ok((tls, info))
        }
    };
    let (version, outcome) = match &result {
        Ok((_, info)) => (info.version, "ok"),
        Err((outcome, _)) => ("unknown", *outcome),
    };
    metrics.handshake(version, outcome).increment(1);
    metrics
        .handshake_seconds
        .record(started.elapsed().as_secs_f64());
    result.map_err(|(_, e)| e)
}

async fn after_tls(
    mut stream: NegotiatedStream,
    info: TlsInfo,
    deadline: &Deadline,
) -> Result<Negotiated, NegotiateError> {
    let mut buf = BytesMut::with_capacity(512);
    match read_packet(&mut stream, &mut buf, deadline).await {
        Err(e) => Err(refuse_read_error(stream, e).await),
        Ok(FirstPacket::SslRequest) => {
            Err(out_of_order(stream, "SSLRequest received inside an encrypted connection").await)
        }
        Ok(FirstPacket::GssEncRequest) => Err(out_of_order(
            stream,
            "GSSENCRequest received inside an encrypted connection",
        )
        .await),
        Ok(FirstPacket::Cancel(packet)) => Ok(Negotiated::Cancel { stream, packet }),
        Ok(FirstPacket::Startup(startup)) => with_user(stream, startup, buf, Some(info)).await,
    }
}

async fn with_user(
    stream: NegotiatedStream,
    startup: StartupMessage,
    pipelined: BytesMut,
    tls: Option<TlsInfo>,
) -> Result<Negotiated, NegotiateError> {
    // Almost always empty: then the read buffer is freed here, not kept for the session's life.
    let pipelined = if pipelined.is_empty() {
        BytesMut::new()
    } else {
        pipelined
    };
    if startup.user().is_none() {
        let err = ErrorResponse::fatal(
            SqlState::InvalidAuthorizationSpecification,
            NegotiateError::NoUser.to_string(),
        );
        return Err(refuse(stream, err, NegotiateError::NoUser).await);
    }
    Ok(Negotiated::Startup {
        stream,
        startup,
        pipelined,
        tls,
    })
}

enum ReadError {
    Closed,
    Io(io::Error),
    Expired(Expired),
    Packet(PacketError),
}

/// Reads one first-phase packet, keeping any bytes after it in `buf`.
async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: &Deadline,
) -> Result<FirstPacket, ReadError> {
    loop {
        match first_packet::parse(buf) {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Packet(e)),
        }
        // The announced length is already bounded by `parse`, so this reserve is too.
        let want = first_packet::announced_len(buf).unwrap_or(8).max(8);
        buf.reserve(want.saturating_sub(buf.len()));
        match deadline.run(stream.read_buf(buf)).await {
            Err(why) => return Err(ReadError::Expired(why)),
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Ok(Ok(0)) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(Ok(0)) => {
                return Err(ReadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a start-up packet",
                )));
            }
            Ok(Ok(_)) => {}
        }
    }
}

async fn refuse_read_error(stream: NegotiatedStream, e: ReadError) -> NegotiateError {
    match e {
        ReadError::Closed => NegotiateError::ClosedByClient,
        ReadError::Io(e) => NegotiateError::Io(e),
        ReadError::Expired(why) => refuse_expired(stream, why).await,
        ReadError::Packet(p) => {
            refuse(stream, p.to_error_response(), NegotiateError::Packet(p)).await
        }
    }
}

async fn out_of_order(stream: NegotiatedStream, what: &'static str) -> NegotiateError {
    let err = ErrorResponse::fatal(SqlState::ProtocolViolation, what);
    refuse(stream, err, NegotiateError::OutOfOrder(what)).await
}

/// Answers a connection its deadline ended: 57014 when it took too long; 53300, as PostgreSQL says
/// when it has no room, when it was evicted, lingering only briefly for the client to close (an
/// evicted socket is most likely one that never would, and a flood must not pile them up).
async fn refuse_expired(mut stream: NegotiatedStream, why: Expired) -> NegotiateError {
    match why {
        Expired::Timeout => refuse(stream, timeout_error(), NegotiateError::Timeout).await,
        Expired::Evicted => {
            send_fatal_within(&mut stream, &too_many_clients(), EVICTED_LINGER).await;
            NegotiateError::Evicted
        }
    }
}

/// How long an evicted connection may linger while its answer is delivered.
const EVICTED_LINGER: std::time::Duration = std::time::Duration::from_millis(200);

/// FATAL 53300, as PostgreSQL words it.
pub fn too_many_clients() -> ErrorResponse {
    ErrorResponse::fatal(
        SqlState::TooManyConnections,
        "sorry, too many clients already",
    )
}

fn timeout_error() -> ErrorResponse {
    ErrorResponse::fatal(
        SqlState::QueryCanceled,
        "canceling start-up: the client did not complete its start-up within the handshake timeout",
    )
}

/// Sends `err` and closes `stream`, returning `why` for the log.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    err: ErrorResponse,
    why: NegotiateError,
) -> NegotiateError {
    send_fatal(&mut stream, &err).await;
    why
}

/// Best-effort delivery of a FATAL error followed by a clean close; a client that is gone already
/// cannot be told anything, so errors are ignored.
///
/// After the write side is shut, unread input is drained until the client closes: closing a socket
/// with unread bytes makes the kernel send RST, which can destroy the error before the client reads it.
pub async fn send_fatal<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, err: &ErrorResponse) {
    send_fatal_within(stream, err, CLOSE_LINGER).await;
}

/// [`send_fatal`], lingering at most `linger` in all.
async fn send_fatal_within<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    err: &ErrorResponse,
    linger: std::time::Duration,
) {
    let deliver = async {
        stream.write_all(&err.encode()).await?;
        stream.flush().await?;
        shut_and_drain(stream).await
    };
    let _ = tokio::time::timeout(linger, deliver).await;
}

/// How long a refused connection may linger while its answer is delivered.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Shuts the write side, then reads off (a bounded amount of) input until the client closes.
async fn shut_and_drain<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        match stream.read(&mut sink).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}
