//! Parsing of the first packet a client sends: SSLRequest, GSSENCRequest, CancelRequest or StartupMessage.
//!
//! These packets have no type byte: a length (which counts itself) and a 32-bit code
//! (<https://www.postgresql.org/docs/current/protocol-message-formats.html>). Limits follow PostgreSQL's
//! `ProcessStartupPacket`: 8 to 10 000 bytes, and a CancelRequest key of 4 to 256 bytes (protocol 3.2).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{ErrorResponse, SqlState};

/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Smallest packet PostgreSQL accepts: length and code.
pub const MIN_PACKET_LEN: u32 = 8;
/// Largest start-up packet PostgreSQL accepts (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: u32 = 10_000;
/// Longest cancel key allowed by protocol 3.2.
pub const MAX_CANCEL_KEY_LEN: u32 = 256;
/// Shortest cancel key (protocol 3.0's 32-bit key).
pub const MIN_CANCEL_KEY_LEN: u32 = 4;

/// The first byte of a TLS handshake record: a client that starts with it wants direct TLS
/// (`sslnegotiation=direct`, PostgreSQL 17).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// One parsed pre-authentication packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    /// SSLRequest: the client asks to switch to TLS.
    SslRequest,
    /// GSSENCRequest: the client asks for GSSAPI encryption, which pgssl never offers.
    GssEncRequest,
    /// CancelRequest, kept byte for byte so it can be forwarded unchanged.
    Cancel(Bytes),
    /// StartupMessage of protocol 3.x.
    Startup(StartupMessage),
}

/// A protocol 3.x StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// The packet exactly as received, forwarded unchanged to the repository.
    pub raw: Bytes,
    /// Protocol major version (always 3).
    pub major: u16,
    /// Protocol minor version (0 or 2 today; others are passed on for the server to negotiate).
    pub minor: u16,
    /// Parameter pairs in the order sent. Names and values are decoded lossily: they serve logs and the
    /// policy, never the bytes forwarded.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a start-up parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `user` parameter, which decides the SSL policy.
    pub fn user(&self) -> Option<&str> {
        self.param("user").filter(|u| !u.is_empty())
    }

    /// The database, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> Option<&str> {
        self.param("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.user())
    }

    /// The protocol minor version a session with this start-up speaks with pgssl: what it asked
    /// for, at most [`NEWEST_MINOR`].
    pub fn agreed_minor(&self) -> u16 {
        self.minor.min(NEWEST_MINOR)
    }

    /// The NegotiateProtocolVersion message PostgreSQL sends before anything else when a start-up
    /// asks for a newer minor version than it speaks or names protocol options (`_pq_.*`) it does
    /// not know — pgssl knows none — or `None` when the start-up needs no answer of this kind. A
    /// client that asked for 3.9999 (libpq's "grease" check) and got an authentication request
    /// straight away would rightly conclude that the server is broken.
    pub fn protocol_answer(&self) -> Option<Bytes> {
        let unknown: Vec<&str> = self
            .params
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("_pq_."))
            .collect();
        if self.minor <= NEWEST_MINOR && unknown.is_empty() {
            return None;
        }
        let mut body = BytesMut::new();
        body.put_u32(u32::from(self.agreed_minor()));
        body.put_u32(unknown.len() as u32);
        for name in unknown {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
        }
        let mut out = BytesMut::with_capacity(5 + body.len());
        out.put_u8(b'v');
        out.put_u32(4 + body.len() as u32);
        out.put_slice(&body);
        Some(out.freeze())
    }
}

/// The newest protocol minor version pgssl speaks with clients (3.2: cancel keys of up to 256 bytes,
/// which pgssl mints itself whatever the repository speaks).
pub const NEWEST_MINOR: u16 = 2;

/// Why a first packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The length field is below the minimum or does not fit the request.
    #[error("invalid length of startup packet: {len} bytes")]
    MalformedLength {
        /// The length the client announced.
        len: u32,
    },
    /// The length field is over the limit.
    #[error("startup packet of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The length the client announced.
        size: u32,
        /// The largest accepted length.
        limit: u32,
    },
    /// The parameter list is not NUL-terminated pairs.
    #[error("invalid startup packet layout: {0}")]
    BadLayout(&'static str),
    /// A protocol version other than 3.x.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2")]
    UnsupportedProtocol {
        /// Major version sent.
        major: u16,
        /// Minor version sent.
        minor: u16,
    },
    /// A request code in PostgreSQL's reserved 1234.x range that is not SSL, GSSENC or cancel.
    #[error("unknown request code {0}")]
    UnknownRequest(u32),
    /// A start-up parameter given twice. PostgreSQL keeps the last value while a reader that takes the
    /// first would classify the connection by another user than the one that logs in, so pgssl
    /// refuses the packet instead of guessing.
    #[error("startup packet repeats parameter \"{}\"", crate::telemetry::LogSafe(.0))]
    DuplicateParameter(String),
}

impl PacketError {
    /// The SQLSTATE to answer with: always 08P01. (PostgreSQL itself says 0A000 for a protocol version
    /// it does not speak; pgssl treats every unusable first packet alike, as its contract states.)
    pub fn sqlstate(&self) -> SqlState {
        SqlState::ProtocolViolation
    }

    /// The FATAL error to send before closing.
    pub fn to_error_response(&self) -> ErrorResponse {
        ErrorResponse::fatal(self.sqlstate(), self.to_string())
    }
}

/// Parses one packet from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (the caller may `reserve` the announced length, which
/// is already bounded); on success the packet's bytes are removed from `buf` and anything after them
/// stays there.
pub fn parse(buf: &mut BytesMut) -> Result<Option<FirstPacket>, PacketError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < MIN_PACKET_LEN {
        return Err(PacketError::MalformedLength { len });
    }
    if len > MAX_STARTUP_PACKET_LEN {
        return Err(PacketError::TooLarge {
            size: len,
            limit: MAX_STARTUP_PACKET_LEN,
        });
    }
    // The code is known from the first eight bytes: refuse a bad length before waiting for the rest.
    if buf.len() >= 8 {
        let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        check_length_for_code(code, len)?;
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    // A copy of its own size: the start-up packet lives as long as the session, and a slice would
    // keep the whole read buffer alive with it.
    let mut packet = Bytes::copy_from_slice(&buf[..len as usize]);
    buf.advance(len as usize);
    let raw = packet.clone();
    packet.advance(4);
    let code = packet.get_u32();
    match code {
        SSL_REQUEST_CODE => Ok(Some(FirstPacket::SslRequest)),
        GSSENC_REQUEST_CODE => Ok(Some(FirstPacket::GssEncRequest)),
        CANCEL_REQUEST_CODE => Ok(Some(FirstPacket::Cancel(raw))),
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major == 1234 {
                return Err(PacketError::UnknownRequest(code));
            }
            if major != 3 {
                return Err(PacketError::UnsupportedProtocol { major, minor });
            }
            let params = parse_params(&packet)?;
            Ok(Some(FirstPacket::Startup(StartupMessage {
                raw,
                major,
                minor,
                params,
            })))
        }
    }
}

/// Bytes a packet needs in total, once its header is in `buf`; used to size reads.
pub fn announced_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
}

fn check_length_for_code(code: u32, len: u32) -> Result<(), PacketError> {
    let ok = match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => len == MIN_PACKET_LEN,
        CANCEL_REQUEST_CODE => (MIN_PACKET_LEN + 4 + MIN_CANCEL_KEY_LEN
            ..=MIN_PACKET_LEN + 4 + MAX_CANCEL_KEY_LEN)
            .contains(&len),
        // A 3.x StartupMessage needs at least the terminating NUL after the version; other codes are
        // refused by version once read.
        _ if code >> 16 == 3 => len > MIN_PACKET_LEN,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(PacketError::MalformedLength { len })
    }
}

fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, PacketError> {
    let Some((&0, mut rest)) = body.split_last() else {
        return Err(PacketError::BadLayout("expected terminator as last byte"));
    };
    let mut params: Vec<(String, String)> = Vec::new();
    // Names are compared as received (bytes), so two spellings that decode alike are still two names,
    // exactly as PostgreSQL sees them.
    let mut raw_names: Vec<&[u8]> = Vec::new();
    while !rest.is_empty() {
        let (name, after_name) = split_cstr(rest)?;
        if name.is_empty() {
            return Err(PacketError::BadLayout("empty parameter name"));
        }
        let (value, after_value) = split_cstr(after_name)?;
        if raw_names.contains(&name) {
            return Err(PacketError::DuplicateParameter(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        raw_names.push(name);
        params.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        rest = after_value;
    }
    Ok(params)
}

fn split_cstr(buf: &[u8]) -> Result<(&[u8], &[u8]), PacketError> {
    let nul = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or(PacketError::BadLayout("parameter is not NUL-terminated"))?;
    Ok((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn packet(code: u32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(8 + body.len() as u32);
        b.put_u32(code);
        b.put_slice(body);
        b
    }

    fn startup(params: &[(&str, &str)]) -> BytesMut {
        let mut body = Vec::new();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        packet(3 << 16, &body)
    }

    #[test]
    fn parses_ssl_and_gssenc_requests() {
        assert_eq!(
            parse(&mut packet(SSL_REQUEST_CODE, &[])),
            Ok(Some(FirstPacket::SslRequest))
        );
        assert_eq!(
            parse(&mut packet(GSSENC_REQUEST_CODE, &[])),
            Ok(Some(FirstPacket::GssEncRequest))
        );
    }

    #[test]
    fn parses_a_startup_message_and_leaves_trailing_bytes() {
        let mut buf = startup(&[("user", "tableau"), ("database", "repo")]);
        let len = buf.len();
        buf.put_slice(b"next");
        let Some(FirstPacket::Startup(msg)) = parse(&mut buf).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(msg.user(), Some("tableau"));
        assert_eq!(msg.database(), Some("repo"));
        assert_eq!((msg.major, msg.minor), (3, 0));
        assert_eq!(msg.raw.len(), len);
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn database_defaults_to_user() {
        let Some(FirstPacket::Startup(msg)) = parse(&mut startup(&[("user", "u")])).unwrap() else {
            panic!()
        };
        assert_eq!(msg.database(), Some("u"));
    }

    #[test]
    fn passes_protocol_3_2_through() {
        let mut buf = startup(&[("user", "u")]);
        buf[6..8].copy_from_slice(&2u16.to_be_bytes());
        let Some(FirstPacket::Startup(msg)) = parse(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!((msg.major, msg.minor), (3, 2));
    }

    #[test]
    fn waits_for_a_whole_packet() {
        let full = startup(&[("user", "tableau")]);
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(parse(&mut part), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn refuses_bad_lengths_before_the_body_arrives() {
        let mut b = BytesMut::new();
        b.put_u32(4);
        assert_eq!(parse(&mut b), Err(PacketError::MalformedLength { len: 4 }));
        let mut b = BytesMut::new();
        b.put_u32(10_001);
        assert_eq!(
            parse(&mut b),
            Err(PacketError::TooLarge {
                size: 10_001,
                limit: 10_000
            })
        );
        let mut b = BytesMut::new();
        b.put_u32(12);
        b.put_u32(SSL_REQUEST_CODE);
        assert_eq!(parse(&mut b), Err(PacketError::MalformedLength { len: 12 }));
    }

    #[test]
    fn cancel_keys_of_4_to_256_bytes_are_accepted() {
        for key_len in [4usize, 32, 256] {
            let mut body = vec![0, 0, 0, 42];
            body.extend(std::iter::repeat_n(7u8, key_len));
            let mut b = packet(CANCEL_REQUEST_CODE, &body);
            let raw = b.clone().freeze();
            assert_eq!(parse(&mut b), Ok(Some(FirstPacket::Cancel(raw))));
        }
        for key_len in [0usize, 3, 257] {
            let mut body = vec![0, 0, 0, 42];
            body.extend(std::iter::repeat_n(7u8, key_len));
            assert!(matches!(
                parse(&mut packet(CANCEL_REQUEST_CODE, &body)),
                Err(PacketError::MalformedLength { .. })
            ));
        }
    }

    #[test]
    fn refuses_bad_layouts_and_versions() {
        assert!(matches!(
            parse(&mut packet(3 << 16, b"user\0x")),
            Err(PacketError::BadLayout(_))
        ));
        assert!(matches!(
            parse(&mut packet(3 << 16, b"user\0")),
            Err(PacketError::BadLayout(_))
        ));
        assert!(matches!(
            parse(&mut packet(3 << 16, b"\0x\0\0")),
            Err(PacketError::BadLayout(_))
        ));
        assert_eq!(
            parse(&mut packet(2 << 16, b"\0")),
            Err(PacketError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        assert_eq!(
            parse(&mut packet(1234 << 16 | 9999, b"")),
            Err(PacketError::UnknownRequest(1234 << 16 | 9999))
        );
        assert_eq!(
            PacketError::UnsupportedProtocol { major: 2, minor: 0 }.sqlstate(),
            SqlState::ProtocolViolation
        );
    }

    #[test]
    fn refuses_a_repeated_parameter_in_any_order() {
        for params in [
            [("user", "tableau"), ("user", "postgres")],
            [("user", "postgres"), ("user", "tableau")],
            [("database", "a"), ("database", "b")],
            [("options", "-c a=b"), ("options", "-c c=d")],
        ] {
            let name = params[0].0.to_string();
            assert_eq!(
                parse(&mut startup(&params)),
                Err(PacketError::DuplicateParameter(name))
            );
        }
        // Distinct names are fine, whatever they carry.
        assert!(matches!(
            parse(&mut startup(&[
                ("user", "u"),
                ("options", "-c user=postgres")
            ])),
            Ok(Some(FirstPacket::Startup(_)))
        ));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix of a few hostile inputs.
        let inputs: [&[u8]; 4] = [
            &[0xff; 32],
            &[0, 0, 0, 9, 0, 3, 0, 0, 0],
            &[0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2],
            b"\0\0\0\x0c\0\x03\0\0a\0b",
        ];
        for input in inputs {
            for cut in 0..=input.len() {
                let _ = parse(&mut BytesMut::from(&input[..cut]));
            }
        }
    }
}
