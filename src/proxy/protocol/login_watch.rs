//! Watching the repository's side of a login, to tell how it ended: ReadyForQuery (the session is
//! open) or an ErrorResponse first (the repository refused it, e.g. `28P01` for a wrong password).
//!
//! The relay feeds it every chunk the repository sends until it has an answer; it walks message frames
//! (type byte, length) without copying them, keeps at most [`MAX_ERROR_BYTES`] of an ErrorResponse's
//! body to read its SQLSTATE and message, and is dropped once the login is decided, so a session
//! that is open costs nothing for it. It never changes a byte that is relayed.
//! Message layout: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use super::error_response::ReceivedError;

/// How much of an ErrorResponse body is kept for its fields.
pub const MAX_ERROR_BYTES: usize = 1024;

/// How the login ended, as the repository told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// ReadyForQuery: the session is open.
    Ready,
    /// An ErrorResponse came before ReadyForQuery.
    Refused {
        /// The SQLSTATE (field `C`), empty if the error did not carry one.
        sqlstate: String,
        /// The primary message (field `M`).
        message: String,
    },
    /// The bytes stopped making sense as messages (the watcher gives up; the relay goes on).
    Unparsable,
}

/// The state of the watch between chunks.
#[derive(Debug, Default)]
pub struct LoginWatch {
    /// The 5-byte header being assembled (type, length).
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// The current message's type.
    kind: u8,
    /// The first bytes of an ErrorResponse body.
    error: Vec<u8>,
}

impl LoginWatch {
    /// Consumes one chunk sent by the repository; returns the outcome once it is known.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<LoginOutcome> {
        while !data.is_empty() {
            if self.remaining == 0 && self.header_len < 5 {
                let take = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len < 5 {
                    return None;
                }
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len < 4 {
                    return Some(LoginOutcome::Unparsable);
                }
                self.kind = self.header[0];
                self.remaining = len - 4;
                if self.kind == b'Z' {
                    return Some(LoginOutcome::Ready);
                }
                if self.remaining == 0 {
                    if let Some(done) = self.message_done() {
                        return Some(done);
                    }
                    continue;
                }
            }
            let take = self.remaining.min(data.len());
            if self.kind == b'E' {
                let room = MAX_ERROR_BYTES.saturating_sub(self.error.len());
                self.error.extend_from_slice(&data[..take.min(room)]);
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0
                && let Some(done) = self.message_done()
            {
                return Some(done);
            }
        }
        None
    }

    /// A whole message has passed; an ErrorResponse decides the login.
    fn message_done(&mut self) -> Option<LoginOutcome> {
        self.header_len = 0;
        if self.kind != b'E' {
            return None;
        }
        Some(LoginOutcome::refused(&self.error))
    }
}

impl LoginOutcome {
    /// The refusal an ErrorResponse body (its fields, after type and length) states: its SQLSTATE and
    /// primary message.
    pub fn refused(body: &[u8]) -> LoginOutcome {
        let error = ReceivedError::from_body(body);
        LoginOutcome::Refused {
            sqlstate: error.code,
            message: error.message,
        }
    }

    /// Whether the repository refused the start-up because its host cannot take sessions at all
    /// right now: shutting down (57P01 smart or fast shutdown, 57P02 crash) or starting up, or in
    /// recovery without hot standby (57P03). During a switchover or failover another host can.
    pub fn host_unavailable(&self) -> bool {
        matches!(self, LoginOutcome::Refused { sqlstate, .. }
            if matches!(sqlstate.as_str(), "57P01" | "57P02" | "57P03"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn login(error: bool) -> Vec<u8> {
        let mut bytes = message(b'R', &[0, 0, 0, 10, b'S', b'C', b'R', b'A', b'M', 0, 0]);
        if error {
            bytes.extend(message(
                b'E',
                b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0\0",
            ));
        } else {
            bytes.extend(message(b'R', &[0, 0, 0, 0]));
            bytes.extend(message(b'S', b"server_version\x0015\0"));
            bytes.extend(message(b'K', &[0; 8]));
            bytes.extend(message(b'Z', b"I"));
        }
        bytes
    }

    #[test]
    fn tells_a_refused_login_from_an_open_session_at_any_chunking() {
        let refused = LoginOutcome::Refused {
            sqlstate: "28P01".into(),
            message: "password authentication failed for user \"x\"".into(),
        };
        for (bytes, expected) in [(login(true), refused), (login(false), LoginOutcome::Ready)] {
            for chunk in 1..bytes.len() {
                let mut watch = LoginWatch::default();
                let got = bytes.chunks(chunk).find_map(|c| watch.feed(c));
                assert_eq!(got.as_ref(), Some(&expected), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn gives_up_on_nonsense_and_bounds_what_it_keeps() {
        assert_eq!(
            LoginWatch::default().feed(&[b'R', 0, 0, 0, 2]),
            Some(LoginOutcome::Unparsable)
        );
        let mut watch = LoginWatch::default();
        let mut huge = vec![b'E'];
        huge.extend_from_slice(&(100_004u32).to_be_bytes());
        huge.extend(std::iter::repeat_n(b'x', 100_000));
        assert_eq!(watch.feed(&huge).map(|_| ()), Some(()));
        assert!(watch.error.len() <= MAX_ERROR_BYTES);
    }
}
