//! The authentication phase's messages, as far as a relay that stands between the two TLS legs must
//! understand them: the repository's AuthenticationXXX requests (`R`) and the frames around them.
//!
//! Why a relay must look at all: SCRAM-SHA-256-PLUS binds the exchange to the TLS certificate of the
//! connection it runs on (RFC 5929 `tls-server-end-point`). Behind pgssl the client's TLS ends at pgssl
//! and the repository's begins there, so a client that binds to pgssl's certificate can never satisfy a
//! repository that checks against its own: the PLUS mechanism the repository offers must not reach the
//! client. Message formats:
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use bytes::{BufMut, Bytes, BytesMut};

/// `AuthenticationOk`.
pub const AUTH_OK: u32 = 0;
/// `AuthenticationSASL`: the mechanisms the server offers.
pub const AUTH_SASL: u32 = 10;
/// `AuthenticationSASLContinue`.
pub const AUTH_SASL_CONTINUE: u32 = 11;
/// `AuthenticationSASLFinal`.
pub const AUTH_SASL_FINAL: u32 = 12;

/// The SCRAM mechanism with channel binding.
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Largest authentication-phase message accepted from either side: PostgreSQL's own bound for a SASL
/// token (`PG_MAX_AUTH_TOKEN_LENGTH`, 65535) plus room for the mechanism name.
pub const MAX_AUTH_MESSAGE: usize = 65_535 + 1024;

/// A message frame: its type byte and body (the length is implied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The type byte, e.g. `b'R'`.
    pub kind: u8,
    /// The body after the length.
    pub body: Bytes,
}

impl Frame {
    /// The frame as sent on the wire.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(5 + self.body.len());
        out.put_u8(self.kind);
        out.put_u32((self.body.len() + 4) as u32);
        out.extend_from_slice(&self.body);
        out.freeze()
    }

    /// The request code of an `R` frame.
    pub fn auth_code(&self) -> Option<u32> {
        if self.kind != b'R' {
            return None;
        }
        let code = self.body.get(..4)?;
        Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
    }
}

/// Why a frame or an authentication request is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthMessageError {
    /// The length field is below 4.
    #[error("message length {0} is below 4")]
    MalformedLength(u32),
    /// The message is larger than [`MAX_AUTH_MESSAGE`].
    #[error("a {size}-byte message during authentication exceeds {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The bound.
        limit: usize,
    },
    /// An AuthenticationSASL body that is not a list of NUL-terminated names ending in an empty one.
    #[error("AuthenticationSASL's mechanism list is malformed")]
    BadMechanismList,
    /// A SASLInitialResponse that is not a mechanism name, a length and that many bytes.
    #[error("SASLInitialResponse is malformed")]
    BadInitialResponse,
    /// Bytes came after the start-up packet before the server asked for anything.
    #[error("data arrived after the start-up packet before the authentication request")]
    Pipelined,
}

/// The body length a 5-byte frame header announces, checked against [`MAX_AUTH_MESSAGE`] before
/// anything is allocated for it.
pub fn body_len(header: [u8; 5]) -> Result<usize, AuthMessageError> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(AuthMessageError::MalformedLength(len));
    }
    let size = len as usize - 4;
    if size > MAX_AUTH_MESSAGE {
        return Err(AuthMessageError::TooLarge {
            size,
            limit: MAX_AUTH_MESSAGE,
        });
    }
    Ok(size)
}

/// The mechanisms of an AuthenticationSASL body (after its 4-byte code).
pub fn sasl_mechanisms(body: &[u8]) -> Result<Vec<&str>, AuthMessageError> {
    let list = body.get(4..).ok_or(AuthMessageError::BadMechanismList)?;
    // Names, each NUL-terminated, then one more NUL.
    let list = list
        .strip_suffix(&[0])
        .ok_or(AuthMessageError::BadMechanismList)?;
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let list = list
        .strip_suffix(&[0])
        .ok_or(AuthMessageError::BadMechanismList)?;
    list.split(|b| *b == 0)
        .map(|name| {
            std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty())
                .ok_or(AuthMessageError::BadMechanismList)
        })
        .collect()
}

/// An AuthenticationSASL frame without the channel-binding mechanism: what a client behind pgssl can
/// use. `None` when nothing is left to offer.
pub fn without_channel_binding(frame: &Frame) -> Result<Option<Frame>, AuthMessageError> {
    let kept: Vec<&str> = sasl_mechanisms(&frame.body)?
        .into_iter()
        .filter(|m| *m != SCRAM_PLUS)
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    body.put_u32(AUTH_SASL);
    for m in kept {
        body.extend_from_slice(m.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    Ok(Some(Frame {
        kind: b'R',
        body: body.freeze(),
    }))
}

/// An `R` frame with `code` and `data`.
pub fn auth_request(code: u32, data: &[u8]) -> Frame {
    let mut body = BytesMut::with_capacity(4 + data.len());
    body.put_u32(code);
    body.extend_from_slice(data);
    Frame {
        kind: b'R',
        body: body.freeze(),
    }
}

/// AuthenticationSASL offering `mechanisms`, in order of preference.
pub fn sasl_offer(mechanisms: &[&str]) -> Frame {
    let mut list = Vec::new();
    for m in mechanisms {
        list.extend_from_slice(m.as_bytes());
        list.push(0);
    }
    list.push(0);
    auth_request(AUTH_SASL, &list)
}

/// The mechanism and data of a SASLInitialResponse body (`p` after AuthenticationSASL).
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), AuthMessageError> {
    let bad = AuthMessageError::BadInitialResponse;
    let end = body.iter().position(|b| *b == 0).ok_or(bad.clone())?;
    let mechanism = std::str::from_utf8(&body[..end]).map_err(|_| bad.clone())?;
    let rest = &body[end + 1..];
    let len = rest.get(..4).ok_or(bad.clone())?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let data = &rest[4..];
    if usize::try_from(len).ok() != Some(data.len()) {
        return Err(bad);
    }
    Ok((mechanism, data))
}

/// A SASLInitialResponse frame (the repository leg).
pub fn sasl_initial_response_frame(mechanism: &str, data: &[u8]) -> Frame {
    let mut body = BytesMut::with_capacity(mechanism.len() + 5 + data.len());
    body.extend_from_slice(mechanism.as_bytes());
    body.put_u8(0);
    body.put_i32(data.len() as i32);
    body.extend_from_slice(data);
    Frame {
        kind: b'p',
        body: body.freeze(),
    }
}

/// A SASLResponse frame (the repository leg).
pub fn sasl_response_frame(data: &[u8]) -> Frame {
    Frame {
        kind: b'p',
        body: Bytes::copy_from_slice(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(mechanisms: &[&str]) -> Frame {
        let mut body = BytesMut::new();
        body.put_u32(AUTH_SASL);
        for m in mechanisms {
            body.extend_from_slice(m.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        Frame {
            kind: b'R',
            body: body.freeze(),
        }
    }

    #[test]
    fn the_plus_mechanism_is_removed_and_the_rest_kept_in_order() {
        let offered = sasl(&[SCRAM_PLUS, "SCRAM-SHA-256"]);
        assert_eq!(offered.auth_code(), Some(AUTH_SASL));
        assert_eq!(
            sasl_mechanisms(&offered.body).unwrap(),
            vec![SCRAM_PLUS, "SCRAM-SHA-256"]
        );
        let relayed = without_channel_binding(&offered).unwrap().unwrap();
        assert_eq!(relayed, sasl(&["SCRAM-SHA-256"]));
        assert_eq!(
            &relayed.encode()[..],
            b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0"
        );
        // Nothing but PLUS: nothing to offer.
        assert_eq!(without_channel_binding(&sasl(&[SCRAM_PLUS])).unwrap(), None);
        // Without PLUS the frame is unchanged.
        let plain = sasl(&["SCRAM-SHA-256"]);
        assert_eq!(without_channel_binding(&plain).unwrap().unwrap(), plain);
    }

    #[test]
    fn sasl_responses_read_back_what_is_written() {
        let frame = sasl_initial_response_frame("SCRAM-SHA-256", b"n,,n=,r=abc");
        assert_eq!(
            sasl_initial_response(&frame.body),
            Ok(("SCRAM-SHA-256", &b"n,,n=,r=abc"[..]))
        );
        for bad in [
            &b"SCRAM"[..],
            b"SCRAM\0\0\0",
            b"SCRAM\0\0\0\0\x05abc",
            b"SCRAM\0\xff\xff\xff\xffx",
        ] {
            assert_eq!(
                sasl_initial_response(bad),
                Err(AuthMessageError::BadInitialResponse),
                "{bad:?}"
            );
        }
        assert_eq!(
            sasl_offer(&[SCRAM_PLUS, "SCRAM-SHA-256"]),
            sasl(&[SCRAM_PLUS, "SCRAM-SHA-256"])
        );
        assert_eq!(
            auth_request(AUTH_OK, &[]).encode().as_ref(),
            b"R\0\0\0\x08\0\0\0\0"
        );
    }

    #[test]
    fn malformed_lists_and_lengths_are_refused_before_allocation() {
        for body in [
            &b"\0\0\0\x0a"[..],
            b"\0\0\0\x0aSCRAM",
            b"\0\0\0\x0aSCRAM\0",
            b"\0\0\0\x0a\0\0",
            b"\0\0\0\x0a\xff\0\0",
            b"\0\0",
        ] {
            assert_eq!(
                sasl_mechanisms(body),
                Err(AuthMessageError::BadMechanismList),
                "{body:?}"
            );
        }
        assert_eq!(sasl_mechanisms(b"\0\0\0\x0a\0"), Ok(Vec::new()));
        assert_eq!(
            body_len([b'R', 0, 0, 0, 3]),
            Err(AuthMessageError::MalformedLength(3))
        );
        assert!(matches!(
            body_len([b'p', 0x7f, 0xff, 0xff, 0xff]),
            Err(AuthMessageError::TooLarge { .. })
        ));
        assert_eq!(body_len([b'p', 0, 0, 0, 8]), Ok(4));
    }
}
