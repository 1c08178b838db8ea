//! pgssl logging into the repository with a password it holds (a managed repository's role, for a
//! certificate-authenticated client): SCRAM-SHA-256 as a client, with postgres-protocol's
//! implementation. The repository's SASL messages stay between pgssl and the repository; the
//! client sees AuthenticationOk (or the refusal) and what follows.

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{FrameError, read_frame};
use crate::proxy::protocol::auth_message::{
    AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL,
};

/// How the repository answered the start-up.
pub(crate) enum Answer {
    /// AuthenticationOk (relayed).
    Ok,
    /// An ErrorResponse (relayed).
    Refused,
    /// Another authentication request (not relayed).
    Password,
}

/// How a login with a password ended.
pub(crate) enum PasswordAnswer {
    /// AuthenticationOk (relayed).
    Ok,
    /// The repository's ErrorResponse, not relayed: the caller may try another password first.
    Refused(crate::proxy::protocol::auth_message::Frame),
    /// A method other than SCRAM-SHA-256 (not answered).
    Other,
}

/// Runs the exchange on `upstream` (its start-up already sent); AuthenticationOk is relayed to
/// `client`.
pub(crate) async fn log_in<C, U>(
    client: &mut C,
    upstream: &mut U,
    password: &[u8],
) -> Result<PasswordAnswer, FrameError>
where
    C: AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut scram: Option<ScramSha256> = None;
    loop {
        let frame = read_frame(upstream).await?;
        let data = frame.body.get(4..).unwrap_or_default();
        let mut out = BytesMut::new();
        match (frame.kind, frame.auth_code(), scram.as_mut()) {
            (b'R', Some(AUTH_OK), _) => {
                client.write_all(&frame.encode()).await?;
                client.flush().await?;
                return Ok(PasswordAnswer::Ok);
            }
            (b'E', _, _) => return Ok(PasswordAnswer::Refused(frame)),
            (b'R', Some(AUTH_SASL), None) => {
                let offered = data
                    .split(|b| *b == 0)
                    .any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offered {
                    return Ok(PasswordAnswer::Other);
                }
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                scram = Some(s);
            }
            (b'R', Some(AUTH_SASL_CONTINUE), Some(s)) => {
                s.update(data)?;
                frontend::sasl_response(s.message(), &mut out)?;
            }
            (b'R', Some(AUTH_SASL_FINAL), Some(s)) => {
                // Proves the repository knows the verifier too; AuthenticationOk follows.
                s.finish(data)?;
                continue;
            }
            (b'R', _, _) => return Ok(PasswordAnswer::Other),
            // Notices and NegotiateProtocolVersion are the client's.
            _ => {
                client.write_all(&frame.encode()).await?;
                continue;
            }
        }
        upstream.write_all(&out).await?;
        upstream.flush().await?;
    }
}
