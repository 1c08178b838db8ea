//! [`NegotiatedStream`]: the client connection after negotiation, plaintext or TLS.

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

forward_io!(NegotiatedStream: Plain, Tls);
