//! [`NegotiatedStream`]: the client connection after negotiation, plaintext or TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection, either as accepted or wrapped in TLS terminated by pgssl.
#[derive(Debug)]
pub enum NegotiatedStream {
    /// No encryption.
    Plain(TcpStream),
    /// TLS terminated here; boxed because the rustls state is large and most of the enum's life is
    /// spent moving it between phases.
    Tls(Box<TlsStream<TcpStream>>),
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
    pub fn of(stream: &TlsStream<TcpStream>, direct: bool) -> TlsInfo {
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
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NegotiatedStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NegotiatedStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NegotiatedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NegotiatedStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NegotiatedStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NegotiatedStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NegotiatedStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NegotiatedStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NegotiatedStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
