//! [`NegotiatedStream`]: the client connection after negotiation, plaintext or TLS, over a
//! [`ClientSocket`] (the accepted TCP connection; in unit tests, an in-memory pipe).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The transport a client connection arrives on: an accepted TCP socket. Unit tests put an
/// in-memory pipe in its place (`MemorySocket`, built only for them), so that every stage after
/// accept runs in process; in other builds the enum has one variant and costs nothing.
#[derive(Debug)]
pub enum ClientSocket {
    /// An accepted TCP connection.
    Tcp(TcpStream),
    /// One end of a `tokio::io::duplex` pipe whose other end plays the client.
    #[cfg(test)]
    Memory(MemorySocket),
}

impl ClientSocket {
    /// Reads the next bytes without consuming them (negotiation tells a TLS ClientHello from a
    /// PostgreSQL packet by its first byte); 0 when the client closed.
    pub async fn peek(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientSocket::Tcp(tcp) => tcp.peek(buf).await,
            #[cfg(test)]
            ClientSocket::Memory(memory) => memory.peek(buf).await,
        }
    }

    /// Whether the socket has something to read (`Pending` registers the waker, as a read would).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            ClientSocket::Tcp(tcp) => tcp.poll_read_ready(cx),
            // The pipe has no readiness of its own: the read finds out.
            #[cfg(test)]
            ClientSocket::Memory(_) => Poll::Ready(Ok(())),
        }
    }
}

forward_io!(ClientSocket: Tcp, #[cfg(test)] Memory);

/// A client connection, either as accepted or wrapped in TLS terminated by pgssl.
#[derive(Debug)]
pub enum NegotiatedStream {
    /// No encryption.
    Plain(ClientSocket),
    /// TLS terminated here; boxed because the rustls state is large and most of the enum's life is
    /// spent moving it between phases.
    Tls(Box<TlsStream<ClientSocket>>),
}

impl NegotiatedStream {
    /// The client's certificate (DER), when it presented one; the handshake has verified it.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            NegotiatedStream::Plain(_) => None,
            NegotiatedStream::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
        }
    }

    /// What `sessions list` shows of the TLS session (`None` in plaintext): `info` is what the
    /// negotiation read; the group, the server name and the client certificate's subject are read
    /// here, once per session.
    pub(crate) fn tls_facts(&self, info: &TlsInfo) -> Option<crate::proxy::sessions::TlsFacts> {
        let NegotiatedStream::Tls(tls) = self else {
            return None;
        };
        let conn = tls.get_ref().1;
        let subject = self.peer_certificate().and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            Some(crate::proxy::auth::cert::subject_dn(&cert))
        });
        Some(crate::proxy::sessions::TlsFacts {
            version: info.version.into(),
            cipher: info.cipher.into(),
            group: conn
                .negotiated_key_exchange_group()
                .map(|g| g.name().as_str().unwrap_or("unknown").into()),
            sni: conn.server_name().map(str::to_string),
            client_cert_subject: subject,
        })
    }
}

/// What was negotiated on a TLS connection, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1_3` or `TLSv1_2`.
    pub version: &'static str,
    /// The cipher suite's IANA name.
    pub cipher: &'static str,
    /// Whether the client used direct TLS (`sslnegotiation=direct`) rather than SSLRequest.
    pub direct: bool,
}

impl TlsInfo {
    /// Reads the negotiated parameters of a finished handshake.
    pub fn of(stream: &TlsStream<ClientSocket>, direct: bool) -> TlsInfo {
        let (_, conn) = stream.get_ref();
        // Static names: nothing is formatted per handshake.
        TlsInfo {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1_3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1_2",
                _ => "unknown",
            },
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
            direct,
        }
    }
}

impl AsyncRead for NegotiatedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NegotiatedStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NegotiatedStream::Tls(s) => {
                // With no plaintext waiting, a read goes to the socket; ask it first whether it has
                // anything. rustls sets up its 4 KiB read buffer (allocated and zero-filled, since
                // pgssl's patch frees it between flights: third_party/README.md) before it reads,
                // even when the read then finds nothing: that was a third of pgssl's instructions
                // per pooled transaction (BENCHMARKS.md, instructions per operation).
                let (socket, conn) = s.get_ref();
                if conn.wants_read() && socket.poll_read_ready(cx).is_pending() {
                    return Poll::Pending;
                }
                Pin::new(s.as_mut()).poll_read(cx, buf)
            }
        }
    }
}

forward_write!(NegotiatedStream: Plain, Tls);

/// An in-memory client transport for unit tests: a duplex pipe that can be peeked at like a socket.
#[cfg(test)]
#[derive(Debug)]
pub struct MemorySocket {
    io: tokio::io::DuplexStream,
    /// A byte [`MemorySocket::peek`] read and the next read returns first.
    peeked: Option<u8>,
}

#[cfg(test)]
impl MemorySocket {
    /// Wraps pgssl's end of a duplex pipe.
    pub fn new(io: tokio::io::DuplexStream) -> MemorySocket {
        MemorySocket { io, peeked: None }
    }

    async fn peek(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if buf.is_empty() {
            return Ok(0);
        }
        let byte = match self.peeked {
            Some(byte) => byte,
            None => {
                let mut one = [0u8; 1];
                if self.io.read(&mut one).await? == 0 {
                    return Ok(0);
                }
                self.peeked = Some(one[0]);
                one[0]
            }
        };
        buf[0] = byte;
        Ok(1)
    }
}

#[cfg(test)]
impl tokio::io::AsyncRead for MemorySocket {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() > 0
            && let Some(byte) = this.peeked.take()
        {
            // As after a socket's peek: the byte comes with whatever else has arrived.
            buf.put_slice(&[byte]);
            // An error here comes again at the next read; the byte is delivered now.
            let _ = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

#[cfg(test)]
impl tokio::io::AsyncWrite for MemorySocket {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
