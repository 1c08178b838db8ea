//! Encoding of the `ErrorResponse` message pgssl sends when it refuses a connection, and the fields
//! read from one a server sent ([`ReceivedError`]).
//!
//! Format: <https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ERRORRESPONSE>.
//! pgssl only ever sends FATAL errors: each one ends the connection, as PostgreSQL's own start-up errors do.

use std::fmt;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorResponseBody;

/// The SQLSTATE codes pgssl can answer with
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    /// `28000` invalid_authorization_specification: the SSL policy refused the user.
    InvalidAuthorizationSpecification,
    /// `28P01` invalid_password: password authentication failed.
    InvalidPassword,
    /// `08P01` protocol_violation: a malformed or out-of-order packet.
    ProtocolViolation,
    /// `08006` connection_failure: the repository could not be reached.
    ConnectionFailure,
    /// `53300` too_many_connections: the connection limit is reached.
    TooManyConnections,
    /// `57014` query_canceled: the start-up did not finish within the handshake timeout.
    QueryCanceled,
    /// `57P01` admin_shutdown: the proxy is shutting down.
    AdminShutdown,
    /// `57P03` cannot_connect_now: the repository host is not what the session needs now.
    CannotConnectNow,
    /// `42501` insufficient_privilege: the client tried to set what only pgssl sets (`pgssl.*`).
    InsufficientPrivilege,
}

impl SqlState {
    /// The five-character code as sent on the wire.
    pub fn code(self) -> &'static str {
        match self {
            SqlState::InvalidAuthorizationSpecification => "28000",
            SqlState::InvalidPassword => "28P01",
            SqlState::ProtocolViolation => "08P01",
            SqlState::ConnectionFailure => "08006",
            SqlState::TooManyConnections => "53300",
            SqlState::QueryCanceled => "57014",
            SqlState::AdminShutdown => "57P01",
            SqlState::CannotConnectNow => "57P03",
            SqlState::InsufficientPrivilege => "42501",
        }
    }
}

/// A FATAL `ErrorResponse` ready to be written to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The SQLSTATE sent in the `C` field.
    pub code: SqlState,
    /// The primary message (`M` field).
    pub message: String,
    /// An optional hint (`H` field) telling the user what to do.
    pub hint: Option<String>,
}

impl ErrorResponse {
    /// A FATAL error with `code` and `message`.
    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        ErrorResponse {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint (`H` field).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Encodes the message as it goes on the wire.
    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::with_capacity(64 + self.message.len());
        // `S` is localized in real servers; `V` (9.6+) is the fixed, machine-readable severity.
        put_field(&mut body, b'S', "FATAL");
        put_field(&mut body, b'V', "FATAL");
        put_field(&mut body, b'C', self.code.code());
        put_field(&mut body, b'M', &self.message);
        if let Some(hint) = &self.hint {
            put_field(&mut body, b'H', hint);
        }
        body.put_u8(0);

        let mut out = BytesMut::with_capacity(body.len() + 5);
        out.put_u8(b'E');
        // The length counts itself; bodies here are far below i32::MAX.
        out.put_u32(body.len() as u32 + 4);
        out.put_slice(&body);
        out.freeze()
    }
}

fn put_field(buf: &mut BytesMut, tag: u8, value: &str) {
    buf.put_u8(tag);
    // A NUL inside a field would end it early and desynchronise the client's parser.
    buf.extend(value.bytes().filter(|b| *b != 0));
    buf.put_u8(0);
}

/// The fields of an ErrorResponse or NoticeResponse body (after type and length): each field's
/// type byte and value, up to the terminating NUL (or the end of a truncated body).
pub fn error_fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut fields = body;
    std::iter::from_fn(move || {
        let (&code, rest) = fields.split_first()?;
        if code == 0 {
            return None;
        }
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        fields = rest.get(end + 1..).unwrap_or_default();
        Some((code, &rest[..end]))
    })
}

/// What an `ErrorResponse` a server sent says: the fields pgssl reads from the repository's
/// refusals, and its tools and tests from any server's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedError {
    /// `ERROR`, `FATAL` or `PANIC` (`V`; the localized `S` from a server that sends no `V`).
    pub severity: String,
    /// The SQLSTATE (`C`).
    pub code: String,
    /// The primary message (`M`).
    pub message: String,
}

impl ReceivedError {
    /// The fields of an ErrorResponse body (after type and length).
    pub fn from_body(body: &[u8]) -> ReceivedError {
        let mut error = ReceivedError::default();
        for (field, value) in error_fields(body) {
            error.set(field, value);
        }
        error
    }

    /// The fields of an ErrorResponse body as postgres-protocol decoded it; fails on a malformed
    /// field.
    pub fn from_response(body: &ErrorResponseBody) -> io::Result<ReceivedError> {
        let mut error = ReceivedError::default();
        let mut fields = body.fields();
        while let Some(field) = fields.next()? {
            error.set(field.type_(), field.value_bytes());
        }
        Ok(error)
    }

    fn set(&mut self, field: u8, value: &[u8]) {
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b'V' => self.severity = value,
            b'S' if self.severity.is_empty() => self.severity = value,
            b'C' => self.code = value,
            b'M' => self.message = value,
            _ => {}
        }
    }
}

impl fmt::Display for ReceivedError {
    /// `SEVERITY: message (SQLSTATE code)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::backend::Message;

    #[test]
    fn encodes_a_fatal_error_that_postgres_protocol_parses() {
        let err = ErrorResponse::fatal(SqlState::InvalidAuthorizationSpecification, "SSL required")
            .with_hint("use sslmode=require");
        let mut buf = BytesMut::from(&err.encode()[..]);
        let Some(Message::ErrorResponse(body)) = Message::parse(&mut buf).expect("parse") else {
            panic!("not an ErrorResponse");
        };
        use fallible_iterator::FallibleIterator;
        let fields: Vec<(u8, String)> = body
            .fields()
            .map(|f| {
                Ok((
                    f.type_(),
                    String::from_utf8_lossy(f.value_bytes()).into_owned(),
                ))
            })
            .collect()
            .expect("fields");
        assert_eq!(
            fields,
            vec![
                (b'S', "FATAL".into()),
                (b'V', "FATAL".into()),
                (b'C', "28000".into()),
                (b'M', "SSL required".into()),
                (b'H', "use sslmode=require".into()),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn strips_nul_bytes_from_fields() {
        let err = ErrorResponse::fatal(SqlState::ProtocolViolation, "a\0b");
        let bytes = err.encode();
        assert!(bytes.windows(4).any(|w| w == b"Mab\0"));
    }

    #[test]
    fn a_received_error_reads_the_same_fields_from_raw_and_decoded_bodies() {
        // A localized `S` before the fixed `V`, as PostgreSQL sends them; a hint it does not keep.
        let body = b"SFATAL-LOCAL\0VFATAL\0C28P01\0Mpassword authentication failed\0Hnone\0\0";
        let expected = ReceivedError {
            severity: "FATAL".into(),
            code: "28P01".into(),
            message: "password authentication failed".into(),
        };
        assert_eq!(ReceivedError::from_body(body), expected);
        let mut frame = BytesMut::new();
        frame.put_u8(b'E');
        frame.put_u32(body.len() as u32 + 4);
        frame.put_slice(body);
        let Some(Message::ErrorResponse(decoded)) = Message::parse(&mut frame).expect("parse")
        else {
            panic!("not an ErrorResponse");
        };
        assert_eq!(
            ReceivedError::from_response(&decoded).expect("fields"),
            expected
        );
        assert_eq!(
            expected.to_string(),
            "FATAL: password authentication failed (SQLSTATE 28P01)"
        );
        // Without `V`, the localized severity is what there is.
        assert_eq!(
            ReceivedError::from_body(b"SERROR\0C42000\0\0").severity,
            "ERROR"
        );
    }
}
